"""Evaluate any recommender the same way: full-catalogue ranking, training items excluded.

A *recommender* is anything with ``score(user_idx) -> Tensor[len(user_idx), n_items]``; baselines and
two-tower models alike. Higher scores rank first.
"""

from __future__ import annotations

import zlib
from collections.abc import Callable, Iterable, Sequence
from typing import Protocol

import numpy as np
import pandas as pd
import torch

from . import metrics
from .splits import Interactions, Split

DEFAULT_KS = (10, 50, 100)


class Recommender(Protocol):
    def fit(self, train: Interactions) -> Recommender: ...

    def score(self, user_idx: torch.Tensor) -> torch.Tensor: ...


def _bool_rows(lists: Sequence[np.ndarray], rows: np.ndarray, n_items: int) -> torch.Tensor:
    mask = torch.zeros(len(rows), n_items, dtype=torch.bool)
    for i, u in enumerate(rows):
        mask[i, torch.as_tensor(lists[u])] = True
    return mask


def evaluate(
    model: Recommender,
    split: Split,
    ks: Iterable[int] = DEFAULT_KS,
    relevant_items: np.ndarray | None = None,
    batch_size: int = 1024,
    per_user: bool = False,
) -> dict[str, float] | pd.DataFrame:
    """Recall@K, HitRate@K, NDCG@K, Coverage@K for each ``k`` in ``ks``, and MRR, on ``split.test``.

    Relevant items are the user's test positives (rating >= the split's threshold) that the user did not
    already rate in training; users without one are skipped. All items the user rated in training are
    excluded from the ranking. ``relevant_items`` restricts relevance to a subset of the catalogue (e.g.
    cold-start items) while still ranking the full catalogue. With ``per_user=True`` returns one row per
    evaluated user instead of the means (what :func:`tt_helpers.comparison.compare` pairs).
    """
    summary, per_user_frame = evaluate_detailed(model, split, ks, relevant_items, batch_size)
    return per_user_frame if per_user else summary


def evaluate_detailed(
    model: Recommender,
    split: Split,
    ks: Iterable[int] = DEFAULT_KS,
    relevant_items: np.ndarray | None = None,
    batch_size: int = 1024,
) -> tuple[dict[str, float], pd.DataFrame]:
    """Both results of :func:`evaluate` from one ranking: ``(means with coverage, per-user frame)``."""
    ks = sorted(set(int(k) for k in ks))
    rows: dict[str, list[torch.Tensor]] = {}
    users, tops = [], []
    for batch, key, relevant in _scored_batches(model, split, batch_size, relevant_items):
        # only the top max(ks) are ranked (exactly as the full sort would); MRR counts the first hit's rank
        ranked = metrics.top_k_ranking(key, max(ks))
        hits = metrics.hit_matrix(ranked, relevant)
        n_rel = relevant.sum(1)
        for k in ks:
            rows.setdefault(f"Recall@{k}", []).append(metrics.recall_at_k(hits, n_rel, k))
            rows.setdefault(f"HitRate@{k}", []).append(metrics.hit_rate_at_k(hits, k))
            rows.setdefault(f"NDCG@{k}", []).append(metrics.ndcg_at_k(hits, n_rel, k))
        rows.setdefault("MRR", []).append(1.0 / metrics.first_relevant_rank(key, relevant, hits).float())
        users.append(batch)
        tops.append(ranked)
    per_user_frame = pd.DataFrame({name: torch.cat(v).numpy() for name, v in rows.items()}, index=np.concatenate(users))
    per_user_frame.index.name = "user_idx"
    result = {name: float(col.mean()) for name, col in per_user_frame.items()}
    top = torch.cat(tops)
    for k in ks:
        result[f"Coverage@{k}"] = metrics.catalogue_coverage(top[:, :k], split.catalog.n_items)
    return result, per_user_frame


def evaluated_users(split: Split, relevant_items: np.ndarray | None = None) -> np.ndarray:
    """The user indices :func:`evaluate` evaluates, ascending: those with a relevant test item (a test positive
    not rated in training, within ``relevant_items`` if given). Query a retriever for them and pass its lists
    to :func:`evaluate_top_k`."""
    return _relevance(split, relevant_items)[0]


def evaluate_top_k(
    top_k_items: np.ndarray | torch.Tensor,
    users: np.ndarray | torch.Tensor,
    split: Split,
    ks: Iterable[int] = DEFAULT_KS,
    relevant_items: np.ndarray | None = None,
    per_user: bool = False,
    batch_size: int = 1024,
) -> dict[str, float] | pd.DataFrame:
    """:func:`evaluate` from a retriever's ranked lists instead of a model's scores of the whole catalogue:
    e.g. the ids an index returns (:mod:`tt_helpers.index`), to report Recall@K through an approximate index.

    ``top_k_items[i]`` (``[n, L]``, ints) ranks catalogue item indices best first for user ``users[i]``
    (``[n]``); ``-1`` marks an empty slot. The users and the relevance are :func:`evaluate`'s: the lists must
    cover every user of :func:`evaluated_users` (rows of other users are ignored). Training items are dropped
    from each list here, as ``evaluate`` excludes them, and the items after them move up: so ask the
    retriever for ``max(ks)`` items plus as many as a user has in training, or the lists run short and the
    missing slots count as misses (the cost of too little over-fetch). Given a model's exact top lists this
    equals ``evaluate(model, ...)``. MRR is known only within the lists: ``MRR@L`` is ``1 / rank`` of the first
    relevant item in the list, 0 without one. Needs ``L >= max(ks)``.
    """
    ks = sorted({int(k) for k in ks})
    lists = top_k_items.detach().cpu().numpy() if isinstance(top_k_items, torch.Tensor) else np.asarray(top_k_items)
    users = users.detach().cpu().numpy() if isinstance(users, torch.Tensor) else np.asarray(users)
    n_items = split.catalog.n_items
    if lists.ndim != 2 or (lists.size and lists.dtype.kind not in "iu"):
        raise ValueError(
            f"top_k_items must be an int array [users, L] of catalogue item indices, got dtype {lists.dtype} and shape "
            f"{lists.shape}: map external item ids with split.catalog.item_index(ids)"
        )
    if users.ndim != 1 or len(users) != len(lists) or (users.size and users.dtype.kind not in "iu"):
        raise ValueError(
            f"users must be [n] user indices, one per row of top_k_items ({len(lists)} rows), got shape {users.shape}"
        )
    if not ks or ks[0] < 1 or ks[-1] > lists.shape[1]:
        raise ValueError(
            f"ks must be between 1 and the lists' length {lists.shape[1]}, got {ks}: ask the retriever for at least "
            f"max(ks) items, plus the user's training items, which are dropped"
        )
    if ((lists < -1) | (lists >= n_items)).any():
        raise ValueError(
            f"top_k_items must hold item indices 0..{n_items - 1} (or -1 for an empty slot): map external ids "
            f"with split.catalog.item_index(ids)"
        )
    if len(np.unique(users)) != len(users):
        raise ValueError("users must not repeat: give one list per user")
    evaluated, relevant, seen = _relevance(split, relevant_items)
    rows_of = pd.Index(users).get_indexer(evaluated)
    if (rows_of < 0).any():
        absent = evaluated[rows_of < 0]
        raise ValueError(
            f"no list for {len(absent)} evaluated user(s) (e.g. {absent[:10].tolist()}): pass a list for every user of "
            f"evaluation.evaluated_users(split), as evaluate() scores them all"
        )
    lists = torch.as_tensor(lists[rows_of].astype(np.int64))
    ordered = torch.sort(lists, dim=1).values
    if ((ordered[:, 1:] == ordered[:, :-1]) & (ordered[:, 1:] >= 0)).any():
        raise ValueError("a list holds an item twice: each list must rank distinct items")
    rows: dict[str, list[torch.Tensor]] = {}
    tops = []
    width = lists.shape[1]
    for start in range(0, len(evaluated), batch_size):
        batch, block = evaluated[start : start + batch_size], lists[start : start + batch_size]
        valid = block >= 0
        keep = valid & ~torch.gather(_bool_rows(seen, batch, n_items), 1, block.clamp(min=0))
        order = torch.sort((~keep).to(torch.int64), dim=1, stable=True).indices  # kept items first, in list order
        ranked = torch.where(torch.gather(keep, 1, order), torch.gather(block, 1, order), -1)
        relevant_rows = _bool_rows(relevant, batch, n_items)
        hits = torch.gather(relevant_rows, 1, ranked.clamp(min=0)) & (ranked >= 0)
        n_rel = relevant_rows.sum(1)
        for k in ks:
            rows.setdefault(f"Recall@{k}", []).append(metrics.recall_at_k(hits, n_rel, k))
            rows.setdefault(f"HitRate@{k}", []).append(metrics.hit_rate_at_k(hits, k))
            rows.setdefault(f"NDCG@{k}", []).append(metrics.ndcg_at_k(hits, n_rel, k))
        rows.setdefault(f"MRR@{width}", []).append(metrics.reciprocal_rank(hits))
        tops.append(ranked)
    frame = pd.DataFrame(
        {name: torch.cat(v).numpy() for name, v in rows.items()}, index=pd.Index(evaluated, name="user_idx")
    )
    if per_user:
        return frame
    result = {name: float(col.mean()) for name, col in frame.items()}
    top = torch.cat(tops)
    for k in ks:
        shown = top[:, :k]
        result[f"Coverage@{k}"] = metrics.catalogue_coverage(shown[shown >= 0], n_items)
    return result


def top_k_overlap(model: Recommender, reference: Recommender, split: Split, k: int = 100,
                  batch_size: int = 1024) -> float:
    """Mean over evaluated test users of the share of ``model``'s top ``k`` (training items excluded) that is
    also in ``reference``'s top ``k``: e.g. how much of a model's list is the popular baseline's list."""
    total, n_users = 0.0, 0
    seen = split.train.user_items()
    users = evaluate(reference, split, ks=(1,), per_user=True, batch_size=batch_size).index.to_numpy(copy=True)
    with torch.no_grad():
        for start in range(0, len(users), batch_size):
            batch = users[start : start + batch_size]
            exclude = _bool_rows(seen, batch, split.catalog.n_items)
            mine = metrics.exclude_and_rank(model.score(torch.as_tensor(batch)), exclude)[:, :k]
            theirs = metrics.exclude_and_rank(reference.score(torch.as_tensor(batch)), exclude)[:, :k]
            shared = (mine.unsqueeze(2) == theirs.unsqueeze(1)).any(2).float().mean(1)
            total += float(shared.sum())
            n_users += len(batch)
    return total / n_users


def interaction_hit_rate(model: Recommender, split: Split, k: int = 100, exclude_seen: bool = False,
                         batch_size: int = 1024) -> pd.Series:
    """Per test *interaction*: 1.0 if its item is in the user's top ``k`` of the full catalogue, else 0.0.

    The protocol of TensorFlow Recommenders' retrieval tutorials (their ``FactorizedTopK`` metric): every
    test row counts, whatever its rating, including items the user also has in training, and with
    ``exclude_seen=False`` (theirs) training items are *not* removed from the ranking. Its mean is what they
    report as top-k categorical accuracy. Returns a Series indexed by the test rows' user indices (for a
    paired comparison, average it per user). Ties at the k-th score count against the model.
    """
    test = split.test.frame
    if test.empty:
        raise ValueError("the split has no test interactions")
    n_items = split.catalog.n_items
    if not 1 <= k <= n_items:
        raise ValueError(f"k must be between 1 and the catalogue size {n_items}, got {k}")
    seen = split.train.user_items() if exclude_seen else None
    users = np.unique(test["user_idx"].to_numpy())
    hit = np.zeros(len(test), dtype=np.float64)
    row_users, row_items = test["user_idx"].to_numpy(), test["item_idx"].to_numpy()
    order = np.argsort(row_users, kind="stable")
    bounds = np.searchsorted(row_users[order], users)
    ends = np.append(bounds[1:], len(order))
    with torch.no_grad():
        for start in range(0, len(users), batch_size):
            batch = users[start : start + batch_size]
            scores = model.score(torch.as_tensor(batch))
            if seen is not None:
                scores = scores.masked_fill(_bool_rows(seen, batch, n_items), float("-inf"))
            kth = torch.topk(scores, k, dim=1).values[:, -1:]
            above = (scores > kth).sum(1, keepdim=True)  # items strictly better than the k-th score
            for j in range(len(batch)):
                rows = order[bounds[start + j] : ends[start + j]]
                item_scores = scores[j, torch.as_tensor(row_items[rows])]
                # strictly above the k-th score: in the top k; equal to it: only if the tie fits in the k
                ties_fit = (above[j] < k).item() and (scores[j] == kth[j]).sum().item() <= k - above[j].item()
                hit[rows] = ((item_scores > kth[j]) | ((item_scores == kth[j]) & ties_fit)).numpy()
    return pd.Series(hit, index=pd.Index(row_users, name="user_idx"), name=f"HitRate@{k} (per interaction)")


def mean_by_group(per_user: pd.DataFrame, groups: dict[str, np.ndarray],
                  metrics: Sequence[str] | None = None) -> pd.DataFrame:
    """Means of a per-user frame (``evaluate(..., per_user=True)``) over groups of user indices, e.g.
    ``splits.warm_and_cold_users(split)``; one row per group with its number of evaluated users."""
    columns = list(metrics) if metrics is not None else list(per_user.columns)
    rows = {}
    for name, users in groups.items():
        members = per_user.index.intersection(pd.Index(users))
        rows[name] = {"users": len(members), **per_user.loc[members, columns].mean().to_dict()}
    return pd.DataFrame(rows).T.astype({"users": int})


def results_table(results: dict[str, dict[str, float]], columns: Sequence[str] | None = None,
                  digits: int = 4) -> pd.DataFrame:
    """Rows = models, columns = metrics, rounded for printing (the book never prints unrounded floats)."""
    table = pd.DataFrame(results).T
    if columns is not None:
        table = table[list(columns)]
    return table.astype(float).round(digits)


def tune(
    make_model: Callable[[float], Recommender],
    grid: Iterable[float],
    split: Split,
    metric: str = "Recall@50",
    ks: Iterable[int] = DEFAULT_KS,
    score: Callable[[Recommender, Split], float] | None = None,
) -> tuple[float, pd.DataFrame]:
    """Pick a hyper-parameter on ``split.validation()`` (never on test).

    Returns the best value and the validation table. Refit on ``split.train`` with it before testing.
    ``score(model, validation)``, when given, replaces :func:`evaluate` and ``metric``: another protocol's
    measure (chapter 4 tunes EASE for TensorFlow Recommenders' per-interaction hit rate); the table then has
    one column, ``"score"``.
    """
    validation = split.validation()
    results = {}
    for value in grid:
        model = make_model(value).fit(validation.train)
        results[value] = {"score": float(score(model, validation))} if score else evaluate(model, validation, ks)
    table = pd.DataFrame(results).T
    table.index.name = "value"
    best = float(table["score" if score else metric].idxmax())
    return best, table


def _relevance(
    split: Split, relevant_items: np.ndarray | None = None
) -> tuple[np.ndarray, list[np.ndarray], list[np.ndarray]]:
    """``(users, relevant, seen)``: the evaluated users (ascending: those with a relevant item), and per user
    index the relevant test items (test positives not rated in training, within ``relevant_items``) and the
    training items (excluded from every ranking)."""
    found = _Relevance.of(split, relevant_items)
    return found.users, found.relevant, found.seen


def _compute_relevance(
    split: Split, relevant_items: np.ndarray | None = None
) -> tuple[np.ndarray, list[np.ndarray], list[np.ndarray]]:
    n_items = split.catalog.n_items
    seen = split.train.user_items()
    relevant = split.test.user_items(positives_only=True)
    if relevant_items is not None:
        keep = np.zeros(n_items, dtype=bool)
        keep[relevant_items] = True
        relevant = [r[keep[r]] for r in relevant]
    relevant = [np.setdiff1d(r, s, assume_unique=True) for r, s in zip(relevant, seen)]
    users = np.array([u for u, r in enumerate(relevant) if len(r)], dtype=np.int64)
    if len(users) == 0:
        raise ValueError("no user has a relevant test item: nothing to evaluate (check the split and relevant_items)")
    return users, relevant, seen


class _Relevance:
    """:func:`_relevance` of one split, kept on the split: early stopping evaluates the same validation
    split after every epoch, and every fit of a chapter the same test split. With bool masks ``[n_users,
    n_items]`` of the relevant and the training items where they are small (``MASK_LIMIT`` cells), so that a
    batch's rows are one copy. A fingerprint of the split's columns that decide relevance is checked on each
    use: a frame changed in place is recomputed, never served stale."""

    MASK_LIMIT = 50_000_000  # cells per mask (50 MB of bools); beyond, rows are built per batch
    _ATTRIBUTE = "_tt_relevance"

    def __init__(self, split: Split, relevant_items: np.ndarray | None):
        self.n_items = split.catalog.n_items
        self.users, self.relevant, self.seen = _compute_relevance(split, relevant_items)
        small = split.catalog.n_users * self.n_items <= self.MASK_LIMIT
        everyone = np.arange(split.catalog.n_users)
        self._relevant_mask = _bool_rows(self.relevant, everyone, self.n_items) if small else None
        self._seen_mask = _bool_rows(self.seen, everyone, self.n_items) if small else None

    @classmethod
    def of(cls, split: Split, relevant_items: np.ndarray | None = None) -> _Relevance:
        restriction = None if relevant_items is None else np.asarray(relevant_items).tobytes()
        fingerprint = _fingerprint(split, restriction)
        cache = split.__dict__.setdefault(cls._ATTRIBUTE, {})  # Split is frozen: its __dict__ takes the cache
        entry = cache.get(restriction)
        if entry is None or entry[0] != fingerprint:
            entry = cache[restriction] = (fingerprint, cls(split, relevant_items))
        return entry[1]

    def relevant_rows(self, batch: np.ndarray) -> torch.Tensor:
        """Bool ``[len(batch), n_items]``: each user's relevant items."""
        if self._relevant_mask is None:
            return _bool_rows(self.relevant, batch, self.n_items)
        return self._relevant_mask.index_select(0, torch.as_tensor(batch))

    def seen_rows(self, batch: np.ndarray) -> torch.Tensor:
        """Bool ``[len(batch), n_items]``: each user's training items (excluded from the ranking)."""
        if self._seen_mask is None:
            return _bool_rows(self.seen, batch, self.n_items)
        return self._seen_mask.index_select(0, torch.as_tensor(batch))


def _fingerprint(split: Split, restriction: bytes | None) -> tuple:
    """What relevance depends on: both parts' (user, item) pairs, the test ratings and the threshold."""
    parts: list = [split.catalog.n_users, split.catalog.n_items, split.test.positive_threshold, restriction]
    for side in (split.train, split.test):
        frame = side.frame
        parts.append(len(frame))
        columns = ["user_idx", "item_idx"] + (["rating"] if side is split.test and side.has_ratings else [])
        for column in columns:
            parts.append(zlib.crc32(np.ascontiguousarray(frame[column].to_numpy()).tobytes()))
    return tuple(parts)


def _scored_batches(model: Recommender, split: Split, batch_size: int = 1024, relevant_items: np.ndarray | None = None):
    """Yield ``(users, key, relevant)`` per batch of evaluated users: the ranking key of
    :func:`metrics.ranking_key` (training items excluded) and the bool matrix of each user's relevant test
    items. With :func:`_relevance`, the one place that decides who is evaluated, what is relevant and what
    is excluded.
    """
    n_items = split.catalog.n_items
    found = _Relevance.of(split, relevant_items)
    users = found.users
    with torch.no_grad():
        for start in range(0, len(users), batch_size):
            batch = users[start : start + batch_size]
            scores = model.score(torch.as_tensor(batch))
            if scores.shape != (len(batch), n_items):
                raise ValueError(
                    f"model.score returned shape {tuple(scores.shape)}, expected ({len(batch)}, {n_items}): "
                    "one score per catalogue item for each user"
                )
            if torch.isnan(scores).any():
                bad = batch[torch.isnan(scores).any(1).numpy()][:10].tolist()
                raise ValueError(
                    f"model.score returned NaN for user indices {bad}: NaN would rank first and every metric "
                    "would be meaningless. The model has probably diverged (lower the learning rate)."
                )
            key = metrics.ranking_key(scores, found.seen_rows(batch))
            yield batch, key, found.relevant_rows(batch)


def _hit_batches(model: Recommender, split: Split, batch_size: int = 1024, relevant_items: np.ndarray | None = None):
    """Yield ``(users, ranked, hits)`` per batch: the full-catalogue ranking (training items last) and
    ``hits[u, r]``, True when the item at rank ``r`` (0-based) is one of user ``u``'s relevant test items."""
    for batch, key, relevant in _scored_batches(model, split, batch_size, relevant_items):
        ranked = torch.sort(key, dim=1, descending=True, stable=True).indices
        yield batch, ranked, metrics.hit_matrix(ranked, relevant)


def recall_curve(model: Recommender, split: Split, max_k: int = 500, batch_size: int = 1024) -> pd.Series:
    """Mean Recall@K for every K in ``1..max_k`` (capped at the catalogue size), as :func:`evaluate` computes it.

    Index ``K``; ``recall_curve(...)[k] == evaluate(...)[f"Recall@{k}"]`` for every ``k``.
    """
    max_k = min(int(max_k), split.catalog.n_items)
    total = torch.zeros(max_k, dtype=torch.float64)
    n_users = 0
    for _, _, hits in _hit_batches(model, split, batch_size):
        n_rel = hits.sum(1)
        total += (hits[:, :max_k].cumsum(1).double() / n_rel.unsqueeze(1)).sum(0)
        n_users += len(n_rel)
    return pd.Series((total / n_users).numpy(), index=pd.RangeIndex(1, max_k + 1, name="K"), name="Recall@K")


def oracle_rerank_recall(
    model: Recommender, split: Split, candidate_sizes: Iterable[int], k: int = 10, batch_size: int = 1024
) -> pd.DataFrame:
    """What a perfect ranker could reach on top of ``model``'s candidates.

    For each candidate-set size ``K``, an *oracle* ranker re-orders ``model``'s top ``K`` items (training
    items excluded) putting every relevant one first. Its Recall@k is ``min(hits in the top K, k) / n_rel``
    per user: a re-ranker can only find what retrieval handed it. Returns one row per ``K`` (index
    ``candidates K``) with the retriever's own ``Recall@K`` and ``Recall@k`` and the oracle's Recall@k;
    the oracle never exceeds the retriever's Recall@K, and with ``K = n_items`` it reaches the best
    Recall@k any ranking can achieve, ``min(n_rel, k) / n_rel``.
    """
    sizes = sorted(set(min(int(s), split.catalog.n_items) for s in candidate_sizes))
    if not sizes or sizes[0] < 1:
        raise ValueError(f"candidate sizes must be >= 1, got {list(candidate_sizes)}")
    cols = torch.as_tensor(sizes) - 1
    retriever = torch.zeros(len(sizes), dtype=torch.float64)
    oracle = torch.zeros(len(sizes), dtype=torch.float64)
    own = 0.0
    n_users = 0
    for _, _, hits in _hit_batches(model, split, batch_size):
        n_rel = hits.sum(1)
        found = hits.cumsum(1)[:, cols].double()  # hits in the top K, per user and K
        n_rel = n_rel.double().unsqueeze(1)
        retriever += (found / n_rel).sum(0)
        oracle += (found.clamp(max=k) / n_rel).sum(0)
        own += float((hits[:, :k].sum(1) / n_rel.squeeze(1)).sum())
        n_users += len(n_rel)
    return pd.DataFrame(
        {
            "retriever Recall@K": (retriever / n_users).numpy(),
            f"retriever Recall@{k}": own / n_users,
            f"oracle-reranked Recall@{k}": (oracle / n_users).numpy(),
        },
        index=pd.Index(sizes, name="candidates K"),
    )
