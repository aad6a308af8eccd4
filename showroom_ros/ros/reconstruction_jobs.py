"""The work the scheduler runs on its worker: reconstruct a window, and generate views ("3D generate").

A window is reconstructed by the pipeline, published (ros/result_outputs.py), integrated into the robot
map (ros/robot_mapping.py) and autosaved; a generation renders and inpaints views of the last result
and, when asked, reconstructs again with the accepted ones. The last result is kept here, under a lock,
for ``~/save``, ``~/generate_views`` and the status.
"""

from __future__ import annotations

import threading
import time
import traceback
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from showroom_ros.capture.keyframes import Keyframe
from showroom_ros.generation.service import ViewGenerationService
from showroom_ros.reconstruction.pipeline import ReconstructionError, ReconstructionPipeline
from showroom_ros.reconstruction.result import Reconstruction
from showroom_ros.ros import conversions as conv
from showroom_ros.ros.result_outputs import ResultOutputs, newest_stamp_ns
from showroom_ros.ros.robot_mapping import RobotMapping
from showroom_ros.ros.scheduler import Scheduler


@dataclass
class LastResult:
    """The latest reconstruction, its keyframes and how long it took."""

    result: Reconstruction | None = None
    keyframes: list[Keyframe] = field(default_factory=list)
    seconds: float = 0.0


class ReconstructionJobs:
    """Window and generation work; ``stopping()`` is True once the node is shutting down (then a failure
    is not an error: the work was abandoned)."""

    def __init__(
        self,
        pipeline: ReconstructionPipeline,
        backends: dict[str, Any],
        scheduler: Scheduler,
        outputs: ResultOutputs,
        mapping: RobotMapping,
        generator: ViewGenerationService,
        params: dict[str, Any],
        logger: Callable[[], Any],
        publish_status: Callable[[], None],
        stopping: Callable[[], bool],
    ) -> None:
        self.pipeline = pipeline
        self.backends = backends
        self.scheduler = scheduler
        self.outputs = outputs
        self.mapping = mapping
        self.generator = generator
        self.params = params
        self._logger = logger
        self._publish_status = publish_status
        self._stopping = stopping
        self._lock = threading.Lock()
        self._last = LastResult()
        # pose_source slam with a colour camera only: moves each result into the map (ros/window_poses.py).
        self.place_window: Callable[[Reconstruction, list[Keyframe]], Reconstruction] | None = None

    @property
    def last(self) -> LastResult:
        with self._lock:
            return LastResult(self._last.result, list(self._last.keyframes), self._last.seconds)

    def forget(self) -> None:
        with self._lock:
            self._last = LastResult()

    def _progress(self, fraction: float, stage: str) -> None:
        self.scheduler.report(fraction, stage)
        self._publish_status()

    def reconstruct(self, keyframes: list[Keyframe]) -> Reconstruction:
        """Reconstruct, publish, map and autosave one window (on the worker)."""
        started = time.perf_counter()
        self.scheduler.set(state="reconstructing", message=f"reconstructing {len(keyframes)} keyframes")
        map_frame = self.params["map_frame"]
        try:
            result = self.pipeline.run(keyframes, self._progress)
            if self.place_window is not None:
                result = self.place_window(result, keyframes)
            if result.frame_id == "map":
                result.frame_id = map_frame
            registration = getattr(self.backends.get(result.backend), "last_registration", None)
            if registration is not None:
                self._logger().info(f"registration: {registration.summary()}")
            if result.frame_id != map_frame:
                self._logger().warning(
                    f"no camera poses: published in frame '{result.frame_id}' anchored at the first keyframe"
                    f" ({'metric, from depth' if result.metric else 'arbitrary scale'})"
                )
            self.outputs.publish(result, keyframes)
            self.mapping.integrate_result(result, keyframes)  # on the map's thread; the window goes on
            if self.params["autosave"]:
                self.outputs.autosave_later(result)  # on the saver thread: the next window does not wait
        except Exception as error:
            if self._stopping():
                raise  # the node is stopping: abandoned work is not an error, and publishing would fail
            self.scheduler.set(state="error", message=f"reconstruction failed: {error}")
            if not isinstance(error, (ReconstructionError, ValueError)):
                self._logger().error(traceback.format_exc())
            self._logger().error(f"reconstruction failed: {error}")
            self._publish_status()
            raise
        seconds = time.perf_counter() - started
        stages = ", ".join(f"{k} {v:.2f}s" for k, v in result.timings.items())
        triangles = result.mesh.num_triangles if result.mesh else 0
        self._logger().info(
            f"reconstructed {result.num_points} points, {triangles} triangles in {seconds:.2f}s ({stages})"
        )
        for note in result.notes:
            self._logger().warning(f"{result.backend} result: {note}")
        with self._lock:
            self._last = LastResult(result, list(keyframes), seconds)
        message = f"reconstruction done with backend {result.backend} in {seconds:.2f}s" + "".join(
            f"; {note}" for note in result.notes
        )
        self.scheduler.set(state="collecting", progress=1.0, message=message)
        self._publish_status()
        return result

    def generate(self, request: Any, add_to_reconstruction: bool) -> tuple[list, str, Reconstruction | None]:
        """Generate views of the last result (on the worker); with ``add_to_reconstruction``, reconstruct
        again with the accepted ones."""
        last = self.last
        reconstruction, keyframes = last.result, last.keyframes
        self.scheduler.set(state="generating", progress=0.0, message="generating views")
        self._publish_status()
        try:
            images = [k.image for k in keyframes] if keyframes else None
            views, status = self.generator.run(request, reconstruction, images, self._progress)
            header = self.outputs.header(reconstruction.frame_id, newest_stamp_ns(keyframes))
            for view in views:
                self.outputs.publish_generated(view.image, view.mask, header)
            result = reconstruction
            if add_to_reconstruction:
                from showroom_ros.generation.generate import generated_views_to_keyframes

                extra = generated_views_to_keyframes(views, only_accepted=True, frame_id=reconstruction.frame_id)
                if extra:
                    self._progress(0.0, f"3D generate: reconstructing with {len(extra)} generated view(s)")
                    result = self.reconstruct(keyframes + extra)
                    status += f"; reconstructed with {len(extra)} generated keyframe(s)"
                else:
                    status += "; no view was accepted, so the reconstruction is unchanged"
        except Exception as error:
            if self._stopping():
                raise  # stopping: see reconstruct
            self.scheduler.set(state="collecting", message=f"generation failed: {error}")
            self._publish_status()
            raise
        self.scheduler.set(state="collecting", progress=1.0, message=f"generated {len(views)} view(s)")
        self._publish_status()
        return views, status, result


def generated_view_messages(view: Any, header: Any) -> tuple[Any, Any, Any]:
    """(image, mask, pose) messages of one generated view."""
    return (
        conv.rgb_to_image(view.image, header),
        conv.mono_to_image(view.mask.astype(np.uint8) * 255, header),
        conv.matrix_to_pose_stamped(view.pose_c2w, header),
    )
