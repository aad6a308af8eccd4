"""`showroom reconstruct PATH --map`: continuous mapping of the bundled redkitchen frames, end to end."""

from __future__ import annotations

import json
import os
import shutil
import stat
import tempfile
from pathlib import Path

import numpy as np
import open3d as o3d
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from scipy.spatial import cKDTree
from test_apps_cli_reconstruct import SAMPLE, ground_truth_points

from showroom_ros.apps.cli import main
from showroom_ros.apps.map_session import gravity_from_first_camera, load_map
from showroom_ros.io.datasets import load_frame_folder
from showroom_ros.io.file_names import NAME_RULE, name_refusal
from showroom_ros.io.map_files import read_nav2_map
from showroom_ros.mapping.occupancy import FREE, OCCUPIED


def test_reconstruct_map_writes_files_that_load(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    out = tmp_path / "out"
    code = main(
        [
            "reconstruct",
            str(SAMPLE),
            "--map",
            "--window",
            "3",
            "--overlap",
            "1",
            "--map-up",
            "first-camera",
            "--floor-z",
            "-1.4",
            "--out",
            str(out),
            "--name",
            "kitchen",
        ]
    )
    printed = capsys.readouterr()
    assert code == 0
    assert "windows    2 mapped" in printed.out and "skipped 1" in printed.err  # the summary; a window's note
    names = ["kitchen_map_mesh.ply", "kitchen_map_cloud.ply", "kitchen_occupancy.yaml", "kitchen_occupancy.pgm"]
    for name in [*names, "kitchen_volume.npz", "summary.json"]:
        assert (out / name).is_file() and (out / name).stat().st_size > 0, name
    # Every file through the same atomic writer: none left half-written, and all readable as the umask says
    # (mkstemp's 0600 had made the volume and settings unreadable to a map server running as another user).
    umask = os.umask(0)
    os.umask(umask)
    modes = {p.name: oct(stat.S_IMODE(p.stat().st_mode)) for p in out.iterdir()}
    assert set(modes.values()) == {oct(0o666 & ~umask)}, modes
    assert not [name for name in modes if name.startswith(".")], modes
    summary = json.loads((out / "summary.json").read_text())
    assert summary["frames_considered"] == 5 and summary["keyframes_integrated"] == 5
    assert [w["integrated"] for w in summary["windows"]] == [3, 2]  # the overlap keyframe only once
    assert [w["skipped"] for w in summary["windows"]] == [0, 1]

    # The map lies on the recorded depth (moved into the z-up frame the CLI chose).
    transform = np.array(summary["transform"])
    np.testing.assert_allclose(transform, gravity_from_first_camera(load_frame_folder(SAMPLE)[0].pose))
    truth = ground_truth_points() @ transform[:3, :3].T + transform[:3, 3]
    vertices = np.asarray(o3d.io.read_triangle_mesh(str(out / "kitchen_map_mesh.ply")).vertices)
    distance, _ = cKDTree(truth[::7]).query(vertices)
    assert len(vertices) > 1000 and np.median(distance) < 0.02

    robot_map, update = load_map(out)
    assert robot_map.block_count == summary["blocks"] and update.chunks.changed
    assert len(robot_map.surface()[0]) == summary["surface_points"]
    grid = read_nav2_map(out / "kitchen_occupancy.yaml")
    assert np.any(grid.data == FREE) and np.any(grid.data == OCCUPIED)
    np.testing.assert_array_equal(robot_map.occupancy().data, grid.data)


@pytest.mark.parametrize(
    ("extra", "message"),
    [
        (["--window", "3", "--overlap", "3"], "overlap must be between 0 and window - 1"),
        (["--no-poses"], "mapping needs camera poses"),
        (["--all"], "drop --all"),
    ],
)
def test_reconstruct_map_bad_options_give_one_line_errors(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], extra: list[str], message: str
) -> None:
    code = main(["reconstruct", str(SAMPLE), "--map", "--out", str(tmp_path / "out"), "--quiet", *extra])
    error = capsys.readouterr().err.strip()
    assert code == 1 and len(error.splitlines()) == 1 and message in error, error
    assert not (tmp_path / "out").exists()


def test_reconstruct_map_over_a_whole_bag(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    from test_apps_cli_bag import sample_bag_messages

    from showroom_ros.io.bags import write_bag

    messages, _ = sample_bag_messages()
    bag = write_bag(tmp_path / "kitchen", messages, storage="mcap")
    out = tmp_path / "out"
    argv = ["reconstruct", str(bag), "--map", "--window", "2", "--map-up", "none", "--out", str(out), "--json"]
    code = main(argv)
    assert code == 0, capsys.readouterr().err
    summary = json.loads((out / "summary.json").read_text())
    # Every sharp, new frame of the bag was mapped (not just the first window), each once.
    assert summary["kind"] == "rosbag2" and summary["frame_id"] == "map"
    assert summary["keyframes_selected"] == summary["keyframes_integrated"] == 5
    assert [w["integrated"] for w in summary["windows"]] == [2, 1, 1, 1]
    assert summary["occupancy"] is None and "not gravity-aligned" in summary["occupancy_reason"]
    assert not (out / "kitchen_occupancy.yaml").exists() and (out / "kitchen_volume.npz").is_file()


@settings(max_examples=40, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(name=st.text(max_size=140).filter(lambda name: name_refusal(name) is not None), with_map=st.booleans())
def test_a_name_that_breaks_the_rule_is_one_line_and_writes_nothing(
    capsys: pytest.CaptureFixture[str], name: str, with_map: bool
) -> None:
    with tempfile.TemporaryDirectory() as scratch:
        out = Path(scratch, "out")
        argv = ["reconstruct", str(SAMPLE), f"--name={name}", "--out", str(out), "--quiet"]
        code = main([*argv, "--map"] if with_map else argv)
        error = capsys.readouterr().err.strip()
        assert code == 1 and len(error.splitlines()) == 1 and NAME_RULE in error and repr(name) in error, error
        assert os.listdir(scratch) == []


def test_a_path_whose_name_breaks_the_rule_asks_for_a_name(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    folder = tmp_path / "kitchen photos"
    shutil.copytree(SAMPLE, folder)
    assert main(["reconstruct", str(folder), "--out", str(tmp_path / "out"), "--quiet"]) == 1
    error = capsys.readouterr().err.strip()
    assert "'kitchen photos'" in error and NAME_RULE in error and "--name" in error, error
    assert not (tmp_path / "out").exists()
