"""Free space where the node writes, said before it runs out.

Autosaves, saved maps and COLMAP's scratch all fail on a full disk (cleanly: io/export.py), but a robot
operator should hear about it while there is still room. :class:`SpaceMonitor` measures the folders
at most every few seconds (``statvfs`` is cheap, but a network mount may be slow to answer) and rates
each one: ``ok``, ``low`` (under 1 GB) or ``critical`` (under 100 MB, or not writable: a read-only
mount, or a folder this user may not write to).
"""

from __future__ import annotations

import os
import threading
import time
from dataclasses import dataclass
from pathlib import Path

LOW_BYTES = 10**9
CRITICAL_BYTES = 10**8


@dataclass(frozen=True)
class SpaceReport:
    label: str  # what the folder is for, e.g. "output_dir"
    path: Path  # the folder (measured on its nearest existing parent while it is not made yet)
    free_bytes: int | None  # None: could not be measured
    level: str  # "ok" | "low" | "critical" | "unknown"
    writable: bool = True

    @property
    def free_gb(self) -> str:
        return "" if self.free_bytes is None else f"{self.free_bytes / 1e9:.3f}"

    @property
    def message(self) -> str:
        if self.free_bytes is None:
            return f"{self.label} {self.path}: free space unknown"
        if not self.writable:
            return f"{self.label} {self.path}: not writable (critical)"
        return f"{self.label} {self.path}: {self.free_bytes / 1e9:.2f} GB free" + (
            "" if self.level == "ok" else f" ({self.level})"
        )


#: From best to worst.
LEVELS = ("ok", "unknown", "low", "critical")


def worst_level(reports: list[SpaceReport]) -> str:
    return max((report.level for report in reports), key=LEVELS.index, default="ok")


def disk_warnings(reports: list[SpaceReport]) -> list[str]:
    """One line per folder that is low or critical (for ~/status notes)."""
    return [report.message for report in reports if report.level in ("low", "critical")]


def _existing(path: Path) -> Path:
    for candidate in (path, *path.parents):
        if candidate.exists():
            return candidate
    return path


def space_report(
    label: str, path: str | os.PathLike[str], low_bytes: int = LOW_BYTES, critical_bytes: int = CRITICAL_BYTES
) -> SpaceReport:
    """How much room is left for ``path`` (measured on its nearest existing folder)."""
    folder = Path(path).expanduser()
    existing = _existing(folder)
    try:
        stats = os.statvfs(existing)
    except OSError:
        return SpaceReport(label, folder, None, "unknown")
    free = stats.f_bavail * stats.f_frsize
    writable = os.access(existing, os.W_OK)  # EROFS on a read-only mount, also for root
    level = "critical" if free < critical_bytes or not writable else "low" if free < low_bytes else "ok"
    return SpaceReport(label, folder, free, level, writable)


class SpaceMonitor:
    """The latest :func:`space_report` of each folder, measured again after ``period_s``; thread-safe."""

    def __init__(
        self,
        folders: dict[str, str | os.PathLike[str]],
        period_s: float = 5.0,
        low_bytes: int = LOW_BYTES,
        critical_bytes: int = CRITICAL_BYTES,
    ) -> None:
        self.folders = dict(folders)
        self.period_s = float(period_s)
        self.low_bytes, self.critical_bytes = int(low_bytes), int(critical_bytes)
        self._lock = threading.Lock()
        self._measured_at = -float("inf")
        self._reports: list[SpaceReport] = []

    def reports(self) -> list[SpaceReport]:
        with self._lock:
            if time.monotonic() - self._measured_at >= self.period_s:
                self._reports = [
                    space_report(label, path, self.low_bytes, self.critical_bytes)
                    for label, path in self.folders.items()
                ]
                self._measured_at = time.monotonic()
            return list(self._reports)

