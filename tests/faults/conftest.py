"""The fault suite's table: every test here is marked ``@pytest.mark.fault("<fault>")``; at the
end of the session pytest prints, per fault, how many cases were tried, survived (resumed with
no lost or repeated step, or failed fast with a clear message) and lost (the test failed: a
hang ends as a timeout failure). ``MH_FAULT_TABLE=<path>`` also writes it there (Markdown)."""

from __future__ import annotations

import os
from collections import defaultdict
from pathlib import Path

import pytest

_TABLE: dict[str, dict[str, int]] = defaultdict(lambda: {"tried": 0, "survived": 0, "lost": 0})


def pytest_configure(config: pytest.Config) -> None:
    config.addinivalue_line("markers", "fault(name): the fault a fault-suite test injects")


@pytest.hookimpl(hookwrapper=True)
def pytest_runtest_makereport(item: pytest.Item, call: pytest.CallInfo):
    outcome = yield
    report = outcome.get_result()
    marker = item.get_closest_marker("fault")
    if marker is None or report.skipped:
        return
    if report.when == "call" or (report.when == "setup" and report.failed):
        row = _TABLE[marker.args[0]]
        row["tried"] += 1
        row["survived" if report.passed else "lost"] += 1


def fault_table() -> str:
    lines = ["| fault | tried | survived | lost |", "|---|---:|---:|---:|"]
    for fault, row in _TABLE.items():
        lines.append(f"| {fault} | {row['tried']} | {row['survived']} | {row['lost']} |")
    total = {k: sum(row[k] for row in _TABLE.values()) for k in ("tried", "survived", "lost")}
    lines.append(f"| **all** | {total['tried']} | {total['survived']} | {total['lost']} |")
    return "\n".join(lines)


def pytest_terminal_summary(terminalreporter, exitstatus: int, config: pytest.Config) -> None:
    if not _TABLE:
        return
    terminalreporter.section("fault suite")
    terminalreporter.write_line(fault_table())
    if path := os.environ.get("MH_FAULT_TABLE"):
        Path(path).write_text(fault_table() + "\n")
