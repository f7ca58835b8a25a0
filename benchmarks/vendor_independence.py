"""What the CPU-vendor-independent settings of ``make`` cost and save, measured side by side in one run.

The stored outputs must re-execute bit for bit on Intel and AMD CPUs (README, "Two torch threads"). Two
settings serve that; this script measures each against its alternatives:

1. **Annoy's compiler flags.** Annoy 1.17.3 compiled three ways, each with ``pip install --target`` into a
   temporary folder: ``setup.py``'s flags less ``-march=native`` (so with ``-ffast-math``), the Makefile's
   ``ANNOY_FLAGS`` (``-fassociative-math`` and the two flags it needs instead of ``-ffast-math``), and those
   without ``-fassociative-math``. For each: the estimate instructions (``rsqrt*``, ``rcp*``, whose results
   differ between vendors) ``objdump -d`` finds in the module, the single-threaded build time of a 10-tree
   angular index of 100,000 x 65 vectors, the time per query at 2,000 candidates (one thread, 500 queries,
   best of 2), and whether the neighbours equal those of the ``-ffast-math`` build.
2. **MKL's vendor check.** Exact search over 100,000 x 64 vectors one query at a time (``tt.ExactIndex``: torch
   matmul + top-k, one thread, ``MKL_ENABLE_INSTRUCTIONS=AVX2`` as under ``make test``), in a subprocess with
   MKL's vendor check as it is and in one with ``tools/mkl_intel_path.c`` preloaded. On an Intel CPU the two
   are the same kernels.

Run from the repository root (about 3 minutes on 2 cores; needs a C/C++ compiler and the package registry
for Annoy's source, as ``make venv`` does):

    .venv/bin/python benchmarks/vendor_independence.py
"""

from __future__ import annotations

import os
import pathlib
import re
import shutil
import subprocess
import sys
import tempfile

import pandas as pd

from tt_helpers.repro import cpu_description

ROOT = pathlib.Path(__file__).resolve().parents[1]
RESULTS = ROOT / "benchmarks" / "results"
ANNOY_PIN = "annoy==1.17.3"
BASE_FLAGS = "-D_CRT_SECURE_NO_WARNINGS,-fpermissive,-O3,{math},-DANNOYLIB_MULTITHREADED_BUILD,-std=c++14"

# Runs in a fresh interpreter with one Annoy build first on sys.path; prints build s, ms per query, a digest.
ANNOY_TIMING = r'''
import hashlib, sys, time
import numpy as np
sys.path.insert(0, sys.argv[1])
import annoy
rng = np.random.default_rng(0)
items = rng.standard_normal((100_000, 65)).astype(np.float32)
queries = rng.standard_normal((500, 65)).astype(np.float32)
index = annoy.AnnoyIndex(65, "angular")
index.set_seed(1)
for i, v in enumerate(items):
    index.add_item(i, v)
start = time.perf_counter(); index.build(10, n_jobs=1); build = time.perf_counter() - start
best = float("inf")
for _ in range(2):
    start = time.perf_counter()
    found = [index.get_nns_by_vector(q, 10, search_k=2000) for q in queries]
    best = min(best, time.perf_counter() - start)
print(build, best / len(queries) * 1e3, hashlib.md5(str(found).encode()).hexdigest())
'''

# Runs in a fresh interpreter: exact search, one query at a time; prints the median ms and MKL's answer.
EXACT_TIMING = r'''
import time, torch
import tt_helpers as tt
from tt_helpers.repro import mkl_kernels
torch.set_num_threads(1)
generator = torch.Generator().manual_seed(0)
index = tt.ExactIndex().build(torch.randn(100_000, 64, generator=generator))
queries = torch.randn(300, 1, 64, generator=generator)
times = []
for query in queries:
    start = time.perf_counter(); index.search(query, 10); times.append(time.perf_counter() - start)
print(sorted(times)[len(times) // 2] * 1e3, mkl_kernels())
'''


def makefile_annoy_math() -> str:
    """The math flags of the Makefile's ``ANNOY_FLAGS`` (its ``ANNOY_SUMS``), so the benchmark measures them."""
    found = re.search(r"^ANNOY_SUMS := (.+)$", (ROOT / "Makefile").read_text(), flags=re.MULTILINE)
    if found is None:
        raise RuntimeError("no ANNOY_SUMS line in the Makefile: update benchmarks/vendor_independence.py")
    return found.group(1).strip()


def estimate_instructions(module: pathlib.Path) -> str:
    if shutil.which("objdump") is None:
        return "n/a (no objdump)"
    listing = subprocess.run(["objdump", "-d", str(module)], capture_output=True, text=True, check=True).stdout
    return str(len(re.findall(r"\b(?:v?rsqrt|v?rcp)(?:ss|ps|14ps|14ss)\b", listing)))


def annoy_builds(folder: pathlib.Path) -> pd.DataFrame:
    pip = [sys.executable, "-m", "pip"]
    subprocess.run([*pip, "download", "-q", "--no-deps", "--no-binary", "annoy", ANNOY_PIN, "-d", str(folder)],
                   check=True)
    source = next(folder.glob("annoy-*.tar.gz"))
    variants = {
        "-ffast-math (setup.py's, less -march=native)": "-ffast-math",
        "the Makefile's (-fassociative-math ...)": makefile_annoy_math(),
        "neither": "",
    }
    rows, reference = {}, None
    for name, math in variants.items():
        target = folder / f"annoy-{len(rows)}"
        flags = BASE_FLAGS.format(math=math).replace(",,", ",")
        subprocess.run([*pip, "install", "-q", "--no-deps", "--no-cache-dir", "--target", str(target), str(source)],
                       env={**os.environ, "ANNOY_COMPILER_ARGS": flags}, check=True, capture_output=True)
        module = next((target / "annoy").glob("annoylib*.so"))
        out = subprocess.run([sys.executable, "-c", ANNOY_TIMING, str(target)], capture_output=True, text=True,
                             check=True).stdout.split()
        build, query, digest = float(out[0]), float(out[1]), out[2]
        reference = reference or digest
        rows[name] = {"estimate instructions": estimate_instructions(module), "build (s)": round(build, 2),
                      "ms per query": round(query, 3), "same neighbours as -ffast-math": digest == reference}
    table = pd.DataFrame(rows).T
    table.index.name = "Annoy 1.17.3 compiled with"
    return table


def exact_search(folder: pathlib.Path) -> pd.DataFrame:
    compiler = shutil.which("cc") or shutil.which("gcc")
    shim = folder / "libtt_mkl_intel_path.so"
    if compiler is not None:
        subprocess.run([compiler, "-shared", "-fPIC", "-O2", "-o", str(shim), str(ROOT / "tools" / "mkl_intel_path.c")],
                       check=True)
    env = {**os.environ, "MKL_ENABLE_INSTRUCTIONS": "AVX2", "ATEN_CPU_CAPABILITY": "avx2"}
    env.pop("LD_PRELOAD", None)
    rows = {}
    for name, preload in (("MKL's vendor check as it is", None), ("tools/mkl_intel_path.c preloaded", shim)):
        if preload is not None and not preload.exists():
            continue
        run_env = env if preload is None else {**env, "LD_PRELOAD": str(preload)}
        out = subprocess.run([sys.executable, "-c", EXACT_TIMING], env=run_env, capture_output=True, text=True,
                             check=True).stdout.split(maxsplit=1)
        rows[name] = {"MKL kernels": out[1].strip(), "exact search, ms per query (median)": round(float(out[0]), 3)}
    table = pd.DataFrame(rows).T
    table.index.name = "100,000 x 64, one query at a time"
    return table


def main() -> None:
    pd.set_option("display.width", 160)
    lines = [f"machine: {cpu_description()}; Python {sys.version.split()[0]}"]
    with tempfile.TemporaryDirectory(prefix="tt-vendor-") as folder:
        annoy_table = annoy_builds(pathlib.Path(folder))
        exact_table = exact_search(pathlib.Path(folder))
    lines += ["", "1. Annoy's compiler flags (10 trees, 100,000 x 65, search_k 2,000, one thread)",
              annoy_table.to_string(), "", "2. MKL's vendor check (MKL_ENABLE_INSTRUCTIONS=AVX2)",
              exact_table.to_string()]
    text = "\n".join(lines)
    print(text)
    RESULTS.mkdir(exist_ok=True)
    (RESULTS / "vendor_independence.txt").write_text(text + "\n")


if __name__ == "__main__":
    main()
