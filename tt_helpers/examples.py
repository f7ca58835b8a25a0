"""Training examples: which interactions count as positives, and what samplers may know about them.

Everything here is derived from the training interactions only, so no sampler, loss or feature can see a
validation or test answer.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Literal

import numpy as np
import pandas as pd
import torch

from .features import History
from .frequency import item_probabilities
from .sampling import PositiveSet
from .splits import Interactions

if TYPE_CHECKING:  # pragma: no cover
    from .sampling import NegativeSampler

PositiveRule = Literal["liked", "any", "weighted"]
POSITIVE_RULES: tuple[str, ...] = ("liked", "any", "weighted")


def positive_examples(train: Interactions, rule: PositiveRule = "liked") -> pd.DataFrame:
    """Which interactions the model learns to retrieve: columns user_idx, item_idx, timestamp, weight.

    * ``"liked"``: interactions the split counts as positive (rating at or above its threshold; every
      interaction when the data has no rating), weight 1; matches the test target.
    * ``"any"``: every interaction counts as a positive, weight 1 (a rating is a watch, whatever its value).
    * ``"weighted"``: every interaction, weighted by its ``weight`` column when the frame has one (watch
      time, purchases: what :func:`tt_helpers.fit_two_tower` passes on), else by ``rating / 5`` so that a 5
      counts five times a 1: the reward-weighted loss of Yi et al. (RecSys 2019), who weigh examples by
      watch time.
    """
    if rule == "liked":
        frame, weight = train.positives(), None
    elif rule == "any":
        frame, weight = train.frame, None
    elif rule == "weighted":
        frame = train.frame
        if "weight" in frame.columns:
            weight = frame["weight"].to_numpy(dtype=np.float32)
        elif "rating" in frame.columns:
            weight = frame["rating"].to_numpy(dtype=np.float32) / 5.0
        else:
            raise ValueError(
                "positives='weighted' needs a weight or rating column; use 'liked' or 'any' for unweighted data"
            )
    else:
        raise ValueError(f"unknown positive rule {rule!r}; use one of {POSITIVE_RULES}")
    out = frame[["user_idx", "item_idx", "timestamp"]].reset_index(drop=True)
    out["weight"] = np.ones(len(out), dtype=np.float32) if weight is None else weight
    return out


@dataclass
class TrainingData:
    """Everything a sampler may need, derived from the training interactions only."""

    examples: pd.DataFrame  # from positive_examples
    n_items: int
    item_probabilities: torch.Tensor  # share of training positives per item: the in-batch proposal
    positives: PositiveSet  # (user, item) pairs that are positives: accidental hits
    history: History | None
    extras: dict = field(default_factory=dict)  # e.g. simulated impressions (chapter 3)


SamplerFactory = Callable[[TrainingData], "NegativeSampler"]


def training_data(train: Interactions, history: History | None, rule: PositiveRule) -> TrainingData:
    """The examples of ``rule`` with their item frequencies and the set of (user, item) positives."""
    examples = positive_examples(train, rule)
    if examples.empty:
        raise ValueError("no positive examples in the training interactions (check the positive rule and threshold)")
    users, items = examples["user_idx"].to_numpy(), examples["item_idx"].to_numpy()
    return TrainingData(
        examples=examples,
        n_items=train.n_items,
        item_probabilities=item_probabilities(items, train.n_items),
        positives=PositiveSet(users, items, train.n_items, train.n_users),
        history=history,
    )
