"""Where the node's camera poses come from: a PoseStamped topic per camera, TF, or nowhere.

Every source answers one question, ``lookup(camera, stamp_ns, frame_id)`` -> the 4x4 camera-to-
``map_frame`` pose of that camera's optical frame at that stamp, or None while it is not known yet
(the collector then lets the frame wait, bounded by ``wait_timeout``). A further source (the node's
own tracking) plugs in behind the same call.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any, Protocol

import numpy as np
from geometry_msgs.msg import PoseStamped
from rclpy.time import Time as RclpyTime

from showroom_ros.geometry.poses import PoseHistory
from showroom_ros.ros import conversions as conv

POSE_SOURCES = ("tf", "topic", "slam", "none")
Reject = Callable[..., None]
"""(reason, warn=False) -> None: a refused input, counted and said (ros/camera_inputs.py)."""


class PoseSource(Protocol):
    def attach(self, input_node: Any) -> None:
        """Subscribe what the source needs on the camera-input node (called at every activation)."""

    def lookup(self, camera: int, stamp_ns: int, frame_id: str) -> np.ndarray | None:
        """Camera-to-map pose at ``stamp_ns``, or None while unknown."""

    def clear(self) -> None:
        """Forget what was received (``~/reset``)."""


class NoPoses:
    """``pose_source: none``: results are anchored at the first keyframe's camera."""

    def attach(self, input_node: Any) -> None:
        pass

    def lookup(self, camera: int, stamp_ns: int, frame_id: str) -> np.ndarray | None:
        return None

    def clear(self) -> None:
        pass


class TopicPoses:
    """``pose_source: topic``: geometry_msgs/PoseStamped of each camera in ``map_frame``, interpolated."""

    def __init__(self, topics: list[str], map_frame: str, tolerance_ns: int, reject: Reject) -> None:
        self.topics = topics
        self.map_frame = map_frame
        self._reject = reject
        self._histories = [PoseHistory(tolerance_ns=tolerance_ns) for _ in topics]

    def attach(self, input_node: Any) -> None:
        for camera, topic in enumerate(self.topics):
            input_node.create_subscription(PoseStamped, topic, lambda msg, c=camera: self.on_pose(c, msg), 50)

    def on_pose(self, camera: int, msg: PoseStamped) -> None:
        if msg.header.frame_id and msg.header.frame_id != self.map_frame:
            self._reject(
                f"pose on {self.topics[camera]} is in '{msg.header.frame_id}', expected map_frame '{self.map_frame}'",
                warn=True,
            )
            return
        try:
            self._histories[camera].add(conv.stamp_to_ns(msg.header.stamp), conv.pose_to_matrix(msg.pose))
        except ValueError as error:
            self._reject(f"bad pose on {self.topics[camera]}: {error}", warn=True)

    def lookup(self, camera: int, stamp_ns: int, frame_id: str) -> np.ndarray | None:
        return self._histories[camera].lookup(stamp_ns)

    def clear(self) -> None:
        for history in self._histories:
            history.clear()


def describe_tf_failure(error: BaseException, target: str, source: str, stamp_ns: int) -> tuple[str, str]:
    """tf2's own reason for a failed lookup: (kind, one line with the frames and the stamp).

    tf2 says what is wrong (LookupException: a frame does not exist; ConnectivityException: no chain
    between them; ExtrapolationException: the stamp is outside the buffered span), which is the first
    thing a robot user debugs, so it is reported as is rather than as "no pose".
    """
    kind = type(error).__name__
    text = " ".join(str(error).split()) or "no message"
    frames = f"{target} -> {source or '<empty frame_id>'}"
    return kind, f"TF lookup {frames} at {stamp_ns / 1e9:.3f} s failed: {kind}: {text}"


class TfPoses:
    """``pose_source: tf``: ``map_frame`` -> the image's ``frame_id`` at the image stamp (needs tf2_ros).

    ``report(kind_key, message)`` receives each failure with tf2's own reason (throttled by the caller).
    """

    def __init__(self, node: Any, map_frame: str, report: Callable[[str, str], None], buffer: Any = None) -> None:
        self.map_frame = map_frame
        self._report = report
        self.buffer = buffer
        if buffer is None:
            from tf2_ros import Buffer, TransformListener  # ImportError: said by make_pose_source

            self.buffer = Buffer()
            self._listener = TransformListener(self.buffer, node, spin_thread=False)

    def attach(self, input_node: Any) -> None:
        pass  # the listener lives on the main node, for the whole life of the process

    def lookup(self, camera: int, stamp_ns: int, frame_id: str) -> np.ndarray | None:
        try:
            transform = self.buffer.lookup_transform(self.map_frame, frame_id, RclpyTime(nanoseconds=stamp_ns))
        except Exception as error:  # tf2's exceptions share no importable base here
            kind, message = describe_tf_failure(error, self.map_frame, frame_id, stamp_ns)
            self._report(f"tf {kind} {frame_id}", message)
            return None
        return conv.transform_to_matrix(transform)

    def clear(self) -> None:
        pass  # TF keeps its own history


def make_pose_source(
    kind: str,
    node: Any,
    topics: list[str],
    map_frame: str,
    tolerance_ns: int,
    reject: Reject,
    report: Callable[[str, str], None],
) -> PoseSource:
    """The source ``pose_source`` names; ``tf`` without tf2_ros is a clear :class:`RuntimeError`."""
    if kind == "topic":
        return TopicPoses(topics, map_frame, tolerance_ns, reject)
    if kind == "tf":
        try:
            return TfPoses(node, map_frame, report)
        except ImportError as error:
            raise RuntimeError(
                "pose_source 'tf' needs tf2_ros, which is not installed here; "
                "use pose_source:=topic (PoseStamped per camera) or pose_source:=none"
            ) from error
    if kind == "none":
        return NoPoses()
    if kind == "slam":
        raise ValueError("pose_source 'slam' is built by ros/parts.py (ros/slam_tracking.py), not here")
    raise ValueError(f"pose_source must be one of {POSE_SOURCES}, got {kind!r}")
