"""Counts the bad inputs the table-driven suite exercises and prints the figure after the run."""

from __future__ import annotations

import pytest

# tests here that feed good input (controls that the checks refuse the bad, not the good)
GOOD_INPUT_TESTS = {
    "test_a_good_file_still_imports",
    "test_the_project_services_are_still_allowed",
    "test_same_payment_again_is_idempotent",
    "test_cli_reads_without_the_secrets_file",
}
_passed: set[str] = set()


def pytest_runtest_logreport(report: pytest.TestReport) -> None:
    name = report.nodeid.split("::")[-1].split("[")[0]
    if report.when == "call" and report.passed and report.nodeid.startswith("tests/inputs/"):
        _passed.update([report.nodeid] if name not in GOOD_INPUT_TESTS else [])


def pytest_terminal_summary(terminalreporter: pytest.TerminalReporter) -> None:
    if _passed:
        terminalreporter.write_line(
            f"tests/inputs: {len(_passed)} bad inputs refused or counted as specified"
        )
