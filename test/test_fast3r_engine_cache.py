"""The engine cache's size limit (showroom_ros.models.engine_cache), on folders laid out as the engines
write them. Sizes come from sparse files: st_size counts, the disk holds nothing."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from pathlib import Path

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from showroom_ros.models import engine_cache
from showroom_ros.models.engine_cache import (
    MAX_BYTES_ENV,
    cache_entries,
    default_max_bytes,
    mark_used,
    remove_abandoned_builds,
    trim_cache,
)

GB = 10**9


@pytest.fixture(autouse=True)
def nothing_in_use(monkeypatch):
    monkeypatch.setattr(engine_cache, "_in_use", set())


def make_entry(cache: Path, name: str, size_bytes: int, age_s: float) -> Path:
    folder = cache / name
    (folder / "compiled").mkdir(parents=True)
    meta = json.dumps({"key": {}, "max_abs_diff": 0.0})
    (folder / "meta.json").write_text(meta)
    (folder / "compiled" / "blob").write_bytes(b"x" * 100)
    with open(folder / "network.bin", "wb") as weights:
        weights.truncate(size_bytes - 100 - len(meta))
    when = time.time() - age_s
    os.utime(folder / "meta.json", (when, when))
    return folder


def dead_pid() -> int:
    child = subprocess.Popen([sys.executable, "-c", "pass"])
    child.wait()
    return child.pid


def test_least_recently_used_entries_go_first_until_the_cache_fits(tmp_path):
    oldest = make_entry(tmp_path, "openvino-fp32-512x384-a", 3 * GB, age_s=300)
    middle = make_entry(tmp_path, "onnxruntime-fp32-512x384-b", 3 * GB, age_s=200)
    newest = make_entry(tmp_path, "openvino-bf16-512x384-c", 3 * GB, age_s=100)
    assert [e.path for e in cache_entries(tmp_path)] == [oldest, middle, newest]
    assert trim_cache(tmp_path, 7 * GB) == [oldest]
    assert middle.is_dir() and newest.is_dir()
    assert sum(e.size_bytes for e in cache_entries(tmp_path)) == 6 * GB


def test_loading_an_entry_makes_it_the_most_recent_and_protects_it(tmp_path):
    oldest = make_entry(tmp_path, "a", 3 * GB, age_s=300)
    other = make_entry(tmp_path, "b", 3 * GB, age_s=200)
    mark_used(oldest)  # this process loaded it: never removed by it, and now the newest
    assert [e.path for e in cache_entries(tmp_path)][-1] == oldest
    assert trim_cache(tmp_path, 1) == [other]  # even below the limit, what is in use stays
    assert oldest.is_dir()


def test_the_limit_counts_every_file_and_zero_means_no_limit(tmp_path):
    make_entry(tmp_path, "a", 5 * GB, age_s=10)
    make_entry(tmp_path, "b", 5 * GB, age_s=5)
    assert trim_cache(tmp_path, 0) == []
    assert trim_cache(tmp_path, 10 * GB) == []  # exactly at the limit: fits
    assert len(trim_cache(tmp_path, 10 * GB - 1)) == 1


def test_only_complete_entries_are_counted_or_removed(tmp_path):
    entry = make_entry(tmp_path, "a", 2 * GB, age_s=10)
    (tmp_path / "inductor").mkdir()  # inductor's own cache beside ours
    (tmp_path / "inductor" / "kernel.so").write_bytes(b"k")
    (tmp_path / "auto-fp32-512x384-key.json").write_text("{}")  # auto's decision
    mine = tmp_path / f".b.building-{os.getpid()}"  # a build running now
    mine.mkdir()
    abandoned = tmp_path / f".c.building-{dead_pid()}"  # a build whose process ended
    (abandoned / "compiled").mkdir(parents=True)
    removed = trim_cache(tmp_path, 1)
    assert set(removed) == {entry, abandoned}
    assert (tmp_path / "inductor" / "kernel.so").is_file() and (tmp_path / "auto-fp32-512x384-key.json").is_file()
    assert mine.is_dir()
    assert remove_abandoned_builds(tmp_path) == []


def test_a_missing_cache_is_not_an_error(tmp_path):
    assert trim_cache(tmp_path / "absent", GB) == []
    assert cache_entries(tmp_path / "absent") == []


@pytest.mark.parametrize(
    ("value", "expected"),
    [("", 20 * GB), ("0", 0), ("2.5", int(2.5 * GB))] + [(bad, 20 * GB) for bad in ("nan", "-1", "inf", "lots")],
)
def test_the_limit_from_the_environment(monkeypatch, value, expected):
    monkeypatch.setenv(MAX_BYTES_ENV, value)
    assert default_max_bytes() == expected


@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(
    entries=st.lists(
        st.tuples(st.integers(1, 5 * GB), st.booleans()),  # size, in use by this process
        min_size=0,
        max_size=8,
    ),
    limit=st.integers(0, 30 * GB),
)
def test_trimming_keeps_what_is_in_use_removes_the_oldest_first_and_fits_when_it_can(tmp_path_factory, entries, limit):
    cache = tmp_path_factory.mktemp("cache")
    engine_cache._in_use.clear()
    made = []
    for index, (size, in_use) in enumerate(entries):
        folder = make_entry(cache, f"e{index}", max(size, 1000), age_s=1000 - index)  # e0 is the oldest
        made.append((folder, max(size, 1000), in_use))
    for folder, _, in_use in made:
        if in_use:
            engine_cache._in_use.add(folder.resolve())
    removed = set(trim_cache(cache, limit))
    kept = [(f, size, used) for f, size, used in made if f not in removed]
    assert not any(used for f, _, used in made if f in removed), "an entry in use was removed"
    total = sum(size for _, size, _ in kept)
    if limit > 0 and total > limit:
        assert all(used for _, _, used in kept), "over the limit, yet an unused entry was kept"
    if limit == 0:
        assert not removed
    # Least recently used first: every removed entry is older than every kept one that is not in use.
    kept_unused = [made.index((f, s, u)) for f, s, u in kept if not u]
    removed_indices = [index for index, (f, _, _) in enumerate(made) if f in removed]
    assert not removed_indices or not kept_unused or max(removed_indices) < min(kept_unused)
    engine_cache._in_use.clear()
