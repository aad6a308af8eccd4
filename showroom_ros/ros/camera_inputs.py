"""The node's camera inputs: colour, depth and CameraInfo subscriptions -> the keyframe collector.

Messages arrive serialized (``raw=True``): frames the evaluation throttle drops are never decoded,
depth is decoded only when a colour frame pairs with it, and CameraInfo bytes equal to the last
accepted ones are not decoded again. That is most of the node's idle CPU (docs/benchmarks.md).
Every refused input is counted in :class:`InputCounters` with its reason, and said in the log.
"""

from __future__ import annotations

import re
import threading
import time
from collections.abc import Callable
from typing import Any

import numpy as np
from rclpy.qos import QoSProfile, ReliabilityPolicy, qos_profile_sensor_data
from rclpy.serialization import deserialize_message
from sensor_msgs.msg import CameraInfo, CompressedImage, Image

from showroom_ros.capture.collector import KeyframeCollector, Outcome
from showroom_ros.reconstruction.rgbd import depth_to_metres
from showroom_ros.ros import conversions as conv
from showroom_ros.ros.settings import Topics

WARN_EVERY_S = 5.0


def reason_kind(reason: str) -> str:
    """A rejection reason without its numbers: the kind that is logged at info the first time."""
    return re.sub(r"[-+]?\d[\d.e+-]*", "#", reason)[:80]


class InputCounters:
    """Frames received and refused, and the last refusal (read by the status part under the lock)."""

    def __init__(self, logger: Callable[[], Any]) -> None:
        self._logger = logger
        self._lock = threading.Lock()
        self.received = 0
        self.rejected = 0
        self.last_rejection = ""
        self._kinds: set[str] = set()
        self._warned: dict[str, float] = {}

    def count_received(self) -> None:
        with self._lock:
            self.received += 1

    def reject(self, reason: str, warn: bool = False) -> None:
        """Count and say it: every rejection at debug, the first of each kind at info, and a warning per
        kind every 5 s when ``warn`` (a broken input, not an ordinary non-keyframe)."""
        kind = reason_kind(reason)
        now = time.monotonic()
        with self._lock:
            self.rejected += 1
            self.last_rejection = reason
            first = kind not in self._kinds
            self._kinds.add(kind)
            warn_now = warn and now - self._warned.get(reason[:48], -1e9) >= WARN_EVERY_S
            if warn_now:
                self._warned[reason[:48]] = now
        logger = self._logger()
        logger.debug(f"frame rejected: {reason}")
        if first:
            logger.info(f"frame rejected: {reason} (first of its kind; each one is logged at debug)")
        if warn_now:
            logger.warning(reason)

    def note(self, reason: str) -> None:
        """A reason shown as the last rejection without counting a frame (a TF lookup that will be retried)."""
        with self._lock:
            self.last_rejection = reason

    def snapshot(self) -> tuple[int, int, str]:
        with self._lock:
            return self.received, self.rejected, self.last_rejection


class CameraInputs:
    """Subscribes each camera's topics on the input node and feeds the collector; ``handle`` gets every
    outcome (accepted, rejected, waiting)."""

    def __init__(
        self,
        topics: Topics,
        params: dict[str, Any],
        collector: KeyframeCollector,
        counters: InputCounters,
        handle: Callable[[Outcome], None] = lambda outcome: None,
    ) -> None:
        self.topics = topics
        self.params = params
        self.collector = collector
        self.counters = counters
        self.handle = handle  # the window trigger, set once it exists
        self._accepted_info: dict[tuple[int, bool], bytes] = {}  # last valid CameraInfo bytes after the stamp

    def attach(self, input_node: Any) -> None:
        """Create the subscriptions (at every activation: the input node is new each time)."""
        compressed = self.params["image_transport"] == "compressed"
        qos = qos_profile_sensor_data
        if self.params["input_reliability"] == "reliable":
            qos = QoSProfile(depth=5, reliability=ReliabilityPolicy.RELIABLE)
        colour_type = CompressedImage if compressed else Image
        depth_suffix = "/compressedDepth" if compressed else ""
        for camera, topic in enumerate(self.topics.images):
            # raw=True: frames the throttle drops are never deserialised (the node's main CPU saving).
            input_node.create_subscription(
                colour_type,
                topic + ("/compressed" if compressed else ""),
                lambda data, c=camera: self.on_image(c, data, colour_type),
                qos,
                raw=True,
            )
            for infos, depth in ((self.topics.camera_info, False), (self.topics.depth_info, True)):
                if infos:
                    input_node.create_subscription(
                        CameraInfo,
                        infos[camera],
                        lambda data, c=camera, d=depth: self.on_info(c, data, d),
                        qos,
                        raw=True,
                    )
            if self.topics.depth:
                input_node.create_subscription(
                    colour_type,
                    self.topics.depth[camera] + depth_suffix,
                    lambda data, c=camera: self.on_depth(c, data, colour_type),
                    qos,
                    raw=True,
                )

    def forget_camera_info(self) -> None:
        self._accepted_info.clear()

    @staticmethod
    def now_ns() -> int:
        return time.monotonic_ns()

    def on_image(self, camera: int, data: bytes, msg_type: type) -> None:
        self.counters.count_received()
        now = self.now_ns()
        if not self.collector.should_evaluate(camera, now):
            return
        try:
            msg = deserialize_message(data, msg_type)
            rgb = conv.compressed_to_rgb(msg) if msg_type is CompressedImage else conv.image_to_rgb(msg)
        except Exception as error:  # malformed bytes (rclpy raises several kinds) or invalid fields
            self.counters.reject(f"bad image on {self.topics.images[camera]}: {error}", warn=True)
            return
        # A missing CameraInfo, depth or pose is waited for (bounded by wait_timeout) in the collector.
        stamp = conv.stamp_to_ns(msg.header.stamp)
        self.handle(self.collector.add_image(camera, stamp, rgb, msg.header.frame_id, now))

    def on_depth(self, camera: int, data: bytes, msg_type: type) -> None:
        """Keep the serialized depth image; it is decoded only if a colour frame pairs with it (the
        collector calls the decoder), so a 30 Hz depth stream costs a stamp read per message."""
        try:
            stamp_ns = conv.serialized_stamp_ns(data)
        except conv.MessageError as error:
            self.counters.reject(f"bad depth image on {self.topics.depth[camera]}: {error}", warn=True)
            return
        scale = float(self.params["depth_scale"])

        def decode() -> np.ndarray:
            msg = deserialize_message(data, msg_type)
            raw = conv.compressed_depth_to_array(msg) if msg_type is CompressedImage else conv.depth_image_to_array(msg)
            return depth_to_metres(raw, scale)

        for outcome in self.collector.add_depth(camera, stamp_ns, decode, self.now_ns()):
            self.handle(outcome)

    def on_info(self, camera: int, data: bytes, depth: bool) -> None:
        """CameraInfo arrives with every frame but rarely changes: bytes equal to the last accepted ones
        (all but the stamp) are not decoded and checked again."""
        key = (camera, depth)
        if self._accepted_info.get(key) == data[12:]:
            return
        try:
            intrinsics = conv.camera_info_to_intrinsics(deserialize_message(data, CameraInfo))
        except Exception as error:  # malformed bytes (rclpy raises several kinds) or invalid fields
            topic = (self.topics.depth_info if depth else self.topics.camera_info)[camera]
            self.counters.reject(f"bad CameraInfo on {topic}: {error}", warn=True)
            return
        self._accepted_info[key] = data[12:]
        # Frames that waited for this CameraInfo complete now, not at the next poll.
        for outcome in self.collector.set_intrinsics(camera, intrinsics, depth=depth, now_ns=self.now_ns()):
            self.handle(outcome)

    def poll(self) -> None:
        """Frames whose wait ran out, or whose late pose arrived (the input node's 10 Hz timer)."""
        for outcome in self.collector.poll(self.now_ns()):
            self.handle(outcome)
