"""Poses over time: the one rule for "where was this frame at stamp t", and the node's bounded history.

:func:`interpolate_pose` is the single interpolation owner: the node's :class:`PoseHistory` (a pose
topic) and the bag reader's TF tree (:class:`~showroom_ros.geometry.transform_tree.TransformBuffer`, per
edge) both answer through it, so a pose read live and one read from a bag at the same stamp agree.
"""

from __future__ import annotations

import bisect
from collections import deque
from collections.abc import Sequence

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


def rigid_pose(translation: Sequence[float], quaternion_xyzw: Sequence[float]) -> np.ndarray:
    """4x4 pose from a translation and an x, y, z, w quaternion (normalised here; zero is an error)."""
    matrix = np.eye(4)
    matrix[:3, :3] = Rotation.from_quat(np.asarray(quaternion_xyzw, dtype=np.float64)).as_matrix()
    matrix[:3, 3] = np.asarray(translation, dtype=np.float64)
    return matrix


class StampOutOfRange(LookupError):
    """A stamp before the first or after the last sample by more than the tolerance.

    Poses are never extrapolated: a live caller waits for the sample that has not arrived yet, and a
    bag reader reports the recorded span.
    """

    def __init__(self, stamp_ns: int, first_ns: int, last_ns: int) -> None:
        self.stamp_ns, self.first_ns, self.last_ns = stamp_ns, first_ns, last_ns
        self.side = "before the first" if stamp_ns < first_ns else "after the last"
        super().__init__(
            f"{stamp_ns / 1e9:.3f} s is {self.side} sample "
            f"(recorded from {first_ns / 1e9:.3f} s to {last_ns / 1e9:.3f} s)"
        )


def interpolate_pose(
    stamps: Sequence[int], poses: Sequence[np.ndarray], stamp_ns: int, tolerance_ns: int
) -> np.ndarray:
    """The pose at ``stamp_ns`` from samples sorted by stamp (4x4 poses, ``stamps`` ascending, not empty).

    - A sample's own stamp gives that sample (a copy, as it was stored).
    - Between two samples: translation interpolated linearly, rotation by slerp, both at the same
      fraction of the interval; the two samples are made rigid first (tracked poses are often
      slightly non-orthonormal), so the result is always rigid.
    - Outside the samples' span: the nearest sample if it is at most ``tolerance_ns`` away, else
      :class:`StampOutOfRange`.
    """
    if not len(stamps) or len(stamps) != len(poses):
        raise ValueError(f"need as many poses as stamps, at least one; got {len(poses)} and {len(stamps)}")
    index = bisect.bisect_left(stamps, stamp_ns)
    if index < len(stamps) and stamps[index] == stamp_ns:
        return np.array(poses[index], dtype=np.float64)
    if index == 0 or index == len(stamps):
        nearest = 0 if index == 0 else len(stamps) - 1
        if abs(stamps[nearest] - stamp_ns) <= tolerance_ns:
            return np.array(poses[nearest], dtype=np.float64)
        raise StampOutOfRange(int(stamp_ns), int(stamps[0]), int(stamps[-1]))
    before, after = index - 1, index
    fraction = (stamp_ns - stamps[before]) / (stamps[after] - stamps[before])
    p0, p1 = orthonormalize(poses[before]), orthonormalize(poses[after])
    slerp = Slerp([0.0, 1.0], Rotation.from_matrix(np.stack([p0[:3, :3], p1[:3, :3]])))
    out = np.eye(4)
    out[:3, :3] = slerp([fraction]).as_matrix()[0]
    out[:3, 3] = (1.0 - fraction) * p0[:3, 3] + fraction * p1[:3, 3]
    return out


class PoseHistory:
    """Stamped poses of one frame as they arrive live, bounded, answered by :func:`interpolate_pose`.

    A lookup outside the covered span (beyond ``tolerance_ns``) returns ``None``, so a caller can wait
    for a pose that has not arrived yet instead of extrapolating. A sample older than the newest by at most
    ``reorder_ns`` (poses arriving out of order: several publishers, a network) is put in its place; time
    going further back (a replayed bag looping) starts a new history. A sample at a stamp already held
    replaces it.
    """

    def __init__(self, max_samples: int = 2000, tolerance_ns: int = 50_000_000, reorder_ns: int = 2_000_000_000):
        self._stamps: deque[int] = deque(maxlen=max_samples)
        self._poses: deque[np.ndarray] = deque(maxlen=max_samples)
        self.tolerance_ns = int(tolerance_ns)
        self.reorder_ns = int(reorder_ns)

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
        stamp_ns = int(stamp_ns)
        if self._stamps and stamp_ns < self._stamps[-1] - self.reorder_ns:
            self.clear()  # time went back further than reordering explains: a replayed bag looping
        index = bisect.bisect_left(self._stamps, stamp_ns)
        if index < len(self._stamps) and self._stamps[index] == stamp_ns:
            self._poses[index] = pose
            return
        if index == len(self._stamps):
            self._stamps.append(stamp_ns)
            self._poses.append(pose)
            return
        if len(self._stamps) == self._stamps.maxlen:
            if index == 0:
                return  # older than everything a full history holds
            self._stamps.popleft()
            self._poses.popleft()
            index -= 1
        self._stamps.insert(index, stamp_ns)
        self._poses.insert(index, pose)

    def lookup(self, stamp_ns: int) -> np.ndarray | None:
        if not self._stamps:
            return None
        try:
            return interpolate_pose(self._stamps, self._poses, stamp_ns, self.tolerance_ns)
        except StampOutOfRange:
            return None
