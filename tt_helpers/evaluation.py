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
    evaluated user instead of the means.
    """
    ks = sorted(set(int(k) for k in ks))
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

    rows: dict[str, list[torch.Tensor]] = {}
    tops = []
    with torch.no_grad():
        for start in range(0, len(users), batch_size):
            batch = users[start : start + batch_size]
            scores = model.score(torch.as_tensor(batch))
            if scores.shape != (len(batch), n_items):
                raise ValueError(
                    f"model.score returned shape {tuple(scores.shape)}, expected ({len(batch)}, {n_items}): "
                    "one score per catalogue item for each user"
                )
            ranked = metrics.exclude_and_rank(scores, _bool_rows(seen, batch, n_items))
            hits = metrics.hit_matrix(ranked, _bool_rows(relevant, batch, n_items))
            n_rel = hits.sum(1)
            for k in ks:
                rows.setdefault(f"Recall@{k}", []).append(metrics.recall_at_k(hits, n_rel, k))
                rows.setdefault(f"HitRate@{k}", []).append(metrics.hit_rate_at_k(hits, k))
                rows.setdefault(f"NDCG@{k}", []).append(metrics.ndcg_at_k(hits, n_rel, k))
            rows.setdefault("MRR", []).append(metrics.reciprocal_rank(hits))
            tops.append(ranked[:, : max(ks)])
    per_user_frame = pd.DataFrame({name: torch.cat(v).numpy() for name, v in rows.items()}, index=users)
    per_user_frame.index.name = "user_idx"
    if per_user:
        return per_user_frame
    result = {name: float(col.mean()) for name, col in per_user_frame.items()}
    top = torch.cat(tops)
    for k in ks:
        result[f"Coverage@{k}"] = metrics.catalogue_coverage(top[:, :k], n_items)
    return result


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
