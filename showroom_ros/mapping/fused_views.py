"""The poses of the frames fused into a robot map, indexed so a new frame's near-twin is found at once
(the static-scene gate of :class:`~showroom_ros.mapping.robot_map.RobotMap`)."""

from __future__ import annotations

import math

import numpy as np
from scipy.spatial import cKDTree

from showroom_ros.geometry.camera import CameraIntrinsics

_CELL_NEIGHBOURS = [(x, y, z) for x in (-1, 0, 1) for y in (-1, 0, 1) for z in (-1, 0, 1)]


def camera_reach(intrinsics: CameraIntrinsics, depth_max: float) -> float:
    """Farthest distance from the camera centre that a depth image can write: ``depth_max`` along its widest ray."""
    x = max(intrinsics.cx, intrinsics.width - intrinsics.cx) / intrinsics.fx
    y = max(intrinsics.cy, intrinsics.height - intrinsics.cy) / intrinsics.fy
    return depth_max * math.sqrt(1.0 + x * x + y * y)


class FusedViews:
    """The camera poses of the fused keyframes, hashed into cells, to find a new keyframe's near-twin in O(1).

    Why a record of poses: a keyframe from (nearly) the pose of one already fused sees the same surface
    again (RobotMapConfig says what that costs). Cells have the translation threshold as their edge, so a
    view within it lies in one of the 27 cells around the query. Each view keeps how far its depth could
    reach, so the views whose blocks the budget dropped can be forgotten (and their places fused again).
    """

    def __init__(self, max_translation: float, max_rotation_deg: float) -> None:
        self.max_translation = max_translation
        self.enabled = max_translation > 0 and max_rotation_deg > 0
        # The angle between rotations R and S: trace(R^T S) = sum(R * S) = 1 + 2 cos(angle).
        self.min_trace = 1.0 + 2.0 * math.cos(math.radians(max_rotation_deg))
        self.clear()

    def clear(self) -> None:
        self._views: dict[int, tuple[np.ndarray, np.ndarray, float]] = {}  # id -> (position, rotation, reach)
        self._cells: dict[tuple[int, ...], set[int]] = {}
        self._next_id = 0

    def __len__(self) -> int:
        return len(self._views)

    def _cell(self, position: np.ndarray) -> tuple[int, ...]:
        return tuple(np.floor(position / self.max_translation).astype(np.int64).tolist())

    def near(self, pose: np.ndarray) -> bool:
        """Whether a fused view is within both thresholds of this camera-to-map pose."""
        if not self.enabled or not self._views:
            return False
        position, rotation = pose[:3, 3], pose[:3, :3]
        cx, cy, cz = self._cell(position)
        for dx, dy, dz in _CELL_NEIGHBOURS:
            for view in self._cells.get((cx + dx, cy + dy, cz + dz), ()):
                other_position, other_rotation, _ = self._views[view]
                if (
                    float(np.linalg.norm(other_position - position)) <= self.max_translation
                    and float(np.sum(other_rotation * rotation)) >= self.min_trace
                ):
                    return True
        return False

    def add(self, pose: np.ndarray, reach: float) -> None:
        if not self.enabled:
            return
        position = np.array(pose[:3, 3], dtype=np.float64)
        self._views[self._next_id] = (position, np.array(pose[:3, :3], dtype=np.float64), float(reach))
        self._cells.setdefault(self._cell(position), set()).add(self._next_id)
        self._next_id += 1

    def forget_near(self, points: np.ndarray, margin: float) -> int:
        """Forget the views that could have written any of these points (within their reach + margin); how many."""
        if not self._views or len(points) == 0:
            return 0
        ids = list(self._views)
        positions = np.stack([self._views[i][0] for i in ids])
        reach = np.array([self._views[i][2] for i in ids])
        distance, _ = cKDTree(np.asarray(points, dtype=np.float64)).query(positions)
        forgotten = [view for view, hit in zip(ids, distance <= reach + margin, strict=True) if hit]
        for view in forgotten:
            position = self._views.pop(view)[0]
            cell = self._cells[self._cell(position)]
            cell.discard(view)
            if not cell:
                del self._cells[self._cell(position)]
        return len(forgotten)
