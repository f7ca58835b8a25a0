"""The CPU naming of tt_helpers.repro: what logs and benchmark tables say about the machine, MKL's kernels included."""

import contextlib
import os
import platform
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from tt_helpers import repro
from tt_helpers.repro import cpu_description, cpu_name, mkl_kernels, mkl_sees_intel


def test_cpu_name_reads_the_model_name_line(tmp_path):
    info = tmp_path / "cpuinfo"
    info.write_text("processor\t: 0\nmodel\t\t: 167\nmodel name\t: Example CPU @ 2.60GHz\nflags\t\t: fpu\n")
    assert cpu_name(str(info)) == "Example CPU @ 2.60GHz"


def test_cpu_name_falls_back_to_platform_without_cpuinfo(tmp_path):
    expected = platform.processor() or platform.machine()
    assert cpu_name(str(tmp_path / "absent")) == expected
    (tmp_path / "empty").write_text("processor\t: 0\n")
    assert cpu_name(str(tmp_path / "empty")) == expected


def test_cpu_description_names_torch_and_mkl_kernels():
    name, rest = cpu_description().split("; torch kernels: ")
    kernels, mkl = rest.split("; MKL kernels: ")
    assert name == cpu_name()
    assert kernels == torch.backends.cpu.get_cpu_capability()
    assert mkl == mkl_kernels()


@pytest.mark.parametrize(
    ("answer", "words"), [(True, "Intel's"), (False, "generic (the CPU is not Intel's)"), (None, "none (no MKL)")]
)
def test_mkl_kernels_says_what_the_vendor_check_answered(monkeypatch, answer, words):
    monkeypatch.setattr(repro, "mkl_sees_intel", lambda: answer)
    assert repro.mkl_kernels() == words


def test_mkl_vendor_check_answers_for_this_process():
    answer = mkl_sees_intel()
    if not torch.backends.mkl.is_available():
        assert answer is None
        return
    assert isinstance(answer, bool)
    vendor = ""
    with contextlib.suppress(OSError), open("/proc/cpuinfo") as info:
        vendor = next((line.split(":", 1)[1].strip() for line in info if line.startswith("vendor_id")), "")
    if vendor == "GenuineIntel":
        assert answer
    elif vendor and not os.environ.get("LD_PRELOAD"):
        assert not answer  # another vendor's CPU, and nothing preloaded


@pytest.mark.skipif(
    not (sys.platform == "linux" and platform.machine() == "x86_64" and torch.backends.mkl.is_available()),
    reason="the shim is for torch's MKL on Linux x86-64",
)
def test_the_preloaded_shim_makes_mkl_see_intel(tmp_path):
    compiler = shutil.which("cc") or shutil.which("gcc")
    if compiler is None:
        pytest.skip("no C compiler")
    shim = tmp_path / "libtt_mkl_intel_path.so"
    source = Path(__file__).parents[1] / "tools" / "mkl_intel_path.c"
    subprocess.run([compiler, "-shared", "-fPIC", "-O2", "-o", str(shim), str(source)], check=True)
    probe = "from tt_helpers.repro import mkl_sees_intel; print(mkl_sees_intel())"
    env = {**os.environ, "LD_PRELOAD": str(shim)}
    answer = subprocess.run([sys.executable, "-c", probe], env=env, capture_output=True, text=True, check=True)
    assert answer.stdout.strip() == "True"
