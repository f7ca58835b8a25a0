"""TorchRec-sharded tables: the plan follows the constraints, the memory adds up, training learns; a missing
TorchRec install names the fix. The real run starts 2 processes on gloo (loopback), a few seconds."""

import builtins
import re

import numpy as np
import pandas as pd
import pytest
import torch

from tt_helpers import sharded_tables, splits
from tt_helpers.catalog import Catalog
from tt_helpers.sharded_tables import (
    ShardedTablesConfig,
    plan_memory,
    require_torchrec,
    table_arithmetic,
    train_sharded_tables_many,
)


def parity_split() -> splits.Split:
    """Users rate (5 stars) items of their own parity only: a structure ids can learn."""
    rng = np.random.default_rng(0)
    rows = [(u, int(i), 5.0, k)
            for u in range(40) for k, i in enumerate(rng.choice(np.arange(u % 2, 60, 2), 16, replace=False))]
    ratings = pd.DataFrame(rows, columns=["user_id", "item_id", "rating", "timestamp"])
    return splits.temporal_user_split(ratings, Catalog.from_frames(ratings))


def test_a_missing_torchrec_names_the_install_command(monkeypatch):
    real_import = builtins.__import__

    def no_torchrec(name, *args, **kwargs):
        if name.startswith("torchrec"):
            raise ImportError(f"No module named {name!r}")
        return real_import(name, *args, **kwargs)

    monkeypatch.setattr(builtins, "__import__", no_torchrec)
    with pytest.raises(ImportError, match=re.escape("pip install -e '.[scale]'")):
        require_torchrec()
    with pytest.raises(ImportError, match="torchrec==1.8.0"):
        sharded_tables.train_sharded_tables(parity_split().train)


def test_configs_are_checked():
    with pytest.raises(ValueError, match="not divisible by world_size=3"):
        ShardedTablesConfig(world_size=3, batch_size=64)
    with pytest.raises(ValueError, match="row_wise only on CUDA"):
        ShardedTablesConfig(sharding={"user_table": "table_wise", "item_table": "row_wise"})
    with pytest.raises(ValueError, match="same world_size"):
        train_sharded_tables_many(parity_split().train, [ShardedTablesConfig(), ShardedTablesConfig(port=1234)])


def test_table_arithmetic():
    sizes = table_arithmetic(100_000_000, 64, world_size=8)
    assert sizes["GB, one table"] == pytest.approx(100e6 * 65 * 4 / 1e9)
    assert sizes["GB per worker"] == pytest.approx(sizes["GB, one table"] / 8)


def test_two_workers_shard_the_tables_as_constrained_and_learn():
    pytest.importorskip("torchrec")
    split = parity_split()
    config = ShardedTablesConfig(embedding_dim=8, batch_size=64, epochs=6, learning_rate=0.1, column_block=4)
    run, = train_sharded_tables_many(split.train, [config])
    assert re.search(r"user_table\s*\|\s*table_wise", run.plan)
    assert re.search(r"item_table\s*\|\s*column_wise", run.plan)
    # the item table's 8 columns are split in 2 blocks of 4, one per worker; the user table lives whole on one
    n_users, n_items = split.train.n_users, split.train.n_items
    assert run.memory["table bytes"].sum() == (n_users + n_items) * 8 * 4
    assert run.memory["optimizer bytes"].sum() == (n_users + 2 * n_items) * 4  # one float per row of a shard
    assert (run.memory["shards"].str.contains("item_table").all())
    assert run.recommender.users.shape == (n_users, 8) and run.recommender.items.shape == (n_items, 8)
    assert torch.isfinite(run.recommender.users).all()
    losses = run.history["train_loss"]
    assert losses.iloc[-1] < losses.iloc[0]
    # parity is learnable from ids alone: the top 10 of each user are mostly items of the user's parity
    top = run.recommender.score(torch.arange(n_users)).topk(10, dim=1).indices
    user_parity = torch.as_tensor(split.train.catalog.user_ids % 2).unsqueeze(1)
    item_parity = torch.as_tensor(split.train.catalog.item_ids % 2)[top]
    assert (item_parity == user_parity).float().mean() > 0.8  # random: 0.5


def test_plan_memory_reads_a_plan():
    class Shard:
        def __init__(self, sizes, rank):
            self.shard_sizes, self.placement = sizes, f"rank:{rank}/cpu"

    class Spec:
        def __init__(self, shards):
            self.shards = shards

    class Sharding:
        def __init__(self, shards):
            self.sharding_spec = Spec(shards)

    class Plan:
        plan = {"": {"user_table": Sharding([Shard([10, 4], 1)]),
                     "item_table": Sharding([Shard([6, 2], 0), Shard([6, 2], 1)])}}

    memory = plan_memory(Plan(), world_size=2)
    Plan.plan[""]["user_table"].sharding_spec = None  # data_parallel: a replica on every worker
    with pytest.raises(ValueError, match="replicated"):
        plan_memory(Plan(), world_size=2)
    replicated = plan_memory(Plan(), world_size=2, table_shapes={"user_table": (10, 4)})
    assert (replicated["table bytes"] == [(10 * 4 + 6 * 2) * 4] * 2).all()
    assert memory.loc[0, "table bytes"] == 6 * 2 * 4
    assert memory.loc[1, "table bytes"] == (10 * 4 + 6 * 2) * 4
    assert memory.loc[1, "optimizer bytes"] == (10 + 6) * 4
    assert memory.loc[1, "shards"] == "user_table[10 x 4], item_table[6 x 2]"
