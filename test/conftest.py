"""Shared pytest fixtures: where the repo and the read-only shared material are."""

from __future__ import annotations

from pathlib import Path

import pytest

pytest_plugins = (
    "ci_skips",  # test/ci_skips.py: a skip on CI fails unless marked may_skip_on_ci
    "pytester",  # test_conftest.py runs ci_skips on test files of its own
    "ros_harness",  # its client / processes fixtures, for every real-process module (a module may define its own)
)

REPO_ROOT = Path(__file__).resolve().parents[1]
SHARED_ROOT = REPO_ROOT.parent / "shared"


# --- a temporary folder of the run's own ------------------------------------------------------------
_RUN_TMPDIR: Path | None = None
RUN_TMPDIR_PREFIX = "showroom-tests-"
KEEP_FAILED_RUNS = 3


def _still_running(folder: Path) -> bool:
    """Whether the run that made ``folder`` (``<prefix><pid>-<random>``) is still going."""
    import os

    pid = folder.name.removeprefix(RUN_TMPDIR_PREFIX).split("-")[0]
    if not pid.isdigit():
        return False  # a folder from before the process id was in the name
    try:
        os.kill(int(pid), 0)
    except ProcessLookupError:
        return False
    except PermissionError:  # another user's process, alive
        return True
    return True


def remove_old_run_folders(parent: Path) -> list[Path]:
    """Remove finished runs' folders but the newest KEEP_FAILED_RUNS - 1 (room for this run's), oldest
    first; returns them. A passing run removes its own folder at the end, so what is here is failed runs'
    (kept to look at, like pytest's retention of its base folders) or runs still going: several engineers
    and CI jobs share a machine, and a run's folder is never removed under it."""
    import shutil

    def modified(path: Path) -> float:
        try:
            return path.stat().st_mtime
        except OSError:  # removed meanwhile by another run
            return 0.0

    finished = sorted((p for p in parent.glob(f"{RUN_TMPDIR_PREFIX}*") if not _still_running(p)), key=modified)
    removed = finished[: max(len(finished) - KEEP_FAILED_RUNS + 1, 0)]
    for old in removed:
        shutil.rmtree(old, ignore_errors=True)
    return removed


def pytest_configure(config: pytest.Config) -> None:
    """Every process the tests start (nodes, torchrun, COLMAP) inherits a TMPDIR of this run's own, so
    what one leaves behind is listed at the end of the run (pytest's own tmp_path folders live there too)."""
    import os
    import tempfile

    global _RUN_TMPDIR
    if _RUN_TMPDIR is not None or hasattr(config, "workerinput"):
        return
    remove_old_run_folders(Path(tempfile.gettempdir()))
    _RUN_TMPDIR = Path(tempfile.mkdtemp(prefix=f"{RUN_TMPDIR_PREFIX}{os.getpid()}-"))
    os.environ["TMPDIR"] = str(_RUN_TMPDIR)
    tempfile.tempdir = None  # gettempdir() caches its answer: read TMPDIR again


_LEFT_BY_MODULE: dict[str, list[str]] = {}


#: Reused from run to run, not one more per run: pytest's own folders, and the empty torchinductor_<user>
#: folder torch makes when a module is built under ``torch.device("meta")``.
_REUSED_IN_TMPDIR = ("pytest-of-", "torchinductor_")


def _tmpdir_entries() -> set[str]:
    if _RUN_TMPDIR is None or not _RUN_TMPDIR.is_dir():
        return set()
    return {p.name for p in _RUN_TMPDIR.iterdir() if not p.name.startswith(_REUSED_IN_TMPDIR)}


@pytest.fixture(autouse=True, scope="module")
def _notes_what_a_module_leaves_in_tmpdir(request: pytest.FixtureRequest):
    before = _tmpdir_entries()
    yield
    left = sorted(_tmpdir_entries() - before)
    if left:
        _LEFT_BY_MODULE[request.node.name] = left


def pytest_terminal_summary(terminalreporter, exitstatus: int, config: pytest.Config) -> None:
    for module, left in _LEFT_BY_MODULE.items():
        terminalreporter.write_line(f"{module} left in the run's TMPDIR ({_RUN_TMPDIR}): {left}")


def pytest_unconfigure(config: pytest.Config) -> None:
    import shutil

    if _RUN_TMPDIR is not None and not getattr(config, "_showroom_failed", False):
        shutil.rmtree(_RUN_TMPDIR, ignore_errors=True)


def pytest_sessionfinish(session: pytest.Session, exitstatus: int) -> None:
    # Keep the folder (and its tmp_path folders) to look at; session.exitstatus: ci_skips may have failed the run.
    session.config._showroom_failed = session.exitstatus != 0


def pytest_report_header(config: pytest.Config) -> str:
    """Free space where the tests write: a full disk shows up as odd failures deep inside a test."""
    import shutil
    import tempfile

    free = shutil.disk_usage(tempfile.gettempdir()).free
    return f"free space in {tempfile.gettempdir()}: {free / 1e9:.1f} GB (a full run writes ~0.7 GB)"


@pytest.fixture(scope="session")
def repo_root() -> Path:
    return REPO_ROOT


@pytest.fixture(scope="session")
def shared_root() -> Path:
    """``../shared`` beside the checkout; tests needing it skip with a reason elsewhere, and fail on CI (it
    is there: test/ci_skips.py)."""
    if not SHARED_ROOT.is_dir():
        pytest.skip(f"shared material not found at {SHARED_ROOT}")
    return SHARED_ROOT


# --- modules that run in a process of their own ----------------------------------------------------
ISOLATED_MODULES = ("test_fast3r_engines.py",)
"""Loaded in one process, ONNX Runtime, OpenVINO and inductor-compiled code beside everything the earlier
modules loaded (Open3D, pycolmap, rclpy, the viewer) ended the pytest process with a kernel SIGSEGV
(si_code SI_KERNEL, main thread, at a random point) when it next spawned a child. Not root-caused; the
node loads one engine, never all three. In a full run these modules are deselected here and
``test_isolated_modules.py`` runs each in a fresh interpreter; alone they run in-process."""
ISOLATED_ENV = "SHOWROOM_TEST_ISOLATED"


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    import os

    files = {item.path.name for item in items}
    if os.environ.get(ISOLATED_ENV) == "1" or len(files) <= 1:
        return
    isolated = [item for item in items if item.path.name in ISOLATED_MODULES]
    if isolated:
        config.hook.pytest_deselected(items=isolated)
        items[:] = [item for item in items if item.path.name not in ISOLATED_MODULES]
