"""Ranking metrics over the full catalogue, with each user's training items excluded.

Every function takes a *hit matrix*: ``hits[u, r]`` is True when the item a model ranked at position ``r``
(0-based) for user ``u`` is one of the user's held-out positives. Ranking the whole catalogue (rather than a
sample of negatives) keeps the metrics exact; sampled metrics can even reverse the order of two models
(Krichene and Rendle, KDD 2020).
"""

from __future__ import annotations

import torch


def exclude_and_rank(scores: torch.Tensor, exclude: torch.Tensor) -> torch.Tensor:
    """Item indices ordered best first, shape ``[users, items]``.

    ``exclude`` (bool, same shape as ``scores``) marks items that must not be recommended (the user's
    training items): they go to the end. Ties are broken by the lower item index, so results are
    deterministic whatever the sort kernel.
    """
    # One stable sort on a key where excluded items are -inf and the model's own -inf scores are lifted to
    # the lowest finite value, so that an allowed item the model scored -inf still ranks before every
    # excluded item; equal keys keep index order (lower item index first).
    return torch.sort(ranking_key(scores, exclude), dim=1, descending=True, stable=True).indices


def ranking_key(scores: torch.Tensor, exclude: torch.Tensor) -> torch.Tensor:
    """The key :func:`exclude_and_rank` sorts by (descending, ties by lower index): excluded items are
    ``-inf`` and the model's own ``-inf`` scores are lifted to the lowest finite value, so that an allowed
    item the model scored ``-inf`` still ranks before every excluded item."""
    lowest = torch.finfo(torch.float32).min
    return torch.nan_to_num(scores.float(), nan=lowest, neginf=lowest).masked_fill(exclude, float("-inf"))


def top_k_ranking(key: torch.Tensor, k: int) -> torch.Tensor:
    """The first ``k`` columns of the full ranking by ``key`` (descending, ties by lower index), exactly, at
    the cost of a ``topk``: a row whose top ``k`` keys are distinct, none equal to a key outside them, has
    one order and ``topk`` gives it; the rows with ties (e.g. items that share the out-of-vocabulary
    embedding) take every item whose key reaches their ``k``-th largest as a candidate and sort those, so
    ties are broken as the full sort breaks them. ``[users, items] -> [users, k]``.
    """
    n = key.shape[1]
    if k >= n:
        return torch.sort(key, dim=1, descending=True, stable=True).indices[:, :k]
    values, ranked = torch.topk(key, k, dim=1)  # sorted, but in no defined order among equal keys
    reach = (key >= values[:, -1:]).sum(1)  # items whose key reaches the k-th largest: k unless it ties
    tied = (reach > k) | (values[:, 1:] == values[:, :-1]).any(1)
    if tied.any():
        rows = tied.nonzero().squeeze(1)
        ranked[rows] = _top_k_with_ties(key[rows], k, int(reach[rows].max()))
    return ranked


def _top_k_with_ties(key: torch.Tensor, k: int, m: int) -> torch.Tensor:
    """:func:`top_k_ranking` for rows with ties: the ``m`` best keys of each row (``m`` covers every tie at
    the cut), put in index order, then a stable sort by key, so equal keys keep the lower index first."""
    candidates = torch.sort(torch.topk(key, m, dim=1).indices, dim=1).values
    order = torch.sort(torch.gather(key, 1, candidates), dim=1, descending=True, stable=True).indices
    return torch.gather(candidates, 1, order)[:, :k]


def first_relevant_rank(
    key: torch.Tensor, relevant: torch.Tensor, top_hits: torch.Tensor | None = None
) -> torch.Tensor:
    """1-based rank of each user's first relevant item in the full ranking by ``key`` (as
    :func:`exclude_and_rank` orders it), without sorting; ``[users]`` (long). Every row needs a relevant item.

    ``top_hits``: the hit matrix of the ranking's first columns (``hit_matrix(top_k_ranking(key, k),
    relevant)``), if already computed: a row with a hit there takes its rank from it, and only the other
    rows are scanned."""
    if top_hits is not None:
        found = top_hits.any(1)
        rank = top_hits.to(torch.uint8).argmax(1) + 1  # argmax: the first of equal maxima, the first hit
        if not found.all():
            rest = ~found
            rank[rest] = first_relevant_rank(key[rest], relevant[rest])
        return rank
    best = key.masked_fill(~relevant, float("-inf")).max(1, keepdim=True).values
    at_best = relevant & (key == best)
    first = at_best.float().argmax(1, keepdim=True)  # the lowest index among the best relevant items
    before = (key > best) | ((key == best) & (torch.arange(key.shape[1]).unsqueeze(0) < first))
    return before.sum(1) + 1


def hit_matrix(ranked: torch.Tensor, relevant: torch.Tensor) -> torch.Tensor:
    """``hits[u, r] = relevant[u, ranked[u, r]]``; shapes ``[users, items]`` -> ``[users, items]`` (bool)."""
    return torch.gather(relevant, 1, ranked)


def recall_at_k(hits: torch.Tensor, n_relevant: torch.Tensor, k: int) -> torch.Tensor:
    """Share of the user's relevant items found in the top ``k``; per user, shape ``[users]``."""
    return hits[:, :k].sum(1) / n_relevant


def hit_rate_at_k(hits: torch.Tensor, k: int) -> torch.Tensor:
    """1 if at least one relevant item is in the top ``k``, else 0; shape ``[users]``."""
    return hits[:, :k].any(1).float()


def ndcg_at_k(hits: torch.Tensor, n_relevant: torch.Tensor, k: int) -> torch.Tensor:
    """DCG of the top ``k`` (gain 1 per hit, discount ``1/log2(rank + 1)``) over the best DCG possible."""
    k = min(k, hits.shape[1])
    discounts = 1.0 / torch.log2(torch.arange(2, k + 2, dtype=torch.float64))
    dcg = (hits[:, :k].double() * discounts).sum(1)
    ideal_cumsum = torch.cumsum(discounts, 0)
    idcg = ideal_cumsum[(n_relevant.clamp(max=k) - 1).long()]
    return (dcg / idcg).float()


def reciprocal_rank(hits: torch.Tensor) -> torch.Tensor:
    """``1 / rank`` of the first relevant item in the full ranking (0 if there is none); shape ``[users]``."""
    any_hit = hits.any(1)
    first = hits.float().argmax(1)  # first True (argmax returns the first maximal index)
    return torch.where(any_hit, 1.0 / (first + 1).float(), torch.zeros(()))


def catalogue_coverage(top_items: torch.Tensor, n_items: int) -> float:
    """Share of the catalogue that appears in at least one user's list ``top_items`` (``[users, k]``)."""
    present = torch.zeros(n_items, dtype=torch.bool)
    present[top_items.reshape(-1)] = True  # a presence table: no sort of the users x k ids
    return int(present.sum()) / n_items
