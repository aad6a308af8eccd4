"""The robot's persistent volumetric map: a TSDF + weight + colour grid on Open3D's ``VoxelBlockGrid``.

Open3D's tensor voxel-block grid is a kept, tested TSDF (hashed 8^3 blocks, CPU and CUDA kernels,
marching cubes), so this module only adds what a robot map needs around it: integration of a
keyframe in map frame within a depth range, a block budget that bounds memory by dropping the
blocks farthest from the latest camera (and says which), a depth map rendered from a backend's
pointmap when there is no sensor depth, and an atomic save/load of the whole grid.
Poses are camera-to-map in OpenCV optical axes, depth is camera z in metres (NaN/0 = no data).
"""

from __future__ import annotations

import os
import secrets
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import BinaryIO

import numpy as np
import open3d as o3d
import open3d.core as o3c

from showroom_ros.geometry.camera import CameraIntrinsics
from showroom_ros.reconstruction.render import render_points

_ATTRIBUTES = ("tsdf", "weight", "color")
_FORMAT_VERSION = 1


@dataclass(frozen=True)
class VolumeConfig:
    """Map parameters; a block is ``block_resolution`` voxels on a side (8 x 2 cm = 16 cm)."""

    voxel_size: float = 0.02
    block_resolution: int = 8
    trunc_voxel_multiplier: float = 4.0  # truncation = multiplier x voxel size (8 cm at 2 cm voxels)
    depth_min: float = 0.1
    depth_max: float = 4.0
    block_budget: int = 60_000  # about 60k x 512 voxels x 20 B = 0.6 GB
    weight_threshold: float = 0.5  # Open3D extracts voxels with weight strictly above this (0.5 = seen once)
    device: str = "auto"  # "auto" = CUDA:0 when Open3D has CUDA, else CPU:0

    def __post_init__(self) -> None:
        if not self.voxel_size > 0:
            raise ValueError(f"voxel_size must be > 0, got {self.voxel_size}")
        if self.block_resolution < 2:
            raise ValueError(f"block_resolution must be >= 2, got {self.block_resolution}")
        if not self.trunc_voxel_multiplier > 0:
            raise ValueError(f"trunc_voxel_multiplier must be > 0, got {self.trunc_voxel_multiplier}")
        if not 0 <= self.depth_min < self.depth_max:
            raise ValueError(f"need 0 <= depth_min < depth_max, got {self.depth_min}, {self.depth_max}")
        if self.block_budget < 1:
            raise ValueError(f"block_budget must be >= 1, got {self.block_budget}")

    @property
    def block_size(self) -> float:
        """Edge of one block in metres."""
        return self.voxel_size * self.block_resolution

    @property
    def truncation(self) -> float:
        """TSDF truncation distance in metres."""
        return self.voxel_size * self.trunc_voxel_multiplier


@dataclass
class IntegrationReport:
    """What one integration changed: the blocks it wrote and the blocks the budget dropped (block coords)."""

    touched_blocks: np.ndarray = field(default_factory=lambda: np.zeros((0, 3), np.int32))
    dropped_blocks: np.ndarray = field(default_factory=lambda: np.zeros((0, 3), np.int32))

    @property
    def message(self) -> str:
        """A line for the log/status; says when memory bounding dropped part of the map."""
        text = f"integrated {len(self.touched_blocks)} blocks"
        if len(self.dropped_blocks):
            text += f"; block budget reached: dropped {len(self.dropped_blocks)} blocks farthest from the camera"
        return text


def _device(name: str) -> o3c.Device:
    if name == "auto":
        return o3c.Device("CUDA:0" if o3c.cuda.is_available() else "CPU:0")
    return o3c.Device(name)


def _pose(pose_c2w: np.ndarray) -> np.ndarray:
    pose = np.asarray(pose_c2w, dtype=np.float64)
    if pose.shape != (4, 4) or not np.all(np.isfinite(pose)):
        raise ValueError(f"pose_c2w must be a finite 4x4 camera-to-map matrix, got shape {pose.shape}")
    return pose


def render_depth_from_points(
    points: np.ndarray,
    pose_c2w: np.ndarray,
    intrinsics: CameraIntrinsics,
    confidence: np.ndarray | None = None,
    min_confidence: float = 0.0,
    point_radius_px: int = 1,
) -> np.ndarray:
    """Depth (camera z, metres, NaN = empty) of a backend's pointmap/cloud seen from a keyframe camera.

    Why: learned backends give points, not depth; the TSDF integrates depth. Open3D's integration
    takes no per-pixel weight, so confidence acts as a gate: points below ``min_confidence`` are not
    drawn (they would otherwise carve or invent surface with full weight).
    """
    xyz = np.asarray(points, dtype=np.float64).reshape(-1, 3)
    if confidence is not None:
        conf = np.asarray(confidence, dtype=np.float64).reshape(-1)
        if len(conf) != len(xyz):
            raise ValueError(f"confidence has {len(conf)} values for {len(xyz)} points")
        xyz = xyz[np.isfinite(conf) & (conf >= min_confidence)]
    result = render_points(xyz, None, _pose(pose_c2w), intrinsics, point_radius_px=point_radius_px)
    return result.depth.astype(np.float32)


class TsdfVolume:
    """A growing TSDF map in map frame. Not thread-safe: one owner (the mapping worker) calls it."""

    def __init__(self, config: VolumeConfig | None = None) -> None:
        self.config = config or VolumeConfig()
        self.device = _device(self.config.device)
        self._grid = self._new_grid(min(self.config.block_budget, 4096))

    def _new_grid(self, capacity: int) -> o3d.t.geometry.VoxelBlockGrid:
        return o3d.t.geometry.VoxelBlockGrid(
            _ATTRIBUTES,
            (o3c.float32, o3c.float32, o3c.float32),
            ((1), (1), (3)),
            self.config.voxel_size,
            self.config.block_resolution,
            max(int(capacity), 16),
            self.device,
        )

    @property
    def grid(self) -> o3d.t.geometry.VoxelBlockGrid:
        """The underlying Open3D grid (for extraction by chunks)."""
        return self._grid

    @property
    def block_count(self) -> int:
        """Number of allocated blocks."""
        return int(self._grid.hashmap().size())

    def block_coords(self) -> np.ndarray:
        """(N, 3) int32 coordinates of every allocated block (block index = floor(position / block size))."""
        hashmap = self._grid.hashmap()
        return hashmap.key_tensor()[hashmap.active_buf_indices()].cpu().numpy().astype(np.int32)

    def memory_bytes(self) -> int:
        """Bytes used by the allocated blocks' voxels (tsdf, weight, 3 colour floats) and keys."""
        voxels = self.config.block_resolution**3
        return self.block_count * (voxels * 5 * 4 + 3 * 4)

    def clear(self) -> None:
        """Forget the whole map."""
        self._grid = self._new_grid(min(self.config.block_budget, 4096))

    def integrate(
        self,
        depth_m: np.ndarray,
        intrinsics: CameraIntrinsics,
        pose_c2w: np.ndarray,
        color: np.ndarray | None = None,
        color_intrinsics: CameraIntrinsics | None = None,
    ) -> IntegrationReport:
        """Fuse one keyframe's depth (metres, camera z; NaN/<=0 = none) and optional uint8 RGB into the map."""
        depth = np.asarray(depth_m, dtype=np.float32)
        if depth.shape != (intrinsics.height, intrinsics.width):
            raise ValueError(
                f"depth shape {depth.shape} does not match intrinsics {intrinsics.width}x{intrinsics.height}"
            )
        pose = _pose(pose_c2w)
        usable = np.isfinite(depth) & (depth >= self.config.depth_min) & (depth <= self.config.depth_max)
        depth = np.where(usable, depth, 0.0).astype(np.float32)
        if not np.any(depth > 0):
            return IntegrationReport()
        cfg = self.config
        depth_image = o3d.t.geometry.Image(o3c.Tensor(np.ascontiguousarray(depth))).to(self.device)
        intrinsic = o3c.Tensor(intrinsics.matrix, o3c.float64)
        extrinsic = o3c.Tensor(np.linalg.inv(pose), o3c.float64)
        coords = self._grid.compute_unique_block_coordinates(
            depth_image, intrinsic, extrinsic, 1.0, cfg.depth_max, cfg.trunc_voxel_multiplier
        )
        touched = coords.cpu().numpy().astype(np.int32)
        dropped = self._enforce_budget(touched, pose[:3, 3])
        if color is None:
            self._grid.integrate(
                coords, depth_image, intrinsic, extrinsic, 1.0, cfg.depth_max, cfg.trunc_voxel_multiplier
            )
        else:
            rgb = np.asarray(color)
            color_k = color_intrinsics or intrinsics
            if rgb.shape != (color_k.height, color_k.width, 3) or rgb.dtype != np.uint8:
                raise ValueError(
                    f"color must be uint8 ({color_k.height}, {color_k.width}, 3), got {rgb.dtype} {rgb.shape}"
                )
            color_image = o3d.t.geometry.Image(o3c.Tensor(np.ascontiguousarray(rgb, dtype=np.float32) / 255.0)).to(
                self.device
            )
            self._grid.integrate(
                coords,
                depth_image,
                color_image,
                intrinsic,
                o3c.Tensor(color_k.matrix, o3c.float64),
                extrinsic,
                1.0,
                cfg.depth_max,
                cfg.trunc_voxel_multiplier,
            )
        return IntegrationReport(touched_blocks=touched, dropped_blocks=dropped)

    def _enforce_budget(self, frame_blocks: np.ndarray, camera_position: np.ndarray) -> np.ndarray:
        """Erase the blocks farthest from the camera, never the frame's own, until the budget holds.

        Open3D allocates the frame's blocks during ``integrate``; a frame larger than the budget keeps
        all its blocks (the map then holds just that frame).
        """
        existing = self.block_coords()
        if len(existing) == 0:
            return np.zeros((0, 3), np.int32)
        frame_keys = {tuple(b) for b in frame_blocks.tolist()}
        in_frame = np.array([tuple(b) in frame_keys for b in existing.tolist()], dtype=bool)
        excess = len(existing) + len(frame_blocks) - int(in_frame.sum()) - self.config.block_budget
        if excess <= 0:
            return np.zeros((0, 3), np.int32)
        size = self.config.block_size
        candidates = existing[~in_frame]
        if len(candidates) == 0:
            return np.zeros((0, 3), np.int32)
        distance = np.linalg.norm((candidates.astype(np.float64) + 0.5) * size - camera_position, axis=1)
        drop = candidates[np.argsort(-distance, kind="stable")[: min(excess, len(candidates))]]
        self._grid.hashmap().erase(o3c.Tensor(np.ascontiguousarray(drop), o3c.int32).to(self.device))
        return drop

    def extract_point_cloud(self) -> tuple[np.ndarray, np.ndarray]:
        """Surface points (N, 3) float64 and colours (N, 3) uint8 of the map."""
        if self.block_count == 0:
            return np.zeros((0, 3)), np.zeros((0, 3), np.uint8)
        cloud = self._grid.extract_point_cloud(self.config.weight_threshold)
        points = cloud.point.positions.cpu().numpy().astype(np.float64)
        if "colors" in cloud.point:
            colors = _to_uint8(cloud.point.colors.cpu().numpy())
        else:
            colors = np.full((len(points), 3), 200, np.uint8)
        return points, colors

    def extract_mesh(self) -> o3d.geometry.TriangleMesh:
        """Marching-cubes mesh of the whole map (legacy Open3D mesh, vertex colours 0..1)."""
        return extract_mesh_of(self._grid, self.config.weight_threshold)

    def save(self, path: str | os.PathLike[str]) -> Path:
        """Write the grid (keys, tsdf, weight, colour, config) to an ``.npz``, atomically."""
        target = Path(path)
        target.parent.mkdir(parents=True, exist_ok=True)
        # io/export.py's naming (what a stopping node removes), and "x" rather than mkstemp: the file gets the
        # umask's mode, where mkstemp's 0600 would carry over to the saved map.
        temp = target.with_name(f".{target.stem}.{os.getpid()}-{secrets.token_hex(4)}.tmp{target.suffix}")
        try:
            with open(temp, "xb") as handle:
                self.write_npz(handle)
            os.replace(temp, target)
        except BaseException:
            temp.unlink(missing_ok=True)
            raise
        return target

    def write_npz(self, destination: str | os.PathLike[str] | BinaryIO) -> None:
        """Write the grid's ``.npz`` to exactly ``destination`` (a path or an open binary file), not atomically:
        for callers with their own atomic writer (apps/map_session.py)."""
        hashmap = self._grid.hashmap()
        active = hashmap.active_buf_indices()
        arrays = {
            "keys": hashmap.key_tensor()[active].cpu().numpy(),
            **{
                name: value[active].cpu().numpy()
                for name, value in zip(_ATTRIBUTES, hashmap.value_tensors(), strict=True)
            },
            "format_version": np.array(_FORMAT_VERSION),
            **{f"config_{k}": np.array(v) for k, v in asdict(self.config).items()},
        }
        if isinstance(destination, (str, os.PathLike)):
            with open(destination, "wb") as handle:  # a path: np.savez would append ".npz" to other suffixes
                np.savez_compressed(handle, **arrays)
        else:
            np.savez_compressed(destination, **arrays)

    @classmethod
    def load(cls, path: str | os.PathLike[str], device: str | None = None) -> TsdfVolume:
        """Read a volume written by :meth:`save` (its own config; ``device`` overrides where it lives)."""
        with np.load(Path(path), allow_pickle=False) as data:
            if int(data["format_version"]) != _FORMAT_VERSION:
                raise ValueError(f"{path}: unsupported volume format {int(data['format_version'])}")
            fields = {k[len("config_") :]: data[k].item() for k in data.files if k.startswith("config_")}
            if device is not None:
                fields["device"] = device
            volume = cls(VolumeConfig(**fields))
            keys = data["keys"].astype(np.int32)
            values = [data[name].astype(np.float32) for name in _ATTRIBUTES]
        volume._grid = volume._new_grid(max(len(keys), min(volume.config.block_budget, 4096)))
        if len(keys):
            tensors = [o3c.Tensor(np.ascontiguousarray(v)).to(volume.device) for v in values]
            volume._grid.hashmap().insert(o3c.Tensor(np.ascontiguousarray(keys)).to(volume.device), tensors)
        return volume


def _to_uint8(colors: np.ndarray) -> np.ndarray:
    """Open3D's grid keeps colour as float 0..1 here (we integrate 0..1 images)."""
    return (np.clip(np.nan_to_num(colors), 0.0, 1.0) * 255.0 + 0.5).astype(np.uint8)


def extract_mesh_of(grid: o3d.t.geometry.VoxelBlockGrid, weight_threshold: float) -> o3d.geometry.TriangleMesh:
    """Marching cubes of a grid as a legacy mesh; empty grids give an empty mesh."""
    if grid.hashmap().size() == 0:
        return o3d.geometry.TriangleMesh()
    mesh = grid.extract_triangle_mesh(weight_threshold).to_legacy()
    if mesh.has_vertex_colors():
        mesh.vertex_colors = o3d.utility.Vector3dVector(np.clip(np.asarray(mesh.vertex_colors), 0.0, 1.0))
    return mesh
