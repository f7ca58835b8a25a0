"""Measuring ANN search: the synthetic corpora, the grid's rows, the Pareto front, the recommended setting,
the plot; and the thread context."""

import time

import matplotlib.pyplot as plt
import numpy as np
import pandas as pd
import pytest
import torch

from tt_helpers import ann, plotting
from tt_helpers.repro import torch_threads

pytestmark = pytest.mark.usefixtures("one_thread")


def test_embedding_like_has_the_promised_structure():
    corpus = ann.embedding_like(3000, dim=32, n_queries=50, rank=8, seed=1)
    again = ann.embedding_like(3000, dim=32, n_queries=50, rank=8, seed=1)
    assert corpus.items.shape == (3000, 32) and corpus.queries.shape == (50, 32)
    assert corpus.items.dtype == corpus.queries.dtype == np.float32
    np.testing.assert_array_equal(corpus.items, again.items)  # seeded
    directions = corpus.items / np.linalg.norm(corpus.items, axis=1, keepdims=True)
    spectrum = np.linalg.svd(directions, compute_uv=False) ** 2
    assert spectrum[:8].sum() / spectrum.sum() > 0.8  # low rank: 8 directions hold most of the energy
    assert 2 < corpus.norm_ratio < 5  # log-normal norms, sigma 0.35
    unit = ann.embedding_like(500, dim=16, n_queries=5, norm_sigma=0.0)
    np.testing.assert_allclose(np.linalg.norm(unit.items, axis=1), 1.0, rtol=1e-5)
    assert unit.describe()["max / median norm"] == 1.0 and unit.name == "synthetic 500 x 16"
    with pytest.raises(ValueError, match="rank"):
        ann.embedding_like(10, dim=4, rank=5)


def test_exact_and_annoy_rows():
    corpus = ann.embedding_like(2000, dim=16, n_queries=40, seed=0)
    exact, ids = ann.exact_rows(corpus, single_queries=10)
    assert ids.shape == (40, 10) and list(exact.columns) == ann.COLUMNS
    assert exact["setting"].tolist() == ["one query at a time", "40 queries in one batch"]
    assert (exact[ann.RECALL] == 1.0).all() and (exact["QPS"] > 0).all()
    grid = ann.annoy_grid(corpus, ids, n_trees=(2, 4), search_k=(50, 400, 8000))
    assert len(grid) == 6 and set(grid["method"]) == {"Annoy, MIPS reduction"}
    for _, rows in grid.groupby("n_trees"):
        assert rows[ann.RECALL].is_monotonic_increasing  # a larger budget inspects a superset of candidates
        assert rows["size (MB)"].nunique() == 1 and (rows["p50 (ms)"] <= rows["p99 (ms)"]).all()
    assert grid[ann.RECALL].iloc[-1] == 1.0  # 8000 candidates: every item
    dot = ann.annoy_grid(corpus, ids, n_trees=(4,), search_k=(400,), metric="dot")
    assert dot["method"].tolist() == ["Annoy, dot (1.17.3)"]
    assert dot[ann.RECALL].iloc[0] < grid.query("n_trees == 4 and search_k == 400")[ann.RECALL].iloc[0]


def test_annoy_grids_in_workers_give_the_rows_of_one_call_after_another():
    corpus = ann.embedding_like(2000, dim=16, n_queries=40, norm_sigma=0.8, seed=1)
    _, ids = ann.exact_rows(corpus, single_queries=5)
    calls = [dict(corpus=corpus, exact_ids=ids, n_trees=(3,), search_k=(100, 400), seed=seed, **options)
             for options in ({}, {"metric": "dot"}) for seed in (0, 1, 2)]
    together = ann.annoy_grids(calls, workers=2)
    one_by_one = pd.concat([ann.annoy_grid(**call).assign(seed=call["seed"]) for call in calls], ignore_index=True)
    stable = ["method", "n_trees", "search_k", ann.RECALL, "size (MB)", "seed"]  # not the timings
    pd.testing.assert_frame_equal(together[stable], one_by_one[stable], check_exact=True)
    assert together.groupby("method")[ann.RECALL].nunique().max() > 1  # the seeds build different forests


def test_pareto_front_and_recommended_setting():
    frame = pd.DataFrame({"setting": list("abcde"), ann.RECALL: [0.5, 0.9, 0.8, 0.97, 0.99],
                          "QPS": [1000.0, 500.0, 400.0, 300.0, 100.0]})
    assert ann.pareto_front(frame)["setting"].tolist() == ["a", "b", "d", "e"]  # c is beaten by b
    assert ann.recommended(frame, 0.95)["setting"] == "d"
    assert ann.recommended(frame, 0.995) is None


def test_recall_vs_qps_plot():
    frame = pd.DataFrame({"method": ["Annoy"] * 4, "n_trees": [10, 10, 50, 50], ann.RECALL: [0.8, 0.9, 0.85, 0.95],
                          "QPS": [900.0, 400.0, 800.0, 300.0]})
    ax = plotting.recall_vs_qps(frame, vlines={"exact": 200.0}, title="t")
    assert len(ax.get_lines()) == 3 and ax.get_xscale() == "log"
    assert [t.get_text() for t in ax.get_legend().get_texts()] == ["Annoy, 10 trees", "Annoy, 50 trees", "exact"]
    plt.close(ax.figure)


def test_torch_threads_restores_the_count():
    before = torch.get_num_threads()
    with torch_threads(2):
        assert torch.get_num_threads() == 2
    assert torch.get_num_threads() == before


def test_best_settings_per_method():
    frame = pd.DataFrame({"method": ["A", "A", "B", "B"], "setting": ["a1", "a2", "b1", "b2"],
                          ann.RECALL: [0.96, 0.99, 0.8, 0.9], "QPS": [500.0, 100.0, 900.0, 800.0]})
    best = ann.best_settings(frame)
    assert best["setting"].to_dict() == {"A": "a1", "B": "b2"} and best["reaches"].tolist() == [True, False]


def test_time_queries_leaves_the_warm_up_calls_out_of_the_timings():
    queries = np.arange(12, dtype=np.float32).reshape(6, 2)
    calls = []

    def search(q):
        calls.append(float(q[0]))
        if len(calls) == 1:  # the first call pays for a lazy set-up
            time.sleep(0.05)
        return q * 2

    seconds, outputs = ann.time_queries(search, queries, warmup=2)
    assert calls[:2] == [0.0, 2.0] and len(calls) == 2 + len(queries)
    assert seconds.shape == (6,) and seconds.max() < 0.04  # the slow call is not among them
    np.testing.assert_array_equal(np.stack(outputs), queries * 2)
    seconds, _ = ann.time_queries(lambda q: time.sleep(0.05 if q[0] == 0 else 0), queries, warmup=0)
    assert seconds[0] >= 0.05 > seconds[1:].max()  # no warm-up: the first query is timed as it ran
