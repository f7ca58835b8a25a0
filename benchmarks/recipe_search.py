"""How the recipe's defaults are chosen: a small search on validation only, never on a test split.

The book's split (per-user leave-last-20%-out) is cut once more: each user's last 20% of *training*
ratings become the validation users' held-out part (``Split.validation()``), and every candidate setting
of ``tt.fit_two_tower`` is fitted on the rest (the recipe carves its own early-stopping split from that,
as it does on a reader's data) and scored there. The test ratings are not read. Each candidate of round 1
changes one setting of :data:`tt_helpers.own_data.RECIPE_DEFAULTS` (round 2: see ``ROUND_2``); the table
gives validation Recall@100 and NDCG@10 (mean over seeds), the paired bootstrap interval of each candidate
minus the defaults (:meth:`~tt_helpers.experiments.Runs.comparisons`) and the fit time. The fits run side by
side in worker processes (one thread each). Run from the repository root (about 4 minutes on 2 cores):

    TT_HELPERS_DATA=../shared/data/movielens .venv/bin/python benchmarks/recipe_search.py [--seeds 3] [--round 2]
"""

from __future__ import annotations

import argparse
import platform
import time

import pandas as pd
import torch

import tt_helpers as tt
from tt_helpers import experiments
from tt_helpers.workers import map_in_workers

KS = (10, 100)
METRIC = "Recall@100"
CANDIDATES: dict[str, dict] = {
    "defaults": {},
    "mixed negatives (in-batch + 256 uniform)": {"negatives": "mixed", "num_negatives": 256},
    "temperature 0.1": {"temperature": 0.1},
    "temperature 0.3": {"temperature": 0.3},
    "embedding_dim 64": {"embedding_dim": 64},
    "embedding_dim 256": {"embedding_dim": 256},
    "hidden layer 256": {"hidden_layers": (256,)},
    "batch_size 1024": {"batch_size": 1024},
}
# A second round (--round 2): the rule and the optimiser, and the two settings of round 1 closest to a gain
# taken together.
ROUND_2: dict[str, dict] = {
    "defaults": {},
    "rating-weighted positives": {"positives": "weighted"},
    "learning_rate 0.005": {"learning_rate": 0.005},
    "learning_rate 0.02": {"learning_rate": 0.02},
    "patience 3": {"patience": 3},
    "batch_size 1024 + mixed negatives": {"batch_size": 1024, "negatives": "mixed", "num_negatives": 256},
}
ROUNDS = {1: CANDIDATES, 2: ROUND_2}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--seeds", type=int, default=3)
    parser.add_argument("--round", type=int, default=1, choices=sorted(ROUNDS))
    args = parser.parse_args()
    candidates = ROUNDS[args.round]
    tt.seed_everything(0, threads=2)
    ml = tt.load_movielens("ml-100k")
    catalog = tt.Catalog.from_frames(ml.ratings, ml.users, ml.items)
    validation = tt.temporal_user_split(ml.ratings, catalog).validation()  # train only; test unread
    frame = validation.train.frame[["user_id", "item_id", "timestamp", "rating"]]
    seeds = tuple(range(args.seeds))
    jobs = [(name, seed) for name in candidates for seed in seeds]

    def fit(job: tuple[str, int]) -> tuple[dict, pd.DataFrame, int, float]:
        name, seed = job
        start = time.perf_counter()
        fitted = tt.fit_two_tower(frame, ml.users, ml.items, seed=seed, verbose=False, **candidates[name])
        took = time.perf_counter() - start
        return (*tt.evaluate_detailed(fitted.recommender, validation, KS), fitted.best_epoch, took)

    start = time.perf_counter()
    results = map_in_workers(fit, jobs)
    wall = time.perf_counter() - start
    runs = experiments.Runs(f"validation of the book's split: {validation.protocol}")
    seconds: dict[str, list[float]] = {}
    for (name, seed), (summary, per_user, best_epoch, took) in zip(jobs, results):
        runs.add(name, summary, per_user, seed=seed, best_epoch=best_epoch)
        seconds.setdefault(name, []).append(took)
    pd.set_option("display.width", 200)
    print(f"machine: {platform.machine()}, torch {torch.__version__}; {len(jobs)} fits in worker processes, "
          f"{wall:.0f} s wall")
    table = runs.table([METRIC, "NDCG@10"], validation_metric=None)
    table["fit (s, one thread)"] = [round(sum(seconds[n]) / len(seconds[n]), 1) for n in table.index]
    print(table.to_string())
    pairs = [(name, "defaults") for name in candidates if name != "defaults"]
    print(runs.comparisons(pairs, METRIC).to_string())


if __name__ == "__main__":
    main()
