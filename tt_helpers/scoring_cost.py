"""Why recommenders have a retrieval stage: the cost of scoring one user against the whole catalogue.

Two ways to score all ``N`` items of a catalogue for one user:

* a **ranking model**: an MLP over the concatenation ``[user embedding, item embedding, pair features]``
  (pair features describe the (user, item) pair, e.g. how often the user watched the item's genre). It
  must run once per (user, item) pair: its cost per user is ``N`` forward passes;
* a **retrieval stage**: the user's vector dotted with a precomputed ``[N, dim]`` item-embedding matrix,
  then a top-k. Its cost per user is one matrix-vector product, ``2 * dim * N`` FLOPs.

FLOPs here count the matrix products only, a multiply-add being 2 FLOPs; biases, activations, the concat
and the top-k add work proportional to ``N * width`` or ``N`` and are left out. FLOPs are deterministic
(:func:`scoring_flops`); wall-clock timings (:func:`measure_scoring_cost`) depend on the machine and are
never asserted or compared. The embeddings are random: the cost does not depend on what they contain.
"""

from __future__ import annotations

import functools
import time
from collections.abc import Iterable, Sequence

import numpy as np
import pandas as pd
import torch
from torch import nn

DEFAULT_DIM = 64
DEFAULT_PAIR_FEATURES = 16
DEFAULT_HIDDEN = (256, 256)
DEFAULT_CANDIDATES = 500


def layer_widths(dim: int = DEFAULT_DIM, n_pair_features: int = DEFAULT_PAIR_FEATURES,
                 hidden: Sequence[int] = DEFAULT_HIDDEN) -> list[int]:  # fmt: skip
    """Widths of the ranking MLP from input to output: ``[2 * dim + n_pair_features, *hidden, 1]``."""
    if dim < 1 or n_pair_features < 0 or any(h < 1 for h in hidden):
        raise ValueError(
            f"need dim >= 1, n_pair_features >= 0 and positive hidden widths; got {dim}, {n_pair_features}, {hidden}"
        )
    return [2 * dim + n_pair_features, *hidden, 1]


def ranker_flops_per_pair(dim: int = DEFAULT_DIM, n_pair_features: int = DEFAULT_PAIR_FEATURES,
                          hidden: Sequence[int] = DEFAULT_HIDDEN) -> int:  # fmt: skip
    """FLOPs of one forward pass of the ranking MLP (one (user, item) pair): ``2 * sum(in * out)`` over layers."""
    widths = layer_widths(dim, n_pair_features, hidden)
    return 2 * sum(a * b for a, b in zip(widths[:-1], widths[1:]))


def dot_flops_per_item(dim: int = DEFAULT_DIM) -> int:
    """FLOPs of one user-item dot product: ``2 * dim``."""
    if dim < 1:
        raise ValueError(f"dim must be >= 1, got {dim}")
    return 2 * dim


def scoring_flops(
    catalogue_sizes: Iterable[int],
    dim: int = DEFAULT_DIM,
    n_pair_features: int = DEFAULT_PAIR_FEATURES,
    hidden: Sequence[int] = DEFAULT_HIDDEN,
    n_candidates: int = DEFAULT_CANDIDATES,
) -> pd.DataFrame:
    """Analytic FLOPs per user (one request) for each catalogue size; deterministic, so printable and assertable.

    Columns: ``catalogue_size``; ``ranker_flops_per_user`` (the ranking MLP on every item);
    ``dot_product_flops_per_user`` (retrieval over every item); ``ranker_vs_dot_product`` (their ratio,
    the same at every size: the per-item cost ratio); ``two_stage_flops_per_user`` (retrieval over every
    item, then the ranking MLP on ``min(n_candidates, N)`` candidates); ``full_ranking_vs_two_stage``
    (ranker on every item / two-stage): about ``N / n_candidates`` while retrieval is cheap, levelling
    off at ``ranker_vs_dot_product`` when the catalogue is so large that retrieval itself dominates.
    """
    per_pair = ranker_flops_per_pair(dim, n_pair_features, hidden)
    per_item = dot_flops_per_item(dim)
    sizes = np.array([int(n) for n in catalogue_sizes], dtype=np.int64)
    if (sizes < 1).any():
        raise ValueError(f"catalogue sizes must be >= 1, got {sizes.tolist()}")
    ranker = sizes * per_pair
    dot = sizes * per_item
    two_stage = dot + np.minimum(n_candidates, sizes) * per_pair
    return pd.DataFrame(
        {
            "catalogue_size": sizes,
            "ranker_flops_per_user": ranker,
            "dot_product_flops_per_user": dot,
            "ranker_vs_dot_product": ranker / dot,
            "two_stage_flops_per_user": two_stage,
            "full_ranking_vs_two_stage": ranker / two_stage,
        }
    )


def make_ranker(dim: int = DEFAULT_DIM, n_pair_features: int = DEFAULT_PAIR_FEATURES,
                hidden: Sequence[int] = DEFAULT_HIDDEN) -> nn.Sequential:  # fmt: skip
    """The ranking MLP: Linear + ReLU for each hidden width, then Linear to one score."""
    widths = layer_widths(dim, n_pair_features, hidden)
    layers: list[nn.Module] = []
    for a, b in zip(widths[:-2], widths[1:-1]):
        layers += [nn.Linear(a, b), nn.ReLU()]
    layers.append(nn.Linear(widths[-2], widths[-1]))
    return nn.Sequential(*layers)


def rank_all_items(ranker: nn.Module, user: torch.Tensor, items: torch.Tensor, pair_features: torch.Tensor,
                   k: int, chunk_size: int = 65_536) -> torch.Tensor:  # fmt: skip
    """Score every item for one user with the ranking MLP (one forward pass per pair), return the top-``k`` indices."""
    scores = torch.empty(items.shape[0])
    for start in range(0, items.shape[0], chunk_size):
        stop = min(start + chunk_size, items.shape[0])
        x = torch.cat([user.expand(stop - start, -1), items[start:stop], pair_features[start:stop]], dim=1)
        scores[start:stop] = ranker(x).squeeze(1)
    return torch.topk(scores, min(k, scores.numel())).indices


def retrieve(user: torch.Tensor, items: torch.Tensor, k: int) -> torch.Tensor:
    """Retrieval stage for one user: dot product with every item vector, then the top-``k`` indices."""
    return torch.topk(items @ user, min(k, items.shape[0])).indices


def _best_ms(fn, repeats: int) -> float:
    """Fastest of ``repeats`` timed calls, in ms, after one warm-up call (first calls allocate buffers).

    The minimum, not the mean: interference from other processes only ever adds time.
    """
    fn()
    times = []
    for _ in range(max(1, repeats)):
        start = time.perf_counter()
        fn()
        times.append(time.perf_counter() - start)
    return float(min(times) * 1e3)


def measure_scoring_cost(
    catalogue_sizes: Iterable[int],
    dim: int = DEFAULT_DIM,
    n_pair_features: int = DEFAULT_PAIR_FEATURES,
    hidden: Sequence[int] = DEFAULT_HIDDEN,
    k: int = 100,
    repeats: int = 5,
    seed: int = 0,
    max_ranker_size: int = 100_000,
    threads: int | None = 1,
) -> pd.DataFrame:
    """Time both ways of scoring one user against catalogues of each size (fastest of ``repeats`` runs).

    The ranking MLP is timed only up to ``max_ranker_size`` items (its ``ranker_ms_per_user`` is NaN
    beyond: it would take seconds per size); the dot product at every size. Returns the
    :func:`scoring_flops` columns plus ``ranker_ms_per_user``, ``dot_product_ms_per_user``,
    ``measured_ratio`` (ranker / dot product) and ``ranker_gflop_per_s`` (the MLP's measured throughput,
    to turn FLOPs into a time estimate for sizes not measured). ``threads`` sets torch's thread count for
    the measurement (restored afterwards; ``None`` keeps it): one thread, the default, measures the cost per
    core and is the least disturbed by other processes. Timings vary from run to run and machine to
    machine: print them, never assert them. With the defaults, sizes up to 1e6 take a few seconds;
    memory is about ``4 * (dim + n_pair_features) * N`` bytes.
    """
    sizes = [int(n) for n in catalogue_sizes]
    table = scoring_flops(sizes, dim, n_pair_features, hidden, n_candidates=k)
    table = table.drop(columns=["two_stage_flops_per_user", "full_ranking_vs_two_stage"])
    generator = torch.Generator().manual_seed(seed)
    torch.manual_seed(seed)
    ranker = make_ranker(dim, n_pair_features, hidden).eval()
    previous_threads = torch.get_num_threads()
    if threads is not None:
        torch.set_num_threads(threads)
    try:
        ranker_ms, dot_ms = _time_sizes(sizes, ranker, dim, n_pair_features, k, repeats, generator, max_ranker_size)
    finally:
        torch.set_num_threads(previous_threads)
    table["ranker_ms_per_user"] = ranker_ms
    table["dot_product_ms_per_user"] = dot_ms
    table["measured_ratio"] = table["ranker_ms_per_user"] / table["dot_product_ms_per_user"]
    table["ranker_gflop_per_s"] = table["ranker_flops_per_user"] / table["ranker_ms_per_user"] / 1e6
    return table


def extrapolate_ms(cost: pd.DataFrame, catalogue_size: int, n_candidates: int = DEFAULT_CANDIDATES) -> dict[str, float]:
    """Rough time per user at a catalogue size that was not timed, from a :func:`measure_scoring_cost` table.

    The ranker's time is its FLOPs at ``catalogue_size`` divided by the throughput measured at the largest
    size it was timed at; the dot product's time is scaled linearly from the largest size it was timed at
    (it is memory-bound, so its FLOP rate says little). The two-stage time is exact retrieval over the
    whole catalogue plus the ranker on ``n_candidates`` items. Estimates from timings: print, never assert.
    """
    per_pair = float((cost["ranker_flops_per_user"] / cost["catalogue_size"]).iloc[0])
    ranked = cost.dropna(subset=["ranker_ms_per_user"])
    if ranked.empty:
        raise ValueError("the cost table has no ranker timing to extrapolate from")
    ms_per_flop = 1.0 / (float(ranked["ranker_gflop_per_s"].iloc[-1]) * 1e6)
    largest_dot = cost.iloc[-1]
    ranker_ms = catalogue_size * per_pair * ms_per_flop
    dot_ms = float(largest_dot["dot_product_ms_per_user"]) * catalogue_size / float(largest_dot["catalogue_size"])
    rerank_ms = min(n_candidates, catalogue_size) * per_pair * ms_per_flop
    return {
        "ranker_ms": ranker_ms,
        "dot_product_ms": dot_ms,
        "candidate_ranking_ms": rerank_ms,
        "two_stage_ms": dot_ms + rerank_ms,
    }


def _time_sizes(sizes, ranker, dim, n_pair_features, k, repeats, generator, max_ranker_size):
    ranker_ms, dot_ms = [], []
    with torch.inference_mode():
        for n in sizes:
            user = torch.randn(dim, generator=generator)
            items = torch.randn(n, dim, generator=generator)
            dot_ms.append(_best_ms(functools.partial(retrieve, user, items, k), repeats))
            if n <= max_ranker_size:
                pair_features = torch.randn(n, n_pair_features, generator=generator)
                scorer = functools.partial(rank_all_items, ranker, user, items, pair_features, k)
                ranker_ms.append(_best_ms(scorer, repeats))
                del scorer, pair_features
            else:
                ranker_ms.append(float("nan"))
            del items
    return ranker_ms, dot_ms


__all__ = [
    "dot_flops_per_item",
    "extrapolate_ms",
    "layer_widths",
    "make_ranker",
    "measure_scoring_cost",
    "rank_all_items",
    "ranker_flops_per_pair",
    "retrieve",
    "scoring_flops",
]
