"""Keyframes: the 3-5 views a reconstruction is built from, how they are chosen and buffered."""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np

from showroom_ros.camera import CameraIntrinsics


@dataclass
class Keyframe:
    """One camera view as the core sees it, whatever it came from (ROS topic, folder, bag).

    ``pose`` is camera-to-map (4x4, optical frame: x right, y down, z forward) when known.
    ``depth`` is float32 metres with NaN where invalid. When ``depth_intrinsics`` is None the
    depth image is registered to the colour image (scaled to its own size if they differ).
    """

    image: np.ndarray  # (H, W, 3) uint8 RGB
    stamp_ns: int = 0
    intrinsics: CameraIntrinsics | None = None
    depth: np.ndarray | None = None  # (h, w) float32 metres, NaN = invalid
    depth_intrinsics: CameraIntrinsics | None = None
    pose: np.ndarray | None = None  # (4, 4) float64 camera-to-map
    camera_id: int = 0
    frame_id: str = ""
    metadata: dict[str, str] = field(default_factory=dict)

    def __post_init__(self) -> None:
        if self.image.ndim != 3 or self.image.shape[2] != 3 or self.image.dtype != np.uint8:
            raise ValueError(
                f"keyframe image must be (H, W, 3) uint8 RGB, got {self.image.shape} {self.image.dtype}"
            )
        if self.image.shape[0] == 0 or self.image.shape[1] == 0:
            raise ValueError("keyframe image is empty")
        if self.depth is not None and (self.depth.ndim != 2 or self.depth.dtype != np.float32):
            raise ValueError(f"depth must be (H, W) float32 metres, got {self.depth.shape} {self.depth.dtype}")
        if self.pose is not None:
            self.pose = np.asarray(self.pose, dtype=np.float64)
            if self.pose.shape != (4, 4) or not np.all(np.isfinite(self.pose)):
                raise ValueError("pose must be a finite 4x4 camera-to-map matrix")

    @property
    def height(self) -> int:
        return int(self.image.shape[0])

    @property
    def width(self) -> int:
        return int(self.image.shape[1])
