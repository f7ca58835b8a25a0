"""Seeding and deterministic settings, so that every number the book prints is the same on every run."""

from __future__ import annotations

import contextlib
import ctypes
import os
import platform
import random
import sys
from collections.abc import Iterator
from pathlib import Path

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


def cpu_name(cpuinfo: str = "/proc/cpuinfo") -> str:
    """The CPU's model name (Linux's ``cpuinfo``), else what :mod:`platform` knows: stored outputs are exact
    only on the kind of CPU that made them, so logs and benchmark tables name it."""
    try:
        with open(cpuinfo) as info:
            names = [line.split(":", 1)[1].strip() for line in info if line.startswith("model name")]
    except OSError:
        names = []
    return names[0] if names else platform.processor() or platform.machine()


def mkl_sees_intel() -> bool | None:
    """What MKL's CPU-vendor check (``mkl_serv_intel_cpu_true``) answers in this process, resolved as the
    dynamic loader resolves MKL's own calls, so a preloaded ``tools/mkl_intel_path.c`` counts; ``None`` where
    torch is not built with MKL. MKL runs its generic kernels when the answer is no, whatever
    ``MKL_ENABLE_INSTRUCTIONS`` says, and they round differently (README, "Two torch threads")."""
    torch_cpu = Path(torch.__file__).parent / "lib" / "libtorch_cpu.so"
    # The process's global scope first (it holds a preloaded library), then torch's own copy of MKL.
    for library in (None, str(torch_cpu)):
        try:
            return bool(ctypes.CDLL(library).mkl_serv_intel_cpu_true())
        except (OSError, AttributeError, TypeError):  # TypeError: CDLL(None) on Windows
            continue
    return None


def mkl_kernels() -> str:
    """Which of MKL's kernels run in this process, in words (:func:`mkl_sees_intel`), for logs and tables."""
    return {True: "Intel's", False: "generic (the CPU is not Intel's)", None: "none (no MKL)"}[mkl_sees_intel()]


def cpu_description() -> str:
    """:func:`cpu_name`, the instruction set torch's kernels use (``AVX2`` under ``ATEN_CPU_CAPABILITY=avx2``
    on an AVX-512 CPU), and which of MKL's kernels run (:func:`mkl_kernels`)."""
    return f"{cpu_name()}; torch kernels: {torch.backends.cpu.get_cpu_capability()}; MKL kernels: {mkl_kernels()}"


@contextlib.contextmanager
def torch_threads(threads: int) -> Iterator[None]:
    """Run a block with ``threads`` torch intra-op threads, then restore the previous count: serve and time
    single requests on one thread (as one request runs in production, and as Annoy searches) in a chapter
    that trains on two. On a machine shared with other jobs, tiny operations on more threads than free cores
    wait for each other: one thread is then much faster."""
    before = torch.get_num_threads()
    torch.set_num_threads(int(threads))
    try:
        yield
    finally:
        torch.set_num_threads(before)


_KEPT = False
KEEP_LIMIT = 64 << 20  # bytes: blocks up to this size stay in the heap when freed


def keep_freed_memory() -> bool:
    """Ask glibc to keep freed blocks of up to 64 MiB for reuse instead of returning them to the OS.

    By default glibc maps blocks of 128 KiB and more with ``mmap`` and unmaps them when freed, so every
    training step page-faults its ``[B, 1 + M]`` logits, masks and gradients in again: 10-20% of a step on
    the book's models. The setting is process-wide (it changes where memory comes from, never a result) and
    is made once, by the training loop; it does nothing off Linux/glibc or with
    ``TT_HELPERS_KEEP_FREED_MEMORY=0``. Returns whether it is in effect."""
    global _KEPT
    if _KEPT or not sys.platform.startswith("linux") or os.environ.get("TT_HELPERS_KEEP_FREED_MEMORY") == "0":
        return _KEPT
    try:
        libc = ctypes.CDLL("libc.so.6")
    except OSError:  # not glibc (e.g. musl)
        return False
    m_trim_threshold, m_mmap_threshold = -1, -3  # from glibc's malloc.h
    _KEPT = bool(libc.mallopt(m_mmap_threshold, KEEP_LIMIT)) and bool(libc.mallopt(m_trim_threshold, 2 * KEEP_LIMIT))
    return _KEPT
