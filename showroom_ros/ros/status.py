"""``~/status`` and ``/diagnostics``: what the node is doing, what it refused and why, and its disk.

Everything here is read from the other parts' snapshots (each taken under its owner's lock), so a
status message is consistent and publishing it never races the threads that change it. Status and
diagnostics are plain publishers, not lifecycle ones: an inactive or unconfigured node still says so.
"""

from __future__ import annotations

import tempfile
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from diagnostic_msgs.msg import DiagnosticArray, DiagnosticStatus, KeyValue

from showroom_ros.io.disk_space import SpaceMonitor, disk_warnings, worst_level
from showroom_ros.msg import ReconstructionStatus
from showroom_ros.ros.qos import LATCHED

DIAGNOSTIC_FIELDS = (
    "state",
    "backend",
    "num_keyframes",
    "frames_received",
    "frames_rejected",
    "last_rejection",
    "num_points",
    "num_triangles",
)


@dataclass(frozen=True)
class StatusInputs:
    """Where each part of the status comes from (callables returning snapshots)."""

    work: Callable[[], Any]  # Scheduler.snapshot
    frames: Callable[[], tuple[int, int, str]]  # InputCounters.snapshot
    keyframes: Callable[[], int]
    last: Callable[[], Any]  # ReconstructionJobs.last
    map_state: Callable[[], Any]  # RobotMapping.snapshot -> MapState
    callback_errors: Callable[[], tuple[int, str]]  # CallbackGuard.snapshot
    models: Callable[[], str]
    slam: Callable[[], Any] | None = None  # SlamTracking.snapshot -> SlamState (pose_source: slam)


class StatusReporter:
    """Publishes both topics; the node calls :meth:`publish` on its timer and after every change."""

    def __init__(self, node: Any, params: dict[str, Any], output_dir: Path, lifecycle: Callable[[], str]) -> None:
        """``lifecycle()`` is '' while the node is active, else why it does not serve (its first word: the state)."""
        self._node = node
        self.params = params
        self.lifecycle = lifecycle
        self.inputs: StatusInputs | None = None  # set while configured
        self.disk = SpaceMonitor({"output_dir": output_dir, "temporary folder": tempfile.gettempdir()})
        self.status_pub = node.create_publisher(ReconstructionStatus, "~/status", LATCHED)
        self.diagnostics_pub = node.create_publisher(DiagnosticArray, "/diagnostics", 10)

    def build(self) -> tuple[ReconstructionStatus, DiagnosticArray]:
        """The two messages, from one snapshot of every part."""
        disk = self.disk.reports()
        stamp = self._node.get_clock().now().to_msg()
        status = ReconstructionStatus(max_keyframes=self.params["max_keyframes"], frame_id=self.params["map_frame"])
        status.header.stamp = stamp
        status.backend = self.params["backend"]
        status.map_age_s = -1.0  # until a camera frame is in the map
        notes = [f"disk: {line}" for line in disk_warnings(disk)]
        errors, last_error, map_summary = 0, "", ""
        why_not = self.lifecycle()
        status.state, status.message = why_not.split(":")[0], why_not
        if self.inputs is not None:
            i = self.inputs
            work, last = i.work(), i.last()
            status.frames_received, status.frames_rejected, status.last_rejection = i.frames()
            map_state = i.map_state()
            map_note, map_summary = map_state.note, map_state.summary
            if map_state.stamp_ns > 0:
                now_ns = self._node.get_clock().now().nanoseconds
                status.map_age_s = max(0.0, (now_ns - map_state.stamp_ns) / 1e9)
            status.map_keyframes_integrated = map_state.integrated
            status.map_keyframes_waiting = map_state.waiting
            status.map_keyframes_dropped = map_state.dropped
            status.map_keyframes_redundant = map_state.redundant
            if i.slam is not None:
                slam = i.slam()
                status.tracking_state, status.tracking_reason = slam.state, slam.reason
                status.slam_keyframes = slam.keyframes
                status.loop_closures_accepted = slam.closures_accepted
                status.loop_closures_rejected = slam.closures_rejected
                status.last_optimisation_ms = float(slam.last_optimisation_ms)
                status.tracking_ms = float(slam.tracking_ms)
                status.tracking_frames_lost = slam.lost
                status.tracking_frames_dropped = slam.dropped
                if slam.state == "lost":
                    notes = [f"tracking lost: {slam.reason}", *notes]
            errors, last_error = i.callback_errors()
            result = last.result
            if not why_not or work.state == "error":
                status.state, status.message = work.state, work.message
            status.progress = work.progress
            status.backend_reason = work.backend_reason or i.models()
            status.num_keyframes = i.keyframes()
            status.last_duration_s = float(last.seconds)
            if result is not None:
                status.backend, status.frame_id, status.metric = result.backend, result.frame_id, bool(result.metric)
                status.num_points = result.num_points
                status.num_triangles = result.mesh.num_triangles if result.mesh else 0
                notes = list(result.notes) + ([map_note] if map_note else []) + notes
            elif map_note:
                notes = [map_note, *notes]
        status.notes = notes
        level = {"error": DiagnosticStatus.ERROR}.get(
            status.state, DiagnosticStatus.WARN if status.notes else DiagnosticStatus.OK
        )
        name = self._node.get_name()
        values = [KeyValue(key=k, value=str(getattr(status, k))) for k in DIAGNOSTIC_FIELDS]
        values += [
            KeyValue(key="callback_errors", value=str(errors)),
            KeyValue(key="last_callback_error", value=last_error),
            KeyValue(key="notes", value=" | ".join(status.notes)),
            KeyValue(key="map", value=map_summary),
            KeyValue(key="map_age_s", value=f"{status.map_age_s:.2f}"),
            KeyValue(key="map_keyframes_waiting", value=str(status.map_keyframes_waiting)),
            KeyValue(key="map_keyframes_dropped", value=str(status.map_keyframes_dropped)),
            KeyValue(key="map_keyframes_redundant", value=str(status.map_keyframes_redundant)),
        ]
        if status.tracking_state:
            values += [
                KeyValue(key=k, value=str(getattr(status, k)))
                for k in (
                    "tracking_state",
                    "tracking_reason",
                    "slam_keyframes",
                    "loop_closures_accepted",
                    "loop_closures_rejected",
                    "last_optimisation_ms",
                    "tracking_ms",
                    "tracking_frames_lost",
                    "tracking_frames_dropped",
                )
            ]
        reconstruction = DiagnosticStatus(
            level=level, name="showroom: reconstruction", hardware_id=name, message=status.message, values=values
        )
        disk_levels = {"critical": DiagnosticStatus.ERROR, "low": DiagnosticStatus.WARN}
        disk_status = DiagnosticStatus(
            level=disk_levels.get(worst_level(disk), DiagnosticStatus.OK),
            name="showroom: disk",
            hardware_id=name,
            message="; ".join(report.message for report in disk),
            values=[KeyValue(key=f"{report.label} free GB", value=report.free_gb) for report in disk],
        )
        return status, DiagnosticArray(header=status.header, status=[reconstruction, disk_status])

    def publish(self) -> None:
        status, diagnostics = self.build()
        self.status_pub.publish(status)
        self.diagnostics_pub.publish(diagnostics)


class ModelWatch:
    """Logs each learned model's state once when it changes (loading, ready, failed)."""

    def __init__(self, models: dict[str, Any], logger: Callable[[], Any]) -> None:
        self.models = models
        self._logger = logger
        self._states = {name: "" for name in models}

    def check(self) -> None:
        for name, holder in self.models.items():
            state = holder.state
            if state == self._states[name]:
                continue
            self._states[name] = state
            # One call site per severity: rclpy refuses to change a call site's severity.
            if state == "failed":
                self._logger().error(f"{name} model: {holder.reason}")
            elif state != "not configured":
                self._logger().info(f"{name} model: {holder.reason}")

    def summary(self) -> str:
        return "; ".join(f"{name}: {holder.reason}" for name, holder in self.models.items())
