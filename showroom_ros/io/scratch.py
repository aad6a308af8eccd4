"""Scratch folders that outlive no process: removed when the work ends, when the node stops, or at the
next start after a kill.

COLMAP needs its images and database on disk. A node stopped mid-reconstruction ends with
``os._exit`` (showroom_ros.ros.entry) while that work still runs in a worker thread, so a plain
``tempfile.TemporaryDirectory`` never got to clean up: every stop during SfM left ~2.5 MB in the
temporary folder, and nothing ever removed them. Each folder holds a lock (``flock``) for
as long as it is in use, which the kernel drops when its process ends, so:

- the work's own ``with`` removes it when the work ends (success or error);
- :func:`hand_scratch_to_cleaner` gives the folders still in use at a stop to a small process that
  removes them once this one has exited (removing them earlier would pull files from under COLMAP,
  which may abort the process instead of ending it cleanly);
- :func:`scratch_directory` removes unlocked folders (left by a ``kill -9``) before it makes a new one.
"""

from __future__ import annotations

import contextlib
import fcntl
import os
import shutil
import subprocess
import sys
import tempfile
import threading
from collections.abc import Iterator
from pathlib import Path

_in_use: set[Path] = set()
_in_use_lock = threading.Lock()


#: Held locked (``flock``) for as long as the folder is in use; the kernel releases it when the process
#: ends, however it ends, so a folder whose lock can be taken is an orphan.
LOCK_NAME = ".in-use"


def _is_orphan(folder: Path) -> bool:
    try:
        descriptor = os.open(folder / LOCK_NAME, os.O_RDONLY)
    except OSError:
        return False  # no lock file: not one of ours, or being made right now
    try:
        fcntl.flock(descriptor, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except OSError:
        return False  # locked: its process is still running (this one included)
    finally:
        os.close(descriptor)
    return True


def remove_orphaned_scratch(prefix: str, parent: Path | None = None) -> list[Path]:
    """Delete ``<prefix>*`` folders in ``parent`` (the temporary folder) whose process has ended."""
    parent = Path(parent or tempfile.gettempdir())
    removed: list[Path] = []
    try:
        candidates = list(parent.glob(f"{prefix}*"))
    except OSError:
        return removed
    for path in candidates:
        if path.is_dir() and not path.is_symlink() and _is_orphan(path):
            shutil.rmtree(path, ignore_errors=True)
            if not path.exists():
                removed.append(path)
    return removed


@contextlib.contextmanager
def scratch_directory(prefix: str) -> Iterator[Path]:
    """A fresh folder ``<tmp>/<prefix><pid>_<random>`` for the duration of the ``with``."""
    remove_orphaned_scratch(prefix)
    # Made under a hidden name and locked before it is renamed to a name the clean-up looks at: another
    # process must never see it without its lock held.
    hidden = Path(tempfile.mkdtemp(prefix=f".{prefix}{os.getpid()}_"))
    lock = os.open(hidden / LOCK_NAME, os.O_CREAT | os.O_WRONLY | os.O_CLOEXEC, 0o600)
    fcntl.flock(lock, fcntl.LOCK_EX)
    path = hidden.with_name(hidden.name[1:])
    try:
        os.rename(hidden, path)
    except OSError:
        os.close(lock)
        shutil.rmtree(hidden, ignore_errors=True)
        raise
    with _in_use_lock:
        _in_use.add(path)
    try:
        yield path
    finally:
        shutil.rmtree(path, ignore_errors=True)
        os.close(lock)
        with _in_use_lock:
            _in_use.discard(path)


def scratch_in_use() -> list[Path]:
    """The scratch folders this process has open now."""
    with _in_use_lock:
        return sorted(_in_use)


#: The cleaner: wait for each folder's lock (free once the owner has ended), then remove the folder.
_CLEANER = """
import fcntl, os, shutil, sys
lock_name = sys.argv[1]
for folder in sys.argv[2:]:
    try:
        descriptor = os.open(os.path.join(folder, lock_name), os.O_RDONLY)
    except OSError:
        continue
    fcntl.flock(descriptor, fcntl.LOCK_EX)
    shutil.rmtree(folder, ignore_errors=True)
"""


def hand_scratch_to_cleaner() -> subprocess.Popen | None:
    """Start a detached Python that removes this process's open scratch folders once it has ended.

    For a process about to end without waiting for its worker threads. Returns the cleaner (None when
    there is nothing to clean, or it could not start: then the next :func:`scratch_directory` does it).
    """
    folders = scratch_in_use()
    if not folders:
        return None
    try:
        return subprocess.Popen(
            [sys.executable, "-I", "-c", _CLEANER, LOCK_NAME, *map(str, folders)],
            stdin=subprocess.DEVNULL,
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
            start_new_session=True,  # a Ctrl-C to the process group must not stop the cleaner
            close_fds=True,
        )
    except OSError:
        return None
