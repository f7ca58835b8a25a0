"""The retrieval index: exact or approximate top-k inner-product search behind one small interface.

Serving a two-tower model means finding, for a query vector ``q`` (the user tower's output), the ``k`` items
whose vectors ``x`` (the item tower's outputs) have the largest inner product ``q . x``. Two implementations
answer the same calls, so the book can swap one for the other and measure what the approximation costs
(as TensorFlow Recommenders' ``BruteForce`` and ``ScaNN`` top-k layers do)::

    index = AnnoyIndex().build(item_vectors, ids=item_ids, n_trees=50, model_fingerprint=fp)
    ids, scores = index.search(user_vectors, k=10)     # [m, k] each, best first, true inner products
    index.save("item_index")                           # a directory: index.json, vectors.npy (+ items.ann)
    index = load_index("item_index", expected_fingerprint=fp)

* :class:`ExactIndex` scores every item (a batched ``torch`` matmul and ``topk``): exact, ``O(n d)`` per query.
* :class:`AnnoyIndex` searches a forest of random-projection trees (Spotify's Annoy): approximate, fast, and
  its file is memory-mapped on load, so several processes serving the same index share one copy in memory.

Inner product is not a distance, and Annoy's ``dot`` metric in the release on PyPI (1.17.3) builds its trees
without the extra coordinate it adds (fixed in spotify/annoy PR #628, not released), so its recall is poor
once norms vary. :class:`AnnoyIndex` therefore does maximum-inner-product search itself: with the plain
``angular`` metric when every item vector has the same length (then the inner-product and cosine orders are
the same), otherwise after the reduction of Bachrach et al. (RecSys 2014), which maps items to
``[x, sqrt(M^2 - |x|^2)]`` (``M`` the largest norm, so every item has length ``M``) and queries to ``[q, 0]``;
then ``q . x`` is ``|q| M cos``, and the nearest angle is the largest inner product. The candidates Annoy
returns are re-scored exactly with the original vectors, so the scores returned are true inner products.
``metric="dot"`` keeps Annoy's own metric, to measure how broken it is.

A saved index carries its metadata (kind, dimension, metric, reduction, ids, parameters, the fingerprint of
the model that produced the vectors: :func:`fingerprint`); ``load`` checks it, and every problem (a truncated
file, a file of another format version, an index built from another model's vectors) is an error that says
what to do.
"""

from __future__ import annotations

import hashlib
import json
import os
import pathlib
from collections.abc import Mapping
from typing import Any, ClassVar

import numpy as np
import torch

from . import metrics
from .catalog import INT_IDS, STR_IDS, _canonical, id_kind
from .repro import DEFAULT_SEED

FORMAT = "tt_helpers.index"
FORMAT_VERSION = 1
METADATA_FILE = "index.json"
VECTORS_FILE = "vectors.npy"
ANNOY_FILE = "items.ann"
NORM_TOLERANCE = 1e-3  # relative spread of the norms below which vectors count as one length (angular is exact)
MAX_SCORES = 2**26  # ExactIndex scores at most this many (query, item) pairs at once: 256 MB of float32
FINGERPRINT_LENGTH = 16  # hex characters of the SHA-256 kept by fingerprint()
_MAX_SHOWN = 10


class IndexFileError(ValueError):
    """A saved index is truncated, corrupted, incomplete or of another format version; the message names
    the file and the fix (rebuild the index and save it again)."""


class ModelMismatchError(ValueError):
    """The index was built from the vectors of another model than the one that will query it."""


def fingerprint(obj: torch.Tensor | np.ndarray | Mapping[str, Any] | torch.nn.Module) -> str:
    """A short SHA-256 (16 hex characters) of a tensor, an array, a ``state_dict`` or a module's ``state_dict``:
    the names, dtypes, shapes and bytes of every tensor, in name order. Equal weights give equal fingerprints;
    pass the item tower's (or the whole model's) to ``build(..., model_fingerprint=...)`` and the serving
    model's to ``load(..., expected_fingerprint=...)``, so that an index is never queried by another model."""
    if isinstance(obj, torch.nn.Module):
        obj = obj.state_dict()
    digest = hashlib.sha256()
    if isinstance(obj, Mapping):
        for name in sorted(obj):
            digest.update(f"{name}\0".encode())
            _hash_tensor(digest, obj[name], where=f"state_dict entry {name!r}")
    else:
        _hash_tensor(digest, obj, where="the object")
    return digest.hexdigest()[:FINGERPRINT_LENGTH]


def _hash_tensor(digest: Any, value: Any, where: str) -> None:
    if isinstance(value, np.ndarray):
        value = torch.from_numpy(np.ascontiguousarray(value))
    if not isinstance(value, torch.Tensor):
        raise TypeError(
            f"fingerprint takes tensors, arrays, a state_dict or a module; {where} is a {type(value).__name__}"
        )
    tensor = value.detach().cpu().contiguous()
    digest.update(f"{tensor.dtype}{tuple(tensor.shape)}\0".encode())
    digest.update(tensor.reshape(-1).view(torch.uint8).numpy().tobytes())


def recall_against_exact(approx_ids: np.ndarray, exact_ids: np.ndarray) -> float:
    """Mean over queries of ``|approximate top k  &  exact top k| / k``: the recall@k of an approximate index
    against exact search (the measure the book reports for ANN). Both ``[m, k]`` (or ``[k]``), any id type."""
    approx, exact = np.asarray(approx_ids), np.asarray(exact_ids)
    if approx.ndim == 1 and exact.ndim == 1:
        approx, exact = approx[None], exact[None]
    if approx.shape != exact.shape or approx.ndim != 2 or approx.shape[1] == 0:
        raise ValueError(
            f"approx_ids and exact_ids must both be [queries, k] with k >= 1, got shapes {np.shape(approx_ids)} "
            f"and {np.shape(exact_ids)}: search both indexes with the same queries and the same k"
        )
    found = 0
    for start in range(0, len(approx), 1024):
        a, e = approx[start : start + 1024], exact[start : start + 1024]
        found += int((a[:, :, None] == e[:, None, :]).any(2).sum())
    return found / approx.size


class RetrievalIndex:
    """What both indexes share: ``build``, ``search``, ``save``, ``load``, and the checks on their inputs.

    After ``build`` or ``load``: ``ids`` (the external ids, ``[n]``), ``n_items`` (also ``len(index)``),
    ``dimension``, ``model_fingerprint``, ``metadata`` (what ``save`` writes, without the ids)."""

    kind: ClassVar[str] = ""

    def __init__(self) -> None:
        self._ids: np.ndarray | None = None
        self._vectors: np.ndarray | None = None  # the original item vectors [n, d], float32
        self._parameters: dict[str, Any] = {}
        self._model_fingerprint: str | None = None

    # ------------------------------------------------------------------ properties

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
        return int(self._vectors.shape[1])

    @property
    def model_fingerprint(self) -> str | None:
        return self._model_fingerprint

    @property
    def metadata(self) -> dict[str, Any]:
        self._check_built()
        return {
            "format": FORMAT,
            "format_version": FORMAT_VERSION,
            "kind": self.kind,
            "dimension": self.dimension,
            "n_items": self.n_items,
            **self._strategy(),
            "parameters": dict(self._parameters),
            "model_fingerprint": self._model_fingerprint,
            "id_kind": id_kind(self._ids),
        }

    def __repr__(self) -> str:
        if self._ids is None:
            return f"{type(self).__name__}(unbuilt)"
        settings = ", ".join(f"{k}={v!r}" for k, v in {**self._strategy(), **self._parameters}.items())
        return f"{type(self).__name__}({self.n_items} items, d={self.dimension}, {settings})"

    # ------------------------------------------------------------------ the interface

    def build(self, vectors, ids=None, **params) -> RetrievalIndex:
        raise NotImplementedError

    def search(self, queries, k: int) -> tuple[np.ndarray, np.ndarray]:
        """The ``k`` items with the largest inner product with each query, best first (ties: the item built
        first). ``queries`` ``[m, d]`` -> ``(ids [m, k], scores [m, k])``: ``ids`` of the external id type
        (``int64``, or ``object`` holding ``str``), ``scores`` the float32 inner products. A single query
        ``[d]`` gives ``[k]`` and ``[k]``."""
        return self._run_search(queries, k)

    def save(self, directory: str | os.PathLike) -> pathlib.Path:
        """Write the index to ``directory`` (created if needed): ``index.json`` (the metadata and the ids),
        ``vectors.npy`` (the item vectors) and, for Annoy, ``items.ann``. Each file is written beside its
        final name and renamed over it, so a process serving the old files keeps a valid copy. Returns the
        directory."""
        self._check_built()
        folder = pathlib.Path(directory)
        if folder.exists() and not folder.is_dir():
            raise NotADirectoryError(f"{folder} is a file; save(directory) writes a directory: choose another path")
        folder.mkdir(parents=True, exist_ok=True)
        sizes = {}
        for name, write in self._files().items():
            tmp = folder / f"{name}.tmp"
            write(tmp)
            sizes[name] = tmp.stat().st_size
            os.replace(tmp, folder / name)
        from . import __version__

        meta = {**self.metadata, "tt_helpers_version": __version__, "files": sizes, "ids": self._ids.tolist()}
        tmp = folder / f"{METADATA_FILE}.tmp"
        tmp.write_text(json.dumps(meta, allow_nan=False) + "\n", encoding="utf-8")
        os.replace(tmp, folder / METADATA_FILE)
        return folder

    @classmethod
    def load(cls, directory: str | os.PathLike, expected_fingerprint: str | None = None) -> RetrievalIndex:
        """Read an index written by ``save``. With ``expected_fingerprint`` (see :func:`fingerprint`), an index
        built from another model's vectors raises :class:`ModelMismatchError`. Missing files raise
        ``FileNotFoundError``; truncated or corrupted files and other format versions :class:`IndexFileError`."""
        folder, meta = _read_metadata(directory)
        return cls._from_metadata(folder, meta, expected_fingerprint)

    @classmethod
    def _from_metadata(cls, folder: pathlib.Path, meta: dict[str, Any],
                       expected_fingerprint: str | None) -> RetrievalIndex:
        if meta["kind"] != cls.kind:
            raise ValueError(
                f"{folder} holds an index of kind {meta['kind']!r}, not {cls.kind!r}: load it with "
                f"load_index(directory) or the class of that kind"
            )
        _check_fingerprint(folder, meta, expected_fingerprint)
        _check_files(folder, meta, cls._file_names(meta))
        index = cls()
        try:
            index._ids = _id_array(meta["ids"], meta["id_kind"], meta["n_items"])
            index._parameters = dict(meta["parameters"])
            index._model_fingerprint = meta["model_fingerprint"]
            index._vectors = _load_vectors(folder / VECTORS_FILE, meta, mmap=cls._mmap_vectors)
            index._restore(folder, meta)
        except IndexFileError:
            raise
        except (KeyError, TypeError, ValueError, AttributeError) as err:
            raise IndexFileError(
                f"{folder / METADATA_FILE} is incomplete or corrupted ({type(err).__name__}: {err}). {_REBUILD}"
            ) from err
        return index

    # ------------------------------------------------------------------ for the implementations

    _mmap_vectors: ClassVar[bool] = False

    def _strategy(self) -> dict[str, Any]:
        return {"metric": "inner_product", "reduction": False, "max_norm": None}

    def _files(self) -> dict[str, Any]:
        return {VECTORS_FILE: lambda path: _save_npy(path, self._vectors)}

    @classmethod
    def _file_names(cls, meta: Mapping[str, Any]) -> tuple[str, ...]:
        return (VECTORS_FILE,)

    def _restore(self, folder: pathlib.Path, meta: Mapping[str, Any]) -> None:
        pass

    def _search(self, queries: np.ndarray, k: int, **options) -> tuple[np.ndarray, np.ndarray]:
        raise NotImplementedError

    def _set_items(self, vectors, ids, model_fingerprint: str | None) -> np.ndarray:
        """Check and store the vectors, ids and fingerprint of a build; returns the vectors ``[n, d]`` float32."""
        x = _as_matrix(vectors, "vectors")
        if len(x) == 0:
            raise ValueError(
                "vectors is empty (0 items): an index needs at least one item vector; pass [n, d] with n >= 1"
            )
        self._ids = _check_ids(ids, len(x))
        if model_fingerprint is not None and not isinstance(model_fingerprint, str):
            raise TypeError(
                f"model_fingerprint must be a str (see fingerprint(model)), got {type(model_fingerprint).__name__}"
            )
        self._model_fingerprint = model_fingerprint
        self._vectors = x
        return x

    def _check_built(self) -> None:
        if self._ids is None:
            raise ValueError(
                f"this {type(self).__name__} is empty: call build(vectors) or "
                f"{type(self).__name__}.load(directory) first"
            )

    def _run_search(self, queries, k: int, **options) -> tuple[np.ndarray, np.ndarray]:
        self._check_built()
        q = _as_matrix(queries, "queries", allow_vector=True)
        single = q.ndim == 1
        q = q[None] if single else q
        if q.shape[1] != self.dimension:
            raise ValueError(
                f"queries have dimension {q.shape[1]} but the index was built from vectors of dimension "
                f"{self.dimension}: query it with the model whose item vectors it holds"
            )
        k = _check_k(k, self.n_items)
        if len(q) == 0:
            return self._ids[:0].reshape(0, k), np.empty((0, k), dtype=np.float32)
        rows, scores = self._search(q, k, **options)
        ids = self._ids[rows]
        return (ids[0], scores[0]) if single else (ids, scores)


class ExactIndex(RetrievalIndex):
    """Exact top-k: every query against every item, ``queries @ vectors.T`` then ``topk``, in batches.

    ``O(n d)`` per query: the reference an approximate index is measured against, and the right choice
    while the catalogue is small or queries come in large batches (one matmul serves them all)."""

    kind = "exact"

    def __init__(self) -> None:
        super().__init__()
        self._items: torch.Tensor | None = None  # the vectors as a tensor, made on the first search

    def build(self, vectors, ids=None, *, batch_size: int = 1024, model_fingerprint: str | None = None) -> ExactIndex:
        """Index ``vectors`` ``[n, d]`` under ``ids`` (default ``0..n-1``). ``search`` scores ``batch_size``
        queries at once (fewer when the catalogue is large, so a batch's scores stay under 256 MB)."""
        if not isinstance(batch_size, int) or batch_size < 1:
            raise ValueError(f"batch_size must be an int >= 1, got {batch_size!r}")
        self._set_items(vectors, ids, model_fingerprint)
        self._parameters = {"batch_size": batch_size}
        self._items = None
        return self

    def _search(self, queries: np.ndarray, k: int) -> tuple[np.ndarray, np.ndarray]:
        if self._items is None:
            self._items = torch.from_numpy(np.ascontiguousarray(self._vectors))
        n = self.n_items
        step = max(1, min(int(self._parameters.get("batch_size", 1024)), MAX_SCORES // n))
        rows, scores = [], []
        with torch.no_grad():
            for start in range(0, len(queries), step):
                all_scores = torch.from_numpy(queries[start : start + step]) @ self._items.T
                top = metrics.top_k_ranking(all_scores, k)  # ties broken by the lower item position
                rows.append(top.numpy())
                scores.append(torch.gather(all_scores, 1, top).numpy())
        return np.concatenate(rows), np.concatenate(scores).astype(np.float32, copy=False)


class AnnoyIndex(RetrievalIndex):
    """Approximate top-k inner product with Annoy (random-projection trees), candidates re-scored exactly.

    Build parameters (all saved with the index):

    * ``metric``: ``"auto"`` (inner product, correctly: ``angular`` when all norms are equal, else the
      reduction) or ``"dot"``, Annoy 1.17.3's own metric, kept to measure how broken it is;
    * ``normalized``: ``None`` detects whether all vectors have one length (relative spread
      ``<= NORM_TOLERANCE``); ``True`` says they do (plain ``angular``), ``False`` forces the reduction;
    * ``n_trees`` (50): more trees, better recall, a larger file and a longer build;
    * ``search_k`` (-1): how many candidate items Annoy inspects per query; ``-1`` is Annoy's default,
      ``n_trees * k * oversample``. The run-time knob of the recall-latency trade-off;
    * ``oversample`` (1): ask Annoy for ``k * oversample`` candidates and keep the best ``k`` after exact
      re-scoring (1 keeps Annoy's own choice; with ``search_k=-1`` a larger value also inspects more);
    * ``seed`` (42) and ``n_jobs`` (1): one thread builds the same trees from the same seed every time.

    ``search_k`` and ``oversample`` can be changed per call: ``search(queries, k, search_k=..., oversample=...)``.
    After ``load`` the Annoy file and the item vectors (kept for re-scoring, ``vectors.npy``) are
    memory-mapped: the operating system pages them in on demand, and processes serving the same files share
    one copy. The item vectors are stored twice (in Annoy's file and for re-scoring), so the index is about
    twice the size of the vectors, plus the trees.

    The reduction keeps the inner-product order exactly, but when a few items have far larger norms than the
    rest, every other item's extra coordinate is close to ``M`` and they all point almost the same way, which
    the trees separate poorly: on 2,000 clustered vectors (d = 16, 10 trees, Annoy's default ``search_k``)
    recall@10 is 0.94 when the largest norm is 6 times the median, 0.10 when it is 39 times (Annoy's broken
    ``dot``: 0.46 and 0.26), and 0.96 again with ``search_k=4000``. Raise ``search_k`` for such catalogues.
    """

    kind = "annoy"
    _mmap_vectors = True

    def __init__(self) -> None:
        super().__init__()
        self._annoy = None
        self._metric = "angular"
        self._max_norm: float | None = None

    def build(
        self,
        vectors,
        ids=None,
        *,
        metric: str = "auto",
        normalized: bool | None = None,
        n_trees: int = 50,
        search_k: int = -1,
        oversample: int = 1,
        seed: int = DEFAULT_SEED,
        n_jobs: int = 1,
        model_fingerprint: str | None = None,
    ) -> AnnoyIndex:
        """Index ``vectors`` ``[n, d]`` under ``ids`` (default ``0..n-1``); see the class for the parameters."""
        import annoy

        if metric not in ("auto", "dot"):
            raise ValueError(
                f"metric must be 'auto' (inner product: angular, or the reduction when norms differ) or 'dot' "
                f"(Annoy's own, broken in 1.17.3), got {metric!r}"
            )
        if normalized not in (None, True, False):
            raise ValueError(f"normalized must be None (detect), True or False, got {normalized!r}")
        for name, value, low in (("n_trees", n_trees, 1), ("oversample", oversample, 1), ("seed", seed, 0)):
            if not _is_int(value) or value < low:
                raise ValueError(f"{name} must be an int >= {low}, got {value!r}")
        _check_search_k(search_k)
        if not _is_int(n_jobs) or not (n_jobs == -1 or n_jobs >= 1):
            raise ValueError(f"n_jobs must be -1 (all cores) or an int >= 1 (1: a deterministic build), got {n_jobs!r}")
        x = self._set_items(vectors, ids, model_fingerprint)
        norms = np.linalg.norm(x.astype(np.float64), axis=1)
        if metric == "dot":
            self._metric, self._max_norm = "dot", None
        else:
            one_length = _one_length(norms) if normalized is None else normalized
            self._metric, self._max_norm = "angular", (None if one_length else float(norms.max()))
        items = x if self._max_norm is None else augment_items(x, self._max_norm)
        index = annoy.AnnoyIndex(items.shape[1], self._metric)
        index.set_seed(int(seed))
        for i, row in enumerate(items):
            index.add_item(i, row.tolist())
        index.build(int(n_trees), n_jobs=int(n_jobs))
        self._annoy = index
        self._parameters = {"n_trees": int(n_trees), "search_k": int(search_k), "oversample": int(oversample),
                            "seed": int(seed), "n_jobs": int(n_jobs), "normalized": normalized}
        return self

    def search(self, queries, k: int, *, search_k: int | None = None,
               oversample: int | None = None) -> tuple[np.ndarray, np.ndarray]:
        """As :meth:`RetrievalIndex.search`; ``search_k`` and ``oversample`` override the build's settings."""
        if search_k is not None:
            _check_search_k(search_k)
        if oversample is not None and (not _is_int(oversample) or oversample < 1):
            raise ValueError(f"oversample must be an int >= 1, got {oversample!r}")
        return self._run_search(queries, k, search_k=search_k, oversample=oversample)

    def _strategy(self) -> dict[str, Any]:
        return {"metric": self._metric, "reduction": self._max_norm is not None, "max_norm": self._max_norm}

    def _search(self, queries: np.ndarray, k: int, search_k: int | None = None, oversample: int | None = None):
        search_k = self._parameters["search_k"] if search_k is None else search_k
        oversample = self._parameters["oversample"] if oversample is None else oversample
        wanted = min(k * oversample, self.n_items)
        annoy_queries = augment_queries(queries) if self._max_norm is not None else queries
        candidates = np.full((len(queries), wanted), -1, dtype=np.int64)
        for row, q in enumerate(annoy_queries):
            found = self._annoy.get_nns_by_vector(q.tolist(), wanted, search_k=int(search_k))
            candidates[row, : len(found)] = found
        short = (candidates[:, k - 1] < 0).sum()
        if short:
            raise ValueError(
                f"Annoy returned fewer than k={k} candidates for {short} of {len(queries)} queries (search_k="
                f"{search_k}): inspect more, with search_k=-1 (n_trees * k * oversample) or a larger search_k"
            )
        return rescore(queries, candidates, self._vectors, k)

    def _files(self) -> dict[str, Any]:
        return {ANNOY_FILE: self._save_annoy, **super()._files()}

    def _save_annoy(self, path: pathlib.Path) -> None:
        # Annoy writes the file and then memory-maps it in place of the index it built in memory
        if not self._annoy.save(str(path)):
            raise OSError(f"Annoy could not write {path}")

    @classmethod
    def _file_names(cls, meta: Mapping[str, Any]) -> tuple[str, ...]:
        return (ANNOY_FILE, VECTORS_FILE)

    def _restore(self, folder: pathlib.Path, meta: Mapping[str, Any]) -> None:
        import annoy

        self._metric, self._max_norm = meta["metric"], meta["max_norm"]
        if self._metric not in ("angular", "dot") or (meta["reduction"] != (self._max_norm is not None)):
            raise IndexFileError(
                f"{folder / METADATA_FILE} names metric {self._metric!r} and reduction {meta['reduction']!r}, "
                f"which AnnoyIndex does not write: it is corrupted. {_REBUILD}"
            )
        path = folder / ANNOY_FILE
        index = annoy.AnnoyIndex(meta["dimension"] + (self._max_norm is not None), self._metric)
        try:
            index.load(str(path))  # memory-mapped, not read
        except OSError as err:
            raise IndexFileError(f"Annoy cannot load {path} ({err}): it is truncated or corrupted. {_REBUILD}") from err
        if index.get_n_items() != meta["n_items"] or index.get_n_trees() != meta["parameters"]["n_trees"]:
            raise IndexFileError(
                f"{path} holds {index.get_n_items()} items in {index.get_n_trees()} trees, but {METADATA_FILE} says "
                f"{meta['n_items']} items in {meta['parameters']['n_trees']} trees: the files come from different "
                f"saves or are corrupted. {_REBUILD}"
            )
        self._annoy = index


# ---------------------------------------------------------------------------- the reduction and re-scoring


def augment_items(vectors: np.ndarray, max_norm: float) -> np.ndarray:
    """Bachrach et al. (RecSys 2014): ``x -> [x, sqrt(M^2 - |x|^2)]``, ``[n, d] -> [n, d + 1]``; every item
    then has length ``M``, so the angle to ``[q, 0]`` orders items by ``q . x``."""
    x = vectors.astype(np.float64)
    extra = np.sqrt(np.maximum(max_norm**2 - (x * x).sum(1), 0.0))
    return np.hstack([x, extra[:, None]]).astype(np.float32)


def augment_queries(queries: np.ndarray) -> np.ndarray:
    """``q -> [q, 0]``, ``[m, d] -> [m, d + 1]``: the query side of the reduction."""
    return np.hstack([queries, np.zeros((len(queries), 1), dtype=queries.dtype)])


def rescore(queries: np.ndarray, candidates: np.ndarray, vectors: np.ndarray, k: int) -> tuple[np.ndarray, np.ndarray]:
    """The best ``k`` of each query's candidates by exact inner product, ties by the lower position.

    ``queries [m, d]``, ``candidates [m, c]`` (item positions, ``-1`` for none), ``vectors [n, d]`` ->
    ``(positions [m, k], scores [m, k] float32)``."""
    valid = candidates >= 0
    items = np.asarray(vectors[np.where(valid, candidates, 0).ravel()]).reshape(*candidates.shape, -1)
    scores = np.einsum("mcd,md->mc", items, queries).astype(np.float32)
    scores[~valid] = -np.inf
    order = np.lexsort((np.where(valid, candidates, np.iinfo(np.int64).max), -scores), axis=-1)[:, :k]
    return np.take_along_axis(candidates, order, 1), np.take_along_axis(scores, order, 1)


# ---------------------------------------------------------------------------- loading


_REBUILD = "Rebuild the index from the item vectors and save it again"


def load_index(directory: str | os.PathLike, expected_fingerprint: str | None = None) -> RetrievalIndex:
    """Load a saved index of either kind (the kind is in its ``index.json``); see :meth:`RetrievalIndex.load`."""
    folder, meta = _read_metadata(directory)
    kinds = {cls.kind: cls for cls in (ExactIndex, AnnoyIndex)}
    if meta["kind"] not in kinds:
        raise IndexFileError(
            f"{folder} holds an index of unknown kind {meta['kind']!r} (known: {sorted(kinds)}). {_REBUILD}"
        )
    return kinds[meta["kind"]]._from_metadata(folder, meta, expected_fingerprint)


def _read_metadata(directory: str | os.PathLike) -> tuple[pathlib.Path, dict[str, Any]]:
    folder = pathlib.Path(directory)
    if not folder.exists():
        raise FileNotFoundError(f"no saved index at {folder}: the directory does not exist. Pass the directory that "
                                f"index.save(directory) wrote, or build an index and save it there")
    if not folder.is_dir():
        raise NotADirectoryError(
            f"{folder} is a file; load takes the directory that index.save wrote (holding {METADATA_FILE})"
        )
    path = folder / METADATA_FILE
    if not path.is_file():
        raise FileNotFoundError(
            f"{path} is missing: {folder} holds no saved index, or the save is incomplete. {_REBUILD}"
        )
    try:
        meta = json.loads(path.read_text(encoding="utf-8"))
    except (json.JSONDecodeError, UnicodeDecodeError) as err:
        raise IndexFileError(f"{path} is not valid JSON ({err}): it is truncated or corrupted. {_REBUILD}") from err
    if not isinstance(meta, dict) or meta.get("format") != FORMAT:
        raise IndexFileError(
            f"{path} is not the metadata of an index saved by tt_helpers.index (no format {FORMAT!r}): "
            f"pass the directory that index.save wrote"
        )
    if meta.get("format_version") != FORMAT_VERSION:
        from . import __version__

        raise IndexFileError(
            f"{path} has format version {meta.get('format_version')!r} (written by tt_helpers "
            f"{meta.get('tt_helpers_version', 'unknown')}), but this tt_helpers ({__version__}) reads format version "
            f"{FORMAT_VERSION}: load it with the tt_helpers that wrote it, or rebuild the index and save it "
            f"with this one"
        )
    missing = [key for key in ("kind", "dimension", "n_items", "metric", "reduction", "max_norm", "parameters",
                               "model_fingerprint", "id_kind", "ids", "files") if key not in meta]
    if missing:
        raise IndexFileError(f"{path} is incomplete (no {', '.join(missing)}): it is corrupted. {_REBUILD}")
    return folder, meta


def _check_fingerprint(folder: pathlib.Path, meta: Mapping[str, Any], expected: str | None) -> None:
    if expected is None or meta["model_fingerprint"] == expected:
        return
    if meta["model_fingerprint"] is None:
        raise ModelMismatchError(
            f"the index at {folder} was built without a model fingerprint, so it cannot be checked against model "
            f"{expected}: rebuild it with build(..., model_fingerprint=fingerprint(item_tower))"
        )
    raise ModelMismatchError(
        f"this index was built from another model's vectors (fingerprint {meta['model_fingerprint']}, expected "
        f"{expected}): rebuild it from this model's item vectors, or load the index built for this model"
    )


def _check_files(folder: pathlib.Path, meta: Mapping[str, Any], names: tuple[str, ...]) -> None:
    for name in names:
        path = folder / name
        if not path.is_file():
            raise FileNotFoundError(f"{path} is missing: the save is incomplete. {_REBUILD}")
        expected = meta["files"].get(name) if isinstance(meta["files"], dict) else None
        if path.stat().st_size != expected:
            raise IndexFileError(
                f"{path} has {path.stat().st_size} bytes but was saved with {expected}: it is truncated or "
                f"corrupted, or comes from another save. {_REBUILD}"
            )


def _load_vectors(path: pathlib.Path, meta: Mapping[str, Any], mmap: bool) -> np.ndarray:
    try:
        vectors = np.load(path, mmap_mode="r" if mmap else None, allow_pickle=False)
    except (ValueError, OSError, EOFError) as err:
        raise IndexFileError(
            f"{path} cannot be read as a .npy array ({err}): it is truncated or corrupted. {_REBUILD}"
        ) from err
    if vectors.shape != (meta["n_items"], meta["dimension"]) or vectors.dtype != np.float32:
        raise IndexFileError(
            f"{path} holds a {vectors.dtype} array of shape {vectors.shape}, but {METADATA_FILE} says float32 "
            f"({meta['n_items']}, {meta['dimension']}): the files come from different saves. {_REBUILD}"
        )
    return vectors


def _save_npy(path: pathlib.Path, vectors: np.ndarray) -> None:
    with open(path, "wb") as f:  # np.save(path) would append ".npy" to the temporary name
        np.save(f, np.ascontiguousarray(vectors, dtype=np.float32), allow_pickle=False)


def _id_array(ids: list, kind: str, n: int) -> np.ndarray:
    if kind not in (INT_IDS, STR_IDS) or len(ids) != n:
        raise IndexFileError(f"the saved ids ({len(ids)} of kind {kind!r}) do not match the {n} items: the metadata is "
                             f"corrupted. {_REBUILD}")
    return np.array(ids, dtype=np.int64) if kind == INT_IDS else np.array([str(i) for i in ids], dtype=object)


# ---------------------------------------------------------------------------- input checks


def _as_matrix(values, name: str, allow_vector: bool = False) -> np.ndarray:
    """``values`` (array, tensor, nested lists) as a C-contiguous float32 array ``[rows, d]`` (or ``[d]``),
    every entry finite."""
    if isinstance(values, torch.Tensor):
        values = values.detach().cpu().float().numpy()
    try:
        x = np.ascontiguousarray(np.asarray(values, dtype=np.float32))
    except (TypeError, ValueError) as err:
        raise ValueError(
            f"{name} must be a float array [n, d] (numpy or torch), got {type(values).__name__}: {err}"
        ) from err
    if x.ndim != 2 and not (allow_vector and x.ndim == 1):
        shapes = "[m, d] (or one query [d])" if allow_vector else "[n, d]"
        raise ValueError(f"{name} must have shape {shapes}, got shape {x.shape}")
    if x.shape[-1] == 0:
        raise ValueError(f"{name} have dimension 0: each vector needs at least one coordinate")
    bad = ~np.isfinite(x)
    if bad.any():
        rows = np.unique(np.nonzero(bad)[0])[:_MAX_SHOWN].tolist() if x.ndim == 2 else []
        where = f" (rows {rows}{', ...' if bad.any(1).sum() > len(rows) else ''})" if x.ndim == 2 else ""
        raise ValueError(
            f"{name} hold {int(bad.sum())} NaN or infinite value(s){where}: a NaN score has no rank. The model that "
            f"produced them has probably diverged; fix or drop those vectors before indexing or searching"
        )
    return x


def _check_ids(ids, n: int) -> np.ndarray:
    if ids is None:
        return np.arange(n, dtype=np.int64)
    canonical = _canonical(ids, "item", "ids passed to build")
    if len(canonical) != n:
        raise ValueError(
            f"ids has {len(canonical)} entries but vectors has {n} rows: pass one id per vector, in the same order"
        )
    unique, counts = np.unique(canonical, return_counts=True)
    if len(unique) != n:
        repeated = unique[counts > 1][:_MAX_SHOWN].tolist()
        raise ValueError(
            f"ids must be unique; {repeated} occur more than once ({n - len(unique)} repeats): give each vector its "
            f"own id (one row per item)"
        )
    return canonical


def _check_k(k, n: int) -> int:
    if not _is_int(k) or k < 1:
        raise ValueError(f"k must be an int >= 1, got {k!r}")
    if k > n:
        raise ValueError(f"k={k} is larger than the catalogue ({n} items): ask for at most {n}")
    return int(k)


def _check_search_k(search_k) -> None:
    if not _is_int(search_k) or not (search_k == -1 or search_k >= 1):
        raise ValueError(
            f"search_k must be -1 (Annoy's default, n_trees * k * oversample) or an int >= 1, got {search_k!r}"
        )


def _is_int(value) -> bool:
    return isinstance(value, (int, np.integer)) and not isinstance(value, (bool, np.bool_))


def _one_length(norms: np.ndarray) -> bool:
    """True when every norm is the same up to ``NORM_TOLERANCE`` (relative): unit vectors, or any one length."""
    top = float(norms.max())
    return top == 0.0 or (top - float(norms.min())) <= NORM_TOLERANCE * top


__all__ = [
    "AnnoyIndex",
    "ExactIndex",
    "IndexFileError",
    "ModelMismatchError",
    "RetrievalIndex",
    "augment_items",
    "augment_queries",
    "fingerprint",
    "load_index",
    "recall_against_exact",
    "rescore",
]
