"""Every ``showroom`` command keeps stdout for its result, so ``--json | jq`` parses; progress goes to stderr.

Real ``showroom`` processes on the bundled kitchen frames: piped (plain progress lines, no carriage
returns), under a pseudo-terminal (a tqdm bar with an ETA), and with ``--quiet`` (nothing but the result).
"""

from __future__ import annotations

import fcntl
import json
import os
import pty
import re
import shutil
import struct
import subprocess
import sys
import termios
from pathlib import Path

import pytest
import yaml
from test_apps_cli_reconstruct import SAMPLE
from test_distill_support import tiny_config, tiny_rooms, tiny_teacher  # noqa: F401 (fixtures)

from showroom_ros.io import console

# The installed console script, as a user runs it; the module when the package is not installed.
SHOWROOM = [shutil.which("showroom")] if shutil.which("showroom") else [sys.executable, "-m", "showroom_ros.apps.cli"]
MAP_ARGS = ["--map", "--window", "3", "--map-up", "first-camera", "--floor-z", "-1.4"]
TQDM_ETA = re.compile(r"\| *\d+/\d+ \[\d\d:\d\d<\d\d:\d\d")  # "| 3/5 [00:01<00:00": elapsed<remaining


def showroom(*argv: str | Path, timeout: float = 120) -> subprocess.CompletedProcess[str]:
    """Run the ``showroom`` command piped: stdout and stderr captured apart, neither a terminal."""
    return subprocess.run([*SHOWROOM, *map(str, argv)], capture_output=True, text=True, timeout=timeout, check=False)


def assert_plain_progress(stderr: str, *stages: str) -> None:
    """Each stage says where it is in whole lines (start and end), and nothing is redrawn in place."""
    assert "\r" not in stderr and "\x1b[" not in stderr, stderr
    for stage in stages:
        lines = [line for line in stderr.splitlines() if line.startswith(f"{stage}: ")]
        assert len(lines) >= 2 and " in " in lines[-1], (stage, stderr)


@pytest.fixture(scope="module")
def kitchen(tmp_path_factory: pytest.TempPathFactory) -> tuple[subprocess.CompletedProcess[str], Path]:
    """``showroom reconstruct --json`` of 3 kitchen frames, piped; its folder serves the other commands."""
    out = tmp_path_factory.mktemp("output") / "kitchen"
    run = showroom(
        "reconstruct", SAMPLE, "--out", out, "--name", "kitchen", "--no-mesh", "--max-keyframes", "3", "--json"
    )
    assert run.returncode == 0, run.stderr
    return run, out


def test_reconstruct_json_is_the_only_thing_on_stdout(kitchen: tuple[subprocess.CompletedProcess[str], Path]) -> None:
    run, out = kitchen
    summary = json.loads(run.stdout)
    assert summary == json.loads((out / "summary.json").read_text())
    assert summary["backend"] == "rgbd" and len(summary["keyframes"]) == 3 and summary["points"] > 10_000
    assert all(Path(path).exists() for path in summary["outputs"].values())
    assert_plain_progress(run.stderr, "selecting keyframes", "loading keyframes", "reconstructing")
    assert "3 keyframes from" in run.stderr and "fusing depth images" in run.stderr


def test_map_json_parses_and_its_windows_are_on_stderr(tmp_path: Path) -> None:
    run = showroom("reconstruct", SAMPLE, *MAP_ARGS, "--out", tmp_path, "--json")
    assert run.returncode == 0, run.stderr
    summary = json.loads(run.stdout)
    assert summary["keyframes_integrated"] == 5 and len(summary["windows"]) == 2
    assert summary["occupancy"]["width"] > 0 and Path(summary["outputs"]["volume"]).is_file()
    assert_plain_progress(run.stderr, "mapping frames")
    assert "mapping frames: 5/5 frames (100%), in " in run.stderr
    assert [line.split(" (")[0] for line in run.stderr.splitlines() if line.startswith("window ")] == [
        "window 1",
        "window 2",
    ]


def test_quiet_json_prints_the_document_and_nothing_else(tmp_path: Path) -> None:
    run = showroom("reconstruct", SAMPLE, "--out", tmp_path, "--no-mesh", "--max-keyframes", "3", "--json", "-q")
    assert run.returncode == 0 and run.stderr == "", run.stderr
    assert json.loads(run.stdout)["outputs"]["npz"].endswith(".npz")


def test_a_terminal_gets_a_bar_with_an_eta_and_stdout_still_only_json(tmp_path: Path) -> None:
    parent, child = pty.openpty()
    fcntl.ioctl(child, termios.TIOCSWINSZ, struct.pack("HHHH", 40, 160, 0, 0))  # a 160-column terminal
    process = subprocess.Popen(
        [*SHOWROOM, "reconstruct", str(SAMPLE), *MAP_ARGS, "--out", str(tmp_path), "--json"],
        stdout=subprocess.PIPE,
        stderr=child,
    )
    os.close(child)
    drawn = bytearray()
    while True:
        try:
            chunk = os.read(parent, 65536)
        except OSError:  # EIO: the process closed the terminal
            break
        if not chunk:
            break
        drawn += chunk
    os.close(parent)
    stdout, _ = process.communicate(timeout=120)
    assert process.returncode == 0, drawn.decode(errors="replace")
    assert json.loads(stdout)["keyframes_integrated"] == 5
    screen = drawn.decode(errors="replace")
    assert "\r" in screen and "mapping frames:" in screen, screen  # redrawn in place
    assert TQDM_ETA.search(screen), screen
    assert "window 2 (" in screen  # notes are printed above the bar


def test_export_bag_json(kitchen: tuple[subprocess.CompletedProcess[str], Path], tmp_path: Path) -> None:
    _, out = kitchen
    run = showroom("export-bag", out, "--out", tmp_path / "bag", "--json")
    assert run.returncode == 0, run.stderr
    written = json.loads(run.stdout)
    assert written["bag"] == str(tmp_path / "bag") and (tmp_path / "bag").is_dir()
    assert written["topics"] == ["/showroom/cloud", "/showroom/mesh", "/showroom/keyframes"]
    assert written["keyframes"] == 3 and run.stderr == ""


def test_generate_json(kitchen: tuple[subprocess.CompletedProcess[str], Path], tmp_path: Path) -> None:
    _, out = kitchen
    run = showroom(
        "generate", out, "-o", tmp_path / "views", "--keyframe", "1", "--yaw", "15", "--backend", "opencv", "--json"
    )
    assert run.returncode == 0, run.stderr
    written = json.loads(run.stdout)
    assert written["output"] == str(tmp_path / "views") and [v["yaw_deg"] for v in written["views"]] == [15.0]
    assert all(Path(path).is_file() for path in written["files"])
    assert_plain_progress(run.stderr, "generating")
    assert "OpenCV" in run.stderr  # the inpainter note


def test_view_prints_its_url_and_only_that(kitchen: tuple[subprocess.CompletedProcess[str], Path]) -> None:
    _, out = kitchen
    run = showroom("view", out, "--port", "0", "--seconds", "0.2")
    assert run.returncode == 0, run.stderr
    (line,) = run.stdout.splitlines()
    assert line.startswith("showroom viewer: http://127.0.0.1:") and "3 keyframes" in line


def test_distill_validate_json(tmp_path: Path, tiny_rooms: Path, tiny_teacher: Path) -> None:  # noqa: F811
    config = tmp_path / "distill.yaml"
    config.write_text(yaml.safe_dump(tiny_config(tiny_rooms, tiny_teacher, tmp_path / "out")))
    run = showroom("distill", config, "--validate", "--json")
    assert run.returncode == 0, run.stderr
    counts = json.loads(run.stdout)
    rooms = sum(1 for path in tiny_rooms.iterdir() if path.is_dir())
    assert counts["training_rooms"] > 0 and counts["training_rooms"] + counts["validation_rooms"] == rooms
    assert "Traceback" not in run.stderr


def test_libraries_writing_to_stdout_land_on_stderr() -> None:
    """Open3D prints its warnings on file descriptor 1, from C++: a run moves them, and C's printf, to stderr."""
    script = """
import ctypes, os, open3d
from showroom_ros.io.console import result, stdout_for_results
with stdout_for_results():
    print("a python print")
    os.write(1, b"a raw write to fd 1\\n")
    open3d.io.read_point_cloud("/no/such/cloud.ply")
    ctypes.CDLL(None).printf(b"a buffered printf\\n")  # in C's buffer until the run ends
    result('{"result": 1}')
print("after the run")
"""
    environment = {k: v for k, v in os.environ.items() if k != "PYTHONUNBUFFERED"}  # -u would unbuffer C's stdio
    run = subprocess.run(
        [sys.executable, "-c", script], capture_output=True, text=True, timeout=60, check=False, env=environment
    )
    assert run.returncode == 0, run.stderr
    assert run.stdout == '{"result": 1}\nafter the run\n', run.stdout
    for stray in ("a python print", "a raw write to fd 1", "a buffered printf", "[Open3D WARNING] Read PLY failed"):
        assert stray in run.stderr, (stray, run.stderr)


def test_plain_progress_is_throttled_and_ends_with_its_total(capsys: pytest.CaptureFixture[str]) -> None:
    bar = console.progress_bar(1000, "counting", "item")
    for _ in range(1000):
        bar.update(1)
    bar.close()
    bar.close()  # a second close writes nothing
    lines = capsys.readouterr().err.splitlines()
    assert len(lines) == 2 and lines[0].startswith("counting: 0/1000 items (0%)"), lines
    assert lines[1].startswith("counting: 1000/1000 items (100%), in "), lines


def test_plain_progress_gives_an_eta_while_running(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    monkeypatch.setattr(console, "PLAIN_LINE_INTERVAL_S", 0.0)  # a line per update
    bar = console.progress_bar(4, "steps", "step", initial=1)  # resumed at step 1
    for _ in range(3):
        bar.update(1)
    bar.close()
    lines = capsys.readouterr().err.splitlines()
    assert [line.split(",")[0] for line in lines] == [f"steps: {n}/4 steps ({25 * n}%)" for n in (1, 2, 3, 4, 4)]
    assert ["ETA" in line for line in lines] == [False, True, True, False, False], lines


def test_fraction_progress_only_moves_forward(capsys: pytest.CaptureFixture[str]) -> None:
    with console.FractionProgress("working") as report:
        for fraction, stage in ((0.0, "start"), (0.5, "half"), (0.2, "a later stage restarts at 20%"), (1.0, "done")):
            report(fraction, stage)
    lines = capsys.readouterr().err.splitlines()
    assert [re.match(r"working: +(\d+)%", line).group(1) for line in lines] == ["0", "0", "50", "50", "100", "100"]
    assert lines[3].endswith("a later stage restarts at 20%") and report.first_stage == "start"


def test_quiet_progress_writes_nothing(capsys: pytest.CaptureFixture[str]) -> None:
    for bar in (console.progress_bar(3, "x", quiet=True), console.progress_factory(True)(3, "y")):
        bar.update(3)
        bar.close()
    console.say("a note", quiet=True)
    assert capsys.readouterr() == ("", "")
