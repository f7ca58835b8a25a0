"""Retrieval losses, written as the equations they implement.

Notation: ``B`` examples (user, positive item), ``M`` negative candidates per example (shared ``[M]`` or
per-example ``[B, M]``). Logits are ``s(u, v) = <u, v> / tau``. The sampled softmax treats each example as a
``1 + M``-way classification with the positive in column 0.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F

NEG_INF = float("-inf")


def negative_logits(users: torch.Tensor, negatives: torch.Tensor, scale: float) -> torch.Tensor:
    """``[B, d]`` users with shared ``[M, d]`` or per-example ``[B, M, d]`` negatives -> ``[B, M]`` logits."""
    if negatives.dim() == 2:
        return users @ negatives.T * scale
    return torch.einsum("bd,bmd->bm", users, negatives) * scale


def logq_correction(logits: torch.Tensor, log_q: torch.Tensor) -> torch.Tensor:
    """``s^c(u, v_j) = s(u, v_j) - log q_j`` (Yi et al., RecSys 2019, eq. 3).

    ``q_j`` is how likely item ``j`` is to appear as a candidate (for in-batch negatives: its frequency among
    training positives). Frequent items show up as negatives far more often than a softmax over the full
    catalogue would weigh them; subtracting ``log q`` removes that sampling bias, which otherwise pushes
    popular items down. ``log_q`` broadcasts against ``logits`` (``[M]`` or ``[B, M]``).
    """
    return logits - log_q


def remove_accidental_hits(logits: torch.Tensor, is_hit: torch.Tensor) -> torch.Tensor:
    """Set to ``-inf`` the negative logits whose candidate is in fact a positive (``is_hit``, ``[B, M]``).

    In-batch, another example's positive can be the same item as mine, or an item I also liked: scoring it
    as a negative would punish the model for being right.
    """
    return logits.masked_fill(is_hit, NEG_INF)


def sampled_softmax_loss(
    positive_logits: torch.Tensor,
    negative_logits: torch.Tensor,
    weights: torch.Tensor | None = None,
) -> torch.Tensor:
    """``-log softmax`` of column 0 of ``[positive | negatives]``; ``[B]`` and ``[B, M]`` -> scalar.

    With in-batch negatives this is the batch softmax of Yi et al.; with negatives sampled from a proposal
    ``q``, apply :func:`logq_correction` to both columns first (sampled softmax, Jean et al. 2015).
    ``weights`` (``[B]``) weigh examples, e.g. by rating.
    """
    logits = torch.cat([positive_logits.unsqueeze(1), negative_logits], dim=1)
    losses = torch.logsumexp(logits, dim=1) - positive_logits
    return _weighted_mean(losses, weights)


def binary_cross_entropy_loss(
    positive_logits: torch.Tensor,
    negative_logits: torch.Tensor | None,
    weights: torch.Tensor | None = None,
) -> torch.Tensor:
    """Pointwise logistic loss: positives labelled 1, negatives 0; ``[B]``, ``[B, M]`` -> scalar.

    With ``negative_logits=None`` the model only ever sees positives: the loss is minimised by scoring
    *everything* high, which is the collapse chapter 3 demonstrates. Masked (``-inf``) negatives add nothing.
    """
    losses = F.softplus(-positive_logits)
    if negative_logits is not None:
        valid = torch.isfinite(negative_logits)
        neg = F.softplus(negative_logits.masked_fill(~valid, 0.0)) * valid
        losses = losses + neg.sum(1)
    return _weighted_mean(losses, weights)


def _weighted_mean(losses: torch.Tensor, weights: torch.Tensor | None) -> torch.Tensor:
    if weights is None:
        return losses.mean()
    return (losses * weights).sum() / weights.sum()
