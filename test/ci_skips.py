"""A skip on CI is a failure, unless the test says why it may skip there (a pytest plugin).

CI has everything ``make setup`` installs and ``../shared`` beside the checkout, so a test that skips
there (shared data not found, rclpy missing, a package that did not install) did not run, and a green
run would hide it. With ``CI`` set (``true``, ``1`` or ``yes``, as CI services and ``.ci/run`` set it):

- a test that skips fails, its message saying why it skipped and how to allow it;
- ``@pytest.mark.may_skip_on_ci("reason")`` allows it, for what CI cannot have (a GPU, a package that
  has no PyPI wheel); the reason is required;
- a whole module that skips at import (``pytest.importorskip`` at the top) cannot carry the mark: the
  run fails at its end, naming the module.

Loaded by ``test/conftest.py``; stand-alone so a test can run it on a test file of its own.
"""

from __future__ import annotations

import os

import pytest

MARK = "may_skip_on_ci"
_MODULE_SKIPS = pytest.StashKey[list[str]]()


def on_ci() -> bool:
    """Whether this run is a CI run (the ``CI`` variable set to true, 1 or yes)."""
    return os.environ.get("CI", "").strip().lower() in {"true", "1", "yes"}


def _skip_reason(report: pytest.TestReport | pytest.CollectReport) -> str:
    longrepr = report.longrepr
    if isinstance(longrepr, tuple) and len(longrepr) == 3:  # (path, line, "Skipped: reason")
        return str(longrepr[2]).removeprefix("Skipped: ")
    return str(longrepr)


def _allowed(item: pytest.Item) -> bool:
    marker = item.get_closest_marker(MARK)
    return marker is not None and bool(marker.args) and bool(str(marker.args[0]).strip())


def pytest_configure(config: pytest.Config) -> None:
    config.addinivalue_line(
        "markers",
        f"{MARK}(reason): this test may skip on CI for the reason given (a GPU, a package without a PyPI "
        "wheel); any other skip fails a CI run",
    )
    config.stash[_MODULE_SKIPS] = []


@pytest.hookimpl(hookwrapper=True)
def pytest_runtest_makereport(item: pytest.Item, call: pytest.CallInfo[None]):
    outcome = yield
    report: pytest.TestReport = outcome.get_result()
    if not report.skipped or hasattr(report, "wasxfail") or not on_ci() or _allowed(item):
        return
    marker = item.get_closest_marker(MARK)
    how = (
        f"@pytest.mark.{MARK} needs a reason: @pytest.mark.{MARK}(\"needs a GPU\")"
        if marker is not None
        else f"if CI cannot have what it needs (a GPU, a package without a PyPI wheel), mark it "
        f"@pytest.mark.{MARK}(\"why\"); else make CI have it"
    )
    report.outcome = "failed"
    report.longrepr = f"skipped on CI, so it did not run: {_skip_reason(report)}\n{how}"


@pytest.hookimpl(hookwrapper=True)
def pytest_make_collect_report(collector: pytest.Collector):
    outcome = yield
    report: pytest.CollectReport = outcome.get_result()
    if report.skipped and on_ci():
        collector.config.stash[_MODULE_SKIPS].append(f"{collector.nodeid}: {_skip_reason(report)}")


@pytest.hookimpl(tryfirst=True)
def pytest_sessionfinish(session: pytest.Session, exitstatus: int) -> None:
    if session.config.stash[_MODULE_SKIPS] and exitstatus == pytest.ExitCode.OK:
        session.exitstatus = pytest.ExitCode.TESTS_FAILED


def pytest_terminal_summary(terminalreporter, exitstatus: int, config: pytest.Config) -> None:
    skipped = config.stash[_MODULE_SKIPS]
    if skipped:
        terminalreporter.section("modules skipped on CI (a failure: none of their tests ran)", sep="=", red=True)
        for line in skipped:
            terminalreporter.write_line(line)
