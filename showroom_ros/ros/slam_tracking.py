"""``pose_source: slam``: the node's own camera poses, on a tracking thread of its own (docs/slam.md).

Every complete RGB-D frame (``KeyframeCollector.map_sink``) is offered here instead of to the map. This
part tracks it (slam/system.py), gives the frame its pose, and only then offers it to the map, so a
frame the tracker lost never reaches the map. The queue is bounded (the newest frame wins); tracking
is about 35 ms a frame on 2 cores, so 5 Hz keeps up with room to spare.

After each pose-graph update it republishes ``~/trajectory`` (every keyframe, reliable + transient
local); after a loop closure that moved keyframes it asks the map to rebuild from the corrected
keyframes (``RobotMapping.rebuild``). ``~/camera_pose`` carries every tracked frame's pose, and TF
``map_frame`` -> the image frame (or ``map`` -> ``odom_frame``, REP-105) where tf2_ros is installed.
It is also the node's :class:`~showroom_ros.ros.pose_sources.PoseSource`: windows find their
keyframes' poses here by stamp.
"""

from __future__ import annotations

import threading
import time
from collections import OrderedDict
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
from geometry_msgs.msg import PoseStamped, TransformStamped
from nav_msgs.msg import Path as PathMsg
from std_msgs.msg import Header

from showroom_ros.capture.keyframes import Keyframe
from showroom_ros.capture.newest_wins import NewestWins
from showroom_ros.io.file_names import slam_file
from showroom_ros.ros import conversions as conv
from showroom_ros.ros.qos import LATCHED
from showroom_ros.slam.config import SlamConfig
from showroom_ros.slam.storage import load_slam, save_slam
from showroom_ros.slam.system import RgbdSlam, TrackResult

POSES_KEPT = 512  # tracked frames whose pose a window may still ask for, by stamp


@dataclass(frozen=True)
class SlamState:
    """What ~/status says about tracking (a consistent copy)."""

    state: str
    reason: str
    keyframes: int
    closures_accepted: int
    closures_rejected: int
    last_optimisation_ms: float
    tracking_ms: float
    dropped: int
    lost: int = 0


class SlamTracking:
    """Owns the SLAM, its thread and its outputs; a PoseSource for the collector."""

    def __init__(
        self,
        config: SlamConfig,
        node: Any,
        publisher: Callable[..., Any],
        map_frame: str,
        offer_to_map: Callable[[Keyframe], None],
        rebuild_map: Callable[[list[Keyframe]], Any],
        logger: Callable[[], Any],
        localization_only: bool = False,
        queue_size: int = 2,
        publish_tf: bool = True,
        odom_frame: str = "",
    ) -> None:
        self.config = config
        self.map_frame = map_frame
        self._offer_to_map = offer_to_map
        self._rebuild_map = rebuild_map
        self._logger = logger
        self.localization_only = localization_only
        self.slam = self._new_slam()
        self.queue_size = max(1, int(queue_size))
        self.trajectory_pub = publisher(PathMsg, "~/trajectory", LATCHED)
        self.camera_pose_pub = publisher(PoseStamped, "~/camera_pose", 10)
        self._tf = make_slam_tf(node, map_frame, odom_frame, logger) if publish_tf else None
        self._lock = threading.Lock()
        self._wake = threading.Condition(self._lock)
        self._frames: NewestWins[Keyframe] = NewestWins(self.queue_size)
        self._poses: OrderedDict[int, np.ndarray] = OrderedDict()
        self._said: set[str] = set()
        self._state = SlamState("initialising", "waiting for the first RGB-D frame", 0, 0, 0, 0.0, 0.0, 0)
        self._closed = False
        self._rebuild_due = False
        self._rebuilt_at = -1e9
        # Held while a frame is tracked: saving, loading and rebuilding read the SLAM between frames.
        self._slam_lock = threading.Lock()
        self._thread = threading.Thread(target=self._run, name="showroom-slam", daemon=True)
        self._thread.start()

    def _new_slam(self) -> RgbdSlam:
        slam = RgbdSlam(self.config)
        slam.localization_only = self.localization_only
        return slam

    # --- PoseSource ------------------------------------------------------------------------------
    def attach(self, input_node: Any) -> None:
        pass  # frames come through the collector's map sink

    def lookup(self, camera: int, stamp_ns: int, frame_id: str) -> np.ndarray | None:
        """A tracked frame's pose; None before it is tracked (the collector does not wait for it)."""
        with self._lock:
            pose = self._poses.get(int(stamp_ns))
        return None if pose is None else pose.copy()

    def clear(self) -> None:
        pass  # ~/reset empties the window buffer; the SLAM map is cleared with ~/clear_map

    # --- other threads ----------------------------------------------------------------------------
    def offer(self, keyframe: Keyframe) -> None:
        """From the camera-input thread: never blocks; a full queue drops its oldest frame (counted)."""
        if keyframe.depth is None:
            self._say_once("depth", "pose_source slam needs depth with each frame: frames without it are not tracked")
            return
        with self._wake:
            if self._closed:
                return
            self._frames.put(keyframe)
            self._wake.notify()

    def snapshot(self) -> SlamState:
        with self._lock:
            return self._state

    def stop(self, timeout_s: float = 1.0) -> bool:
        with self._wake:
            self._closed = True
            self._frames.clear()
            self._wake.notify()
        self._thread.join(timeout_s)
        return not self._thread.is_alive()

    # --- map services (called on the map's thread; the SLAM is swapped under the lock) -------------
    def save(self, directory: Path, name: str) -> str:
        with self._lock:
            slam = self.slam
        path = slam_file(directory, name)
        with self._slam_lock:  # between two frames
            save_slam(slam, path)
        return str(path)

    def load(self, directory: Path, name: str) -> str:
        path = slam_file(directory, name)
        if not path.exists():
            raise ValueError(
                f"map '{name}' has no SLAM state ({path.name}): it was not saved with pose_source slam, so the "
                "camera could not relocalise in it"
            )
        loaded = load_slam(path, self.config)
        loaded.localization_only = self.localization_only
        with self._slam_lock, self._lock:
            self.slam = loaded
            self._poses.clear()
            self._frames.clear()
            self._state = self._snapshot_of(loaded, 0.0)
        self._publish_trajectory(0)
        return f"pose graph of {len(loaded.graph)} keyframes loaded; waiting to relocalise"

    def reset(self) -> None:
        """A new, empty SLAM (``~/clear_map``): the next frame starts a new map frame."""
        with self._slam_lock, self._lock:
            self.slam = self._new_slam()
            self._poses.clear()
            self._state = self._snapshot_of(self.slam, 0.0)

    # --- the tracking thread ----------------------------------------------------------------------
    def _run(self) -> None:
        while True:
            with self._wake:
                while not (self._closed or self._frames):
                    self._wake.wait()
                if self._closed:
                    return
                keyframe = self._frames.pop()
                slam = self.slam
            try:
                with self._slam_lock:
                    self._track(slam, keyframe)
            except Exception as error:  # never let tracking die: say it and go on with the next frame
                self._logger().error(f"slam: {type(error).__name__}: {error}")

    def _track(self, slam: RgbdSlam, keyframe: Keyframe) -> None:
        assert keyframe.depth is not None and keyframe.intrinsics is not None
        before = slam.state
        result = slam.track(
            keyframe.stamp_ns, keyframe.image, keyframe.depth, keyframe.intrinsics, keyframe.depth_intrinsics
        )
        with self._lock:
            if slam is not self.slam:
                return  # the SLAM was replaced (load or clear) while this frame was tracked
            self._state = self._snapshot_of(slam, result.tracking_ms)
            if result.pose is not None:
                self._poses[keyframe.stamp_ns] = result.pose
                while len(self._poses) > POSES_KEPT:
                    self._poses.popitem(last=False)
        self._log_transition(before, result)
        if result.pose is None:
            return
        keyframe.pose = result.pose  # the buffer's keyframe is this object: a window sees its pose
        if not (slam.localization_only and len(slam.graph) and result.new_keyframe is None and before == "lost"):
            self._offer_to_map(keyframe)
        self._publish_pose(keyframe, result.pose)
        if result.optimised:
            self._publish_trajectory(keyframe.stamp_ns)
        if result.closures:
            self._rebuild_due = True
        if self._rebuild_due and time.monotonic() - self._rebuilt_at >= self.config.rebuild_period_s:
            self._rebuild_if_moved(slam)

    def _log_transition(self, before: str, result: TrackResult) -> None:
        if result.state == before or (before == "relocalised" and result.state == "tracking"):
            if result.closures:
                self._logger().info(f"slam: loop closure(s) {result.closures}; graph re-optimised")
            return
        if result.state == "lost":
            self._logger().warning(f"slam: lost: {result.reason}")
        else:
            self._logger().info(f"slam: {result.state}" + (f" ({result.reason})" if result.reason else ""))

    def _snapshot_of(self, slam: RgbdSlam, tracking_ms: float) -> SlamState:
        c = slam.counters
        return SlamState(
            slam.state,
            slam.reason if slam.state in ("lost", "relocalised") else "",
            len(slam.graph),
            c.closures_accepted,
            c.closures_rejected,
            c.last_optimisation_ms,
            tracking_ms,
            self._frames.dropped,
            c.lost_frames,
        )

    def _say_once(self, key: str, message: str) -> None:
        if key not in self._said:
            self._said.add(key)
            self._logger().warning(f"slam: {message}")

    # --- outputs ----------------------------------------------------------------------------------
    def _publish_pose(self, keyframe: Keyframe, pose: np.ndarray) -> None:
        header = Header(stamp=conv.ns_to_stamp(keyframe.stamp_ns), frame_id=self.map_frame)
        self.camera_pose_pub.publish(conv.matrix_to_pose_stamped(pose, header))
        if self._tf is not None and keyframe.frame_id:
            problem = self._tf.publish(keyframe.frame_id, keyframe.stamp_ns, pose)
            if problem:
                self._say_once("tf", f"map -> odom not published: {problem} (said once)")

    def _publish_trajectory(self, stamp_ns: int) -> None:
        with self._lock:
            trajectory = self.slam.trajectory()
        newest = max([stamp_ns, *(stamp for stamp, _ in trajectory)])
        self.trajectory_pub.publish(conv.trajectory_to_path(self.map_frame, trajectory, newest))

    def _rebuild_if_moved(self, slam: RgbdSlam) -> None:
        """After closures: rebuild the map from the kept keyframes at their corrected poses, when any
        keyframe moved more than ``rebuild_threshold`` since the map last saw it; at most once per
        ``rebuild_period_s`` (a rebuild costs one integration per keyframe, and closures come in runs)."""
        self._rebuild_due = False
        self._rebuilt_at = time.monotonic()
        keyframes = rebuild_keyframes(slam, self.map_frame)  # on the tracking thread, under _slam_lock
        if keyframes:
            self._rebuild_map(keyframes)

    def corrected_keyframes(self) -> list[Keyframe]:
        """A rebuild still waiting for its period, now (``~/save_map`` saves the corrected map)."""
        with self._slam_lock:
            if not self._rebuild_due:
                return []
            self._rebuild_due = False
            self._rebuilt_at = time.monotonic()
            return rebuild_keyframes(self.slam, self.map_frame)


def rebuild_keyframes(slam: RgbdSlam, map_frame: str) -> list[Keyframe]:
    """Every kept keyframe with its images and current pose (empty when none moved enough)."""
    from showroom_ros.geometry.camera import CameraIntrinsics

    moved = 0.0
    keyframes = []
    for key, pose in slam.graph.poses().items():
        record = slam.database[key]
        images = record.images()
        last = slam.mapped_poses.get(key)
        moved = max(moved, float("inf") if last is None else float(np.linalg.norm(last[:3, 3] - pose[:3, 3])))
        if images is None:
            continue
        rgb, depth = images
        K = record.frame.K
        intrinsics = CameraIntrinsics.from_matrix(K, rgb.shape[1], rgb.shape[0])
        keyframes.append(
            Keyframe(image=rgb, stamp_ns=slam.keyframe_stamps[key], intrinsics=intrinsics, depth=depth, pose=pose)
        )
    if moved <= slam.config.rebuild_threshold:
        return []
    slam.mapped_poses = slam.graph.poses()
    return keyframes


class SlamTf:
    """TF where tf2_ros is installed (a real ROS 2; it has no wheel here): ``map_frame`` -> the image's
    frame, or with ``odom_frame`` set, ``map_frame`` -> ``odom_frame`` (REP-105: the odometry source keeps
    publishing odom -> camera, and this corrects it, as RTAB-Map and slam_toolbox do)."""

    def __init__(self, node: Any, map_frame: str, odom_frame: str) -> None:
        from tf2_ros import Buffer, TransformBroadcaster, TransformListener  # ImportError: see make_slam_tf

        self.map_frame, self.odom_frame = map_frame, odom_frame
        self._broadcaster = TransformBroadcaster(node)
        self._buffer = Buffer() if odom_frame else None
        self._listener = TransformListener(self._buffer, node, spin_thread=False) if odom_frame else None

    def publish(self, camera_frame: str, stamp_ns: int, map_from_camera: np.ndarray) -> str:
        """Send the transform; '' or why not (a missing odom -> camera at that stamp)."""
        from rclpy.time import Time

        child, transform = camera_frame, map_from_camera
        if self._buffer is not None:
            try:
                odom = self._buffer.lookup_transform(self.odom_frame, camera_frame, Time(nanoseconds=stamp_ns))
            except Exception as error:  # tf2's exceptions share no importable base
                return f"no {self.odom_frame} -> {camera_frame} at this frame's stamp: {type(error).__name__}"
            child, transform = self.odom_frame, map_from_camera @ np.linalg.inv(conv.transform_to_matrix(odom))
        msg = TransformStamped()
        msg.header.frame_id, msg.header.stamp, msg.child_frame_id = self.map_frame, conv.ns_to_stamp(stamp_ns), child
        pose = conv.matrix_to_pose(transform)
        msg.transform.translation.x = pose.position.x
        msg.transform.translation.y = pose.position.y
        msg.transform.translation.z = pose.position.z
        msg.transform.rotation = pose.orientation
        self._broadcaster.sendTransform(msg)
        return ""


def make_slam_tf(node: Any, map_frame: str, odom_frame: str, logger: Callable[[], Any]) -> SlamTf | None:
    try:
        return SlamTf(node, map_frame, odom_frame)
    except ImportError:
        logger().warning(
            "slam: TF is not published: tf2_ros is not installed here (a real ROS 2 has it); ~/camera_pose "
            "and ~/trajectory carry the poses"
        )
        return None
