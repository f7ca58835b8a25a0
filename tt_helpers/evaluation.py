"""Evaluate any recommender the same way: full-catalogue ranking, training items excluded.

A *recommender* is anything with ``score(user_idx) -> Tensor[len(user_idx), n_items]``; baselines and
two-tower models alike. Higher scores rank first.
"""

from __future__ import annotations

from typing import Callable, Iterable, Protocol, Sequence

import numpy as np
import pandas as pd
import torch

from . import metrics
from .splits import Interactions, Split

DEFAULT_KS = (10, 50, 100)


class Recommender(Protocol):
    def fit(self, train: Interactions) -> "Recommender": ...

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
        rows.setdefault("MRR", []).append(1.0 / metrics.first_relevant_rank(key, relevant).float())
        users.append(batch)
        tops.append(ranked)
    per_user_frame = pd.DataFrame({name: torch.cat(v).numpy() for name, v in rows.items()}, index=np.concatenate(users))
    per_user_frame.index.name = "user_idx"
    result = {name: float(col.mean()) for name, col in per_user_frame.items()}
    top = torch.cat(tops)
    for k in ks:
        result[f"Coverage@{k}"] = metrics.catalogue_coverage(top[:, :k], split.catalog.n_items)
    return result, per_user_frame


def top_k_overlap(model: Recommender, reference: Recommender, split: Split, k: int = 100, batch_size: int = 1024) -> float:
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


def mean_by_group(per_user: pd.DataFrame, groups: dict[str, np.ndarray], metrics: Sequence[str] | None = None) -> pd.DataFrame:
    """Means of a per-user frame (``evaluate(..., per_user=True)``) over groups of user indices, e.g.
    ``splits.warm_and_cold_users(split)``; one row per group with its number of evaluated users."""
    columns = list(metrics) if metrics is not None else list(per_user.columns)
    rows = {}
    for name, users in groups.items():
        members = per_user.index.intersection(pd.Index(users))
        rows[name] = {"users": len(members), **per_user.loc[members, columns].mean().to_dict()}
    return pd.DataFrame(rows).T.astype({"users": int})


def results_table(results: dict[str, dict[str, float]], columns: Sequence[str] | None = None, digits: int = 4) -> pd.DataFrame:
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
) -> tuple[float, pd.DataFrame]:
    """Pick a hyper-parameter on ``split.validation()`` (never on test).

    Returns the best value and the validation table. Refit on ``split.train`` with it before testing.
    """
    validation = split.validation()
    results = {}
    for value in grid:
        results[value] = evaluate(make_model(value).fit(validation.train), validation, ks)
    table = pd.DataFrame(results).T
    table.index.name = "value"
    best = float(table[metric].idxmax())
    return best, table


def _scored_batches(model: Recommender, split: Split, batch_size: int = 1024, relevant_items: np.ndarray | None = None):
    """Yield ``(users, key, relevant)`` per batch of evaluated users: the ranking key of
    :func:`metrics.ranking_key` (training items excluded) and the bool matrix of each user's relevant test
    items. The one place that decides who is evaluated, what is relevant and what is excluded.
    """
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
            key = metrics.ranking_key(scores, _bool_rows(seen, batch, n_items))
            yield batch, key, _bool_rows(relevant, batch, n_items)


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
