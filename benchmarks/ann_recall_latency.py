"""Approximate nearest-neighbour search against exact search (issue 10), measured in one run.

For each corpus, one query at a time on one thread (what an online request costs):

* **exact** search, the package's ``ExactIndex`` (torch matmul + top-k): one query at a time, and all the
  queries in one batch (queries per second of the batch);
* **Annoy** (``tt.AnnoyIndex``): the MIPS reduction of Bachrach et al. (``angular`` for vectors of one length),
  every ``n_trees`` x ``search_k`` of the grid, and Annoy 1.17.3's own ``dot`` metric beside it (one
  ``n_trees``), candidates re-scored exactly in both;
* when they are importable (``pip install faiss-cpu hnswlib``, an optional extra of this benchmark, not of the
  book): **faiss** exact search (``IndexFlatIP``, one query at a time and batched) and an IVF index
  (``IndexIVFFlat``, L2 on the same MIPS reduction, ``nlist = sqrt(n)``) over a grid of ``nprobe``; **hnswlib**
  HNSW on the inner product (``M=16``, ``ef_construction=100``) over a grid of ``ef``.

Recall@10 is measured against exact search on the same queries; the build time is single-threaded; the size
is what the index writes to disk. The corpora:

* ``book``: the item vectors of the book's recipe, ``tt.fit_two_tower`` fitted (seed 0) on the training part of
  MovieLens 100K's per-user leave-last-20%-out split, as in chapter 5, queried with its 943 user vectors
  (``--recommender DIR`` reads a saved one instead of fitting; ``--no-book`` skips it);
* ``synthetic``: for each of ``--sizes``, ``tt_helpers.ann.embedding_like(n, 64)``: low-rank clusters of skewed
  sizes, log-normal norms that grow with popularity (not i.i.d. Gaussian), 1,000 queries.

It prints one table per corpus and writes them, with the machine they ran on, to
``benchmarks/results/ann_recall_latency.csv`` (read by chapter 5) and ``.md``. At the largest synthetic size it
checks the issue's target: an Annoy setting with recall@10 >= 0.95 and single-query throughput at least 30
times exact single-query search. From the repository root (the default, 100K, takes a few minutes on 2 cores):

    TT_HELPERS_DATA=../shared/data/movielens .venv/bin/python benchmarks/ann_recall_latency.py \\
        [--sizes 100000 1000000] [--recommender DIR] [--no-book]
"""

from __future__ import annotations

import argparse
import datetime
import importlib.metadata
import os
import pathlib
import platform
import sys
import tempfile
import time

import numpy as np
import pandas as pd
import torch

import tt_helpers as tt
from tt_helpers import ann
from tt_helpers.index import augment_items, augment_queries
from tt_helpers.repro import cpu_name, mkl_kernels

RESULTS = pathlib.Path(__file__).resolve().parent / "results"
K = 10
TARGET_RECALL, TARGET_SPEEDUP = 0.95, 30.0
HNSW_M, HNSW_EF_CONSTRUCTION = 16, 100


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--sizes", type=int, nargs="+", default=[100_000], help="synthetic corpus sizes")
    parser.add_argument("--dim", type=int, default=64)
    parser.add_argument("--queries", type=int, default=1000, help="queries per synthetic corpus, each timed alone")
    parser.add_argument("--exact-queries", type=int, default=200, help="queries timed alone for exact search")
    parser.add_argument("--n-trees", type=int, nargs="+", default=[10, 50, 100])
    parser.add_argument(
        "--search-k", type=int, nargs="+", default=[1000, 2000, 3000, 4000, 5000, 10000, 20000, 50000]
    )
    parser.add_argument("--dot-trees", type=int, default=50, help="n_trees of Annoy's own dot metric")
    parser.add_argument("--nprobe", type=int, nargs="+", default=[1, 4, 8, 16, 32, 64])
    parser.add_argument("--ef", type=int, nargs="+", default=[10, 20, 50, 100, 200])
    parser.add_argument("--recommender", help="a saved recommender (FittedTwoTower.save) for the book corpus")
    parser.add_argument("--no-book", action="store_true", help="skip the book's item vectors")
    parser.add_argument("--out", default=str(RESULTS), help="folder for ann_recall_latency.csv and .md")
    args = parser.parse_args()

    started = time.perf_counter()
    tt.seed_everything(0, threads=1)  # one thread: single-query serving, and fair to Annoy (one thread)
    faiss, hnswlib = optional("faiss"), optional("hnswlib")
    if faiss is not None:
        faiss.omp_set_num_threads(1)
    machine = machine_line(faiss, hnswlib)
    print(machine)

    corpora = []
    if not args.no_book:
        corpora.append((book_corpus(args.recommender), [10, 50], [100, 500, 1000, 2000]))
    for n in args.sizes:
        corpora.append((ann.embedding_like(n, args.dim, args.queries, seed=0), args.n_trees, args.search_k))

    tables, verdicts = [], []
    for corpus, trees, budgets in corpora:
        frame = measure_corpus(corpus, trees, budgets, args, faiss, hnswlib)
        tables.append(frame)
        print(f"\n## {corpus.name}: {corpus.describe()}\n")
        print(show(frame).to_string(index=False))
        verdicts.append(verdict(corpus, frame))
        print(verdicts[-1])
    wall = time.perf_counter() - started
    write(pd.concat(tables, ignore_index=True), machine, verdicts, wall, pathlib.Path(args.out), args)
    print(f"\nwall time {wall:.0f} s; written to {args.out}")


def optional(name: str):
    try:
        return __import__(name)
    except ImportError:
        package = "faiss-cpu" if name == "faiss" else name
        print(f"({name} is not installed: its rows are skipped; pip install {package})")
        return None


def machine_line(faiss, hnswlib) -> str:
    cpu = cpu_name()
    versions = [f"Python {platform.python_version()}", f"torch {torch.__version__}",
                f"annoy {importlib.metadata.version('annoy')}", f"numpy {np.__version__}"]
    if faiss is not None:
        versions.append(f"faiss {faiss.__version__}")
    if hnswlib is not None:
        versions.append(f"hnswlib {importlib.metadata.version('hnswlib')}")
    load = os.getloadavg()[0] if hasattr(os, "getloadavg") else float("nan")
    kernels = f"torch kernels {torch.backends.cpu.get_cpu_capability()}, MKL kernels {mkl_kernels()}"
    return (f"machine: {cpu}, {os.cpu_count()} logical CPUs, {platform.system()} {platform.release()}; "
            f"{', '.join(versions)}; {kernels}; one thread; load average {load:.1f} at the start; "
            f"{datetime.date.today().isoformat()}")


def book_corpus(saved: str | None) -> ann.Corpus:
    if saved:
        rec = tt.load_recommender(saved)
    else:
        ml = tt.load_movielens("ml-100k")
        split = tt.temporal_user_split(ml.ratings, tt.Catalog.from_frames(ml.ratings, ml.users, ml.items))
        frame = split.train.frame[["user_id", "item_id", "timestamp", "rating"]]
        rec = tt.fit_two_tower(frame, ml.users, ml.items, seed=0, verbose=False)
    name = f"book: MovieLens 100K recipe, {rec.catalog.n_items:,} x {rec.tower.embedding_dim}"
    print(f"book corpus: recommender fingerprint {rec.fingerprint()} ({'loaded' if saved else 'fitted'})")
    return ann.Corpus(name, rec.item_vectors(), rec.user_vectors(rec.catalog.user_ids))


def measure_corpus(corpus: ann.Corpus, trees, budgets, args, faiss, hnswlib) -> pd.DataFrame:
    exact, ids = ann.exact_rows(corpus, K, single_queries=args.exact_queries)
    parts = [exact, ann.annoy_grid(corpus, ids, trees, budgets)]
    parts.append(ann.annoy_grid(corpus, ids, [args.dot_trees], budgets, metric="dot"))
    if faiss is not None:
        parts.append(faiss_rows(faiss, corpus, ids, args))
    if hnswlib is not None:
        parts.append(hnsw_rows(hnswlib, corpus, ids, args))
    return ann.table(pd.concat(parts, ignore_index=True))


def file_size_mb(write) -> float:
    with tempfile.TemporaryDirectory() as folder:
        path = pathlib.Path(folder) / "index"
        write(str(path))
        return path.stat().st_size / 1e6


def faiss_rows(faiss, corpus: ann.Corpus, exact_ids: np.ndarray, args) -> pd.DataFrame:
    x, d = corpus.items, corpus.items.shape[1]
    start = time.perf_counter()
    flat = faiss.IndexFlatIP(d)
    flat.add(x)
    build = time.perf_counter() - start
    size = file_size_mb(lambda p: faiss.write_index(flat, p))
    single = ann.measure(corpus, exact_ids, lambda q: flat.search(q[None], K)[1][0], method="faiss flat (exact)",
                         setting="one query at a time", build_seconds=build, size_mb=size, limit=args.exact_queries)
    start = time.perf_counter()
    flat.search(corpus.queries, K)
    batch = {**single, "setting": f"{len(corpus.queries)} queries in one batch", "p50 (ms)": np.nan,
             "p99 (ms)": np.nan, "QPS": len(corpus.queries) / (time.perf_counter() - start)}
    rows = [single, batch]
    # IVF: k-means cells over the MIPS reduction (L2 on [x, sqrt(M^2 - |x|^2)] orders items as q . x does)
    n = len(x)
    nlist = max(1, int(round(np.sqrt(n))))
    start = time.perf_counter()
    items = augment_items(x, float(np.linalg.norm(x.astype(np.float64), axis=1).max()))
    quantizer = faiss.IndexFlatL2(d + 1)
    ivf = faiss.IndexIVFFlat(quantizer, d + 1, nlist, faiss.METRIC_L2)
    sample = np.random.default_rng(0).choice(n, min(n, 40 * nlist), replace=False)
    ivf.cp.seed = 0
    ivf.train(items[sample])
    ivf.add(items)
    build = time.perf_counter() - start
    size = file_size_mb(lambda p: faiss.write_index(ivf, p))
    queries = augment_queries(corpus.queries)
    reduced = ann.Corpus(corpus.name, items, queries)
    for nprobe in args.nprobe:
        if nprobe > nlist:
            continue
        ivf.nprobe = nprobe
        rows.append(ann.measure(reduced, exact_ids, lambda q: ivf.search(q[None], K)[1][0],
                                method="faiss IVF-Flat (MIPS reduction)", setting=f"nlist={nlist}, nprobe={nprobe}",
                                build_seconds=build, size_mb=size))
    return ann.table(rows)


def hnsw_rows(hnswlib, corpus: ann.Corpus, exact_ids: np.ndarray, args) -> pd.DataFrame:
    x = corpus.items
    n, d = x.shape
    start = time.perf_counter()
    index = hnswlib.Index(space="ip", dim=d)
    index.init_index(max_elements=n, ef_construction=HNSW_EF_CONSTRUCTION, M=HNSW_M, random_seed=0)
    index.add_items(x, np.arange(n), num_threads=1)
    build = time.perf_counter() - start
    index.set_num_threads(1)
    size = file_size_mb(index.save_index)
    rows = []
    for ef in args.ef:
        index.set_ef(max(ef, K))
        rows.append(ann.measure(corpus, exact_ids, lambda q: index.knn_query(q[None], K, num_threads=1)[0][0],
                                method="hnswlib HNSW (inner product)",
                                setting=f"M={HNSW_M}, ef_construction={HNSW_EF_CONSTRUCTION}, ef={max(ef, K)}",
                                build_seconds=build, size_mb=size))
    return ann.table(rows)


def verdict(corpus: ann.Corpus, frame: pd.DataFrame) -> str:
    def single(method: str) -> pd.Series | None:
        rows = frame[(frame["method"] == method) & (frame["setting"] == "one query at a time")]
        return None if rows.empty else rows.iloc[0]

    exact, flat = single("exact (torch)"), single("faiss flat (exact)")
    annoy = frame[frame["method"].isin(["Annoy, MIPS reduction", "Annoy, angular"])]
    best = ann.recommended(annoy, TARGET_RECALL)
    if best is None:
        return (f"{corpus.name}: no Annoy setting of the grid reaches recall@10 {TARGET_RECALL} "
                f"(best {annoy[ann.RECALL].max():.4f})")
    speedup = best["QPS"] / exact["QPS"]
    met = "met" if speedup >= TARGET_SPEEDUP else "not met"
    against_faiss = f"; {best['QPS'] / flat['QPS']:.1f}x faiss's exact search" if flat is not None else ""
    return (f"{corpus.name}: recommended Annoy setting {best['setting']} (recall@10 {best[ann.RECALL]:.4f}, "
            f"{best['QPS']:.0f} QPS) is {speedup:.1f}x exact single-query search ({exact['QPS']:.0f} QPS)"
            f"{against_faiss}; target recall >= {TARGET_RECALL} at >= {TARGET_SPEEDUP:g}x exact: {met}")


def show(frame: pd.DataFrame) -> pd.DataFrame:
    out = frame.drop(columns=["corpus", "n_trees", "search_k"]).copy()
    for column, digits in (("recall@10", 4), ("p50 (ms)", 3), ("p99 (ms)", 3), ("QPS", 0), ("build (s)", 2),
                           ("size (MB)", 1)):
        out[column] = out[column].round(digits)
    return out


def write(frame: pd.DataFrame, machine: str, verdicts: list[str], wall: float, folder: pathlib.Path, args) -> None:
    folder.mkdir(parents=True, exist_ok=True)
    shown = list(sys.argv[1:])
    for flag in ("--recommender", "--out"):  # local paths: not part of the result
        if flag in shown and shown.index(flag) + 1 < len(shown):
            shown[shown.index(flag) + 1] = "DIR"
    command = " ".join(["benchmarks/ann_recall_latency.py", *shown])
    with open(folder / "ann_recall_latency.csv", "w", encoding="utf-8") as f:
        f.write(f"# {machine}\n# {command}; wall time {wall:.0f} s\n")
        frame.to_csv(f, index=False, float_format="%.6g")
    lines = ["# ANN recall and latency", "", f"`{command}` (wall time {wall:.0f} s)", "",
             machine[0].upper() + machine[1:], "",
             "Recall@10 against exact search on the same queries; latency and QPS one query at a time on one "
             "thread; build single-threaded; size on disk.", ""]
    for corpus, part in frame.groupby("corpus", sort=False):
        lines += [f"## {corpus}", "", show(part).to_markdown(index=False) if _has_tabulate() else
                  "```\n" + show(part).to_string(index=False) + "\n```", ""]
    lines += ["## Targets", ""] + [f"- {v}" for v in verdicts] + [""]
    (folder / "ann_recall_latency.md").write_text("\n".join(lines), encoding="utf-8")


def _has_tabulate() -> bool:
    try:
        import tabulate  # noqa: F401  (pandas' to_markdown needs it)
    except ImportError:
        return False
    return True


if __name__ == "__main__":
    main()
