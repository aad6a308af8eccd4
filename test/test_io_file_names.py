"""The name rule for saved files, over arbitrary text: whatever it accepts stays a plain file in its
folder, whatever it refuses is refused with the whole rule; and the file sets built from a name."""

from __future__ import annotations

import os
import re
import string
import tempfile
import time
from pathlib import Path

import pytest
from hypothesis import example, given, settings
from hypothesis import strategies as st

from showroom_ros.io.file_names import (
    MAP_FILES,
    NAME_PATTERN,
    NAME_RULE,
    RECONSTRUCTION_FILES,
    InvalidName,
    checked_name,
    map_files,
    map_files_beside,
    name_refusal,
    reconstruction_files,
    require_valid_name,
    timestamped_name,
)

_ALLOWED = set(string.ascii_letters + string.digits + "._-")


def follows_the_rule(name: str) -> bool:
    """NAME_RULE, read word by word (no regular expression), as the oracle the module is checked against."""
    return (
        1 <= len(name) <= 128
        and set(name) <= _ALLOWED
        and name[0] in string.ascii_letters + string.digits
        and ".." not in name
    )


# Arbitrary text, plus text from the characters that matter (so that accepted names are common) and
# names the pattern itself generates (long ones, dots and dashes everywhere).
_NEAR_ALPHABET = st.sampled_from([*"aZ09._-", "/", "\\", " ", "~", "\n", "\x00", "\u00e9", "\u0663", "*"])
names = st.one_of(
    st.text(),
    st.text(alphabet=_NEAR_ALPHABET, max_size=140),
    st.from_regex(NAME_PATTERN, fullmatch=True),
    st.from_regex(NAME_PATTERN, fullmatch=True).map(lambda name: name + "\n"),
)


@settings(max_examples=400, deadline=None)
@given(name=names)
@example(name="..")
@example(name="a..b")
@example(name="a" * 128)
@example(name="a" * 129)
@example(name="x\n")
def test_a_name_is_accepted_exactly_when_it_follows_the_rule_and_never_leaves_its_folder(name: str) -> None:
    refusal = name_refusal(name)
    assert (refusal is None) == follows_the_rule(name), (name, refusal)
    if refusal is not None:
        assert NAME_RULE in refusal and repr(name) in refusal
        with pytest.raises(InvalidName) as raised:
            require_valid_name(name, "map name")
        assert str(raised.value) == f"invalid map name {name!r}: {NAME_RULE}"
        for files in (reconstruction_files, map_files):
            with pytest.raises(ValueError, match=re.escape(NAME_RULE)):
                files("/nowhere", name)
        return
    assert require_valid_name(name) == name
    with tempfile.TemporaryDirectory() as scratch:
        folder = Path(scratch, "out")
        folder.mkdir()
        assert Path(folder, name).resolve().parent == folder.resolve()
        # Every file of a saved reconstruction and map is a plain, creatable file of that folder, so
        # creating them all leaves nothing anywhere else (and the two sets never share a file).
        paths = [*reconstruction_files(folder, name).values(), *map_files(folder, name).values()]
        for path in paths:
            assert path.resolve().parent == folder.resolve(), path
            path.write_bytes(b"x")
        assert sorted(os.listdir(folder)) == sorted(path.name for path in paths)
        assert os.listdir(scratch) == ["out"]


@settings(max_examples=300, deadline=None)
@given(
    requested=names,
    padding=st.sampled_from(["", " ", "\t", "\n ", "  "]),
    prefix=st.one_of(st.just(""), st.from_regex(NAME_PATTERN, fullmatch=True).filter(lambda p: ".." not in p)),
)
def test_a_service_request_gets_its_name_a_timestamped_default_or_the_rule(
    requested: str, padding: str, prefix: str
) -> None:
    before = time.strftime("%Y%m%d-%H%M%S")
    name, refusal = checked_name(padding + requested + padding, prefix, "/robot/output")
    after = time.strftime("%Y%m%d-%H%M%S")
    wanted = requested.strip()
    if not wanted and prefix:  # the default: <prefix>-YYYYmmdd-HHMMSS, taken during the call
        assert name is not None and refusal == "", refusal
        assert re.fullmatch(re.escape(prefix) + r"-\d{8}-\d{6}", name), name
        assert before <= name.removeprefix(f"{prefix}-") <= after
    elif follows_the_rule(wanted):
        assert (name, refusal) == (wanted, "")
    else:
        assert name is None
        assert NAME_RULE in refusal and "/robot/output" in refusal and refusal.startswith("invalid name ")


def test_timestamped_names_are_local_time_numbered_and_sort_by_time() -> None:
    when = time.mktime((2024, 3, 9, 7, 5, 2, 0, 0, -1))  # 2024-03-09 07:05:02 local time
    assert timestamped_name("map", when=when) == "map-20240309-070502"
    assert timestamped_name("reconstruction", sequence=7, when=when) == "reconstruction-20240309-070502-0007"
    later = [timestamped_name("scan", when=when + seconds) for seconds in (0, 9, 10, 59, 3600, 86400 * 40)]
    assert later == sorted(later)
    for bad in ("", "../x", "a/b", ".hidden"):
        with pytest.raises(InvalidName, match=re.escape(NAME_RULE)):
            timestamped_name(bad)


@settings(max_examples=200, deadline=None)
@given(name=st.from_regex(NAME_PATTERN, fullmatch=True).filter(follows_the_rule), other=st.text(max_size=40))
def test_a_saved_volume_names_the_files_saved_with_it(name: str, other: str) -> None:
    saved = map_files("/maps", name)
    assert list(saved) == list(MAP_FILES) and [p.name for p in saved.values()] == [name + s for s in MAP_FILES.values()]
    assert map_files_beside(saved["volume"]) == saved
    # A volume renamed by hand (any name, the rule is for names we write) still finds its companions.
    renamed = Path("/maps", f"{other.replace('/', '_')}{MAP_FILES['volume']}")
    beside = map_files_beside(renamed)
    assert beside is not None and beside["volume"] == renamed and beside["settings"].parent == renamed.parent
    assert map_files_beside(Path("/maps", f"{name}.npz")) is None
    assert [p.name for p in reconstruction_files("/r", name).values()] == [
        name + suffix for suffix in RECONSTRUCTION_FILES.values()
    ]
