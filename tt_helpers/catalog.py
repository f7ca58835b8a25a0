"""Maps external user and item ids to the dense indices 0..n-1 that tensors and embedding tables use."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import pandas as pd


class UnknownIdError(KeyError):
    """An id that the catalogue does not know (not in the data the catalogue was built from)."""

    def __str__(self) -> str:  # KeyError would print the message in quotes
        return str(self.args[0])


@dataclass(frozen=True)
class Catalog:
    """The universe of users and items a model can score.

    Evaluation ranks *every* item of the catalogue (full-catalogue ranking), including items that have
    no training interactions: those are the cold-start items that only a feature-based tower can reach.
    """

    user_ids: np.ndarray  # sorted external ids; position = index
    item_ids: np.ndarray

    @classmethod
    def from_frames(
        cls, ratings: pd.DataFrame, users: pd.DataFrame | None = None, items: pd.DataFrame | None = None
    ) -> "Catalog":
        """All users and items seen in ``ratings`` plus those listed in the ``users``/``items`` tables."""
        user_ids = ratings["user_id"].to_numpy()
        item_ids = ratings["item_id"].to_numpy()
        if users is not None:
            user_ids = np.concatenate([user_ids, users["user_id"].to_numpy()])
        if items is not None:
            item_ids = np.concatenate([item_ids, items["item_id"].to_numpy()])
        return cls(np.unique(user_ids.astype(np.int64)), np.unique(item_ids.astype(np.int64)))

    @property
    def n_users(self) -> int:
        return len(self.user_ids)

    @property
    def n_items(self) -> int:
        return len(self.item_ids)

    def user_index(self, user_ids: np.ndarray | pd.Series | list[int]) -> np.ndarray:
        """External user ids -> indices; raises :class:`UnknownIdError` naming the ids it does not know."""
        return _lookup(self.user_ids, user_ids, "user")

    def item_index(self, item_ids: np.ndarray | pd.Series | list[int]) -> np.ndarray:
        """External item ids -> indices; raises :class:`UnknownIdError` naming the ids it does not know."""
        return _lookup(self.item_ids, item_ids, "item")

    def add_indices(self, ratings: pd.DataFrame) -> pd.DataFrame:
        """A copy of ``ratings`` with ``user_idx`` and ``item_idx`` columns."""
        out = ratings.copy()
        out["user_idx"] = self.user_index(out["user_id"])
        out["item_idx"] = self.item_index(out["item_id"])
        return out


def _lookup(known: np.ndarray, ids, kind: str) -> np.ndarray:
    ids = np.asarray(ids, dtype=np.int64)
    pos = np.searchsorted(known, ids)
    pos_clipped = np.minimum(pos, len(known) - 1)
    bad = (pos >= len(known)) | (known[pos_clipped] != ids)
    if bad.any():
        unknown = np.unique(ids[bad])[:10].tolist()
        raise UnknownIdError(
            f"unknown {kind} id(s) {unknown} ({int(bad.sum())} in all): they are not in the catalogue this "
            f"model or split was built from. Build the Catalog from data that contains them, or drop them."
        )
    return pos.astype(np.int64)
