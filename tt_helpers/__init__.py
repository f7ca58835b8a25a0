"""tt_helpers: the package behind the executable book "Two Towers: Retrieval for Recommender Systems".

The public names, on one screen (see the book's "API at a glance" page):

* data: :func:`load_movielens`, :class:`Catalog`, :func:`temporal_user_split`, :func:`global_temporal_split`,
  :func:`random_split`;
* models: :class:`TowerConfig`, :class:`TrainConfig`, :class:`TwoTowerRecommender`, and the baselines
  :class:`RandomRecommender`, :class:`PopularRecommender`, :class:`EASE`;
* training: :class:`StreamingFrequencyEstimator` (Yi et al.'s streaming item frequencies, for logQ);
* evaluation: :func:`evaluate`, :func:`tune`, :func:`compare` (the one rule for "A beats B"),
  :func:`run_variants` and :class:`Runs`;
* your own data: :func:`fit_two_tower` -> :class:`FittedTwoTower` (``recommend``, ``save``),
  :func:`load_recommender`, :func:`fit_two_tower_per_seed` (one fit per seed, side by side),
  :func:`fit_two_tower_settings` (one fit per dict of settings, side by side) and :func:`screen_settings`
  (those fits scored on a protocol's validation split);
* serving: :class:`ExactIndex` and :class:`AnnoyIndex` (exact or approximate top-k inner product, one
  interface), :func:`load_index`, and :class:`Retriever` (a saved recommender's user tower in front of a saved
  item index, seen items filtered);
* beyond one machine (modules, imported on demand): :mod:`tt_helpers.distributed` (data-parallel training
  with negatives from the global batch), :mod:`tt_helpers.sharded_tables` (embedding tables sharded with
  TorchRec) and :mod:`tt_helpers.sharded_index` (a catalogue index split into shards);
* reproducibility: :func:`seed_everything`.
"""

from .baselines import EASE, PopularRecommender, RandomRecommender
from .catalog import Catalog, UnknownIdError
from .comparison import Comparison, compare, comparison_table
from .datasets import load_movielens
from .evaluation import evaluate, evaluate_detailed, tune
from .experiments import Runs, fit_on_split, run_variants
from .frequency import StreamingFrequencyEstimator
from .index import AnnoyIndex, ExactIndex, load_index
from .own_data import (
    FittedTwoTower,
    fit_two_tower,
    fit_two_tower_per_seed,
    fit_two_tower_settings,
    load_recommender,
    screen_settings,
)
from .recipe import TwoTowerRecommender
from .repro import seed_everything
from .serving import Retriever
from .splits import global_temporal_split, random_split, temporal_user_split
from .towers import TowerConfig
from .training import TrainConfig

__version__ = "0.2.0"

__all__ = [
    "AnnoyIndex",
    "Catalog",
    "Comparison",
    "EASE",
    "ExactIndex",
    "FittedTwoTower",
    "PopularRecommender",
    "RandomRecommender",
    "Retriever",
    "Runs",
    "StreamingFrequencyEstimator",
    "TowerConfig",
    "TrainConfig",
    "TwoTowerRecommender",
    "UnknownIdError",
    "compare",
    "comparison_table",
    "evaluate",
    "evaluate_detailed",
    "fit_on_split",
    "fit_two_tower",
    "fit_two_tower_per_seed",
    "fit_two_tower_settings",
    "screen_settings",
    "global_temporal_split",
    "load_index",
    "load_movielens",
    "load_recommender",
    "random_split",
    "run_variants",
    "seed_everything",
    "temporal_user_split",
    "tune",
]
