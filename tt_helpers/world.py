"""A semi-synthetic world with known ground truth, in which claims about impression negatives can be tested.

MovieLens records what users rated, not what they were shown, and its users' choices do not depend on any
slate. This module builds the missing part around the real data, with every assumption a parameter of
:class:`WorldConfig`:

1. **Ground truth.** EASE (Steck 2019) fitted on *every* MovieLens 100K rating scores each (user, item)
   pair; the scores, standardised over all pairs (``z``), define the true engagement probability
   ``p(u, i) = sigmoid(preference_strength * z + offset)``. ``preference_strength`` is how much
   engagement follows preference (0: pure noise, every item equally likely); ``offset`` is **calibrated**
   (:func:`calibrate_offset`) so that a slate drawn uniformly from the catalogue is engaged with at
   ``engaged_share`` (2% by default): the rate of an unpersonalised feed. The calibration leaves position
   bias out: with ``position_decay > 0`` a uniform slate is engaged with less. A personalised slate is engaged
   with more often, as a good recommender should be; :meth:`World.summary` reports the rates observed.
2. **Visits and slates.** Simulated time is cut into ``periods``. In each period every user visits with
   ``visit_probability`` and is shown a slate of ``slate_size`` items never engaged with before. A share
   ``exploration`` of the slots, at random positions, holds items drawn uniformly (exploration); the other
   slots, in rank order, hold the top items of the **logging policy**.
3. **The logging policy respects time.** Before each period it is re-fitted (EASE with ``policy_l2``) on
   the engagements logged in the *earlier* periods only; in period 0 nothing is logged yet and every slot
   is exploration. A user who has engaged with nothing yet gets the items engaged with most so far (ties
   broken at random), as a recommender serves a newcomer. ``exploration`` is the dial of
   personalisation: 1 is a random feed, 0 a feed shown entirely by the policy. The policy learns from
   engagements only, not from skips, and there is no fatigue: an item it ranks high that the user skips
   is shown again the next week.
4. **Engagement depends on what was shown.** Each shown item is engaged with ``p(u, i)`` times the
   examination probability of its position, ``1 / (1 + position) ** position_decay`` (0: no position
   bias). Engaged items are the positives; the others are the **impressions without engagement**, the
   negative impressions.
5. **Time cuts.** The last period is the test period and the one before it validation
   (:meth:`World.split`); each training set gets only the impressions of its own periods
   (:meth:`World.impression_log`), so nothing from a later period builds an earlier period's negatives.
6. **Truth-based evaluation.** Besides held-out engagements, :meth:`World.truth_split` asks for each user's
   truly best items (highest ``p``, not engaged in training): a measure no real log can give.

Every draw comes from generators seeded by ``(seed, period)``, so a world is the same on every run.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np
import pandas as pd
import torch

from .baselines import EASE, ease_item_weights
from .catalog import Catalog
from .impressions import ImpressionLog
from .splits import Interactions, Split

__all__ = ["World", "WorldConfig", "calibrate_offset", "simulate_world", "true_preference_scores"]

PERIOD_SECONDS = 7 * 86400  # one simulated week per period
WORLD_COLUMNS = ["user_idx", "item_idx", "timestamp", "period", "position", "source", "probability", "engaged"]


@dataclass(frozen=True)
class WorldConfig:
    """Every assumption of the world (see the module docstring)."""

    periods: int = 10  # simulated weeks: the last is test, the one before it validation
    visit_probability: float = 1.0  # chance that a user visits in a period
    slate_size: int = 50  # items shown per visit
    exploration: float = 0.2  # share of slots filled uniformly at random (1: no personalisation)
    preference_strength: float = 2.0  # how much engagement follows the true preference (0: pure noise)
    engaged_share: float = 0.02  # calibration target: engagement rate of a uniformly random slate
    position_decay: float = 0.0  # examination probability 1 / (1 + position) ** decay
    policy_l2: float = 200.0  # EASE regularisation of the logging policy
    truth_l2: float = 500.0  # EASE regularisation of the ground truth
    seed: int = 0

    def __post_init__(self):
        problems = []
        if isinstance(self.periods, bool) or not isinstance(self.periods, int) or self.periods < 3:
            problems.append(f"periods must be an integer of at least 3 (train, validation, test), got {self.periods!r}")
        if isinstance(self.slate_size, bool) or not isinstance(self.slate_size, int) or self.slate_size < 1:
            problems.append(f"slate_size must be a positive integer, got {self.slate_size!r}")
        for name in ("visit_probability", "engaged_share"):
            if not 0 < getattr(self, name) <= 1:
                problems.append(f"{name} must be in (0, 1], got {getattr(self, name)!r}")
        if not 0 <= self.exploration <= 1:
            problems.append(f"exploration must be in [0, 1], got {self.exploration!r}")
        if self.engaged_share >= 1:
            problems.append("engaged_share must be below 1")
        for name in ("preference_strength", "position_decay"):
            if getattr(self, name) < 0:
                problems.append(f"{name} must be non-negative, got {getattr(self, name)!r}")
        for name in ("policy_l2", "truth_l2"):
            if not getattr(self, name) > 0:
                problems.append(f"{name} must be positive, got {getattr(self, name)!r}")
        if problems:
            raise ValueError("invalid WorldConfig: " + "; ".join(problems))


def true_preference_scores(ratings: pd.DataFrame, catalog: Catalog, l2: float = 500.0) -> torch.Tensor:
    """``[n_users, n_items]`` standardised EASE scores fitted on every rating (any rating means "chose it").

    Standardised over all pairs (mean 0, standard deviation 1), so that ``preference_strength`` has the
    same meaning whatever the data."""
    frame = ratings[["user_id", "item_id", "timestamp"]].copy()
    frame["user_idx"] = catalog.user_index(frame["user_id"])
    frame["item_idx"] = catalog.item_index(frame["item_id"])
    scores = EASE(l2, interactions="all").fit(Interactions(frame, catalog)).score(torch.arange(catalog.n_users))
    return (scores - scores.mean()) / scores.std()


def calibrate_offset(logits: torch.Tensor, target: float, iterations: int = 40) -> float:
    """The ``b`` for which ``mean(sigmoid(logits + b)) == target``, by bisection (the mean rises with ``b``)."""
    if not 0 < target < 1:
        raise ValueError(f"target must be in (0, 1), got {target!r}")
    x = logits.double().reshape(-1)
    low, high = -60.0 - float(x.max()), 60.0 - float(x.min())
    for _ in range(iterations):
        middle = (low + high) / 2
        if float(torch.sigmoid(x + middle).mean()) < target:
            low = middle
        else:
            high = middle
    return (low + high) / 2


@dataclass
class World:
    """A simulated log: every impression (engaged or not) and the truth behind it.

    ``log``: one row per shown item, columns :data:`WORLD_COLUMNS` (``source`` is ``"policy"`` or
    ``"exploration"``, ``probability`` the true engagement probability times examination, ``engaged`` a
    bool). ``probabilities``: the true engagement probability of every pair ``[n_users, n_items]`` (without
    position bias)."""

    config: WorldConfig
    catalog: Catalog
    log: pd.DataFrame
    probabilities: torch.Tensor
    offset: float
    _split: Split | None = field(default=None, repr=False)

    @property
    def engagements(self) -> pd.DataFrame:
        """The engaged impressions as interactions (``user_id, item_id, timestamp, period``): the positives."""
        engaged = self.log[self.log["engaged"]]
        frame = pd.DataFrame({
            "user_id": self.catalog.user_ids[engaged["user_idx"].to_numpy()],
            "item_id": self.catalog.item_ids[engaged["item_idx"].to_numpy()],
            "timestamp": engaged["timestamp"].to_numpy(),
            "user_idx": engaged["user_idx"].to_numpy(),
            "item_idx": engaged["item_idx"].to_numpy(),
            "period": engaged["period"].to_numpy(),
        })
        return frame.sort_values(["timestamp", "user_idx", "item_idx"], kind="stable").reset_index(drop=True)

    def split(self) -> Split:
        """Train on the periods before the last, test on the last; its validation split holds out the last
        training period the same way. Every engagement is a positive."""
        if self._split is None:
            self._split = _period_split(self.engagements, self.catalog, self.config.periods - 1)
        return self._split

    def impression_log(self) -> ImpressionLog:
        """Impressions without engagement for each training set a fit sees: those of the training periods
        for the split's train part, those before the validation period for the validation train part."""
        split = self.split()
        out = ImpressionLog()
        test_period, validation_period = self.config.periods - 1, self.config.periods - 2
        skipped = self.log[~self.log["engaged"]]
        out.add(split.validation().train, skipped[skipped["period"] < validation_period].reset_index(drop=True),
                "validation train")
        out.add(split.train, skipped[skipped["period"] < test_period].reset_index(drop=True), "train")
        out.train_with_engaged = self.log[self.log["period"] < test_period].reset_index(drop=True)
        return out

    def truth_split(self, top_n: int = 20, shown_only: bool = False) -> Split:
        """The split with its test part replaced by each test user's ``top_n`` truly best items: the highest
        true engagement probability among the items the user did not engage with in training.

        ``shown_only=True`` keeps only the items the user was *shown* in the training weeks (and did not
        engage with in them): the truth a model can be judged on where impression negatives reach. A user
        shown fewer than ``top_n`` such items keeps those there are."""
        split = self.split()
        users = np.unique(split.test.frame["user_idx"].to_numpy())
        p = self.probabilities[torch.as_tensor(users)].clone()
        if shown_only:
            log = self.log[(self.log["period"] < self.config.periods - 1) & self.log["user_idx"].isin(users)]
            shown = torch.zeros_like(p, dtype=torch.bool)
            shown[torch.as_tensor(np.searchsorted(users, log["user_idx"].to_numpy())),
                  torch.as_tensor(log["item_idx"].to_numpy(dtype=np.int64, copy=True))] = True
            p = p.masked_fill(~shown, -1.0)
        train = split.train.frame
        seen = np.isin(train["user_idx"].to_numpy(), users)
        rows = np.searchsorted(users, train["user_idx"].to_numpy()[seen])
        p[torch.as_tensor(rows), torch.as_tensor(train["item_idx"].to_numpy(dtype=np.int64)[seen])] = -1.0
        top_p, best = torch.topk(p, top_n, dim=1)
        keep = (top_p >= 0).numpy().reshape(-1)  # -1: engaged in training, or (shown_only) never shown
        frame = pd.DataFrame({
            "user_idx": np.repeat(users, top_n)[keep],
            "item_idx": best.numpy().reshape(-1)[keep],
        })
        frame["user_id"] = self.catalog.user_ids[frame["user_idx"].to_numpy()]
        frame["item_id"] = self.catalog.item_ids[frame["item_idx"].to_numpy()]
        frame["timestamp"] = int(split.test.frame["timestamp"].min())
        frame = frame[["user_id", "item_id", "timestamp", "user_idx", "item_idx"]]
        among = "shown in training and not engaged with" if shown_only else "not engaged in training"
        protocol = f"truth: each test user's {top_n} truly best items {among}"
        return Split(split.train, Interactions(frame, self.catalog), protocol, split.resplit)

    def negative_profile(self, seed: int = 0, would_like_top: int = 100) -> pd.DataFrame:
        """What each kind of negative is, for the training examples (engagements) of :meth:`split`: one
        negative per example of each kind, drawn with ``seed``.

        Kinds: ``"uniform"`` (an item drawn uniformly from the catalogue), ``"in-batch"`` (another example's
        positive: drawn in proportion to popularity) and ``"impression"`` (one of the user's training-period
        impressions without engagement, where the user has one). As in training, a draw that is one of the
        user's training engagements is not a negative (the loss masks it, the impression sampler leaves it
        out of the pool): such draws are left out, and ``negatives`` counts the rest. Columns: the item's
        number of training engagements, its true engagement probability for the example's user, and the share
        of negatives the user "would like" (the item is among the user's ``would_like_top`` truest items)."""
        train = self.split().train.frame
        users = train["user_idx"].to_numpy(dtype=np.int64, copy=True)
        items = train["item_idx"].to_numpy(dtype=np.int64, copy=True)
        rng = np.random.default_rng(seed)
        n_items = self.catalog.n_items
        positive = np.zeros((self.catalog.n_users, n_items), dtype=bool)
        positive[users, items] = True  # the user's training engagements: never a negative for the loss
        skipped = self.log[(~self.log["engaged"]) & (self.log["period"] < self.config.periods - 1)]
        pool = skipped[["user_idx", "item_idx"]].drop_duplicates().sort_values(["user_idx", "item_idx"])
        pool = pool[~positive[pool["user_idx"].to_numpy(), pool["item_idx"].to_numpy()]]  # as the sampler does
        starts = np.searchsorted(pool["user_idx"].to_numpy(), np.arange(self.catalog.n_users + 1))
        counts = starts[1:] - starts[:-1]
        has_pool = counts[users] > 0
        pick = starts[users] + (rng.random(len(users)) * counts[users]).astype(np.int64)
        impression = pool["item_idx"].to_numpy()[np.minimum(pick, len(pool) - 1)] if len(pool) else pick
        negatives = {
            "uniform": (rng.integers(n_items, size=len(users)), np.ones(len(users), dtype=bool)),
            "in-batch": (items[rng.permutation(len(users))], np.ones(len(users), dtype=bool)),
            "impression": (impression, has_pool),
        }
        popularity = np.bincount(items, minlength=n_items)
        rank = torch.argsort(torch.argsort(self.probabilities, dim=1, descending=True), dim=1).numpy()
        rows = {}
        for kind, (drawn, valid) in negatives.items():
            valid = valid & ~positive[users, drawn]  # accidental hits: masked by the loss, left out here
            u, i = users[valid], drawn[valid]
            rows[kind] = {
                "negatives": int(valid.sum()),
                "median training engagements": float(np.median(popularity[i])),
                "mean true probability": float(self.probabilities[torch.as_tensor(u), torch.as_tensor(i)].mean()),
                f"share in the user's true top {would_like_top}": float((rank[u, i] < would_like_top).mean()),
            }
        rows["(the positives)"] = {
            "negatives": len(users),
            "median training engagements": float(np.median(popularity[items])),
            "mean true probability": float(self.probabilities[torch.as_tensor(users), torch.as_tensor(items)].mean()),
            f"share in the user's true top {would_like_top}": float((rank[users, items] < would_like_top).mean()),
        }
        out = pd.DataFrame(rows).T
        out["negatives"] = out["negatives"].astype(int)
        out.index.name = "kind"
        return out

    def summary(self) -> pd.DataFrame:
        """Per period: visits, impressions, engagements and the engaged share, by slot source."""
        rows = {}
        for period, part in self.log.groupby("period"):
            policy = part[part["source"] == "policy"]
            explore = part[part["source"] == "exploration"]
            rows[period] = {
                "visits": int(part.groupby(["user_idx", "timestamp"]).ngroups),
                "impressions": len(part),
                "engagements": int(part["engaged"].sum()),
                "engaged share": float(part["engaged"].mean()),
                "engaged share, policy slots": float(policy["engaged"].mean()) if len(policy) else np.nan,
                "engaged share, exploration slots": float(explore["engaged"].mean()) if len(explore) else np.nan,
            }
        out = pd.DataFrame(rows).T
        out.index.name = "period"
        return out


def _period_split(frame: pd.DataFrame, catalog: Catalog, test_period: int) -> Split:
    columns = ["user_id", "item_id", "timestamp", "user_idx", "item_idx"]
    is_test = frame["period"].to_numpy() >= test_period
    train = Interactions(frame.loc[~is_test, columns + ["period"]].reset_index(drop=True), catalog)
    test = Interactions(frame.loc[is_test, columns + ["period"]].reset_index(drop=True), catalog)

    def resplit(f: pd.DataFrame, c: Catalog, threshold: float) -> Split:
        return _period_split(f, c, int(f["period"].max()))

    protocol = f"simulated periods: train 0-{test_period - 1}, test {test_period}; positive = engaged"
    return Split(train, test, protocol, resplit)


def _policy_scores(engaged: torch.Tensor, l2: float) -> torch.Tensor:
    """EASE (Steck 2019) on the binary ``[n_users, n_items]`` matrix of engagements logged so far: the
    logging policy's scores, with :func:`~tt_helpers.baselines.ease_item_weights`' fast single precision (a
    policy needs a good ranking, not the baseline's double precision)."""
    return engaged.float() @ ease_item_weights(engaged, l2, fast=True)


def simulate_world(ratings: pd.DataFrame, catalog: Catalog, config: WorldConfig = WorldConfig(),
                   truth_scores: torch.Tensor | None = None) -> World:
    """Simulate ``config.periods`` periods of visits, slates and engagement (see the module docstring).

    ``ratings``: every MovieLens rating, for the ground truth (``truth_scores`` may pass
    :func:`true_preference_scores` computed once for several worlds)."""
    z = true_preference_scores(ratings, catalog, config.truth_l2) if truth_scores is None else truth_scores
    if tuple(z.shape) != (catalog.n_users, catalog.n_items):
        raise ValueError(f"truth_scores must be [n_users, n_items] = {[catalog.n_users, catalog.n_items]}, "
                         f"got {list(z.shape)}")
    if config.slate_size * config.periods > catalog.n_items:
        raise ValueError(
            f"slate_size x periods = {config.slate_size * config.periods} exceeds the {catalog.n_items} items: a "
            "user could run out of items never engaged with; use smaller slates or fewer periods"
        )
    logits = config.preference_strength * z.double()
    offset = calibrate_offset(logits, config.engaged_share)  # a uniform slate's mean probability
    probabilities = torch.sigmoid(logits + offset).float()
    n_users, n_items, size = catalog.n_users, catalog.n_items, config.slate_size
    engaged_mask = torch.zeros(n_users, n_items, dtype=torch.bool)
    examination = 1.0 / (1.0 + torch.arange(size, dtype=torch.float64)) ** config.position_decay
    parts = []
    for period in range(config.periods):
        rng = np.random.default_rng([config.seed, period])
        generator = torch.Generator().manual_seed(int(rng.integers(2**62)))
        visitors = np.flatnonzero(rng.random(n_users) < config.visit_probability)
        if period == 0:
            n_policy = 0  # nothing logged yet: the whole slate explores
            scores = None
        else:
            n_policy = int(round((1 - config.exploration) * size))
            scores = _policy_scores(engaged_mask, config.policy_l2)
        users = torch.as_tensor(visitors)
        slate = torch.empty(len(users), size, dtype=torch.long)
        blocked = engaged_mask[users].clone()
        if n_policy:
            policy_scores = scores[users]
            newcomers = ~engaged_mask[users].any(1)  # nothing engaged yet: EASE scores them all 0
            if newcomers.any():  # the most engaged items so far, ties broken at random
                popularity = engaged_mask.sum(0).float()
                noise = torch.rand(int(newcomers.sum()), n_items, generator=generator) * 0.5
                policy_scores[newcomers] = popularity + noise
            policy_scores = policy_scores.masked_fill(blocked, float("-inf"))
            top = torch.topk(policy_scores, n_policy, dim=1).indices
            blocked.scatter_(1, top, True)
        # exploration: uniform over the items neither engaged before nor already on the slate
        noise = torch.rand(len(users), n_items, generator=generator).masked_fill(blocked, 2.0)
        explore = torch.topk(noise, size - n_policy, dim=1, largest=False).indices
        # exploration slots at random positions, the policy's items in rank order in the others
        slot_keys = torch.rand(len(users), size, generator=generator)
        explore_slots = torch.topk(slot_keys, size - n_policy, dim=1).indices
        is_explore = torch.zeros(len(users), size, dtype=torch.bool).scatter_(1, explore_slots, True)
        slate[is_explore] = explore.reshape(-1)
        if n_policy:
            slate[~is_explore] = top.reshape(-1)
        source = (~is_explore).numpy()
        p = probabilities[users.unsqueeze(1), slate].double() * examination
        engaged = torch.rand(len(users), size, generator=generator, dtype=torch.float64) < p
        engaged_mask[users.unsqueeze(1).expand(-1, size)[engaged], slate[engaged]] = True
        timestamps = period * PERIOD_SECONDS + torch.randint(PERIOD_SECONDS, (len(users),), generator=generator)
        part = pd.DataFrame({
            "user_idx": np.repeat(visitors, size),
            "item_idx": slate.reshape(-1).numpy(),
            "timestamp": np.repeat(timestamps.numpy(), size),
            "period": period,
            "position": np.tile(np.arange(size), len(users)),
            "source": np.where(source.reshape(-1), "policy", "exploration"),
            "probability": p.reshape(-1).numpy(),
            "engaged": engaged.reshape(-1).numpy(),
        })
        parts.append(part)
    log = pd.concat(parts, ignore_index=True)[WORLD_COLUMNS]
    return World(config, catalog, log, probabilities, offset)
