"""What two cheaper ways of scoring candidates save, on chapter 3's fits: seconds per fit, before and after.

* **Per-example candidates as a table** (``tt_helpers.losses.IndexedCandidates``): impression negatives are
  drawn per example (``[B, M]``) from pools that, over a catalogue of 1,682 items, repeat the same items.
  "Before" embeds them as ``[B, M, d]`` (``training.INDEXED_ROWS_PER_COLUMN = 0``); "after" scores the
  table of distinct items and gathers, whenever it has at most ``INDEXED_ROWS_PER_COLUMN`` rows per column.
* **BCE without the mask** (``losses.binary_cross_entropy``): "before" replaced ``-inf`` (accidental hits)
  by 0 and multiplied by a validity mask; "after" relies on ``softplus(-inf) = 0``.

Both paths give the same losses up to float rounding, so each fit is run with the same seed both ways and
its validation metric printed beside the timings (the runs must agree). One torch thread, each fit timed
before and after back to back, so the ratio is measured side by side. Run from the repository root:

    TT_HELPERS_DATA=../shared/data/movielens .venv/bin/python benchmarks/candidate_scoring.py
"""

from __future__ import annotations

import argparse
import contextlib
import platform
import time
from dataclasses import replace

import pandas as pd
import torch
import torch.nn.functional as F

import tt_helpers as tt
from tt_helpers import experiments, impressions, losses, training, world


def masked_binary_cross_entropy(logits: torch.Tensor, weights: torch.Tensor | None = None) -> torch.Tensor:
    """The BCE as it was before: masked candidates replaced by 0, then multiplied by the mask."""
    per_example = F.softplus(-logits[:, 0])
    if logits.shape[1] > 1:
        negatives = logits[:, 1:]
        valid = torch.isfinite(negatives)
        per_example = per_example + (F.softplus(negatives.masked_fill(~valid, 0.0)) * valid).sum(1)
    return losses._weighted_mean(per_example, weights)


@contextlib.contextmanager
def before():
    """The old code paths, for the duration of a fit."""
    rows, bce = training.INDEXED_ROWS_PER_COLUMN, losses.binary_cross_entropy
    training.INDEXED_ROWS_PER_COLUMN, losses.binary_cross_entropy = 0, masked_binary_cross_entropy
    try:
        yield
    finally:
        training.INDEXED_ROWS_PER_COLUMN, losses.binary_cross_entropy = rows, bce


def timed_fit(split, tower, config, **kwargs) -> tuple[float, dict]:
    start = time.perf_counter()
    fit = experiments.fit_on_split(split, tower, config, **kwargs)
    return time.perf_counter() - start, fit.validation


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args()
    tt.seed_everything(args.seed, threads=1)
    movielens = tt.load_movielens("ml-100k")
    catalog = tt.Catalog.from_frames(movielens.ratings, movielens.users, movielens.items)
    # chapter 3's main world and settings (its settings cell)
    config = world.WorldConfig(periods=10, slate_size=50, exploration=0.2, preference_strength=2.0,
                               engaged_share=0.02, seed=args.seed)
    truth = world.true_preference_scores(movielens.ratings, catalog, config.truth_l2)
    simulated = world.simulate_world(movielens.ratings, catalog, config, truth)
    world_split, log = simulated.split(), simulated.impression_log()
    tower = tt.TowerConfig(embedding_dim=64, normalize=True, temperature=0.2)
    base = tt.TrainConfig(max_epochs=30, patience=2, progress=False, seed=args.seed)
    world_base = replace(base, negatives="uniform", num_negatives=256, positives="any",
                         early_stopping_metric="Recall@10")
    world_fits = {
        "impressions only (32 per example)": replace(world_base, negatives=impressions.impression_negatives(32)),
        **{f"mix {s:.0%} of 256": replace(world_base, negatives=impressions.random_and_impressions(256, s))
           for s in (0.1, 0.3, 0.5)},
    }
    movielens_split = tt.temporal_user_split(movielens.ratings, catalog)
    bce = replace(base, loss="bce", negatives="uniform", num_negatives=256, max_epochs=40, patience=3)

    jobs = [(f"world: {name}", world_split, cfg, {"extras": {"impressions": log}}, "val_Recall@10")
            for name, cfg in world_fits.items()]
    jobs.append(("MovieLens: uniform (BCE)", movielens_split, bce, {}, "val_Recall@100"))
    rows = []
    for name, split, cfg, kwargs, metric in jobs:
        with before():
            old_seconds, old_validation = timed_fit(split, tower, cfg, **kwargs)
        new_seconds, new_validation = timed_fit(split, tower, cfg, **kwargs)
        rows.append({"fit": name, "before s": old_seconds, "after s": new_seconds,
                     "speed-up": old_seconds / new_seconds, "validation before": old_validation[metric],
                     "validation after": new_validation[metric]})
        print(f"{name}: {old_seconds:.2f} s -> {new_seconds:.2f} s", flush=True)
    print(f"\nmachine: {platform.processor() or platform.machine()}; torch {torch.__version__}, 1 thread; "
          f"indexed when at most {training.INDEXED_ROWS_PER_COLUMN} distinct items per column")
    print(pd.DataFrame(rows).set_index("fit").round({"before s": 2, "after s": 2, "speed-up": 2,
                                                    "validation before": 4, "validation after": 4}).to_string())


if __name__ == "__main__":
    main()
