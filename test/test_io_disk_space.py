"""Free-space reports (showroom_ros.io.disk_space): levels, folders not made yet, the measuring period."""

from __future__ import annotations

import os
import subprocess
from pathlib import Path

import pytest

from showroom_ros.io.disk_space import SpaceMonitor, disk_warnings, space_report, worst_level


def _free(path: Path) -> int:
    stats = os.statvfs(path)
    return stats.f_bavail * stats.f_frsize


def test_levels_follow_the_thresholds(tmp_path):
    free = _free(tmp_path)
    assert space_report("out", tmp_path, low_bytes=free // 2, critical_bytes=free // 4).level == "ok"
    low = space_report("out", tmp_path, low_bytes=free * 2, critical_bytes=free // 4)
    assert low.level == "low" and "(low)" in low.message and f"out {tmp_path}: " in low.message
    critical = space_report("out", tmp_path, low_bytes=free * 4, critical_bytes=free * 2)
    assert critical.level == "critical" and worst_level([low, critical, low]) == "critical"
    assert worst_level([]) == "ok"


def test_a_folder_not_made_yet_is_measured_on_its_parent_and_named_as_asked(tmp_path):
    later = tmp_path / "not" / "made" / "yet"
    report = space_report("output_dir", later)
    assert report.path == later and not later.exists()
    assert report.free_bytes is not None and abs(report.free_bytes - _free(tmp_path)) < 64 * 2**20


def test_the_monitor_measures_again_only_after_its_period(tmp_path):
    disk = tmp_path / "disk"
    disk.mkdir()
    mounted = subprocess.run(["mount", "-t", "tmpfs", "-o", "size=64m", "tmpfs", str(disk)], capture_output=True)
    if mounted.returncode != 0:
        pytest.skip(f"cannot mount a tmpfs here (needs root): {mounted.stderr.decode().strip()}")
    try:
        cached = SpaceMonitor({"out": disk}, period_s=3600.0)
        fresh = SpaceMonitor({"out": disk}, period_s=0.0)
        (first,) = cached.reports()
        assert first.level == "critical" and disk_warnings(fresh.reports()) == [first.message]
        (disk / "filler").write_bytes(b"\0" * 16 * 2**20)
        assert cached.reports() == [first]  # within the period: not measured again
        (now,) = fresh.reports()
        assert first.free_bytes - now.free_bytes >= 16 * 2**20 and now.writable
        subprocess.run(["mount", "-o", "remount,ro", str(disk)], check=True)
        (read_only,) = fresh.reports()
        assert read_only.level == "critical" and not read_only.writable and "not writable" in read_only.message
    finally:
        subprocess.run(["umount", "-l", str(disk)], capture_output=True)
