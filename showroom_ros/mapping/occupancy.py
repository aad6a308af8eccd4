"""A 2D occupancy grid (Nav2's input) in the z = 0 plane of the map frame, from the map and the keyframe rays.

Cells hold ROS ``nav_msgs/OccupancyGrid`` values: 100 = a map surface lies in the height band above
the floor, 0 = a camera ray passed through the band over the cell before hitting its surface
(observed free), -1 = never observed. Everything is vectorised: rays are clipped to the band
analytically and sampled in xy with ``np.repeat``/``np.bincount``, never one Python loop per ray.
Map frame is z up (REP-103); ``data[row, col]`` has row = y index from the origin, like the message.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np

from showroom_ros.geometry.camera import CameraIntrinsics

OCCUPIED, FREE, UNKNOWN = 100, 0, -1


@dataclass(frozen=True)
class OccupancyConfig:
    """Grid and band parameters; heights are above ``floor_z`` in map frame metres."""

    resolution: float = 0.05
    floor_z: float = 0.0
    min_height: float = 0.1  # below: floor, never an obstacle
    max_height: float = 1.5  # above: overhangs the robot passes under
    padding: float = 0.25  # margin around the observed extent
    free_stop_margin: float = 0.1  # rays stop this far before their surface (sensor noise must not carve it)
    max_cells: int = 25_000_000  # refuse grids bigger than this (a stray far point must not eat memory)

    def __post_init__(self) -> None:
        if not self.resolution > 0:
            raise ValueError(f"resolution must be > 0, got {self.resolution}")
        if not self.min_height < self.max_height:
            raise ValueError(f"need min_height < max_height, got {self.min_height}, {self.max_height}")


@dataclass
class OccupancyGrid:
    """Cells (H, W) int8 in {100, 0, -1}; ``origin_xy`` is the map position of cell (0, 0)'s corner."""

    data: np.ndarray
    resolution: float
    origin_xy: tuple[float, float]

    @property
    def width(self) -> int:
        return int(self.data.shape[1])

    @property
    def height(self) -> int:
        return int(self.data.shape[0])

    def cell_of(self, xy: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """(row, col) indices of map xy points (may fall outside the grid)."""
        xy = np.asarray(xy, dtype=np.float64).reshape(-1, 2)
        col = np.floor((xy[:, 0] - self.origin_xy[0]) / self.resolution).astype(np.int64)
        row = np.floor((xy[:, 1] - self.origin_xy[1]) / self.resolution).astype(np.int64)
        return row, col


@dataclass
class Rays:
    """Observation rays of one keyframe: a camera centre and the 3D points its depth hit (map frame)."""

    origin: np.ndarray  # (3,)
    endpoints: np.ndarray  # (N, 3)


def depth_rays(
    depth_m: np.ndarray, intrinsics: CameraIntrinsics, pose_c2w: np.ndarray, stride: int = 4, depth_max: float = 4.0
) -> Rays:
    """The rays of every ``stride``-th pixel with valid depth (camera z, metres) in map frame."""
    depth = np.asarray(depth_m, dtype=np.float64)[::stride, ::stride]
    v, u = np.mgrid[0 : intrinsics.height : stride, 0 : intrinsics.width : stride]
    valid = np.isfinite(depth) & (depth > 0) & (depth <= depth_max)
    z = depth[valid]
    cam = np.stack(
        [(u[valid] - intrinsics.cx) / intrinsics.fx * z, (v[valid] - intrinsics.cy) / intrinsics.fy * z, z], -1
    )
    pose = np.asarray(pose_c2w, dtype=np.float64)
    return Rays(origin=pose[:3, 3].copy(), endpoints=cam @ pose[:3, :3].T + pose[:3, 3])


def _extent(parts: Sequence[np.ndarray], config: OccupancyConfig) -> tuple[np.ndarray, tuple[int, int]]:
    # Per-column reductions of each part: no concatenated copy of half a million points.
    present = [p for p in parts if len(p)]
    low = np.array([min(float(p[:, axis].min()) for p in present) for axis in (0, 1)])
    high = np.array([max(float(p[:, axis].max()) for p in present) for axis in (0, 1)])
    res = config.resolution
    lo = np.floor((low - config.padding) / res) * res
    hi = np.ceil((high + config.padding) / res) * res
    shape = (round(float(hi[1] - lo[1]) / res), round(float(hi[0] - lo[0]) / res))
    if shape[0] * shape[1] > config.max_cells:
        raise ValueError(f"occupancy grid of {shape[1]}x{shape[0]} cells exceeds max_cells={config.max_cells}")
    return lo, shape


def build_occupancy(
    surface_points: np.ndarray, rays: Sequence[Rays], config: OccupancyConfig | None = None
) -> OccupancyGrid:
    """The grid over the extent of the surface points and the ray segments in the band."""
    cfg = config or OccupancyConfig()
    points = np.asarray(surface_points, dtype=np.float64).reshape(-1, 3)
    finite = np.isfinite(points.sum(axis=1))  # a row sums to a finite value iff all its coordinates are finite
    if not finite.all():
        points = points[finite]
    z_lo, z_hi = cfg.floor_z + cfg.min_height, cfg.floor_z + cfg.max_height
    obstacles = points[(points[:, 2] >= z_lo) & (points[:, 2] <= z_hi)]

    starts, ends = _band_segments(rays, z_lo, z_hi, cfg.free_stop_margin)
    parts = [points, starts, ends]
    if not any(len(p) for p in parts):
        return OccupancyGrid(np.zeros((0, 0), np.int8), cfg.resolution, (0.0, 0.0))
    lo, (rows, cols) = _extent(parts, cfg)
    grid = OccupancyGrid(np.full((rows, cols), UNKNOWN, np.int8), cfg.resolution, (float(lo[0]), float(lo[1])))

    starts, ends = _distinct_segments(starts, ends, cfg.resolution)
    free_xy = _sample_segments(starts, ends, cfg.resolution * 0.5)
    flat = grid.data.reshape(-1)
    for xy, value in ((free_xy, FREE), (obstacles[:, :2], OCCUPIED)):  # two passes, obstacles win
        if len(xy) == 0:
            continue
        row, col = grid.cell_of(xy)
        inside = (row >= 0) & (row < rows) & (col >= 0) & (col < cols)
        hits = np.bincount(row[inside] * cols + col[inside], minlength=rows * cols)
        flat[hits > 0] = value
    return grid


def _band_segments(rays: Sequence[Rays], z_lo: float, z_hi: float, stop_margin: float) -> tuple[np.ndarray, np.ndarray]:
    """The part of each ray (origin to endpoint minus ``stop_margin``) inside the height band, as (start, end)."""
    if not rays:
        return np.zeros((0, 3)), np.zeros((0, 3))
    origins = np.concatenate(
        [np.broadcast_to(r.origin, r.endpoints.shape) for r in rays if len(r.endpoints)] or [np.zeros((0, 3))]
    )
    ends = np.concatenate([r.endpoints for r in rays if len(r.endpoints)] or [np.zeros((0, 3))])
    direction = ends - origins
    length = np.linalg.norm(direction, axis=1)
    keep = np.isfinite(length) & (length > stop_margin)
    origins, direction, length = origins[keep], direction[keep], length[keep]
    t_max = (length - stop_margin) / length
    dz = direction[:, 2]
    with np.errstate(divide="ignore", invalid="ignore"):
        t_a = (z_lo - origins[:, 2]) / dz
        t_b = (z_hi - origins[:, 2]) / dz
    flat = np.abs(dz) < 1e-12
    inside_flat = (origins[:, 2] >= z_lo) & (origins[:, 2] <= z_hi)
    t_enter = np.where(flat, np.where(inside_flat, 0.0, np.inf), np.minimum(t_a, t_b))
    t_exit = np.where(flat, np.where(inside_flat, 1.0, -np.inf), np.maximum(t_a, t_b))
    t0 = np.maximum(t_enter, 0.0)
    t1 = np.minimum(t_exit, t_max)
    ok = t1 > t0
    start = origins[ok] + t0[ok, None] * direction[ok]
    end = origins[ok] + t1[ok, None] * direction[ok]
    return start, end


def _distinct_segments(starts: np.ndarray, ends: np.ndarray, resolution: float) -> tuple[np.ndarray, np.ndarray]:
    """The longest segment of each (start cell, xy direction bin): it covers the shorter ones of its bin.

    Why: a keyframe gives tens of thousands of rays from one camera; in xy, rays that leave the same
    cell in directions closer than half a cell at the longest range overlap the longest of them to
    within half a cell, so sampling only that (real) ray observes the same cells at a fraction of the cost.
    """
    if len(starts) == 0:
        return starts, ends
    delta = ends[:, :2] - starts[:, :2]
    length = np.hypot(delta[:, 0], delta[:, 1])
    step = 0.5 * resolution / max(float(length.max()), resolution)
    bins = int(np.ceil(2 * np.pi / step)) + 1
    angle_bin = np.floor((np.arctan2(delta[:, 1], delta[:, 0]) + np.pi) / step).astype(np.int64)
    cell = np.floor(starts[:, :2] / resolution).astype(np.int64)
    cell -= cell.min(axis=0)
    key = (cell[:, 0] * (int(cell[:, 1].max()) + 1) + cell[:, 1]) * bins + angle_bin
    order = np.lexsort((-length, key))
    first = order[np.r_[True, key[order][1:] != key[order][:-1]]]
    return starts[first], ends[first]


def _sample_segments(starts: np.ndarray, ends: np.ndarray, step: float) -> np.ndarray:
    """xy samples every ``step`` metres (in xy) along each segment, both ends included."""
    if len(starts) == 0:
        return np.zeros((0, 2))
    delta = ends[:, :2] - starts[:, :2]
    counts = np.floor(np.linalg.norm(delta, axis=1) / step).astype(np.int64) + 2
    segment = np.repeat(np.arange(len(starts)), counts)
    first = np.cumsum(counts) - counts
    index = np.arange(counts.sum()) - np.repeat(first, counts)
    fraction = index / np.repeat(counts - 1, counts)
    return starts[segment, :2] + fraction[:, None] * delta[segment]
