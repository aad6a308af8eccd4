"""``pose_source: slam`` with a colour camera only: each learned window is placed in the map by the
keyframes it shares with the previous ones (slam/windows.py: SE(3) with depth, Sim(3) without), its
result is moved into ``map_frame`` before it is published, and ``~/trajectory`` carries every keyframe.

Without depth there is no frame-rate tracking: a keyframe has a pose once its window is reconstructed
and chained. The map's scale is the first window's (photos alone have none): ``metric`` stays false, so
the TSDF map refuses these results and ``~/map`` merges their clouds (docs/slam.md).
"""

from __future__ import annotations

import threading
from collections.abc import Callable
from typing import Any

import numpy as np
from nav_msgs.msg import Path as PathMsg

from showroom_ros.capture.keyframes import Keyframe
from showroom_ros.reconstruction.registration import transform_reconstruction
from showroom_ros.reconstruction.result import Reconstruction
from showroom_ros.ros import conversions as conv
from showroom_ros.ros.qos import LATCHED
from showroom_ros.slam.config import SlamConfig
from showroom_ros.slam.windows import WindowChain, WindowChainError


class WindowPoses:
    """The chain of windows, a PoseSource for the collector, and the trajectory's publisher."""

    def __init__(self, config: SlamConfig, publisher: Callable[..., Any], map_frame: str, logger: Callable[[], Any]):
        self.config = config
        self.map_frame = map_frame
        self._logger = logger
        self._lock = threading.Lock()
        self.chain = WindowChain(config)
        self.trajectory_pub = publisher(PathMsg, "~/trajectory", LATCHED)

    # --- PoseSource --------------------------------------------------------------------------------
    def attach(self, input_node: Any) -> None:
        pass

    def lookup(self, camera: int, stamp_ns: int, frame_id: str) -> np.ndarray | None:
        with self._lock:
            key = self.chain.keys.get(int(stamp_ns))
            return None if key is None else self.chain.graph.pose(key).copy()

    def clear(self) -> None:
        pass

    def reset(self) -> None:
        """A new, empty chain (``~/clear_map``): the next window starts a new map frame, as RGB-D SLAM's
        reset does; ``~/trajectory`` is emptied."""
        with self._lock:
            self.chain = WindowChain(self.config)
        self._publish([], 0)

    # --- on the worker, after a window's reconstruction -------------------------------------------
    def place(self, result: Reconstruction, keyframes: list[Keyframe]) -> Reconstruction:
        """The result moved into the map by the chain; unchanged when it is in map_frame already or
        cannot be chained (said in its notes)."""
        if result.frame_id == self.map_frame or len(result.camera_poses) != len(keyframes):
            return result
        stamps = [k.stamp_ns for k in keyframes]
        try:
            with self._lock:
                placement = self.chain.add_window(stamps, result.camera_poses, bool(result.metric))
                trajectory = self.chain.trajectory()
        except WindowChainError as error:
            result.notes.append(f"not placed in {self.map_frame}: {error}")
            return result
        placed = transform_reconstruction(result, placement.map_from_window, self.map_frame, result.metric)
        placed.camera_poses = np.stack([placement.poses[s] for s in stamps])
        placed.notes.extend(placement.notes)
        for keyframe in keyframes:
            keyframe.pose = placement.poses[keyframe.stamp_ns]
        self._logger().info(
            f"slam: window {self.chain.windows} placed in {self.map_frame} (scale {placement.scale:.3g}, "
            f"{len(trajectory)} keyframes chained)"
        )
        self._publish(trajectory, max(stamps))
        return placed

    def _publish(self, trajectory: list[tuple[int, np.ndarray]], stamp_ns: int) -> None:
        self.trajectory_pub.publish(conv.trajectory_to_path(self.map_frame, trajectory, stamp_ns))
