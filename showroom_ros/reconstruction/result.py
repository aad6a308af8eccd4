"""The result of a reconstruction: a coloured cloud, the cameras, and optionally a surface."""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np

from showroom_ros.geometry.camera import CameraIntrinsics


@dataclass
class TriangleMesh:
    """A triangle mesh with per-vertex colours, in the reconstruction's frame."""

    vertices: np.ndarray  # (V, 3) float32
    triangles: np.ndarray  # (T, 3) int32
    vertex_colors: np.ndarray  # (V, 3) uint8

    @property
    def num_triangles(self) -> int:
        return len(self.triangles)


@dataclass
class Reconstruction:
    """Everything a backend produced, in ``frame_id`` (``map`` when registered).

    ``metric`` says whether units are metres (depth or known poses fixed the scale).
    ``timings`` holds seconds per stage, in the order the stages ran.
    ``notes`` are human-readable caveats for the operator (the node shows them in ``~/status``), e.g.
    that the result is sparse and what would make it dense.
    """

    points: np.ndarray  # (N, 3) float32
    colors: np.ndarray  # (N, 3) uint8
    confidence: np.ndarray  # (N,) float32, higher is better
    camera_poses: np.ndarray  # (K, 4, 4) float64 camera-to-frame
    intrinsics: list[CameraIntrinsics]
    frame_id: str = "map"
    metric: bool = True
    backend: str = ""
    mesh: TriangleMesh | None = None
    timings: dict[str, float] = field(default_factory=dict)
    notes: list[str] = field(default_factory=list)
    sparse: bool = False  # a few scattered points (SfM), not a surface: no mesh, no volumetric map

    def __post_init__(self) -> None:
        n = len(self.points)
        if self.points.shape != (n, 3) or self.colors.shape != (n, 3) or self.confidence.shape != (n,):
            raise ValueError(
                f"points {self.points.shape}, colors {self.colors.shape} and confidence "
                f"{self.confidence.shape} must describe the same N points"
            )

    @property
    def num_points(self) -> int:
        return len(self.points)
