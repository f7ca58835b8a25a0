"""The retrieval loss as one pipeline of small steps, each written as the equation it implements.

Notation: ``B`` examples (user ``u_b``, positive item ``v_b``); ``M`` candidate negatives, shared by the
batch (``[M]``) or per example (``[B, M]``, given as embeddings ``[B, M, d]`` or as
:class:`IndexedCandidates`). The pipeline, composed in :func:`retrieval_loss`:

1. **temperature** ``u / tau``: dividing the query by ``tau`` divides every logit by ``tau``, once, at the
   cost of ``[B, d]`` instead of ``[B, 1 + M]`` (:func:`apply_temperature`);
2. **logits** ``s(u, v) = <u, v> / tau``, positive in column 0: ``[B, 1 + M]`` (:func:`retrieval_logits`);
3. **logQ correction** ``s^c = s - log q``, for every column (:func:`logq_correction`; Yi et al. 2019);
4. **accidental hits** set to ``-inf`` (:func:`remove_accidental_hits`);
5. the **loss**: a ``1 + M``-way softmax (:func:`softmax_cross_entropy`) or a pointwise logistic loss
   (:func:`binary_cross_entropy`), with optional per-example weights.

This is the order of TensorFlow Recommenders' ``tasks.Retrieval``: the correction is computed on scaled
logits, because ``log q`` is on the scale of the softmax's exponent, not of the raw dot product.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Literal, NamedTuple

import torch
import torch.nn.functional as F

NEG_INF = float("-inf")
LossKind = Literal["softmax", "bce"]


class IndexedCandidates(NamedTuple):
    """Per-example candidates ``[B, M]`` as rows of a table of distinct embeddings: candidate ``m`` of
    example ``b`` is ``table[index[b, m]]``. ``table`` ``[U, d]``, ``index`` long ``[B, M]``.

    When the ``B x M`` draws repeat few items (``U`` a couple of dozen times ``M`` or less, e.g. impression
    pools over a small catalogue), scoring the whole table and gathering (:func:`candidate_logits`) is one
    matrix product and a gather; the ``[B, M, d]`` form moves ``B x M x d`` floats forward and back
    instead. With many distinct items the product costs more than it saves: see
    ``tt_helpers.training.INDEXED_ROWS_PER_COLUMN``."""

    table: torch.Tensor
    index: torch.Tensor


Candidates = torch.Tensor | IndexedCandidates


def candidate_logits(users: torch.Tensor, candidates: Candidates) -> torch.Tensor:
    """``[B, d]`` users with shared ``[M, d]``, per-example ``[B, M, d]`` or :class:`IndexedCandidates`
    candidates -> ``[B, M]``."""
    if isinstance(candidates, IndexedCandidates):
        return (users @ candidates.table.T).gather(1, candidates.index)
    if candidates.dim() == 2:
        return users @ candidates.T
    return torch.einsum("bd,bmd->bm", users, candidates)


def retrieval_logits(
    users: torch.Tensor, positives: torch.Tensor, candidate_blocks: Sequence[Candidates]
) -> torch.Tensor:
    """``[B, 1 + M]``: column 0 is ``<u_b, v_b>``, then each block's ``[B, M_i]`` candidate logits in order."""
    columns = [(users * positives).sum(1, keepdim=True)]
    columns += [candidate_logits(users, block) for block in candidate_blocks]
    return torch.cat(columns, dim=1)


def apply_temperature(x: torch.Tensor, temperature: float) -> torch.Tensor:
    """``x / tau``, for logits or for the query embeddings they are linear in. A small ``tau`` sharpens the
    softmax (Yi et al. 2019 use it with L2-normalised towers); ``tau = 1`` leaves raw dot products."""
    if temperature <= 0:
        raise ValueError(f"temperature must be positive, got {temperature}")
    return x if temperature == 1.0 else x / temperature


def logq_correction(logits: torch.Tensor, log_q: torch.Tensor) -> torch.Tensor:
    """``s^c(u, v_j) = s(u, v_j) - log q_j`` (Yi et al., RecSys 2019, eq. 3).

    ``q_j`` is how often item ``j`` is expected among the candidates (for in-batch negatives: its frequency
    among training positives times the batch size). Frequent items show up as negatives far more often
    than a softmax over the full catalogue would weigh them; subtracting ``log q`` removes that bias of the
    proposal to first order. The corrected sampled softmax is *consistent* (its bias vanishes as the number
    of samples grows), not unbiased (Bengio and Senecal 2008; Blanc and Rendle 2018). ``log_q`` broadcasts
    against ``logits``.
    """
    return logits - log_q


def remove_accidental_hits(logits: torch.Tensor, is_hit: torch.Tensor) -> torch.Tensor:
    """Set to ``-inf`` the logits whose candidate is in fact a positive of the example's user (``[B, 1+M]``).

    In-batch, another example's positive can be the same item as mine, or an item I also liked: scoring it
    as a negative would punish the model for being right. Column 0 (the positive itself) is never a hit.
    """
    return logits.masked_fill(is_hit, NEG_INF)


def logit_offsets(log_q: torch.Tensor | None, is_hit: torch.Tensor | None, shape: torch.Size) -> torch.Tensor | None:
    """Steps 3 and 4 as one constant ``[B, 1 + M]`` added to the logits: ``-log q``, and ``-inf`` on the
    accidental hits. Neither depends on the model, so computing them apart from the logits gives the same
    loss and keeps the backward pass a plain copy (no masked gradient). ``is_hit`` is a bool mask or, float,
    the hits already as offsets (``-inf`` on a hit, 0 elsewhere), which is added as it is."""
    if log_q is None and is_hit is None:
        return None
    if is_hit is not None and is_hit.is_floating_point():  # already offsets: -inf on the hits, 0 elsewhere
        return is_hit - log_q.expand(shape) if log_q is not None else is_hit.expand(shape)
    offsets = -log_q.expand(shape) if log_q is not None else torch.zeros(shape)  # = logq_correction(0, log_q)
    return offsets.masked_fill_(is_hit, NEG_INF) if is_hit is not None else offsets  # = remove_accidental_hits


def softmax_cross_entropy(logits: torch.Tensor, weights: torch.Tensor | None = None) -> torch.Tensor:
    """``-log softmax(logits)[:, 0]``, averaged over examples (weighted by ``weights`` ``[B]``): scalar.

    With in-batch candidates this is the batch softmax of Yi et al.; with candidates drawn from a proposal
    ``q`` and :func:`logq_correction` it is the sampled softmax (Jean et al. 2015); with every item as a
    candidate and no correction it is the full softmax, the reference the others approximate.
    """
    target = torch.zeros(len(logits), dtype=torch.long)  # the positive is column 0
    losses = F.cross_entropy(logits, target, reduction="none")  # = logsumexp(logits) - logits[:, 0]
    return _weighted_mean(losses, weights)


def binary_cross_entropy(logits: torch.Tensor, weights: torch.Tensor | None = None) -> torch.Tensor:
    """Pointwise logistic loss: column 0 labelled 1, the others 0; masked (``-inf``) candidates add nothing.

    With no candidate column the model only ever sees positives: the loss is minimised by scoring
    *everything* high, the degenerate solution chapter 3 discusses.
    """
    losses = F.softplus(-logits[:, 0])
    if logits.shape[1] > 1:
        losses = losses + F.softplus(logits[:, 1:]).sum(1)  # softplus(-inf) = 0, and so is its gradient
    return _weighted_mean(losses, weights)


def retrieval_loss(
    users: torch.Tensor,
    positives: torch.Tensor,
    candidate_blocks: Sequence[Candidates] = (),
    temperature: float = 1.0,
    log_q: torch.Tensor | None = None,
    is_hit: torch.Tensor | None = None,
    loss: LossKind = "softmax",
    weights: torch.Tensor | None = None,
    offsets: torch.Tensor | None = None,
) -> torch.Tensor:
    """The whole pipeline, composed in one place. ``users`` and ``positives`` ``[B, d]``; candidate blocks
    ``[M_i, d]``, ``[B, M_i, d]`` or :class:`IndexedCandidates`; ``log_q`` ``[B, 1 + M]`` (None: no
    correction); ``is_hit`` bool ``[B, 1 + M]`` or the same as float offsets (0, and ``-inf`` on a hit;
    None: no masking); ``weights`` ``[B]``; ``offsets``: steps 3 and 4 already combined into one ``[B, 1 + M]``
    constant, what :func:`logit_offsets` returns (the training loop builds it in one buffer,
    :func:`tt_helpers.training.candidate_offsets`), instead of ``log_q`` and ``is_hit``. Returns a scalar."""
    if offsets is not None and (log_q is not None or is_hit is not None):
        raise ValueError("pass either offsets (steps 3 and 4 combined) or log_q and is_hit, not both")
    logits = retrieval_logits(apply_temperature(users, temperature), positives, candidate_blocks)
    if offsets is None:
        offsets = logit_offsets(log_q, is_hit, logits.shape)
    if offsets is not None:
        logits = logits.add_(offsets)  # in place: the concatenated logits are this function's own
    if loss == "softmax":
        if logits.shape[1] < 2:
            raise ValueError("a softmax loss needs candidates besides the positive; use loss='bce' for positives only")
        return softmax_cross_entropy(logits, weights)
    if loss == "bce":
        return binary_cross_entropy(logits, weights)
    raise ValueError(f"unknown loss {loss!r}; use 'softmax' or 'bce'")


def _weighted_mean(losses: torch.Tensor, weights: torch.Tensor | None) -> torch.Tensor:
    if weights is None:
        return losses.mean()
    return (losses * weights).sum() / weights.sum()
