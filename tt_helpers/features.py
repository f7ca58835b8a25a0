"""Feature encoders: raw user and item attributes -> integer ids that embedding tables look up.

Every feature becomes one of two column types:

* :class:`CategoricalColumn`: one id per row (user id, gender, age bucket, hashed zip code);
* :class:`BagColumn`: a variable-length bag of ids per row (genres, title tokens), pooled by
  ``EmbeddingBag``.

Vocabularies of *ids* are fit on training interactions only: a user or item that has no training
interaction maps to the out-of-vocabulary bucket (index 0), exactly what happens to a new item in
production. That is what makes the cold-start experiment of chapter 2 honest.

The user's **history** (items rated strictly before the example's timestamp) is a per-example feature,
built by :class:`History` so that no future interaction can leak into a training example.
"""

from __future__ import annotations

import numbers
import re
import zlib
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from typing import Literal

import numpy as np
import pandas as pd
import torch

OOV = 0  # index of the out-of-vocabulary bucket in every vocabulary

FeatureKind = Literal["id", "categorical", "hashed", "buckets", "bag", "tokens"]


# --------------------------------------------------------------------------- encoders


@dataclass(frozen=True)
class Vocabulary:
    """Maps known values to ``1..n``; anything else to the OOV bucket ``0``.

    ``fit`` sorts the distinct values numerically when every one is a real number (user 2 gets id 2 when
    the ids are 1, 2, 3, ...), otherwise by their text (so mixed types still have one fixed order).
    """

    values: tuple

    @classmethod
    def fit(cls, values: Iterable) -> Vocabulary:
        unique = pd.unique(pd.Series(list(values), dtype=object).dropna())
        numeric = all(isinstance(v, numbers.Real) and not isinstance(v, bool) for v in unique)
        return cls(tuple(sorted(unique) if numeric else sorted(unique, key=str)))

    @property
    def size(self) -> int:
        """Number of embedding rows needed, OOV included."""
        return len(self.values) + 1

    def encode(self, values: Iterable) -> np.ndarray:
        lookup = {v: i + 1 for i, v in enumerate(self.values)}
        return np.array([lookup.get(v, OOV) for v in values], dtype=np.int64)


def stable_hash(value: object, n_buckets: int) -> int:
    """A hash bucket in ``1..n_buckets`` that is the same in every process (unlike Python's ``hash``).

    Hashing bounds the table size for high-cardinality values (zip codes, words) at the price of collisions.
    Missing values go to bucket 0.
    """
    if value is None or (isinstance(value, float) and np.isnan(value)) or value is pd.NA:
        return OOV
    return 1 + zlib.crc32(str(value).encode("utf-8")) % n_buckets


def bucketize(values: Sequence[float], boundaries: Sequence[float]) -> np.ndarray:
    """Numbers -> bucket ids ``1..len(boundaries)+1`` (right-open bins); missing values -> 0."""
    x = pd.to_numeric(pd.Series(values), errors="coerce").to_numpy(dtype=float, na_value=np.nan)
    ids = np.digitize(x, np.asarray(boundaries, dtype=float)) + 1
    ids[np.isnan(x)] = OOV
    return ids.astype(np.int64)


_TOKEN = re.compile(r"[a-z0-9]+")


def title_tokens(title: object) -> list[str]:
    """Lower-cased alphanumeric words of a title: ``"Toy Story"`` -> ``["toy", "story"]``."""
    return _TOKEN.findall(str(title).lower()) if isinstance(title, str) else []


# --------------------------------------------------------------------------- columns


@dataclass(frozen=True)
class CategoricalColumn:
    """One id per row. ``ids``: ``[n_rows]`` long; embedding table of ``cardinality`` rows."""

    ids: torch.Tensor
    cardinality: int

    def lookup(self, rows: torch.Tensor) -> torch.Tensor:
        return self.ids[rows]


@dataclass(frozen=True)
class BagColumn:
    """A bag of ids per row, stored CSR-style: row ``r`` holds ``values[offsets[r]:offsets[r+1]]``."""

    values: torch.Tensor  # [nnz] long
    offsets: torch.Tensor  # [n_rows + 1] long
    cardinality: int

    @classmethod
    def from_lists(cls, lists: Sequence[Sequence[int]], cardinality: int) -> BagColumn:
        lengths = torch.tensor([len(x) for x in lists], dtype=torch.long)
        offsets = torch.zeros(len(lists) + 1, dtype=torch.long)
        offsets[1:] = torch.cumsum(lengths, 0)
        flat = [v for x in lists for v in x]
        return cls(torch.tensor(flat, dtype=torch.long), offsets, cardinality)

    def lookup(self, rows: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """``(input, offsets)`` for ``EmbeddingBag`` over the bags of ``rows``."""
        return gather_bags(self.values, self.offsets[rows], self.offsets[rows + 1])


def gather_bags(values: torch.Tensor, starts: torch.Tensor, ends: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Concatenate ``values[starts[i]:ends[i]]`` for each ``i``; returns ``(flat, bag_offsets)`` for EmbeddingBag."""
    lengths = ends - starts
    bag_offsets = torch.zeros(len(starts), dtype=torch.long)
    bag_offsets[1:] = torch.cumsum(lengths, 0)[:-1]
    total = int(lengths.sum())
    if total == 0:
        return values.new_zeros(0), bag_offsets
    # position of each output element inside its bag, added to that bag's start
    within = torch.arange(total) - torch.repeat_interleave(bag_offsets, lengths)
    return values[torch.repeat_interleave(starts, lengths) + within], bag_offsets


# --------------------------------------------------------------------------- specs and tables


@dataclass(frozen=True)
class FeatureSpec:
    """How one raw column becomes an embedding input.

    ``kind``: ``"id"`` (vocabulary fit on rows with training interactions; others are OOV),
    ``"categorical"`` (vocabulary fit on the whole side table: metadata is known for every row),
    ``"hashed"`` (``buckets`` hash buckets), ``"buckets"`` (numeric ``boundaries``), ``"bag"`` (a list of
    categories per row, e.g. genres) or ``"tokens"`` (words of a text, hashed into ``buckets``).
    """

    name: str
    column: str
    kind: FeatureKind
    buckets: int = 1000
    boundaries: tuple[float, ...] = ()


@dataclass(frozen=True)
class FeatureTable:
    """Encoded features of every user (or every item) of the catalogue, row = catalogue index."""

    columns: dict[str, CategoricalColumn | BagColumn]
    n_rows: int
    specs: tuple[FeatureSpec, ...] = field(default=())

    def select(self, names: Iterable[str]) -> FeatureTable:
        names = list(names)
        unknown = [n for n in names if n not in self.columns]
        if unknown:
            raise KeyError(f"unknown feature(s) {unknown}; this table has {list(self.columns)}")
        return FeatureTable(
            {n: self.columns[n] for n in names}, self.n_rows, tuple(s for s in self.specs if s.name in names)
        )


def encode_table(frame: pd.DataFrame, specs: Sequence[FeatureSpec], seen_rows: np.ndarray) -> FeatureTable:
    """Encode ``frame`` (one row per catalogue index, in catalogue order) with ``specs``.

    ``seen_rows`` (bool ``[n_rows]``) marks rows with training interactions; ``"id"`` vocabularies are fit on
    those rows only.
    """
    columns: dict[str, CategoricalColumn | BagColumn] = {}
    for spec in specs:
        if spec.column not in frame.columns:
            raise KeyError(
                f"feature {spec.name!r} needs column {spec.column!r}, which the table lacks ({list(frame.columns)})"
            )
        raw = frame[spec.column].tolist()
        if spec.kind in ("id", "categorical"):
            fit_values = [v for v, s in zip(raw, seen_rows) if s] if spec.kind == "id" else raw
            vocab = Vocabulary.fit(fit_values)
            columns[spec.name] = CategoricalColumn(torch.from_numpy(vocab.encode(raw)), vocab.size)
        elif spec.kind == "hashed":
            ids = np.array([stable_hash(v, spec.buckets) for v in raw], dtype=np.int64)
            columns[spec.name] = CategoricalColumn(torch.from_numpy(ids), spec.buckets + 1)
        elif spec.kind == "buckets":
            columns[spec.name] = CategoricalColumn(
                torch.from_numpy(bucketize(raw, spec.boundaries)), len(spec.boundaries) + 2
            )
        elif spec.kind == "bag":
            lists = [list(v) if isinstance(v, (list, tuple, np.ndarray)) else [] for v in raw]
            vocab = Vocabulary.fit(v for x in lists for v in x)
            columns[spec.name] = BagColumn.from_lists([vocab.encode(x).tolist() for x in lists], vocab.size)
        elif spec.kind == "tokens":
            lists = [[stable_hash(t, spec.buckets) for t in title_tokens(v)] for v in raw]
            columns[spec.name] = BagColumn.from_lists(lists, spec.buckets + 1)
        else:
            raise ValueError(f"unknown feature kind {spec.kind!r} for {spec.name!r}")
    return FeatureTable(columns, len(frame), tuple(specs))


def align_to_catalog(table: pd.DataFrame | None, key: str, ids: np.ndarray) -> pd.DataFrame:
    """Rows of a side table in catalogue order; ids without a row get missing values (encoded as OOV)."""
    if table is None:
        return pd.DataFrame({key: ids})
    if table[key].duplicated().any():
        raise ValueError(f"side table has duplicate {key} values; one row per {key} expected")
    return table.set_index(key).reindex(ids).reset_index()


# --------------------------------------------------------------------------- history


class History:
    """Each user's interactions in time order, and the leakage-free window of them before a given time.

    Built from training interactions only. ``before(users, timestamps)`` returns, for each example, the
    user's last ``max_length`` items rated *strictly before* the example's timestamp; ``latest(users)``
    returns the last ``max_length`` items overall (what the user tower sees when serving).
    """

    def __init__(self, frame: pd.DataFrame, n_users: int, max_length: int = 50):
        order = np.lexsort((frame["item_idx"].to_numpy(), frame["timestamp"].to_numpy(), frame["user_idx"].to_numpy()))
        users = frame["user_idx"].to_numpy()[order]
        self.items = torch.from_numpy(frame["item_idx"].to_numpy()[order].astype(np.int64))
        self.timestamps = frame["timestamp"].to_numpy()[order].astype(np.int64)
        self.user_start = np.searchsorted(users, np.arange(n_users + 1)).astype(np.int64)
        self.max_length = max_length

    def _window(self, end: np.ndarray, users: np.ndarray) -> tuple[torch.Tensor, torch.Tensor]:
        start = np.maximum(self.user_start[users], end - self.max_length)
        return torch.from_numpy(start), torch.from_numpy(end)

    def before(self, users: np.ndarray, timestamps: np.ndarray) -> tuple[torch.Tensor, torch.Tensor]:
        """``(start, end)`` positions into ``self.items`` for each example; ``items[start:end]`` is its history."""
        users = np.asarray(users, dtype=np.int64)
        timestamps = np.asarray(timestamps, dtype=np.int64)
        end = np.empty(len(users), dtype=np.int64)
        for u in np.unique(users):
            rows = users == u
            lo, hi = self.user_start[u], self.user_start[u + 1]
            end[rows] = lo + np.searchsorted(self.timestamps[lo:hi], timestamps[rows], side="left")
        return self._window(end, users)

    def latest(self, users: np.ndarray) -> tuple[torch.Tensor, torch.Tensor]:
        users = np.asarray(users, dtype=np.int64)
        return self._window(self.user_start[users + 1], users)

    def gather(self, start: torch.Tensor, end: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Flat item indices and bag offsets for ``EmbeddingBag``."""
        return gather_bags(self.items, start, end)
