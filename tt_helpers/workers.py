"""Independent fits in worker processes, with the same results as one after another.

A fit of the book's models is a stream of small tensor operations that two threads barely speed up (about
1.5x on two cores), while two fits side by side, one thread each, run almost twice as fast as one. Every
fit seeds itself (its initial weights from ``TrainConfig.seed``, its batches and negatives from its own
generator), so where it runs changes nothing: :func:`map_in_workers` returns what the loop
``[job(arg) for arg in args]`` would, in the same order. (The workers run one torch thread each and the loop
runs with the caller's thread count; the book's kernels give the same bits on one or two threads, and
``tests/test_workers.py`` checks it for the fits. Other thread counts or CPUs may change the last digits.)

Workers are forked (Linux), so they inherit the split, the side tables and any sampler factory without
pickling them; only each job's argument and result cross between processes. Where ``fork`` is not
available (Windows, and macOS's default), and with one worker, the jobs run here, one after another.
"""

from __future__ import annotations

import heapq
import multiprocessing
import os
import pickle
import time
from collections.abc import Callable, Sequence
from concurrent.futures import FIRST_COMPLETED, Future, ProcessPoolExecutor, wait
from typing import Any

import torch

from .repro import keep_freed_memory

__all__ = ["default_workers", "map_in_workers", "map_then_in_workers"]

_JOB: Callable[[Any], Any] | None = None  # the job the forked workers run (inherited, never pickled)
_IN_WORKER = False  # set in each worker: a job that maps again runs its jobs there, one after another


def default_workers() -> int:
    """``TT_HELPERS_WORKERS`` if set, else one worker per CPU core this process may use."""
    configured = os.environ.get("TT_HELPERS_WORKERS")
    if configured is not None:
        if not configured.isdigit() or int(configured) < 1:
            raise ValueError(f"TT_HELPERS_WORKERS must be a positive integer, got {configured!r}")
        return int(configured)
    return len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count() or 1


def _start_worker() -> None:
    global _IN_WORKER
    _IN_WORKER = True
    torch.set_num_threads(1)  # one thread per process: the cores are shared out by process, not by thread
    keep_freed_memory()


def _run(arg: Any) -> Any:
    assert _JOB is not None, "worker started without a job"
    result = _JOB(arg)
    try:
        pickle.dumps(result)
    except (pickle.PicklingError, AttributeError, TypeError) as error:
        raise TypeError(
            f"a job's result must be picklable to come back from a worker process, and this one is not ({error}); "
            "e.g. a model whose config holds a lambda or a local function: use a module-level function or a "
            "class, or run with workers=1"
        ) from None
    return result


def map_in_workers(job: Callable[[Any], Any], args: Sequence[Any], workers: int | None = None) -> list[Any]:
    """``[job(arg) for arg in args]``, computed by up to ``workers`` forked processes (default:
    :func:`default_workers`) on one torch thread each. ``job`` must depend only on its argument and on
    state that exists before the call (it may be a closure); its result must be picklable. An exception
    in a job is raised here, as it would be in the loop, and the jobs not started yet are cancelled. Inside
    a worker, a nested call runs its jobs in that worker, one after another."""
    args = list(args)
    workers = min(_checked_workers(workers), max(len(args), 1))
    return map_then_in_workers(job, args, lambda arg, result: (), workers)[0]


def map_then_in_workers(
    job: Callable[[Any], Any],
    args: Sequence[Any],
    then: Callable[[Any, Any], Sequence[Any]],
    workers: int | None = None,
) -> tuple[list[Any], list[list[Any]]]:
    """Jobs that depend on earlier ones: ``job(arg)`` for each of ``args``, and, as soon as one of them has
    returned ``result``, ``job(a)`` for each ``a`` in ``then(arg, result)`` (e.g. more seeds of a variant,
    once the first seed's validation run has chosen their epochs). Returns what the loop would::

        results = [job(arg) for arg in args]
        follow_ups = [[job(a) for a in then(arg, r)] for arg, r in zip(args, results)]

    No worker waits while a job is ready. The first jobs start in order (they unlock the others); then the
    follow-ups of the first job that took longest go first, since they are likely the longest too (the
    refits of a slow variant): started last, they would leave one worker running them while the others
    idle. The order changes when each job runs, never what it computes. ``then`` runs in this process.
    Same rules as :func:`map_in_workers` (forked workers, one thread each)."""
    args = list(args)
    workers = _checked_workers(workers)
    if workers <= 1 or not args or not _can_fork():
        results = [job(arg) for arg in args]
        return results, [[job(a) for a in then(arg, r)] for arg, r in zip(args, results)]
    global _JOB
    previous, _JOB = _JOB, job
    pool = ProcessPoolExecutor(workers, mp_context=multiprocessing.get_context("fork"), initializer=_start_worker)
    try:
        results: list[Any] = [None] * len(args)
        follow_ups: list[list[Any]] = [[] for _ in args]
        # (priority, sequence, (first job i, follow-up j or None), argument): first jobs in order, then
        # follow-ups by their first job's seconds, longest first
        ready = [((0.0, 0.0), i, (i, None), arg) for i, arg in enumerate(args)]
        heapq.heapify(ready)
        running: dict[Future, tuple[tuple[int, int | None], float]] = {}
        sequence = len(args)
        while ready or running:
            while ready and len(running) < workers:
                _, _, slot, arg = heapq.heappop(ready)
                running[pool.submit(_run, arg)] = (slot, time.perf_counter())
            done, _ = wait(running, return_when=FIRST_COMPLETED)
            for future in done:
                (i, j), started = running.pop(future)
                if j is not None:
                    follow_ups[i][j] = future.result()  # raises a follow-up's exception now
                    continue
                results[i] = future.result()
                seconds = time.perf_counter() - started
                more = list(then(args[i], results[i]))
                follow_ups[i] = [None] * len(more)
                for j, arg in enumerate(more):
                    heapq.heappush(ready, ((1.0, -seconds), sequence, (i, j), arg))
                    sequence += 1
        return results, follow_ups
    except BaseException:
        pool.shutdown(wait=True, cancel_futures=True)  # a job failed: do not finish the queued ones first
        raise
    finally:
        pool.shutdown(wait=True)
        _JOB = previous


def _checked_workers(workers: int | None) -> int:
    workers = default_workers() if workers is None else workers
    if isinstance(workers, bool) or not isinstance(workers, int) or workers < 1:
        raise ValueError(f"workers must be a positive integer, got {workers!r}")
    return workers


def _can_fork() -> bool:
    """Not inside a worker (a nested call runs its jobs there, one after another) and ``fork`` available."""
    return not _IN_WORKER and "fork" in multiprocessing.get_all_start_methods()
