"""Measuring approximate nearest-neighbour search: corpora like learned embeddings, recall, latency, size.

An approximate index trades recall for speed, and both depend on the vectors: i.i.d. Gaussian vectors are the
hardest case for every index and look nothing like the output of a trained item tower. :func:`embedding_like`
makes corpora with the structure of learned embeddings instead: a few directions that matter (low rank),
clusters of very different sizes, and norms that grow with popularity (a dot-product model gives popular items
longer vectors). On such a corpus :func:`annoy_grid` measures, for each ``n_trees`` and ``search_k``, what chapter
5 and ``benchmarks/ann_recall_latency.py`` report: recall@k against exact search
(:func:`~tt_helpers.index.recall_against_exact`), the latency of single queries (p50, p99, queries per second),
the build time and the size of the saved index. :func:`exact_rows` measures exact search the same way, one query
at a time and in one batch.

Every timing is one query at a time, on the threads the caller allows (the book pins one torch thread, and
Annoy searches on one): what an online request costs, not what a batch job would. Timings differ from machine
to machine and from run to run; recall, for a seeded build, does not.
"""

from __future__ import annotations

import dataclasses
import pathlib
import tempfile
import time
from collections.abc import Callable, Mapping, Sequence
from typing import Any

import numpy as np
import pandas as pd

from .index import AnnoyIndex, ExactIndex, RetrievalIndex, recall_against_exact
from .repro import torch_threads
from .workers import map_in_workers

RECALL = "recall@10"  # the tables' recall column (k = 10)


@dataclasses.dataclass(frozen=True)
class Corpus:
    """Item vectors ``items`` ``[n, d]`` and query (user) vectors ``queries`` ``[m, d]``, float32."""

    name: str
    items: np.ndarray
    queries: np.ndarray

    @property
    def norm_ratio(self) -> float:
        """Largest item norm over the median one: how far the corpus is from one length (1 for unit vectors)."""
        norms = np.linalg.norm(self.items.astype(np.float64), axis=1)
        return float(norms.max() / np.median(norms))

    def describe(self) -> dict[str, Any]:
        n, d = self.items.shape
        return {"corpus": self.name, "items": n, "dimension": d, "queries": len(self.queries),
                "max / median norm": round(self.norm_ratio, 2)}


def embedding_like(n_items: int, dim: int = 64, n_queries: int = 1000, *, rank: int = 16,
                   n_clusters: int | None = None, cluster_skew: float = 0.8, spread: float = 0.6,
                   noise: float = 0.15, norm_sigma: float = 0.35, seed: int = 0, name: str | None = None) -> Corpus:
    """A synthetic corpus with the structure of learned item embeddings, and user vectors near the same clusters.

    * **Low rank:** cluster centres ``c ~ N(0, I_rank)`` live in a random ``rank``-dimensional subspace of
      ``R^dim``; an item is its centre plus ``spread`` times a Gaussian in that subspace, plus ``noise`` times an
      isotropic Gaussian in all ``dim`` coordinates.
    * **Clusters of skewed sizes:** ``n_clusters`` (default ``sqrt(n_items) / 2``, at least 16) with sizes
      proportional to ``1 / rank^cluster_skew``.
    * **Popularity-skewed norms:** each item's direction is scaled to length ``exp(norm_sigma * z)``, where ``z``
      are sorted standard normals handed out by a random popularity order: log-normal norms, the longest vectors
      the most popular items. ``norm_sigma=0`` gives unit vectors (an L2-normalised tower); at 1M items 0.35
      makes the longest vector about 5 times the median one.
    * **Queries** are drawn like items from the same clusters (by the same cluster sizes), without the norm
      (a query's length does not change its ranking).
    """
    if n_items < 1 or n_queries < 1 or dim < 1 or not 1 <= rank <= dim:
        raise ValueError(f"need n_items, n_queries >= 1 and 1 <= rank <= dim, got {n_items}, {n_queries}, {rank}, "
                         f"{dim}")
    rng = np.random.default_rng(seed)
    basis = np.linalg.qr(rng.normal(size=(dim, rank)))[0]  # [dim, rank], orthonormal columns
    n_clusters = n_clusters or max(16, int(round(np.sqrt(n_items) / 2)))
    centres = rng.normal(size=(n_clusters, rank))
    sizes = 1.0 / np.arange(1, n_clusters + 1) ** cluster_skew
    sizes /= sizes.sum()

    def draw(n: int) -> np.ndarray:
        latent = centres[rng.choice(n_clusters, n, p=sizes)] + spread * rng.normal(size=(n, rank))
        return latent @ basis.T + noise * rng.normal(size=(n, dim))

    items = draw(n_items)
    items /= np.linalg.norm(items, axis=1, keepdims=True)
    z = np.sort(rng.normal(size=n_items))[::-1][rng.permutation(n_items)]  # popularity order -> z
    items *= np.exp(norm_sigma * z)[:, None]
    queries = draw(n_queries)
    name = name or f"synthetic {_size_label(n_items)} x {dim}"
    return Corpus(name, items.astype(np.float32), queries.astype(np.float32))


def _size_label(n: int) -> str:
    if n >= 1_000_000 and n % 1_000_000 == 0:
        return f"{n // 1_000_000}M"
    if n >= 1000 and n % 1000 == 0:
        return f"{n // 1000}K"
    return f"{n:,}"


# =========================================================================== timing


def time_queries(search: Callable[[np.ndarray], Any], queries: np.ndarray,
                 warmup: int = 5) -> tuple[np.ndarray, list]:
    """Run ``search(q)`` for each row ``q`` of ``queries`` ``[m, d]`` alone, timed with ``time.perf_counter``,
    after ``warmup`` untimed calls (the first queries again: the first calls on a new shape pay for lazy
    set-up, caches and the allocator, not for the search). Returns the seconds of each query ``[m]`` and what
    each call returned."""
    for q in queries[:warmup]:
        search(q)
    seconds, outputs = np.empty(len(queries)), []
    for row, q in enumerate(queries):
        start = time.perf_counter()
        outputs.append(search(q))
        seconds[row] = time.perf_counter() - start
    return seconds, outputs


def latency(seconds: np.ndarray) -> dict[str, float]:
    """``p50 (ms)``, ``p99 (ms)`` and ``QPS`` (queries per second, one at a time: ``1 / mean``) of per-query
    timings ``[m]``."""
    seconds = np.asarray(seconds, dtype=np.float64)
    return {"p50 (ms)": float(np.percentile(seconds, 50) * 1e3), "p99 (ms)": float(np.percentile(seconds, 99) * 1e3),
            "QPS": float(1.0 / seconds.mean())}


def saved_size_mb(index: RetrievalIndex) -> float:
    """Megabytes (10^6 bytes) of the directory ``index.save`` writes (for Annoy: its file with the trees and
    the vectors kept for re-scoring), measured by saving to a temporary directory."""
    with tempfile.TemporaryDirectory() as folder:
        index.save(folder)
        return sum(p.stat().st_size for p in pathlib.Path(folder).iterdir()) / 1e6


# =========================================================================== measurements

COLUMNS = ["corpus", "method", "setting", "n_trees", "search_k", RECALL, "p50 (ms)", "p99 (ms)", "QPS", "build (s)",
           "size (MB)"]


def measure(corpus: Corpus, exact_ids: np.ndarray, search: Callable[[np.ndarray], np.ndarray], *, method: str,
            setting: str, build_seconds: float, size_mb: float, limit: int | None = None, **extra: Any) -> dict:
    """One row of the tables: ``search(q) -> ids [k]`` run on each query alone (the first ``limit``, default
    all), its recall@k against ``exact_ids`` (``[m, k]``, the same queries' exact top k), its latency
    (:func:`latency`), and the build time and size given. ``extra`` columns (``n_trees``, ``search_k``) are kept."""
    queries = corpus.queries[:limit]
    seconds, found = time_queries(search, queries)
    k = exact_ids.shape[1]
    recall = recall_against_exact(np.stack([np.asarray(f).reshape(k) for f in found]), exact_ids[: len(queries)])
    return {"corpus": corpus.name, "method": method, "setting": setting, **extra, f"recall@{k}": recall,
            **latency(seconds), "build (s)": build_seconds, "size (MB)": size_mb}


def exact_rows(corpus: Corpus, k: int = 10, single_queries: int | None = None,
               threads: int = 1) -> tuple[pd.DataFrame, np.ndarray]:
    """Exact search (:class:`~tt_helpers.index.ExactIndex`, torch on ``threads`` threads) one query at a time
    (the first ``single_queries`` queries, default all) and all queries in one batch (the best of three
    timed batches, after an untimed one). Returns ``(rows, exact ids
    [m, k])``, the ids being the reference every approximate index is measured against."""
    with torch_threads(threads):
        return _exact_rows(corpus, k, single_queries)


def _seconds(call: Callable[[], Any]) -> float:
    start = time.perf_counter()
    call()
    return time.perf_counter() - start


def _exact_rows(corpus: Corpus, k: int, single_queries: int | None) -> tuple[pd.DataFrame, np.ndarray]:
    start = time.perf_counter()
    index = ExactIndex().build(corpus.items)
    build = time.perf_counter() - start
    ids, _ = index.search(corpus.queries, k)  # untimed: the first batch pays for lazy set-up
    per_query = min(_seconds(lambda: index.search(corpus.queries, k)) for _ in range(3)) / len(corpus.queries)
    size = corpus.items.nbytes / 1e6
    single = measure(corpus, ids, lambda q: index.search(q, k)[0], method="exact (torch)",
                     setting="one query at a time", build_seconds=build, size_mb=size, limit=single_queries)
    batch = {**single, "setting": f"{len(corpus.queries)} queries in one batch", "p50 (ms)": np.nan,
             "p99 (ms)": np.nan, "QPS": 1.0 / per_query}
    return table([single, batch]), ids


def annoy_grid(corpus: Corpus, exact_ids: np.ndarray, n_trees: Sequence[int] = (10, 50),
               search_k: Sequence[int] = (1000, 5000), metric: str = "auto", normalized: bool | None = None,
               seed: int = 0) -> pd.DataFrame:
    """One row per ``n_trees`` x ``search_k`` (:func:`measure`, every query timed alone): recall@k against
    ``exact_ids``, single-query latency, the build time (``n_jobs=1``, seeded) and the saved size. ``metric``
    and ``normalized`` are :meth:`AnnoyIndex.build <tt_helpers.AnnoyIndex.build>`'s (``"dot"``: Annoy 1.17.3's
    own metric). Annoy searches on one thread; the exact re-scoring runs in numpy."""
    k = exact_ids.shape[1]
    rows = []
    for trees in n_trees:
        start = time.perf_counter()
        index = AnnoyIndex().build(corpus.items, n_trees=int(trees), metric=metric, normalized=normalized, seed=seed)
        build = time.perf_counter() - start
        size = saved_size_mb(index)
        for budget in search_k:
            rows.append(measure(corpus, exact_ids, lambda q, ix=index, b=int(budget): ix.search(q, k, search_k=b)[0],
                                method=annoy_label(index), setting=f"n_trees={trees}, search_k={budget}",
                                build_seconds=build, size_mb=size, n_trees=int(trees), search_k=int(budget)))
    return table(rows)


def annoy_grids(calls: Sequence[Mapping[str, Any]], workers: int | None = None) -> pd.DataFrame:
    """:func:`annoy_grid` once per mapping of its arguments (``corpus``, ``exact_ids``, ``n_trees``, ...), the
    calls side by side in worker processes (:func:`tt_helpers.workers.map_in_workers`); their rows in the
    order of ``calls``, with a ``seed`` column. Every build is seeded and runs on one thread (``n_jobs=1``),
    so the forests, and their recall, are those of calling one after another; the latencies are measured
    while the other workers run, so they are comparable only with each other."""
    def grid(arguments: Mapping[str, Any]) -> pd.DataFrame:
        return annoy_grid(**arguments).assign(seed=int(arguments.get("seed", 0)))

    return pd.concat(map_in_workers(grid, list(calls), workers), ignore_index=True)


def annoy_label(index: AnnoyIndex) -> str:
    """How an :class:`~tt_helpers.AnnoyIndex` searches: ``"Annoy, MIPS reduction"``, ``"Annoy, angular"`` or
    ``"Annoy, dot (1.17.3)"``."""
    meta = index.metadata
    if meta["metric"] == "dot":
        return "Annoy, dot (1.17.3)"
    return "Annoy, MIPS reduction" if meta["reduction"] else "Annoy, angular"


def table(rows: Sequence[dict] | pd.DataFrame) -> pd.DataFrame:
    """Rows of :func:`measure` as a frame with the columns in the book's order (``COLUMNS``)."""
    frame = pd.DataFrame(rows)
    return frame.reindex(columns=COLUMNS + [c for c in frame.columns if c not in COLUMNS])


def by_catalogue_size(sizes: Sequence[int], dim: int = 64, n_queries: int = 200, n_trees: int = 10,
                      search_k: Sequence[int] = (200, 500, 1000, 2000, 5000), min_recall: float = 0.95,
                      seed: int = 0, **corpus_options: Any) -> pd.DataFrame:
    """Where an approximate index starts to pay off: for each catalogue size, a corpus :func:`embedding_like`
    (``corpus_options`` passed on), exact search one query at a time and in one batch (milliseconds per query),
    and Annoy with ``n_trees`` at the smallest ``search_k`` of the grid whose recall@10 reaches ``min_recall``
    (NaN when none does). One row per size, indexed by ``items``."""
    rows = []
    for n in sizes:
        corpus = embedding_like(int(n), dim, n_queries, seed=seed, **corpus_options)
        exact, ids = exact_rows(corpus)
        grid = annoy_grid(corpus, ids, (n_trees,), search_k, seed=seed)
        good = grid[grid[RECALL] >= min_recall]
        best = good.iloc[0] if len(good) else pd.Series(np.nan, index=grid.columns)
        rows.append({"items": int(n), "exact, one query (ms)": exact["p50 (ms)"].iloc[0],
                     "exact, in a batch (ms per query)": 1e3 / exact["QPS"].iloc[1],
                     f"Annoy, recall@10 >= {min_recall:g} (ms)": best["p50 (ms)"], "search_k": best["search_k"],
                     RECALL: best[RECALL]})
    return pd.DataFrame(rows).set_index("items")


BENCHMARK = pathlib.Path(__file__).resolve().parents[1] / "benchmarks" / "results" / "ann_recall_latency.csv"


def read_benchmark(path: str | pathlib.Path | None = None) -> tuple[pd.DataFrame, str]:
    """The committed result of ``benchmarks/ann_recall_latency.py`` (default: ``benchmarks/results/
    ann_recall_latency.csv`` of this repository) and the line naming the machine it ran on."""
    path = pathlib.Path(path or BENCHMARK)
    if not path.is_file():
        raise FileNotFoundError(f"{path} is missing: run benchmarks/ann_recall_latency.py from the repository root")
    with open(path, encoding="utf-8") as f:
        machine = f.readline().lstrip("# ").strip()
    return pd.read_csv(path, comment="#"), machine


def pareto_front(frame: pd.DataFrame, recall: str = RECALL, speed: str = "QPS") -> pd.DataFrame:
    """The rows no other row beats on both ``recall`` and ``speed`` (higher is better on both), fastest first."""
    rows = frame.sort_values([speed, recall], ascending=[False, False])
    best, keep = -np.inf, []
    for label, value in rows[recall].items():
        if value > best:
            keep.append(label)
            best = value
    return frame.loc[keep]


def best_settings(frame: pd.DataFrame, min_recall: float = 0.95, recall: str = RECALL,
                  speed: str = "QPS") -> pd.DataFrame:
    """Per method, the fastest row whose ``recall`` reaches ``min_recall``, or, for a method that never does,
    its row of highest recall; the column ``reaches`` says which. Methods in the order of ``frame``."""
    rows = []
    for _, part in frame.groupby("method", sort=False):
        best = recommended(part, min_recall, recall, speed)
        row = part.loc[part[recall].idxmax()] if best is None else best
        rows.append(row.to_dict() | {"reaches": best is not None})
    return pd.DataFrame(rows).set_index("method")


def recommended(frame: pd.DataFrame, min_recall: float = 0.95, recall: str = RECALL,
                speed: str = "QPS") -> pd.Series | None:
    """The fastest row whose ``recall`` reaches ``min_recall`` (None when none does)."""
    good = frame[frame[recall] >= min_recall]
    return None if good.empty else good.loc[good[speed].idxmax()]


__all__ = [
    "BENCHMARK",
    "COLUMNS",
    "RECALL",
    "Corpus",
    "annoy_grid",
    "annoy_grids",
    "annoy_label",
    "best_settings",
    "by_catalogue_size",
    "embedding_like",
    "exact_rows",
    "latency",
    "measure",
    "pareto_front",
    "read_benchmark",
    "recommended",
    "saved_size_mb",
    "table",
    "time_queries",
]
