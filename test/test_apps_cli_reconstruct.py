"""`showroom reconstruct` on folders: outputs against the sample data's ground truth, selection, bad input."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import cv2
import numpy as np
import open3d as o3d
import pytest
from scipy.spatial import cKDTree

from showroom_ros.apps.cli import main
from showroom_ros.apps.offline import OfflineInputError, load_input
from showroom_ros.io.datasets import load_frame_folder
from showroom_ros.io.export import load_reconstruction

REPO = Path(__file__).resolve().parents[1]
SAMPLE = REPO / "data" / "redkitchen"


def ground_truth_points(folder: Path = SAMPLE) -> np.ndarray:
    """Every valid depth pixel of the sample frames, moved to the map with the recorded poses."""
    clouds = []
    for keyframe in load_frame_folder(folder):
        k = keyframe.depth_intrinsics
        v, u = np.nonzero(np.isfinite(keyframe.depth))
        z = keyframe.depth[v, u].astype(np.float64)
        camera = np.stack([(u - k.cx) * z / k.fx, (v - k.cy) * z / k.fy, z], axis=1)
        clouds.append(camera @ keyframe.pose[:3, :3].T + keyframe.pose[:3, 3])
    return np.concatenate(clouds)


@pytest.fixture(scope="module")
def folder_run(tmp_path_factory: pytest.TempPathFactory) -> tuple[int, Path]:
    out = tmp_path_factory.mktemp("reconstruct") / "out"
    code = main(["reconstruct", str(SAMPLE), "--out", str(out), "--name", "kitchen", "--quiet"])
    return code, out


def test_folder_outputs_match_ground_truth(folder_run: tuple[int, Path]) -> None:
    code, out = folder_run
    assert code == 0
    for name in (
        "kitchen.ply",
        "kitchen_mesh.ply",
        "kitchen.glb",
        "kitchen.png",
        "kitchen.npz",
        "summary.json",
    ):
        assert (out / name).is_file() and (out / name).stat().st_size > 0, name
    summary = json.loads((out / "summary.json").read_text())
    assert summary["kind"] == "frame folder" and summary["backend"] == "rgbd"
    assert len(summary["keyframes"]) == 5 and summary["frame_id"] == "map"
    assert summary["seconds"]["first_picture"] <= summary["seconds"]["total"]

    reconstruction = load_reconstruction(out / "kitchen.npz")
    cloud = o3d.io.read_point_cloud(str(out / "kitchen.ply"))
    assert len(cloud.points) == reconstruction.num_points == summary["points"]
    assert 50_000 < reconstruction.num_points < 400_000  # a 1-2 cm voxel grid over a kitchen corner
    mesh = o3d.io.read_triangle_mesh(str(out / "kitchen_mesh.ply"))
    assert len(mesh.triangles) == summary["triangles"] > 10_000

    truth = ground_truth_points()
    points = reconstruction.points.astype(np.float64)
    # Bounds: inside the raw depth's box (2 cm of slack for voxel centres), and spanning most of it.
    assert np.all(points.min(axis=0) > truth.min(axis=0) - 0.02)
    assert np.all(points.max(axis=0) < truth.max(axis=0) + 0.02)
    truth_extent = np.quantile(truth, 0.995, axis=0) - np.quantile(truth, 0.005, axis=0)
    assert np.all(points.max(axis=0) - points.min(axis=0) > 0.9 * truth_extent)
    # Every point sits on the recorded surface, and the recorded surface is covered.
    distances, _ = cKDTree(truth).query(points[::20])
    assert np.median(distances) < 0.005 and np.quantile(distances, 0.95) < 0.02
    coverage, _ = cKDTree(points).query(truth[::50])
    assert np.quantile(coverage, 0.9) < 0.02
    # Keyframe cameras are the recorded poses; their images were saved for the viewer.
    np.testing.assert_allclose(
        reconstruction.camera_poses, np.stack([k.pose for k in load_frame_folder(SAMPLE)])
    )
    saved = load_frame_folder(out / "kitchen_keyframes", with_depth=False)
    assert len(saved) == 5 and saved[0].image.shape == (480, 640, 3)

    preview = cv2.imread(str(out / "kitchen.png"))
    assert preview is not None and (preview < 250).any(axis=2).mean() > 0.2  # not a blank picture


def test_summary_is_printed(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    code = main(["reconstruct", str(SAMPLE), "--out", str(tmp_path), "--no-mesh", "--max-keyframes", "3"])
    assert code == 0
    printed = capsys.readouterr().out
    assert "backend    rgbd" in printed and "first picture after" in printed and "fuse" in printed
    summary = json.loads((tmp_path / "summary.json").read_text())
    assert len(summary["keyframes"]) == 3 and summary["triangles"] == 0
    assert not (tmp_path / "redkitchen_mesh.ply").exists()


def test_selection_uses_the_keyframe_selector(tmp_path: Path) -> None:
    """A repeated and a blurred photo are skipped, as the node's selector would skip them."""
    folder = tmp_path / "photos"
    folder.mkdir()
    names = ["frame-000250", "frame-000300", "frame-000500", "frame-000550"]
    images = {name: cv2.imread(str(SAMPLE / f"{name}.color.jpg")) for name in names}
    cv2.imwrite(str(folder / "a.jpg"), images["frame-000250"])
    cv2.imwrite(str(folder / "b.jpg"), images["frame-000250"])  # the same view again
    cv2.imwrite(str(folder / "c.jpg"), cv2.GaussianBlur(images["frame-000300"], (0, 0), 4.0))
    for letter, name in zip("def", names[1:], strict=True):
        cv2.imwrite(str(folder / f"{letter}.jpg"), images[name])
    chosen = load_input(folder)
    assert chosen.kind == "image folder"
    assert chosen.names == ["a.jpg", "d.jpg", "e.jpg", "f.jpg"]
    assert all(k.depth is None and k.pose is None for k in chosen.keyframes)
    assert sum(chosen.rejections.values()) == 2
    assert len(load_input(folder, use_all=True).keyframes) == 6


def test_rgb_only_folder_needs_an_rgb_backend(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    folder = tmp_path / "photos"
    folder.mkdir()
    for source in sorted(SAMPLE.glob("*.color.jpg"))[:4]:
        shutil.copy(source, folder / source.name.replace(".color", ""))
    code = main(["reconstruct", str(folder), "--backend", "rgbd", "--out", str(tmp_path / "out"), "--quiet"])
    error = capsys.readouterr().err.strip()
    assert code == 1 and "\n" not in error and "Traceback" not in error
    assert "rgbd" in error and "no depth" in error


def run_failing(argv: list[str], capsys: pytest.CaptureFixture[str]) -> str:
    """Run ``showroom reconstruct`` that must fail; returns its one error line (the last line of stderr)."""
    code = main(argv)
    captured = capsys.readouterr()
    assert code != 0, captured
    # Progress of the stage that failed may come first (stderr is not a terminal: plain lines); the run
    # ends with one error line.
    *progress, message = captured.err.strip().splitlines()
    assert "Traceback" not in captured.err and not [line for line in progress if "error" in line], captured.err
    assert message.startswith("showroom reconstruct: error:"), message
    return message


def test_bad_folders_give_one_line_errors(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    out = str(tmp_path / "out")
    empty = tmp_path / "empty"
    empty.mkdir()
    assert "no images" in run_failing(["reconstruct", str(empty), "--out", out], capsys)

    single = tmp_path / "single"
    single.mkdir()
    shutil.copy(SAMPLE / "frame-000250.color.jpg", single / "only.jpg")
    assert "at least 2 views" in run_failing(["reconstruct", str(single), "--out", out], capsys)

    broken = tmp_path / "broken"
    broken.mkdir()
    for index in range(3):
        (broken / f"{index}.jpg").write_bytes(b"this is not a JPEG" * (index + 1))
    message = run_failing(["reconstruct", str(broken), "--out", out], capsys)
    assert "cannot read" in message and "0.jpg" in message

    assert "does not exist" in run_failing(["reconstruct", str(tmp_path / "nowhere"), "--out", out], capsys)
    message = run_failing(["reconstruct", str(SAMPLE), "--backend", "nerf", "--out", out], capsys)
    assert "unknown backend 'nerf'" in message and "rgbd" in message
    message = run_failing(
        ["reconstruct", str(SAMPLE), "--frames", "frame-000250,nope", "--out", out], capsys
    )
    assert "nope" in message
    assert not Path(out).exists()  # nothing half-written by a failed run


def test_selection_failure_explains_why(tmp_path: Path) -> None:
    folder = tmp_path / "same"
    folder.mkdir()
    for index in range(4):
        shutil.copy(SAMPLE / "frame-000250.color.jpg", folder / f"{index}.jpg")
    with pytest.raises(OfflineInputError, match=r"too similar.*--all"):
        load_input(folder)


def test_help_lists_the_commands_and_a_missing_path_is_a_usage_error(capsys: pytest.CaptureFixture[str]) -> None:
    # `showroom distill` (forwarded to its own module): test_apps_cli_distill.py.
    assert main(["--help"]) == 0
    assert "reconstruct" in capsys.readouterr().out
    assert main(["reconstruct"]) == 2  # argparse: missing PATH
