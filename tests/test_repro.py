"""The CPU naming of tt_helpers.repro: what logs and benchmark tables say about the machine."""

import platform

import torch

from tt_helpers.repro import cpu_description, cpu_name


def test_cpu_name_reads_the_model_name_line(tmp_path):
    info = tmp_path / "cpuinfo"
    info.write_text("processor\t: 0\nmodel\t\t: 167\nmodel name\t: Example CPU @ 2.60GHz\nflags\t\t: fpu\n")
    assert cpu_name(str(info)) == "Example CPU @ 2.60GHz"


def test_cpu_name_falls_back_to_platform_without_cpuinfo(tmp_path):
    expected = platform.processor() or platform.machine()
    assert cpu_name(str(tmp_path / "absent")) == expected
    (tmp_path / "empty").write_text("processor\t: 0\n")
    assert cpu_name(str(tmp_path / "empty")) == expected


def test_cpu_description_names_torch_kernels():
    name, kernels = cpu_description().split("; torch kernels: ")
    assert name == cpu_name()
    assert kernels == torch.backends.cpu.get_cpu_capability()
