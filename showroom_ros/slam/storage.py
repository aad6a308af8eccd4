"""Save and load the SLAM state beside a saved map: the pose graph and the keyframe database.

One ``.npz`` of plain arrays (no pickle: a map file may come from anywhere), variable-length parts
concatenated with offsets. Clouds are stored downsampled and their covariances recomputed on load.
"""

from __future__ import annotations

import os
import zipfile
from pathlib import Path

import numpy as np
import small_gicp

from showroom_ros.slam.config import SlamConfig
from showroom_ros.slam.frames import SlamFrame
from showroom_ros.slam.keyframes import KeyframeDatabase, KeyframeRecord
from showroom_ros.slam.pose_graph import PoseGraph
from showroom_ros.slam.system import RgbdSlam

FORMAT_VERSION = 1


class SlamFileError(ValueError):
    """A SLAM file that cannot be used (missing, another version, inconsistent)."""


def _ragged(parts: list[np.ndarray], dtype: type, width: int | None) -> tuple[np.ndarray, np.ndarray]:
    offsets = np.cumsum([0] + [len(p) for p in parts]).astype(np.int64)
    shape = (0,) if width is None else (0, width)
    data = np.concatenate(parts).astype(dtype) if parts else np.zeros(shape, dtype)
    return data, offsets


def _split(data: np.ndarray, offsets: np.ndarray, index: int) -> np.ndarray:
    return data[offsets[index] : offsets[index + 1]]


def save_slam(slam: RgbdSlam, path: str | os.PathLike[str]) -> Path:
    """Write atomically (a temporary file renamed over the target)."""
    path = Path(path)
    keys = slam.database.keys()
    records = [slam.database[k] for k in keys]
    frames = [r.frame for r in records]
    arrays: dict[str, np.ndarray] = dict(slam.graph.to_arrays())
    arrays["version"] = np.array(FORMAT_VERSION)
    arrays["keys"] = np.array(keys, dtype=np.int64)
    arrays["stamps"] = np.array([slam.keyframe_stamps[k] for k in keys], dtype=np.int64)
    arrays["intrinsics"] = np.stack([f.K for f in frames]) if frames else np.zeros((0, 3, 3))
    arrays["valid_depth"] = np.array([f.valid_depth for f in frames], dtype=np.float64)
    arrays["place"] = np.stack([f.descriptor for f in frames]) if frames else np.zeros((0, 1), np.float32)
    for name, parts, dtype, width in (
        ("keypoints", [f.keypoints for f in frames], np.float32, 2),
        ("descriptors", [f.descriptors for f in frames], np.uint8, 32),
        ("points", [f.points for f in frames], np.float32, 3),
        ("cloud", [f.cloud_points for f in frames], np.float64, 3),
        ("colour", [np.frombuffer(r.colour_jpeg or b"", np.uint8) for r in records], np.uint8, None),
        ("depth", [np.frombuffer(r.depth_png or b"", np.uint8) for r in records], np.uint8, None),
    ):
        arrays[name], arrays[name + "_offsets"] = _ragged(parts, dtype, width)
    tmp = path.with_name(path.name + ".tmp")
    try:
        with open(tmp, "wb") as handle:
            np.savez(handle, **arrays)
            handle.flush()
            os.fsync(handle.fileno())
        os.replace(tmp, path)
    except BaseException:
        tmp.unlink(missing_ok=True)  # a full or read-only disk leaves nothing half-written behind
        raise
    return path


def load_slam(path: str | os.PathLike[str], config: SlamConfig) -> RgbdSlam:
    """A SLAM that must relocalise in the loaded map before it tracks (state ``lost``: not relocalised)."""
    try:
        with np.load(Path(path), allow_pickle=False) as data:
            arrays = {name: data[name] for name in data.files}
    except (OSError, ValueError, zipfile.BadZipFile, EOFError) as error:
        raise SlamFileError(f"cannot read the SLAM file {path}: {error}") from error
    if int(arrays.get("version", -1)) != FORMAT_VERSION:
        raise SlamFileError(f"{path}: SLAM file version {arrays.get('version')} (this build reads {FORMAT_VERSION})")
    slam = RgbdSlam(config)
    try:
        slam.graph = PoseGraph.from_arrays(config, arrays)
        slam.database = KeyframeDatabase(int(config.keyframe_memory_mb * 2**20))
        for index, key in enumerate(arrays["keys"]):
            cloud_points = _split(arrays["cloud"], arrays["cloud_offsets"], index)
            cloud = small_gicp.PointCloud(np.ascontiguousarray(cloud_points, dtype=np.float64))
            tree = small_gicp.KdTree(cloud)
            small_gicp.estimate_covariances(cloud, tree)
            frame = SlamFrame(
                stamp_ns=int(arrays["stamps"][index]),
                gray=np.zeros((0, 0), np.uint8),
                depth=np.zeros((0, 0), np.float32),
                K=arrays["intrinsics"][index],
                keypoints=_split(arrays["keypoints"], arrays["keypoints_offsets"], index),
                descriptors=_split(arrays["descriptors"], arrays["descriptors_offsets"], index),
                points=_split(arrays["points"], arrays["points_offsets"], index),
                cloud=cloud,
                tree=tree,
                descriptor=arrays["place"][index].astype(np.float32),
                valid_depth=float(arrays["valid_depth"][index]),
            )
            colour = _split(arrays["colour"], arrays["colour_offsets"], index).tobytes() or None
            depth = _split(arrays["depth"], arrays["depth_offsets"], index).tobytes() or None
            slam.database.add(KeyframeRecord(int(key), frame, colour, depth))
            slam.keyframe_stamps[int(key)] = frame.stamp_ns
            slam.mapped_poses[int(key)] = slam.graph.pose(int(key))
    except (KeyError, IndexError, ValueError) as error:
        raise SlamFileError(f"{path}: inconsistent SLAM file: {error}") from error
    if set(slam.database.keys()) != set(slam.graph.poses()):
        raise SlamFileError(f"{path}: the keyframes and the pose graph do not match")
    slam.await_relocalisation("map loaded: not relocalised yet")
    return slam
