"""The serving path: a saved recommender's user tower in front of a saved item index, in a fresh process.

Training and serving meet only through two directories. The training job writes the recommender
(:meth:`~tt_helpers.FittedTwoTower.save`) and an index of its item vectors (:mod:`tt_helpers.index`), built
with the recommender's fingerprint; a serving process loads both and answers requests::

    index = tt.AnnoyIndex().build(rec.item_vectors(), ids=rec.catalog.item_ids,
                                  model_fingerprint=rec.fingerprint())
    rec.save("recommender"); index.save("item_index")
    # ... in the serving process:
    retriever = tt.Retriever.load("recommender", "item_index")   # refuses an index of another model
    retriever.recommend("user-42", k=10)                          # the frame FittedTwoTower.recommend returns

A request costs one user-tower pass (the user's features and history), one index search and a filter:

* **Seen items, by over-fetch then filter.** An index knows nothing about users, so it cannot leave out the
  items a user already interacted with. The retriever asks it for ``k + extra`` items and drops the seen
  ones. ``over_fetch="seen"`` (the default) takes ``extra`` = the user's number of seen items: then at least
  ``k`` unseen items come back whenever the catalogue has them, and with exact search the lists are those of
  :meth:`~tt_helpers.FittedTwoTower.recommend`. A fixed ``over_fetch=m`` fetches ``k + m`` for everyone:
  cheaper for users with long histories, but a user with more than ``m`` seen items among the best ``k + m``
  gets fewer than ``k`` (chapter 5 measures what that costs in Recall@K).
* **Users without interactions** (``user_features`` only) get the user tower of their features with an empty
  history, and **unknown users** the most popular items, exactly as ``FittedTwoTower.recommend`` serves them
  (its ``source`` column says which).

:func:`measure_latency` runs this path in a fresh Python process, as a serving job would start, and returns
its startup time and the per-request latency of the whole path (p50, p99).
"""

from __future__ import annotations

import dataclasses
import json
import os
import pathlib
import subprocess
import sys
import time
from typing import Any

import numpy as np
import pandas as pd

from .index import ModelMismatchError, RetrievalIndex, load_index
from .own_data import FittedTwoTower, _requested_ids, load_recommender

OVER_FETCH_SEEN = "seen"  # fetch k + the user's number of seen items


class Retriever:
    """``recommend(user_ids, k)`` through a retrieval index: the user tower, an index search, the seen filter.

    ``recommender``: a :class:`~tt_helpers.FittedTwoTower` (fitted, or read by :func:`~tt_helpers.load_recommender`);
    ``index``: an :class:`~tt_helpers.ExactIndex` or :class:`~tt_helpers.AnnoyIndex` of its item vectors, whose
    ``model_fingerprint`` must be ``recommender.fingerprint()`` (else :class:`~tt_helpers.index.ModelMismatchError`)
    and whose ids are catalogue item ids. ``over_fetch``: ``"seen"`` or an int ``>= 0``, see the module.
    """

    def __init__(self, recommender: FittedTwoTower, index: RetrievalIndex, over_fetch: int | str = OVER_FETCH_SEEN):
        self.recommender, self.index = recommender, index
        self.over_fetch = _check_over_fetch(over_fetch)
        expected = recommender.fingerprint()
        if index.model_fingerprint != expected:
            found = "no fingerprint" if index.model_fingerprint is None else f"fingerprint {index.model_fingerprint}"
            raise ModelMismatchError(
                f"the index was built from another model's item vectors ({found}; this recommender's is {expected}): "
                f"rebuild it with AnnoyIndex().build(rec.item_vectors(), ids=rec.catalog.item_ids, "
                f"model_fingerprint=rec.fingerprint()), or load the index built for this recommender"
            )
        dimension = recommender.tower.embedding_dim
        if index.dimension != dimension:
            raise ValueError(f"the index holds vectors of dimension {index.dimension}, the recommender's towers output "
                             f"{dimension}: build the index from rec.item_vectors()")
        positions = _item_positions(recommender, index.ids)
        order = np.argsort(index.ids, kind="stable")  # the index returns ids: find their catalogue positions
        self._sorted_ids, self._sorted_positions = index.ids[order], positions[order]
        self._scale = recommender.score_scale

    @classmethod
    def load(cls, recommender_dir: str | os.PathLike, index_dir: str | os.PathLike,
             over_fetch: int | str = OVER_FETCH_SEEN) -> Retriever:
        """Load a saved recommender and a saved index (Annoy's file memory-mapped), checking that the index was
        built from this recommender's item vectors: :class:`~tt_helpers.index.ModelMismatchError` if not."""
        recommender = load_recommender(recommender_dir)
        index = load_index(index_dir, expected_fingerprint=recommender.fingerprint())
        return cls(recommender, index, over_fetch)

    def __repr__(self) -> str:
        return f"Retriever({self.recommender.catalog.n_users:,} users, {self.index!r}, over_fetch={self.over_fetch!r})"

    # ----------------------------------------------------------------------- requests

    def recommend(self, user_ids: Any, k: int = 100, exclude_seen: bool = True, unknown_users: str = "fallback",
                  over_fetch: int | str | None = None) -> pd.DataFrame:
        """:meth:`FittedTwoTower.recommend <tt_helpers.FittedTwoTower.recommend>` through the index: the same
        columns (``user_id, item_id, score, rank, source``), sources and errors. ``score`` is the model's score
        (the inner product times ``score_scale``). A user may get fewer than ``k`` rows: when the catalogue has
        fewer unseen items, or when ``over_fetch`` (default: the retriever's) fetched too few."""
        fetch = self.over_fetch if over_fetch is None else _check_over_fetch(over_fetch)

        def top_k(users: np.ndarray, k: int, exclude_seen: bool) -> list[tuple[np.ndarray, np.ndarray]]:
            return self._top_k(users, k, exclude_seen, fetch)

        return self.recommender._recommend_with(top_k, user_ids, k, exclude_seen, unknown_users)

    def item_lists(self, user_ids: Any, k: int, exclude_seen: bool = True,
                   over_fetch: int | str | None = None) -> np.ndarray:
        """The recommended catalogue item indices ``[m, k]`` (int64, best first, ``-1`` for an empty slot) of the
        distinct known ``user_ids``, in the order given: what :func:`tt_helpers.evaluation.evaluate_top_k`
        takes. Unknown ids raise :class:`~tt_helpers.UnknownIdError`."""
        fetch = self.over_fetch if over_fetch is None else _check_over_fetch(over_fetch)
        positions = self.recommender.catalog.user_index(_requested_ids(user_ids))
        k = _check_k(k, self.index.n_items)
        out = np.full((len(positions), k), -1, dtype=np.int64)
        for row, (items, _) in enumerate(self._top_k(positions, k, exclude_seen, fetch)):
            out[row, : len(items)] = items
        return out

    def _top_k(self, users: np.ndarray, k: int, exclude_seen: bool,
               over_fetch: int | str) -> list[tuple[np.ndarray, np.ndarray]]:
        """For each user index: its best ``k`` unseen item indices and scores, from ``k + extra`` candidates.
        Users are searched in groups of equal fetch size, so a user's list never depends on who else is asked."""
        seen = self.recommender.seen
        n = self.index.n_items
        k = min(k, n)
        if not exclude_seen:
            wanted = np.full(len(users), k)
        elif over_fetch == OVER_FETCH_SEEN:
            wanted = np.array([k + len(seen[u]) for u in users], dtype=np.int64)
        else:
            wanted = np.full(len(users), k + int(over_fetch))
        wanted = np.minimum(wanted, n)
        vectors = self.recommender._user_vectors_at(users)
        out: list[tuple[np.ndarray, np.ndarray]] = [None] * len(users)  # type: ignore[list-item]
        for size in np.unique(wanted):
            rows = np.flatnonzero(wanted == size)
            ids, scores = self.index.search(vectors[rows], int(size))
            positions = self._sorted_positions[np.searchsorted(self._sorted_ids, ids)]
            for row, items, item_scores in zip(rows, positions, scores):
                if exclude_seen and len(seen[users[row]]):
                    keep = ~np.isin(items, seen[users[row]])
                    items, item_scores = items[keep], item_scores[keep]
                out[row] = items[:k], item_scores[:k].astype(np.float64) * self._scale
        return out


def _item_positions(recommender: FittedTwoTower, ids: np.ndarray) -> np.ndarray:
    """Catalogue item index of each index id; an id the recommender does not know is an error."""
    from .catalog import IdTypeError, UnknownIdError

    try:
        return recommender.catalog.item_index(ids)
    except (UnknownIdError, IdTypeError) as err:
        raise ValueError(
            f"the index holds item ids the recommender does not know ({err}): build the index with "
            f"ids=rec.catalog.item_ids"
        ) from err


def _check_over_fetch(value: int | str) -> int | str:
    if value == OVER_FETCH_SEEN:
        return value
    if isinstance(value, bool) or not isinstance(value, (int, np.integer)) or value < 0:
        raise ValueError(f"over_fetch must be 'seen' (k + the user's seen items) or an int >= 0, got {value!r}")
    return int(value)


def _check_k(k: Any, n: int) -> int:
    if isinstance(k, bool) or not isinstance(k, (int, np.integer)) or k < 1:
        raise ValueError(f"k must be a positive integer, got {k!r}")
    return min(int(k), n)


# =========================================================================== a fresh process


@dataclasses.dataclass(frozen=True)
class ServingLatency:
    """What :func:`measure_latency` measured in the serving process: ``seconds`` per request (``[n]``, the
    whole path of :meth:`Retriever.recommend` for one user), ``startup_seconds`` (importing tt_helpers and
    loading the recommender and the index) and ``lists``: the item ids served to the first requests."""

    seconds: np.ndarray
    startup_seconds: float
    lists: list[list]

    @property
    def p50_ms(self) -> float:
        return float(np.percentile(self.seconds, 50) * 1e3)

    @property
    def p99_ms(self) -> float:
        return float(np.percentile(self.seconds, 99) * 1e3)

    @property
    def requests_per_second(self) -> float:
        """Sequential requests per second (one request at a time): ``1 / mean latency``."""
        return float(1.0 / np.mean(self.seconds))

    def summary(self) -> pd.Series:
        """The numbers to print (timings: print them only in cells whose output is not compared)."""
        return pd.Series({
            "requests": len(self.seconds),
            "startup (s)": round(self.startup_seconds, 2),
            "p50 (ms)": round(self.p50_ms, 3),
            "p99 (ms)": round(self.p99_ms, 3),
            "requests/s (one at a time)": round(self.requests_per_second, 1),
        }, dtype=object)


def measure_latency(recommender_dir: str | os.PathLike, index_dir: str | os.PathLike, user_ids: Any, k: int = 10,
                    *, warmup: int = 10, threads: int = 1, over_fetch: int | str = OVER_FETCH_SEEN,
                    keep_lists: int = 5, timeout: float = 120.0) -> ServingLatency:
    """Serve ``user_ids`` one request at a time in a fresh Python process and time each request.

    The process imports tt_helpers, loads the two directories (:meth:`Retriever.load`, with ``threads`` torch
    threads) and answers ``warmup`` untimed requests (the first users, again), then one timed
    ``recommend(user_id, k)`` per entry of ``user_ids`` (repeats allowed). It runs this interpreter
    (``sys.executable``) and this copy of tt_helpers, and is killed after ``timeout`` seconds."""
    ids = [u.item() if isinstance(u, np.generic) else u for u in np.asarray(user_ids, dtype=object).ravel()]
    if not ids:
        raise ValueError("user_ids is empty: pass the ids of the users to serve, one request each")
    _check_over_fetch(over_fetch)
    request = {"recommender": str(pathlib.Path(recommender_dir).resolve()),
               "index": str(pathlib.Path(index_dir).resolve()), "user_ids": ids, "k": int(k),
               "warmup": int(warmup), "threads": int(threads), "over_fetch": over_fetch, "keep_lists": int(keep_lists)}
    package_root = str(pathlib.Path(__file__).resolve().parents[1])
    env = dict(os.environ)
    env["PYTHONPATH"] = os.pathsep.join([package_root, *filter(None, [env.get("PYTHONPATH")])])
    code = "import time; t0 = time.perf_counter(); from tt_helpers.serving import _serve; _serve(t0)"
    try:
        done = subprocess.run([sys.executable, "-c", code], input=json.dumps(request), capture_output=True, text=True,
                              timeout=timeout, env=env, check=False)
    except subprocess.TimeoutExpired as err:
        raise TimeoutError(f"the serving process did not finish within {timeout:g} s: serve fewer users or raise "
                           f"timeout") from err
    if done.returncode != 0:
        tail = "\n".join(done.stderr.strip().splitlines()[-5:])
        raise RuntimeError(f"the serving process failed (exit status {done.returncode}):\n{tail}")
    result = json.loads(done.stdout.strip().splitlines()[-1])
    return ServingLatency(np.array(result["seconds"]), float(result["startup_seconds"]), result["lists"])


def _serve(started: float) -> None:
    """The serving process of :func:`measure_latency`: reads the request from stdin, prints JSON on stdout."""
    import torch

    request = json.loads(sys.stdin.read())
    torch.set_num_threads(request["threads"])
    retriever = Retriever.load(request["recommender"], request["index"], request["over_fetch"])
    startup = time.perf_counter() - started
    ids, k = request["user_ids"], request["k"]
    for user in (ids * (1 + request["warmup"] // len(ids)))[: request["warmup"]]:
        retriever.recommend(user, k)
    seconds, lists = [], []
    for user in ids:
        start = time.perf_counter()
        frame = retriever.recommend(user, k)
        seconds.append(time.perf_counter() - start)
        if len(lists) < request["keep_lists"]:
            lists.append([v.item() if isinstance(v, np.generic) else v for v in frame["item_id"].tolist()])
    print(json.dumps({"seconds": seconds, "startup_seconds": startup, "lists": lists}))


__all__ = ["OVER_FETCH_SEEN", "Retriever", "ServingLatency", "measure_latency"]
