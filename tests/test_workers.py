"""Fits in worker processes: the same results, in the same order, as one after another."""

import multiprocessing
import os
import time

import pandas as pd
import pytest
import torch
from test_experiments import tiny_split

from tt_helpers import workers
from tt_helpers.experiments import run_variants
from tt_helpers.towers import TowerConfig
from tt_helpers.training import TrainConfig

needs_fork = pytest.mark.skipif(
    "fork" not in multiprocessing.get_all_start_methods(), reason="worker processes are forked"
)


@needs_fork
def test_results_come_back_in_order_from_other_processes_that_see_the_callers_state():
    offset = 1000  # a closure: the forked workers inherit it, nothing is pickled but arguments and results

    def job(x):
        return x + offset, os.getpid(), torch.get_num_threads()

    out = workers.map_in_workers(job, range(6), workers=2)
    assert [value for value, _, _ in out] == [1000 + x for x in range(6)]
    assert os.getpid() not in {pid for _, pid, _ in out}  # computed elsewhere
    assert {threads for _, _, threads in out} == {1}  # one torch thread per worker


def test_one_worker_runs_the_jobs_here():
    out = workers.map_in_workers(lambda x: (x * 2, os.getpid()), [1, 2, 3], workers=1)
    assert out == [(2, os.getpid()), (4, os.getpid()), (6, os.getpid())]
    assert workers.map_in_workers(lambda x: x, [], workers=2) == []


@needs_fork
def test_an_exception_in_a_job_is_raised_to_the_caller():
    def job(x):
        if x == 2:
            raise ValueError("job 2 failed")
        return x

    with pytest.raises(ValueError, match="job 2 failed"):
        workers.map_in_workers(job, range(4), workers=2)


@pytest.mark.parametrize("bad", [0, -1, 1.5, True])
def test_worker_count_is_validated(bad):
    with pytest.raises(ValueError, match="workers must be a positive integer"):
        workers.map_in_workers(lambda x: x, [1, 2], workers=bad)


def test_default_worker_count_comes_from_the_environment(monkeypatch):
    monkeypatch.setenv("TT_HELPERS_WORKERS", "3")
    assert workers.default_workers() == 3
    monkeypatch.setenv("TT_HELPERS_WORKERS", "many")
    with pytest.raises(ValueError, match="TT_HELPERS_WORKERS"):
        workers.default_workers()
    monkeypatch.delenv("TT_HELPERS_WORKERS")
    assert workers.default_workers() >= 1


@needs_fork
def test_run_variants_gives_identical_results_with_one_or_two_workers():
    split = tiny_split()
    training = TrainConfig(progress=False, batch_size=16, max_epochs=3)
    variants = {
        "in-batch": (TowerConfig(embedding_dim=8), training),
        "uniform": (TowerConfig(embedding_dim=8), TrainConfig(progress=False, batch_size=16, max_epochs=3,
                                                              negatives="uniform", num_negatives=8)),
    }
    here = run_variants(split, variants, seeds=(0, 1, 2), ks=(5,), workers=1)
    forked = run_variants(split, variants, seeds=(0, 1, 2), ks=(5,), workers=2, keep_models=True)
    pd.testing.assert_frame_equal(here.frame(), forked.frame(), check_exact=True)
    for name in variants:
        for a, b in zip(here.per_user[name], forked.per_user[name]):
            pd.testing.assert_frame_equal(a, b, check_exact=True)
    assert [seed for seed, _ in forked.models["uniform"]] == [0, 1, 2]
    assert here.models == {}  # nothing kept unless asked
    kept = forked.models["uniform"][1][1]  # came back from a worker: usable, and the same fit
    again = run_variants(split, {"uniform": variants["uniform"]}, seeds=(1,), ks=(5,), workers=1, keep_models=True)
    users = torch.arange(split.catalog.n_users)
    assert torch.equal(kept.score(users), again.models["uniform"][0][1].score(users))


@needs_fork
def test_a_nested_call_in_a_worker_runs_there():
    def outer(x):
        return workers.map_in_workers(lambda y: (y, os.getpid()), [x, x + 1], workers=2)

    for pairs in workers.map_in_workers(outer, [0, 10], workers=2):
        assert len({pid for _, pid in pairs}) == 1  # both inner jobs in the outer job's process
        assert pairs[0][1] != os.getpid()


@needs_fork
def test_a_result_that_cannot_be_pickled_gets_an_error_that_says_what_to_do():
    with pytest.raises(TypeError, match="picklable.*workers=1"):
        workers.map_in_workers(lambda x: (lambda: x), [1, 2], workers=2)


def _square_then_more(arg):
    """First jobs (an int) queue two follow-ups; follow-ups (a tuple) are computed here."""
    if isinstance(arg, tuple):
        return arg[0] * arg[1], os.getpid()
    return arg * arg, os.getpid()


@pytest.mark.parametrize("n_workers", [1, 2])
def test_follow_up_jobs_give_what_the_loop_gives(n_workers):
    def then(arg, result):
        return [(result[0], k) for k in range(arg)]  # depends on the first job's result

    results, follow_ups = workers.map_then_in_workers(_square_then_more, [3, 1, 2], then, workers=n_workers)
    assert [r for r, _ in results] == [9, 1, 4]
    assert [[r for r, _ in f] for f in follow_ups] == [[0, 9, 18], [0], [0, 4]]
    pids = {pid for _, pid in results} | {pid for f in follow_ups for _, pid in f}
    assert (os.getpid() in pids) == (n_workers == 1 or "fork" not in multiprocessing.get_all_start_methods())


@needs_fork
def test_an_exception_in_a_follow_up_job_is_raised_to_the_caller():
    def job(x):
        if x == "bad":
            raise ValueError("follow-up failed")
        return x

    with pytest.raises(ValueError, match="follow-up failed"):
        workers.map_then_in_workers(job, [1, 2], lambda arg, r: ["bad"] if arg == 2 else [], workers=2)
    with pytest.raises(ValueError, match="workers must be a positive integer"):
        workers.map_then_in_workers(job, [1], lambda arg, r: [], workers=0)


@needs_fork
def test_the_follow_ups_of_the_slowest_first_job_start_first():
    """Two workers; first jobs "slow" (1 s), "fast 1" (0.2 s) and "fast 2" (0.1 s); two 0.5 s follow-ups
    each. "fast 1"'s follow-ups run first (at about 0.3 and 0.8 s: it took longer than "fast 2"). When "slow"
    ends (at about 1 s) both of "fast 2"'s follow-ups are still waiting: the next free worker (at about 1.3 s)
    takes a follow-up of "slow" instead, the order that keeps both workers busy to the end. (With equal
    first jobs the order of the fast ones would hang on timing jitter.)"""
    seconds = {"slow": 1.0, "fast 1": 0.2, "fast 2": 0.1}

    def job(arg):
        start = time.time()
        time.sleep(seconds[arg] if arg in seconds else 0.5)
        return start

    def then(arg, result):
        return [f"{arg} / {k}" for k in range(2)]

    firsts, follow_ups = workers.map_then_in_workers(job, list(seconds), then, workers=2)
    started = dict(zip(seconds, firsts)) | {f"{a} / {k}": s for a, f in zip(seconds, follow_ups) for k, s in
                                            enumerate(f)}
    assert started["fast 1 / 0"] < started["slow / 0"]  # nothing else was ready then
    assert max(started["slow / 0"], started["slow / 1"]) < min(started["fast 2 / 0"], started["fast 2 / 1"])
