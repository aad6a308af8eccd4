"""A ROS-free TF tree: the transforms of a recording (``/tf`` + ``/tf_static``), queried at any stamp.

tf2_ros is not installable without a ROS 2 install, yet reading a bag's camera poses needs its rule:
every frame has one parent, a lookup composes the edges up to the common ancestor, each interpolated at
the stamp by :func:`showroom_ros.geometry.poses.interpolate_pose` (the node's one rule).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field

import numpy as np

from showroom_ros.geometry.poses import StampOutOfRange, interpolate_pose, rigid_pose


class TransformError(LookupError):
    """No transform between two frames at a stamp (not connected, or outside the recorded time)."""


def strip_frame(frame: str) -> str:
    """A frame id as tf2 compares it: no surrounding blanks, no leading slash."""
    return frame.strip().lstrip("/")


@dataclass
class _Edge:
    """Transforms of one child frame in its parent frame (``T_parent_child``) over time.

    The tree's storage rules live here (a re-published static transform replaces the old one; samples
    may arrive out of order and are sorted once); the value at a stamp is :func:`interpolate_pose`'s.
    """

    parent: str
    static: bool
    stamps: list[int] = field(default_factory=list)
    poses: list[np.ndarray] = field(default_factory=list)
    _sorted: bool = True

    def add(self, stamp_ns: int, pose: np.ndarray) -> None:
        if self.static:
            self.stamps, self.poses = [stamp_ns], [pose]
            return
        if self.stamps and stamp_ns < self.stamps[-1]:
            self._sorted = False
        self.stamps.append(stamp_ns)
        self.poses.append(pose)

    def at(self, stamp_ns: int, tolerance_ns: int, child: str) -> np.ndarray:
        """``T_parent_child`` at the stamp (a static edge holds at every stamp)."""
        if self.static:
            return self.poses[0].copy()
        if not self._sorted:
            order = sorted(range(len(self.stamps)), key=self.stamps.__getitem__)
            self.stamps = [self.stamps[i] for i in order]
            self.poses = [self.poses[i] for i in order]
            self._sorted = True
        try:
            return interpolate_pose(self.stamps, self.poses, stamp_ns, tolerance_ns)
        except StampOutOfRange as error:
            raise TransformError(
                f"no transform {self.parent} -> {child} at {stamp_ns / 1e9:.3f} s: it is {error.side} one "
                f"(recorded from {error.first_ns / 1e9:.3f} s to {error.last_ns / 1e9:.3f} s)"
            ) from None


class TransformBuffer:
    """The transform tree of a recording (``/tf`` + ``/tf_static``), queried at any recorded stamp.

    Like tf2, every frame has one parent; a lookup walks both frames up to their common ancestor and
    composes the edges, each interpolated at the stamp by :func:`interpolate_pose` (linear translation,
    slerp rotation). It does not extrapolate: a stamp outside an edge's recorded span is an error unless
    it is within ``tolerance_ns`` of the nearest sample. Built once from a whole bag, so unlike a live buffer it
    can interpolate at an image stamp with samples recorded after the image.
    """

    def __init__(self, tolerance_ns: int = 50_000_000) -> None:
        self.tolerance_ns = int(tolerance_ns)
        self._edges: dict[str, _Edge] = {}
        self.invalid_transforms = 0

    def __len__(self) -> int:
        return len(self._edges)

    def add(
        self,
        parent: str,
        child: str,
        stamp_ns: int,
        translation: Sequence[float],
        quaternion_xyzw: Sequence[float],
        static: bool = False,
    ) -> bool:
        """Record ``T_parent_child``; returns False (and counts it) for a non-finite or zero rotation."""
        parent, child = strip_frame(parent), strip_frame(child)
        t = np.asarray(translation, dtype=np.float64).reshape(3)
        q = np.asarray(quaternion_xyzw, dtype=np.float64).reshape(4)
        norm = float(np.linalg.norm(q))
        if not parent or not child or parent == child or not np.all(np.isfinite(t)) or not (norm > 1e-6):
            self.invalid_transforms += 1
            return False
        edge = self._edges.get(child)
        if edge is None or edge.parent != parent or edge.static != static:
            edge = self._edges[child] = _Edge(parent, static)
        edge.add(int(stamp_ns), rigid_pose(t, q / norm))
        return True

    @property
    def frames(self) -> set[str]:
        return set(self._edges) | {edge.parent for edge in self._edges.values()}

    def _chain(self, frame: str) -> list[str]:
        chain = [frame]
        while chain[-1] in self._edges:
            parent = self._edges[chain[-1]].parent
            if parent in chain:  # a loop in a malformed recording: stop rather than spin
                break
            chain.append(parent)
        return chain

    def root(self, frame: str) -> str:
        """The top of ``frame``'s tree (``map`` or ``odom`` on most robots)."""
        return self._chain(strip_frame(frame))[-1]

    def lookup(self, target_frame: str, source_frame: str, stamp_ns: int) -> np.ndarray:
        """``T_target_source`` (4x4): maps points in ``source_frame`` into ``target_frame`` at the stamp."""
        target, source = strip_frame(target_frame), strip_frame(source_frame)
        known = self.frames
        for name in (target, source):
            if name not in known:
                listed = ", ".join(sorted(known)[:12]) or "none"
                raise TransformError(f"frame '{name}' is not in the TF tree (frames: {listed})")
        if target == source:
            return np.eye(4)
        source_chain, target_chain = self._chain(source), self._chain(target)
        common = next((frame for frame in source_chain if frame in set(target_chain)), None)
        if common is None:
            raise TransformError(
                f"frames '{target}' and '{source}' are not connected in TF "
                f"(their trees have roots '{target_chain[-1]}' and '{source_chain[-1]}')"
            )
        return np.linalg.inv(self._to_ancestor(target_chain, common, stamp_ns)) @ self._to_ancestor(
            source_chain, common, stamp_ns
        )

    def _to_ancestor(self, chain: list[str], ancestor: str, stamp_ns: int) -> np.ndarray:
        """``T_ancestor_frame`` for ``frame = chain[0]``."""
        result = np.eye(4)
        for child in chain[: chain.index(ancestor)]:
            edge = self._edges[child]
            result = edge.at(stamp_ns, self.tolerance_ns, child) @ result
        return result
