"""How often each item appears as a candidate: the ``q`` of the logQ correction.

With in-batch negatives an item is a candidate whenever it is some example's positive, so its sampling
probability is its share of the training positives. Yi et al. (RecSys 2019) estimate it on a stream
(chapter 4) with :class:`StreamingFrequencyEstimator`; on a fixed data set the static count is exact.
"""

from __future__ import annotations

from typing import Literal

import numpy as np
import torch


def item_probabilities(item_idx: np.ndarray, n_items: int, smoothing: float = 0.0) -> torch.Tensor:
    """``q_j = (count_j + smoothing) / sum_k (count_k + smoothing)``, shape ``[n_items]`` (float32).

    Items never seen get probability 0 unless ``smoothing > 0``: they are then never sampled in-batch,
    which is exactly right for the in-batch proposal.
    """
    counts = np.bincount(np.asarray(item_idx, dtype=np.int64), minlength=n_items).astype(np.float64) + smoothing
    if counts.sum() <= 0:
        raise ValueError("no positives to count: cannot estimate item frequencies")
    return torch.from_numpy(counts / counts.sum()).float()


PRIME = 2**31 - 1  # a Mersenne prime: a product of two residues (< 2**31) fits in int64
HASH_DEGREE = 3  # degree of the polynomial hash (4-wise independent); see StreamingFrequencyEstimator


class StreamingFrequencyEstimator:
    """Yi et al.'s streaming frequency estimation (RecSys 2019, Algorithms 2 and 3; ``yi2019sampling``).

    Why: the static count (:func:`item_probabilities`) needs a pass over the whole data and describes it as a
    fixed distribution; a production stream has new items and popularity that drifts. This estimator runs
    inside the training loop, in one pass, in fixed memory, and follows the drift.

    **What it estimates.** A training step ``t = 1, 2, ...`` is one batch (one call of :meth:`update`). For an
    id ``j``, ``delta_j`` is the expected number of steps between two steps in which ``j`` occurs, and
    ``pi_j = 1 / delta_j`` (:meth:`probability`) is the probability that ``j`` occurs *at least once* in a
    step's batch: a per-step (per-batch) probability, not a share of the draws. If each step's batch is ``B``
    i.i.d. draws in which ``j`` has per-draw probability ``p_j`` (the in-batch proposal, whose ``log_q`` is
    ``log(B * p_j)`` in :class:`~tt_helpers.sampling.InBatchSampler`), then ``pi_j = 1 - (1 - p_j) ** B``:
    about ``B * p_j`` when ``B * p_j`` is small, below ``min(1, B * p_j)`` always. :meth:`expected_count`
    inverts that relation exactly, ``B * p_j = B * (1 - (1 - pi_j) ** (1 / B))``, so that :meth:`log_q` is on
    the scale of the static in-batch ``log_q`` (the two agree on a stationary stream) rather than the paper's
    ``log(pi_j)``, which saturates at 0 for items expected once or more per batch (with ``B = 512`` on
    MovieLens 100K the most liked items are expected about 5 times per batch).

    **Algorithm 2** (one array, ``n_hashes=1``): arrays ``A`` (the last step a bucket was seen) and ``B``
    (the estimate of ``delta``); on seeing id ``j`` at step ``t``, with ``h = h(j)``::

        B[h] = (1 - alpha) * B[h] + alpha * (t - A[h]);   A[h] = t

    an exponential moving average of the gaps, with learning rate ``alpha``. **Algorithm 3**: ``n_hashes``
    pairs of arrays with different hash functions ``h_i``; a collision makes a bucket look more frequent
    (smaller ``delta``), so the most conservative estimate is the largest: ``pi_j = 1 / max_i B_i[h_i(j)]``.

    **Duplicates.** Each (array, bucket) is updated at most once per step, whether one id occurs several times
    in the batch or several ids share the bucket. The paper's loop over the batch would record a gap of 0 for
    the second occurrence and pull ``B`` towards 0 by an amount that depends on the duplicates; updating once
    keeps ``B`` an estimate of the gap *between steps*, whose inverse is the per-step probability above.

    **Initial state.** ``B = 1 / initial_probability``: an id whose bucket has not yet been seen twice has
    per-step probability ``initial_probability``, by default ``1 / n_buckets`` (one id per step, spread evenly
    over the buckets); :meth:`for_catalogue` (what training uses) passes the uniform in-batch prior. ``A = 0``
    marks a bucket never seen: its first sighting only starts its clock (there is no gap yet). The ``k``-th
    gap of a bucket is averaged in with rate ``max(alpha, 1 / k)``: the plain mean of the first ``1 / alpha``
    gaps (so the first gap replaces the prior), then the paper's update with ``alpha``, the usual start of a
    moving average. Averaging from the prior with ``alpha`` from the start would need about
    ``ln(B_0 / delta) / alpha`` occurrences to forget it (460 for ``B_0 = 1000``, ``delta = 10``,
    ``alpha = 0.01``), and an item new to the stream would start from the gap since step 0.

    **Adaptation.** ``B`` moves only when its id is seen, so it adapts in about ``1 / alpha`` *occurrences*,
    i.e. ``1 / (alpha * pi_j)`` steps: fast for an id that becomes frequent, slower for one that becomes
    rare (the tests see the new truth within ``3 / (alpha * pi_new)`` steps either way), and an id that stops
    occurring keeps its last estimate. The noise grows with ``alpha`` (the variance of the average is about
    ``alpha / 2`` times that of a gap): lower ``alpha``, lower error, slower adaptation.

    **Hashing.** ``hashing="universal"``: the Carter-Wegman polynomial hash
    ``h_i(x) = ((a_i x^3 + b_i x^2 + c_i x + d_i) mod P) mod n_buckets``, ``P = 2**31 - 1``, coefficients drawn
    from ``seed``, one set per array; any non-negative integer id maps deterministically (ids are first
    reduced modulo ``P``: dense indices are far below it). The linear member ``((a x + b) mod P) mod H`` is
    universal too, but on consecutive ids (dense indices) it is a near-arithmetic progression: for about 4% of
    seeds it crowds ids 0..1999 into fewer than 200 of 256 buckets (2% into fewer than half), the cubic one
    for none of 1,000 seeds.
    ``hashing="identity"``: id ``j`` is bucket ``j`` (one array, ids below ``n_buckets``): Algorithm 2
    without collisions, for a catalogue known in advance.

    ``memory``: ``3 * n_hashes * n_buckets`` numbers (``A``, ``B``, and the count of gaps behind each ``B``),
    whatever the length of the stream or the number of ids.
    """

    def __init__(
        self,
        n_buckets: int,
        n_hashes: int = 1,
        alpha: float = 0.01,
        seed: int = 0,
        initial_probability: float | None = None,
        hashing: Literal["universal", "identity"] = "universal",
    ):
        problems = []
        for name, value in (("n_buckets", n_buckets), ("n_hashes", n_hashes)):
            if isinstance(value, bool) or not isinstance(value, (int, np.integer)) or value < 1:
                problems.append(f"{name} must be an integer >= 1, got {value!r}")
        if isinstance(alpha, bool) or not isinstance(alpha, (int, float, np.floating)) or not 0 < alpha <= 1:
            problems.append(f"alpha (the learning rate of the moving average) must be in (0, 1], got {alpha!r}")
        if initial_probability is not None and not (
            isinstance(initial_probability, (int, float)) and 0 < initial_probability <= 1
        ):
            problems.append(
                f"initial_probability must be in (0, 1] (or None: 1 / n_buckets), got {initial_probability!r}"
            )
        if hashing not in ("universal", "identity"):
            problems.append(f"hashing must be 'universal' or 'identity', got {hashing!r}")
        elif hashing == "identity" and n_hashes != 1:
            problems.append(
                "hashing='identity' gives every id its own bucket, so there is one array: use n_hashes=1, "
                f"got {n_hashes!r}"
            )
        if problems:
            raise ValueError("invalid StreamingFrequencyEstimator: " + "; ".join(problems))
        self.n_buckets, self.n_hashes, self.alpha = int(n_buckets), int(n_hashes), float(alpha)
        self.seed, self.hashing = seed, hashing
        self.initial_probability = 1.0 / self.n_buckets if initial_probability is None else float(initial_probability)
        self.last_seen = torch.zeros(self.n_hashes, self.n_buckets, dtype=torch.int64)  # A: [n_hashes, n_buckets]
        # B: [n_hashes, n_buckets]
        self.delta = torch.full((self.n_hashes, self.n_buckets), 1.0 / self.initial_probability, dtype=torch.float64)
        self.gaps = torch.zeros(self.n_hashes, self.n_buckets, dtype=torch.int64)  # gaps averaged into B so far
        self.step = 0  # steps (batches) seen so far
        self.draws = 0  # ids seen so far, duplicates included
        g = torch.Generator().manual_seed(seed)
        self._coefficients = torch.randint(
            0, PRIME, (HASH_DEGREE + 1, self.n_hashes, 1), generator=g, dtype=torch.int64
        )
        # the leading coefficient: not 0
        self._coefficients[0] = torch.randint(1, PRIME, (self.n_hashes, 1), generator=g, dtype=torch.int64)
        self._offsets = (torch.arange(self.n_hashes) * self.n_buckets).unsqueeze(1)  # array i starts at i * n_buckets

    @classmethod
    def for_catalogue(
        cls,
        n_items: int,
        batch_size: int,
        alpha: float = 0.01,
        n_buckets: int | None = None,
        n_hashes: int = 1,
        seed: int = 0,
    ) -> StreamingFrequencyEstimator:
        """The estimator of ``TrainConfig(frequency="streaming")``, for a stream of batches of ``batch_size``
        item indices below ``n_items``. ``n_buckets=None``: one bucket per item, and with ``n_hashes=1`` no
        hashing at all (Algorithm 2, no collisions); otherwise ``n_hashes`` hashed arrays of ``n_buckets``
        (``n_items`` when None) each. Prior: uniform in-batch draws, per-step probability
        ``1 - (1 - 1 / n_items) ** batch_size``, i.e. expected count ``batch_size / n_items``."""
        if isinstance(n_items, bool) or not isinstance(n_items, (int, np.integer)) or n_items < 1:
            raise ValueError(f"n_items must be an integer >= 1, got {n_items!r}")
        if isinstance(batch_size, bool) or not isinstance(batch_size, (int, np.integer)) or batch_size < 1:
            raise ValueError(f"batch_size must be an integer >= 1, got {batch_size!r}")
        prior = -float(np.expm1(batch_size * np.log1p(-1.0 / n_items))) if n_items > 1 else 1.0
        if n_buckets is None and n_hashes == 1:
            return cls(n_items, 1, alpha, seed, prior, hashing="identity")
        return cls(n_items if n_buckets is None else n_buckets, n_hashes, alpha, seed, prior)

    def __repr__(self) -> str:
        return (
            f"StreamingFrequencyEstimator(n_buckets={self.n_buckets}, n_hashes={self.n_hashes}, alpha={self.alpha}, "
            f"seed={self.seed}, hashing={self.hashing!r}; step={self.step}, memory={self.memory})"
        )

    @property
    def memory(self) -> int:
        """Numbers held: ``A``, ``B`` and the gap counts, ``n_hashes * n_buckets`` each."""
        return 3 * self.n_hashes * self.n_buckets

    def _ids(self, ids) -> torch.Tensor:
        ids = torch.as_tensor(ids)
        if ids.dtype == torch.bool or ids.is_floating_point() or ids.is_complex():
            raise TypeError(
                f"ids must be an integer tensor (item indices), got dtype {ids.dtype}; convert with .long()"
            )
        ids = ids.to(torch.int64)
        if ids.numel():
            low, high = (int(v) for v in torch.aminmax(ids))
            if low < 0:
                raise ValueError(f"ids must be non-negative indices, got {low}")
            if self.hashing == "identity" and high >= self.n_buckets:
                raise ValueError(
                    f"id {high} has no bucket: hashing='identity' holds ids 0..{self.n_buckets - 1}; "
                    "use more buckets or hashing='universal'"
                )
        return ids

    def buckets(self, ids: torch.Tensor) -> torch.Tensor:
        """Bucket of each id in each array: ``[*ids.shape]`` -> ``[n_hashes, *ids.shape]`` (int64)."""
        ids = self._ids(ids)
        if self.hashing == "identity":
            return ids.unsqueeze(0)
        x = ids.reshape(1, -1) % PRIME  # [1, N]
        value = self._coefficients[0].expand(-1, x.shape[1])  # Horner's rule; every product stays below 2**62
        for c in self._coefficients[1:]:
            value = (value * x + c) % PRIME
        return (value % self.n_buckets).reshape(self.n_hashes, *ids.shape)  # [n_hashes, *ids.shape]

    def update(self, ids: torch.Tensor) -> None:
        """Record one step: ``ids`` (any shape, e.g. a batch's ``[B]`` positives) are all seen at step ``t``,
        the step after the last call. Each bucket is updated at most once per call (see the class docstring)."""
        ids = self._ids(ids).reshape(-1)
        self.step += 1
        self.draws += len(ids)
        if not len(ids):
            return
        cells = (self.buckets(ids) + self._offsets).reshape(-1)  # [n_hashes * N] cells of the flat arrays
        last_seen, delta, gaps = self.last_seen.view(-1), self.delta.view(-1), self.gaps.view(-1)
        # Every new value is computed from the state before this step, so a cell listed twice (a duplicate id,
        # or two ids in one bucket) gets the same value twice: one update per cell and step, in any order.
        previous = last_seen.index_select(0, cells)
        again = previous > 0  # seen before: a gap ends now (a first sighting only starts the clock)
        k = gaps.index_select(0, cells) + again  # gaps averaged into B, this one included
        rate = k.to(torch.float64).clamp_min(1).reciprocal().clamp_min(self.alpha) * again  # max(alpha, 1/k); 0: no gap
        old = delta.index_select(0, cells)
        gap = self.step - previous  # t - A[h]
        delta.index_copy_(0, cells, old + rate * (gap - old))  # B[h] = (1 - alpha) B[h] + alpha (t - A[h])
        gaps.index_copy_(0, cells, k)
        last_seen.index_fill_(0, cells, self.step)  # A[h] = t

    def deltas(self, ids: torch.Tensor) -> torch.Tensor:
        """Each array's estimate ``B_i[h_i(j)]`` of the steps between occurrences: ``[n_hashes, *ids.shape]``."""
        cells = self.buckets(ids)
        flat = (cells.reshape(self.n_hashes, -1) + self._offsets).reshape(-1)
        return self.delta.view(-1).index_select(0, flat).reshape(cells.shape)

    def probability(self, ids: torch.Tensor) -> torch.Tensor:
        """``pi_j = 1 / max_i B_i[h_i(j)]``: the estimated probability that id ``j`` occurs at least once in a
        step's batch, ``[*ids.shape]`` (float32, in ``(0, 1]``)."""
        return (1.0 / self.deltas(ids).amax(dim=0)).float()

    @property
    def draws_per_step(self) -> float | None:
        """Mean number of ids per :meth:`update` (duplicates included): the ``s`` of :meth:`expected_count`."""
        return self.draws / self.step if self.draws else None

    def expected_count(self, ids: torch.Tensor, batch_size: int) -> torch.Tensor:
        """Expected number of times id ``j`` occurs in a batch of ``batch_size`` draws, ``[*ids.shape]`` (float32).

        If each step was ``s`` i.i.d. draws (``s`` = :attr:`draws_per_step`, or ``batch_size`` before any
        draw), ``pi_j = 1 - (1 - p_j) ** s``, so the per-draw probability is ``p_j = 1 - (1 - pi_j) ** (1 / s)``
        and the expected count is ``batch_size * p_j``: about ``pi_j * batch_size / s`` for rare ids, and for
        the training stream (``s`` = the batch size) ``B * p_j``, the static in-batch expected count.

        An id seen at (nearly) every step has ``pi_j`` near 1: the stream then only says that it occurs at
        almost every step, not how often within one. ``1 - pi_j`` is therefore floored at ``alpha / 2``, about
        the resolution of the moving average, which caps the count at about ``ln(2 / alpha)`` (5.3 at
        ``alpha = 0.01``) for large batches instead of letting it jump to ``s`` on noise.
        """
        if isinstance(batch_size, bool) or not isinstance(batch_size, (int, np.integer)) or batch_size < 1:
            raise ValueError(f"batch_size must be an integer >= 1, got {batch_size!r}")
        s = self.draws_per_step or batch_size
        miss = (1.0 - 1.0 / self.deltas(ids).amax(dim=0)).clamp_min(self.alpha / 2)  # P(j not in a step's batch)
        per_draw = -torch.expm1(torch.log(miss) / s)  # 1 - (1 - pi) ** (1 / s), accurate for small pi
        return (batch_size * per_draw).float()

    def log_q(self, ids: torch.Tensor, batch_size: int) -> torch.Tensor:
        """``log`` of :meth:`expected_count`: the in-batch ``log_q`` of the logQ correction, ``[*ids.shape]``."""
        return torch.log(self.expected_count(ids, batch_size).clamp_min(1e-30))


def shifting_stream(before: torch.Tensor, after: torch.Tensor, steps_before: int, steps_after: int,
                    per_step: int, seed: int = 0) -> tuple[torch.Tensor, torch.Tensor]:
    """A simulated training stream whose item distribution changes once: ``steps_before`` steps of
    ``per_step`` i.i.d. draws from ``before`` ``[n]``, then ``steps_after`` steps from ``after`` ``[n]``.

    Returns ``(stream, truth)``: ids ``[steps, per_step]`` and, per step, each id's true probability of
    appearing at least once in that step, ``1 - (1 - p_j) ** per_step`` ``[steps, n]`` (float64): what
    :meth:`StreamingFrequencyEstimator.probability` estimates."""
    for name, p in (("before", before), ("after", after)):
        if p.dim() != 1 or (p < 0).any() or not torch.isclose(p.sum().double(), torch.tensor(1.0, dtype=torch.float64)):
            raise ValueError(f"{name} must be a probability vector [n] (non-negative, summing to 1)")
    if before.shape != after.shape:
        raise ValueError(f"before and after cover different catalogues: {tuple(before.shape)} vs {tuple(after.shape)}")
    generator = torch.Generator().manual_seed(seed)
    parts, truths = [], []
    for p, steps in ((before, steps_before), (after, steps_after)):
        draws = torch.multinomial(p.double(), steps * per_step, replacement=True, generator=generator)
        parts.append(draws.view(steps, per_step))
        truths.append((1 - (1 - p.double()) ** per_step).expand(steps, -1))
    return torch.cat(parts), torch.cat(truths)


def track_estimates(estimator: StreamingFrequencyEstimator, stream: torch.Tensor, ids: torch.Tensor,
                    every: int = 10) -> torch.Tensor:
    """Feed ``stream`` ``[steps, per_step]`` to ``estimator`` one step (row) at a time and return its
    probability estimates of ``ids`` ``[k]`` after every ``every``-th step: ``[steps // every, k]``."""
    if every < 1:
        raise ValueError(f"every must be a positive number of steps, got {every}")
    snapshots = []
    for step, row in enumerate(stream, start=1):
        estimator.update(row)
        if step % every == 0:
            snapshots.append(estimator.probability(ids).double())
    if not snapshots:
        raise ValueError(f"the stream has {len(stream)} steps, fewer than every={every}: nothing to track")
    return torch.stack(snapshots)
