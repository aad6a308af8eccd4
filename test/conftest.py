"""Shared pytest fixtures: where the repo and the read-only shared material are."""

from __future__ import annotations

from pathlib import Path

import pytest

REPO_ROOT = Path(__file__).resolve().parents[1]
SHARED_ROOT = REPO_ROOT.parent / "shared"


# --- a temporary folder of the run's own ------------------------------------------------------------
_RUN_TMPDIR: Path | None = None
RUN_TMPDIR_PREFIX = "showroom-tests-"
KEEP_FAILED_RUNS = 3


def pytest_configure(config: pytest.Config) -> None:
    """Every process the tests start (nodes, torchrun, COLMAP) inherits a TMPDIR of this run's own, so
    what one leaves behind is listed at the end of the run (pytest's own tmp_path folders live there too)."""
    import os
    import shutil
    import tempfile

    global _RUN_TMPDIR
    if _RUN_TMPDIR is not None or hasattr(config, "workerinput"):
        return
    # A run that passed removes its folder at the end; failed runs keep theirs to look at, the newest
    # KEEP_FAILED_RUNS of them (like pytest's own retention of its base folders).
    def modified(path: Path) -> float:
        try:
            return path.stat().st_mtime
        except OSError:  # removed meanwhile by another run
            return 0.0

    kept = sorted(Path(tempfile.gettempdir()).glob(f"{RUN_TMPDIR_PREFIX}*"), key=modified)
    for old in kept[: max(len(kept) - KEEP_FAILED_RUNS + 1, 0)]:
        shutil.rmtree(old, ignore_errors=True)
    _RUN_TMPDIR = Path(tempfile.mkdtemp(prefix=RUN_TMPDIR_PREFIX))
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
    session.config._showroom_failed = exitstatus != 0  # keep the folder (and its tmp_path folders) to look at


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
    """``../shared`` beside the checkout (present in CI); tests needing it skip with a reason otherwise."""
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
