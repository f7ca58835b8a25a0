"""Seeding and deterministic settings, so that every number the book prints is the same on every run."""

from __future__ import annotations

import os
import random

import numpy as np
import torch

DEFAULT_SEED = 42


def seed_everything(seed: int = DEFAULT_SEED, threads: int | None = None) -> torch.Generator:
    """Seed Python, NumPy and torch and ask torch for deterministic kernels.

    Returns a ``torch.Generator`` seeded with ``seed`` for code that wants its own stream.
    ``threads`` pins torch's intra-op thread count; results are bit-identical run to run on one
    machine, but PyTorch does not promise bit-identity across machines, so the book rounds what it prints.
    """
    os.environ.setdefault("PYTHONHASHSEED", str(seed))
    random.seed(seed)
    np.random.seed(seed)
    torch.manual_seed(seed)
    torch.use_deterministic_algorithms(True, warn_only=True)
    if threads is not None:
        torch.set_num_threads(threads)
    return torch.Generator().manual_seed(seed)

