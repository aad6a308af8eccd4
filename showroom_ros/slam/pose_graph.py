"""The keyframe pose graph: GTSAM's iSAM2 over Pose3 keyframes, odometry and local edges as Gaussians,
loop-closure edges under a Cauchy kernel so one wrong closure cannot bend the map.

Chosen by measurement (benchmarks/bench_slam_libraries.py, docs/slam.md): iSAM2 updates the graph in
about a millisecond per keyframe, and re-solves a closure without a batch solve from scratch.
"""

from __future__ import annotations

import time
from dataclasses import dataclass

import gtsam
import numpy as np

from showroom_ros.slam.config import SlamConfig

EDGE_KINDS = ("odometry", "local", "closure", "window")


@dataclass
class Edge:
    first: int
    second: int
    T_first_second: np.ndarray
    kind: str


def _sigmas(metres: float, degrees: float) -> np.ndarray:
    """GTSAM's Pose3 tangent order is (rotation, translation)."""
    return np.array([np.radians(degrees)] * 3 + [metres] * 3)


class PoseGraph:
    """Keyframe ids -> camera-to-map poses, re-solved as edges arrive."""

    def __init__(self, config: SlamConfig) -> None:
        self.config = config
        self.edges: list[Edge] = []
        self.last_optimisation_ms = 0.0
        self._reset()

    def _reset(self) -> None:
        params = gtsam.ISAM2Params()
        params.setRelinearizeThreshold(0.01)
        params.relinearizeSkip = 1
        self._isam = gtsam.ISAM2(params)
        self._pending_graph = gtsam.NonlinearFactorGraph()
        self._pending_values = gtsam.Values()
        self._estimate: dict[int, np.ndarray] = {}

    def __len__(self) -> int:
        return len(self._estimate)

    def __contains__(self, key: int) -> bool:
        return key in self._estimate

    def _noise(self, kind: str) -> gtsam.noiseModel.Base:
        c = self.config
        if kind in ("odometry", "local"):
            return gtsam.noiseModel.Diagonal.Sigmas(_sigmas(c.odometry_sigma_m, c.odometry_sigma_deg))
        base = gtsam.noiseModel.Diagonal.Sigmas(_sigmas(c.closure_sigma_m, c.closure_sigma_deg))
        return gtsam.noiseModel.Robust.Create(gtsam.noiseModel.mEstimator.Cauchy.Create(c.robust_kernel), base)

    def add_node(self, key: int, pose: np.ndarray) -> None:
        """A keyframe with its first estimate; the first node is held fixed (it defines the map frame)."""
        if key in self._estimate:
            raise ValueError(f"keyframe {key} is already in the graph")
        value = gtsam.Pose3(np.asarray(pose, dtype=np.float64))
        if not self._estimate:
            self._pending_graph.add(gtsam.PriorFactorPose3(key, value, gtsam.noiseModel.Constrained.All(6)))
        self._pending_values.insert(key, value)
        self._estimate[key] = np.asarray(pose, dtype=np.float64).copy()

    def add_edge(self, first: int, second: int, T_first_second: np.ndarray, kind: str) -> None:
        if kind not in EDGE_KINDS:
            raise ValueError(f"edge kind must be one of {EDGE_KINDS}, got {kind!r}")
        for key in (first, second):
            if key not in self._estimate:
                raise KeyError(f"keyframe {key} is not in the graph")
        T = np.asarray(T_first_second, dtype=np.float64)
        self._pending_graph.add(gtsam.BetweenFactorPose3(first, second, gtsam.Pose3(T), self._noise(kind)))
        self.edges.append(Edge(first, second, T.copy(), kind))

    def optimise(self, extra_iterations: int = 0) -> float:
        """Fold in what was added and re-solve; returns the time it took (ms)."""
        start = time.perf_counter()
        self._isam.update(self._pending_graph, self._pending_values)
        for _ in range(extra_iterations):  # a closure moves many keyframes: relinearise a few more times
            self._isam.update()
        self._pending_graph = gtsam.NonlinearFactorGraph()
        self._pending_values = gtsam.Values()
        result = self._isam.calculateEstimate()
        for key in self._estimate:
            self._estimate[key] = result.atPose3(key).matrix()
        self.last_optimisation_ms = (time.perf_counter() - start) * 1e3
        return self.last_optimisation_ms

    def pose(self, key: int) -> np.ndarray:
        return self._estimate[key]

    def poses(self) -> dict[int, np.ndarray]:
        return {key: pose.copy() for key, pose in self._estimate.items()}

    def residual(self, edge: Edge) -> tuple[float, float]:
        """(metres, degrees) between an edge and the current estimate: how much the graph disagrees."""
        predicted = np.linalg.inv(self._estimate[edge.first]) @ self._estimate[edge.second]
        error = np.linalg.inv(edge.T_first_second) @ predicted
        angle = np.degrees(np.arccos(np.clip((np.trace(error[:3, :3]) - 1) / 2, -1.0, 1.0)))
        return float(np.linalg.norm(error[:3, 3])), float(angle)

    # --- persistence ------------------------------------------------------------------------------
    def to_arrays(self) -> dict[str, np.ndarray]:
        keys = np.array(sorted(self._estimate), dtype=np.int64)
        return {
            "node_keys": keys,
            "node_poses": np.stack([self._estimate[k] for k in keys]) if len(keys) else np.zeros((0, 4, 4)),
            "edge_keys": np.array([[e.first, e.second] for e in self.edges], dtype=np.int64).reshape(-1, 2),
            "edge_poses": np.stack([e.T_first_second for e in self.edges]) if self.edges else np.zeros((0, 4, 4)),
            "edge_kinds": np.array([EDGE_KINDS.index(e.kind) for e in self.edges], dtype=np.int64),
        }

    @classmethod
    def from_arrays(cls, config: SlamConfig, arrays: dict[str, np.ndarray]) -> PoseGraph:
        graph = cls(config)
        for key, pose in zip(arrays["node_keys"], arrays["node_poses"], strict=True):
            graph.add_node(int(key), pose)
        for (first, second), pose, kind in zip(
            arrays["edge_keys"], arrays["edge_poses"], arrays["edge_kinds"], strict=True
        ):
            graph.add_edge(int(first), int(second), pose, EDGE_KINDS[int(kind)])
        graph.optimise()
        return graph
