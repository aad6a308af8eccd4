"""When a window of keyframes is reconstructed: the buffer is full, or 3-5 photos came and then silence.

Runs on the camera-input thread: each collector outcome goes through :meth:`WindowTrigger.handle`, and the
input node's 10 Hz timer calls :meth:`WindowTrigger.poll`, which also picks up a buffer that filled while
a window ran (its trigger was refused then). The queue itself belongs to the scheduler.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from concurrent.futures import Future
from typing import Any

from showroom_ros.capture.collector import KeyframeCollector, Outcome
from showroom_ros.ros.camera_inputs import CameraInputs
from showroom_ros.ros.scheduler import Scheduler


class WindowTrigger:
    def __init__(
        self,
        params: dict[str, Any],
        continuous: bool,
        collector: KeyframeCollector,
        inputs: CameraInputs,
        scheduler: Scheduler,
        reconstruct: Callable[[list], Any],
        logger: Callable[[], Any],
        publish_status: Callable[[], None],
    ) -> None:
        self.params = params
        self.continuous = continuous
        # Camera-only SLAM chains each window to the one before: none may give way in the queue.
        self.keep_every_window = False
        self.collector = collector
        self.inputs = inputs
        self.scheduler = scheduler
        self._reconstruct = reconstruct
        self._logger = logger
        self._publish_status = publish_status
        self._last_keyframe_at = time.monotonic()

    def handle(self, outcome: Outcome) -> None:
        """A collector outcome: count a rejection, or buffer a keyframe and start a window when full."""
        if outcome.kind == "rejected":
            reason = outcome.reason
            self.inputs.counters.reject(f"camera {outcome.camera}: {reason}", warn=reason.startswith("no "))
            return
        if outcome.kind != "accepted":
            return
        count = len(self.collector.buffer)
        self._last_keyframe_at = time.monotonic()
        self._logger().info(f"keyframe {count}/{self.params['max_keyframes']} from camera {outcome.camera}")
        self.scheduler.set(message=f"{count} keyframe(s) buffered")
        if self.params["auto_reconstruct"] and self.collector.buffer.is_full:
            self.start("buffer full")
        else:
            self._publish_status()

    def poll(self) -> None:
        """Frames whose wait ended; a full buffer whose trigger was refused while a window ran; 3-5 photos
        then silence (``idle_reconstruct_s``)."""
        self.inputs.poll()
        if not self.params["auto_reconstruct"] or self.scheduler.busy():
            return
        count, idle = len(self.collector.buffer), float(self.params["idle_reconstruct_s"])
        if self.collector.buffer.is_full:
            self.start("buffer filled during the last reconstruction")
        elif idle > 0 and count >= self.params["min_keyframes"] and time.monotonic() - self._last_keyframe_at >= idle:
            why = f"{count} keyframes and no new one for {idle:g} s"
            if self.start(why) is not None:
                self._logger().info(f"reconstructing: {why} (idle_reconstruct_s)")

    def _superseded(self, keyframes: list) -> None:
        """Windows fell behind the camera: the oldest queued one gave way to the newest. Say what that cost."""
        unmapped = sum(k.depth is None or k.pose is None for k in keyframes)
        message = f"a queued window of {len(keyframes)} keyframes gave way to a newer one (windows fall behind)"
        if unmapped:
            self._logger().warning(
                f"{message}: {unmapped} of its keyframes have no sensor depth or pose, so they are not in the map"
            )
        else:
            self._logger().info(f"{message}; its keyframes went to the map at keyframe rate")

    def start(self, why: str) -> Future | None:
        """Queue the buffered keyframes as a window (None when refused: see Scheduler.start_window)."""
        job = self.scheduler.start_window(
            self.collector.buffer,
            why,
            self._reconstruct,
            continuous=self.continuous,
            max_pending=1_000_000 if self.keep_every_window else int(self.params["max_pending_windows"]),
            overlap=int(self.params["window_overlap"]),
            superseded=self._superseded,
        )
        self._publish_status()
        return job
