"""The book's one rule for "model A beats model B": a paired bootstrap over users.

Every chapter that claims one model is better than another uses :func:`compare`; no notebook defines its own
rule.

**Paired.** Both models are evaluated on the same split, so the same users see both. Some users are easy
(every model finds their items) and some are hard; that user-to-user variance is far larger than the gap
between two reasonable models, but it is shared by both. Taking the per-user difference ``a_u - b_u`` first
cancels it, and only the variance of the differences is left. An unpaired comparison of two means would
carry both models' user variance and call many real gaps noise.

**Over users, seeds averaged.** The interval is a bootstrap over users: it answers "how much would the gap
move if we had drawn a different set of users of the same kind?". Training-seed variation is not resampled;
each model's per-user metric is first averaged over its seeds (the book trains at least 3 seeds for every
model it compares), so a single lucky initialisation cannot decide a verdict, and what remains of the seed
noise is folded into the per-user values the bootstrap resamples.

**Percentile interval.** ``n_resamples`` times, the users are drawn with replacement (the same draw for both
models: only the per-user differences are resampled) and the mean difference is recomputed; the interval is
the ``(1 - confidence) / 2`` and ``(1 + confidence) / 2`` quantiles of those means. The draw is deterministic
for a given ``seed``.

**The rule.** A beats B when the whole interval is above 0 (``low > 0``), B beats A when it is below 0
(``high < 0``); otherwise the difference is *within the interval*. That does not mean the models are equal:
only that this split, with these users, cannot tell them apart at this confidence. The book says "within
the interval", never "equal" or "no difference".
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import dataclass

import numpy as np
import pandas as pd

PerUser = pd.DataFrame | Sequence[pd.DataFrame]

MIN_RESAMPLES = 100
# Bound on the number of bootstrap indices drawn at once (int64: 32 MiB), whatever the number of users.
_CHUNK_ELEMENTS = 1 << 22


@dataclass(frozen=True)
class Comparison:
    """Outcome of :func:`compare`: the mean paired difference ``a - b`` and its bootstrap interval."""

    a: str
    b: str
    metric: str
    mean_a: float
    mean_b: float
    difference: float  # mean over users of (a_u - b_u)
    low: float  # percentile bootstrap interval of the difference
    high: float
    confidence: float  # e.g. 0.95
    n_users: int
    n_seeds_a: int
    n_seeds_b: int

    @property
    def a_beats_b(self) -> bool:
        """The whole interval is above 0."""
        return self.low > 0

    @property
    def b_beats_a(self) -> bool:
        """The whole interval is below 0."""
        return self.high < 0

    @property
    def within_interval(self) -> bool:
        """The interval contains 0: this split cannot tell the models apart (which is not "equal")."""
        return self.low <= 0 <= self.high

    @property
    def verdict(self) -> str:
        if self.a_beats_b:
            return f"{self.a} beats {self.b}"
        if self.b_beats_a:
            return f"{self.b} beats {self.a}"
        return "within the interval"

    @property
    def interval_label(self) -> str:
        """Column name of the interval, e.g. "95% interval"."""
        return f"{self.confidence * 100:g}% interval"

    def as_row(self, digits: int = 4) -> dict:
        """One table row, every number rounded to ``digits``; the interval as a signed string "[+0.0012, +0.0234]"."""
        return {
            "a": self.a,
            "b": self.b,
            "metric": self.metric,
            "mean a": round(self.mean_a, digits),
            "mean b": round(self.mean_b, digits),
            "difference": round(self.difference, digits),
            self.interval_label: f"[{self.low:+.{digits}f}, {self.high:+.{digits}f}]",
            "verdict": self.verdict,
        }


def _check_settings(n_resamples: int, confidence: float) -> None:
    if not 0 < confidence < 1:
        raise ValueError(f"confidence must be in (0, 1), e.g. 0.95; got {confidence!r}")
    if int(n_resamples) != n_resamples or n_resamples < MIN_RESAMPLES:
        raise ValueError(f"n_resamples must be an integer >= {MIN_RESAMPLES} (the book uses 2000); got {n_resamples!r}")


def paired_bootstrap(
    a: np.ndarray, b: np.ndarray, n_resamples: int = 2000, confidence: float = 0.95, seed: int = 0
) -> tuple[float, float, float]:
    """(mean difference, low, high) of mean(a - b) over users resampled with replacement (paired: the same
    users for both).

    ``a[i]`` and ``b[i]`` are the two models' values for the same user ``i``. Only the per-user differences are
    resampled, in chunks that bound memory; the result is deterministic for a given ``seed``.
    """
    _check_settings(n_resamples, confidence)
    a = np.asarray(a, dtype=np.float64)
    b = np.asarray(b, dtype=np.float64)
    if a.ndim != 1 or b.ndim != 1:
        raise ValueError(f"a and b must be 1-D arrays of per-user values; got shapes {a.shape} and {b.shape}")
    if len(a) != len(b):
        raise ValueError(
            f"a has {len(a)} users and b has {len(b)}: a paired comparison needs the same users for both models"
        )
    if len(a) < 2:
        raise ValueError(f"a paired bootstrap needs at least 2 users; got {len(a)}")
    if not (np.isfinite(a).all() and np.isfinite(b).all()):
        raise ValueError(
            f"per-user values contain NaN or infinity ({int((~np.isfinite(a)).sum())} in a, "
            f"{int((~np.isfinite(b)).sum())} in b)"
        )
    diff = a - b
    n = len(diff)
    rng = np.random.default_rng(seed)
    means = np.empty(int(n_resamples))
    chunk = max(1, _CHUNK_ELEMENTS // n)
    for start in range(0, int(n_resamples), chunk):
        stop = min(start + chunk, int(n_resamples))
        idx = rng.integers(0, n, size=(stop - start, n))
        means[start:stop] = diff[idx].mean(axis=1)
    alpha = (1.0 - confidence) / 2.0
    low, high = np.quantile(means, [alpha, 1.0 - alpha])
    return float(diff.mean()), float(low), float(high)


def _as_frames(x: PerUser, name: str) -> list[pd.DataFrame]:
    frames = [x] if isinstance(x, pd.DataFrame) else list(x)
    if not frames:
        raise ValueError(f"model {name!r}: no per-user results given (an empty sequence of seeds)")
    for i, f in enumerate(frames):
        if not isinstance(f, pd.DataFrame):
            raise TypeError(
                f"model {name!r}, seed {i}: expected a per-user DataFrame (evaluate(..., per_user=True)); "
                f"got {type(f).__name__}"
            )
    return frames


def _describe_difference(left: pd.Index, right: pd.Index, left_name: str, right_name: str) -> str:
    only_left, only_right = left.difference(right), right.difference(left)
    examples = list(only_left[:3]) + list(only_right[:3])
    return (
        f"{len(only_left)} users of {left_name} are not in {right_name} and {len(only_right)} users of "
        f"{right_name} are not in {left_name} (e.g. user_idx {examples})"
    )


def _per_user_mean(x: PerUser, metric: str, name: str) -> tuple[pd.Series, int]:
    """The model's per-user ``metric`` averaged over its seeds, and the number of seeds."""
    frames = _as_frames(x, name)
    users = None
    columns = []
    for i, f in enumerate(frames):
        where = f"model {name!r}" + (f", seed {i}" if len(frames) > 1 else "")
        if metric not in f.columns:
            raise KeyError(f"{where}: no column {metric!r}; available columns: {list(f.columns)}")
        if len(f) == 0:
            raise ValueError(f"{where}: no users (empty per-user frame)")
        if f.index.has_duplicates:
            raise ValueError(f"{where}: {int(f.index.duplicated().sum())} duplicated users in the index")
        values = f[metric].astype(np.float64)
        bad = int((~np.isfinite(values.to_numpy())).sum())
        if bad:
            raise ValueError(f"{where}: {bad} users have NaN or infinite {metric!r}")
        if users is None:
            users = f.index
        elif not f.index.equals(users):
            if len(users) != len(f.index) or not f.index.isin(users).all():
                raise ValueError(
                    f"model {name!r}: seed {i} and seed 0 were evaluated on different users: "
                    + _describe_difference(f.index, users, f"seed {i}", "seed 0")
                    + "; every seed must be evaluated on the same split and relevant items"
                )
            values = values.reindex(users)
        columns.append(values.to_numpy())
    mean = np.mean(np.stack(columns), axis=0)
    return pd.Series(mean, index=users, name=metric), len(frames)


def compare(
    a: PerUser,
    b: PerUser,
    metric: str = "Recall@100",
    names: tuple[str, str] = ("A", "B"),
    n_resamples: int = 2000,
    confidence: float = 0.95,
    seed: int = 0,
) -> Comparison:
    """a, b: per-user results of two models on the SAME split: each a pandas DataFrame indexed by user (what
    tt_helpers.evaluation.evaluate(..., per_user=True) returns: index `user_idx`, one column per metric such as
    'Recall@100'), or a sequence of such DataFrames, one per training seed. Each model's per-user metric is first
    averaged over its seeds, then users are paired."""
    _check_settings(n_resamples, confidence)
    name_a, name_b = (str(n) for n in names)
    ua, n_seeds_a = _per_user_mean(a, metric, name_a)
    ub, n_seeds_b = _per_user_mean(b, metric, name_b)
    if not ua.index.equals(ub.index):
        if len(ua) != len(ub) or not ub.index.isin(ua.index).all():
            raise ValueError(
                f"{name_a!r} and {name_b!r} were evaluated on different users: "
                + _describe_difference(ua.index, ub.index, repr(name_a), repr(name_b))
                + "; both models must be evaluated on the same split and relevant items"
            )
        ub = ub.reindex(ua.index)
    va, vb = ua.to_numpy(), ub.to_numpy()
    difference, low, high = paired_bootstrap(va, vb, n_resamples=n_resamples, confidence=confidence, seed=seed)
    return Comparison(
        a=name_a,
        b=name_b,
        metric=metric,
        mean_a=float(va.mean()),
        mean_b=float(vb.mean()),
        difference=difference,
        low=low,
        high=high,
        confidence=float(confidence),
        n_users=len(va),
        n_seeds_a=n_seeds_a,
        n_seeds_b=n_seeds_b,
    )


def comparison_table(comparisons: Iterable[Comparison], digits: int = 4) -> pd.DataFrame:
    """One row per comparison (index 'A vs B'), columns from as_row, rounded; nothing unrounded is printed."""
    comparisons = list(comparisons)
    if not comparisons:
        columns = list(Comparison("A", "B", "", 0.0, 0.0, 0.0, 0.0, 0.0, 0.95, 0, 0, 0).as_row(digits))
        return pd.DataFrame(columns=columns, index=pd.Index([], name="comparison"))
    rows = [c.as_row(digits) for c in comparisons]
    index = pd.Index([f"{c.a} vs {c.b}" for c in comparisons], name="comparison")
    table = pd.DataFrame(rows, index=index)
    numeric = ["mean a", "mean b", "difference"]
    table[numeric] = table[numeric].astype(float).round(digits)
    return table
