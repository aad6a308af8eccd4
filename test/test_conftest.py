"""The test suite's own machinery: skips fail CI unless marked (test/ci_skips.py), and a run's TMPDIR
survives the other runs that start meanwhile (test/conftest.py)."""

from __future__ import annotations

import os
import subprocess
import sys
import time
from pathlib import Path

import pytest
from conftest import KEEP_FAILED_RUNS, RUN_TMPDIR_PREFIX, remove_old_run_folders

SAMPLE_TESTS = '''
import pytest

def test_runs():
    pass

def test_skips_without_a_mark():
    pytest.skip("shared material not found at /somewhere")

@pytest.mark.skipif(True, reason="rclpy is not importable")
def test_skipif_without_a_mark():
    pass

@pytest.mark.may_skip_on_ci("needs a GPU")
def test_skips_with_a_reason():
    pytest.skip("no CUDA device")

@pytest.mark.may_skip_on_ci
def test_marked_without_a_reason():
    pytest.skip("no CUDA device")

@pytest.mark.xfail(reason="a known defect", strict=True)
def test_expected_to_fail():
    assert False
'''

INNER_OPTIONS = ("-p", "ci_skips", "-rfEs")


@pytest.fixture(autouse=True)
def _inner_runs_load_only_what_they_name(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("PYTEST_DISABLE_PLUGIN_AUTOLOAD", "1")  # not ROS's, dash's, ... (seconds a run)


@pytest.mark.parametrize("ci", ["true", "1", "yes", "TRUE"])
def test_on_ci_an_unmarked_skip_fails_and_a_marked_one_is_listed(
    pytester: pytest.Pytester, monkeypatch: pytest.MonkeyPatch, ci: str
) -> None:
    pytester.makepyfile(test_sample=SAMPLE_TESTS)
    monkeypatch.setenv("CI", ci)
    result = pytester.runpytest(*INNER_OPTIONS)
    result.assert_outcomes(passed=1, failed=2, errors=1, skipped=1, xfailed=1)  # a skipif skips in set-up
    assert result.ret == pytest.ExitCode.TESTS_FAILED
    result.stdout.fnmatch_lines_random(
        [
            "*skipped on CI, so it did not run: shared material not found at /somewhere*",
            "*skipped on CI, so it did not run: rclpy is not importable*",
            "*may_skip_on_ci needs a reason*",
            "SKIPPED*no CUDA device*",  # -rs lists the allowed skip
        ]
    )


@pytest.mark.parametrize("ci", ["", "false", "0"])
def test_off_ci_every_skip_is_a_skip_and_listed(
    pytester: pytest.Pytester, monkeypatch: pytest.MonkeyPatch, ci: str
) -> None:
    pytester.makepyfile(test_sample=SAMPLE_TESTS)
    monkeypatch.setenv("CI", ci)
    result = pytester.runpytest(*INNER_OPTIONS)
    result.assert_outcomes(passed=1, skipped=4, xfailed=1)
    assert result.ret == pytest.ExitCode.OK
    result.stdout.fnmatch_lines_random(["SKIPPED*shared material not found*", "SKIPPED*rclpy is not importable*"])


def test_on_ci_a_module_that_skips_at_import_fails_the_run(
    pytester: pytest.Pytester, monkeypatch: pytest.MonkeyPatch
) -> None:
    pytester.makepyfile(
        test_fine="def test_fine():\n    pass\n",
        test_needs_a_package='import pytest\npytest.importorskip("no_such_package_for_ci_skips")\n',
    )
    monkeypatch.setenv("CI", "true")
    result = pytester.runpytest(*INNER_OPTIONS)
    result.assert_outcomes(passed=1, skipped=1)
    assert result.ret == pytest.ExitCode.TESTS_FAILED
    result.stdout.fnmatch_lines(["*modules skipped on CI*", "test_needs_a_package.py: *no_such_package_for_ci_skips*"])
    monkeypatch.setenv("CI", "false")
    assert pytester.runpytest(*INNER_OPTIONS).ret == pytest.ExitCode.OK


def test_the_suites_options_list_every_skip(pytester: pytest.Pytester, repo_root: Path) -> None:
    """pyproject's addopts, as the suite runs: skips listed (-rs) next to failures (-rf)."""
    import tomllib

    addopts = tomllib.loads((repo_root / "pyproject.toml").read_text())["tool"]["pytest"]["ini_options"]["addopts"]
    pytester.makeini(f"[pytest]\naddopts = {addopts}\n")
    pytester.makepyfile(test_one="import pytest\ndef test_a():\n    pytest.skip('listed')\ndef test_b():\n    assert 0")
    result = pytester.runpytest()
    result.stdout.fnmatch_lines_random(["SKIPPED*listed*", "FAILED*test_b*"])


def _dead_pid() -> int:
    child = subprocess.Popen([sys.executable, "-c", "pass"])
    child.wait()
    return child.pid


def test_old_run_folders_go_but_a_running_runs_folder_stays(tmp_path: Path) -> None:
    dead = _dead_pid()
    alive = [os.getpid(), os.getppid()]
    finished = [tmp_path / f"{RUN_TMPDIR_PREFIX}{dead}-{i:02d}" for i in range(KEEP_FAILED_RUNS + 3)]
    legacy = tmp_path / f"{RUN_TMPDIR_PREFIX}abc123"  # named before the process id was in the name
    running = [tmp_path / f"{RUN_TMPDIR_PREFIX}{pid}-run" for pid in alive]
    other = tmp_path / "someone-elses"
    ordered = [legacy, *finished]  # oldest first
    for age, folder in enumerate([*running, *ordered, other]):  # the running runs' folders are the oldest
        folder.mkdir()
        (folder / "left.txt").write_text("x")
        os.utime(folder, (time.time() - 1000 + age, time.time() - 1000 + age))
    removed = remove_old_run_folders(tmp_path)
    expected = ordered[: len(ordered) - KEEP_FAILED_RUNS + 1]
    assert removed == expected
    assert sorted(p.name for p in tmp_path.iterdir()) == sorted(
        p.name for p in [*ordered[len(expected) :], *running, other]
    )


def test_the_suite_itself_runs_with_the_ci_rule(request: pytest.FixtureRequest) -> None:
    """conftest.py loads ci_skips (a second ``pytest_plugins = ...`` there once replaced the first)."""
    assert request.config.pluginmanager.get_plugin("ci_skips") is not None
    assert any(line.startswith("may_skip_on_ci") for line in request.config.getini("markers"))
