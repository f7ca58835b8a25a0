"""After nbval has re-executed the chapters, print each one's time against the budget.

The project's budget: the whole book re-executes in at most 10 minutes on 2 CPU cores.
The times are those of the cells as pytest measured them; the kernels' start (setup and
teardown) is left out, so they are a little below the run's wall time.
"""

from __future__ import annotations

from collections import defaultdict
from pathlib import Path

from tt_helpers.repro import cpu_description

BOOK_BUDGET_S = 600.0

_seconds: dict[str, float] = defaultdict(float)


def pytest_runtest_logreport(report) -> None:
    path = Path(report.nodeid.split("::")[0])
    if report.when == "call" and path.suffix == ".ipynb":
        _seconds[path.name] += report.duration


def pytest_terminal_summary(terminalreporter) -> None:
    if not _seconds:
        return
    terminalreporter.section("chapter times (cells executed under nbval)")
    terminalreporter.write_line(f"CPU: {cpu_description()}")
    for name, seconds in sorted(_seconds.items()):
        terminalreporter.write_line(f"{name:<40} {seconds:7.1f} s")
    total = sum(_seconds.values())
    budget = f"(budget for the whole book: {BOOK_BUDGET_S:.0f} s)"
    terminalreporter.write_line(f"{'total':<40} {total:7.1f} s   {budget}")
