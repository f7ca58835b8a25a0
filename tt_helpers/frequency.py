"""How often each item appears as a candidate: the ``q`` of the logQ correction.

With in-batch negatives an item is a candidate whenever it is some example's positive, so its sampling
probability is its share of the training positives. Yi et al. (RecSys 2019) estimate it on a stream
(chapter 4); on a fixed data set the static count is exact.
"""

from __future__ import annotations

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
