"""Data-parallel training: 2 workers on gloo (loopback) take the steps of 1 process with the global batch.

The spawning tests start real processes (about 5 s each on 2 cores): they are few, tiny and time-bounded."""

import errno
import socket
import time

import numpy as np
import pandas as pd
import pytest
import torch

from tt_helpers import splits
from tt_helpers.catalog import Catalog
from tt_helpers.distributed import (
    DataParallelConfig,
    WorkerFailedError,
    check_port,
    parameter_gap,
    run_worker,
    train_data_parallel,
)
from tt_helpers.recipe import TwoTowerRecommender
from tt_helpers.towers import TowerConfig
from tt_helpers.training import TrainConfig, train_epochs

pytestmark = pytest.mark.usefixtures("one_thread")  # see conftest.py
GLOBAL_BATCH = 32


def tiny_train(n_users=24, n_items=40, per_user=16, seed=0) -> splits.Interactions:
    """Users like items of their own parity; 384 ratings (a multiple of the global batch)."""
    rng = np.random.default_rng(seed)
    rows = []
    for u in range(n_users):
        for k, i in enumerate(rng.choice(n_items, per_user, replace=False)):
            rating = 5.0 if i % 2 == u % 2 else 2.0
            rows.append((100 + u, 1000 + int(i), rating, k))
    ratings = pd.DataFrame(rows, columns=["user_id", "item_id", "rating", "timestamp"])
    catalog = Catalog.from_frames(ratings)
    return splits.Interactions(catalog.add_indices(ratings), catalog)


def recommender(**training) -> TwoTowerRecommender:
    config = TrainConfig(**{"progress": False, "batch_size": GLOBAL_BATCH, "positives": "any", **training})
    return TwoTowerRecommender(TowerConfig(embedding_dim=8, temperature=0.2), config)


@pytest.fixture(scope="module")
def train():
    data = tiny_train()
    assert len(data.frame) % GLOBAL_BATCH == 0  # no partial global batch: the reference sees the same data
    return data


def test_the_one_worker_loop_is_the_books_training_loop(train):
    """world_size=1 runs the same steps as ``train_epochs`` (same batches, sampler, loss, optimiser)."""
    reference = recommender()
    model, data = reference.build(train)
    train_epochs(model, data, reference.training, epochs=2)
    run = train_data_parallel(recommender(), train, DataParallelConfig(world_size=1, epochs=2))
    assert parameter_gap(run.recommender.model, model) < 1e-6


@pytest.mark.parametrize("negatives, frequency", [("in-batch", "static"), ("in-batch", "streaming"),
                                                   ("mixed", "static")])
def test_two_workers_with_global_negatives_match_one_process_with_the_global_batch(train, negatives, frequency):
    def make():
        return recommender(negatives=negatives, frequency=frequency, num_negatives=8)

    one = train_data_parallel(make(), train, DataParallelConfig(world_size=1, epochs=2))
    two = train_data_parallel(make(), train, DataParallelConfig(world_size=2, epochs=2))
    assert parameter_gap(one.recommender.model, two.recommender.model) < 1e-4
    np.testing.assert_allclose(two.history["train_loss"], one.history["train_loss"], rtol=1e-4)
    assert two.history["examples"].tolist() == [len(train.frame)] * 2
    if negatives == "mixed":
        return
    # local negatives are another objective: the replicas still agree, but with the single process no more
    local = train_data_parallel(make(), train, DataParallelConfig(world_size=2, epochs=2, negatives="local"))
    assert parameter_gap(one.recommender.model, local.recommender.model) > 1e-3
    assert (local.history["train_loss"] < one.history["train_loss"]).all()  # fewer negatives: an easier softmax


def test_a_failing_worker_stops_the_run_with_its_error_in_bounded_time(train):
    start = time.perf_counter()
    with pytest.raises(WorkerFailedError, match="worker 1 of 2 failed") as info:
        train_data_parallel(recommender(), train, DataParallelConfig(world_size=2, fail_on_rank=1, timeout_s=20))
    assert "was told to fail" in str(info.value)
    assert time.perf_counter() - start < 60


def test_a_last_partial_global_batch_is_dropped():
    data = tiny_train(per_user=17)  # 408 examples: 12 global batches of 32, and 24 left over
    run = train_data_parallel(recommender(), data, DataParallelConfig(world_size=1, epochs=1))
    assert run.history["examples"].tolist() == [384]


def test_bad_runs_are_refused_before_any_process_starts(train):
    with pytest.raises(ValueError, match="not divisible by world_size=3"):
        train_data_parallel(recommender(), train, DataParallelConfig(world_size=3))
    with pytest.raises(ValueError, match="'in-batch' or 'mixed'"):
        train_data_parallel(recommender(negatives="uniform"), train, DataParallelConfig(world_size=2))
    with pytest.raises(ValueError, match="positives='weighted' is not supported"):
        train_data_parallel(recommender(positives="weighted"), train, DataParallelConfig(world_size=2))
    with pytest.raises(ValueError, match="world_size must be"):
        DataParallelConfig(world_size=0)
    with pytest.raises(ValueError, match="negatives must be"):
        DataParallelConfig(negatives="everything")


def test_a_port_in_use_is_named_with_the_fix():
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as busy:
        busy.bind(("127.0.0.1", 0))
        busy.listen()
        port = busy.getsockname()[1]
        with pytest.raises(OSError, match=f"port {port} on 127.0.0.1 is already in use.*port=None") as info:
            check_port(port)
        assert info.value.errno == errno.EADDRINUSE
        with pytest.raises(OSError, match="already in use"):
            train_data_parallel(recommender(), tiny_train(), DataParallelConfig(world_size=2, port=port))


def test_run_worker_returns_the_state_and_history(train):
    result = run_worker(0, recommender(), train, DataParallelConfig(world_size=1, epochs=1))
    assert set(result) == {"state", "history"}
    assert result["history"][0]["examples"] == len(train.frame)
    assert all(torch.isfinite(v).all() for v in result["state"].values() if v.is_floating_point())
