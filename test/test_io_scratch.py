"""Scratch folders (showroom_ros.io.scratch): none outlives its process, however the process ends."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import pytest

from showroom_ros.io.scratch import LOCK_NAME, remove_orphaned_scratch, scratch_directory, scratch_in_use

PREFIX = "showroom_test_"


def _dead_pid() -> int:
    child = subprocess.Popen([sys.executable, "-c", "pass"])
    child.wait()
    return child.pid


def _wait_until_gone(folder: Path, pattern: str, timeout_s: float = 5.0) -> list[Path]:
    deadline = time.monotonic() + timeout_s
    while (left := list(folder.glob(pattern))) and time.monotonic() < deadline:
        time.sleep(0.05)
    return left


@pytest.fixture
def temporary_folder(tmp_path, monkeypatch) -> Path:
    folder = tmp_path / "tmp"
    folder.mkdir()
    monkeypatch.setenv("TMPDIR", str(folder))
    monkeypatch.setattr("tempfile.tempdir", None)  # tempfile caches gettempdir(): read TMPDIR again
    return folder


def test_the_folder_exists_inside_the_with_and_is_gone_after_an_error(temporary_folder):
    with pytest.raises(RuntimeError), scratch_directory(PREFIX) as path:
        assert path.parent == temporary_folder and path.name.startswith(f"{PREFIX}{os.getpid()}_")
        (path / "database.db").write_bytes(b"x" * 1000)
        assert scratch_in_use() == [path]
        raise RuntimeError("COLMAP failed")
    assert not path.exists()
    assert scratch_in_use() == []


def test_unlocked_folders_are_removed_and_locked_or_foreign_ones_kept(temporary_folder):
    import fcntl

    dead = temporary_folder / f"{PREFIX}{_dead_pid()}_abc"  # its owner ended: the lock file is free
    (dead / "images").mkdir(parents=True)
    (dead / LOCK_NAME).touch()
    (dead / "images" / "keyframe_000.png").write_bytes(b"png")
    held = temporary_folder / f"{PREFIX}{_dead_pid()}_def"  # the name says nothing: the lock decides
    held.mkdir()
    (held / LOCK_NAME).touch()
    foreign = temporary_folder / f"{PREFIX}notours"  # no lock file: not made by scratch_directory
    foreign.mkdir()
    stray_file = temporary_folder / f"{PREFIX}file"
    stray_file.write_text("a file, not a folder")
    with open(held / LOCK_NAME) as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        with scratch_directory(PREFIX) as path, scratch_directory(PREFIX) as second:
            assert not dead.exists()
            assert held.is_dir() and foreign.is_dir() and stray_file.is_file()
            assert path.is_dir() and second.is_dir(), "one use of scratch removed another one still in use"
    assert remove_orphaned_scratch(PREFIX, temporary_folder) == [held]


def _child_holding_scratch(ending: str) -> str:
    return textwrap.dedent(
        f"""
        import os, sys, threading, time
        from showroom_ros.io.scratch import hand_scratch_to_cleaner, scratch_directory

        def work():
            with scratch_directory({PREFIX!r}) as path:
                (path / "database.db").write_bytes(b"x" * 100000)
                print(path, flush=True)
                time.sleep(60)  # a COLMAP run that is abandoned, never finished

        threading.Thread(target=work, daemon=True).start()
        sys.stdin.readline()
        {ending}
        """
    )


@pytest.mark.parametrize(
    "ending",
    ["hand_scratch_to_cleaner(); os._exit(0)", "hand_scratch_to_cleaner(); os.kill(os.getpid(), 9)"],
    ids=["os._exit", "SIGKILL after handing over"],
)
def test_a_process_ending_mid_work_leaves_no_scratch(temporary_folder, ending):
    """How the node stops (ros/entry.py): abandoned worker threads, then os._exit."""
    env = {**os.environ, "TMPDIR": str(temporary_folder)}
    child = subprocess.Popen(
        [sys.executable, "-P", "-c", _child_holding_scratch(ending)],
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        text=True,
        env=env,
    )
    path = Path(child.stdout.readline().strip())
    assert path.is_dir() and path.parent == temporary_folder
    child.stdin.write("stop\n")
    child.stdin.flush()
    child.wait(timeout=30)
    assert not _wait_until_gone(temporary_folder, f"{PREFIX}*"), "scratch left after the process ended"


def test_a_killed_process_leaves_scratch_that_the_next_run_removes(temporary_folder):
    env = {**os.environ, "TMPDIR": str(temporary_folder)}
    child = subprocess.Popen(
        [sys.executable, "-P", "-c", _child_holding_scratch("pass")],
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        text=True,
        env=env,
    )
    path = Path(child.stdout.readline().strip())
    child.send_signal(signal.SIGKILL)
    child.wait(timeout=30)
    assert path.is_dir()  # nothing can run at a SIGKILL
    with scratch_directory(PREFIX):
        assert not path.exists()
