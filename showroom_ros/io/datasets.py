"""Frame folders on disk -> keyframes: the sample data, the shared test scenes, replays and the CLI.

A folder holds images, optional depth images, and an index ``frames_c2w.txt`` with one line per
frame: ``<rgb path> <depth path or -> <16 numbers: 4x4 camera-to-world, row-major>`` (``#`` starts
a comment; paths are relative to the folder; OpenCV camera axes). Intrinsics come from
``camera.yaml`` beside it::

    color: {width: 640, height: 480, fx: 525.0, fy: 525.0, cx: 320.0, cy: 240.0}
    depth: {width: 640, height: 480, fx: 585.0, fy: 585.0, cx: 320.0, cy: 240.0, scale: 1000.0}

or from the arguments (which win). Without a ``depth`` section the depth is taken as registered to
the colour image. A folder with no index is read as plain colour images (sorted, no depth or poses).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import cv2
import numpy as np
import yaml

from showroom_ros.capture.keyframes import Keyframe
from showroom_ros.geometry.camera import CameraIntrinsics
from showroom_ros.reconstruction.rgbd import depth_to_metres

INDEX_NAME = "frames_c2w.txt"
CAMERA_NAME = "camera.yaml"
FRAME_PERIOD_NS = 100_000_000
"""Stamps given to loaded frames (10 Hz apart, in index order): a folder has an order but no clock."""

_IMAGE_SUFFIXES = (".jpg", ".jpeg", ".png", ".bmp", ".webp")


class DatasetError(ValueError):
    """A frame folder is malformed or incomplete; the message names the file (and line)."""


@dataclass(frozen=True)
class FrameRecord:
    """One line of a frame index: paths are absolute, ``pose`` camera-to-world or None."""

    rgb: Path
    depth: Path | None
    pose: np.ndarray | None


@dataclass(frozen=True)
class CameraFile:
    """``camera.yaml``: colour intrinsics, depth intrinsics (None = registered), depth units per metre."""

    color: CameraIntrinsics | None
    depth: CameraIntrinsics | None
    depth_scale: float


def find_index(folder: Path) -> Path | None:
    """``frames_c2w.txt``, else the single ``frames_c2w*.txt`` (e.g. predicted poses), else None."""
    exact = folder / INDEX_NAME
    if exact.is_file():
        return exact
    candidates = sorted(folder.glob("frames_c2w*.txt"))
    if len(candidates) > 1:
        names = ", ".join(c.name for c in candidates)
        raise DatasetError(f"{folder} has several frame indices ({names}); pass the one to use as index=")
    return candidates[0] if candidates else None


def read_frame_index(index: Path) -> list[FrameRecord]:
    """Parse a ``frames_c2w.txt``-style index (see the module docstring)."""
    index = Path(index)
    records: list[FrameRecord] = []
    for number, line in enumerate(index.read_text().splitlines(), start=1):
        text = line.split("#", 1)[0].strip()
        if not text:
            continue
        fields = text.split()
        where = f"{index}:{number}"
        if len(fields) not in (1, 2, 18):
            raise DatasetError(
                f"{where}: expected '<rgb> <depth or -> <16 pose numbers>' (or just '<rgb> [depth]'), "
                f"got {len(fields)} fields"
            )
        rgb = index.parent / fields[0]
        depth = None if len(fields) < 2 or fields[1] == "-" else index.parent / fields[1]
        pose = None
        if len(fields) == 18:
            try:
                pose = np.array([float(value) for value in fields[2:]], dtype=np.float64).reshape(4, 4)
            except ValueError as error:
                raise DatasetError(f"{where}: pose is not 16 numbers ({error})") from None
            if not np.all(np.isfinite(pose)) or not np.allclose(pose[3], [0.0, 0.0, 0.0, 1.0], atol=1e-6):
                raise DatasetError(f"{where}: pose must be a finite 4x4 matrix with last row 0 0 0 1")
        records.append(FrameRecord(rgb, depth, pose))
    if not records:
        raise DatasetError(f"{index} lists no frames")
    return records


def _intrinsics_from_mapping(section: Any, where: str) -> CameraIntrinsics:
    if not isinstance(section, dict):
        raise DatasetError(f"{where} must be a mapping with width, height, fx, fy, cx, cy")
    try:
        return CameraIntrinsics(
            float(section["fx"]),
            float(section["fy"]),
            float(section["cx"]),
            float(section["cy"]),
            int(section["width"]),
            int(section["height"]),
        )
    except KeyError as error:
        raise DatasetError(f"{where} lacks {error.args[0]!r} (needs width, height, fx, fy, cx, cy)") from None
    except (TypeError, ValueError) as error:
        raise DatasetError(f"{where}: {error}") from None


def read_camera_yaml(path: Path) -> CameraFile:
    """Read a ``camera.yaml`` (sections ``color`` and optional ``depth`` with ``scale``)."""
    path = Path(path)
    try:
        content = yaml.safe_load(path.read_text())
    except yaml.YAMLError as error:
        raise DatasetError(f"{path} is not valid YAML: {error}") from None
    if not isinstance(content, dict):
        raise DatasetError(f"{path} must contain a mapping with a 'color' section")
    color = _intrinsics_from_mapping(content["color"], f"{path}: color") if "color" in content else None
    depth = None
    depth_scale = 1000.0
    if content.get("depth") is not None:
        section = content["depth"]
        if isinstance(section, dict) and "scale" in section:
            depth_scale = float(section["scale"])
        if isinstance(section, dict) and "fx" in section:
            depth = _intrinsics_from_mapping(section, f"{path}: depth")
    if "depth_scale" in content:
        depth_scale = float(content["depth_scale"])
    if not (np.isfinite(depth_scale) and depth_scale > 0):
        raise DatasetError(f"{path}: depth scale must be positive, got {depth_scale}")
    return CameraFile(color, depth, depth_scale)


def read_rgb(path: Path) -> np.ndarray:
    """(H, W, 3) uint8 RGB of an image file (OpenCV reads BGR; converted here once)."""
    image = cv2.imread(str(path), cv2.IMREAD_COLOR)
    if image is None:
        raise DatasetError(f"cannot read colour image {path} (missing or not an image)")
    return cv2.cvtColor(image, cv2.COLOR_BGR2RGB)


def read_depth(path: Path, depth_scale: float = 1000.0) -> np.ndarray:
    """Depth file in metres (float32, NaN invalid): 16-bit PNG, big-endian 16-bit PGM, or float TIFF/EXR.

    ``cv2.IMREAD_UNCHANGED`` keeps 16-bit values (and swaps PGM's big-endian bytes), so no 8-bit
    truncation can slip in; 8-bit files are refused because they cannot hold useful depth.
    """
    raw = cv2.imread(str(path), cv2.IMREAD_UNCHANGED)
    if raw is None:
        raise DatasetError(f"cannot read depth image {path} (missing or not an image)")
    if raw.ndim == 3:
        raise DatasetError(f"depth image {path} has {raw.shape[2]} channels; expected a single channel")
    if raw.dtype == np.uint8:
        raise DatasetError(f"depth image {path} is 8-bit; expected 16-bit integer or float depth")
    return depth_to_metres(raw, depth_scale)


def _select(records: list[FrameRecord], names: Sequence[str], folder: Path) -> list[FrameRecord]:
    """Records in the order of ``names``; a name matches the rgb path, its file name or its stem prefix."""
    chosen: list[FrameRecord] = []
    for name in names:
        matches = [
            r
            for r in records
            if name in (str(r.rgb.relative_to(folder)), r.rgb.name, r.rgb.stem)
            or r.rgb.name.startswith(f"{name}.")
        ]
        if len(matches) != 1:
            state = "no frame" if not matches else f"{len(matches)} frames"
            raise DatasetError(f"{state} in {folder} match the name {name!r}")
        chosen.append(matches[0])
    return chosen


def load_frame_folder(
    folder: str | Path,
    names: Sequence[str] | None = None,
    with_depth: bool = True,
    with_poses: bool = True,
    intrinsics: CameraIntrinsics | None = None,
    depth_intrinsics: CameraIntrinsics | None = None,
    depth_scale: float | None = None,
    index: str | Path | None = None,
) -> list[Keyframe]:
    """Keyframes of a frame folder, in index order (or the order of ``names``).

    ``names`` picks frames by rgb file name, path or name prefix (``"frame-000250"``). Intrinsics
    given here win over ``camera.yaml``; without either, keyframes have ``intrinsics`` None.
    ``with_depth``/``with_poses`` False leave those out (an RGB-only or pose-free run).
    """
    folder = Path(folder).expanduser()
    if not folder.is_dir():
        raise DatasetError(f"frame folder {folder} does not exist")
    index_path = Path(index) if index is not None else find_index(folder)
    if index_path is not None and not index_path.is_absolute() and not index_path.is_file():
        index_path = folder / index_path
    if index_path is not None:
        records = read_frame_index(index_path)
    else:
        images = sorted(
            p
            for p in folder.iterdir()
            if p.suffix.lower() in _IMAGE_SUFFIXES and "depth" not in p.name.lower()
        )
        if not images:
            raise DatasetError(f"{folder} has no {INDEX_NAME} and no images")
        records = [FrameRecord(p, None, None) for p in images]
    if names is not None:
        records = _select(records, names, folder)

    camera_file = read_camera_yaml(folder / CAMERA_NAME) if (folder / CAMERA_NAME).is_file() else None
    color_k = intrinsics or (camera_file.color if camera_file else None)
    depth_k = depth_intrinsics or (camera_file.depth if camera_file else None)
    scale = depth_scale if depth_scale is not None else (camera_file.depth_scale if camera_file else 1000.0)

    keyframes = []
    for position, record in enumerate(records):
        image = read_rgb(record.rgb)
        depth = read_depth(record.depth, scale) if with_depth and record.depth is not None else None
        metadata = {"rgb": str(record.rgb)}
        if depth is not None and record.depth is not None:
            metadata["depth"] = str(record.depth)
        if index_path is not None:
            metadata["index"] = str(index_path)
        keyframes.append(
            Keyframe(
                image=image,
                stamp_ns=position * FRAME_PERIOD_NS,
                intrinsics=color_k,
                depth=depth,
                depth_intrinsics=depth_k if depth is not None else None,
                pose=record.pose.copy() if with_poses and record.pose is not None else None,
                metadata=metadata,
            )
        )
    return keyframes
