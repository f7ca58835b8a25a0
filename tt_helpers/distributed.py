"""Data-parallel training of the two-tower model on ``torch.distributed``, with negatives from the global batch.

``W`` workers (processes) each hold a replica of the model and read their own ``B = global_batch / W`` examples
of every global batch. Their gradients are averaged by ``DistributedDataParallel``, so every replica takes the
same step. What makes a *retrieval* model different from other data-parallel training is its negatives: the
in-batch softmax of Yi et al. (RecSys 2019) uses the other examples' positives as negatives, and a worker that
only sees its own ``B`` examples trains with ``B - 1`` negatives instead of ``W B - 1``. So each step:

1. every worker embeds its users and positives, ``[B, d]`` each;
2. the positives' embeddings of all workers are gathered *with their gradients*
   (``torch.distributed.nn.functional.all_gather``): ``[W B, d]``, the global batch's candidates, and their item
   ids (``[W B]``) with a plain ``all_gather``;
3. the logQ correction uses the *global* batch's expected counts (``W B p_j``; with the streaming estimator,
   every worker records the same global ids, so the estimator's arrays stay identical on every worker without
   any extra communication; with ``negatives="local"`` each worker estimates from its own batches);
4. accidental hits are masked against the global candidates (a candidate that is the user's positive, or any
   of the user's training positives);
5. each worker's loss is the mean over its ``B`` examples of the ``(1 + W B)``-way softmax; DDP averages the
   gradients, and the gather's backward sends each worker the gradients of its own positives from every
   worker's loss, so the step is exactly that of one process training on the global batch.

Step 5 is the equivalence the book tests: 2 workers with ``B`` examples each take the same steps as 1 process
with ``2 B``, up to floating-point summation order. (With per-example weights it would not hold, since each
worker normalises by its own weights: ``positives="weighted"`` is refused.) Every worker reads the whole
training set and takes its slice of each global batch; a last, partial global batch is dropped.
``negatives="local"`` skips steps 2-4's gathering (each worker's own batch only), to measure what the global
batch is worth.

Workers are spawned with ``torch.multiprocessing`` on the ``gloo`` backend over loopback (CPU), each with
``threads_per_worker`` torch threads. A worker that raises stops the run with that worker's error (the others
are terminated), and every collective has a timeout (``timeout_s``), so a worker stuck in a collective raises
instead of waiting for ever.
"""

from __future__ import annotations

import contextlib
import dataclasses
import datetime
import errno
import logging
import os
import pathlib
import socket
import sys
import tempfile
import time
import warnings
from dataclasses import dataclass
from typing import Literal

import numpy as np
import pandas as pd
import torch
import torch.distributed as dist
from torch import nn

from . import losses
from .recipe import TwoTowerRecommender
from .sampling import Batch, NegativeSampler
from .splits import Interactions
from .training import (
    batches,
    candidate_embeddings,
    candidate_offsets,
    learning_rate_factor,
    make_optimizers,
    make_sampler,
    optimizer_step,
    set_learning_rates,
    use_logq,
)

LOOPBACK = "127.0.0.1"
RESULT_FILE = "result.pt"


class WorkerFailedError(RuntimeError):
    """A worker of a data-parallel run raised; the message holds its traceback."""


@dataclass(frozen=True)
class DataParallelConfig:
    """How to run: ``world_size`` workers; the global batch is the recipe's ``TrainConfig.batch_size``, each
    worker reading ``batch_size / world_size`` examples of it; ``negatives="global"`` (the global batch's
    positives, gathered) or ``"local"`` (each worker's own); ``epochs``; ``threads_per_worker`` torch threads;
    ``port`` on 127.0.0.1 (None: a free one); ``timeout_s`` for every collective and for the whole run's start.
    ``fail_on_rank``: that worker raises at its first step (to show and test how a failure ends a run)."""

    world_size: int = 2
    negatives: Literal["global", "local"] = "global"
    epochs: int = 5
    threads_per_worker: int = 1
    port: int | None = None
    timeout_s: float = 120.0
    fail_on_rank: int | None = None

    def __post_init__(self):
        if isinstance(self.world_size, bool) or not isinstance(self.world_size, int) or self.world_size < 1:
            raise ValueError(f"world_size must be an int >= 1, got {self.world_size!r}")
        if self.negatives not in ("global", "local"):
            raise ValueError(f"negatives must be 'global' or 'local', got {self.negatives!r}")
        if isinstance(self.epochs, bool) or not isinstance(self.epochs, int) or self.epochs < 1:
            raise ValueError(f"epochs must be an int >= 1, got {self.epochs!r}")
        if not self.timeout_s > 0:
            raise ValueError(f"timeout_s must be positive, got {self.timeout_s!r}")


@dataclass
class DataParallelRun:
    """What :func:`train_data_parallel` returns: the ``recommender``, fitted (rank 0's replica, identical to
    the others), and its ``history``: one row per epoch with the mean training loss over the global batch and
    the global throughput (``examples_per_s``), timed on rank 0."""

    recommender: TwoTowerRecommender
    history: pd.DataFrame
    config: DataParallelConfig


# ---------------------------------------------------------------------------- the step


def gather_with_grad(x: torch.Tensor) -> torch.Tensor:
    """``[B, ...]`` on each of ``W`` workers -> ``[W B, ...]``, rank 0's rows first; the backward pass returns to
    each worker the gradient of its own rows summed over every worker's loss (``torch.distributed.nn``)."""
    if not dist.is_initialized() or dist.get_world_size() == 1:
        return x
    with warnings.catch_warnings():  # deprecated in torch 2.13; it still gathers with autograd, as needed here
        warnings.filterwarnings("ignore", message=".*all_gather is deprecated", category=FutureWarning)
        return torch.cat(torch.distributed.nn.functional.all_gather(x))


def gather_ids(ids: torch.Tensor) -> torch.Tensor:
    """``[B]`` ids on each worker -> ``[W B]``, no gradient."""
    if not dist.is_initialized() or dist.get_world_size() == 1:
        return ids
    parts = [torch.empty_like(ids) for _ in range(dist.get_world_size())]
    dist.all_gather(parts, ids)
    return torch.cat(parts)


class TowerPair(nn.Module):
    """The two towers behind one ``forward``, so that ``DistributedDataParallel`` sees (and syncs) both:
    ``(user_idx [B], item_idx [B], history)`` -> ``(users [B, d], positives [B, d])``."""

    def __init__(self, model: nn.Module):
        super().__init__()
        self.model = model

    def forward(self, user_idx, item_idx, history=None):
        return self.model.user_embeddings(user_idx, history), self.model.item_embeddings(item_idx)


def data_parallel_loss(towers: nn.Module, model, batch: Batch, sampler: NegativeSampler, data, config,
                       generator: torch.Generator, global_negatives: bool, world_size: int) -> torch.Tensor:
    """One worker's loss for its ``B`` examples (module docstring, steps 1-5)."""
    users, positives = towers(batch.user_idx, batch.item_idx, batch.history)
    if global_negatives:
        candidates_batch = dataclasses.replace(batch, item_idx=gather_ids(batch.item_idx))
        all_positives, batch_size = gather_with_grad(positives), len(batch.item_idx) * world_size
    else:
        candidates_batch, all_positives, batch_size = batch, positives, len(batch.item_idx)
    blocks = sampler.sample(candidates_batch, generator, model, users).blocks()
    candidates = [candidate_embeddings(model, b, all_positives) for b in blocks]
    offsets = candidate_offsets(batch, blocks, sampler if use_logq(config) else None,
                                data.positives if config.remove_accidental_hits else None, batch_size)
    return losses.retrieval_loss(users, positives, candidates, model.temperature, loss=config.loss,
                                 weights=batch.weight, offsets=offsets)


def worker_batches(data, global_batch: int, generator: torch.Generator, with_history: bool, rank: int,
                   world_size: int):
    """Rank ``rank``'s slice of every full global batch (the same shuffled order on every worker, so the
    global batch is the one a single process would draw); a last, partial global batch is dropped."""
    local = global_batch // world_size
    for batch in batches(data, global_batch, generator, with_history):
        if len(batch.item_idx) < global_batch:
            return
        rows = slice(rank * local, (rank + 1) * local)
        history = (batch.history[0][rows], batch.history[1][rows]) if batch.history is not None else None
        yield Batch(batch.user_idx[rows], batch.item_idx[rows], batch.weight[rows], history)


def run_worker(rank: int, recommender: TwoTowerRecommender, train: Interactions, config: DataParallelConfig,
               epochs: int | None = None) -> dict:
    """Train ``recommender``'s model on one worker (``rank``) of ``config.world_size`` for ``epochs`` (default
    ``config.epochs``); the process group, if any, is already set up. Returns ``{"state", "history"}``."""
    training = recommender.training
    world = config.world_size
    model, data = recommender.build(train)
    sampler = make_sampler(training, data)
    towers = TowerPair(model)
    if world > 1:
        towers = nn.parallel.DistributedDataParallel(towers)
    optimizers = make_optimizers(model, training)
    generator = torch.Generator().manual_seed(training.seed)
    scheduled = training.warmup_steps > 0 or training.lr_decay != 1.0
    rows, step = [], 0
    for epoch in range(1, (epochs or config.epochs) + 1):
        sampler.start_epoch(epoch)
        model.train()
        if world > 1:
            dist.barrier()
        start, total = time.perf_counter(), torch.zeros(2, dtype=torch.float64)
        for batch in worker_batches(data, training.batch_size, generator, model.history is not None, rank, world):
            if config.fail_on_rank == rank:
                raise RuntimeError(f"worker {rank} was told to fail (DataParallelConfig.fail_on_rank={rank})")
            if scheduled:
                set_learning_rates(optimizers, learning_rate_factor(training, step, epoch))
            loss = data_parallel_loss(towers, model, batch, sampler, data, training, generator,
                                      config.negatives == "global", world)
            optimizer_step(optimizers, loss)
            step += 1
            total += torch.tensor([loss.item() * len(batch.item_idx), len(batch.item_idx)], dtype=torch.float64)
        if world > 1:
            dist.all_reduce(total)
            dist.barrier()
        seconds = time.perf_counter() - start
        examples = int(total[1])
        rows.append({"epoch": epoch, "train_loss": float(total[0] / max(examples, 1)), "examples": examples,
                     "seconds": seconds, "examples_per_s": examples / seconds})
    model.eval()
    return {"state": model.state_dict(), "history": rows}


def quiet_worker() -> None:
    """In a spawned worker: keep torch's log records below ERROR (e.g. torch.fx's notes on tracing, stamped
    with the time) off the worker's stderr, which a notebook shows and its tests compare. Errors still end
    the run with their traceback."""
    logging.getLogger("torch").setLevel(logging.ERROR)


def use_loopback() -> None:
    """Keep gloo's traffic on the loopback interface (the rendezvous alone is on 127.0.0.1: gloo otherwise
    picks the interface of the machine's hostname). ``GLOO_SOCKET_IFNAME`` set by the caller wins."""
    if "GLOO_SOCKET_IFNAME" not in os.environ:
        os.environ["GLOO_SOCKET_IFNAME"] = "lo0" if sys.platform == "darwin" else "lo"


@contextlib.contextmanager
def process_group(rank: int, world_size: int, port: int, timeout_s: float, threads: int):
    """In a spawned worker: quiet logs, loopback only, ``threads`` torch threads, and a gloo process group
    (rendezvous on 127.0.0.1:``port``, every collective bounded by ``timeout_s``) for the ``with`` block."""
    quiet_worker()
    use_loopback()
    torch.set_num_threads(threads)
    dist.init_process_group("gloo", init_method=f"tcp://{LOOPBACK}:{port}", rank=rank, world_size=world_size,
                            timeout=datetime.timedelta(seconds=timeout_s))
    try:
        yield
    finally:
        dist.destroy_process_group()


def _spawned(rank: int, jobs, train, config: DataParallelConfig, port: int, result_dir: str) -> None:
    with process_group(rank, config.world_size, port, config.timeout_s, config.threads_per_worker):
        for j, (recommender, epochs) in enumerate(jobs):
            result = run_worker(rank, recommender, train, config, epochs)
            if rank == 0:
                torch.save(result, pathlib.Path(result_dir) / f"{j}-{RESULT_FILE}")


# ---------------------------------------------------------------------------- launching


def free_port() -> int:
    """A TCP port on 127.0.0.1 that nothing listens on now."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind((LOOPBACK, 0))
        return int(s.getsockname()[1])


def check_port(port: int) -> int:
    """``port`` if it can be bound on 127.0.0.1; otherwise an error that names the fix."""
    if isinstance(port, bool) or not isinstance(port, int) or not 0 < port < 65536:
        raise ValueError(f"port must be an int in 1..65535 (or None for a free one), got {port!r}")
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        try:
            s.bind((LOOPBACK, port))
        except OSError as err:
            if err.errno == errno.EADDRINUSE:
                raise OSError(
                    errno.EADDRINUSE,
                    f"port {port} on {LOOPBACK} is already in use (another run, or another program): pass another "
                    f"port, or port=None to pick a free one",
                ) from err
            raise
    return port


def spawn_workers(worker, args: tuple, world_size: int) -> None:
    """Run ``worker(rank, *args)`` in ``world_size`` spawned processes and wait for all of them. If one raises
    or dies, the others are terminated and :class:`WorkerFailedError` names it (with its traceback)."""
    try:
        torch.multiprocessing.start_processes(worker, args=args, nprocs=world_size, join=True,
                                              start_method="spawn")
    except torch.multiprocessing.ProcessRaisedException as err:
        raise WorkerFailedError(f"worker {err.error_index} of {world_size} failed, so the run was stopped:\n{err}"
                                ) from None
    except torch.multiprocessing.ProcessExitedException as err:
        raise WorkerFailedError(
            f"worker {err.error_index} of {world_size} exited with code {err.exit_code} (killed, or out of "
            f"memory), so the run was stopped"
        ) from None


def check_run(recommender: TwoTowerRecommender, config: DataParallelConfig) -> None:
    """Refuse, before any process starts, what the data-parallel loop cannot run."""
    training = recommender.training
    if training.batch_size % config.world_size:
        raise ValueError(
            f"the global batch ({training.batch_size} examples, TrainConfig.batch_size) is not divisible by "
            f"world_size={config.world_size}: every worker must read the same number of examples; use a batch "
            f"size that is a multiple of {config.world_size}"
        )
    if callable(training.negatives) or training.negatives not in ("in-batch", "mixed"):
        raise ValueError(
            f"data-parallel training gathers in-batch negatives; TrainConfig.negatives must be 'in-batch' or "
            f"'mixed', got {training.negatives!r}"
        )
    if training.positives == "weighted":
        raise ValueError(
            "positives='weighted' is not supported by the data-parallel loop: each worker would normalise its "
            "loss by its own examples' weights, which is not the global batch's weighted mean; use 'any' or "
            "'liked'"
        )
    if training.embedding_optimizer != "adam":
        raise ValueError("data-parallel training syncs dense gradients: use TrainConfig(embedding_optimizer='adam')")


def train_data_parallel(recommender: TwoTowerRecommender, train: Interactions,
                        config: DataParallelConfig = DataParallelConfig(), epochs: int | None = None
                        ) -> DataParallelRun:
    """Train ``recommender``'s model on ``train`` with ``config.world_size`` workers for ``epochs`` (default
    ``config.epochs``; see the module); returns the fitted recommender (rank 0's replica) and the per-epoch
    history. ``world_size=1`` runs the same loop in this process: the reference the workers match."""
    return train_data_parallel_many([(recommender, epochs)], train, config)[0]


def train_data_parallel_many(jobs: list[tuple[TwoTowerRecommender, int | None]], train: Interactions,
                             config: DataParallelConfig = DataParallelConfig()) -> list[DataParallelRun]:
    """:func:`train_data_parallel` for several ``(recommender, epochs)`` jobs (e.g. one per seed), one after
    the other in the same worker processes: the processes and the process group are started once."""
    for recommender, _ in jobs:
        check_run(recommender, config)
    if config.world_size == 1:
        results = [run_worker(0, recommender, train, config, epochs) for recommender, epochs in jobs]
    else:
        port = check_port(config.port) if config.port is not None else free_port()
        with tempfile.TemporaryDirectory(prefix="tt-data-parallel-") as folder:
            spawn_workers(_spawned, (jobs, train, config, port, folder), config.world_size)
            results = [torch.load(pathlib.Path(folder) / f"{j}-{RESULT_FILE}", weights_only=True)
                       for j in range(len(jobs))]
    runs = []
    for (recommender, _), result in zip(jobs, results):
        model, _ = recommender.build(train)
        model.load_state_dict(result["state"])
        model.eval()
        recommender.model, recommender._item_cache = model, None
        history = pd.DataFrame(result["history"]).set_index("epoch")
        recommender.history_ = history
        runs.append(DataParallelRun(recommender, history, config))
    return runs


def parameter_gap(a: nn.Module, b: nn.Module) -> float:
    """The largest absolute difference between two models' parameters (same architecture)."""
    gaps = [(pa - pb).abs().max().item() for pa, pb in zip(a.state_dict().values(), b.state_dict().values())
            if pa.is_floating_point()]
    return float(np.max(gaps)) if gaps else 0.0


__all__ = [
    "DataParallelConfig",
    "DataParallelRun",
    "WorkerFailedError",
    "check_port",
    "free_port",
    "gather_ids",
    "gather_with_grad",
    "parameter_gap",
    "process_group",
    "run_worker",
    "spawn_workers",
    "train_data_parallel",
    "train_data_parallel_many",
]
