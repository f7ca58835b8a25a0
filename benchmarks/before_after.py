"""What the before-and-after benchmarks share: a measurement script run in a fresh interpreter against an
older revision of ``tt_helpers`` (exported with ``git archive``) and against the working tree, in one
invocation on the same machine, so the two sides are measured side by side."""

from __future__ import annotations

import json
import os
import pathlib
import subprocess
import sys
import tempfile

ROOT = pathlib.Path(__file__).resolve().parent.parent


def run_measurement(code: str, pythonpath: pathlib.Path, *args: object) -> dict:
    """Run ``code`` (a script whose last stdout line is a JSON object) with ``pythonpath`` first on the path;
    returns that object, or exits with the script's error."""
    env = {**os.environ, "PYTHONPATH": str(pythonpath)}
    result = subprocess.run([sys.executable, "-c", code, *map(str, args)], env=env, cwd=pythonpath,
                            capture_output=True, text=True, check=False)
    if result.returncode != 0:
        raise SystemExit(f"measurement failed for {pythonpath}:\n{result.stderr[-2000:]}")
    return json.loads(result.stdout.strip().splitlines()[-1])


def before_and_after(code: str, revision: str, *args: object) -> tuple[dict, dict]:
    """``run_measurement`` on ``tt_helpers`` as of git ``revision``, then on the working tree."""
    with tempfile.TemporaryDirectory() as folder:
        archive = subprocess.run(["git", "archive", revision, "tt_helpers"], cwd=ROOT, capture_output=True,
                                 check=True)
        subprocess.run(["tar", "-x", "-C", folder], input=archive.stdout, check=True)
        before = run_measurement(code, pathlib.Path(folder), *args)
    return before, run_measurement(code, ROOT, *args)
