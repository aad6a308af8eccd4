"""A size limit for the inference-engine cache: least recently used artefacts go first.

Each cache entry is one engine at one precision and image size for one set of weights and holds a copy
of the weights (2.6 GB for the ViT-L release in fp32; OpenVINO's also its compiled blobs). The key includes the
weights' hash and the torch and engine versions, so a new checkpoint, an upgrade or ``auto`` trying
three engines each leave entries nobody loads again: the benchmarks of docs/benchmarks.md left 71 GB
behind, and a full disk is what then failed CI. Before and after every build the cache is trimmed
to ``max_bytes`` (engines.py also gives back every unused entry when a build meets a full disk):
entries are ranked by when they were last built or loaded (``meta.json``'s mtime, touched on each
load), and the ones this process has loaded are never removed. Half-built folders of
builds whose process has ended are removed too.
"""

from __future__ import annotations

import contextlib
import logging
import os
import re
import shutil
import threading
from dataclasses import dataclass
from pathlib import Path

from showroom_ros.models.names import ENGINE_CACHE_MAX_GB

LOG = logging.getLogger(__name__)

DEFAULT_MAX_BYTES = int(ENGINE_CACHE_MAX_GB * 10**9)
MAX_BYTES_ENV = "SHOWROOM_ENGINE_CACHE_MAX_GB"
META_NAME = "meta.json"
_STAGING = re.compile(r"^\..+\.building-(\d+)$")

_in_use: set[Path] = set()
_in_use_lock = threading.Lock()


@dataclass(frozen=True)
class CacheEntry:
    path: Path
    size_bytes: int
    last_used: float  # seconds since the epoch


def default_max_bytes() -> int:
    """``$SHOWROOM_ENGINE_CACHE_MAX_GB`` (0 = no limit) when set and valid, else :data:`ENGINE_CACHE_MAX_GB`."""
    text = os.environ.get(MAX_BYTES_ENV, "").strip()
    if not text:
        return DEFAULT_MAX_BYTES
    try:
        gigabytes = float(text)
    except ValueError:
        LOG.warning("%s=%r is not a number of GB: using %d GB", MAX_BYTES_ENV, text, DEFAULT_MAX_BYTES // 10**9)
        return DEFAULT_MAX_BYTES
    if not 0 <= gigabytes < float("inf"):  # NaN, negatives and infinity
        LOG.warning("%s=%r must be a finite number >= 0: using %d GB", MAX_BYTES_ENV, text, DEFAULT_MAX_BYTES // 10**9)
        return DEFAULT_MAX_BYTES
    return int(gigabytes * 10**9)


def mark_used(entry: Path) -> None:
    """Record that this process uses ``entry`` (never evicted by it) and make it the most recently used."""
    entry = entry.resolve()
    with _in_use_lock:
        _in_use.add(entry)
    with contextlib.suppress(OSError):  # a read-only cache still works; it just is not reordered
        os.utime(entry / META_NAME)


def _folder_size(path: Path) -> int:
    total = 0
    for root, _, files in os.walk(path):
        for name in files:
            try:
                total += os.lstat(os.path.join(root, name)).st_size
            except OSError:
                continue
    return total


def cache_entries(cache_dir: Path) -> list[CacheEntry]:
    """The complete entries (folders with a ``meta.json``), least recently used first."""
    entries: list[CacheEntry] = []
    try:
        folders = [p for p in Path(cache_dir).iterdir() if p.is_dir() and not p.is_symlink()]
    except OSError:
        return entries
    for folder in folders:
        try:
            last_used = (folder / META_NAME).stat().st_mtime
        except OSError:
            continue  # not an entry: a half-built folder, or something the user put there
        entries.append(CacheEntry(folder, _folder_size(folder), last_used))
    return sorted(entries, key=lambda entry: entry.last_used)


def _process_exists(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def remove_abandoned_builds(cache_dir: Path) -> list[Path]:
    """Delete ``.<entry>.building-<pid>`` folders whose build process no longer exists."""
    removed: list[Path] = []
    try:
        folders = list(Path(cache_dir).iterdir())
    except OSError:
        return removed
    for folder in folders:
        match = _STAGING.match(folder.name)
        if match is None or not folder.is_dir() or _process_exists(int(match.group(1))):
            continue
        shutil.rmtree(folder, ignore_errors=True)
        removed.append(folder)
    return removed


def trim_cache(cache_dir: Path, max_bytes: int) -> list[Path]:
    """Remove least recently used entries not in use by this process until the cache fits ``max_bytes``
    (0: no limit); returns the removed folders. What cannot be removed is logged, never raised."""
    removed = remove_abandoned_builds(cache_dir)
    if max_bytes <= 0:
        return removed
    entries = cache_entries(cache_dir)
    total = sum(entry.size_bytes for entry in entries)
    with _in_use_lock:
        in_use = set(_in_use)
    for entry in entries:
        if total <= max_bytes:
            break
        if entry.path.resolve() in in_use:
            continue
        shutil.rmtree(entry.path, ignore_errors=True)
        if entry.path.exists():
            LOG.warning("engine cache: could not remove %s", entry.path)
            continue
        total -= entry.size_bytes
        removed.append(entry.path)
        LOG.info("engine cache: removed %s (%.2f GB, least recently used)", entry.path.name, entry.size_bytes / 1e9)
    if total > max_bytes:
        LOG.warning(
            "engine cache %s holds %.1f GB in use by this process, above its %.1f GB limit",
            cache_dir,
            total / 1e9,
            max_bytes / 1e9,
        )
    return removed
