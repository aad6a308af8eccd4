"""Frame folders: index parsing, camera.yaml, 16-bit PNG and big-endian PGM depth, frame selection."""

from __future__ import annotations

from pathlib import Path

import cv2
import numpy as np
import pytest
from PIL import Image

from showroom_ros.geometry.camera import CameraIntrinsics
from showroom_ros.io.datasets import (
    DatasetError,
    load_frame_folder,
    read_camera_yaml,
    read_depth,
    read_frame_index,
)


def parse_pgm16(path: Path) -> np.ndarray:
    """Independent reader of a binary 16-bit PGM (P5, big-endian), to check OpenCV's decoding."""
    data = path.read_bytes()
    fields: list[bytes] = []
    position = 0
    while len(fields) < 4:
        while data[position : position + 1].isspace():
            position += 1
        if data[position : position + 1] == b"#":
            position = data.index(b"\n", position) + 1
            continue
        end = position
        while not data[end : end + 1].isspace():
            end += 1
        fields.append(data[position:end])
        position = end
    assert fields[0] == b"P5" and int(fields[3]) > 255
    width, height = int(fields[1]), int(fields[2])
    pixels = np.frombuffer(data[position + 1 : position + 1 + 2 * width * height], dtype=">u2")
    return pixels.reshape(height, width).astype(np.uint16)


def write_folder(folder: Path, lines: list[str], camera_yaml: str | None = None) -> None:
    folder.mkdir(parents=True, exist_ok=True)
    image = np.zeros((48, 64, 3), np.uint8)
    image[:, :, 0] = 200  # red in RGB
    for name in ("a.png", "b.png"):
        cv2.imwrite(str(folder / name), cv2.cvtColor(image, cv2.COLOR_RGB2BGR))
    depth = np.full((48, 64), 1500, np.uint16)
    depth[0, 0] = 0
    cv2.imwrite(str(folder / "a_depth.png"), depth)
    (folder / "frames_c2w.txt").write_text("\n".join(lines) + "\n")
    if camera_yaml is not None:
        (folder / "camera.yaml").write_text(camera_yaml)


IDENTITY = " ".join(str(v) for v in np.eye(4).ravel())


def test_bundled_sample_loads_with_both_intrinsics_poses_and_exact_depth(repo_root: Path) -> None:
    folder = repo_root / "data" / "redkitchen"
    keyframes = load_frame_folder(folder)
    assert len(keyframes) == 5
    first = keyframes[0]
    assert first.intrinsics == CameraIntrinsics(525.0, 525.0, 320.0, 240.0, 640, 480)
    assert first.depth_intrinsics == CameraIntrinsics(585.0, 585.0, 320.0, 240.0, 640, 480)
    assert first.image.shape == (480, 640, 3) and first.image.dtype == np.uint8
    # Depth equals the PNG's 16-bit values / 1000 as decoded by an independent reader (Pillow).
    raw = np.asarray(Image.open(folder / "frame-000250.depth.png")).astype(np.float64)
    assert raw.max() > 255  # really 16-bit data
    expected = np.where(raw > 0, raw / 1000.0, np.nan)
    np.testing.assert_allclose(first.depth, expected, rtol=1e-6, equal_nan=True)
    # Colour is RGB (OpenCV's BGR was converted): compare with Pillow (JPEG decoders may differ slightly).
    pillow = np.asarray(Image.open(folder / "frame-000250.color.jpg")).astype(int)
    assert np.abs(first.image.astype(int) - pillow).max() <= 3
    index = read_frame_index(folder / "frames_c2w.txt")
    np.testing.assert_allclose(first.pose, index[0].pose)
    assert first.pose[0, 3] == pytest.approx(-0.39104807)
    assert [k.stamp_ns for k in keyframes] == sorted(k.stamp_ns for k in keyframes)


def test_names_pick_frames_in_the_given_order_and_flags_drop_depth_and_poses(repo_root: Path) -> None:
    folder = repo_root / "data" / "redkitchen"
    keyframes = load_frame_folder(folder, names=["frame-000950", "frame-000250.color.jpg"], with_depth=False)
    assert [Path(k.metadata["rgb"]).name for k in keyframes] == [
        "frame-000950.color.jpg",
        "frame-000250.color.jpg",
    ]
    assert all(k.depth is None and k.depth_intrinsics is None for k in keyframes)
    assert all(k.pose is not None for k in keyframes)
    assert all(k.pose is None for k in load_frame_folder(folder, names=["frame-000300"], with_poses=False))
    with pytest.raises(DatasetError, match="no frame"):
        load_frame_folder(folder, names=["frame-123456"])


def test_big_endian_pgm_depth_loads_with_correct_values(shared_root: Path) -> None:
    folder = shared_root / "data" / "slambook2_diningroom"
    path = folder / "depth" / "1.pgm"
    expected = parse_pgm16(path)
    assert expected.max() > 1000  # millimetres, so byte order matters
    metres = read_depth(path, 1000.0)
    np.testing.assert_allclose(
        metres, np.where(expected > 0, expected / 1000.0, np.nan), rtol=1e-6, equal_nan=True
    )
    intrinsics = CameraIntrinsics(518.0, 519.0, 325.5, 253.5, 640, 480)
    keyframes = load_frame_folder(folder, intrinsics=intrinsics)
    assert len(keyframes) == 5
    assert keyframes[0].depth_intrinsics is None  # registered to colour
    valid = np.isfinite(keyframes[0].depth)
    assert 0.6 < valid.mean() < 0.75
    assert np.nanmin(keyframes[0].depth) > 0.9 and np.nanmax(keyframes[0].depth) < 10.0


def test_synthetic_pgm_and_png_depth_round_trip(tmp_path: Path) -> None:
    values = np.array([[0, 1, 255], [256, 4321, 65535]], dtype=np.uint16)
    pgm = tmp_path / "depth.pgm"
    pgm.write_bytes(b"P5\n3 2\n65535\n" + values.astype(">u2").tobytes())
    png = tmp_path / "depth.png"
    cv2.imwrite(str(png), values)
    expected = np.where(values > 0, values / 1000.0, np.nan)
    for path in (pgm, png):
        np.testing.assert_allclose(read_depth(path, 1000.0), expected, rtol=1e-6, equal_nan=True)
    float_depth = tmp_path / "depth.tiff"
    cv2.imwrite(str(float_depth), np.array([[0.0, 1.25]], np.float32))
    np.testing.assert_allclose(read_depth(float_depth, 1000.0), [[np.nan, 1.25]], equal_nan=True)
    eight_bit = tmp_path / "eight.png"
    cv2.imwrite(str(eight_bit), np.zeros((2, 2), np.uint8))
    with pytest.raises(DatasetError, match="8-bit"):
        read_depth(eight_bit)


def test_camera_yaml_without_depth_section_means_registered_depth(tmp_path: Path) -> None:
    yaml_text = (
        "color: {width: 64, height: 48, fx: 50.0, fy: 51.0, cx: 31.5, cy: 23.5}\ndepth: {scale: 5000.0}\n"
    )
    write_folder(tmp_path, [f"a.png a_depth.png {IDENTITY}", "b.png -"], yaml_text)
    camera = read_camera_yaml(tmp_path / "camera.yaml")
    assert camera.depth is None and camera.depth_scale == 5000.0
    keyframes = load_frame_folder(tmp_path)
    assert keyframes[0].intrinsics == CameraIntrinsics(50.0, 51.0, 31.5, 23.5, 64, 48)
    assert keyframes[0].depth_intrinsics is None
    assert np.isnan(keyframes[0].depth[0, 0]) and keyframes[0].depth[1, 1] == pytest.approx(0.3)
    np.testing.assert_array_equal(keyframes[0].pose, np.eye(4))
    assert keyframes[1].depth is None and keyframes[1].pose is None
    assert keyframes[0].image[0, 0].tolist() == [200, 0, 0]
    # Intrinsics passed in win over the file.
    override = CameraIntrinsics(80.0, 80.0, 32.0, 24.0, 64, 48)
    assert load_frame_folder(tmp_path, intrinsics=override)[0].intrinsics == override


def test_malformed_index_lines_are_reported_with_their_line_number(tmp_path: Path) -> None:
    write_folder(tmp_path / "short", ["# header", "a.png a_depth.png 1 2 3"])
    with pytest.raises(DatasetError, match=r"frames_c2w.txt:2: expected"):
        load_frame_folder(tmp_path / "short")
    bad_pose = " ".join(["1"] * 16)
    write_folder(tmp_path / "pose", [f"a.png - {bad_pose}"])
    with pytest.raises(DatasetError, match="last row"):
        load_frame_folder(tmp_path / "pose")
    write_folder(tmp_path / "missing", [f"nothere.png - {IDENTITY}"])
    with pytest.raises(DatasetError, match="cannot read colour image"):
        load_frame_folder(tmp_path / "missing")
    with pytest.raises(DatasetError, match="does not exist"):
        load_frame_folder(tmp_path / "nowhere")
    write_folder(tmp_path / "yaml", [f"a.png - {IDENTITY}"], "color: {width: 64}\n")
    with pytest.raises(DatasetError, match="lacks 'fx'"):
        load_frame_folder(tmp_path / "yaml")


def test_folder_without_index_is_read_as_plain_images(tmp_path: Path) -> None:
    write_folder(tmp_path, ["a.png"])
    (tmp_path / "frames_c2w.txt").unlink()
    keyframes = load_frame_folder(tmp_path)
    assert [Path(k.metadata["rgb"]).name for k in keyframes] == ["a.png", "b.png"]  # depth file skipped
    assert all(k.depth is None and k.pose is None and k.intrinsics is None for k in keyframes)


def test_predicted_pose_index_is_found(shared_root: Path) -> None:
    keyframes = load_frame_folder(shared_root / "data" / "showroom_demo")
    assert len(keyframes) == 3 and all(k.pose is not None and k.depth is None for k in keyframes)
    assert keyframes[0].image.shape == (540, 720, 3)
