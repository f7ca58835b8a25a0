"""Train/test splits of interaction logs, and what counts as a positive.

Every split carries a short ``protocol`` string (printed in result tables) that says how it was made.

**Per-user leave-last-20%-out** (:func:`temporal_user_split`, the book's default): each user's
interactions are put in time order and the user's last 20% are held out. It is not a simulation of a
deployment, and it leaks in two ways:

* other users' later ratings are in training: in MovieLens 100K about 41% of the training ratings come
  after a given test rating, so a model learns the popularity and co-occurrences of the very period it is
  tested on;
* for most MovieLens users the held-out ratings come minutes after their training ratings, in the same
  rating session (in 100K, for 97% of users the first held-out rating is less than 10 minutes after the
  last training one): the split asks "which other films did the user rate in this sitting?" rather than
  "what will the user want next month?".

It is still useful: every test user has a training history, so it measures how well a model uses that
history, and comparisons between models are fair, since all of them are trained and tested on the same data.

**Global temporal split** (:func:`global_temporal_split`): one cut-off time for everybody; the last 20%
of all ratings are test. Nothing after the cut-off is in training, which is what a roll-out looks like;
but many test users then have little or no training history: report them apart with
:func:`warm_and_cold_users`.

**Random split** of interactions (:func:`random_split`): the protocol of TensorFlow Recommenders'
tutorials. Each user's later ratings can be in training; the book uses it only to compare with those
tutorials.

**Ties in time are broken at random, not by item id.** MovieLens users often rate several films in the
same second, so "the last 20% by time" needs a tie-break. Ordering tied ratings by item id would be a
bias: in MovieLens item ids are anti-correlated with popularity (Spearman -0.81 between an item's id and
its number of ratings in 100K), so the popular items of a tied group would go to training and the rare
ones to test. Instead, each row gets a uniform random key drawn with ``np.random.default_rng(tie_break_seed)``,
one per row in a canonical order of the rows (sorted by user, item, timestamp), and ties are ordered by
that key. The key does not depend on the item id, and the same data in any row order gives the same split.

**Positives.** With a ``rating`` column, a positive is a rating >= ``positive_threshold`` (default 4).
Without one (implicit feedback: clicks, views, purchases) every interaction is a positive, and the
protocol says "positive = every interaction".
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, replace

import numpy as np
import pandas as pd
import torch

from .catalog import Catalog

DEFAULT_POSITIVE_THRESHOLD = 4.0
DEFAULT_TEST_FRACTION = 0.2
DEFAULT_TIE_BREAK_SEED = 0
DEFAULT_MIN_TRAIN_INTERACTIONS = 5
REQUIRED_COLUMNS = ("user_id", "item_id", "timestamp")
EVERY_INTERACTION = "every interaction"


def positive_rule(frame: pd.DataFrame, threshold: float) -> str:
    """What counts as a positive in ``frame``: ``"rating >= 4"``, or ``"every interaction"`` without ratings."""
    return f"rating >= {threshold:g}" if "rating" in frame.columns else EVERY_INTERACTION


@dataclass(frozen=True)
class Interactions:
    """One side of a split: an interactions frame with ``user_idx``/``item_idx`` columns over a fixed catalogue.

    The frame has ``user_id``, ``item_id``, ``timestamp``, ``user_idx``, ``item_idx`` and, for explicit
    feedback, ``rating``. Without a ``rating`` column every interaction is a positive.
    """

    frame: pd.DataFrame
    catalog: Catalog
    positive_threshold: float = DEFAULT_POSITIVE_THRESHOLD

    @property
    def n_users(self) -> int:
        return self.catalog.n_users

    @property
    def n_items(self) -> int:
        return self.catalog.n_items

    @property
    def has_ratings(self) -> bool:
        return "rating" in self.frame.columns

    @property
    def positive_rule(self) -> str:
        """``"rating >= 4"`` (with the split's threshold), or ``"every interaction"`` without ratings."""
        return positive_rule(self.frame, self.positive_threshold)

    def positives(self, threshold: float | None = None) -> pd.DataFrame:
        """The positive rows: rating at least ``threshold`` (default: the split's positive threshold).

        Without a ``rating`` column every row is a positive; passing a ``threshold`` then is an error.
        """
        if not self.has_ratings:
            if threshold is not None:
                raise ValueError(
                    f"positives(threshold={threshold}) needs a rating column, and these interactions have none "
                    f"(every interaction is a positive): call positives() without a threshold"
                )
            return self.frame
        t = self.positive_threshold if threshold is None else threshold
        return self.frame[self.frame["rating"] >= t]

    def user_items(self, positives_only: bool = False) -> list[np.ndarray]:
        """For each user index, the sorted item indices the user interacted with (or liked)."""
        frame = self.positives() if positives_only else self.frame
        return _group_items(frame, self.n_users)

    def matrix(self, positives_only: bool = True) -> torch.Tensor:
        """Dense binary user x item matrix, shape ``[n_users, n_items]`` (float32)."""
        frame = self.positives() if positives_only else self.frame
        x = torch.zeros(self.n_users, self.n_items)
        x[
            torch.from_numpy(frame["user_idx"].to_numpy(copy=True)),
            torch.from_numpy(frame["item_idx"].to_numpy(copy=True)),
        ] = 1.0
        return x

    def item_counts(self, positives_only: bool = True) -> np.ndarray:
        """Interactions per item index, shape ``[n_items]``; zero for items never seen."""
        frame = self.positives() if positives_only else self.frame
        return np.bincount(frame["item_idx"].to_numpy(), minlength=self.n_items)

    def user_counts(self, positives_only: bool = False) -> np.ndarray:
        """Interactions per user index, shape ``[n_users]``; zero for users never seen."""
        frame = self.positives() if positives_only else self.frame
        return np.bincount(frame["user_idx"].to_numpy(), minlength=self.n_users)


@dataclass(frozen=True)
class Split:
    """A train/test split. ``protocol`` names how it was made; every result table should say it."""

    train: Interactions
    test: Interactions
    protocol: str
    resplit: Callable[[pd.DataFrame, Catalog, float], Split]  # the same protocol (and tie-break seed), again

    @property
    def catalog(self) -> Catalog:
        return self.train.catalog

    def validation(self) -> Split:
        """A validation split carved from the training part with the same protocol (test is never seen).

        Tune hyper-parameters and pick epochs on this split; report on the test split once.
        """
        inner = self.resplit(self.train.frame, self.catalog, self.train.positive_threshold)
        return replace(inner, protocol=f"{inner.protocol} (validation, carved from train)")

    def describe(self) -> pd.Series:
        """Sizes of the two parts, and the positive rule, for a table in the book."""
        test_pos = self.test.positives()
        return pd.Series(
            {
                "protocol": self.protocol,
                "positive": self.train.positive_rule,
                "train ratings": len(self.train.frame),
                "train positives": len(self.train.positives()),
                "test ratings": len(self.test.frame),
                "test positives": len(test_pos),
                "test users with a positive": test_pos["user_idx"].nunique(),
                "items never seen in train": int((self.train.item_counts(positives_only=False) == 0).sum()),
            }
        )


def warm_and_cold_users(
    split: Split, min_train_interactions: int = DEFAULT_MIN_TRAIN_INTERACTIONS
) -> dict[str, np.ndarray]:
    """Test users (those with a test positive) grouped by how much training history they have.

    Returns ``{"warm": ..., "cold": ...}``, sorted user indices: ``"cold"`` users have fewer than
    ``min_train_interactions`` training interactions (of any rating, zero included), ``"warm"`` users
    the rest. Filter per-user evaluation results (``evaluate(..., per_user=True)``) by these indices to
    report the two groups apart, as a global temporal split needs.
    """
    if int(min_train_interactions) != min_train_interactions or min_train_interactions < 0:
        raise ValueError(f"min_train_interactions must be a non-negative integer, got {min_train_interactions!r}")
    test_users = np.unique(split.test.positives()["user_idx"].to_numpy()).astype(np.int64)
    history = split.train.user_counts()[test_users]
    cold = history < min_train_interactions
    return {"warm": test_users[~cold], "cold": test_users[cold]}


HOUR, DAY = 3600, 86400


def time_profile(split: Split, name: str | None = None) -> pd.DataFrame:
    """Where a split's test part sits on the time line, and which items it holds: one row per measure.

    Timestamps are read as seconds (Unix time) or as datetimes. Shares are in %; an item's *popularity* is
    its number of interactions in train and test together (the whole log), so it is the same for every
    split of the same data and the columns of several splits can be compared. Rows (index ``measure``):

    * ``users: history spans < 1 hour (%)`` and ``< 1 day (%)``: users whose interactions (train and test)
      all fall within one hour / one day, among the users with at least one interaction;
    * ``users: first test < 1 hour after last train (%)``: among users with both training and test
      interactions, those whose first test interaction comes 0 to 3,599 s after their last training one
      (the same second counts; a first test interaction *before* the last training one does not);
    * ``test before the user's last train (%)``: test interactions earlier than the same user's last
      training interaction (the user's own future is in training; 0 for both temporal splits);
    * ``train later than a test interaction (%)``: for each test interaction, the share of all training
      interactions strictly later in time, averaged over test interactions (other users' future is in
      training; 0 for a global temporal split);
    * ``median popularity, test items`` and ``median popularity, train items``: the median over test
      (training) interactions of the item's popularity.

    A measure without anything to average (e.g. no test interactions) is NaN. Returns a one-column frame,
    the column named ``name`` (default: ``split.protocol``).
    """
    train, test = split.train.frame, split.test.frame
    t_train, t_test = _seconds(train["timestamp"]), _seconds(test["timestamp"])
    u_train, u_test = train["user_idx"].to_numpy(), test["user_idx"].to_numpy()
    everyone = pd.DataFrame({"user": np.concatenate([u_train, u_test]), "t": np.concatenate([t_train, t_test])})
    span = everyone.groupby("user")["t"].agg(lambda t: t.max() - t.min()).to_numpy()
    last_train = pd.Series(t_train).groupby(u_train).max()
    first_test = pd.Series(t_test).groupby(u_test).min()
    both = first_test.index.intersection(last_train.index)
    gap = first_test[both].to_numpy() - last_train[both].to_numpy()
    own_last = last_train.reindex(u_test).to_numpy()  # NaN for a test user without training interactions
    later = np.sort(t_train)
    n_later = len(later) - np.searchsorted(later, t_test, side="right")
    items = np.concatenate([train["item_idx"], test["item_idx"]])
    popularity = np.bincount(items, minlength=split.catalog.n_items)
    rows = {
        "users: history spans < 1 hour (%)": _percent(span < HOUR),
        "users: history spans < 1 day (%)": _percent(span < DAY),
        "users: first test < 1 hour after last train (%)": _percent((gap >= 0) & (gap < HOUR)),
        "test before the user's last train (%)": _percent(t_test < own_last),
        "train later than a test interaction (%)": 100 * _mean(n_later / len(later)) if len(later) else np.nan,
        "median popularity, test items": _median(popularity[test["item_idx"].to_numpy()]),
        "median popularity, train items": _median(popularity[train["item_idx"].to_numpy()]),
    }
    frame = pd.DataFrame({name or split.protocol: pd.Series(rows, dtype=float)})
    frame.index.name = "measure"
    return frame


def _seconds(timestamps: pd.Series) -> np.ndarray:
    """Timestamps as float seconds: datetimes are converted, numbers are taken as seconds already."""
    if pd.api.types.is_datetime64_any_dtype(timestamps):
        epoch = pd.Timestamp(0, tz=timestamps.dt.tz)
        return (timestamps - epoch).dt.total_seconds().to_numpy()
    return timestamps.to_numpy(dtype=np.float64)


def _mean(values: np.ndarray) -> float:
    return float(np.mean(values)) if len(values) else np.nan


def _percent(mask: np.ndarray) -> float:
    return 100 * _mean(np.asarray(mask, dtype=np.float64))


def _median(values: np.ndarray) -> float:
    return float(np.median(values)) if len(values) else np.nan


def _group_items(frame: pd.DataFrame, n_users: int) -> list[np.ndarray]:
    users = frame["user_idx"].to_numpy()
    items = frame["item_idx"].to_numpy()
    order = np.lexsort((items, users))
    users, items = users[order], items[order]
    bounds = np.searchsorted(users, np.arange(n_users + 1))
    return [items[bounds[u] : bounds[u + 1]] for u in range(n_users)]


def _prepare(
    ratings: pd.DataFrame, catalog: Catalog | None, tie_break_seed: int
) -> tuple[pd.DataFrame, Catalog, np.ndarray]:
    """Check the columns, add indices, sort by (user, time, random tie key).

    Returns the sorted frame, the catalogue, and each sorted row's tie key (see the module docstring).
    """
    missing = set(REQUIRED_COLUMNS) - set(ratings.columns)
    if missing:
        raise ValueError(
            f"ratings frame lacks column(s) {sorted(missing)}; expected user_id, item_id, timestamp "
            f"(and optionally rating: without it every interaction is a positive)"
        )
    catalog = catalog or Catalog.from_frames(ratings)
    frame = ratings if "user_idx" in ratings.columns else catalog.add_indices(ratings)
    frame = frame.reset_index(drop=True)
    key = _tie_keys(frame, tie_break_seed)
    order = np.lexsort((key, frame["timestamp"].to_numpy(), frame["user_idx"].to_numpy()))
    return frame.iloc[order].reset_index(drop=True), catalog, key[order]


def _tie_keys(frame: pd.DataFrame, seed: int) -> np.ndarray:
    """One uniform per row, drawn in the canonical order (user, item, timestamp, rating) of the rows.

    Drawing in a canonical order makes the keys, hence the split, independent of the input's row order;
    the keys are i.i.d., so they carry no information about the item (unlike item ids, see the module
    docstring).
    """
    columns = [c for c in ("user_idx", "item_idx", "timestamp", "rating") if c in frame.columns]
    canonical = frame.sort_values(columns, kind="stable").index.to_numpy()
    key = np.empty(len(frame))
    key[canonical] = np.random.default_rng(_check_seed(seed)).random(len(frame))
    return key


def _check_seed(seed: int) -> int:
    """``seed`` as an int, or an error naming it (``np.random.default_rng`` needs a non-negative integer)."""
    if isinstance(seed, bool) or not isinstance(seed, (int, np.integer)) or seed < 0:
        raise ValueError(f"tie_break_seed must be a non-negative integer, got {seed!r}")
    return int(seed)


def _make(frame, is_test, catalog, threshold, protocol, resplit) -> Split:
    train = Interactions(frame[~is_test].reset_index(drop=True), catalog, threshold)
    test = Interactions(frame[is_test].reset_index(drop=True), catalog, threshold)
    return Split(train, test, protocol, resplit)


def temporal_user_split(
    ratings: pd.DataFrame,
    catalog: Catalog | None = None,
    positive_threshold: float = DEFAULT_POSITIVE_THRESHOLD,
    test_fraction: float = DEFAULT_TEST_FRACTION,
    tie_break_seed: int = DEFAULT_TIE_BREAK_SEED,
) -> Split:
    """Per-user leave-last-``test_fraction``-out in time order: the book's default protocol.

    Each user's interactions are ordered by time and the last ``floor(test_fraction * n)`` go to test, so
    users with fewer than ``1 / test_fraction`` interactions have no test part. Interactions in the same
    second are ordered by a random key drawn with ``tie_break_seed``, not by item id (in MovieLens item id
    is correlated with popularity, so an id tie-break would bias the test part towards rare items).

    Other users' later interactions stay in training, and the held-out ones often come minutes after the
    training ones: the module docstring says what this split measures, and what it does not.
    """
    frame, catalog, _ = _prepare(ratings, catalog, tie_break_seed)
    position = frame.groupby("user_idx").cumcount().to_numpy()
    n = frame.groupby("user_idx")["item_idx"].transform("size").to_numpy()
    n_test = np.floor(test_fraction * n).astype(np.int64)
    is_test = position >= n - n_test

    def resplit(f, c, t):
        return temporal_user_split(f, c, t, test_fraction, tie_break_seed)

    name = (
        f"per-user leave-last-{test_fraction:.0%}-out (time order, ties random), "
        f"positive = {positive_rule(frame, positive_threshold)}"
    )
    return _make(frame, is_test, catalog, positive_threshold, name, resplit)


def global_temporal_split(
    ratings: pd.DataFrame,
    catalog: Catalog | None = None,
    positive_threshold: float = DEFAULT_POSITIVE_THRESHOLD,
    test_fraction: float = DEFAULT_TEST_FRACTION,
    tie_break_seed: int = DEFAULT_TIE_BREAK_SEED,
) -> Split:
    """One cut-off time for everybody: the last ``test_fraction`` of all interactions (by time) are test.

    Interactions at the cut-off second are ordered by a random key drawn with ``tie_break_seed``, not by
    item id (in MovieLens item id is correlated with popularity) nor by user id. Users who first appear
    after the cut-off have no training history (cold users): :func:`warm_and_cold_users` separates them.
    """
    frame, catalog, key = _prepare(ratings, catalog, tie_break_seed)
    order = np.lexsort((key, frame["timestamp"].to_numpy()))
    rank = np.empty(len(frame), dtype=np.int64)
    rank[order] = np.arange(len(frame))
    is_test = rank >= len(frame) - int(np.floor(test_fraction * len(frame)))

    def resplit(f, c, t):
        return global_temporal_split(f, c, t, test_fraction, tie_break_seed)

    name = (
        f"global temporal, last {test_fraction:.0%} of all ratings after one cut-off time, "
        f"positive = {positive_rule(frame, positive_threshold)}"
    )
    return _make(frame, is_test, catalog, positive_threshold, name, resplit)


def random_split(
    ratings: pd.DataFrame,
    catalog: Catalog | None = None,
    positive_threshold: float = DEFAULT_POSITIVE_THRESHOLD,
    test_fraction: float = DEFAULT_TEST_FRACTION,
    seed: int = 42,
) -> Split:
    """Random split of interactions, as in TensorFlow Recommenders' tutorials.

    Each user's later interactions can be in training; the book uses it only to compare with those
    tutorials. The test rows are drawn with ``seed`` (there is no time order, hence no tie to break).
    """
    frame, catalog, _ = _prepare(ratings, catalog, DEFAULT_TIE_BREAK_SEED)
    rng = np.random.default_rng(seed)
    is_test = np.zeros(len(frame), dtype=bool)
    is_test[rng.permutation(len(frame))[: int(np.floor(test_fraction * len(frame)))]] = True

    def resplit(f, c, t):
        return random_split(f, c, t, test_fraction, seed + 1)

    shares = f"{100 * (1 - test_fraction):.0f}/{100 * test_fraction:.0f}"
    name = f"random {shares} split of interactions, positive = {positive_rule(frame, positive_threshold)}"
    return _make(frame, is_test, catalog, positive_threshold, name, resplit)


def make_items_cold(
    split: Split,
    n_items: int | None = None,
    fraction: float | None = None,
    seed: int = 0,
) -> tuple[Split, np.ndarray]:
    """Turn some items into **cold-start items**: present in the test part, absent from training.

    Candidates are the items with at least one test positive; ``n_items`` of them (or ``fraction`` of them,
    rounded down, at least 1; give exactly one of the two) are drawn uniformly at random with ``seed``. Every
    training interaction of the drawn items is removed from ``split.train`` (so they are unseen in training:
    an ``"id"`` feature maps them to the out-of-vocabulary bucket, and the validation split carved from the
    new train part never contains them either); the test part and the catalogue are left unchanged.

    Returns ``(cold split, cold item indices)``, the indices sorted. Evaluate the cold split with
    ``evaluate(..., relevant_items=cold_items)`` to measure how well a model retrieves the cold items.
    """
    if (n_items is None) == (fraction is None):
        raise ValueError("give exactly one of n_items (a count) or fraction (a share of the candidate items)")
    candidates = np.unique(split.test.positives()["item_idx"].to_numpy())
    if len(candidates) == 0:
        raise ValueError("the split has no test positives: no item can be made cold")
    if fraction is not None:
        if not 0 < fraction <= 1:
            raise ValueError(f"fraction must be in (0, 1], got {fraction}")
        n_items = max(1, int(np.floor(fraction * len(candidates))))
    if not 1 <= n_items <= len(candidates):
        raise ValueError(f"n_items must be in 1..{len(candidates)} (items with a test positive), got {n_items}")
    rng = np.random.default_rng(seed)
    cold = np.sort(rng.choice(candidates, size=n_items, replace=False))
    train = split.train.frame
    kept = train[~train["item_idx"].isin(cold)].reset_index(drop=True)
    cold_split = replace(
        split,
        train=replace(split.train, frame=kept),
        protocol=f"{split.protocol}; {n_items} items with test positives made cold (training interactions removed)",
    )
    return cold_split, cold
