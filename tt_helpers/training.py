"""The one training loop every chapter extends: examples -> batches -> towers -> loss -> sparse updates.

Chapters vary what goes in (which positives, which negatives, which loss, logQ on or off, temperature) through
:class:`TrainConfig`; the loop itself stays one function, :func:`train_epochs`.
"""

from __future__ import annotations

import copy
from dataclasses import dataclass, field
from typing import Callable, Literal

import numpy as np
import pandas as pd
import torch
from tqdm import tqdm

from . import losses
from .features import History
from .frequency import item_probabilities
from .sampling import Batch, CombinedNegatives, HardNegativeSampler, Negatives, InBatchSampler, MixedSampler, NegativeSampler, PopularitySampler, PositiveSet, UniformSampler
from .splits import Interactions
from .towers import TwoTowerModel

PositiveRule = Literal["liked", "any", "weighted"]


def positive_examples(train: Interactions, rule: PositiveRule = "liked") -> pd.DataFrame:
    """Which interactions the model learns to retrieve: columns user_idx, item_idx, timestamp, weight.

    * ``"liked"``: ratings at or above the split's threshold (default 4), weight 1; matches the test target.
    * ``"any"``: every rating counts as a positive, weight 1 (a rating is a watch, whatever its value).
    * ``"weighted"``: every rating, weighted by ``rating / 5`` so that a 5 counts five times a 1.
    """
    if rule == "liked":
        frame, weight = train.positives(), None
    elif rule == "any":
        frame, weight = train.frame, None
    elif rule == "weighted":
        frame = train.frame
        weight = frame["rating"].to_numpy(dtype=np.float32) / 5.0
    else:
        raise ValueError(f"unknown positive rule {rule!r}; use 'liked', 'any' or 'weighted'")
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


SamplerFactory = Callable[[TrainingData], NegativeSampler]


@dataclass(frozen=True)
class TrainConfig:
    """What to train on and how. ``negatives``: ``"in-batch"``, ``"uniform"``, ``"popularity"``, ``"mixed"``,
    ``"none"`` (positives only) or a factory ``TrainingData -> NegativeSampler``."""

    loss: Literal["softmax", "bce"] = "softmax"
    negatives: str | SamplerFactory = "in-batch"
    num_negatives: int = 256
    popularity_alpha: float = 0.75
    logq_correction: bool | None = None  # None: on for the softmax loss, off for BCE (see use_logq)
    remove_accidental_hits: bool = True
    positives: PositiveRule = "liked"
    batch_size: int = 512
    learning_rate: float = 0.01  # SparseAdam on embedding tables
    dense_learning_rate: float = 0.001  # Adam on the MLPs
    max_epochs: int = 30
    patience: int = 2  # epochs without improvement of the validation metric before stopping
    early_stopping_metric: str = "Recall@100"
    seed: int = 0
    progress: bool = True


def use_logq(config: TrainConfig) -> bool:
    """Whether to subtract ``log q`` from the logits.

    The correction makes a *sampled softmax* estimate the full softmax (Yi et al. 2019), so it is on by
    default for ``loss="softmax"``. A pointwise BCE loss scores each pair on its own: shifting a logit by
    ``-log q`` moves that pair's decision boundary instead of correcting a normaliser, so it is off by default
    and asking for it raises.
    """
    if config.logq_correction is None:
        return config.loss == "softmax"
    if config.logq_correction and config.loss != "softmax":
        raise ValueError("logq_correction applies to the softmax loss; set logq_correction=False (or None) with loss='bce'")
    return config.logq_correction


def make_sampler(config: TrainConfig, data: TrainingData) -> NegativeSampler | None:
    if callable(config.negatives):
        return config.negatives(data)
    name = config.negatives
    if name == "none":
        return None
    if name == "in-batch":
        return InBatchSampler(data.item_probabilities)
    if name == "uniform":
        return UniformSampler(data.n_items, config.num_negatives)
    if name == "popularity":
        counts = np.bincount(data.examples["item_idx"].to_numpy(), minlength=data.n_items)
        return PopularitySampler(counts, config.popularity_alpha, config.num_negatives)
    if name == "mixed":
        return MixedSampler(data.item_probabilities, config.num_negatives)
    if name == "hard":
        return HardNegativeSampler(data.positives, base=InBatchSampler(data.item_probabilities), num_negatives=10)
    raise ValueError(f"unknown negatives {name!r}: use in-batch, uniform, popularity, mixed, hard, none, or a factory")


def training_data(train: Interactions, history: History | None, rule: PositiveRule) -> TrainingData:
    examples = positive_examples(train, rule)
    if examples.empty:
        raise ValueError("no positive examples in the training interactions (check the positive rule and threshold)")
    return TrainingData(
        examples=examples,
        n_items=train.n_items,
        item_probabilities=item_probabilities(examples["item_idx"].to_numpy(), train.n_items),
        positives=PositiveSet(examples["user_idx"].to_numpy(), examples["item_idx"].to_numpy(), train.n_items, train.n_users),
        history=history,
    )


def batches(data: TrainingData, batch_size: int, generator: torch.Generator, with_history: bool):
    """Shuffled batches; each example's history window ends strictly before its timestamp (no leakage)."""
    ex = data.examples
    users = torch.from_numpy(ex["user_idx"].to_numpy(copy=True))
    items = torch.from_numpy(ex["item_idx"].to_numpy(copy=True))
    weights = torch.from_numpy(ex["weight"].to_numpy(dtype=np.float32, copy=True))
    windows = data.history.before(ex["user_idx"].to_numpy(), ex["timestamp"].to_numpy()) if with_history else None
    order = torch.randperm(len(ex), generator=generator)
    for start in range(0, len(order), batch_size):
        rows = order[start : start + batch_size]
        history = (windows[0][rows], windows[1][rows]) if windows is not None else None
        yield Batch(users[rows], items[rows], weights[rows], history)


def candidate_embeddings(model: TwoTowerModel, neg: Negatives, positives: torch.Tensor) -> torch.Tensor:
    """Item-tower outputs for the candidates, shaped ``[*neg.ids.shape, d]``.

    In-batch candidates reuse the positives' embeddings; other ids are embedded once each, however often
    they occur (per-example negatives ``[B, M]`` repeat the same items many times)."""
    flat = neg.ids.reshape(-1)
    extra = flat[neg.n_from_batch :]
    unique, inverse = torch.unique(extra, return_inverse=True)
    extra_emb = model.item_embeddings(unique)[inverse] if len(extra) else positives[:0]
    emb = torch.cat([positives, extra_emb]) if neg.n_from_batch else extra_emb
    return emb.reshape(*neg.ids.shape, -1)


def batch_loss(model: TwoTowerModel, batch: Batch, sampler: NegativeSampler | None, config: TrainConfig, data: TrainingData, generator: torch.Generator) -> torch.Tensor:
    """One step's loss: logits -> temperature -> logQ correction -> accidental hits -> softmax or BCE."""
    users = model.user_embeddings(batch.user_idx, batch.history)
    positives = model.item_embeddings(batch.item_idx)
    pos_logits = (users * positives).sum(1) * model.scale
    if sampler is None:
        if config.loss == "softmax":
            raise ValueError("a softmax loss needs negatives; use loss='bce' for positives only")
        return losses.binary_cross_entropy_loss(pos_logits, None, batch.weight)
    neg = sampler.sample(batch, generator, model, users)
    neg_emb = candidate_embeddings(model, neg, positives)
    neg_logits = losses.negative_logits(users, neg_emb, model.scale)
    neg_ids, neg_log_q = neg.ids, neg.log_q
    if isinstance(neg, CombinedNegatives) and neg.extra_ids is not None:  # shared plus per-example candidates
        extra = Negatives(neg.extra_ids, neg.extra_log_q)
        neg_logits = torch.cat([neg_logits, losses.negative_logits(users, candidate_embeddings(model, extra, positives), model.scale)], 1)
        rows = len(batch.item_idx)
        neg_ids = torch.cat([neg.ids.expand(rows, -1), neg.extra_ids], 1)
        neg_log_q = torch.cat([neg.log_q.expand(rows, -1), neg.extra_log_q], 1)
    # a candidate equal to the example's own positive is never a negative (the in-batch diagonal, duplicates)
    is_hit = neg_ids.unsqueeze(0) == batch.item_idx.unsqueeze(1) if neg_ids.dim() == 1 else neg_ids == batch.item_idx.unsqueeze(1)
    if config.remove_accidental_hits:
        is_hit = is_hit | data.positives.contains(batch.user_idx, neg_ids)
    if use_logq(config):
        pos_logits = losses.logq_correction(pos_logits, sampler.log_q_of(batch.item_idx, len(batch.item_idx)))
        neg_logits = losses.logq_correction(neg_logits, neg_log_q)
    neg_logits = losses.remove_accidental_hits(neg_logits, is_hit)
    if config.loss == "softmax":
        return losses.sampled_softmax_loss(pos_logits, neg_logits, batch.weight)
    return losses.binary_cross_entropy_loss(pos_logits, neg_logits, batch.weight)


def make_optimizers(model: TwoTowerModel, config: TrainConfig) -> list[torch.optim.Optimizer]:
    sparse, dense = model.parameter_groups()
    optimizers: list[torch.optim.Optimizer] = [torch.optim.SparseAdam(sparse, lr=config.learning_rate)]
    if dense:
        optimizers.append(torch.optim.Adam(dense, lr=config.dense_learning_rate))
    return optimizers


def train_epochs(
    model: TwoTowerModel,
    data: TrainingData,
    config: TrainConfig,
    epochs: int,
    evaluate_epoch: Callable[[], dict[str, float]] | None = None,  # returns "val_<metric>" entries
    generator: torch.Generator | None = None,
) -> tuple[pd.DataFrame, dict | None]:
    """Train up to ``epochs`` epochs; with ``evaluate_epoch``, stop early on ``val_<early_stopping_metric>``
    and restore the best epoch's weights. Returns (history: one row per epoch, best state or None)."""
    generator = generator or torch.Generator().manual_seed(config.seed)
    sampler = make_sampler(config, data)
    optimizers = make_optimizers(model, config)
    rows, best, best_state, since_best = [], -np.inf, None, 0
    n_batches = -(-len(data.examples) // config.batch_size)
    for epoch in range(1, epochs + 1):
        if hasattr(sampler, "set_epoch"):  # staged schedules (sampling.ScheduledSampler)
            sampler.set_epoch(epoch)
        model.train()
        total = 0.0
        steps = batches(data, config.batch_size, generator, model.history is not None)
        for batch in tqdm(steps, total=n_batches, desc=f"epoch {epoch}", disable=not config.progress, leave=False):
            loss = batch_loss(model, batch, sampler, config, data, generator)
            for opt in optimizers:
                opt.zero_grad()
            loss.backward()
            for opt in optimizers:
                opt.step()
            total += loss.item() * len(batch.user_idx)
        row = {"epoch": epoch, "train_loss": total / len(data.examples)}
        if evaluate_epoch is not None:
            model.eval()
            row.update(evaluate_epoch())
            value = row[f"val_{config.early_stopping_metric}"]
            if value > best:
                best, best_state, since_best = value, copy.deepcopy(model.state_dict()), 0
            else:
                since_best += 1
        rows.append(row)
        if evaluate_epoch is not None and since_best >= config.patience:
            break
    if best_state is not None:
        model.load_state_dict(best_state)
    model.eval()
    return pd.DataFrame(rows).set_index("epoch"), best_state
