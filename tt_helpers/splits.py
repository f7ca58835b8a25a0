"""Train/test splits of interaction logs, and what counts as a positive.

The book's default protocol is the **per-user temporal split**: each user's last 20% of ratings (by time)
are held out, so a model is always asked to predict a user's future from the user's past. The
**global temporal split** (one cut-off time for everybody) mimics a production roll-out. The **random split**
of interactions is the protocol of TensorFlow Recommenders' tutorials; it leaks the future into training
and is kept only to compare with them.
"""

from __future__ import annotations

from dataclasses import dataclass, replace
from typing import Callable

import numpy as np
import pandas as pd
import torch

from .catalog import Catalog

DEFAULT_POSITIVE_THRESHOLD = 4.0
DEFAULT_TEST_FRACTION = 0.2


@dataclass(frozen=True)
class Interactions:
    """One side of a split: a ratings frame with ``user_idx``/``item_idx`` columns over a fixed catalogue."""

    frame: pd.DataFrame  # user_id, item_id, rating, timestamp, user_idx, item_idx
    catalog: Catalog
    positive_threshold: float = DEFAULT_POSITIVE_THRESHOLD

    @property
    def n_users(self) -> int:
        return self.catalog.n_users

    @property
    def n_items(self) -> int:
        return self.catalog.n_items

    def positives(self, threshold: float | None = None) -> pd.DataFrame:
        """Rows whose rating is at least ``threshold`` (default: the split's positive threshold)."""
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
        x[torch.from_numpy(frame["user_idx"].to_numpy(copy=True)), torch.from_numpy(frame["item_idx"].to_numpy(copy=True))] = 1.0
        return x

    def item_counts(self, positives_only: bool = True) -> np.ndarray:
        """Interactions per item index, shape ``[n_items]``; zero for items never seen."""
        frame = self.positives() if positives_only else self.frame
        return np.bincount(frame["item_idx"].to_numpy(), minlength=self.n_items)


@dataclass(frozen=True)
class Split:
    """A train/test split. ``protocol`` names how it was made; every result table should say it."""

    train: Interactions
    test: Interactions
    protocol: str
    resplit: Callable[[pd.DataFrame, Catalog, float], "Split"]  # the same protocol, applied again

    @property
    def catalog(self) -> Catalog:
        return self.train.catalog

    def validation(self) -> "Split":
        """A validation split carved from the training part with the same protocol (test is never seen).

        Tune hyper-parameters and pick epochs on this split; report on the test split once.
        """
        inner = self.resplit(self.train.frame, self.catalog, self.train.positive_threshold)
        return replace(inner, protocol=f"{inner.protocol} (validation, carved from train)")

    def describe(self) -> pd.Series:
        """Sizes of the two parts, for a table in the book."""
        test_pos = self.test.positives()
        return pd.Series(
            {
                "protocol": self.protocol,
                "train ratings": len(self.train.frame),
                "train positives": len(self.train.positives()),
                "test ratings": len(self.test.frame),
                "test positives": len(test_pos),
                "test users with a positive": test_pos["user_idx"].nunique(),
                "items never seen in train": int((self.train.item_counts(positives_only=False) == 0).sum()),
            }
        )


def _group_items(frame: pd.DataFrame, n_users: int) -> list[np.ndarray]:
    users = frame["user_idx"].to_numpy()
    items = frame["item_idx"].to_numpy()
    order = np.lexsort((items, users))
    users, items = users[order], items[order]
    bounds = np.searchsorted(users, np.arange(n_users + 1))
    return [items[bounds[u] : bounds[u + 1]] for u in range(n_users)]


def _prepare(ratings: pd.DataFrame, catalog: Catalog | None) -> tuple[pd.DataFrame, Catalog]:
    missing = {"user_id", "item_id", "rating", "timestamp"} - set(ratings.columns)
    if missing:
        raise ValueError(f"ratings frame lacks column(s) {sorted(missing)}; expected user_id, item_id, rating, timestamp")
    catalog = catalog or Catalog.from_frames(ratings)
    frame = ratings if "user_idx" in ratings.columns else catalog.add_indices(ratings)
    # Ties in time are common in MovieLens (ratings entered in the same second): break them by item id.
    frame = frame.sort_values(["user_idx", "timestamp", "item_idx"], kind="stable").reset_index(drop=True)
    return frame, catalog


def _make(frame, is_test, catalog, threshold, protocol, resplit) -> Split:
    train = Interactions(frame[~is_test].reset_index(drop=True), catalog, threshold)
    test = Interactions(frame[is_test].reset_index(drop=True), catalog, threshold)
    return Split(train, test, protocol, resplit)


def temporal_user_split(
    ratings: pd.DataFrame,
    catalog: Catalog | None = None,
    positive_threshold: float = DEFAULT_POSITIVE_THRESHOLD,
    test_fraction: float = DEFAULT_TEST_FRACTION,
) -> Split:
    """Per-user temporal leave-last-``test_fraction``-out: the book's default protocol.

    Each user's ratings are ordered by time (ties by item id) and the last ``floor(test_fraction * n)``
    go to test, so users with fewer than ``1 / test_fraction`` ratings have no test part.
    """
    frame, catalog = _prepare(ratings, catalog)
    position = frame.groupby("user_idx").cumcount().to_numpy()
    n = frame.groupby("user_idx")["item_idx"].transform("size").to_numpy()
    n_test = np.floor(test_fraction * n).astype(np.int64)
    is_test = position >= n - n_test

    def resplit(f, c, t):
        return temporal_user_split(f, c, t, test_fraction)

    name = f"per-user temporal, last {test_fraction:.0%} of each user's ratings held out, positive = rating >= {positive_threshold:g}"
    return _make(frame, is_test, catalog, positive_threshold, name, resplit)


def global_temporal_split(
    ratings: pd.DataFrame,
    catalog: Catalog | None = None,
    positive_threshold: float = DEFAULT_POSITIVE_THRESHOLD,
    test_fraction: float = DEFAULT_TEST_FRACTION,
) -> Split:
    """One cut-off time for everybody: the last ``test_fraction`` of all ratings (by time) are test.

    Users who first appear after the cut-off have no training history (cold users).
    """
    frame, catalog = _prepare(ratings, catalog)
    order = np.lexsort((frame["item_idx"].to_numpy(), frame["user_idx"].to_numpy(), frame["timestamp"].to_numpy()))
    rank = np.empty(len(frame), dtype=np.int64)
    rank[order] = np.arange(len(frame))
    is_test = rank >= len(frame) - int(np.floor(test_fraction * len(frame)))

    def resplit(f, c, t):
        return global_temporal_split(f, c, t, test_fraction)

    name = f"global temporal, last {test_fraction:.0%} of all ratings held out, positive = rating >= {positive_threshold:g}"
    return _make(frame, is_test, catalog, positive_threshold, name, resplit)


def random_split(
    ratings: pd.DataFrame,
    catalog: Catalog | None = None,
    positive_threshold: float = DEFAULT_POSITIVE_THRESHOLD,
    test_fraction: float = DEFAULT_TEST_FRACTION,
    seed: int = 42,
) -> Split:
    """Random split of interactions, as in TensorFlow Recommenders' tutorials.

    It leaks each user's future into training; the book uses it only to compare with those tutorials.
    """
    frame, catalog = _prepare(ratings, catalog)
    rng = np.random.default_rng(seed)
    is_test = np.zeros(len(frame), dtype=bool)
    is_test[rng.permutation(len(frame))[: int(np.floor(test_fraction * len(frame)))]] = True

    def resplit(f, c, t):
        return random_split(f, c, t, test_fraction, seed + 1)

    name = f"random {1 - test_fraction:.0%}/{test_fraction:.0%} split of interactions, positive = rating >= {positive_threshold:g}"
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
