"""Scratch folders that outlive no process: removed when the work ends, when the node stops, or at the
next start after a kill.

COLMAP needs its images and database on disk. A node stopped mid-reconstruction ends with
``os._exit`` (showroom_ros.ros.entry) while that work still runs in a worker thread, so a plain
``tempfile.TemporaryDirectory`` never got to clean up: every stop during SfM left ~2.5 MB in the
temporary folder, and a CI machine's disk filled over many runs. The folder's name carries the owning
process id, so:

- the work's own ``with`` removes it when the work ends (success or error);
- :func:`hand_scratch_to_cleaner` gives the folders still in use at a stop to a small process that
  removes them once this one has exited (removing them earlier would pull files from under COLMAP,
  which may abort the process instead of ending it cleanly);
- :func:`scratch_directory` removes folders of processes that no longer exist (a ``kill -9``) before
  it makes a new one.
"""

from __future__ import annotations

import contextlib
import os
import re
import shutil
import subprocess
import tempfile
import threading
from collections.abc import Iterator
from pathlib import Path

_in_use: set[Path] = set()
_in_use_lock = threading.Lock()


def _process_exists(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:  # someone else's process: it exists
        return True
    return True


def remove_orphaned_scratch(prefix: str, parent: Path | None = None) -> list[Path]:
    """Delete ``<prefix><pid>_*`` folders in ``parent`` (the temporary folder) whose process has ended."""
    parent = Path(parent or tempfile.gettempdir())
    pattern = re.compile(re.escape(prefix) + r"(\d+)_")
    removed: list[Path] = []
    try:
        candidates = list(parent.glob(f"{prefix}*"))
    except OSError:
        return removed
    for path in candidates:
        match = pattern.match(path.name)
        if match is None or not path.is_dir() or path.is_symlink():
            continue
        pid = int(match.group(1))
        if pid == os.getpid() or _process_exists(pid):
            continue
        shutil.rmtree(path, ignore_errors=True)
        if not path.exists():
            removed.append(path)
    return removed


@contextlib.contextmanager
def scratch_directory(prefix: str) -> Iterator[Path]:
    """A fresh folder ``<tmp>/<prefix><pid>_<random>`` for the duration of the ``with``."""
    remove_orphaned_scratch(prefix)
    path = Path(tempfile.mkdtemp(prefix=f"{prefix}{os.getpid()}_"))
    with _in_use_lock:
        _in_use.add(path)
    try:
        yield path
    finally:
        shutil.rmtree(path, ignore_errors=True)
        with _in_use_lock:
            _in_use.discard(path)


def scratch_in_use() -> list[Path]:
    """The scratch folders this process has open now."""
    with _in_use_lock:
        return sorted(_in_use)


def hand_scratch_to_cleaner() -> subprocess.Popen | None:
    """Start a detached ``sh`` that waits for this process to end, then removes its open scratch folders.

    For a process about to end without waiting for its worker threads. Returns the cleaner (None when
    there is nothing to clean or no shell to start).
    """
    folders = scratch_in_use()
    if not folders:
        return None
    script = 'while kill -0 "$1" 2>/dev/null; do sleep 0.05; done; shift; rm -rf -- "$@"'
    try:
        return subprocess.Popen(
            ["/bin/sh", "-c", script, "showroom-scratch-cleaner", str(os.getpid()), *map(str, folders)],
            stdin=subprocess.DEVNULL,
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
            start_new_session=True,  # a Ctrl-C to the process group must not stop the cleaner
            close_fds=True,
        )
    except OSError:
        return None  # the next scratch_directory() call removes them instead
