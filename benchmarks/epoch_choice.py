"""What choosing the number of epochs once per variant saves, on chapter 4's comparison of losses.

``tt.run_variants`` early-stops the first seed of each variant on the validation split and refits every seed
on the whole training split for the number of epochs that run chose (the default since this benchmark was
written); ``epochs_per_seed=True`` gives every seed its own validation run, as the book did before. This
script runs chapter 4's section-2 grid (full softmax, in-batch softmax, uniform sampled softmax, uniform BCE;
id-only towers, 3 seeds) both ways, back to back in one invocation with the book's worker processes, and
prints the wall time of each and the test metrics of each way side by side, with the paired comparison of
every loss with the full softmax under each protocol (the verdicts should agree; the numbers of seeds 1 and
2 move, because they train for seed 0's number of epochs). Run from the repository root:

    TT_HELPERS_DATA=../shared/data/movielens .venv/bin/python benchmarks/epoch_choice.py
"""

from __future__ import annotations

import argparse
import os
import platform
import time
from dataclasses import replace

import pandas as pd

import tt_helpers as tt


def variants() -> dict:
    tower = tt.TowerConfig(embedding_dim=64, temperature=0.2)
    base = tt.TrainConfig(positives="any", max_epochs=30, patience=2, progress=False)
    sampled = replace(base, num_negatives=256, negatives="uniform")
    return {
        "full softmax": (tower, replace(base, negatives="full")),
        "in-batch softmax": (tower, base),
        "sampled softmax (uniform)": (tower, sampled),
        "BCE (uniform), tau 0.2": (tower, replace(sampled, loss="bce")),
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--seeds", type=int, default=3)
    args = parser.parse_args()
    tt.seed_everything(0, threads=2)
    movielens = tt.load_movielens("ml-100k")
    catalog = tt.Catalog.from_frames(movielens.ratings, movielens.users, movielens.items)
    split = tt.temporal_user_split(movielens.ratings, catalog)
    seeds = tuple(range(args.seeds))
    grid = variants()
    runs, seconds = {}, {}
    for label, per_seed in (("once per variant", False), ("per seed", True)):
        start = time.perf_counter()
        runs[label] = tt.run_variants(split, grid, seeds, ks=(10, 100), epochs_per_seed=per_seed)
        seconds[label] = time.perf_counter() - start
    names = list(grid)
    columns = ["Recall@10", "Recall@100", "best epochs"]
    table = pd.concat({label: r.table(columns[:2], names)[columns] for label, r in runs.items()}, axis=1)
    pairs = [("full softmax", name) for name in names[1:]]
    verdicts = pd.concat(
        {label: r.comparisons(pairs)[["difference", "95% interval"]] for label, r in runs.items()}, axis=1
    )
    once, per_seed = seconds["once per variant"], seconds["per seed"]
    print(f"{platform.machine()}, {os.cpu_count()} CPUs, workers: tt_helpers.workers.default_workers() = "
          f"{tt.workers.default_workers()}; {len(names)} variants x {len(seeds)} seeds; chapter 4's protocol")
    print(f"wall time: epochs once per variant {once:.0f} s, per seed {per_seed:.0f} s, "
          f"ratio {per_seed / once:.2f}x")
    with pd.option_context("display.width", 200, "display.max_columns", 20):
        print(table)
        print(verdicts)


if __name__ == "__main__":
    main()
