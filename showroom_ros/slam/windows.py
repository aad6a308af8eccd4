"""Camera-only poses: learned windows (Fast3R or the student) chained into one pose graph.

Consecutive windows share ``window_overlap`` keyframes. Each window gives the relative poses of its
cameras in its own frame; the keyframes it shares with the chain say where that frame is in the map:

* **SE(3)** when the window is metric (it had sensor depth): its translations are used as they are;
* **Sim(3)** when it is not (photos only: the scale of each window is arbitrary): the scale is the
  median ratio of camera-centre distances between the shared keyframes, in the map and in the window.
  That needs two shared keyframes with a baseline (``window_overlap`` >= 2); with fewer, the last
  scale is kept and said. The first window sets the map's scale (monocular: arbitrary, ``metric`` false).

The scaled relative poses between a window's consecutive keyframes go into the pose graph as ``window``
edges (pose_graph.py), so overlapping windows pull each shared keyframe toward one consistent pose.
"""

from __future__ import annotations

import itertools
from dataclasses import dataclass, field

import numpy as np

from showroom_ros.geometry.similarity import Similarity
from showroom_ros.slam.config import SlamConfig
from showroom_ros.slam.gravity import level_pose
from showroom_ros.slam.pose_graph import PoseGraph

MIN_BASELINE = 1e-6  # window units: shared cameras closer than this give no scale


class WindowChainError(ValueError):
    """A window that cannot be chained (no keyframe shared with the chain, bad poses)."""


@dataclass
class WindowPlacement:
    """Where a window landed: ``map_from_window`` (a similarity: scale * R, t) and every keyframe's pose."""

    scale: float
    map_from_window: Similarity  # window-frame points -> map points
    poses: dict[int, np.ndarray]  # stamp -> camera-to-map, after the graph's optimisation
    notes: list[str] = field(default_factory=list)


def _scaled(pose: np.ndarray, scale: float) -> np.ndarray:
    out = np.array(pose, dtype=np.float64)
    out[:3, 3] *= scale
    return out


def overlap_scale(map_poses: list[np.ndarray], window_poses: list[np.ndarray]) -> float | None:
    """Median ratio of camera-centre distances (map / window) over pairs of shared keyframes."""
    ratios = []
    for (a_map, a_win), (b_map, b_win) in itertools.combinations(zip(map_poses, window_poses, strict=True), 2):
        in_window = float(np.linalg.norm(a_win[:3, 3] - b_win[:3, 3]))
        if in_window > MIN_BASELINE:
            ratios.append(float(np.linalg.norm(a_map[:3, 3] - b_map[:3, 3])) / in_window)
    return float(np.median(ratios)) if ratios else None


class WindowChain:
    """Keyframe stamps -> map poses, from learned windows only."""

    def __init__(self, config: SlamConfig | None = None) -> None:
        self.config = config or SlamConfig()
        self.graph = PoseGraph(self.config)
        self.keys: dict[int, int] = {}  # stamp -> graph key
        self.scale = 1.0
        self.windows = 0

    def __len__(self) -> int:
        return len(self.keys)

    def add_window(self, stamps: list[int], camera_poses: np.ndarray, metric: bool) -> WindowPlacement:
        """Chain one window: ``camera_poses`` (K, 4, 4) camera-to-window, one per stamp, in order."""
        poses = np.asarray(camera_poses, dtype=np.float64)
        if poses.shape != (len(stamps), 4, 4) or not np.all(np.isfinite(poses)):
            raise WindowChainError(f"a window needs one finite 4x4 pose per keyframe, got {poses.shape}")
        if len(set(stamps)) != len(stamps):
            raise WindowChainError("a window lists a keyframe twice")
        notes: list[str] = []
        shared = [i for i, stamp in enumerate(stamps) if stamp in self.keys]
        if not self.keys:
            scale = 1.0
            # The first camera is level (slam_gravity first_camera), as for RGB-D.
            anchor = level_pose(self.config.camera_height) if self.config.gravity != "none" else np.eye(4)
            map_from_window_rigid = anchor @ np.linalg.inv(poses[0])
        else:
            if not shared:
                raise WindowChainError(
                    "this window shares no keyframe with the chain (window_overlap must be >= 1, and >= 2 without "
                    "depth): it cannot be placed in the map"
                )
            if metric:
                scale = 1.0
            else:
                found = overlap_scale(
                    [self.graph.pose(self.keys[stamps[i]]) for i in shared], [poses[i] for i in shared]
                )
                if found is None:
                    scale = self.scale
                    notes.append(
                        f"the window shares {len(shared)} keyframe(s) without a baseline: its scale is unknown, "
                        f"the previous one ({scale:.3g}) is kept"
                    )
                else:
                    scale = found
            first = shared[0]
            map_from_window_rigid = self.graph.pose(self.keys[stamps[first]]) @ np.linalg.inv(
                _scaled(poses[first], scale)
            )
        self.scale = scale
        scaled = [_scaled(pose, scale) for pose in poses]
        for stamp, pose in zip(stamps, scaled, strict=True):
            if stamp not in self.keys:
                key = len(self.keys)
                self.keys[stamp] = key
                self.graph.add_node(key, map_from_window_rigid @ pose)
        for (a, pose_a), (b, pose_b) in itertools.pairwise(zip(stamps, scaled, strict=True)):
            self.graph.add_edge(self.keys[a], self.keys[b], np.linalg.inv(pose_a) @ pose_b, "window")
        self.graph.optimise(extra_iterations=1)
        self.windows += 1
        map_from_window = Similarity.from_rigid(map_from_window_rigid, scale)
        return WindowPlacement(scale, map_from_window, {s: self.graph.pose(self.keys[s]) for s in stamps}, notes)

    def trajectory(self) -> list[tuple[int, np.ndarray]]:
        return sorted((stamp, self.graph.pose(key)) for stamp, key in self.keys.items())
