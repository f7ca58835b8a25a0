"""Training throughput of chapter 2's tower configurations: examples per second, before and after.

"Before" is the package as it was released with chapters 1-3 (git revision ``--before``, by default
``67ceaa0``: sparse embedding gradients with ``SparseAdam``, a per-row copy for accidental hits, the loss
as ``logsumexp``), exported with ``git archive`` and run in a subprocess; "after" is this working tree (dense
Adam on the tables, one byte gather for accidental hits, the temperature applied to the query, logQ and
hits as one constant offset, ``cross_entropy``). Both run in the same invocation, on the same machine and
data, one torch thread, so their ratio is measured side by side. Run from the repository root:

    TT_HELPERS_DATA=../shared/data/movielens .venv/bin/python benchmarks/training_throughput.py

It prints one table: examples/s of each configuration before and after, the ratio, and the validation
Recall@100 after the same epochs (a speed-up must not cost accuracy; it moves within seed noise, since the
optimiser differs).
"""

from __future__ import annotations

import argparse
import platform

import pandas as pd
from before_after import before_and_after

CONFIGS = ("IDs only", "IDs + features", "IDs + features + history", "full model (+ hidden 128)")

# Runs in a fresh interpreter against whichever tt_helpers is first on sys.path; it speaks both APIs.
MEASURE = r'''
import json, sys, time
from dataclasses import replace
import torch
from tt_helpers.repro import seed_everything
from tt_helpers.catalog import Catalog
from tt_helpers.recipe import TwoTowerRecommender
from tt_helpers.splits import temporal_user_split
from tt_helpers.towers import TowerConfig
from tt_helpers.training import TrainConfig
from tt_helpers.evaluation import evaluate
try:
    from tt_helpers.datasets.movielens import load_movielens, MOVIELENS_USER_FEATURES, MOVIELENS_ITEM_FEATURES
except ImportError:  # the first release
    from tt_helpers.data import load_movielens
    from tt_helpers.features import MOVIELENS_USER_FEATURES, MOVIELENS_ITEM_FEATURES
epochs, repeats = int(sys.argv[1]), int(sys.argv[2])
seed_everything(0, threads=1)
ml = load_movielens("ml-100k")
split = temporal_user_split(ml.ratings, Catalog.from_frames(ml.ratings, ml.users, ml.items))
validation = split.validation()
ids = TowerConfig()
features = replace(ids, user_features=tuple(s.name for s in MOVIELENS_USER_FEATURES),
                   item_features=tuple(s.name for s in MOVIELENS_ITEM_FEATURES))
history = replace(features, use_history=True)
configs = {"IDs only": ids, "IDs + features": features, "IDs + features + history": history,
           "full model (+ hidden 128)": replace(history, hidden_layers=(128,))}
# warm-up
TwoTowerRecommender(ids, TrainConfig(max_epochs=1, progress=False), ml.users, ml.items).fit(validation.train, epochs=1)
out = {}
for name, tower in configs.items():
    best = float("inf")
    for _ in range(repeats):
        model = TwoTowerRecommender(tower, TrainConfig(max_epochs=epochs, progress=False), ml.users, ml.items)
        start = time.perf_counter()
        model.fit(validation.train, epochs=epochs)
        best = min(best, time.perf_counter() - start)
    n = len(validation.train.positives()) * epochs
    out[name] = {"examples/s": n / best, "val Recall@100": evaluate(model, validation, ks=(100,))["Recall@100"]}
print(json.dumps(out))
'''


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--before", default="67ceaa0", help="git revision of the 'before' package")
    parser.add_argument("--epochs", type=int, default=2)
    parser.add_argument("--repeats", type=int, default=2)
    args = parser.parse_args()
    before, after = before_and_after(MEASURE, args.before, args.epochs, args.repeats)
    rows = []
    for name in CONFIGS:
        rows.append({
            "configuration": name,
            "before examples/s": round(before[name]["examples/s"]),
            "after examples/s": round(after[name]["examples/s"]),
            "speed-up": round(after[name]["examples/s"] / before[name]["examples/s"], 2),
            "before val Recall@100": round(before[name]["val Recall@100"], 4),
            "after val Recall@100": round(after[name]["val Recall@100"], 4),
        })
    print(f"before = {args.before}, after = working tree; {platform.machine()}, 1 torch thread, "
          f"{args.epochs} epochs on the validation split's training part (in-batch softmax, batch 512), "
          f"best of {args.repeats}")
    with pd.option_context("display.width", 200, "display.max_columns", 20):
        print(pd.DataFrame(rows).set_index("configuration"))


if __name__ == "__main__":
    main()
