"""Camera poses over time: a bounded history that answers "where was the camera at stamp t"."""

from __future__ import annotations

import bisect
from collections import deque

import numpy as np
from scipy.spatial.transform import Rotation, Slerp


def orthonormalize(pose: np.ndarray) -> np.ndarray:
    """Nearest rigid transform (SVD): tracked poses are often slightly non-orthonormal."""
    out = np.array(pose, dtype=np.float64)
    u, _, vt = np.linalg.svd(out[:3, :3])
    rotation = u @ vt
    if np.linalg.det(rotation) < 0:
        rotation = u @ np.diag([1.0, 1.0, -1.0]) @ vt
    out[:3, :3] = rotation
    out[3] = [0.0, 0.0, 0.0, 1.0]
    return out


def pose_distance(a: np.ndarray, b: np.ndarray) -> tuple[float, float]:
    """Translation (same unit as the poses) and rotation angle (degrees) between two poses."""
    translation = float(np.linalg.norm(a[:3, 3] - b[:3, 3]))
    relative = orthonormalize(a)[:3, :3].T @ orthonormalize(b)[:3, :3]
    angle = float(np.degrees(np.arccos(np.clip((np.trace(relative) - 1.0) / 2.0, -1.0, 1.0))))
    return translation, angle


class PoseHistory:
    """Stamped poses of one frame, interpolated (slerp + lerp) at query stamps.

    Queries between two samples interpolate; queries outside the covered span return the
    nearest sample only within ``tolerance_ns`` and ``None`` otherwise, so a caller can wait
    for a pose that has not arrived yet instead of extrapolating.
    """

    def __init__(self, max_samples: int = 2000, tolerance_ns: int = 50_000_000) -> None:
        self._stamps: deque[int] = deque(maxlen=max_samples)
        self._poses: deque[np.ndarray] = deque(maxlen=max_samples)
        self.tolerance_ns = int(tolerance_ns)

    def __len__(self) -> int:
        return len(self._stamps)

    def clear(self) -> None:
        self._stamps.clear()
        self._poses.clear()

    @property
    def latest_stamp(self) -> int | None:
        return self._stamps[-1] if self._stamps else None

    def add(self, stamp_ns: int, pose: np.ndarray) -> None:
        pose = np.asarray(pose, dtype=np.float64)
        if pose.shape != (4, 4) or not np.all(np.isfinite(pose)):
            raise ValueError("pose must be a finite 4x4 matrix")
        if self._stamps and stamp_ns < self._stamps[-1]:
            # Out-of-order sample (e.g. a replayed bag looping): start a new history.
            self.clear()
        elif self._stamps and stamp_ns == self._stamps[-1]:
            self._poses[-1] = pose
            return
        self._stamps.append(int(stamp_ns))
        self._poses.append(pose)

    def lookup(self, stamp_ns: int) -> np.ndarray | None:
        if not self._stamps:
            return None
        stamps = self._stamps
        index = bisect.bisect_left(stamps, stamp_ns)
        if index < len(stamps) and stamps[index] == stamp_ns:
            return self._poses[index].copy()
        if index == 0 or index == len(stamps):
            nearest = 0 if index == 0 else len(stamps) - 1
            if abs(stamps[nearest] - stamp_ns) <= self.tolerance_ns:
                return self._poses[nearest].copy()
            return None
        before, after = index - 1, index
        t0, t1 = stamps[before], stamps[after]
        fraction = (stamp_ns - t0) / (t1 - t0)
        p0, p1 = orthonormalize(self._poses[before]), orthonormalize(self._poses[after])
        slerp = Slerp([0.0, 1.0], Rotation.from_matrix(np.stack([p0[:3, :3], p1[:3, :3]])))
        out = np.eye(4)
        out[:3, :3] = slerp([fraction]).as_matrix()[0]
        out[:3, 3] = (1.0 - fraction) * p0[:3, 3] + fraction * p1[:3, 3]
        return out
