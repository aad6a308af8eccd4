"""The node's robot map: the TSDF map (``volumetric_map``) or merged clouds, and its save/load/clear.

The maps are touched only on the scheduler's worker thread (integration, save, load and clear are all
jobs there), so they need no lock of their own; what ~/status reads about them (the last update and a
note when a result stayed out) is kept under this part's lock. Outputs go through
:class:`showroom_ros.ros.map_outputs.MapOutputs`, stamped with the newest keyframe the map includes.
"""

from __future__ import annotations

import threading
from collections.abc import Callable
from pathlib import Path
from typing import Any

from showroom_ros.apps.map_session import load_map, save_map
from showroom_ros.capture.keyframes import Keyframe
from showroom_ros.io.file_names import map_files
from showroom_ros.mapping.point_map import AccumulatedMap, MapAlignmentError, MapConfig
from showroom_ros.mapping.robot_map import MapInputError, RobotMap, RobotMapConfig
from showroom_ros.reconstruction.result import Reconstruction
from showroom_ros.ros import conversions as conv
from showroom_ros.ros.map_outputs import MapOutputs
from showroom_ros.ros.result_outputs import newest_stamp_ns


class RobotMapping:
    """Integrates results into the map and answers the map services' work (run on the worker)."""

    def __init__(
        self,
        robot_map: RobotMapConfig | None,
        point_map: MapConfig,
        outputs: MapOutputs,
        output_dir: Path,
        accumulate: bool,
        logger: Callable[[], Any],
    ) -> None:
        self.config = robot_map
        self.robot_map = RobotMap(robot_map) if robot_map is not None else None
        self.point_map = AccumulatedMap(point_map)
        self.outputs = outputs
        self.output_dir = output_dir
        self.accumulate = accumulate
        self._logger = logger
        self._lock = threading.Lock()
        self._note = ""
        self._summary = "empty"
        self.stamp_ns = 0  # the newest keyframe the map includes

    @property
    def frame_id(self) -> str:
        return self.config.frame_id if self.config is not None else "map"

    def snapshot(self) -> tuple[str, str]:
        """(note for ~/status, last update for /diagnostics)."""
        with self._lock:
            return self._note, self._summary

    def _say(self, note: str | None = None, summary: str | None = None) -> None:
        with self._lock:
            if note is not None:
                self._note = note
            if summary is not None:
                self._summary = summary

    # --- integration ------------------------------------------------------------------------------
    def update(self, result: Reconstruction, keyframes: list[Keyframe]) -> None:
        """Integrate into the robot map when the result is in map_frame at metric scale; else merge clouds."""
        if self.robot_map is None:
            self._merge(result, keyframes)
            return
        try:
            self.robot_map.check(result)  # not metric, another frame, or sparse: why, in one line
        except MapInputError as error:
            note = f"not in the robot map (~/map_mesh, ~/occupancy): {error}"
            self._say(note=note)
            self._logger().warning(note)
            if self.robot_map.block_count == 0:  # ~/map shows merged clouds until the robot map has a surface
                self._merge(result, keyframes)
            return
        update = self.robot_map.integrate(result, keyframes)
        self.stamp_ns = max(self.stamp_ns, newest_stamp_ns(keyframes))
        self._say(
            note="" if update.occupancy is not None else f"no occupancy grid: {update.occupancy_reason}",
            summary=update.summary,
        )
        for message in update.messages:
            self._logger().info(f"map: {message}")
        self._logger().info(f"map: {update.summary}")
        self.outputs.publish(
            self.frame_id,
            update.chunks,
            self.robot_map.surface() if update.integrated else None,
            update.occupancy,
            stamp_ns=self.stamp_ns,
        )

    def _merge(self, result: Reconstruction, keyframes: list[Keyframe]) -> None:
        if not self.accumulate:
            return
        try:
            merged = self.point_map.merge(result)
        except (MapAlignmentError, ValueError) as error:
            self._logger().warning(f"reconstruction not added to ~/map: {error}")
            return
        self.stamp_ns = max(self.stamp_ns, newest_stamp_ns(keyframes))
        self._logger().info(f"map: {self.point_map.last_report.summary()}")
        header = self.outputs.header(merged.frame_id, self.stamp_ns)
        self.outputs.cloud_pub.publish(conv.points_to_cloud_serialized(merged.points, merged.colors, header))

    # --- services' work ---------------------------------------------------------------------------
    def _required(self) -> RobotMap:
        if self.robot_map is None:
            raise ValueError("volumetric_map is off: there is no robot map")
        return self.robot_map

    def save(self, name: str) -> tuple[str, list[str]]:
        robot_map = self._required()
        if robot_map.block_count == 0:
            raise ValueError("nothing to save yet: the map is empty")
        files = save_map(robot_map, self.output_dir, name)
        message = f"saved the map ({robot_map.block_count} blocks) in {len(files)} files under {self.output_dir}"
        return message, [str(path) for path in files.values()]

    def load(self, name: str) -> tuple[str, int]:
        self._required()
        assert self.config is not None
        loaded, update = load_map(map_files(self.output_dir, name)["volume"], self.config)
        self.robot_map = loaded
        self.outputs.publish(
            self.frame_id,
            self.outputs.replace_all(update.chunks),
            loaded.surface(),
            update.occupancy,
            stamp_ns=self.stamp_ns,
        )
        self._say(
            note="" if update.occupancy is not None else f"no occupancy grid: {update.occupancy_reason}",
            summary=f"loaded '{name}': {update.summary}",
        )
        return (
            f"loaded map '{name}': {loaded.block_count} blocks, {len(update.chunks.changed)} chunks",
            loaded.block_count,
        )

    def clear(self) -> str:
        self._required().clear()
        self.point_map.clear()
        self.outputs.clear(self.frame_id)
        self._say(note="", summary="empty (cleared)")
        return "map cleared (~/map, ~/map_mesh, ~/occupancy)"

    def free(self) -> None:
        """Drop the map's memory (lifecycle cleanup); a new, empty map is made at the next configure."""
        self.robot_map = None
        self.point_map.clear()
