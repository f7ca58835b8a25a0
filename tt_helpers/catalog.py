"""Maps external user and item ids to the dense indices 0..n-1 that tensors and embedding tables use.

External ids may be integers or strings (one kind per id column):

* **integers** (Python or numpy ints of any width, or floats that are all whole numbers, such as the
  ``3.0`` pandas gives when it reads an integer column as float) are stored as ``int64`` and sorted
  numerically, so user 2 comes before user 10;
* **strings** are stored as an ``object`` array of ``str``, sorted.

Anything else is refused with an error that says what to convert: non-integral floats (``1.5`` is not an
id, and truncating it to 1 would merge two ids), missing values (NaN, None), booleans, and columns that
mix strings with numbers.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass

import numpy as np
import pandas as pd

INT_IDS = "integer"
STR_IDS = "string"
_MAX_SHOWN = 10  # ids named in an error message


class UnknownIdError(KeyError):
    """An id that the catalogue does not know (not in the data the catalogue was built from)."""

    def __str__(self) -> str:  # KeyError would print the message in quotes
        return str(self.args[0])


class IdTypeError(TypeError):
    """Ids of a kind the catalogue cannot hold, or of the other kind than the catalogue's (str vs int)."""


@dataclass(frozen=True)
class Catalog:
    """The universe of users and items a model can score.

    Evaluation ranks *every* item of the catalogue (full-catalogue ranking), including items that have
    no training interactions: those are the cold-start items that only a feature-based tower can reach.

    ``user_ids`` and ``item_ids`` are the sorted, unique external ids (position = index), each either
    ``int64`` or an ``object`` array of ``str``. Build a catalogue with :meth:`from_frames`; the
    constructor checks that the arrays it is given are of that form.
    """

    user_ids: np.ndarray  # sorted external ids; position = index
    item_ids: np.ndarray

    def __post_init__(self) -> None:
        for field, kind in (("user_ids", "user"), ("item_ids", "item")):
            ids = _canonical(getattr(self, field), kind, f"{field} array")
            _check_sorted_unique(ids, kind)
            object.__setattr__(self, field, ids)

    @classmethod
    def from_frames(
        cls, ratings: pd.DataFrame, users: pd.DataFrame | None = None, items: pd.DataFrame | None = None
    ) -> Catalog:
        """All users and items seen in ``ratings`` plus those listed in the ``users``/``items`` tables.

        Ids may be integers or strings (see the module docstring); a table's ids must be of the same kind
        as those of ``ratings``.
        """
        user_parts = [("ratings", ratings["user_id"])] + ([("users", users["user_id"])] if users is not None else [])
        item_parts = [("ratings", ratings["item_id"])] + ([("items", items["item_id"])] if items is not None else [])
        return cls(_unique_ids(user_parts, "user"), _unique_ids(item_parts, "item"))

    @property
    def n_users(self) -> int:
        return len(self.user_ids)

    @property
    def n_items(self) -> int:
        return len(self.item_ids)

    def user_index(self, user_ids: np.ndarray | pd.Series | list) -> np.ndarray:
        """External user ids -> indices; raises :class:`UnknownIdError` naming the ids it does not know."""
        return _lookup(self.user_ids, user_ids, "user")

    def user_positions(self, user_ids: np.ndarray | pd.Series | list) -> np.ndarray:
        """Like :meth:`user_index`, but ``-1`` for the ids the catalogue does not know instead of an error, for
        callers that serve unknown users another way; ids of the wrong kind still raise :class:`IdTypeError`."""
        return _find(self.user_ids, user_ids, "user")[0]

    def item_index(self, item_ids: np.ndarray | pd.Series | list) -> np.ndarray:
        """External item ids -> indices; raises :class:`UnknownIdError` naming the ids it does not know."""
        return _lookup(self.item_ids, item_ids, "item")

    def add_indices(self, ratings: pd.DataFrame) -> pd.DataFrame:
        """A copy of ``ratings`` with ``user_idx`` and ``item_idx`` columns."""
        out = ratings.copy()
        out["user_idx"] = self.user_index(out["user_id"])
        out["item_idx"] = self.item_index(out["item_id"])
        return out


def id_kind(ids: np.ndarray) -> str:
    """``"integer"`` or ``"string"``: the kind of a canonical id array (as :class:`Catalog` stores them)."""
    return STR_IDS if ids.dtype == object else INT_IDS


def _unique_ids(parts: list[tuple[str, pd.Series]], kind: str) -> np.ndarray:
    """Sorted unique ids of several tables' columns, which must all hold the same kind of id."""
    arrays = [(source, _canonical(column, kind, f"{kind}_id column of {source}")) for source, column in parts]
    kinds = {(source, id_kind(ids)) for source, ids in arrays if len(ids)}
    if len({k for _, k in kinds}) > 1:
        described = ", ".join(f"{k}s in {source}" for source, k in sorted(kinds))
        raise IdTypeError(
            f"{kind} ids must be of one kind, got {described}: convert every {kind}_id column to str "
            f"(df['{kind}_id'].astype(str)), or all of them to int"
        )
    non_empty = [ids for _, ids in arrays if len(ids)]
    if not non_empty:
        return np.empty(0, dtype=np.int64)
    return np.unique(np.concatenate(non_empty))


def _canonical(values: Iterable, kind: str, where: str) -> np.ndarray:
    """``values`` as ``int64`` (integer ids) or an ``object`` array of ``str`` (string ids).

    ``where`` names the values in error messages (e.g. "item_id column of ratings").
    """
    arr = values.to_numpy() if isinstance(values, (pd.Series, pd.Index)) else np.asarray(values)
    arr = arr.ravel()
    if len(arr) == 0:
        return np.empty(0, dtype=object if arr.dtype.kind in "OUS" else np.int64)
    if arr.dtype.kind in "iu":
        return _from_integers(arr, kind, where)
    if arr.dtype.kind == "f":
        return _from_floats(arr, kind, where)
    if arr.dtype.kind in "US":
        return _from_strings(arr, kind, where)
    if arr.dtype.kind == "O":
        return _from_objects(arr, kind, where)
    raise IdTypeError(
        f"{kind} ids must be integers or strings; the {where} has dtype {arr.dtype}: convert it to int or str"
    )


def _from_integers(arr: np.ndarray, kind: str, where: str) -> np.ndarray:
    if arr.dtype.kind == "u" and arr.max() > np.iinfo(np.int64).max:
        raise IdTypeError(
            f"{kind} ids must fit in int64; the {where} holds {arr.max()}: convert the ids to str"
        )
    return arr.astype(np.int64)


def _from_floats(arr: np.ndarray, kind: str, where: str) -> np.ndarray:
    missing = np.isnan(arr)
    if missing.any():
        raise _missing_error(int(missing.sum()), kind, where)
    fractional = (arr != np.floor(arr)) | ~np.isfinite(arr) | (np.abs(arr) >= 2.0**63)
    if fractional.any():
        examples = np.unique(arr[fractional])[:_MAX_SHOWN].tolist()
        raise IdTypeError(
            f"{kind} ids must be integers or strings; the {where} holds non-integral floats such as "
            f"{', '.join(repr(x) for x in examples)}: convert them to str (df['{kind}_id'].astype(str)) if "
            f"they are labels, or fix how the column was read (floats that are whole numbers, like 3.0, are "
            f"accepted as integers)"
        )
    return arr.astype(np.int64)


def _from_strings(arr: np.ndarray, kind: str, where: str) -> np.ndarray:
    if arr.dtype.kind == "S":
        raise IdTypeError(f"{kind} ids must be integers or strings, not bytes; decode the {where} to str")
    return arr.astype(str).astype(object)


def _from_objects(arr: np.ndarray, kind: str, where: str) -> np.ndarray:
    missing = pd.isna(arr)
    if missing.any():
        raise _missing_error(int(missing.sum()), kind, where)
    inferred = pd.api.types.infer_dtype(arr, skipna=False)
    if inferred == "string":
        return np.array([str(x) for x in arr], dtype=object)  # np.str_ -> str
    if inferred == "integer":
        return _from_integers(np.array(arr.tolist()), kind, where)
    if inferred in ("floating", "mixed-integer-float"):
        return _from_floats(arr.astype(np.float64), kind, where)
    is_str = np.fromiter((isinstance(x, str) for x in arr), dtype=bool, count=len(arr))
    if is_str.any() and not is_str.all():
        example_str, example_other = arr[is_str][0], arr[~is_str][0]
        raise IdTypeError(
            f"{kind} ids mix strings and numbers in the {where} (e.g. {example_str!r} and {example_other!r}): "
            f"convert them all to str (df['{kind}_id'].astype(str))"
        )
    raise IdTypeError(
        f"{kind} ids must be integers or strings; the {where} holds {inferred} values "
        f"(e.g. {arr[0]!r}): convert them to int or str"
    )


def _missing_error(n_missing: int, kind: str, where: str) -> IdTypeError:
    return IdTypeError(
        f"{kind} ids must not be missing; the {where} has {n_missing} missing value(s) (NaN/None): "
        f"drop those rows (df.dropna(subset=['{kind}_id'])) or fill them in"
    )


def _check_sorted_unique(ids: np.ndarray, kind: str) -> None:
    if len(ids) > 1 and not bool(np.all(ids[1:] > ids[:-1])):
        raise ValueError(
            f"a Catalog's {kind} ids must be sorted and unique (position = index); "
            f"build it with Catalog.from_frames, or pass np.unique(ids)"
        )


def _find(known: np.ndarray, ids, kind: str) -> tuple[np.ndarray, np.ndarray]:
    """``(positions, canonical ids)``: the position of each id in the sorted array ``known``, -1 where absent;
    an id of the other kind than ``known``'s raises :class:`IdTypeError`."""
    ids = _canonical(ids, kind, f"{kind} ids looked up")
    if len(ids) == 0:
        return np.empty(0, dtype=np.int64), ids
    if len(known) and id_kind(ids) != id_kind(known):
        raise IdTypeError(
            f"{kind} ids of the wrong type: the catalogue's {kind} ids are {id_kind(known)}s "
            f"(e.g. {known[0]!r}) but {id_kind(ids)}s were looked up (e.g. {ids[0]!r}); convert them with "
            f"{'.astype(str)' if id_kind(known) == STR_IDS else '.astype(int)'}"
        )
    return _positions(known, ids), ids


def _lookup(known: np.ndarray, ids, kind: str) -> np.ndarray:
    """Indices of ``ids`` in the sorted array ``known``; vectorised for both kinds of id."""
    pos, ids = _find(known, ids, kind)
    bad = pos < 0
    if bad.any():
        unknown = np.unique(ids[bad])[:_MAX_SHOWN].tolist()
        raise UnknownIdError(
            f"unknown {kind} id(s) {unknown} ({int(bad.sum())} in all): they are not in the catalogue this "
            f"model or split was built from. Build the Catalog from data that contains them, or drop them."
        )
    return pos


def _positions(known: np.ndarray, ids: np.ndarray) -> np.ndarray:
    """Position of each id in ``known``, -1 where absent: binary search for ints, a hash table for strings."""
    if len(known) == 0:
        return np.full(len(ids), -1, dtype=np.int64)
    if id_kind(known) == STR_IDS:
        return pd.Index(known).get_indexer(ids).astype(np.int64)
    pos = np.searchsorted(known, ids)
    found = known[np.minimum(pos, len(known) - 1)] == ids
    return np.where(found, pos, -1).astype(np.int64)
