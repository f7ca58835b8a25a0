"""Impression negatives: the samplers that train on them (chapter 3), and a replay of MovieLens' ratings.

The samplers (:class:`ImpressionNegativeSampler`, :func:`impression_negatives`, :func:`random_and_impressions`,
:func:`staged_impressions`) take any log with ``user_idx`` and ``item_idx`` columns through
:class:`ImpressionLog`; chapter 3 feeds them the semi-synthetic world of :mod:`tt_helpers.world`, whose
engagement depends on what was shown. The replay below (:func:`simulate_impressions`) cannot test a claim
about impressions, for the reasons it lists; it is kept to run the machinery on the recorded ratings.

**Why simulate.** Production logs record *impressions*: the items a user was shown. An impression the user
did not engage with is a "negative impression" (shown, not chosen), a different kind of negative from the
random items of candidate sampling. MovieLens logs ratings only: nothing says what the site showed a user.
This module invents the missing log with an explicit, seeded **logging policy** so that the book can run
the mechanics of impression negatives end to end. Every assumption it makes is listed here.

**The simulation** (:func:`simulate_impressions`):

1. *Events.* Each distinct ``(user, timestamp)`` of the training ratings is one visit of the user; ratings
   entered in the same second are one visit. ``max_events_per_user`` optionally keeps a seeded random subset
   of each user's visits (for speed; the default keeps all of them).
2. *Policy.* At each visit the policy scores the catalogue using **only information available at that
   time**. The default, :class:`PastPopularity`, scores an item by the log of its number of ratings (by
   anybody) strictly *before* the visit; items nobody has rated yet cannot be shown. Computing popularity on
   the whole training log instead would let the future decide what was shown in the past.
   A callable ``policy(user_idx, timestamps) -> scores [n, n_items]`` can replace it (``-inf`` = cannot be
   shown), e.g. :class:`FixedScorer` around a fitted recommender; a model fitted on the training data has
   seen the future of early visits, which is acceptable for a policy only if that is what you mean to study.
3. *Slate.* Items the user rated before the visit are never shown. The slate is the top ``slate_size``
   items by score (``temperature=0``) or a draw without replacement from ``softmax(score / temperature)``
   (the Gumbel top-k trick, seeded), so that users with the same history see different slates.
4. *Engagement.* A slate item the user rated within ``[t, t + window_seconds]`` (in the same training
   data) is an **engaged** impression; every other slate item is an **impression without engagement**,
   the negative impression of this chapter.

**What it cannot tell us.** The users' behaviour does not depend on the slates: MovieLens users rated what
they chose to rate (MovieLens does show lists of movies to rate, but not these), so a simulated negative
impression only means "popular at the time, shown, and not rated in this session". It carries no real
signal of rejection (the user may not have noticed the item, or has not seen the movie, or rates it next
month: such items are counted as negatives, which real impression logs also do). MovieLens users rate in
short sessions (half of them rated their whole training history within about half an hour), so with a
window of an hour "within the window" means "later in the same session". The simulation therefore tests
the *machinery* (samplers, schedules, losses) and the *shape* of the effect of a narrow, popularity-biased
set of negatives; it cannot measure the value of real impression data. All impressions are derived from
the training split only: test ratings never decide what counts as engaged.

**Validation without leakage.** The recipe early-stops on a validation split carved from training
(:func:`tt_helpers.experiments.fit_on_split`). Impressions simulated on the whole training split would label
validation-period items as "not engaged" using the validation answers; :meth:`ImpressionLog.for_split`
therefore simulates once per training set (the split's train part and its validation train part), and
the samplers pick the log whose training data they are given (:meth:`ImpressionLog.for_training`).

**Samplers.** :class:`ImpressionNegativeSampler` draws per-example negatives uniformly from the distinct items
the example's user was shown and did not engage with (their training positives left out); users with none
fall back to uniform catalogue draws. Impression negatives are *labelled* negatives, not a proposal for the
catalogue softmax, so they get no logQ correction of their own (the class docstring has the argument).
:func:`impression_negatives`, :func:`random_and_impressions` and :func:`staged_impressions` build
``TrainConfig.negatives`` factories for "impressions only", "random plus a share of impressions" and "random
first, then a share of impressions" (via :class:`tt_helpers.sampling.ScheduledSampler`).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Protocol

import numpy as np
import pandas as pd
import torch

from .examples import SamplerFactory, TrainingData, positive_examples
from .sampling import (
    Batch,
    Negatives,
    NegativeSampler,
    PositiveSet,
    ScheduledSampler,
    UniformSampler,
    WithPerExampleNegatives,
)
from .splits import Interactions, Split

IMPRESSION_COLUMNS = ["user_idx", "item_idx", "timestamp", "position"]
DEFAULT_WINDOW_SECONDS = 3600  # one hour: MovieLens users rate in short sessions
DEFAULT_CHUNK = 2048  # visits scored at once


class LoggingPolicy(Protocol):
    def __call__(self, user_idx: np.ndarray, timestamps: np.ndarray) -> np.ndarray:
        """``[n]`` users and visit times -> ``[n, n_items]`` scores; ``-inf`` marks items that cannot be shown."""
        ...


class PastPopularity:
    """Logging policy: an item's score is ``log(number of ratings strictly before t)``, by all users.

    Items with no rating before ``t`` get ``-inf`` (not yet in the policy's log, cannot be shown). The
    counts at time ``t`` use only ratings with ``timestamp < t``, so no future popularity leaks in.
    """

    def __init__(self, train: Interactions):
        frame = train.frame
        self.n_items = train.n_items
        items = frame["item_idx"].to_numpy(dtype=np.int64)
        times = frame["timestamp"].to_numpy(dtype=np.int64)
        self._span = int(times.max() - times.min()) + 2 if len(times) else 2
        self._t0 = int(times.min()) - 1 if len(times) else 0
        keys = items * self._span + (times - self._t0)
        self._keys = np.sort(keys)
        self._item_start = np.searchsorted(self._keys, np.arange(self.n_items, dtype=np.int64) * self._span)

    def counts(self, timestamps: np.ndarray) -> np.ndarray:
        """``[n]`` times -> ``[n, n_items]`` counts of ratings strictly before each time."""
        # offsets of ratings are 1 .. span - 1; a query at offset span counts all of an item's ratings
        t = np.clip(np.asarray(timestamps, dtype=np.int64) - self._t0, 0, self._span)
        queries = np.arange(self.n_items, dtype=np.int64)[None, :] * self._span + t[:, None]
        return np.searchsorted(self._keys, queries, side="left") - self._item_start[None, :]

    def __call__(self, user_idx: np.ndarray, timestamps: np.ndarray) -> np.ndarray:
        counts = self.counts(timestamps).astype(np.float64)
        with np.errstate(divide="ignore"):
            return np.log(counts)  # log(0) = -inf: never rated yet, cannot be shown


class FixedScorer:
    """Logging policy from a fitted recommender (``score(user_idx) -> [n, n_items]``); ignores time.

    A model is a fixed snapshot: if it was fitted on the data being simulated, early visits are served by
    a model that has seen their future. Use it to study "impressions from a model-based policy", not to
    avoid leakage.
    """

    def __init__(self, recommender):
        self.recommender = recommender

    def __call__(self, user_idx: np.ndarray, timestamps: np.ndarray) -> np.ndarray:
        with torch.no_grad():
            scores = self.recommender.score(torch.as_tensor(np.asarray(user_idx, dtype=np.int64)))
        return scores.double().numpy()


def visit_events(train: Interactions, max_events_per_user: int | None = None, seed: int = 0) -> pd.DataFrame:
    """The visits a slate is shown at: distinct ``(user_idx, timestamp)`` of the training ratings, sorted.

    With ``max_events_per_user``, a seeded uniform subset of at most that many visits per user is kept.
    """
    events = (
        train.frame[["user_idx", "timestamp"]].drop_duplicates().sort_values(["user_idx", "timestamp"], kind="stable")
    )
    events = events.reset_index(drop=True)
    if max_events_per_user is not None:
        rng = np.random.default_rng(seed)
        order = rng.permutation(len(events))  # a random rank per visit, then keep the first few per user
        rank = pd.Series(order, index=events.index).groupby(events["user_idx"]).rank(method="first")
        events = events[rank.to_numpy() <= max_events_per_user].reset_index(drop=True)
    return events


def _rating_time_rows(frame: pd.DataFrame, users: np.ndarray, n_items: int) -> tuple[np.ndarray, np.ndarray]:
    """For the distinct ``users``: a ``[n_users_chunk, n_items]`` table of each item's rating time
    (``+inf`` if never rated) and the row of each user in it. MovieLens has one rating per (user, item);
    should there be several, the earliest counts."""
    unique, row_of = np.unique(users, return_inverse=True)
    rows = frame[frame["user_idx"].isin(unique)]
    table = np.full((len(unique), n_items), np.inf)
    r = np.searchsorted(unique, rows["user_idx"].to_numpy())
    np.minimum.at(table, (r, rows["item_idx"].to_numpy()), rows["timestamp"].to_numpy(dtype=np.float64))
    return table, row_of


def simulate_impressions(
    train: Interactions,
    policy: str | LoggingPolicy = "popular",
    slate_size: int = 10,
    window_seconds: float = DEFAULT_WINDOW_SECONDS,
    temperature: float = 1.0,
    max_events_per_user: int | None = None,
    seed: int = 0,
    keep_engaged: bool = False,
    chunk_size: int = DEFAULT_CHUNK,
) -> pd.DataFrame:
    """Simulate what a logging policy showed each user, and which of it the user engaged with.

    At each visit (:func:`visit_events`) the ``policy`` (``"popular"`` = :class:`PastPopularity` on
    ``train``, or a callable ``(user_idx, timestamps) -> [n, n_items]`` scores) ranks the items the user has
    not rated before the visit; a slate of ``slate_size`` items is the top by score (``temperature=0``) or
    drawn without replacement with probabilities ``softmax(score / temperature)`` (seeded Gumbel top-k).
    With the default popularity policy and ``temperature=1`` an item is drawn in proportion to its number of
    past ratings. A slate item the user rated (in ``train``) within ``[t, t + window_seconds]`` is engaged.

    Returns the **impressions without engagement** (``user_idx, item_idx, timestamp, position``; one row
    per shown, not-rated item; ``position`` 0 = first in the slate). With ``keep_engaged=True``, every
    impression, with a bool ``engaged`` column. Deterministic for a given ``seed``.
    """
    if slate_size < 1:
        raise ValueError(f"slate_size must be at least 1, got {slate_size}")
    if window_seconds < 0 or temperature < 0:
        raise ValueError("window_seconds and temperature must be non-negative")
    if isinstance(policy, str):
        if policy != "popular":
            raise ValueError(f"unknown policy {policy!r}: use 'popular' or a callable (user_idx, timestamps) -> scores")
        policy = PastPopularity(train)
    rng = np.random.default_rng(seed)
    events = visit_events(train, max_events_per_user, seed)
    users_all = events["user_idx"].to_numpy(dtype=np.int64)
    times_all = events["timestamp"].to_numpy(dtype=np.int64)
    n_items = train.n_items
    k = min(slate_size, n_items)
    parts = []
    for start in range(0, len(events), chunk_size):
        users, times = users_all[start : start + chunk_size], times_all[start : start + chunk_size]
        scores = np.asarray(policy(users, times), dtype=np.float64)
        if scores.shape != (len(users), n_items):
            raise ValueError(f"policy returned shape {scores.shape}, expected ({len(users)}, {n_items})")
        rated_at, row = _rating_time_rows(train.frame, users, n_items)
        rated_at = rated_at[row]  # [n, n_items]
        scores = np.where(rated_at < times[:, None], -np.inf, scores)  # never show what the user already rated
        if temperature > 0:
            keys = scores / temperature + rng.gumbel(size=scores.shape)
        else:
            keys = scores + 0.0
        # top-k by key; ties (temperature 0) go to the lower item index (stable sort of -key)
        slate = np.argsort(-keys, axis=1, kind="stable")[:, :k]
        shown = np.isfinite(np.take_along_axis(scores, slate, axis=1))  # fewer than k showable items
        when = np.take_along_axis(rated_at, slate, axis=1)
        engaged = (when >= times[:, None]) & (when <= times[:, None] + window_seconds)
        e, pos = np.nonzero(shown)
        parts.append(
            pd.DataFrame(
                {
                    "user_idx": users[e],
                    "item_idx": slate[e, pos],
                    "timestamp": times[e],
                    "position": pos.astype(np.int64),
                    "engaged": engaged[e, pos],
                }
            )
        )
    out = pd.concat(parts, ignore_index=True) if parts else pd.DataFrame(columns=IMPRESSION_COLUMNS + ["engaged"])
    return out if keep_engaged else _without_engagement(out)


def _without_engagement(log: pd.DataFrame) -> pd.DataFrame:
    """The impressions without engagement of a ``keep_engaged=True`` log, as ``simulate_impressions`` returns them."""
    return log.loc[~log["engaged"].astype(bool), IMPRESSION_COLUMNS].reset_index(drop=True)


def impression_summary(log: pd.DataFrame, n_users: int) -> pd.Series:
    """A few numbers about a log from ``simulate_impressions(..., keep_engaged=True)``, for a table."""
    negatives = log[~log["engaged"]]
    pool = negatives[["user_idx", "item_idx"]].drop_duplicates()
    per_user = pool.groupby("user_idx").size().reindex(range(n_users), fill_value=0)
    return pd.Series(
        dtype=object,
        data={
            "visits": int(log[["user_idx", "timestamp"]].drop_duplicates().shape[0]),
            "impressions": len(log),
            "engaged share": round(float(log["engaged"].mean()), 4),
            "impressions without engagement": len(negatives),
            "distinct (user, item) negatives": len(pool),
            "distinct items among them": int(pool["item_idx"].nunique()),
            "negatives per user: median": float(per_user.median()),
            "users without impression negatives": int((per_user == 0).sum()),
        },
    )


# --------------------------------------------------------------------------- one log per training set


def _fingerprint(examples: pd.DataFrame) -> tuple[int, int, int, int]:
    return (
        len(examples),
        int(examples["user_idx"].to_numpy(dtype=np.int64).sum()),
        int(examples["item_idx"].to_numpy(dtype=np.int64).sum()),
        int(examples["timestamp"].to_numpy(dtype=np.int64).sum()),
    )


@dataclass
class ImpressionLog:
    """Impressions without engagement, simulated separately for each training set a fit will see.

    :func:`tt_helpers.experiments.fit_on_split` trains twice: on the validation split's train part (to pick
    the number of epochs) and on the split's train part. Each gets the log simulated from its own
    training data, so that no label of "not engaged" is decided by data the fit must not see. Pass it as
    ``extras={"impressions": log}``; samplers call :meth:`for_training`.
    """

    logs: dict[tuple, pd.DataFrame] = field(default_factory=dict)  # fingerprint of the examples -> log
    names: dict[tuple, str] = field(default_factory=dict)
    # every impression simulated on the split's train part, with its bool ``engaged`` column (for summaries)
    train_with_engaged: pd.DataFrame | None = None

    def add(self, train: Interactions, log: pd.DataFrame, name: str) -> None:
        for rule in ("liked", "any"):  # "weighted" has the rows of "any"
            key = _fingerprint(positive_examples(train, rule))
            self.logs[key], self.names[key] = log, name

    @classmethod
    def for_split(cls, split: Split, **simulation_kwargs) -> ImpressionLog:
        """Simulate on ``split.train`` and on ``split.validation().train`` with the same settings.

        The train part's whole log (engaged impressions included) is kept as :attr:`train_with_engaged`, so
        that a summary needs no third simulation."""
        if "keep_engaged" in simulation_kwargs:
            raise ValueError("ImpressionLog keeps impressions without engagement; see train_with_engaged")
        out = cls()
        validation = split.validation()
        out.add(validation.train, simulate_impressions(validation.train, **simulation_kwargs), "validation train")
        everything = simulate_impressions(split.train, keep_engaged=True, **simulation_kwargs)
        out.train_with_engaged = everything
        out.add(split.train, _without_engagement(everything), "train")
        return out

    def for_training(self, data: TrainingData) -> pd.DataFrame:
        """The log simulated from the training set ``data`` was built from."""
        key = _fingerprint(data.examples)
        if key not in self.logs:
            raise ValueError(
                "no impressions were simulated for this training set: build the ImpressionLog from the same "
                "split (ImpressionLog.for_split) that the model is fitted on"
            )
        return self.logs[key]

    @property
    def train(self) -> pd.DataFrame:
        return self.logs[next(k for k, n in self.names.items() if n == "train")]


def impressions_of(data: TrainingData, key: str = "impressions") -> pd.DataFrame:
    """The impression negatives in ``data.extras[key]``: an :class:`ImpressionLog` or a plain frame.

    A plain frame is used as given for every fit, validation included: make sure it was simulated from
    data the fit may see.
    """
    if key not in data.extras:
        raise KeyError(
            f"no {key!r} in TrainingData.extras: pass extras={{{key!r}: ImpressionLog.for_split(split)}} "
            "to the recommender"
        )
    source = data.extras[key]
    return source.for_training(data) if isinstance(source, ImpressionLog) else source


# --------------------------------------------------------------------------- samplers


def _is_pair(positives: PositiveSet, users: torch.Tensor, items: torch.Tensor) -> torch.Tensor:
    """Element-wise "is ``(users[k], items[k])`` a positive?" (``PositiveSet.contains`` tests all pairs)."""
    keys = users * positives.n_items + items
    pos = torch.searchsorted(positives.keys, keys).clamp(max=max(len(positives.keys) - 1, 0))
    return positives.keys[pos] == keys if len(positives.keys) else torch.zeros(len(keys), dtype=torch.bool)


class ImpressionNegativeSampler(NegativeSampler):
    """Per-example negatives ``[B, num_negatives]`` drawn uniformly, with replacement, from the distinct items
    the example's user was shown and did not engage with (the user's *pool*).

    * Items that are training positives of the user are left out of the pool (the loss would mask them as
      accidental hits anyway), as is anything shown and rated later outside the window if it is a positive.
    * Users with an empty pool **fall back to uniform draws from the whole catalogue**, so every example
      still gets ``num_negatives`` candidates; :attr:`fallback_users` counts them.

    **Why ``log_q = 0``.** The logQ correction makes a sampled softmax a consistent estimate (biased for a
    finite sample, the bias vanishing as the sample grows) of the softmax over the *whole catalogue*.
    Impression negatives are not a proposal for that softmax: most items have zero probability of being drawn
    for a given user, so no reweighting can recover the catalogue softmax from them. They are *labelled*
    negatives ("shown, not chosen"), and the loss is the softmax over the positive and these items. The true
    proposal (``num_negatives / pool size``, constant for a user) would change nothing if subtracted from
    every logit of the row, and subtracted from the negatives alone it would only rescale each user's
    negatives by pool size. Hence ``log_q = 0`` for the candidates and for the positive (:meth:`log_q_of`):
    turning ``logq_correction`` on or off does not change this sampler.
    """

    def __init__(
        self,
        impressions: pd.DataFrame,
        n_items: int,
        n_users: int,
        num_negatives: int = 32,
        positives: PositiveSet | None = None,
    ):
        if num_negatives < 1:
            raise ValueError(f"num_negatives must be at least 1, got {num_negatives}")
        self.n_items, self.n_users, self.num_negatives = n_items, n_users, num_negatives
        pool = impressions[["user_idx", "item_idx"]].drop_duplicates()
        users = torch.as_tensor(pool["user_idx"].to_numpy(dtype=np.int64, copy=True))
        items = torch.as_tensor(pool["item_idx"].to_numpy(dtype=np.int64, copy=True))
        if positives is not None and len(users):
            keep = ~_is_pair(positives, users, items)
            users, items = users[keep], items[keep]
        order = torch.argsort(users * n_items + items)
        users, self.pool = users[order], items[order]
        self.lengths = torch.bincount(users, minlength=n_users)[:n_users]
        self.offsets = torch.cumsum(self.lengths, 0) - self.lengths

    @classmethod
    def from_training(
        cls, data: TrainingData, num_negatives: int = 32, key: str = "impressions"
    ) -> ImpressionNegativeSampler:
        impressions = impressions_of(data, key)
        n_users = (
            int(max(data.examples["user_idx"].max(), impressions["user_idx"].max() if len(impressions) else -1)) + 1
        )
        return cls(impressions, data.n_items, n_users, num_negatives, data.positives)

    @property
    def fallback_users(self) -> int:
        """Users whose pool is empty (they get uniform catalogue draws)."""
        return int((self.lengths == 0).sum())

    def pool_of(self, user: int) -> torch.Tensor:
        """The distinct items user ``user`` may get as impression negatives (sorted)."""
        start = int(self.offsets[user])
        return self.pool[start : start + int(self.lengths[user])]

    def sample(self, batch: Batch, generator: torch.Generator, model=None, users=None) -> Negatives:
        known = batch.user_idx < self.n_users  # users beyond the log have no pool
        u = batch.user_idx.clamp(max=self.n_users - 1)
        shape = (len(u), self.num_negatives)
        length = (self.lengths[u] * known).unsqueeze(1)
        # both draws happen for every example, so the random stream does not depend on who has a pool
        pick = (torch.rand(shape, generator=generator) * length).long().clamp(max=(length - 1).clamp(min=0))
        fallback = torch.randint(self.n_items, shape, generator=generator)
        if len(self.pool):
            index = (self.offsets[u].unsqueeze(1) + pick).clamp(max=len(self.pool) - 1)
            ids = torch.where(length > 0, self.pool[index], fallback)
        else:
            ids = fallback
        return Negatives(ids, torch.zeros(shape))

    def log_q_of(self, item_idx: torch.Tensor, batch_size: int) -> torch.Tensor:
        return torch.zeros(item_idx.shape)


def _split_count(num_negatives: int, share: float) -> tuple[int, int]:
    if not 0 < share <= 1:
        raise ValueError(f"share of impression negatives must be in (0, 1], got {share}")
    n_imp = max(1, int(round(share * num_negatives)))
    return num_negatives - n_imp, n_imp


@dataclass(frozen=True)
class _ImpressionsOnly:
    num_negatives: int
    key: str

    def __call__(self, data: TrainingData) -> NegativeSampler:
        return ImpressionNegativeSampler.from_training(data, self.num_negatives, self.key)


@dataclass(frozen=True)
class _RandomAndImpressions:
    num_negatives: int
    share: float
    key: str
    extra_log_q: str = "base"

    def __call__(self, data: TrainingData) -> NegativeSampler:
        n_random, n_imp = _split_count(self.num_negatives, self.share)
        imp = ImpressionNegativeSampler.from_training(data, n_imp, self.key)
        if n_random == 0:
            return imp
        return WithPerExampleNegatives(UniformSampler(data.n_items, n_random), imp, extra_log_q=self.extra_log_q)


@dataclass(frozen=True)
class _StagedImpressions:
    random_epochs: int
    later: _RandomAndImpressions

    def __call__(self, data: TrainingData) -> NegativeSampler:
        first = UniformSampler(data.n_items, self.later.num_negatives)
        return ScheduledSampler([(1, first), (self.random_epochs + 1, self.later(data))])


# The factories are small frozen classes rather than closures so that a fitted recommender whose config
# holds one can be pickled (it comes back from a worker process, :mod:`tt_helpers.workers`).


def impression_negatives(num_negatives: int = 32, key: str = "impressions") -> SamplerFactory:
    """``TrainConfig.negatives`` factory: impression negatives only (:class:`ImpressionNegativeSampler`)."""
    return _ImpressionsOnly(num_negatives, key)


def random_and_impressions(
    num_negatives: int = 256, share: float = 0.1, key: str = "impressions", weight: str = "like uniform"
) -> SamplerFactory:
    """``TrainConfig.negatives`` factory: ``num_negatives`` candidates in all, a ``share`` of them impression
    negatives (per example) and the rest uniform over the catalogue (shared by the batch). With
    ``share=1`` no uniform candidates are left: that is :func:`impression_negatives`.

    The impression negatives get the ``log_q`` of a uniform draw (``extra_log_q="base"`` of
    :class:`tt_helpers.sampling.WithPerExampleNegatives`): each weighs in the softmax exactly like one random
    negative, i.e. they are extra *labelled* negatives. Giving them their own proposal probability
    (``m / pool size``, far above the uniform ``1 / n_items``) would shrink their weight by the ratio and, in
    expectation, cancel the emphasis they are added for (see :class:`ImpressionNegativeSampler`).
    ``weight="uncorrected"`` gives them ``log_q = 0`` instead while the uniform candidates keep their
    correction, so each impression weighs ``n_items / M`` times less than a uniform draw (the comparison of
    chapter 3)."""
    _split_count(num_negatives, share)  # validates the share now, not at the first fit
    modes = {"like uniform": "base", "uncorrected": "sampler"}
    if weight not in modes:
        raise ValueError(f"weight must be one of {list(modes)}, got {weight!r}")
    return _RandomAndImpressions(num_negatives, share, key, modes[weight])


def staged_impressions(
    random_epochs: int = 3, num_negatives: int = 256, share: float = 0.1, key: str = "impressions"
) -> SamplerFactory:
    """``TrainConfig.negatives`` factory for the staged schedule: ``num_negatives`` uniform (random)
    negatives for the first ``random_epochs`` epochs, then :func:`random_and_impressions` with ``share``
    (via :class:`tt_helpers.sampling.ScheduledSampler`). Early stopping may end training before the
    switch; then the model never saw an impression negative (check the best epoch). To switch at the
    first phase's validation plateau instead, with the second phase early-stopped on its own, give
    :func:`tt_helpers.experiments.run_variants` the pair ``(first_config, second_config)``."""
    if random_epochs < 1:
        raise ValueError(f"random_epochs must be at least 1, got {random_epochs}")
    return _StagedImpressions(random_epochs, random_and_impressions(num_negatives, share, key))


# --------------------------------------------------------------------------- diagnostics


def score_separation(recommender, pairs: pd.DataFrame, n_items: int, seed: int = 0) -> dict[str, float]:
    """Do the model's scores tell true pairs from random ones?

    ``pairs``: ``user_idx, item_idx`` of true (e.g. test-positive) pairs. Each is matched with a random item
    for the same user (uniform over the catalogue, seeded). Returns the mean score of each kind and the
    AUC, the probability that a true pair outscores the random pair of the same user (ties count half):
    0.5 means the model cannot tell them apart.
    """
    users = torch.as_tensor(pairs["user_idx"].to_numpy(dtype=np.int64, copy=True))
    items = torch.as_tensor(pairs["item_idx"].to_numpy(dtype=np.int64, copy=True))
    random_items = torch.randint(n_items, (len(users),), generator=torch.Generator().manual_seed(seed))
    with torch.no_grad():
        scores = recommender.score(users)
    true = scores.gather(1, items.unsqueeze(1)).squeeze(1).double()
    rand = scores.gather(1, random_items.unsqueeze(1)).squeeze(1).double()
    auc = ((true > rand).double() + 0.5 * (true == rand).double()).mean()
    return {
        "mean score, true pairs": float(true.mean()),
        "mean score, random pairs": float(rand.mean()),
        "score std, all pairs": float(torch.cat([true, rand]).std()),
        "AUC (true vs random pair)": float(auc),
    }
