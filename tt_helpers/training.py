"""The one training loop every chapter extends: examples -> batches -> towers -> loss -> updates.

Chapters vary what goes in (which positives, which negatives, which loss, logQ on or off, temperature) through
:class:`TrainConfig`; the loop itself stays one function, :func:`train_epochs`, and the loss one pipeline,
:func:`tt_helpers.losses.retrieval_loss`.
"""

from __future__ import annotations

import copy
import re
from collections.abc import Callable
from dataclasses import dataclass
from typing import Literal

import numpy as np
import pandas as pd
import torch
from tqdm import tqdm

from . import losses
from .examples import POSITIVE_RULES, PositiveRule, SamplerFactory, TrainingData, positive_examples, training_data
from .frequency import StreamingFrequencyEstimator
from .repro import keep_freed_memory
from .sampling import (
    Batch,
    FullCatalogueSampler,
    HardNegativeSampler,
    InBatchSampler,
    MixedSampler,
    Negatives,
    NegativeSampler,
    PopularitySampler,
    PositiveSet,
    StreamingInBatchSampler,
    StreamingMixedSampler,
    UniformSampler,
)
from .towers import TwoTowerModel

__all__ = [
    "TrainConfig", "TrainingData", "batch_loss", "batches", "make_sampler", "positive_examples", "train_epochs",
    "training_data",
]

NEGATIVES = ("in-batch", "uniform", "popularity", "mixed", "hard", "full", "none")
_METRIC = re.compile(r"^(Recall|HitRate|NDCG)@[1-9][0-9]*$|^MRR$")


@dataclass(frozen=True)
class TrainConfig:
    """What to train on and how; validated when built.

    ``negatives``: ``"in-batch"``, ``"uniform"``, ``"popularity"``, ``"mixed"``, ``"hard"`` (in-batch plus
    hard negatives), ``"full"`` (every catalogue item: the full softmax, the reference the sampled ones
    approximate), ``"none"`` (positives only, BCE) or a factory ``TrainingData -> NegativeSampler``.
    ``embedding_optimizer``: ``"adam"`` (dense Adam on the tables: fastest for tables of thousands of rows,
    as in the book) or ``"sparse_adam"`` (sparse gradients and ``SparseAdam``: a step touches only the rows of
    the batch, for catalogues of millions of items).
    ``frequency``: where the in-batch proposal's ``q`` comes from (``negatives="in-batch"`` or ``"mixed"``):
    ``"static"``, the items' shares of the training positives, or ``"streaming"``, Yi et al.'s estimator
    (:class:`~tt_helpers.frequency.StreamingFrequencyEstimator`, ``frequency_alpha``, ``frequency_buckets``,
    ``frequency_hashes``) updated with each batch in the loop.
    """

    loss: Literal["softmax", "bce"] = "softmax"
    negatives: str | SamplerFactory = "in-batch"
    num_negatives: int = 256
    popularity_alpha: float = 0.75
    logq_correction: bool | None = None  # None: on for the softmax loss, off for BCE (see use_logq)
    remove_accidental_hits: bool = True
    positives: PositiveRule = "liked"
    batch_size: int = 512
    learning_rate: float = 0.01  # embedding tables
    dense_learning_rate: float = 0.001  # the MLPs
    embedding_optimizer: Literal["adam", "sparse_adam"] = "adam"
    frequency: Literal["static", "streaming"] = "static"  # the in-batch q: training counts, or Yi et al.'s stream
    frequency_alpha: float = 0.01  # streaming: learning rate of the estimate of the steps between occurrences
    frequency_buckets: int | None = None  # streaming: buckets per hash array; None: n_items (unhashed if 1 array)
    frequency_hashes: int = 1  # streaming: hash arrays (the estimate is the most conservative one)
    lr_decay: float = 1.0  # learning rates are multiplied by this after every epoch (1: constant)
    warmup_steps: int = 0  # linear warm-up of the learning rates over the first steps (0: none)
    max_epochs: int = 30
    patience: int = 2  # epochs without improvement of the validation metric before stopping
    early_stopping_metric: str = "Recall@100"
    seed: int = 0
    progress: bool = True

    def __post_init__(self):
        problems = []
        if self.loss not in ("softmax", "bce"):
            problems.append(f"loss must be 'softmax' or 'bce', got {self.loss!r}")
        if not callable(self.negatives) and self.negatives not in NEGATIVES:
            problems.append(
                f"negatives must be one of {NEGATIVES} or a factory TrainingData -> sampler, got {self.negatives!r}"
            )
        if self.negatives == "none" and self.loss == "softmax":
            problems.append("a softmax needs negatives: with negatives='none' use loss='bce'")
        if self.logq_correction and self.loss != "softmax":
            problems.append(
                "logq_correction applies to the softmax loss; set logq_correction=False (or None) with loss='bce'"
            )
        if self.positives not in POSITIVE_RULES:
            problems.append(f"positives must be one of {POSITIVE_RULES}, got {self.positives!r}")
        if self.embedding_optimizer not in ("adam", "sparse_adam"):
            problems.append(f"embedding_optimizer must be 'adam' or 'sparse_adam', got {self.embedding_optimizer!r}")
        for name in ("num_negatives", "batch_size", "max_epochs", "patience"):
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, int) or value < 1:
                problems.append(f"{name} must be a positive integer, got {getattr(self, name)!r}")
        if not 0 < self.lr_decay <= 1:
            problems.append(f"lr_decay must be in (0, 1] (1 keeps the rates constant), got {self.lr_decay!r}")
        if isinstance(self.warmup_steps, bool) or not isinstance(self.warmup_steps, int) or self.warmup_steps < 0:
            problems.append(f"warmup_steps must be a non-negative integer, got {self.warmup_steps!r}")
        for name in ("learning_rate", "dense_learning_rate"):
            if not getattr(self, name) > 0:
                problems.append(f"{name} must be positive, got {getattr(self, name)!r}")
        if not _METRIC.match(str(self.early_stopping_metric)):
            problems.append(
                f"early_stopping_metric must look like 'Recall@100', 'NDCG@10' or 'MRR', "
                f"got {self.early_stopping_metric!r}"
            )
        if self.frequency not in ("static", "streaming"):
            problems.append(f"frequency must be 'static' or 'streaming', got {self.frequency!r}")
        elif self.frequency == "streaming" and self.negatives not in ("in-batch", "mixed"):
            problems.append(
                f"frequency='streaming' estimates the in-batch proposal, so it needs negatives='in-batch' or 'mixed', "
                f"got {self.negatives!r}"
            )
        if (
            isinstance(self.frequency_alpha, bool)
            or not isinstance(self.frequency_alpha, (int, float))
            or not 0 < self.frequency_alpha <= 1
        ):
            problems.append(f"frequency_alpha must be in (0, 1], got {self.frequency_alpha!r}")
        if self.frequency_buckets is not None and (
            isinstance(self.frequency_buckets, bool)
            or not isinstance(self.frequency_buckets, int)
            or self.frequency_buckets < 1
        ):
            problems.append(
                f"frequency_buckets must be a positive integer or None (one bucket per item), "
                f"got {self.frequency_buckets!r}"
            )
        if (
            isinstance(self.frequency_hashes, bool)
            or not isinstance(self.frequency_hashes, int)
            or self.frequency_hashes < 1
        ):
            problems.append(f"frequency_hashes must be a positive integer, got {self.frequency_hashes!r}")
        if problems:
            raise ValueError("invalid TrainConfig: " + "; ".join(problems))


def use_logq(config: TrainConfig) -> bool:
    """Whether to subtract ``log q`` from the logits.

    The correction makes a *sampled softmax* a consistent estimate of the full softmax (Yi et al. 2019), so
    it is on by default for ``loss="softmax"``. A pointwise BCE loss scores each pair on its own: shifting a
    logit by ``-log q`` moves that pair's decision boundary instead of correcting a normaliser, so it is off
    by default and asking for it is refused when the config is built.
    """
    if config.logq_correction is None:
        return config.loss == "softmax"
    return config.logq_correction


def make_sampler(config: TrainConfig, data: TrainingData) -> NegativeSampler | None:
    """The sampler ``config.negatives`` names, built from the training data (None for positives only)."""
    if callable(config.negatives):
        return config.negatives(data)
    name = config.negatives
    if name == "none":
        return None
    if name in ("in-batch", "mixed") and config.frequency == "streaming":
        estimator = StreamingFrequencyEstimator.for_catalogue(
            data.n_items, config.batch_size, config.frequency_alpha, config.frequency_buckets, config.frequency_hashes,
            config.seed,
        )
        if name == "in-batch":
            return StreamingInBatchSampler(estimator)
        return StreamingMixedSampler(estimator, data.n_items, config.num_negatives)
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
    if name == "full":
        return FullCatalogueSampler(data.n_items)
    raise AssertionError(name)  # unreachable: TrainConfig validated the name


def batches(data: TrainingData, batch_size: int, generator: torch.Generator, with_history: bool):
    """Shuffled batches; each example's history window ends strictly before its timestamp (no leakage).

    The example tensors and history windows are computed once per training set and reused every epoch."""
    if "_tensors" not in data.extras:
        ex = data.examples
        data.extras["_tensors"] = (
            torch.from_numpy(ex["user_idx"].to_numpy(dtype=np.int64, copy=True)),
            torch.from_numpy(ex["item_idx"].to_numpy(dtype=np.int64, copy=True)),
            torch.from_numpy(ex["weight"].to_numpy(dtype=np.float32, copy=True)),
        )
    users, items, weights = data.extras["_tensors"]
    windows = None
    if with_history:
        if "_windows" not in data.extras:
            ex = data.examples
            data.extras["_windows"] = data.history.before(ex["user_idx"].to_numpy(), ex["timestamp"].to_numpy())
        windows = data.extras["_windows"]
    order = torch.randperm(len(users), generator=generator)
    for start in range(0, len(order), batch_size):
        rows = order[start : start + batch_size]
        history = (windows[0][rows], windows[1][rows]) if windows is not None else None
        yield Batch(users[rows], items[rows], weights[rows], history)


# Per-example candidates are scored as a table of their distinct items when it has at most this many rows
# per candidate column: measured on one CPU thread (B = 512, d = 64, forward and backward), scoring the table
# and gathering is about twice as fast at 22 distinct items per column, as fast at 50, slower beyond.
INDEXED_ROWS_PER_COLUMN = 24


def candidate_embeddings(model: TwoTowerModel, neg: Negatives, positives: torch.Tensor) -> losses.Candidates:
    """Item-tower outputs for the candidates: ``[M, d]`` for shared ones, and for per-example ids ``[B, M]``
    either ``[B, M, d]`` or, when they repeat few distinct items, :class:`~tt_helpers.losses.IndexedCandidates`
    (the same logits, computed more cheaply; see ``INDEXED_ROWS_PER_COLUMN``).

    In-batch candidates reuse the positives' embeddings; other ids are embedded once each, however often
    they occur (per-example negatives ``[B, M]`` repeat the same items many times)."""
    flat = neg.ids.reshape(-1)
    extra = flat[neg.n_from_batch :]
    if not len(extra):
        extra_emb = positives[:0]
    elif len(extra) == model.n_items and torch.equal(extra, torch.arange(model.n_items)):  # the full softmax
        extra_emb = model.item_embeddings(extra)  # already distinct and in order: nothing to deduplicate
    else:
        unique, inverse = distinct_ids(extra, model.n_items)
        if neg.ids.dim() == 2 and not neg.n_from_batch and len(unique) <= INDEXED_ROWS_PER_COLUMN * neg.ids.shape[1]:
            return losses.IndexedCandidates(model.item_embeddings(unique), inverse.reshape(neg.ids.shape))
        extra_emb = model.item_embeddings(unique)[inverse]
    emb = torch.cat([positives, extra_emb]) if neg.n_from_batch else extra_emb
    return emb.reshape(*neg.ids.shape, -1)


def distinct_ids(ids: torch.Tensor, n_items: int) -> tuple[torch.Tensor, torch.Tensor]:
    """``torch.unique(ids, return_inverse=True)`` for catalogue indices ``0 <= id < n_items``: the distinct
    ids ascending, and each id's position among them. With many ids (per-example candidates ``[B, M]``) a
    presence table of the catalogue and a cumulative sum replace unique's sort: the same two tensors, about
    6x faster at ``B x M = 65,536`` draws from 1,682 items; for a few ids the sort is cheaper."""
    if len(ids) <= n_items // 4:
        return torch.unique(ids, return_inverse=True)
    present = torch.zeros(n_items, dtype=torch.bool)
    present[ids] = True
    position = torch.cumsum(present, 0) - 1
    return present.nonzero().squeeze(1), position[ids]


def accidental_hits(batch: Batch, blocks: list[Negatives], positives: PositiveSet | None) -> torch.Tensor:
    """Bool ``[B, 1 + M]`` over the columns of :func:`tt_helpers.losses.retrieval_logits`: a candidate equal
    to the example's own positive (the in-batch diagonal, duplicates) and, with ``positives`` (the training
    data's :class:`~tt_helpers.sampling.PositiveSet`, which holds every example's own pair), any candidate
    that is a training positive of the example's user. Column 0, the positive itself, is never a hit."""
    rows = len(batch.item_idx)
    columns = [torch.zeros(rows, 1, dtype=torch.bool)]
    for block in blocks:
        ids = block.ids if block.ids.dim() == 2 else block.ids.unsqueeze(0).expand(rows, -1)
        if positives is not None:
            columns.append(positives.contains(batch.user_idx, ids))
        else:
            columns.append(ids == batch.item_idx.unsqueeze(1))
    return torch.cat(columns, dim=1)


def accidental_hit_offsets(batch: Batch, blocks: list[Negatives], positives: PositiveSet | None) -> torch.Tensor:
    """:func:`accidental_hits` as additive float offsets, ``-inf`` on the hits and 0 elsewhere ``[B, 1 + M]``,
    the form :func:`tt_helpers.losses.retrieval_loss` adds to the logits (from
    :meth:`~tt_helpers.sampling.PositiveSet.hit_offsets`: cheaper than a dense bool mask when hits are many).
    Shared blocks (``[M]`` ids each) are gathered in one go, column 0 included."""
    if positives is None:
        is_hit = accidental_hits(batch, blocks, None)
        return torch.zeros(is_hit.shape).masked_fill_(is_hit, float("-inf"))
    shared = [block.ids for block in blocks if block.ids.dim() == 1]
    if len(shared) == len(blocks):  # every block shared (or none): one gather, [B, 1 + M]
        ids = torch.cat(shared) if shared else torch.zeros(0, dtype=torch.long)
        return positives.hit_offsets(batch.user_idx, ids, leading_zero=True)
    rows = len(batch.item_idx)
    columns = [torch.zeros(rows, 1)]
    for block in blocks:
        ids = block.ids if block.ids.dim() == 2 else block.ids.unsqueeze(0).expand(rows, -1)
        columns.append(positives.hit_offsets(batch.user_idx, ids))
    return torch.cat(columns, dim=1)


def candidate_offsets(batch: Batch, blocks: list[Negatives], sampler: NegativeSampler | None,
                      positives: PositiveSet | None, batch_size: int | None = None) -> torch.Tensor:
    """Steps 3 and 4 of the loss, ``-log q`` (when ``sampler`` is given) and ``-inf`` on the accidental hits,
    as one constant ``[B, 1 + M]``: the numbers of
    ``losses.logit_offsets(candidate_log_q(batch, sampler, blocks), accidental_hit_offsets(...), shape)``,
    built in one buffer. The hit offsets are gathered with column 0 included and each block's ``log q`` is
    subtracted in place from its columns, broadcast over the rows when the block is shared: neither
    ``[B, 1 + M]`` of ``log q`` nor a second buffer is materialised. ``batch_size``: the batch the positives'
    expected counts refer to (default ``B``; data-parallel workers pass the global batch's)."""
    offsets = accidental_hit_offsets(batch, blocks, positives)
    if sampler is None:
        return offsets
    offsets[:, 0] -= sampler.log_q_of(batch.item_idx, batch_size or len(batch.item_idx))
    start = 1
    for block in blocks:
        width = block.ids.shape[-1]
        offsets[:, start : start + width] -= block.log_q  # [M] broadcasts over the rows; [B, M] as it is
        start += width
    return offsets


def candidate_log_q(batch: Batch, sampler: NegativeSampler, blocks: list[Negatives]) -> torch.Tensor:
    """``[B, 1 + M]`` log expected counts: the positive's (as the proposal would draw it), then each block's."""
    rows = len(batch.item_idx)
    columns = [sampler.log_q_of(batch.item_idx, rows).unsqueeze(1)]
    columns += [block.log_q.expand(rows, -1) if block.log_q.dim() == 1 else block.log_q for block in blocks]
    return torch.cat(columns, dim=1)


def batch_loss(model: TwoTowerModel, batch: Batch, sampler: NegativeSampler | None, config: TrainConfig,
               data: TrainingData, generator: torch.Generator) -> torch.Tensor:
    """One step's loss: embed the batch, draw candidates, then :func:`tt_helpers.losses.retrieval_loss`
    (logits, temperature, logQ, accidental hits, softmax or BCE)."""
    users = model.user_embeddings(batch.user_idx, batch.history)
    positives = model.item_embeddings(batch.item_idx)
    if sampler is None and config.loss == "softmax":
        raise ValueError("a softmax loss needs negatives; use loss='bce' for positives only")
    blocks = sampler.sample(batch, generator, model, users).blocks() if sampler is not None else []
    candidates = [candidate_embeddings(model, b, positives) for b in blocks]
    offsets = candidate_offsets(batch, blocks, sampler if sampler is not None and use_logq(config) else None,
                                data.positives if config.remove_accidental_hits else None)
    return losses.retrieval_loss(
        users, positives, candidates, model.temperature, loss=config.loss, weights=batch.weight, offsets=offsets
    )


def make_optimizers(model: TwoTowerModel, config: TrainConfig) -> list[torch.optim.Optimizer]:
    """Adam with the embedding tables at ``learning_rate`` and the MLPs at ``dense_learning_rate``;
    ``SparseAdam`` for the tables when the model was built with sparse embeddings."""
    tables, dense = model.parameter_groups()
    if model.sparse_embeddings:
        optimizers: list[torch.optim.Optimizer] = [torch.optim.SparseAdam(tables, lr=config.learning_rate)]
        return optimizers + ([torch.optim.Adam(dense, lr=config.dense_learning_rate)] if dense else [])
    groups = [{"params": tables, "lr": config.learning_rate}]
    if dense:
        groups.append({"params": dense, "lr": config.dense_learning_rate})
    return [torch.optim.Adam(groups)]


def optimizer_step(optimizers: list[torch.optim.Optimizer], loss: torch.Tensor) -> None:
    """One step of every optimiser on ``loss``: clear the gradients, back-propagate, update."""
    for opt in optimizers:
        opt.zero_grad(set_to_none=True)
    loss.backward()
    for opt in optimizers:
        opt.step()


def learning_rate_factor(config: TrainConfig, step: int, epoch: int) -> float:
    """The schedule, as a factor of each group's base rate: a linear warm-up over the first
    ``warmup_steps`` steps (``step`` counts from 0), times ``lr_decay ** (epoch - 1)``.

    The schedule depends on the step and epoch only, never on validation, so the refit on the whole
    training split replays exactly the schedule the early-stopped run chose its epoch count with."""
    warmup = min(1.0, (step + 1) / config.warmup_steps) if config.warmup_steps else 1.0
    return warmup * config.lr_decay ** (epoch - 1)


def set_learning_rates(optimizers: list[torch.optim.Optimizer], factor: float) -> None:
    """Scale every parameter group's rate to ``factor`` times its base rate (kept in ``initial_lr``)."""
    for opt in optimizers:
        for group in opt.param_groups:
            group.setdefault("initial_lr", group["lr"])
            group["lr"] = group["initial_lr"] * factor


def train_epochs(
    model: TwoTowerModel,
    data: TrainingData,
    config: TrainConfig,
    epochs: int,
    evaluate_epoch: Callable[[], dict[str, float]] | None = None,  # returns "val_<metric>" entries
    generator: torch.Generator | None = None,
    evaluate_start: bool = False,
    after_epoch: Callable[[int], None] | None = None,
) -> tuple[pd.DataFrame, dict | None]:
    """Train up to ``epochs`` epochs; with ``evaluate_epoch``, stop early on ``val_<early_stopping_metric>``
    and restore the best epoch's weights. Returns (history: one row per epoch, best state or None).

    ``after_epoch(epoch)`` is called after each epoch (after ``evaluate_epoch``), with the model in eval
    mode, to measure it mid-run: nothing in a run depends on its length (the schedule follows the step and
    the epoch), so the model after epoch 10 of a 30-epoch run is the model a 10-epoch run ends with. It
    must not change the model; it may draw random numbers from generators of its own only.

    ``evaluate_start=True`` (continuing a trained model) also evaluates the weights before the first epoch
    as epoch 0: training must beat them, and if no epoch does, the starting weights are restored."""
    if (config.embedding_optimizer == "sparse_adam") != model.sparse_embeddings:
        raise ValueError(
            f"embedding_optimizer={config.embedding_optimizer!r} does not match the model's tables "
            f"(sparse_embeddings={model.sparse_embeddings}): build the model with "
            "TwoTowerModel(..., sparse_embeddings=(embedding_optimizer == 'sparse_adam'))"
        )
    keep_freed_memory()  # the same large temporaries every step: reuse them rather than page-fault them in
    generator = generator or torch.Generator().manual_seed(config.seed)
    sampler = make_sampler(config, data)
    optimizers = make_optimizers(model, config)
    rows, best, best_state, since_best = [], -np.inf, None, 0
    if evaluate_start and evaluate_epoch is not None:
        model.eval()
        row = {"epoch": 0, "train_loss": np.nan, **evaluate_epoch()}
        best, best_state = row[f"val_{config.early_stopping_metric}"], copy.deepcopy(model.state_dict())
        rows.append(row)
    n_batches = -(-len(data.examples) // config.batch_size)
    scheduled = config.warmup_steps > 0 or config.lr_decay != 1.0
    step = 0
    for epoch in range(1, epochs + 1):
        if sampler is not None:
            sampler.start_epoch(epoch)
        model.train()
        total = 0.0
        steps = batches(data, config.batch_size, generator, model.history is not None)
        for batch in tqdm(steps, total=n_batches, desc=f"epoch {epoch}", disable=not config.progress, leave=False):
            if scheduled:
                set_learning_rates(optimizers, learning_rate_factor(config, step, epoch))
            loss = batch_loss(model, batch, sampler, config, data, generator)
            optimizer_step(optimizers, loss)
            step += 1
            total += loss.item() * len(batch.user_idx)
        row = {"epoch": epoch, "train_loss": total / len(data.examples),
               "learning_rate": config.learning_rate * learning_rate_factor(config, step - 1, epoch)}
        if evaluate_epoch is not None:
            model.eval()
            row.update(evaluate_epoch())
            value = row[f"val_{config.early_stopping_metric}"]
            if value > best:
                best, best_state, since_best = value, copy.deepcopy(model.state_dict()), 0
            else:
                since_best += 1
        if after_epoch is not None:
            model.eval()
            after_epoch(epoch)
        rows.append(row)
        if evaluate_epoch is not None and since_best >= config.patience:
            break
    if best_state is not None:
        model.load_state_dict(best_state)
    model.eval()
    return pd.DataFrame(rows).set_index("epoch"), best_state
