"""Negative samplers behind one small interface, each returning the sampling probabilities the losses need.

A sampler returns :class:`Negatives`: candidate item ids, shared by the batch (``[M]``) or per example
(``[B, M]``), and ``log_q``, the log of each candidate's *expected count* in the candidate set. Subtracting
``log_q`` from the logits (:func:`tt_helpers.losses.logq_correction`) makes the sampled softmax a
*consistent* estimate of the full softmax: biased for a finite number of samples, the bias vanishing as
the number grows (Bengio and Senecal 2008; Jean et al. 2015; Yi et al. 2019). It is unbiased only when the
proposal is proportional to ``exp(logits)`` (Blanc and Rendle, ICML 2018). The same correction is applied to
the positive's logit, as Yi et al. do, so samplers also answer :meth:`~NegativeSampler.log_q_of`.

Every sampler derives from :class:`NegativeSampler`, whose one hook, :meth:`~NegativeSampler.start_epoch`,
the training loop calls before each epoch (staged schedules switch there; the others ignore it).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch

from .frequency import StreamingFrequencyEstimator


@dataclass(frozen=True)
class Batch:
    """One training step: ``B`` (user, positive item) examples."""

    user_idx: torch.Tensor  # [B]
    item_idx: torch.Tensor  # [B]
    weight: torch.Tensor  # [B]
    history: tuple[torch.Tensor, torch.Tensor] | None = None  # (start, end) windows into History


@dataclass(frozen=True)
class Negatives:
    """Candidates drawn for one batch.

    ``ids``/``log_q``: shared by the batch (``[M]``) or per example (``[B, M]``); the first ``n_from_batch``
    ids are the batch's own positives (their embeddings are reused). ``extra``: further per-example
    candidates (``[B, m]``) scored beside the shared ones, e.g. in-batch plus hard negatives. Keeping the
    shared part ``[M]`` makes it one matrix product; expanding it to every example would cost ``B`` times more.
    """

    ids: torch.Tensor
    log_q: torch.Tensor  # same shape as ids: log expected count of each candidate in this draw
    n_from_batch: int = 0
    extra: Negatives | None = None

    def blocks(self) -> list[Negatives]:
        """This draw as a list of candidate blocks (shared first, then per-example), without nesting."""
        head = Negatives(self.ids, self.log_q, self.n_from_batch)
        return [head] + (self.extra.blocks() if self.extra is not None else [])


class NegativeSampler:
    """Base class of the samplers: ``sample`` draws candidates for a batch, ``log_q_of`` gives the log
    expected count of given items (for the positive's correction), ``start_epoch`` is the loop's hook."""

    def sample(
        self, batch: Batch, generator: torch.Generator, model=None, users: torch.Tensor | None = None
    ) -> Negatives:
        raise NotImplementedError

    def log_q_of(self, item_idx: torch.Tensor, batch_size: int) -> torch.Tensor:
        """Log expected count of each item in a candidate set drawn for a batch of ``batch_size``."""
        raise NotImplementedError

    def start_epoch(self, epoch: int) -> None:
        """Called by the training loop before epoch ``epoch`` (1-based). Most samplers do nothing."""


def _log(x: torch.Tensor) -> torch.Tensor:
    return torch.log(x.clamp_min(1e-30))


class UniformSampler(NegativeSampler):
    """Candidate sampling: ``num_negatives`` items drawn uniformly from the catalogue (with replacement),
    shared by the batch. ``q_j = 1 / n_items``; expected count ``M / n_items``."""

    def __init__(self, n_items: int, num_negatives: int = 512):
        self.n_items, self.num_negatives = n_items, num_negatives

    def probabilities(self) -> torch.Tensor:
        return torch.full((self.n_items,), 1.0 / self.n_items)

    def sample(self, batch, generator, model=None, users=None) -> Negatives:
        ids = torch.randint(self.n_items, (self.num_negatives,), generator=generator)
        return Negatives(ids, self.log_q_of(ids, len(batch.item_idx)))

    def log_q_of(self, item_idx, batch_size):
        return torch.full(item_idx.shape, float(np.log(self.num_negatives / self.n_items)))


class PopularitySampler(NegativeSampler):
    """Popularity-weighted sampling, ``q_j ∝ count_j ** alpha`` (word2vec uses alpha = 0.75;
    alpha = 0 is uniform over items with a count, alpha = 1 matches the in-batch distribution)."""

    def __init__(self, item_counts: np.ndarray, alpha: float = 0.75, num_negatives: int = 512):
        weights = torch.as_tensor(np.asarray(item_counts, dtype=np.float64)) ** alpha
        weights[torch.as_tensor(np.asarray(item_counts)) == 0] = 0.0
        if weights.sum() <= 0:
            raise ValueError("all item counts are zero: nothing to sample from")
        self.q = (weights / weights.sum()).float()
        self.alpha, self.num_negatives = alpha, num_negatives

    def probabilities(self) -> torch.Tensor:
        return self.q

    def sample(self, batch, generator, model=None, users=None) -> Negatives:
        ids = torch.multinomial(self.q, self.num_negatives, replacement=True, generator=generator)
        return Negatives(ids, self.log_q_of(ids, len(batch.item_idx)))

    def log_q_of(self, item_idx, batch_size):
        return _log(self.num_negatives * self.q[item_idx])


class InBatchSampler(NegativeSampler):
    """In-batch negatives: the other examples' positives (Yi et al. 2019). Free, since their embeddings are
    already computed, but drawn from the data distribution: item ``j`` is expected ``B * p_j`` times,
    with ``p_j`` its share of training positives, so popular items are over-represented as negatives."""

    def __init__(self, item_probabilities: torch.Tensor):
        self.p = item_probabilities

    def probabilities(self) -> torch.Tensor:
        return self.p

    def sample(self, batch, generator, model=None, users=None) -> Negatives:
        ids = batch.item_idx
        return Negatives(ids, self.log_q_of(ids, len(ids)), n_from_batch=len(ids))

    def log_q_of(self, item_idx, batch_size):
        return _log(batch_size * self.p[item_idx])


class MixedSampler(NegativeSampler):
    """Mixed negative sampling (Yang et al., WWW 2020): in-batch negatives plus ``num_uniform`` items drawn
    uniformly from the whole catalogue, so that rare and cold items also appear as negatives.
    Expected count of item ``j``: ``B * p_j + M / n_items``."""

    def __init__(self, item_probabilities: torch.Tensor, num_uniform: int = 256):
        self.p, self.num_uniform = item_probabilities, num_uniform
        self.n_items = len(item_probabilities)

    def probabilities(self, batch_size: int) -> torch.Tensor:
        mix = batch_size * self.p + self.num_uniform / self.n_items
        return mix / mix.sum()

    def sample(self, batch, generator, model=None, users=None) -> Negatives:
        extra = torch.randint(self.n_items, (self.num_uniform,), generator=generator)
        ids = torch.cat([batch.item_idx, extra])
        return Negatives(ids, self.log_q_of(ids, len(batch.item_idx)), n_from_batch=len(batch.item_idx))

    def log_q_of(self, item_idx, batch_size):
        return _log(batch_size * self.p[item_idx] + self.num_uniform / self.n_items)


class StreamingInBatchSampler(NegativeSampler):
    """In-batch negatives whose ``log_q`` comes from Yi et al.'s streaming frequency estimator (RecSys 2019,
    Algorithm 1 with Algorithms 2-3; :class:`~tt_helpers.frequency.StreamingFrequencyEstimator`) instead of
    the static counts of :class:`InBatchSampler`: no pass over the data, and it follows popularity that drifts.

    Order: :meth:`sample` first records the batch's positives as one step of the stream, then computes the
    batch's ``log_q``; the training loop calls :meth:`log_q_of` for the positives' correction after
    :meth:`sample`, so positives and negatives use the same, updated, estimate. As in the paper's training
    loop (Algorithm 1), the estimate is read after the batch is recorded, so the batch being corrected counts
    towards its own items' frequencies: the gap that ends at this step is in the estimate, which read before
    the update would lag one step behind the stream. ``log_q`` is the estimated expected count
    ``B * p_j`` (:meth:`~tt_helpers.frequency.StreamingFrequencyEstimator.log_q`), the quantity whose static
    value :class:`InBatchSampler` uses, so the two agree on a stationary stream.
    """

    def __init__(self, estimator: StreamingFrequencyEstimator):
        self.estimator = estimator

    def sample(self, batch, generator, model=None, users=None) -> Negatives:
        self.estimator.update(batch.item_idx)  # this batch is step t of the stream
        ids = batch.item_idx
        return Negatives(ids, self.log_q_of(ids, len(ids)), n_from_batch=len(ids))

    def log_q_of(self, item_idx, batch_size):
        return self.estimator.log_q(item_idx, batch_size)


class StreamingMixedSampler(StreamingInBatchSampler):
    """:class:`MixedSampler` with the in-batch part's frequencies from the stream: in-batch negatives plus
    ``num_uniform`` uniform items; expected count ``B * p_j + M / n_items``, with ``B * p_j`` estimated as in
    :class:`StreamingInBatchSampler` (updated with each batch's positives before its ``log_q``)."""

    def __init__(self, estimator: StreamingFrequencyEstimator, n_items: int, num_uniform: int = 256):
        super().__init__(estimator)
        self.n_items, self.num_uniform = n_items, num_uniform

    def sample(self, batch, generator, model=None, users=None) -> Negatives:
        self.estimator.update(batch.item_idx)
        extra = torch.randint(self.n_items, (self.num_uniform,), generator=generator)
        ids = torch.cat([batch.item_idx, extra])
        return Negatives(ids, self.log_q_of(ids, len(batch.item_idx)), n_from_batch=len(batch.item_idx))

    def log_q_of(self, item_idx, batch_size):
        return _log(self.estimator.expected_count(item_idx, batch_size) + self.num_uniform / self.n_items)


class FullCatalogueSampler(NegativeSampler):
    """Every catalogue item as a candidate, shared by the batch: the *full* softmax that the sampled ones
    estimate. Each item is a candidate exactly once, so ``log q = 0`` and the correction is a no-op. Costs
    one item-tower pass over the catalogue per step: the reference on small catalogues, not a method for
    large ones."""

    def __init__(self, n_items: int):
        self.n_items = n_items

    def sample(self, batch, generator, model=None, users=None) -> Negatives:
        ids = torch.arange(self.n_items)
        return Negatives(ids, torch.zeros(self.n_items))

    def log_q_of(self, item_idx, batch_size):
        return torch.zeros(item_idx.shape)


class HardNegativeSampler(NegativeSampler):
    """Hard negatives: for each example, ``num_negatives`` items drawn uniformly from the ``top`` items the
    *current* model scores highest for the user, the user's known positives excluded.

    Sampling from the top ``top`` rather than taking the very top guards against false negatives (items the
    user would like but has not rated). They are not drawn from a fixed proposal, so no logQ correction
    applies (``log_q = 0``); use them to fine-tune a model that already works, mixed with ``base``.
    """

    def __init__(
        self, positives: PositiveSet, base: NegativeSampler | None = None, num_negatives: int = 10, top: int = 100
    ):
        self.positives, self.base = positives, base
        self.num_negatives, self.top = num_negatives, top

    def sample(self, batch, generator, model=None, users=None) -> Negatives:
        if model is None or users is None:
            raise ValueError("hard negatives need the model and the batch's user embeddings")
        with torch.no_grad():
            scores = model.logits(users, model.embed_items())  # [B, n_items]
            scores[self.positives.mask(batch.user_idx, scores.shape[1])] = float("-inf")
            top = torch.topk(scores, self.top, dim=1).indices  # [B, top]
        pick = torch.randint(self.top, (len(top), self.num_negatives), generator=generator)
        hard = torch.gather(top, 1, pick)
        if self.base is None:
            return Negatives(hard, torch.zeros(hard.shape))
        base = self.base.sample(batch, generator, model, users)
        return Negatives(base.ids, base.log_q, base.n_from_batch, extra=Negatives(hard, torch.zeros(hard.shape)))

    def log_q_of(self, item_idx, batch_size):
        if self.base is None:
            return torch.zeros(item_idx.shape)
        return self.base.log_q_of(item_idx, batch_size)


class PositiveSet:
    """Membership test "is item ``i`` a training positive of user ``u``?", used to remove accidental hits and to
    exclude positives from hard negatives. A dense bitmap when ``n_users x n_items`` is small (MovieLens);
    otherwise a binary search on sorted keys ``u * n_items + i``, whose memory grows with the positives only."""

    DENSE_LIMIT = 50_000_000  # cells; 50 MB of bools
    OFFSET_LIMIT = 12_500_000  # cells; 50 MB of floats for :meth:`hit_offsets`' table

    def __init__(self, user_idx: np.ndarray, item_idx: np.ndarray, n_items: int, n_users: int | None = None):
        user_idx = np.array(user_idx, dtype=np.int64)  # a writable copy
        item_idx = np.array(item_idx, dtype=np.int64)
        self.n_items = n_items
        n_users = int(user_idx.max()) + 1 if n_users is None else n_users
        self.dense: torch.Tensor | None = None
        if n_users * n_items <= self.DENSE_LIMIT:
            self.dense = torch.zeros(n_users, n_items, dtype=torch.bool)
            self.dense[torch.as_tensor(user_idx), torch.as_tensor(item_idx)] = True
            self.flat = self.dense.view(-1).view(torch.uint8)
        self.keys = torch.from_numpy(np.unique(user_idx * n_items + item_idx))
        self.catalogue = torch.arange(n_items)  # the full softmax's candidate ids, recognised in contains
        self._offsets: torch.Tensor | None = None  # float twin of the bitmap, built on first hit_offsets

    def contains(self, user_idx: torch.Tensor, item_ids: torch.Tensor) -> torch.Tensor:
        """``[B]`` users and ``[M]`` or ``[B, M]`` items -> bool ``[B, M]``."""
        if item_ids.dim() == 1:
            if self.dense is not None and len(item_ids) == self.n_items and torch.equal(item_ids, self.catalogue):
                return self.mask(user_idx, self.n_items)  # the full softmax's candidates: whole rows
            item_ids = item_ids.unsqueeze(0)
        if self.dense is not None:  # one flat byte gather (index_select is the fastest CPU path for it)
            known = user_idx < len(self.dense)
            rows = torch.where(known, user_idx, 0) if not known.all() else user_idx
            keys = (rows.unsqueeze(1) * self.n_items).to(torch.int32) + item_ids.to(torch.int32)  # [B, M]
            hit = self.flat.index_select(0, keys.reshape(-1)).view(keys.shape).bool()
            return hit if known.all() else hit & known.unsqueeze(1)
        keys = user_idx.unsqueeze(1) * self.n_items + item_ids  # [B, M]
        pos = torch.searchsorted(self.keys, keys).clamp(max=len(self.keys) - 1)
        return self.keys[pos] == keys

    def hit_offsets(self, user_idx: torch.Tensor, item_ids: torch.Tensor, leading_zero: bool = False) -> torch.Tensor:
        """:meth:`contains` as additive float offsets: ``-inf`` where the item is a positive of the user, 0
        elsewhere (``[B, M]``). With many hits (in-batch candidates of heavy users: about a quarter of the
        pairs on MovieLens), gathering these floats costs about half as much as filling a float tensor
        through the bool mask, and adding them to the logits gives the same numbers.

        ``leading_zero=True`` puts a column of zeros first, ``[B, 1 + M]``: the positive's own column of the
        loss's logits, never a hit. The table keeps a zero in front of each user's row, so that column comes
        out of the same gather instead of a concatenation."""
        table = self._offset_table()  # [n_users, 1 + n_items], column 0 zeros
        if table is None or not self._all_known(user_idx):
            hit = self.contains(user_idx, item_ids)
            offsets = torch.zeros(hit.shape).masked_fill_(hit, float("-inf"))
            return torch.cat([torch.zeros(len(offsets), 1), offsets], dim=1) if leading_zero else offsets
        if item_ids.dim() == 1 and len(item_ids) == self.n_items and torch.equal(item_ids, self.catalogue):
            rows = table.index_select(0, user_idx)  # whole rows
            return rows if leading_zero else rows[:, 1:]
        columns = item_ids.to(torch.int32) + 1  # the item's column in the table
        if leading_zero:
            zeros = columns.new_zeros(*columns.shape[:-1], 1)
            columns = torch.cat([zeros, columns], dim=-1)
        if columns.dim() == 1:
            columns = columns.unsqueeze(0)
        keys = (user_idx.unsqueeze(1) * table.shape[1]).to(torch.int32) + columns  # [B, M] (or [B, 1 + M])
        return table.view(-1).index_select(0, keys.reshape(-1)).view(keys.shape)

    def _offset_table(self) -> torch.Tensor | None:
        if self.dense is None or self.dense.numel() > self.OFFSET_LIMIT:
            return None
        if self._offsets is None:
            self._offsets = torch.zeros(len(self.dense), 1 + self.n_items)
            self._offsets[:, 1:].masked_fill_(self.dense, float("-inf"))
        return self._offsets

    def _all_known(self, user_idx: torch.Tensor) -> bool:
        return self.dense is not None and bool((user_idx < len(self.dense)).all())

    def mask(self, user_idx: torch.Tensor, n_items: int) -> torch.Tensor:
        """Bool ``[B, n_items]``: True where the item is a positive of that user."""
        if self.dense is None or n_items != self.n_items:
            return self.contains(user_idx, torch.arange(n_items).unsqueeze(0))
        known = user_idx < len(self.dense)
        rows = self.dense.index_select(0, torch.where(known, user_idx, 0))  # one row copy per user
        return rows if known.all() else rows & known.unsqueeze(1)


class ScheduledSampler(NegativeSampler):
    """Switches sampler by epoch: ``stages = [(1, uniform), (4, mixed_with_impressions)]`` uses ``uniform``
    for epochs 1-3 and the second from epoch 4 on. This is how the book runs staged curricula (random
    negatives first, harder ones once recall is high) inside the one training loop."""

    def __init__(self, stages: list[tuple[int, NegativeSampler]]):
        self.stages = sorted(stages, key=lambda s: s[0])
        if not self.stages or self.stages[0][0] != 1:
            raise ValueError("the first stage must start at epoch 1")
        self.current = self.stages[0][1]

    def start_epoch(self, epoch: int) -> None:
        self.current = [s for start, s in self.stages if start <= epoch][-1]
        self.current.start_epoch(epoch)

    def sample(self, batch, generator, model=None, users=None) -> Negatives:
        return self.current.sample(batch, generator, model, users)

    def log_q_of(self, item_idx, batch_size):
        return self.current.log_q_of(item_idx, batch_size)


class WithPerExampleNegatives(NegativeSampler):
    """A base sampler's candidates (shared by the batch) plus a per-example sampler's ``[B, m]`` candidates,
    e.g. in-batch + hard negatives, or random + impression negatives (chapter 3).

    ``extra_log_q``: ``"sampler"`` keeps the extra sampler's own ``log_q`` (hard negatives: 0, the convention of
    :class:`HardNegativeSampler`); ``"base"`` gives each extra candidate the ``log_q`` the *base* proposal gives
    that item, so that it weighs in the softmax like one base candidate (with a uniform base, a constant).
    The positive's ``log_q_of`` is always the base's.
    """

    def __init__(self, base: NegativeSampler, extra: NegativeSampler, extra_log_q: str = "sampler"):
        if extra_log_q not in ("sampler", "base"):
            raise ValueError(f"extra_log_q must be 'sampler' or 'base', got {extra_log_q!r}")
        self.base, self.extra, self.extra_log_q = base, extra, extra_log_q

    def sample(self, batch, generator, model=None, users=None) -> Negatives:
        b = self.base.sample(batch, generator, model, users)
        e = self.extra.sample(batch, generator, model, users)
        if b.ids.dim() != 1 or e.ids.dim() != 2:
            raise ValueError(
                "WithPerExampleNegatives needs a shared ([M]) base and a per-example ([B, m]) extra sampler"
            )
        extra_log_q = e.log_q if self.extra_log_q == "sampler" else self.base.log_q_of(e.ids, len(batch.item_idx))
        return Negatives(b.ids, b.log_q, b.n_from_batch, extra=Negatives(e.ids, extra_log_q))

    def log_q_of(self, item_idx, batch_size):
        return self.base.log_q_of(item_idx, batch_size)

    def start_epoch(self, epoch: int) -> None:
        self.base.start_epoch(epoch)
        self.extra.start_epoch(epoch)
