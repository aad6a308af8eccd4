"""The node's robot map on a thread of its own: keyframe-rate integration, window results, save/load/clear.

Two paths feed the map (docs/mapping.md):

* **keyframe rate**: every complete frame with sensor depth and a pose (at ``evaluation_rate_hz``,
  whatever the window selection decides; ``KeyframeCollector.map_sink``) is offered here
  (:meth:`RobotMapping.offer`, from the camera-input thread, never blocking) and fused on this part's
  thread; it never waits behind a window's reconstruction. The queue is bounded: when the camera
  outruns integration the oldest waiting keyframe is dropped (the newest wins), counted and said.
* **windows**: a window's result is handed over after it is published (:meth:`integrate_result`);
  keyframes it has that were fused already are skipped, the rest (results without sensor depth) are
  integrated with rendered depth, as before.

Meshing and the grid catch up at ``map_publish_rate_hz`` at most, and only when the map changed. Every
map output is stamped with the newest camera frame the map includes. The maps are only touched on this
thread; what ~/status reads is kept under this part's lock.
"""

from __future__ import annotations

import threading
import time
from collections import deque
from collections.abc import Callable
from concurrent.futures import Future
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from showroom_ros.apps.map_session import load_map, save_map
from showroom_ros.capture.keyframes import Keyframe
from showroom_ros.capture.newest_wins import NewestWins
from showroom_ros.io.file_names import map_files
from showroom_ros.mapping.point_map import AccumulatedMap, MapAlignmentError, MapConfig
from showroom_ros.mapping.robot_map import MapInputError, MapUpdate, RobotMap, RobotMapConfig
from showroom_ros.reconstruction.result import Reconstruction
from showroom_ros.ros import conversions as conv
from showroom_ros.ros.map_outputs import MapOutputs
from showroom_ros.ros.result_outputs import newest_stamp_ns

SUMMARY_EVERY_S = 30.0
"""The frame-rate path logs the map's summary (blocks, memory) at most this often."""


@dataclass(frozen=True)
class MapState:
    """What ~/status and /diagnostics say about the map (a consistent copy)."""

    note: str  # why a result stayed out of the map, or why there is no grid ('' when fine)
    summary: str  # the last update
    stamp_ns: int  # the newest camera frame in the map (0: none yet)
    integrated: int  # keyframes in the map
    waiting: int  # keyframes queued for keyframe-rate integration
    dropped: int  # keyframes dropped from that queue
    redundant: int  # frames not fused again: their view is in the map already


class RobotMapping:
    """Owns the robot map and the thread that changes it."""

    def __init__(
        self,
        robot_map: RobotMapConfig | None,
        point_map: MapConfig,
        outputs: MapOutputs,
        output_dir: Path,
        accumulate: bool,
        logger: Callable[[], Any],
        publish_rate_hz: float = 2.0,
        queue_size: int = 8,
    ) -> None:
        self.config = robot_map
        self.robot_map = RobotMap(robot_map) if robot_map is not None else None
        self.point_map = AccumulatedMap(point_map)
        self.outputs = outputs
        self.output_dir = output_dir
        self.accumulate = accumulate
        self._logger = logger
        self.publish_period_s = 1.0 / publish_rate_hz
        self.queue_size = max(1, int(queue_size))
        self._lock = threading.Lock()
        self._wake = threading.Condition(self._lock)
        self._keyframes: NewestWins[Keyframe] = NewestWins(self.queue_size)
        self._ops: deque[tuple[Callable[[], Any], Future]] = deque()
        self._note, self._summary = "", "empty"
        self._said_dropping = False
        self._closed = False
        self._busy = False
        self._published_at = 0.0
        self._logged_at = -1e9
        self.stamp_ns = 0  # the newest keyframe the map includes (this thread's)
        self.slam: Any = None  # the SLAM part (pose_source: slam): saved, loaded and cleared with the map
        self.windows: Any = None  # camera-only SLAM's window chain: cleared with the map, never saved
        self._rebuild_keyframes: list[Keyframe] | None = None
        self._thread = threading.Thread(target=self._run, name="showroom-map", daemon=True)
        self._thread.start()

    @property
    def frame_id(self) -> str:
        return self.config.frame_id if self.config is not None else "map"

    # --- what other threads call --------------------------------------------------------------------
    def offer(self, keyframe: Keyframe) -> None:
        """A keyframe for keyframe-rate integration (only with sensor depth and a pose, into the TSDF map).
        Never blocks; a full queue drops its oldest keyframe, counted in the status and said once."""
        if self.robot_map is None or keyframe.depth is None or keyframe.pose is None:
            return
        say = False
        with self._wake:
            if self._closed:
                return
            if self._keyframes.put(keyframe) is not None:
                say, self._said_dropping = not self._said_dropping, True
            self._wake.notify()
        if say:
            self._logger().warning(
                f"map: keyframes arrive faster than they are integrated; the oldest waiting one is dropped (queue of "
                f"{self.queue_size}, the newest wins). A dropped keyframe is not in the map unless a window brings "
                "it; the count is in ~/status (map_keyframes_dropped) and /diagnostics. Said once."
            )

    def submit(self, work: Callable[[], Any]) -> Future:
        """Run ``work`` on the map's thread, before the keyframes still waiting; the future has its result."""
        future: Future = Future()
        with self._wake:
            if self._closed:
                future.set_exception(RuntimeError("the map is stopping"))
                return future
            self._ops.append((work, future))
            self._wake.notify()
        return future

    def integrate_result(self, result: Reconstruction, keyframes: list[Keyframe]) -> Future:
        """A window's result, integrated on the map's thread (the window does not wait for it)."""
        return self.submit(lambda: self._update(result, keyframes))

    def rebuild(self, keyframes: list[Keyframe]) -> None:
        """After a loop closure: the TSDF again from these keyframes at their corrected poses, on this
        part's thread. Requests that arrive while one waits replace its keyframes (the newest poses win)."""
        with self._wake:
            queue_one = self._rebuild_keyframes is None
            self._rebuild_keyframes = keyframes
        if queue_one:
            self.submit(self._rebuild)

    def snapshot(self) -> MapState:
        with self._lock:
            robot_map = self.robot_map
            integrated = robot_map.keyframe_count if robot_map is not None else 0
            redundant = robot_map.redundant_count if robot_map is not None else 0
            waiting, dropped = len(self._keyframes), self._keyframes.dropped
            return MapState(self._note, self._summary, self.stamp_ns, integrated, waiting, dropped, redundant)

    def idle(self) -> bool:
        """Nothing queued or running (for tests and deactivation)."""
        with self._lock:
            return not (self._ops or self._keyframes or self._busy)

    def stop(self, timeout_s: float = 1.0) -> bool:
        """Stop taking work; queued work is cancelled; True when the thread ended within ``timeout_s``."""
        with self._wake:
            self._closed = True
            ops, self._ops = list(self._ops), deque()
            self._keyframes.clear()
            self._wake.notify()
        for _, future in ops:
            future.cancel()
        self._thread.join(timeout_s)
        return not self._thread.is_alive()

    # --- the map's thread ---------------------------------------------------------------------------
    def _say(self, note: str | None = None, summary: str | None = None) -> None:
        with self._lock:
            if note is not None:
                self._note = note
            if summary is not None:
                self._summary = summary

    def _run(self) -> None:
        while True:
            with self._wake:
                while not (self._closed or self._ops or self._keyframes or self._refresh_due()):
                    pending = self.robot_map is not None and self.robot_map.pending
                    self._wake.wait(self._until_due() if pending else None)
                if self._closed:
                    return
                op = self._ops.popleft() if self._ops else None
                batch: list[Keyframe] = []
                if op is None:  # services first; then every keyframe waiting, in one go
                    batch = self._keyframes.drain()
                self._busy = True
            try:
                if op is not None:
                    work, future = op
                    if future.set_running_or_notify_cancel():
                        try:
                            future.set_result(work())
                        except Exception as error:  # answered to the caller (a service says why)
                            future.set_exception(error)
                elif batch:
                    self._fuse(batch)
                if self._refresh_due():
                    self._refresh()
            except Exception as error:  # never let the map's thread die: say it (log and status) and go on
                self._logger().error(f"map: {type(error).__name__}: {error}")
                self._say(note=f"map: {type(error).__name__}: {error}")
            finally:
                with self._lock:
                    self._busy = False

    def _until_due(self) -> float:
        return max(0.0, self._published_at + self.publish_period_s - time.monotonic())

    def _refresh_due(self) -> bool:
        return self.robot_map is not None and self.robot_map.pending > 0 and self._until_due() == 0.0

    def _fuse(self, keyframes: list[Keyframe]) -> None:
        assert self.robot_map is not None
        update = self.robot_map.fuse_keyframes(keyframes)
        for message in update.messages:
            self._logger().info(f"map: {message}")
        if update.integrated:
            self.stamp_ns = max(self.stamp_ns, max(keyframes[i].stamp_ns for i in update.integrated))

    def _refresh(self) -> None:
        """Mesh what was fused since the last refresh, rebuild the grid, publish (changed chunks only)."""
        assert self.robot_map is not None
        self._publish(self.robot_map.refresh())

    def _publish(self, update: MapUpdate) -> None:
        assert self.robot_map is not None
        self._published_at = time.monotonic()
        if self._published_at - self._logged_at >= SUMMARY_EVERY_S:  # the map's size in the log, not 2 lines/s
            self._logged_at = self._published_at
            self._logger().info(f"map: {update.summary}")
        self._say(
            note="" if update.occupancy is not None else f"no occupancy grid: {update.occupancy_reason}",
            summary=update.summary,
        )
        changed = bool(update.chunks.changed or update.chunks.removed)
        self.outputs.publish(
            self.frame_id,
            update.chunks,
            self.robot_map.surface() if changed else None,
            update.occupancy if changed else None,
            stamp_ns=self.stamp_ns,
        )
        self.robot_map.reserve_ahead()  # grow the hash map now, not inside the next frame's integration

    def _rebuild(self, keyframes: list[Keyframe] | None = None) -> None:
        with self._lock:
            waiting, self._rebuild_keyframes = self._rebuild_keyframes, None
        keyframes = keyframes or waiting
        if not keyframes or self.robot_map is None:
            return
        started = time.monotonic()
        with self._lock:
            self._keyframes.clear()  # tracked with the poses before the closure
        self.robot_map.clear()
        self.robot_map.fuse_keyframes(keyframes)
        update = self.robot_map.refresh()
        self.stamp_ns = max(k.stamp_ns for k in keyframes)  # the newest frame the rebuilt map includes
        self._published_at = time.monotonic()
        self.outputs.publish(
            self.frame_id,
            self.outputs.replace_all(update.chunks),
            self.robot_map.surface(),
            update.occupancy,
            stamp_ns=self.stamp_ns,
        )
        seconds = time.monotonic() - started
        self._logger().info(f"map: rebuilt from {len(keyframes)} keyframes after a loop closure in {seconds:.1f} s")
        self._say(summary=f"rebuilt after a loop closure: {update.summary}")

    def _update(self, result: Reconstruction, keyframes: list[Keyframe]) -> None:
        """A window's result into the robot map when it is in map_frame at metric scale; else merged clouds."""
        if self.slam is not None and self.robot_map is not None:
            # pose_source slam: the map takes tracked frames only (a lost frame must never reach it, and a
            # window's keyframes may have been buffered before tracking gave them a pose).
            return
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
        update = self.robot_map.integrate(result, keyframes)  # fused keyframes are skipped; refreshes all
        if update.integrated:
            self.stamp_ns = max(self.stamp_ns, max(keyframes[i].stamp_ns for i in update.integrated))
            for message in update.messages:
                self._logger().info(f"map: {message}")
            self._logger().info(f"map: {update.summary}")
        if update.integrated or update.chunks.changed or update.chunks.removed:
            self._publish(update)

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

    # --- services' work (submitted: they run on this thread) -----------------------------------------
    def _required(self) -> RobotMap:
        if self.robot_map is None:
            raise ValueError("volumetric_map is off: there is no robot map")
        return self.robot_map

    def save(self, name: str) -> tuple[str, list[str]]:
        robot_map = self._required()
        if self.slam is not None:
            self._rebuild(self.slam.corrected_keyframes())  # a correction still waiting goes in first
        if robot_map.pending:
            self._refresh()  # the saved mesh and grid include every fused keyframe
        if robot_map.block_count == 0:
            raise ValueError("nothing to save yet: the map is empty")
        files = save_map(robot_map, self.output_dir, name)
        saved = [str(path) for path in files.values()]
        if self.slam is not None:
            saved.append(self.slam.save(self.output_dir, name))
        message = f"saved the map ({robot_map.block_count} blocks) in {len(saved)} files under {self.output_dir}"
        return message, saved

    def load(self, name: str) -> tuple[str, int]:
        self._required()
        if self.windows is not None:
            raise ValueError(
                "pose_source slam with a colour camera only cannot load a map: its window chain is not saved, "
                "so new windows could not be placed in the loaded one (docs/slam.md)"
            )
        assert self.config is not None
        loaded, update = load_map(map_files(self.output_dir, name)["volume"], self.config)
        slam_message = self.slam.load(self.output_dir, name) if self.slam is not None else ""
        previous, self.robot_map = self.robot_map, loaded
        if previous is not None:
            previous.close()  # its blocks on disk go now, not when it is collected
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
        blocks, chunks = loaded.block_count, len(update.chunks.changed)
        message = f"loaded map '{name}': {blocks} blocks, {chunks} chunks"
        return message + (f"; {slam_message}" if slam_message else ""), blocks

    def clear(self) -> str:
        self._required().clear()
        self.point_map.clear()
        if self.slam is not None:
            self.slam.reset()
        if self.windows is not None:
            self.windows.reset()
        with self._lock:
            self._keyframes.clear()
        self.outputs.clear(self.frame_id)
        self._say(note="", summary="empty (cleared)")
        return "map cleared (~/map, ~/map_mesh, ~/occupancy)"

    def free(self) -> None:
        """Stop the thread and drop the map's memory and its blocks on disk (lifecycle cleanup)."""
        self.stop()
        if self.robot_map is not None:
            self.robot_map.close()
        self.robot_map = None
        self.point_map.clear()
