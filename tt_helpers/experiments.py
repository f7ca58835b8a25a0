"""Run a grid of model variants over several seeds on one split and tabulate test metrics.

Each variant is early-stopped on the validation split and refit on the training split
(:func:`tt_helpers.recipe.fit_two_tower`), so every comparison is made at each model's best epoch.
"""

from __future__ import annotations

from dataclasses import replace
from typing import Iterable, Mapping, Sequence

import numpy as np
import pandas as pd

from .evaluation import DEFAULT_KS, evaluate
from .recipe import fit_two_tower
from .splits import Split
from .towers import TowerConfig
from .training import TrainConfig

Variant = tuple[TowerConfig, TrainConfig]


def run_variants(
    split: Split,
    variants: Mapping[str, Variant],
    seeds: Sequence[int] = (0, 1),
    users: pd.DataFrame | None = None,
    items: pd.DataFrame | None = None,
    ks: Iterable[int] = DEFAULT_KS,
    relevant_items: np.ndarray | None = None,
    **recommender_kwargs,
) -> pd.DataFrame:
    """One row per (variant, seed): test metrics and the best epoch found on validation."""
    rows = []
    for name, (tower, training) in variants.items():
        for seed in seeds:
            fit = fit_two_tower(split, tower, replace(training, seed=seed), users, items, **recommender_kwargs)
            metrics = evaluate(fit.recommender, split, ks, relevant_items=relevant_items)
            rows.append({"variant": name, "seed": seed, "best_epoch": fit.best_epoch, **metrics})
    return pd.DataFrame(rows)


def summarize(runs: pd.DataFrame, metrics: Sequence[str], digits: int = 4) -> pd.DataFrame:
    """Mean and standard deviation over seeds per variant, in the order variants were run."""
    order = list(dict.fromkeys(runs["variant"]))
    grouped = runs.groupby("variant", sort=False)[list(metrics)]
    mean = grouped.mean().add_suffix(" mean")
    std = grouped.std(ddof=0).add_suffix(" std")
    columns = [c for m in metrics for c in (f"{m} mean", f"{m} std")]
    return pd.concat([mean, std], axis=1)[columns].loc[order].round(digits)
