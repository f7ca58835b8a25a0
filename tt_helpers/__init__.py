"""tt_helpers: the package behind the executable book "Two Towers: Retrieval for Recommender Systems".

The public names, on one screen (see the book's "API at a glance" page):

* data: :func:`load_movielens`, :class:`Catalog`, :func:`temporal_user_split`, :func:`global_temporal_split`,
  :func:`random_split`;
* models: :class:`TowerConfig`, :class:`TrainConfig`, :class:`TwoTowerRecommender`, and the baselines
  :class:`RandomRecommender`, :class:`PopularRecommender`, :class:`EASE`;
* evaluation: :func:`evaluate`, :func:`tune`, :func:`compare` (the one rule for "A beats B"),
  :func:`run_variants` and :class:`Runs`;
* reproducibility: :func:`seed_everything`.
"""

from .baselines import EASE, PopularRecommender, RandomRecommender
from .catalog import Catalog, UnknownIdError
from .comparison import Comparison, compare, comparison_table
from .datasets import load_movielens
from .evaluation import evaluate, evaluate_detailed, tune
from .experiments import Runs, fit_on_split, run_variants
from .recipe import TwoTowerRecommender
from .repro import seed_everything
from .splits import global_temporal_split, random_split, temporal_user_split
from .towers import TowerConfig
from .training import TrainConfig

__version__ = "0.2.0"

__all__ = [
    "Catalog",
    "Comparison",
    "EASE",
    "PopularRecommender",
    "RandomRecommender",
    "Runs",
    "TowerConfig",
    "TrainConfig",
    "TwoTowerRecommender",
    "UnknownIdError",
    "compare",
    "comparison_table",
    "evaluate",
    "evaluate_detailed",
    "fit_on_split",
    "global_temporal_split",
    "load_movielens",
    "random_split",
    "run_variants",
    "seed_everything",
    "temporal_user_split",
    "tune",
]
