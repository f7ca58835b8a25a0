"""Use it on your own data: the book's two-tower recipe behind one call, for a reader's own interaction log.

:func:`fit_two_tower` does what the chapters do by hand. It builds a :class:`~tt_helpers.catalog.Catalog` of
every id (ints or strings) of the interactions and of the feature tables, so an item that appears only in
``item_features`` is a cold item the item tower can still retrieve. It detects what kind each feature column
is (categorical, numeric, multi-valued, text), prints what it found, and encodes the columns with chapter 2's
encoders (:mod:`tt_helpers.features`). It chooses the number of epochs on a validation split carved from the
interactions (each user's last ``validation_fraction`` by time, as :func:`~tt_helpers.splits.temporal_user_split`
does) and fits on all the interactions for that many epochs (:func:`~tt_helpers.experiments.fit_on_split`).

The result, :class:`FittedTwoTower`, recommends for the users it was fitted on, serves a new user who has
features from the user tower, and serves a user it knows nothing about the most popular items, flagged in
its ``source`` column. :meth:`FittedTwoTower.save` writes a directory that :func:`load_recommender` reads back
without unpickling any object: the weights as a ``state_dict`` (``torch.load(..., weights_only=True)``) and
everything else as JSON.

The recipe's settings are the dict :data:`RECIPE_DEFAULTS`; they are chosen on validation splits only, never on
a test split.
"""

from __future__ import annotations

import contextlib
import dataclasses
import difflib
import hashlib
import io
import json
import math
import numbers
import os
import pathlib
import re
import warnings
from collections.abc import Callable, Iterable, Mapping, Sequence
from typing import Any

import numpy as np
import pandas as pd
import torch

from . import metrics
from .catalog import Catalog, UnknownIdError, id_kind
from .experiments import fit_on_split
from .features import (
    BagColumn,
    CategoricalColumn,
    FeatureSpec,
    FeatureTable,
    History,
    align_to_catalog,
    title_tokens,
)
from .recipe import TwoTowerRecommender
from .splits import Interactions, Split, temporal_user_split
from .towers import TowerConfig, TwoTowerModel
from .training import TrainConfig
from .workers import default_workers, map_in_workers

# --------------------------------------------------------------------------- the recipe's settings

RECIPE_DEFAULTS: dict[str, Any] = {
    # TowerConfig. The towers' features are not settings: the user tower gets user_id and every column of
    # user_features, the item tower item_id and every column of item_features (drop a column with
    # feature_kinds={"column": "ignore"}).
    "use_history": True,
    "embedding_dim": 128,
    "hidden_layers": (),
    "temperature": 0.2,
    # TrainConfig: the in-batch softmax with the logQ correction; every interaction is a positive (with a
    # weight column, "weighted": the weight is the example's weight in the loss).
    "loss": "softmax",
    "negatives": "in-batch",
    "logq_correction": True,
    "positives": "any",
    "batch_size": 512,
    "max_epochs": 30,
    "patience": 2,
    # the recipe's own settings
    "refit": True,  # after early stopping, refit on all interactions (False: keep the validation run's best checkpoint)
    "positive_threshold": 4.0,  # with a rating column: the ratings validation counts as hits
    "numeric_buckets": 10,  # quantile buckets of a numeric column
    "text_buckets": 2000,  # hash buckets for the words of a text column
}
RECIPE_SETTINGS = ("refit", "positive_threshold", "numeric_buckets", "text_buckets")
_SET_BY_THE_RECIPE = ("user_features", "item_features", "seed", "progress")  # config fields that are not settings

# --------------------------------------------------------------------------- feature detection

KINDS = ("categorical", "numeric", "multi-valued", "text", "ignore")
FEW_VALUES = 20  # an integer-like column with at most this many distinct values...
FEW_VALUES_SHARE = 0.5  # ...and at most this many per row is categorical (codes), otherwise numeric (quantities)
TEXT_SPACE_SHARE = 0.5  # a string column is text when at least this share of its values hold a space...
TEXT_DISTINCT_SHARE = 0.5  # ...and at least this share of its values are distinct; otherwise categorical
_WHITESPACE = re.compile(r"\s")

# --------------------------------------------------------------------------- the saved format

FORMAT = "tt_helpers.fit_two_tower"
FORMAT_VERSION = 1
WEIGHTS_FILE = "weights.pt"
RECIPE_FILE = "recipe.json"
USERS_PER_BATCH = 1024  # users scored at once by recommend: [batch, n_items] scores in memory


class RecommenderFileError(RuntimeError):
    """A saved recommender is missing, truncated, corrupted or of another format version; the message names
    the file and the fix."""


# =========================================================================== fitting


def fit_two_tower(
    interactions: pd.DataFrame,
    user_features: pd.DataFrame | None = None,
    item_features: pd.DataFrame | None = None,
    *,
    seed: int = 0,
    validation_fraction: float = 0.2,
    feature_kinds: Mapping[str, str] | None = None,
    progress: bool = False,
    verbose: bool = True,
    **overrides: Any,
) -> FittedTwoTower:
    """Fit the book's two-tower recipe to your own data; returns a :class:`FittedTwoTower`.

    ``interactions``: one row per interaction, columns ``user_id``, ``item_id``, ``timestamp`` (numbers or
    datetimes) and at most one of ``rating`` (explicit feedback: every rating is a training positive, and
    validation counts ratings >= ``positive_threshold`` as hits) or ``weight`` (each interaction's weight in
    the loss, e.g. watch time). Ids may be ints or strings. ``user_features`` (keyed by ``user_id``) and
    ``item_features`` (keyed by ``item_id``): one row per user or item, any mix of categorical, numeric,
    multi-valued (list or tuple cells) and text columns; each column's kind is detected (:func:`detect_kind`),
    printed when ``verbose``, and can be set by name with ``feature_kinds={"age": "numeric", "notes":
    "ignore"}`` (kinds: ``KINDS``). Missing values go to each feature's missing (OOV) bucket. Users and items
    that appear only in the feature tables are in the catalogue: such items can be recommended (their ids
    are out of vocabulary, their features are not), such users are served from their features.

    The number of epochs is chosen on a validation split carved from ``interactions`` (each user's last
    ``validation_fraction`` by time, ties broken with ``seed``); then the model is fitted on all the
    interactions for that many epochs (``refit=False``: the validation run's best checkpoint is kept, and it
    reads users' histories from all the interactions). ``validation_fraction=0`` skips validation and trains
    ``max_epochs`` epochs. ``seed`` seeds the split's tie-break, the initialisation and the batches.

    ``overrides``: any field of :class:`~tt_helpers.towers.TowerConfig` or
    :class:`~tt_helpers.training.TrainConfig` (``embedding_dim=128``, ``temperature=0.2``, ``max_epochs=20``)
    or of the recipe's own settings (``refit``, ``positive_threshold``, ``numeric_buckets``,
    ``text_buckets``); the defaults are :data:`RECIPE_DEFAULTS`. An unknown name raises ``TypeError`` listing
    the valid ones.
    """
    frame, feedback = _clean_interactions(interactions)
    users = _check_side_table(user_features, "user_id", "user_features")
    items = _check_side_table(item_features, "item_id", "item_features")
    settings = resolve_settings(overrides, feedback)
    _check_seed_and_fraction(seed, validation_fraction)
    kinds = _check_feature_kinds(feature_kinds, users, items)
    catalog = Catalog.from_frames(frame, users, items)

    user_side = side_features("user", users, catalog, kinds, settings)
    item_side = side_features("item", items, catalog, kinds, settings)
    detected = pd.DataFrame(
        user_side.rows + item_side.rows, columns=["side", "column", "kind", "cardinality", "missing", "encoding"]
    )
    tower = TowerConfig(
        user_features=tuple(s.name for s in user_side.specs),
        item_features=tuple(s.name for s in item_side.specs),
        **{k: v for k, v in settings.items() if k in _field_names(TowerConfig)},
    )
    training = TrainConfig(
        seed=seed, progress=progress, **{k: v for k, v in settings.items() if k in _field_names(TrainConfig)}
    )
    train = Interactions(catalog.add_indices(frame), catalog, settings["positive_threshold"])
    if validation_fraction > 0:
        _warn_if_saturated(training.early_stopping_metric, catalog.n_items)
    if verbose:
        _print_detection(detected, catalog, train, users, items)

    kwargs = {
        "users": user_side.table,
        "items": item_side.table,
        "user_specs": user_side.specs,
        "item_specs": item_side.specs,
    }
    if validation_fraction > 0:
        whole = whole_log_split(train, validation_fraction, seed)
        _check_validation(whole.validation(), validation_fraction, training.max_epochs)
        fit = fit_on_split(whole, tower, training, refit=settings["refit"], **kwargs)  # the one early-stopping fit
        recommender, best_epoch, history = fit.recommender, fit.best_epoch, fit.history
    else:
        recommender = TwoTowerRecommender(tower, training, **kwargs).fit(train, epochs=training.max_epochs)
        best_epoch, history = training.max_epochs, None
    if verbose:
        _print_epochs(best_epoch, history, training, validation_fraction, len(frame), settings["refit"])

    model = recommender.model
    vocabularies = {
        "user": feature_vocabularies(
            model.user_tower.table, align_to_catalog(user_side.table, "user_id", catalog.user_ids)
        ),
        "item": feature_vocabularies(
            model.item_tower.table, align_to_catalog(item_side.table, "item_id", catalog.item_ids)
        ),
    }
    recipe = {k: settings[k] for k in RECIPE_SETTINGS} | {
        "feedback": feedback, "seed": seed, "validation_fraction": validation_fraction,
    }
    return FittedTwoTower(
        recommender=recommender,
        catalog=catalog,
        seen=[np.unique(x) for x in train.user_items()],
        popularity=train.item_counts(positives_only=False),
        features=detected,
        vocabularies=vocabularies,
        settings=recipe,
        best_epoch=best_epoch,
        validation_history=history,
    )


def fit_two_tower_per_seed(
    interactions: pd.DataFrame,
    user_features: pd.DataFrame | None = None,
    item_features: pd.DataFrame | None = None,
    *,
    seeds: Sequence[int],
    verbose: bool = True,
    workers: int | None = None,
    **kwargs: Any,
) -> list[FittedTwoTower]:
    """:func:`fit_two_tower` once per seed (``kwargs`` passed on), the fits side by side in worker processes
    (:func:`tt_helpers.workers.map_in_workers`): the same recommenders, in the order of ``seeds``, as the loop
    ``[fit_two_tower(..., seed=s) for s in seeds]``. With ``verbose``, the first seed's report (the feature
    detection and the epochs chosen) is printed here, as that loop would print it with
    ``verbose=(s == seeds[0])``. ``workers``: default one process per seed (``TT_HELPERS_WORKERS`` if set),
    more than the cores if need be: each runs one thread, and with three fits on two cores a third that
    waited for a free core would run alone at the end."""
    seeds = list(seeds)
    if not seeds:
        raise ValueError("seeds is empty: give at least one seed")
    jobs = [dict(kwargs, seed=seed) for seed in seeds]
    return _fits_side_by_side(interactions, user_features, item_features, jobs, verbose, workers)


def fit_two_tower_settings(
    interactions: pd.DataFrame,
    user_features: pd.DataFrame | None = None,
    item_features: pd.DataFrame | None = None,
    *,
    settings: Sequence[Mapping[str, Any]],
    seed: int = 0,
    verbose: bool = False,
    workers: int | None = None,
    **kwargs: Any,
) -> list[FittedTwoTower]:
    """:func:`fit_two_tower` once per entry of ``settings`` (each a dict of overrides, on top of ``kwargs``),
    with the same ``seed``, side by side in worker processes as :func:`fit_two_tower_per_seed` runs its seeds:
    the recommenders of the loop ``[fit_two_tower(..., seed=seed, **kwargs, **s) for s in settings]``, in
    that order. A screen of settings, to be scored on a validation split of the caller's protocol (chapter
    4 chooses the recipe's settings for TensorFlow Recommenders' protocol this way). With ``verbose``, the
    first fit's report is printed here."""
    settings = [dict(s) for s in settings]
    if not settings:
        raise ValueError("settings is empty: give at least one dict of overrides (an empty dict: the defaults)")
    for overrides in settings:
        if "seed" in overrides:
            raise TypeError("seed is fit_two_tower_settings' own argument, not a setting: pass seed=...")
    jobs = [dict(kwargs, **overrides, seed=seed) for overrides in settings]
    return _fits_side_by_side(interactions, user_features, item_features, jobs, verbose, workers)


def screen_settings(
    split: Split,
    settings: Mapping[str, Mapping[str, Any]],
    score: Callable[[TwoTowerRecommender, Split], float],
    user_features: pd.DataFrame | None = None,
    item_features: pd.DataFrame | None = None,
    *,
    seed: int = 0,
    **kwargs: Any,
) -> pd.Series:
    """Choose the recipe's settings for a protocol on its own validation split: fit the recipe once per named
    entry of ``settings`` (overrides, on top of ``kwargs``) on the training part of ``split.validation()``
    (``refit=False``: each keeps its early-stopped checkpoint), side by side
    (:func:`fit_two_tower_settings`), and score each with ``score(recommender, validation)``, the protocol's
    metric. Returns the scores, a Series indexed by the names in the order given: ``.idxmax()`` is the
    choice. ``split.test`` is never read. The rating column, when there is one, is passed on."""
    if not settings:
        raise ValueError("settings is empty: give at least one named dict of overrides")
    validation = split.validation()
    columns = [c for c in ("user_id", "item_id", "timestamp", "rating") if c in validation.train.frame]
    fits = fit_two_tower_settings(validation.train.frame[columns], user_features, item_features,
                                  settings=list(settings.values()), seed=seed, **{"refit": False, **kwargs})
    return pd.Series({name: float(score(fit.recommender, validation)) for name, fit in zip(settings, fits)},
                     name="validation score")


def _fits_side_by_side(interactions: pd.DataFrame, user_features: pd.DataFrame | None,
                       item_features: pd.DataFrame | None, jobs: list[dict[str, Any]], verbose: bool,
                       workers: int | None) -> list[FittedTwoTower]:
    """One :func:`fit_two_tower` per job (its keyword arguments), in worker processes, one per job unless
    ``workers`` (or ``TT_HELPERS_WORKERS``) says otherwise; the first job's report printed here."""
    if workers is None:
        workers = default_workers() if "TT_HELPERS_WORKERS" in os.environ else len(jobs)

    def fit(index: int) -> tuple[FittedTwoTower, str]:
        report = io.StringIO()
        with contextlib.redirect_stdout(report):  # printed by the caller, not by a worker
            fitted = fit_two_tower(interactions, user_features, item_features,
                                   verbose=verbose and index == 0, **jobs[index])
        return fitted, report.getvalue()

    results = map_in_workers(fit, list(range(len(jobs))), workers=workers)
    print(results[0][1], end="")
    return [fitted for fitted, _ in results]


def valid_settings() -> tuple[str, ...]:
    """The names ``fit_two_tower`` accepts as ``**overrides``: TowerConfig's and TrainConfig's fields (but the
    towers' feature lists, ``seed`` and ``progress``, which the recipe sets) and the recipe's own settings."""
    names = set(_field_names(TowerConfig)) | set(_field_names(TrainConfig)) | set(RECIPE_SETTINGS)
    return tuple(sorted(names - set(_SET_BY_THE_RECIPE)))


def resolve_settings(overrides: Mapping[str, Any], feedback: str | None = None) -> dict[str, Any]:
    """:data:`RECIPE_DEFAULTS` updated with ``overrides``; with a weight column, ``positives="weighted"``
    unless overridden. Unknown names raise ``TypeError`` naming the valid ones (and the closest match)."""
    valid = valid_settings()
    unknown = sorted(set(overrides) - set(valid))
    if unknown:
        hints = [
            f"{close[0]!r} for {name!r}" for name in unknown if (close := difflib.get_close_matches(name, valid, n=1))
        ]
        hint = f" (did you mean {', '.join(hints)}?)" if hints else ""
        reserved = [n for n in unknown if n in ("seed", "progress")]
        raise TypeError(
            f"fit_two_tower got unknown setting(s) {unknown}{hint}"
            + (f"; {reserved} are fit_two_tower's own arguments" if reserved else "")
            + f". Valid settings (TowerConfig, TrainConfig and the recipe's own): {', '.join(valid)}"
        )
    settings = dict(RECIPE_DEFAULTS)
    if feedback == "weight":
        settings["positives"] = "weighted"  # the weight column is each example's weight in the loss
    settings.update(overrides)
    for name in ("numeric_buckets", "text_buckets"):
        value = settings[name]
        if isinstance(value, bool) or not isinstance(value, numbers.Integral) or value < 1:
            raise ValueError(f"{name} must be a positive integer, got {value!r}")
    if not isinstance(settings["refit"], bool):
        raise TypeError(f"refit must be True or False, got {settings['refit']!r}")
    if not isinstance(settings["positive_threshold"], numbers.Real):
        raise TypeError(f"positive_threshold must be a number, got {settings['positive_threshold']!r}")
    return settings


def whole_log_split(train: Interactions, validation_fraction: float, seed: int) -> Split:
    """A split whose train part is every interaction and whose test part is empty.

    ``split.validation()`` carves each user's last ``validation_fraction`` by time from the train part, so
    :func:`~tt_helpers.experiments.fit_on_split` early-stops on that validation split and then refits on the
    train part: on all the interactions."""

    def resplit(frame: pd.DataFrame, catalog: Catalog, threshold: float) -> Split:
        return temporal_user_split(frame, catalog, threshold, validation_fraction, seed)

    empty = dataclasses.replace(train, frame=train.frame.iloc[:0])
    return Split(train, empty, "every interaction (the recipe's final fit)", resplit)


def _field_names(config: type) -> tuple[str, ...]:
    return tuple(f.name for f in dataclasses.fields(config))


def _clean_interactions(interactions: pd.DataFrame) -> tuple[pd.DataFrame, str | None]:
    """The columns the recipe uses, checked; and ``"rating"``, ``"weight"`` or None (the feedback column)."""
    if not isinstance(interactions, pd.DataFrame):
        raise TypeError(f"interactions must be a pandas DataFrame, got {type(interactions).__name__}")
    required = ["user_id", "item_id", "timestamp"]
    missing = [c for c in required if c not in interactions.columns]
    if missing:
        raise ValueError(
            f"interactions lacks column(s) {missing}; expected user_id, item_id, timestamp and optionally "
            f"rating or weight (got {list(interactions.columns)})"
        )
    if "rating" in interactions.columns and "weight" in interactions.columns:
        raise ValueError(
            "interactions has both a rating and a weight column; keep one: rating (explicit feedback: validation "
            "counts ratings >= positive_threshold as hits) or weight (each interaction's weight in the loss)"
        )
    if interactions.empty:
        raise ValueError("interactions is empty: the recipe needs at least one interaction per user it serves")
    feedback = next((c for c in ("rating", "weight") if c in interactions.columns), None)
    frame = interactions[required + ([feedback] if feedback else [])].reset_index(drop=True)
    frame["timestamp"] = _timestamps(frame["timestamp"])
    if feedback:
        values = pd.to_numeric(frame[feedback], errors="coerce")
        bad = ~np.isfinite(values.to_numpy(dtype=float, na_value=np.nan))
        if bad.any():
            raise ValueError(
                f"the {feedback} column has {int(bad.sum())} missing or non-numeric value(s) (e.g. row "
                f"{int(np.flatnonzero(bad)[0])}): fill or drop them"
            )
        if feedback == "weight" and ((values < 0).any() or values.sum() <= 0):
            raise ValueError("weights must be non-negative and not all zero (a weight scales an example's loss)")
        frame[feedback] = values.astype(np.float32)
    return frame, feedback


def _timestamps(values: pd.Series) -> pd.Series:
    """Timestamps as int64 (datetimes: nanoseconds); numbers are kept. Missing or text values are an error."""
    if pd.api.types.is_datetime64_any_dtype(values):
        if values.isna().any():
            raise ValueError(f"the timestamp column has {int(values.isna().sum())} missing value(s): fill or drop them")
        return values.astype("int64")
    numeric = pd.to_numeric(values, errors="coerce")
    if numeric.isna().any():
        raise ValueError(
            f"timestamps must be numbers or datetimes without missing values; {int(numeric.isna().sum())} are "
            f"missing or not numbers (e.g. {values[numeric.isna()].iloc[0]!r}): convert the column with "
            f"pd.to_datetime, or fill or drop those rows"
        )
    return numeric


def _check_side_table(table: pd.DataFrame | None, key: str, argument: str) -> pd.DataFrame | None:
    if table is None:
        return None
    if not isinstance(table, pd.DataFrame):
        raise TypeError(
            f"{argument} must be a pandas DataFrame keyed by {key} (one row per {key[:-3]}) or None, got "
            f"{type(table).__name__}. To choose which columns the towers use, drop columns from the table or "
            f"pass feature_kinds={{'column': 'ignore'}}"
        )
    if key not in table.columns:
        raise ValueError(f"{argument} must have a {key} column (one row per {key[:-3]}); it has {list(table.columns)}")
    if table[key].duplicated().any():
        dupes = table.loc[table[key].duplicated(), key].unique()[:10].tolist()
        raise ValueError(f"{argument} has duplicate {key} values (e.g. {dupes}): one row per {key[:-3]} expected")
    return table.reset_index(drop=True)


def _check_seed_and_fraction(seed: int, validation_fraction: float) -> None:
    if isinstance(seed, bool) or not isinstance(seed, numbers.Integral) or seed < 0:
        raise ValueError(f"seed must be a non-negative integer, got {seed!r}")
    if not isinstance(validation_fraction, numbers.Real) or not 0 <= validation_fraction < 1:
        raise ValueError(
            f"validation_fraction must be in [0, 1) (0: no validation, train max_epochs), got {validation_fraction!r}"
        )


def _check_feature_kinds(kinds: Mapping[str, str] | None, users: pd.DataFrame | None,
                         items: pd.DataFrame | None) -> dict:
    kinds = dict(kinds or {})
    columns = [c for t, key in ((users, "user_id"), (items, "item_id")) if t is not None for c in t.columns if c != key]
    unknown = [c for c in kinds if c not in columns]
    if unknown:
        raise ValueError(
            f"feature_kinds names column(s) {unknown} that no feature table has; the feature columns are {columns}"
        )
    wrong = {c: k for c, k in kinds.items() if k not in KINDS}
    if wrong:
        raise ValueError(f"feature_kinds has unknown kind(s) {wrong}; the kinds are {KINDS}")
    return kinds


def _warn_if_saturated(metric: str, n_items: int) -> None:
    """Recall@K and HitRate@K are 1 at every epoch when K covers the catalogue: they cannot choose epochs."""
    name, _, k = metric.partition("@")
    if name in ("Recall", "HitRate") and int(k) >= n_items:
        warnings.warn(
            f"the catalogue has {n_items} items, so validation {metric} is 1 at every epoch and cannot choose the "
            f"epochs: pass early_stopping_metric='Recall@{max(1, n_items // 10)}' (about a tenth of the "
            f"catalogue) or 'NDCG@10'",
            UserWarning,
            stacklevel=3,
        )


def _check_validation(validation: Split, fraction: float, max_epochs: int) -> None:
    """A clear error when the validation split has nothing to evaluate (every user too short, say)."""
    test, train = validation.test.positives(), validation.train.frame
    new = test.merge(
        train[["user_idx", "item_idx"]].drop_duplicates(), on=["user_idx", "item_idx"], how="left", indicator=True
    )
    if not (new["_merge"] == "left_only").any():
        raise ValueError(
            f"the validation split carved from the interactions (each user's last {fraction:.0%} by time) has no "
            f"positive the user had not already interacted with earlier, so epochs cannot be chosen on it: a user "
            f"needs at least {math.ceil(1 / fraction)} interactions to have a validation part. Give more "
            f"interactions per user, a larger validation_fraction, or validation_fraction=0 to train "
            f"max_epochs ({max_epochs}) epochs without validation"
        )


# --------------------------------------------------------------------------- features


@dataclasses.dataclass(frozen=True)
class SideFeatures:
    """One side's features, ready for :class:`~tt_helpers.recipe.TwoTowerRecommender`: the prepared table
    (None without features), the specs (the id first) and one detection row per column."""

    table: pd.DataFrame | None
    specs: tuple[FeatureSpec, ...]
    rows: list[tuple]


def detect_kind(values: pd.Series) -> str:
    """The recipe's kind of a feature column (the detection ``fit_two_tower`` prints):

    * ``"multi-valued"``: some cells are lists, tuples, sets or arrays (genres, tags): a bag of categories;
    * ``"categorical"``: booleans, pandas categoricals, integer-like numbers with few distinct values (at most
      ``FEW_VALUES``, and at most ``FEW_VALUES_SHARE`` per non-missing row), and strings that are not text;
    * ``"numeric"``: other numbers and datetimes: quantile buckets;
    * ``"text"``: strings of which at least ``TEXT_SPACE_SHARE`` hold a space and at least
      ``TEXT_DISTINCT_SHARE`` are distinct (titles, descriptions): a bag of hashed words;
    * ``"ignore"``: nothing but missing values.
    """
    present = [v for v in values.tolist() if not _is_missing(v)]
    if not present:
        return "ignore"
    if any(_is_listlike(v) for v in present):
        return "multi-valued"
    dtype = values.dtype
    if pd.api.types.is_bool_dtype(dtype) or isinstance(dtype, pd.CategoricalDtype):
        return "categorical"
    if pd.api.types.is_datetime64_any_dtype(dtype):
        return "numeric"
    if all(isinstance(v, (bool, np.bool_)) for v in present):
        return "categorical"
    if all(isinstance(v, numbers.Real) and not isinstance(v, (bool, np.bool_)) for v in present):
        x = np.asarray(present, dtype=float)
        integer_like = bool(np.all(x[np.isfinite(x)] == np.floor(x[np.isfinite(x)])))
        n_distinct = len(np.unique(x))
        few = n_distinct <= FEW_VALUES and n_distinct <= FEW_VALUES_SHARE * len(x)
        return "categorical" if integer_like and few else "numeric"
    if all(isinstance(v, str) for v in present):
        spaces = np.mean([bool(_WHITESPACE.search(v.strip())) for v in present])
        distinct = len(set(present)) / len(present)
        return "text" if spaces >= TEXT_SPACE_SHARE and distinct >= TEXT_DISTINCT_SHARE else "categorical"
    return "categorical"


def side_features(side: str, table: pd.DataFrame | None, catalog: Catalog, kinds: Mapping[str, str],
                  settings: Mapping[str, Any]) -> SideFeatures:
    """Detect (or take from ``kinds``) each column's kind, prepare its values and write its FeatureSpec.

    The id feature (``user_id`` / ``item_id``, kind ``"id"``: out of vocabulary for ids without interactions)
    comes first. Feature names are ``"col:<column>"``, so that no column name can clash with the ids or with
    torch's module names."""
    key = f"{side}_id"
    specs = [FeatureSpec(key, key, "id")]
    if table is None:
        return SideFeatures(None, tuple(specs), [])
    ids = catalog.user_ids if side == "user" else catalog.item_ids
    index = catalog.user_index(table[key]) if side == "user" else catalog.item_index(table[key])
    prepared = {key: ids[index]}  # canonical ids, so that align_to_catalog matches them exactly
    rows, names = [], {key}
    for column in table.columns:
        if column == key:
            continue
        values = table[column]
        kind = kinds.get(column) or detect_kind(values)
        n_missing = int(sum(_is_missing(v) for v in values.tolist()))
        if kind == "ignore":
            rows.append((side, column, kind, 0, n_missing, "not used"))
            continue
        name = _feature_name(column, names)
        names.add(name)
        clean, cardinality = prepare_column(values, kind, f"{side} feature {column!r}")
        spec, encoding = _spec(name, column, kind, clean, settings)
        prepared[column] = clean
        specs.append(spec)
        rows.append((side, column, kind, cardinality, n_missing, encoding))
    return SideFeatures(pd.DataFrame(prepared), tuple(specs), rows)


def prepare_column(values: pd.Series, kind: str, what: str) -> tuple[pd.Series, int]:
    """The column's values as :func:`~tt_helpers.features.encode_table` reads them for ``kind``, and its
    cardinality (distinct values; for multi-valued columns distinct elements, for text distinct words).

    Missing values become None (categorical, text), NaN (numeric) or empty bags (multi-valued): the
    encoders send them to the missing (OOV) bucket."""
    raw = values.tolist()
    if kind == "categorical":
        clean = [None if _is_missing(v) else _category(v, what) for v in raw]
        return pd.Series(clean, dtype=object), len({v for v in clean if v is not None})
    if kind == "numeric":
        if pd.api.types.is_datetime64_any_dtype(values):
            x = (values - pd.Timestamp(0, tz=values.dt.tz)).dt.total_seconds()
        else:
            numbers_or_nan = [np.nan if _is_missing(v) or _is_listlike(v) else v for v in raw]
            x = pd.to_numeric(pd.Series(numbers_or_nan, dtype=object), errors="coerce")
        x = x.astype(float).reset_index(drop=True)
        if not x.notna().any():
            raise ValueError(f"{what} is set to 'numeric' but holds no numbers: give it another kind in feature_kinds")
        return x, int(x.nunique())
    if kind == "multi-valued":
        clean = [_bag(v, what) for v in raw]
        return pd.Series(clean, dtype=object), len({e for bag in clean for e in bag})
    if kind == "text":
        clean = [None if _is_missing(v) else str(v) for v in raw]
        return pd.Series(clean, dtype=object), len({t for v in clean for t in title_tokens(v)})
    raise ValueError(f"unknown kind {kind!r} for {what}; the kinds are {KINDS}")


def quantile_boundaries(x: pd.Series, n_buckets: int) -> tuple[float, ...]:
    """Bucket boundaries at the ``1/n .. (n-1)/n`` quantiles of the finite values (duplicates dropped), so
    that each bucket holds about as many rows: a numeric column's embedding rows are spent where its values are."""
    finite = x.to_numpy(dtype=float)
    finite = finite[np.isfinite(finite)]
    if len(finite) == 0 or n_buckets < 2:
        return ()
    return tuple(float(b) for b in np.unique(np.quantile(finite, np.arange(1, n_buckets) / n_buckets)))


def _spec(name: str, column: Any, kind: str, clean: pd.Series, settings: Mapping[str, Any]) -> tuple[FeatureSpec, str]:
    """The FeatureSpec of a prepared column, and how it is encoded (for the detection table)."""
    if kind == "categorical":
        return FeatureSpec(name, column, "categorical"), "vocabulary"
    if kind == "numeric":
        boundaries = quantile_boundaries(clean, settings["numeric_buckets"])
        return FeatureSpec(name, column, "buckets", boundaries=boundaries), f"{len(boundaries) + 1} quantile buckets"
    if kind == "multi-valued":
        return FeatureSpec(name, column, "bag"), "bag of categories"
    buckets = int(settings["text_buckets"])
    return FeatureSpec(name, column, "tokens", buckets=buckets), f"words, {buckets} hash buckets"


def _feature_name(column: Any, taken: set[str]) -> str:
    base = "col:" + str(column).replace(".", "_")  # torch module names may not hold a dot
    name, n = base, 1
    while name in taken:
        n += 1
        name = f"{base}#{n}"
    return name


def _is_listlike(value: Any) -> bool:
    return isinstance(value, (list, tuple, set, frozenset, np.ndarray))


def _is_missing(value: Any) -> bool:
    if _is_listlike(value):
        return False
    try:
        return bool(pd.isna(value))
    except (TypeError, ValueError):
        return False


def _category(value: Any, what: str) -> Any:
    """One categorical value, hashable and plain (numpy scalars -> Python; 3.0 -> 3)."""
    if _is_listlike(value):
        raise ValueError(f"{what} holds lists: make it 'multi-valued' in feature_kinds")
    value = value.item() if isinstance(value, np.generic) else value
    if isinstance(value, float) and value.is_integer():
        value = int(value)
    try:
        hash(value)
    except TypeError:
        raise ValueError(
            f"{what} holds {type(value).__name__} values, which cannot be categories: convert or drop it"
        ) from None
    return value


def _bag(value: Any, what: str) -> list:
    """One multi-valued cell as a list: missing -> [], a single value -> [value], missing elements dropped."""
    if not _is_listlike(value):
        return [] if _is_missing(value) else [_category(value, what)]
    elements = sorted(value, key=str) if isinstance(value, (set, frozenset)) else list(value)
    return [_category(e, what) for e in elements if not _is_missing(e)]


def feature_vocabularies(table: FeatureTable, frame: pd.DataFrame) -> dict[str, list | None]:
    """For each feature with a vocabulary (ids, categorical, multi-valued), the raw value of each id ``1..n``
    (id 0 is the missing/OOV bucket), read off the encoded ``table`` and the raw aligned ``frame``; None for
    bucketed and hashed features, whose encoding is their boundaries or bucket count."""
    out: dict[str, list | None] = {}
    for spec in table.specs:
        column = table.columns[spec.name]
        if spec.kind in ("id", "categorical"):
            pairs: Iterable = zip(column.ids.tolist(), frame[spec.column].tolist())
        elif spec.kind == "bag":
            lists = [v if isinstance(v, list) else [] for v in frame[spec.column].tolist()]
            pairs = zip(column.values.tolist(), (e for bag in lists for e in bag))
        else:
            out[spec.name] = None
            continue
        vocabulary: list = [None] * (column.cardinality - 1)
        for encoded, raw in pairs:
            if encoded:
                vocabulary[encoded - 1] = _plain(raw)
        out[spec.name] = vocabulary
    return out


def _print_detection(detected: pd.DataFrame, catalog: Catalog, train: Interactions, users, items) -> None:
    print(f"catalogue: {catalog.n_users:,} users, {catalog.n_items:,} items; {len(train.frame):,} interactions "
          f"(validation counts {train.positive_rule} as hits)")
    no_history = int((train.user_counts() == 0).sum())
    cold = int((train.item_counts(positives_only=False) == 0).sum())
    if no_history:
        print(f"  {no_history:,} users have features but no interactions: served from their features")
    if cold:
        print(f"  {cold:,} items have features but no interactions: reachable through their features")
    for name, table, n in (("user", users, catalog.n_users), ("item", items, catalog.n_items)):
        if table is not None and len(table) < n:
            print(f"  {n - len(table):,} {name}s have no row in {name}_features: their features are missing")
    if len(detected):
        print("features (set a column's kind with feature_kinds={column: kind}):")
        print(detected.to_string(index=False))
    else:
        print("features: ids only (no feature tables)")


def _print_epochs(best: int, history: pd.DataFrame | None, training: TrainConfig, fraction: float, n: int,
                  refit: bool) -> None:
    if history is None:
        print(f"no validation: trained {best} epochs on all {n:,} interactions")
        return
    metric = f"val_{training.early_stopping_metric}"
    print(f"epochs chosen on validation (each user's last {fraction:.0%} by time): {best} of at most "
          f"{training.max_epochs} ({training.early_stopping_metric} {history[metric].loc[best]:.4f}); "
          + (f"then refitted on all {n:,} interactions" if refit else
             f"kept that checkpoint, serving histories from all {n:,} interactions"))


# =========================================================================== the fitted recommender


class FittedTwoTower:
    """A two-tower model fitted by :func:`fit_two_tower` (or read by :func:`load_recommender`).

    ``recommend(user_ids, k)`` ranks the whole catalogue; ``save(path)`` writes it to a directory. Attributes:
    ``catalog`` (the ids it knows), ``tower`` and ``training`` (the configs it was fitted with), ``features``
    (the detection table), ``best_epoch`` and ``validation_history`` (the validation run, one row per epoch;
    None without validation), ``settings`` (the recipe's own settings), ``recommender`` (the underlying
    :class:`~tt_helpers.recipe.TwoTowerRecommender`, for :func:`tt_helpers.evaluate`).
    """

    def __init__(
        self,
        recommender: TwoTowerRecommender,
        catalog: Catalog,
        seen: Sequence[np.ndarray],
        popularity: np.ndarray,
        features: pd.DataFrame,
        vocabularies: Mapping[str, Mapping[str, list | None]],
        settings: Mapping[str, Any],
        best_epoch: int,
        validation_history: pd.DataFrame | None,
    ):
        self.recommender, self.catalog = recommender, catalog
        self.seen = [np.asarray(s, dtype=np.int64) for s in seen]  # per user index: the items of its interactions
        self.popularity = np.asarray(popularity, dtype=np.int64)  # interactions per item index
        self.features, self.vocabularies, self.settings = features, vocabularies, dict(settings)
        self.best_epoch, self.validation_history = int(best_epoch), validation_history
        self._popular_order = np.argsort(-self.popularity, kind="stable")  # ties: lower item index first
        self._has_interactions = np.array([len(s) > 0 for s in self.seen], dtype=bool)

    @property
    def tower(self) -> TowerConfig:
        return self.recommender.tower

    @property
    def training(self) -> TrainConfig:
        return self.recommender.training

    def __repr__(self) -> str:
        columns = ", ".join(f"{s}:{c}" for s, c in zip(self.features["side"], self.features["column"])) or "ids only"
        return (f"FittedTwoTower({self.catalog.n_users:,} users, {self.catalog.n_items:,} items, features: {columns}, "
                f"best_epoch={self.best_epoch})")

    # ----------------------------------------------------------------------- recommend

    def recommend(self, user_ids: Any, k: int = 100, exclude_seen: bool = True,
                  unknown_users: str = "fallback") -> pd.DataFrame:
        """The top ``k`` items for each of ``user_ids`` (a list, array, Series or one id), as a frame with
        columns ``user_id, item_id, score, rank, source`` (rank 1 = best), one block per distinct user in the
        order asked.

        ``source`` says how the user was served: ``"model"`` (a user of the interactions), ``"features"`` (a
        user of ``user_features`` without interactions: the user tower with an empty history and the
        out-of-vocabulary user id) or ``"popular"`` (a user the recommender knows nothing about: the most
        popular items, ``score`` = number of interactions). ``unknown_users="error"`` raises
        :class:`~tt_helpers.UnknownIdError` for such users instead. ``exclude_seen`` drops each user's items
        from the interactions, so a user with fewer than ``k`` other items gets fewer than ``k`` rows; a ``k``
        larger than the catalogue is clamped to its size (every item, ranked). Ids of the other type than the
        catalogue's (ints asked of string ids) raise the Catalog's ``IdTypeError``.
        """
        return self._recommend_with(self._model_top_k, user_ids, k, exclude_seen, unknown_users)

    def _recommend_with(self, top_k, user_ids: Any, k: int, exclude_seen: bool, unknown_users: str) -> pd.DataFrame:
        """:meth:`recommend`'s frame, with the known users ranked by ``top_k(user positions [b], k, exclude_seen)
        -> [(item indices, scores)]`` (one pair per user): the whole catalogue scored here, or a retrieval index
        in :class:`tt_helpers.serving.Retriever`. The checks, the unknown users and the sources are the same."""
        if unknown_users not in ("fallback", "error"):
            raise ValueError(f"unknown_users must be 'fallback' or 'error', got {unknown_users!r}")
        if isinstance(k, bool) or not isinstance(k, numbers.Integral) or k < 1:
            raise ValueError(f"k must be a positive integer, got {k!r}")
        k = min(int(k), self.catalog.n_items)  # a k beyond the catalogue asks for every item
        ids = _requested_ids(user_ids)
        positions = self.catalog.user_positions(ids)  # -1: unknown; the wrong id type raises here
        unknown = positions < 0
        if unknown.any() and unknown_users == "error":
            shown = [ids[i] for i in np.flatnonzero(unknown)[:10]]
            raise UnknownIdError(
                f"unknown user id(s) {shown} ({int(unknown.sum())} in all): not in the interactions nor in the "
                f"user_features this recommender was fitted on. Pass unknown_users='fallback' to serve them the "
                f"most popular items (flagged source='popular'), or refit with their interactions or features"
            )
        items: list[np.ndarray] = [np.empty(0, dtype=np.int64)] * len(ids)
        scores: list[np.ndarray] = [np.empty(0)] * len(ids)
        known = np.flatnonzero(~unknown)
        for start in range(0, len(known), USERS_PER_BATCH):
            rows = known[start : start + USERS_PER_BATCH]
            for row, (top, top_scores) in zip(rows, top_k(positions[rows], k, exclude_seen)):
                items[row], scores[row] = top, top_scores
        popular = self._popular_order[:k]
        for row in np.flatnonzero(unknown):
            items[row], scores[row] = popular, self.popularity[popular].astype(np.float64)
        sources = np.where(unknown, "popular", "features")
        sources[~unknown] = np.where(self._has_interactions[positions[~unknown]], "model", "features")
        return self._frame(ids, items, scores, sources)

    def _model_top_k(self, users: np.ndarray, k: int, exclude_seen: bool) -> list[tuple[np.ndarray, np.ndarray]]:
        """For each user index, its top ``k`` item indices and scores, seen items dropped when asked (ranked as
        :func:`tt_helpers.evaluate` ranks: ties by lower item index)."""
        with torch.no_grad():
            scores = self.recommender.score(torch.as_tensor(users))
        exclude = torch.zeros(scores.shape, dtype=torch.bool)
        if exclude_seen:
            for i, u in enumerate(users):
                exclude[i, torch.as_tensor(self.seen[u])] = True
        key = metrics.ranking_key(scores, exclude)
        top = metrics.top_k_ranking(key, k)
        allowed = torch.isfinite(key.gather(1, top))  # excluded items have key -inf
        top_scores = scores.gather(1, top).double()
        return [(top[i][allowed[i]].numpy(), top_scores[i][allowed[i]].numpy()) for i in range(len(users))]

    def _frame(self, ids: list, items: list[np.ndarray], scores: list[np.ndarray], sources: np.ndarray) -> pd.DataFrame:
        lengths = np.array([len(x) for x in items], dtype=np.int64)
        if id_kind(self.catalog.user_ids) == "string":
            user_col = np.array([str(u) for u in ids], dtype=object)
        else:
            user_col = np.array(ids).astype(np.int64)
        flat = np.concatenate(items) if len(items) else np.empty(0, dtype=np.int64)
        return pd.DataFrame({
            "user_id": np.repeat(user_col, lengths),
            "item_id": self.catalog.item_ids[flat.astype(np.int64)],
            "score": np.concatenate(scores) if len(scores) else np.empty(0),
            "rank": (
                np.concatenate([np.arange(1, n + 1) for n in lengths]) if len(lengths) else np.empty(0, dtype=np.int64)
            ),
            "source": np.repeat(sources.astype(object), lengths),
        })

    # ----------------------------------------------------------------------- vectors, for a retrieval index

    @property
    def score_scale(self) -> float:
        """What an inner product of :meth:`user_vectors` and :meth:`item_vectors` is multiplied by to give
        :meth:`recommend`'s score: ``1 / temperature`` for L2-normalised towers, else 1."""
        return float(self.recommender.model.scale)

    def item_vectors(self, batch_size: int = 4096) -> np.ndarray:
        """The item tower's output for every catalogue item, ``[n_items, d]`` float32, row ``i`` for
        ``catalog.item_ids[i]``: what a retrieval index is built from (:mod:`tt_helpers.index`), with
        ``ids=catalog.item_ids`` and ``model_fingerprint=self.fingerprint()``."""
        return self.recommender.model.embed_items(batch_size).numpy()

    def user_vectors(self, user_ids: Any) -> np.ndarray:
        """The user tower's output ``[m, d]`` (float32) for known user ids, one row per distinct id in the order
        given: users of the interactions with their history, users of ``user_features`` only with an empty
        history and the out-of-vocabulary id (as :meth:`recommend` serves them). ``user_vectors(u) @
        item_vectors().T * score_scale`` are the scores :meth:`recommend` ranks by. An unknown id raises
        :class:`~tt_helpers.UnknownIdError` (it has no vector: ``recommend`` serves it the popular items)."""
        positions = self.catalog.user_index(_requested_ids(user_ids))
        return self._user_vectors_at(positions)

    def _user_vectors_at(self, positions: np.ndarray) -> np.ndarray:
        model = self.recommender.model
        with torch.no_grad():
            return model.user_embeddings(torch.as_tensor(np.asarray(positions, dtype=np.int64))).numpy()

    def fingerprint(self) -> str:
        """A 16-character SHA-256 of what :meth:`item_vectors` depends on: the item tower's weights and every
        item's encoded features (:func:`tt_helpers.index.fingerprint`). Build an index with
        ``model_fingerprint=rec.fingerprint()`` and load it with ``expected_fingerprint=rec.fingerprint()``: an
        index built from another model's item vectors is then refused. The same after save and load."""
        from .index import fingerprint

        tower = self.recommender.model.item_tower
        tensors = {f"weights.{name}": value for name, value in tower.state_dict().items()}
        for name, column in tower.table.columns.items():
            if isinstance(column, BagColumn):
                tensors[f"features.{name}.values"], tensors[f"features.{name}.offsets"] = column.values, column.offsets
            else:
                tensors[f"features.{name}.ids"] = column.ids
        return fingerprint(tensors)

    # ----------------------------------------------------------------------- save

    def save(self, path: str | os.PathLike) -> pathlib.Path:
        """Write the recommender to the directory ``path`` (created if needed; the two files are replaced):

        * ``weights.pt``: the model's ``state_dict``, written with ``torch.save`` (tensors only);
        * ``recipe.json``: the format and package versions, the configs, the catalogue's ids, each feature's
          encoding (its vocabulary or bucket boundaries, and the encoded value of every user and item), each
          user's history and seen items, the items' popularity, and the SHA-256 of ``weights.pt``.

        :func:`load_recommender` reads it back; nothing is pickled. Returns the directory."""
        folder = pathlib.Path(path)
        if folder.exists() and not folder.is_dir():
            raise RecommenderFileError(
                f"{folder} is a file; save(path) writes a directory holding {WEIGHTS_FILE} and {RECIPE_FILE}: "
                f"choose another path"
            )
        buffer = io.BytesIO()
        torch.save(self.recommender.model.state_dict(), buffer)
        weights = buffer.getvalue()
        recipe = self._recipe_json(hashlib.sha256(weights).hexdigest())
        folder.mkdir(parents=True, exist_ok=True)
        (folder / WEIGHTS_FILE).write_bytes(weights)
        lines = [f"{json.dumps(key)}: {json.dumps(value, allow_nan=False)}" for key, value in recipe.items()]
        (folder / RECIPE_FILE).write_text("{\n" + ",\n".join(lines) + "\n}\n", encoding="utf-8")
        return folder

    def _recipe_json(self, weights_sha256: str) -> dict[str, Any]:
        from . import __version__

        model = self.recommender.model
        history = None
        if model.history is not None:
            start, items = model.history.user_start, model.history.items
            history = {"max_length": model.history.max_length,
                       "items": [items[start[u] : start[u + 1]].tolist() for u in range(self.catalog.n_users)]}
        return {
            "format": FORMAT,
            "format_version": FORMAT_VERSION,
            "tt_helpers_version": __version__,
            "weights_sha256": weights_sha256,
            "tower": _config_json(self.tower),
            "training": _config_json(self.training),
            "settings": {k: _plain(v) for k, v in self.settings.items()},
            "best_epoch": self.best_epoch,
            "validation_history": _history_json(self.validation_history),
            "catalog": {
                "user_id_kind": id_kind(self.catalog.user_ids), "item_id_kind": id_kind(self.catalog.item_ids),
                "user_ids": self.catalog.user_ids.tolist(), "item_ids": self.catalog.item_ids.tolist(),
            },
            "detected_features": json.loads(self.features.to_json(orient="records")),
            "user_features": _table_json(model.user_tower.table, self.vocabularies["user"]),
            "item_features": _table_json(model.item_tower.table, self.vocabularies["item"]),
            "history": history,
            "seen": [s.tolist() for s in self.seen],
            "popularity": self.popularity.tolist(),
        }


def _requested_ids(user_ids: Any) -> list:
    """The ids asked for, as a list without repeats, in the order given; one id alone is a list of one."""
    if isinstance(user_ids, (str, bytes)) or np.ndim(user_ids) == 0:
        user_ids = [user_ids]
    return list(dict.fromkeys(u.item() if isinstance(u, np.generic) else u for u in user_ids))


def _plain(value: Any) -> Any:
    """A JSON-ready value: numpy scalars -> Python, tuples -> lists; other objects -> their text."""
    if isinstance(value, np.generic):
        return value.item()
    if isinstance(value, (list, tuple)):
        return [_plain(v) for v in value]
    if value is None or isinstance(value, (str, bool, int, float)):
        return value
    return str(value)


def _config_json(config: TowerConfig | TrainConfig) -> dict[str, Any]:
    out = {}
    for name in _field_names(type(config)):
        value = getattr(config, name)
        if callable(value) or not _json_ready(value):
            raise ValueError(
                f"cannot save: {type(config).__name__}.{name} is {value!r}, which JSON cannot hold (save supports "
                f"the settings given by name, e.g. negatives='in-batch', not factories)"
            )
        out[name] = _plain(value)
    return out


def _json_ready(value: Any) -> bool:
    try:
        json.dumps(_plain(value), allow_nan=False)
    except (TypeError, ValueError):
        return False
    return True


def _history_json(history: pd.DataFrame | None) -> dict | None:
    if history is None:
        return None
    return {"epoch": [int(e) for e in history.index],
            "columns": {c: [None if pd.isna(v) else float(v) for v in history[c]] for c in history.columns}}


def _table_json(table: FeatureTable, vocabularies: Mapping[str, list | None]) -> list[dict]:
    """Each feature of a tower's table, in the tower's order: its spec, vocabulary and encoded values."""
    specs = {s.name: s for s in table.specs}
    out = []
    for name, column in table.columns.items():
        spec = specs[name]
        entry = {"name": name, "column": _plain(spec.column), "kind": spec.kind, "buckets": spec.buckets,
                 "boundaries": list(spec.boundaries), "vocabulary": vocabularies.get(name),
                 "cardinality": column.cardinality}
        if isinstance(column, BagColumn):
            entry |= {"values": column.values.tolist(), "offsets": column.offsets.tolist()}
        else:
            entry["ids"] = column.ids.tolist()
        out.append(entry)
    return out


# =========================================================================== loading


def load_recommender(path: str | os.PathLike) -> FittedTwoTower:
    """Read a recommender written by :meth:`FittedTwoTower.save`; it recommends exactly what the saved one did.

    Raises :class:`RecommenderFileError`, naming the file and the fix, when the path or a file is missing,
    when ``recipe.json`` is not valid JSON, is incomplete or is of another format version, or when
    ``weights.pt`` is truncated or corrupted (its SHA-256 is checked against ``recipe.json`` before torch reads
    it, with ``weights_only=True``)."""
    folder = pathlib.Path(path)
    refit = "Refit the recommender (fit_two_tower) and save it again (FittedTwoTower.save)"
    if not folder.exists():
        raise RecommenderFileError(
            f"no saved recommender at {folder}: the path does not exist. Pass the directory that "
            f"FittedTwoTower.save(path) wrote, or fit one with fit_two_tower and save it there"
        )
    if not folder.is_dir():
        raise RecommenderFileError(
            f"{folder} is a file; load_recommender takes the directory that FittedTwoTower.save wrote "
            f"(holding {WEIGHTS_FILE} and {RECIPE_FILE})"
        )
    recipe_path, weights_path = folder / RECIPE_FILE, folder / WEIGHTS_FILE
    for file in (recipe_path, weights_path):
        if not file.is_file():
            raise RecommenderFileError(f"{file} is missing: the save is incomplete. {refit}")
    try:
        recipe = json.loads(recipe_path.read_text(encoding="utf-8"))
    except (json.JSONDecodeError, UnicodeDecodeError) as err:
        raise RecommenderFileError(
            f"{recipe_path} is not valid JSON ({err}): it is truncated or corrupted. {refit}"
        ) from err
    _check_format(recipe, recipe_path)
    weights = weights_path.read_bytes()
    if hashlib.sha256(weights).hexdigest() != recipe.get("weights_sha256"):
        raise RecommenderFileError(
            f"{weights_path} is truncated or corrupted: its SHA-256 does not match the one recorded in "
            f"{recipe_path} (or the two files come from different saves). {refit}"
        )
    try:
        state = torch.load(io.BytesIO(weights), map_location="cpu", weights_only=True)
    except Exception as err:  # torch raises several kinds (pickle, zip, runtime errors) for a bad file
        raise RecommenderFileError(
            f"{weights_path} cannot be read as a state_dict ({type(err).__name__}: {err}). {refit}"
        ) from err
    try:
        return _from_recipe(recipe, state)
    except (KeyError, TypeError, ValueError, IndexError, AttributeError, RuntimeError) as err:
        raise RecommenderFileError(
            f"{recipe_path} is incomplete or corrupted, or does not match {weights_path} ({type(err).__name__}: "
            f"{err}). {refit}"
        ) from err


def _check_format(recipe: Any, recipe_path: pathlib.Path) -> None:
    from . import __version__

    if not isinstance(recipe, dict) or recipe.get("format") != FORMAT:
        raise RecommenderFileError(
            f"{recipe_path} is not a recommender saved by FittedTwoTower.save (no format {FORMAT!r}): pass the "
            f"directory that save wrote"
        )
    version = recipe.get("format_version")
    if version != FORMAT_VERSION:
        raise RecommenderFileError(
            f"{recipe_path} has format version {version!r} (written by tt_helpers "
            f"{recipe.get('tt_helpers_version', 'unknown')}), but this tt_helpers ({__version__}) reads format "
            f"version {FORMAT_VERSION}: load it with the tt_helpers that wrote it, or refit and save it again "
            f"with this one"
        )


def _from_recipe(recipe: Mapping[str, Any], state: Mapping[str, torch.Tensor]) -> FittedTwoTower:
    """Rebuild the model from ``recipe.json``'s contents and load ``state`` into it."""
    tower = TowerConfig(**_config_args(recipe["tower"]))
    training = TrainConfig(**_config_args(recipe["training"]))
    ids = recipe["catalog"]
    catalog = Catalog(_id_array(ids["user_ids"], ids["user_id_kind"]), _id_array(ids["item_ids"], ids["item_id_kind"]))
    user_table = _table_from_json(recipe["user_features"], catalog.n_users)
    item_table = _table_from_json(recipe["item_features"], catalog.n_items)
    history = _history_from_json(recipe["history"], catalog.n_users) if recipe["history"] is not None else None
    with torch.random.fork_rng(devices=[]):  # building the towers draws initial weights: leave the caller's RNG alone
        model = TwoTowerModel(
            user_table, item_table, tower, history, sparse_embeddings=training.embedding_optimizer == "sparse_adam"
        )
    model.load_state_dict(state, strict=True)
    model.eval()
    recommender = TwoTowerRecommender(tower, training, user_specs=user_table.specs, item_specs=item_table.specs)
    recommender.model = model
    vocabularies = {side: {f["name"]: f["vocabulary"] for f in recipe[f"{side}_features"]} for side in ("user", "item")}
    seen, popularity = recipe["seen"], recipe["popularity"]
    if len(seen) != catalog.n_users or len(popularity) != catalog.n_items:
        raise ValueError("the seen items and popularity do not match the catalogue's size")
    return FittedTwoTower(
        recommender=recommender,
        catalog=catalog,
        seen=seen,
        popularity=np.array(popularity, dtype=np.int64),
        features=pd.DataFrame(
            recipe["detected_features"], columns=["side", "column", "kind", "cardinality", "missing", "encoding"]
        ),
        vocabularies=vocabularies,
        settings=recipe["settings"],
        best_epoch=recipe["best_epoch"],
        validation_history=_history_from_json_frame(recipe["validation_history"]),
    )


def _config_args(values: Mapping[str, Any]) -> dict[str, Any]:
    return {k: tuple(v) if isinstance(v, list) else v for k, v in values.items()}


def _id_array(ids: list, kind: str) -> np.ndarray:
    if kind not in ("integer", "string"):
        raise ValueError(f"unknown id kind {kind!r}")
    return np.array(ids, dtype=object if kind == "string" else np.int64) if ids else np.empty(0, dtype=np.int64)


def _table_from_json(features: list[Mapping[str, Any]], n_rows: int) -> FeatureTable:
    columns: dict[str, CategoricalColumn | BagColumn] = {}
    specs = []
    for f in features:
        specs.append(
            FeatureSpec(f["name"], f["column"], f["kind"], int(f["buckets"]), tuple(float(b) for b in f["boundaries"]))
        )
        if "values" in f:
            column = BagColumn(
                torch.tensor(f["values"], dtype=torch.long),
                torch.tensor(f["offsets"], dtype=torch.long),
                int(f["cardinality"]),
            )
            size = len(column.offsets) - 1
        else:
            column = CategoricalColumn(torch.tensor(f["ids"], dtype=torch.long), int(f["cardinality"]))
            size = len(column.ids)
        if size != n_rows:
            raise ValueError(f"feature {f['name']!r} has {size} rows, the catalogue {n_rows}")
        columns[f["name"]] = column
    return FeatureTable(columns, n_rows, tuple(specs))


def _history_from_json(history: Mapping[str, Any], n_users: int) -> History:
    """The serving history: each user's items in the saved order (positions stand in for timestamps)."""
    items = history["items"]
    if len(items) != n_users:
        raise ValueError(f"the history has {len(items)} users, the catalogue {n_users}")
    lengths = [len(x) for x in items]
    frame = pd.DataFrame({
        "user_idx": np.repeat(np.arange(n_users, dtype=np.int64), lengths),
        "item_idx": np.array([i for x in items for i in x], dtype=np.int64),
        "timestamp": (
            np.concatenate([np.arange(n, dtype=np.int64) for n in lengths]) if items else np.empty(0, dtype=np.int64)
        ),
    })
    return History(frame, n_users, int(history["max_length"]))


def _history_from_json_frame(history: Mapping[str, Any] | None) -> pd.DataFrame | None:
    if history is None:
        return None
    frame = pd.DataFrame(history["columns"], index=pd.Index(history["epoch"], name="epoch"))
    return frame.astype(float)
