"""The two-tower model's embedding tables sharded over workers with TorchRec.

Data parallelism (:mod:`tt_helpers.distributed`) copies the whole model to every worker. That stops working
when the tables do not fit one worker: 100M items x 64 dims of float32 are 25.6 GB before the optimiser's
state. TorchRec (Meta's library for recommender models on PyTorch) shards the tables instead: an
``EmbeddingBagCollection`` holds the tables, its planner decides where each table (or each block of a
table's columns or rows) lives, and ``DistributedModelParallel`` routes every lookup to the worker that holds
the rows (all-to-alls of the ids and then of the embeddings forward, of their gradients backward). The
dense part, here nothing but the dot product, stays data-parallel. Updates are fused into the backward pass
(``apply_optimizer_in_backward``): a table's gradient is never materialised, each touched row is updated
where it lives. Row-wise Adagrad keeps one number per row *of each shard*, so with column-wise shards the
optimiser itself changes with the layout (one state per block of columns instead of one per row).

This module trains the book's id-only towers that way: a ``user_table`` and an ``item_table`` (TorchRec
refuses table names that collide with module attributes, such as ``items``), the in-batch softmax over the
*global* batch (item embeddings gathered with their gradients, logQ with the global batch's expected counts,
accidental hits masked), as in :mod:`tt_helpers.distributed`. What runs on a CPU with TorchRec 1.8: the
``table_wise`` (a whole table on one worker), ``column_wise`` (blocks of a table's columns on different
workers) and ``data_parallel`` sharding types, with the fused kernels of ``fbgemm-gpu-cpu``, whose CPU
optimisers are SGD and (row-wise) Adagrad, not Adam. ``row_wise`` (blocks of rows, the layout for the largest
tables) is offered only for CUDA devices by TorchRec 1.8's sharders.

TorchRec and fbgemm-gpu-cpu are optional (Linux x86-64 wheels only): ``make venv`` installs them there; by hand,
``pip install -e '.[scale]'`` and then ``pip install --no-deps torchrec==1.8.0`` (requirements-scale.txt).
"""

from __future__ import annotations

import dataclasses
import logging
import pathlib
import tempfile
import time
import warnings
from dataclasses import dataclass, field

import pandas as pd
import torch
import torch.distributed as dist
import torch.nn.functional as F

from . import losses
from .distributed import (
    check_port,
    free_port,
    gather_ids,
    gather_with_grad,
    process_group,
    spawn_workers,
    worker_batches,
)
from .examples import training_data
from .sampling import InBatchSampler
from .splits import Interactions
from .training import candidate_offsets

RESULT_FILE = "tables.pt"
TORCHREC_HINT = (
    "chapter 6's sharded tables need TorchRec (Linux x86-64 only): `make venv` installs it there; by hand, "
    "pip install -e '.[scale]' && pip install --no-deps torchrec==1.8.0 (torchrec==1.8.0 with "
    "fbgemm-gpu-cpu==1.8.0 for torch 2.13.0; see the README). Everything else in the book runs without it"
)
SHARDING_TYPES = ("table_wise", "column_wise", "data_parallel")
BYTES_PER_FLOAT = 4


def quiet_torchrec() -> None:
    """Silence TorchRec 1.8's planner notes about CUDA-only options (logged at WARNING on every plan, and
    FutureWarnings about its storage heuristics), which say nothing about a CPU run."""
    logging.getLogger("torchrec").setLevel(logging.ERROR)
    warnings.filterwarnings("ignore", category=FutureWarning, module="torchrec")
    warnings.filterwarnings("ignore", category=UserWarning, module="torchrec")


def require_torchrec():
    """Import and return ``torchrec``, or raise an ``ImportError`` that says how to install it."""
    try:
        import fbgemm_gpu  # noqa: F401  (registers the fused kernels TorchRec calls)
        import torchrec
    except ImportError as err:  # also raised by a torchrec built for another torch (undefined symbols)
        raise ImportError(f"{TORCHREC_HINT} ({type(err).__name__}: {err})") from err
    return torchrec


@dataclass(frozen=True)
class ShardedTablesConfig:
    """``world_size`` workers; id-only towers of ``embedding_dim``, L2-normalised, scores divided by
    ``temperature``; ``batch_size`` the *global* batch (each worker reads ``batch_size / world_size``);
    ``epochs``; row-wise Adagrad at ``learning_rate`` fused into the backward pass; ``sharding``: the
    sharding type the planner must use for each table; ``column_block``: the width of a column-wise shard
    (the planner's ``min_partition``)."""

    world_size: int = 2
    embedding_dim: int = 64
    temperature: float = 0.2
    batch_size: int = 512
    epochs: int = 5
    learning_rate: float = 0.05
    sharding: dict[str, str] = field(
        default_factory=lambda: {"user_table": "table_wise", "item_table": "column_wise"}
    )
    column_block: int = 32
    threads_per_worker: int = 1
    seed: int = 0
    port: int | None = None
    timeout_s: float = 180.0

    def __post_init__(self):
        for name in ("world_size", "embedding_dim", "batch_size", "epochs", "column_block"):
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, int) or value < 1:
                raise ValueError(f"{name} must be an int >= 1, got {value!r}")
        if self.batch_size % self.world_size:
            raise ValueError(
                f"the global batch ({self.batch_size}) is not divisible by world_size={self.world_size}: use a "
                f"multiple of {self.world_size}"
            )
        unknown = {t: s for t, s in self.sharding.items() if s not in SHARDING_TYPES}
        if unknown or set(self.sharding) != {"user_table", "item_table"}:
            raise ValueError(
                f"sharding must give each of 'user_table' and 'item_table' one of {SHARDING_TYPES} (TorchRec 1.8 "
                f"offers row_wise only on CUDA), got {self.sharding!r}"
            )


class EmbeddingScores:
    """A fitted model as two matrices: ``score(user_idx)`` = ``users[user_idx] @ items.T / temperature``, what
    :func:`tt_helpers.evaluate` needs."""

    def __init__(self, users: torch.Tensor, items: torch.Tensor, temperature: float):
        self.users, self.items, self.temperature = users, items, temperature

    def fit(self, train):  # the Recommender protocol; fitting happens in train_sharded_tables
        raise NotImplementedError("EmbeddingScores holds trained vectors: train with train_sharded_tables")

    def score(self, user_idx: torch.Tensor) -> torch.Tensor:
        return self.users[torch.as_tensor(user_idx)] @ self.items.T / self.temperature


@dataclass
class ShardedTablesRun:
    """What :func:`train_sharded_tables` returns: the trained vectors as a recommender, the planner's plan
    (as TorchRec prints it), the bytes each worker holds (tables and optimiser state), and one row per
    epoch (mean training loss, examples per second on rank 0)."""

    recommender: EmbeddingScores
    plan: str
    memory: pd.DataFrame
    history: pd.DataFrame


def _build(n_users: int, n_items: int, config: ShardedTablesConfig, group):
    require_torchrec()
    from torchrec import EmbeddingBagCollection, EmbeddingBagConfig
    from torchrec.distributed import DistributedModelParallel
    from torchrec.distributed.embeddingbag import EmbeddingBagCollectionSharder
    from torchrec.distributed.planner import EmbeddingShardingPlanner, Topology
    from torchrec.distributed.planner.types import ParameterConstraints
    from torchrec.optim.apply_optimizer_in_backward import apply_optimizer_in_backward
    from torchrec.optim.rowwise_adagrad import RowWiseAdagrad

    torch.manual_seed(config.seed)  # the same initial tables on every worker
    tables = EmbeddingBagCollection(
        tables=[
            EmbeddingBagConfig(name="user_table", embedding_dim=config.embedding_dim, num_embeddings=n_users,
                               feature_names=["user_id"]),
            EmbeddingBagConfig(name="item_table", embedding_dim=config.embedding_dim, num_embeddings=n_items,
                               feature_names=["item_id"]),
        ],
        device=torch.device("cpu"),
    )
    apply_optimizer_in_backward(RowWiseAdagrad, tables.parameters(), {"lr": config.learning_rate})
    constraints = {
        name: ParameterConstraints(sharding_types=[kind], min_partition=config.column_block)
        for name, kind in config.sharding.items()
    }
    sharder = EmbeddingBagCollectionSharder()
    planner = EmbeddingShardingPlanner(
        topology=Topology(world_size=config.world_size, compute_device="cpu"), constraints=constraints
    )
    plan = planner.collective_plan(tables, [sharder], group)
    model = DistributedModelParallel(module=tables, device=torch.device("cpu"), plan=plan, sharders=[sharder])
    return model, plan


def plan_memory(plan, world_size: int, table_shapes: dict[str, tuple[int, int]] | None = None,
                optimizer_floats_per_row: int = 1) -> pd.DataFrame:
    """Bytes of table rows each worker holds under ``plan``, and of row-wise Adagrad's state (one float per
    row of each shard): one row per worker. A ``data_parallel`` table has no shards (every worker holds all
    of it): its ``(rows, columns)`` come from ``table_shapes``."""
    rows = {rank: {"table bytes": 0, "optimizer bytes": 0, "shards": []} for rank in range(world_size)}
    for module_plan in plan.plan.values():
        for table, sharding in module_plan.items():
            if sharding.sharding_spec is None:  # data_parallel: a full replica on every worker
                if table_shapes is None or table not in table_shapes:
                    raise ValueError(f"{table} is replicated (data_parallel): pass its shape in table_shapes")
                placed = [(rank, table_shapes[table]) for rank in range(world_size)]
            else:
                placed = [(_rank_of(shard.placement), shard.shard_sizes) for shard in sharding.sharding_spec.shards]
            for rank, (n_rows, n_cols) in placed:
                rows[rank]["table bytes"] += n_rows * n_cols * BYTES_PER_FLOAT
                rows[rank]["optimizer bytes"] += n_rows * optimizer_floats_per_row * BYTES_PER_FLOAT
                rows[rank]["shards"].append(f"{table}[{n_rows} x {n_cols}]")
    frame = pd.DataFrame.from_dict(rows, orient="index")
    frame["shards"] = frame["shards"].map(", ".join)
    frame.index.name = "worker"
    return frame


def _rank_of(placement) -> int:
    """The worker of a shard placement (``torch.distributed._remote_device``, or its text ``rank:0/cpu``)."""
    if hasattr(placement, "rank"):
        return int(placement.rank())
    return int(str(placement).split("rank:")[1].split("/")[0])


def _lookup(model, user_idx: torch.Tensor, item_idx: torch.Tensor):
    from torchrec import KeyedJaggedTensor

    features = KeyedJaggedTensor.from_lengths_sync(
        keys=["user_id", "item_id"], values=torch.cat([user_idx, item_idx]),
        lengths=torch.ones(2 * len(user_idx), dtype=torch.int32),
    )
    embedded = model(features)
    return F.normalize(embedded["user_id"], dim=1), F.normalize(embedded["item_id"], dim=1)


def run_tables_worker(rank: int, train: Interactions, config: ShardedTablesConfig, result_path: pathlib.Path
                      ) -> None:
    """One worker: build and shard the tables, train, then write (rank 0) the full tables and the plan."""
    world = config.world_size
    data = training_data(train, None, "any")
    model, plan = _build(train.n_users, train.n_items, config, dist.GroupMember.WORLD)
    sampler = InBatchSampler(data.item_probabilities)  # logQ: the global batch's expected counts
    generator = torch.Generator().manual_seed(config.seed)
    history = []
    for epoch in range(1, config.epochs + 1):
        model.train()
        dist.barrier()
        start, total = time.perf_counter(), torch.zeros(2, dtype=torch.float64)
        for mine in worker_batches(data, config.batch_size, generator, False, rank, world):
            users, positives = _lookup(model, mine.user_idx, mine.item_idx)
            everyone = dataclasses.replace(mine, item_idx=gather_ids(mine.item_idx))  # the global candidates
            blocks = sampler.sample(everyone, generator).blocks()
            offsets = candidate_offsets(mine, blocks, sampler, data.positives, config.batch_size)
            loss = losses.retrieval_loss(users, positives, [gather_with_grad(positives)], config.temperature,
                                         offsets=offsets)
            loss.backward()  # the fused optimiser updates the touched rows here
            total += torch.tensor([loss.item() * len(mine.item_idx), len(mine.item_idx)], dtype=torch.float64)
        dist.all_reduce(total)
        seconds = time.perf_counter() - start
        history.append({"epoch": epoch, "train_loss": float(total[0] / total[1]), "examples": int(total[1]),
                        "examples_per_s": float(total[1]) / seconds})
    model.eval()
    shapes = {"user_table": (train.n_users, config.embedding_dim),
              "item_table": (train.n_items, config.embedding_dim)}
    n = max(train.n_users, train.n_items)  # one lookup of every row (a key's batch must be the same length)
    with torch.no_grad():
        users, items = _lookup(model, torch.arange(n) % train.n_users, torch.arange(n) % train.n_items)
    if rank == 0:
        torch.save({"users": users[: train.n_users].clone(), "items": items[: train.n_items].clone(),
                    "plan": str(plan),
                    "memory": plan_memory(plan, world, shapes).to_dict(orient="index"),
                    "history": history}, result_path)


def _spawned(rank: int, train: Interactions, configs: list[ShardedTablesConfig], port: int, result_dir: str
             ) -> None:
    first = configs[0]
    quiet_torchrec()
    with process_group(rank, first.world_size, port, first.timeout_s, first.threads_per_worker):
        for j, config in enumerate(configs):
            run_tables_worker(rank, train, config, pathlib.Path(result_dir) / f"{j}-{RESULT_FILE}")


def train_sharded_tables(train: Interactions, config: ShardedTablesConfig = ShardedTablesConfig()
                         ) -> ShardedTablesRun:
    """Train id-only towers on ``train`` with TorchRec-sharded tables on ``config.world_size`` local workers
    (gloo, loopback); see the module. Raises ``ImportError`` (with the install command) without TorchRec."""
    return train_sharded_tables_many(train, [config])[0]


def train_sharded_tables_many(train: Interactions, configs: list[ShardedTablesConfig]) -> list[ShardedTablesRun]:
    """:func:`train_sharded_tables` for several configs (e.g. one per seed) in the same worker processes;
    they must agree on ``world_size``, ``threads_per_worker``, ``port`` and ``timeout_s``."""
    first = configs[0]
    shared = ("world_size", "threads_per_worker", "port", "timeout_s")
    if any(getattr(c, name) != getattr(first, name) for c in configs for name in shared):
        raise ValueError(f"every config of one launch must have the same {', '.join(shared)}")
    require_torchrec()
    port = check_port(first.port) if first.port is not None else free_port()
    with tempfile.TemporaryDirectory(prefix="tt-sharded-tables-") as folder:
        spawn_workers(_spawned, (train, configs, port, folder), first.world_size)
        results = [torch.load(pathlib.Path(folder) / f"{j}-{RESULT_FILE}", weights_only=True)
                   for j in range(len(configs))]
    runs = []
    for config, result in zip(configs, results):
        memory = pd.DataFrame.from_dict(result["memory"], orient="index")
        memory.index.name = "worker"
        history = pd.DataFrame(result["history"]).set_index("epoch")
        recommender = EmbeddingScores(result["users"], result["items"], config.temperature)
        runs.append(ShardedTablesRun(recommender, result["plan"], memory, history))
    return runs


def table_arithmetic(n_rows: int, dim: int, world_size: int, optimizer_floats_per_row: int = 1) -> dict[str, float]:
    """GB of one table of ``n_rows x dim`` float32 (plus row-wise Adagrad's state), and per worker when its rows
    are spread over ``world_size`` workers."""
    total = n_rows * (dim + optimizer_floats_per_row) * BYTES_PER_FLOAT / 1e9
    return {"GB, one table": total, "GB per worker": total / world_size}


__all__ = [
    "EmbeddingScores",
    "ShardedTablesConfig",
    "ShardedTablesRun",
    "plan_memory",
    "require_torchrec",
    "table_arithmetic",
    "train_sharded_tables",
    "train_sharded_tables_many",
]
