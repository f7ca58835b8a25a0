"""How much of chapter 3's world verdicts is the world's own noise: the main world re-made with other seeds.

Chapter 3 (section 4) compares negative strategies in one simulated world (``tt_helpers.world``), with paired
bootstrap intervals over its test users. Those intervals hold the world fixed; the world is random too (its
engagement draws, its exploration slots, and the logging policy re-fitted every week on them). This script
simulates the chapter's main world (20% random slots, beta 2) once per ``--world-seeds`` value, trains the
chapter's strategies in each (3 training seeds, as in the chapter), and prints, for the chapter's
comparisons between strategies (against random on both measures, and the main world's pairs; not those with
EASE), the difference and verdict in every world side by side, and how many worlds agree. A verdict that
holds in only some worlds is a close call of the simulation, not a finding. World seed 0 is the chapter's
world; under ``make test``'s CPU caps, on the machine that made the stored outputs, its column reproduces
the chapter's numbers. Run from the repository root (about a minute per world on 2 cores):

    TT_HELPERS_DATA=../shared/data/movielens ATEN_CPU_CAPABILITY=avx2 ONEDNN_MAX_CPU_ISA=AVX2 \
        MKL_ENABLE_INSTRUCTIONS=AVX2 .venv/bin/python benchmarks/world_noise.py
"""

from __future__ import annotations

import argparse
import platform
import time
from dataclasses import replace

import pandas as pd
import torch

import tt_helpers as tt
from tt_helpers import impressions, repro, world

# The chapter's settings (notebooks/03_positives_and_negatives.ipynb, settings cell and section 4).
TOWER = tt.TowerConfig(embedding_dim=64, normalize=True, temperature=0.2)  # tau chosen in section 1
BASE = tt.TrainConfig(max_epochs=30, patience=2, progress=False)
WORLD = world.WorldConfig(periods=10, slate_size=50, exploration=0.2, preference_strength=2.0,
                          engaged_share=0.02)
NUM_NEGATIVES, IMPRESSION_NEGATIVES, STAGED_SHARE = 256, 32, 0.3
SHARES = (0.1, 0.3, 0.5)
WORLD_METRIC, TRUTH_TOP, TRUTH_METRIC = "Recall@10", 20, "Recall@100"
SEEDS = (0, 1, 2)
STRATEGIES = ("impressions only", "mix 10%", "mix 30%", "mix 50%", "staged", "mix 30%, uncorrected")
PAIRS = [  # (a, b, measure): the comparisons of the chapter's section 4
    *((name, "random", "held-out") for name in STRATEGIES),
    *((name, "random", "truth") for name in STRATEGIES),
    ("mix 30%", "mix 30%, uncorrected", "held-out"),
    ("mix 50%", "mix 30%", "held-out"),
    ("staged", "mix 30%", "held-out"),
    ("impressions only", "mix 50%", "held-out"),
]


def strategies() -> dict:
    world_base = replace(BASE, negatives="uniform", num_negatives=NUM_NEGATIVES, positives="any",
                         early_stopping_metric=WORLD_METRIC)

    def mixed(share: float, weight: str = "like uniform") -> tt.TrainConfig:
        return replace(world_base, negatives=impressions.random_and_impressions(NUM_NEGATIVES, share, weight=weight))

    variants = {
        "random": (TOWER, world_base),
        "impressions only": (TOWER, replace(world_base,
                                            negatives=impressions.impression_negatives(IMPRESSION_NEGATIVES))),
    }
    variants.update({f"mix {s:.0%}": (TOWER, mixed(s)) for s in SHARES})
    variants["staged"] = (TOWER, (world_base, mixed(STAGED_SHARE)))
    variants["mix 30%, uncorrected"] = (TOWER, mixed(0.3, weight="uncorrected"))
    return variants


def one_world(seed: int, ratings: pd.DataFrame, catalog: tt.Catalog, truth_scores) -> dict:
    simulated = world.simulate_world(ratings, catalog, replace(WORLD, seed=seed), truth_scores)
    held = tt.run_variants(simulated.split(), strategies(), SEEDS, ks=(10, 100), keep_models=True,
                           extras={"impressions": simulated.impression_log()})
    truth = held.reevaluate(simulated.truth_split(TRUTH_TOP))
    runs = {"held-out": (held, WORLD_METRIC), "truth": (truth, TRUTH_METRIC)}
    engaged = float(simulated.log["engaged"].mean())
    return {"engaged share": engaged,
            **{pair: runs[pair[2]][0].compare(pair[0], pair[1], runs[pair[2]][1]) for pair in PAIRS}}


def word(c) -> str:
    return "a" if c.a_beats_b else ("b" if c.b_beats_a else "=")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--world-seeds", type=int, nargs="+", default=[0, 1, 2, 3])
    args = parser.parse_args()
    repro.seed_everything(0, threads=2)
    movielens = tt.load_movielens("ml-100k")
    catalog = tt.Catalog.from_frames(movielens.ratings, movielens.users, movielens.items)
    truth_scores = world.true_preference_scores(movielens.ratings, catalog, WORLD.truth_l2)
    start, results = time.perf_counter(), {}
    for seed in args.world_seeds:
        results[seed] = one_world(seed, movielens.ratings, catalog, truth_scores)
    seconds = time.perf_counter() - start
    rows = []
    for pair in PAIRS:
        row = {"comparison": f"{pair[0]} vs {pair[1]} ({pair[2]})"}
        for seed, found in results.items():
            c = found[pair]
            row[f"world {seed}"] = f"{c.difference:+.4f} {word(c)}"
        verdicts = [word(found[pair]) for found in results.values()]
        for label, key in (("a beats b", "a"), ("within", "="), ("b beats a", "b")):
            row[label] = f"{verdicts.count(key)} of {len(verdicts)}"
        rows.append(row)
    print(f"machine: {repro.cpu_description()}; Python {platform.python_version()}, torch {torch.__version__}; "
          f"{len(args.world_seeds)} worlds in {seconds:.0f} s")
    print("main world (20% random slots, beta 2), one world per seed; engaged share: "
          + ", ".join(f"world {s} {r['engaged share']:.2%}" for s, r in results.items()))
    print("difference a - b (held-out Recall@10 or truth Recall@100), verdict: a = a beats b, b = b beats a, "
          "= within the interval")
    with pd.option_context("display.width", 200, "display.max_colwidth", 60):
        print(pd.DataFrame(rows).set_index("comparison").to_string())


if __name__ == "__main__":
    main()
