"""A reconstruction's outputs: ``~/cloud``, ``~/mesh``, ``~/keyframes``, keyframe TF frames, the web
viewer, and the autosave under ``output_dir``.

Every message is stamped with the newest camera frame the result includes (not the publish time), so
a client can tell how old what it sees is. Publishers are lifecycle publishers: while the node is
inactive they deliver nothing.
"""

from __future__ import annotations

import contextlib
import threading
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import numpy as np
from geometry_msgs.msg import PoseArray
from sensor_msgs.msg import Image, PointCloud2
from std_msgs.msg import Header
from visualization_msgs.msg import MarkerArray

from showroom_ros.capture.keyframes import Keyframe
from showroom_ros.io.export import prune_saved, save_reconstruction
from showroom_ros.io.file_names import timestamped_name
from showroom_ros.reconstruction.result import Reconstruction
from showroom_ros.reconstruction.surface import decimate_mesh
from showroom_ros.ros import conversions as conv
from showroom_ros.ros.qos import LATCHED

AUTOSAVE_PREFIX = "reconstruction-"


def newest_stamp_ns(keyframes: list[Keyframe]) -> int:
    """The stamp of the newest camera frame among ``keyframes`` (0 when none has one)."""
    return max((k.stamp_ns for k in keyframes), default=0)


class ResultOutputs:
    """Publishes and saves each reconstruction; ``create_publisher`` is the node's (lifecycle) factory."""

    def __init__(self, node: Any, create_publisher: Callable[..., Any], params: dict[str, Any], output_dir: Path):
        self._node = node
        self.params = params
        self.output_dir = output_dir
        self.cloud_pub = create_publisher(PointCloud2, "~/cloud", LATCHED)
        self.mesh_pub = create_publisher(MarkerArray, "~/mesh", LATCHED)
        self.keyframes_pub = create_publisher(PoseArray, "~/keyframes", LATCHED)
        self.generated_image_pub = create_publisher(Image, "~/generated/image", 10)
        self.generated_mask_pub = create_publisher(Image, "~/generated/mask", 10)
        self._tf_broadcaster = self._make_tf_broadcaster() if params["publish_tf"] else None
        self.viewer = None
        self._autosaves = 0
        # Autosave off the worker: the next window need not wait for a GLB export. One save at a time, and
        # at most one waiting (the newest result wins: an older one waiting would be pruned soon anyway).
        self._saver = ThreadPoolExecutor(max_workers=1, thread_name_prefix="showroom-autosave")
        self._save_lock = threading.Lock()
        self._waiting_save: Reconstruction | None = None

    def _make_tf_broadcaster(self) -> Any:
        try:
            from tf2_ros import StaticTransformBroadcaster
        except ImportError:
            self._node.get_logger().warning("publish_tf is true but tf2_ros is not installed: no keyframe TF frames")
            return None
        return StaticTransformBroadcaster(self._node)

    def start_viewer(self) -> str:
        """Serve the viser viewer; '' when it started, else why not (the node says it and goes on)."""
        from showroom_ros.apps.viewer import ReconstructionViewer, ViewerError

        viewer = ReconstructionViewer()
        try:
            url = viewer.start(self.params["viewer_host"], self.params["viewer_port"])
        except ViewerError as error:
            return f"web viewer not started: {error}"
        self.viewer = viewer
        self._node.get_logger().info(f"web viewer at {url}")
        return ""

    def header(self, frame_id: str, stamp_ns: int) -> Header:
        """A header at the camera stamp ``stamp_ns`` (the clock's now only when no frame is included)."""
        stamp = conv.ns_to_stamp(stamp_ns) if stamp_ns > 0 else self._node.get_clock().now().to_msg()
        return Header(frame_id=frame_id, stamp=stamp)

    def publish(self, result: Reconstruction, keyframes: list[Keyframe]) -> None:
        if self.viewer is not None:
            self.viewer.show(result, keyframe_images=[k.image for k in keyframes])
        header = self.header(result.frame_id, newest_stamp_ns(keyframes))
        self.cloud_pub.publish(conv.points_to_cloud_serialized(result.points, result.colors, header))
        self.keyframes_pub.publish(conv.poses_to_pose_array(result.camera_poses, header))
        if self._tf_broadcaster is not None:
            self._tf_broadcaster.sendTransform(
                [
                    conv.pose_to_transform(pose, header, f"showroom_keyframe_{i}")
                    for i, pose in enumerate(result.camera_poses)
                ]
            )
        if result.mesh is not None:
            display = decimate_mesh(result.mesh, self.params["mesh_max_triangles"])
            self.mesh_pub.publish(conv.mesh_to_markers_serialized(display, header))

    def publish_generated(self, image: np.ndarray, mask: np.ndarray, header: Header) -> None:
        """One generated view as it is made (``~/generated/image``, ``~/generated/mask``)."""
        self.generated_image_pub.publish(conv.rgb_to_image(image, header))
        self.generated_mask_pub.publish(conv.mono_to_image(mask.astype(np.uint8) * 255, header))

    def clear(self, frame_id: str) -> None:
        """Empty ``~/cloud``, ``~/keyframes`` and ``~/mesh`` (``~/reset``)."""
        header = self.header(frame_id, 0)
        empty = np.zeros((0, 3))
        self.cloud_pub.publish(conv.points_to_cloud_serialized(empty, empty.astype(np.uint8), header))
        self.keyframes_pub.publish(PoseArray(header=header))
        self.mesh_pub.publish(conv.mesh_to_markers_serialized(None, header))
        if self.viewer is not None:
            self.viewer.clear()

    def autosave_later(self, result: Reconstruction) -> None:
        """:meth:`autosave` on the saver thread, after the result is published (never on the critical path)."""
        with self._save_lock:
            queued = self._waiting_save is not None
            self._waiting_save = result
        if not queued:
            with contextlib.suppress(RuntimeError):  # the node is stopping: nothing more is saved
                self._saver.submit(self._save_waiting)

    def _save_waiting(self) -> None:
        with self._save_lock:
            result, self._waiting_save = self._waiting_save, None
        if result is not None:
            self.autosave(result)

    def autosave(self, result: Reconstruction) -> str:
        """Save, then prune the oldest autosaves (``autosave_keep``, ``autosave_max_mb``); returns what to
        say ('' when nothing). A full or read-only disk is a warning, never a failed reconstruction."""
        self._autosaves += 1
        name = timestamped_name(AUTOSAVE_PREFIX.rstrip("-"), sequence=self._autosaves)
        try:
            save_reconstruction(result, self.output_dir, name)
            pruned = prune_saved(
                self.output_dir,
                AUTOSAVE_PREFIX,
                keep=int(self.params["autosave_keep"]),
                max_bytes=int(self.params["autosave_max_mb"] * 1e6),
            )
        except OSError as error:
            self._node.get_logger().warning(f"autosave under {self.output_dir} failed, the node goes on: {error}")
            return ""
        if not pruned:
            return ""
        message = f"autosave: pruned {len(pruned)} old reconstruction(s): {', '.join(pruned)}"
        self._node.get_logger().info(message)
        return message

    def close(self) -> None:
        """Cleanup or stop: no more autosaves (one running is abandoned: its temporaries are removed)."""
        self._saver.shutdown(wait=False, cancel_futures=True)
        self.stop_viewer()

    def stop_viewer(self) -> None:
        if self.viewer is not None:
            self.viewer.stop()
            self.viewer = None
