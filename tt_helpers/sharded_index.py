"""A catalogue split over several indexes: fan each query out to every shard, merge the top-k lists.

When the item vectors no longer fit one machine's memory (or one process's search budget), the catalogue is
split into ``N`` shards, each an ordinary :class:`~tt_helpers.index.RetrievalIndex` in its own directory (an
Annoy shard is one memory-mapped file, so it can be served by its own process or machine). A query goes to
every shard, each returns its own top ``k``, and the ``N * k`` candidates are merged by their exact inner
products. The merge is exact: if every shard returns its true top ``k``, the merged list is the true top
``k`` of the whole catalogue, because the global top ``k`` holds at most ``k`` items of any one shard.
So the only approximation is each shard's own, and it is measured the same way (recall against exact)::

    index = ShardedIndex(AnnoyIndex).build(item_vectors, ids=item_ids, n_shards=4, n_trees=50)
    ids, scores = index.search(user_vectors, k=10)     # [m, k] each, best first, exact inner products
    index.save("item_index")                           # sharded.json + shard-000/ ... shard-003/
    index = ShardedIndex.load("item_index")

Items go to shards round-robin by default (item ``i`` to shard ``i mod N``), which spreads popular and new
items over every shard; ``assignment="contiguous"`` gives each shard a block of consecutive items.
"""

from __future__ import annotations

import json
import os
import pathlib
from collections.abc import Callable, Sequence
from typing import Any

import numpy as np
import pandas as pd

from .index import (
    FORMAT_VERSION,
    AnnoyIndex,
    IndexFileError,
    RetrievalIndex,
    _as_matrix,
    _check_ids,
    _check_k,
    _is_int,
    load_index,
)

SHARDED_FILE = "sharded.json"
SHARDED_FORMAT = "tt_helpers.sharded_index"
ASSIGNMENTS = ("round_robin", "contiguous")


def shard_rows(n_items: int, n_shards: int, assignment: str = "round_robin") -> list[np.ndarray]:
    """The catalogue rows of each shard: ``N`` disjoint int64 arrays covering ``0..n_items-1``, in order."""
    if not _is_int(n_shards) or n_shards < 1:
        raise ValueError(f"n_shards must be an int >= 1, got {n_shards!r}")
    if n_shards > n_items:
        raise ValueError(f"n_shards={n_shards} is more than the {n_items} items: every shard needs an item")
    rows = np.arange(n_items, dtype=np.int64)
    if assignment == "round_robin":
        return [rows[s::n_shards] for s in range(n_shards)]
    if assignment == "contiguous":
        return list(np.array_split(rows, n_shards))
    raise ValueError(f"assignment must be one of {ASSIGNMENTS}, got {assignment!r}")


def merge_top_k(
    ids: Sequence[np.ndarray], scores: Sequence[np.ndarray], positions: Sequence[np.ndarray], k: int
) -> tuple[np.ndarray, np.ndarray]:
    """Merge the shards' lists: ``ids[s]``, ``scores[s]`` and ``positions[s]`` (each item's row in the whole
    catalogue) are ``[m, k_s]``; returns the ``k`` best ``(ids, scores)`` per query, ``[m, k]`` each. Ties in
    score go to the item earlier in the catalogue, as in one :class:`~tt_helpers.index.ExactIndex`."""
    all_ids = np.concatenate(ids, axis=1)
    all_scores = np.concatenate(scores, axis=1)
    all_positions = np.concatenate(positions, axis=1)
    order = np.lexsort((all_positions, -all_scores.astype(np.float64)), axis=1)[:, :k]
    return np.take_along_axis(all_ids, order, axis=1), np.take_along_axis(all_scores, order, axis=1)


class ShardedIndex:
    """``N`` indexes of one kind over disjoint parts of the catalogue, searched as one (see the module).

    ``shard_kind``: :class:`~tt_helpers.index.AnnoyIndex` (default) or
    :class:`~tt_helpers.index.ExactIndex`. After ``build`` or ``load``: ``shards`` (the indexes),
    ``ids``, ``n_items``, ``dimension``, ``model_fingerprint``."""

    def __init__(self, shard_kind: type[RetrievalIndex] | Callable[[], RetrievalIndex] = AnnoyIndex):
        self.shard_kind = shard_kind
        self.shards: list[RetrievalIndex] = []
        self._rows: list[np.ndarray] = []  # each shard's rows in the whole catalogue
        self._ids: np.ndarray | None = None
        self.assignment: str | None = None
        self._lookups: list[pd.Index] | None = None

    # ------------------------------------------------------------------ properties

    @property
    def n_shards(self) -> int:
        return len(self.shards)

    @property
    def ids(self) -> np.ndarray:
        self._check_built()
        return self._ids

    @property
    def n_items(self) -> int:
        return 0 if self._ids is None else len(self._ids)

    def __len__(self) -> int:
        return self.n_items

    @property
    def dimension(self) -> int:
        self._check_built()
        return self.shards[0].dimension

    @property
    def model_fingerprint(self) -> str | None:
        return self.shards[0].model_fingerprint if self.shards else None

    def __repr__(self) -> str:
        if self._ids is None:
            return f"ShardedIndex(unbuilt, {getattr(self.shard_kind, '__name__', 'shards')})"
        sizes = ", ".join(str(len(s)) for s in self.shards)
        return f"ShardedIndex({self.n_items} items in {self.n_shards} shards [{sizes}], {self.shards[0]!r})"

    # ------------------------------------------------------------------ the interface

    def build(
        self, vectors, ids=None, *, n_shards: int, assignment: str = "round_robin", **params: Any
    ) -> ShardedIndex:
        """Split ``vectors`` ``[n, d]`` (with ``ids``, default ``0..n-1``) into ``n_shards`` and build one index
        per shard with ``params`` (e.g. ``n_trees``, ``model_fingerprint``)."""
        x = _as_matrix(vectors, "vectors")
        if len(x) == 0:
            raise ValueError("vectors is empty (0 items): pass [n, d] with n >= 1")
        all_ids = _check_ids(ids, len(x))
        self._rows = shard_rows(len(x), n_shards, assignment)
        self.shards = [self.shard_kind().build(x[rows], ids=all_ids[rows], **params) for rows in self._rows]
        self._ids, self.assignment, self._lookups = all_ids, assignment, None
        return self

    def search(self, queries, k: int, **options: Any) -> tuple[np.ndarray, np.ndarray]:
        """Each shard's top ``min(k, shard size)``, merged: ``(ids [m, k], scores [m, k])``, best first, or
        ``[k]`` each for one query ``[d]``. ``options`` (e.g. ``search_k``) go to every shard's search."""
        self._check_built()
        k = _check_k(k, self.n_items)
        found = [shard.search(queries, min(k, len(shard)), **options) for shard in self.shards]
        single = found[0][0].ndim == 1
        ids = [f[0][None] if single else f[0] for f in found]
        scores = [f[1][None] if single else f[1] for f in found]
        positions = [self._positions(s, shard_ids) for s, shard_ids in enumerate(ids)]
        merged_ids, merged_scores = merge_top_k(ids, scores, positions, k)
        return (merged_ids[0], merged_scores[0]) if single else (merged_ids, merged_scores)

    def save(self, directory: str | os.PathLike) -> pathlib.Path:
        """``directory/sharded.json`` (the shard list) and one saved index per shard, ``shard-000/`` ...;
        each shard directory is a complete index that :func:`~tt_helpers.index.load_index` can serve alone."""
        self._check_built()
        folder = pathlib.Path(directory)
        folder.mkdir(parents=True, exist_ok=True)
        names = [f"shard-{s:03d}" for s in range(self.n_shards)]
        for name, shard in zip(names, self.shards):
            shard.save(folder / name)
        meta = {
            "format": SHARDED_FORMAT,
            "format_version": FORMAT_VERSION,
            "n_items": self.n_items,
            "assignment": self.assignment,
            "shards": names,
            "rows": [rows.tolist() for rows in self._rows],
        }
        tmp = folder / f"{SHARDED_FILE}.tmp"
        tmp.write_text(json.dumps(meta) + "\n", encoding="utf-8")
        os.replace(tmp, folder / SHARDED_FILE)
        return folder

    @classmethod
    def load(cls, directory: str | os.PathLike, expected_fingerprint: str | None = None) -> ShardedIndex:
        """Read what :meth:`save` wrote; every shard is loaded (and checked) with
        :func:`~tt_helpers.index.load_index`."""
        folder = pathlib.Path(directory)
        path = folder / SHARDED_FILE
        if not path.is_file():
            raise FileNotFoundError(
                f"{path} not found: {folder} is not a sharded index written by ShardedIndex.save "
                f"(a single index is loaded with load_index)"
            )
        try:
            meta = json.loads(path.read_text(encoding="utf-8"))
        except (json.JSONDecodeError, UnicodeDecodeError) as err:
            raise IndexFileError(f"{path} is truncated or corrupted ({err}): save the sharded index again") from err
        if meta.get("format") != SHARDED_FORMAT or meta.get("format_version") != FORMAT_VERSION:
            raise IndexFileError(
                f"{path} is format {meta.get('format')!r} version {meta.get('format_version')!r}; this tt_helpers "
                f"reads {SHARDED_FORMAT!r} version {FORMAT_VERSION}: save the sharded index again"
            )
        index = cls()
        index.shards = [load_index(folder / name, expected_fingerprint) for name in meta["shards"]]
        index._rows = [np.asarray(rows, dtype=np.int64) for rows in meta["rows"]]
        covered = np.sort(np.concatenate(index._rows)) if index._rows else np.array([], dtype=np.int64)
        if [len(r) for r in index._rows] != [len(s) for s in index.shards] or not np.array_equal(
            covered, np.arange(meta["n_items"])
        ):
            raise IndexFileError(
                f"{path} does not match its shard directories (each item must be in exactly one shard): save the "
                f"sharded index again"
            )
        index.shard_kind = type(index.shards[0])
        index.assignment = meta["assignment"]
        ids = np.empty(meta["n_items"], dtype=index.shards[0].ids.dtype)
        for rows, shard in zip(index._rows, index.shards):
            ids[rows] = shard.ids
        index._ids = ids
        return index

    # ------------------------------------------------------------------ helpers

    def _positions(self, shard: int, shard_ids: np.ndarray) -> np.ndarray:
        """Catalogue rows of the ids a shard returned (``[m, k_s]``)."""
        if self._lookups is None:
            self._lookups = [pd.Index(s.ids) for s in self.shards]
        local = self._lookups[shard].get_indexer(shard_ids.reshape(-1))
        return self._rows[shard][local].reshape(shard_ids.shape)

    def _check_built(self) -> None:
        if self._ids is None:
            raise ValueError("this ShardedIndex is empty: call build(vectors, n_shards=...) or ShardedIndex.load first")


__all__ = ["ShardedIndex", "merge_top_k", "shard_rows"]
