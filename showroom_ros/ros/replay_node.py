"""ROS 2 node ``showroom_replay``: publish a frame folder as a camera would.

For the demo and the tests, and for trying the node without a robot: colour (rgb8), depth
(16UC1 mm), both CameraInfos and the camera pose (PoseStamped in ``map_frame``) of each frame of
a ``frames_c2w.txt`` folder (the layout of data/redkitchen), stamped with the current time.
"""

from __future__ import annotations

import sys
import time
from pathlib import Path

import numpy as np
from geometry_msgs.msg import PoseStamped
from rclpy.node import Node
from sensor_msgs.msg import CameraInfo, CompressedImage, Image
from std_msgs.msg import Header

from showroom_ros.io.datasets import load_frame_folder
from showroom_ros.ros import conversions as conv
from showroom_ros.ros.entry import run_node

# The showroom node's camera parameters that match this node's default topics (demo, tests, README).
SHOWROOM_PARAMETERS_FOR_REPLAY = {
    "image_topics": ["/camera/color/image_raw"],
    "camera_info_topics": ["/camera/color/camera_info"],
    "depth_topics": ["/camera/depth/image_raw"],
    "depth_info_topics": ["/camera/depth/camera_info"],
    "pose_source": "topic",
    "pose_topics": ["/camera/pose"],
    "model": "",  # the replayed data has depth; no 2.6 GB Fast3R download for a demo
}


class ReplayNode(Node):
    def __init__(self) -> None:
        super().__init__("showroom_replay")
        declare = self.declare_parameter
        self.folder = Path(declare("folder", "data/redkitchen").value).expanduser()
        self.rate_hz = float(declare("rate_hz", 5.0).value)
        self.repeat_each = int(declare("repeat_each", 3).value)
        self.loop = bool(declare("loop", False).value)
        self.start_delay = float(declare("start_delay", 1.0).value)
        self.map_frame = declare("map_frame", "map").value
        self.frame_id = declare("camera_frame", "camera_color_optical_frame").value
        self.publish_depth = bool(declare("publish_depth", True).value)
        self.publish_poses = bool(declare("publish_poses", True).value)
        self.compressed = declare("image_transport", "raw").value == "compressed"
        self.tf_pub = None
        if bool(declare("publish_tf", False).value):
            # tf2_msgs exists on a real ROS 2 only; asked for without it is a configuration error.
            try:
                from tf2_msgs.msg import TFMessage
            except ImportError as error:
                raise ValueError("publish_tf needs tf2_msgs, which is not installed") from error
            self.tf_pub = self.create_publisher(TFMessage, "/tf", 100)
        self.keyframes = load_frame_folder(self.folder, with_depth=self.publish_depth, with_poses=self.publish_poses)
        if not self.keyframes:
            raise ValueError(f"no frames found in {self.folder}")
        qos = 10
        image_topic = declare("image_topic", "/camera/color/image_raw").value
        depth_topic = declare("depth_topic", "/camera/depth/image_raw").value
        if self.compressed:  # the topic names image_transport's plugins use
            self.image_pub = self.create_publisher(CompressedImage, image_topic + "/compressed", qos)
            self.depth_pub = self.create_publisher(CompressedImage, depth_topic + "/compressedDepth", qos)
        else:
            self.image_pub = self.create_publisher(Image, image_topic, qos)
            self.depth_pub = self.create_publisher(Image, depth_topic, qos)
        self.info_pub = self.create_publisher(CameraInfo, declare("info_topic", "/camera/color/camera_info").value, qos)
        self.depth_info_pub = self.create_publisher(
            CameraInfo, declare("depth_info_topic", "/camera/depth/camera_info").value, qos
        )
        self.pose_pub = self.create_publisher(PoseStamped, declare("pose_topic", "/camera/pose").value, qos)
        self._sent = 0
        self._started = time.monotonic()
        self.create_timer(1.0 / self.rate_hz, self._tick)
        self.get_logger().info(f"replaying {len(self.keyframes)} frames from {self.folder} at {self.rate_hz} Hz")

    @property
    def finished(self) -> bool:
        return not self.loop and self._sent >= len(self.keyframes) * self.repeat_each

    def _tick(self) -> None:
        if time.monotonic() - self._started < self.start_delay or self.finished:
            return
        keyframe = self.keyframes[(self._sent // self.repeat_each) % len(self.keyframes)]
        self._sent += 1
        stamp = self.get_clock().now().to_msg()
        camera = Header(stamp=stamp, frame_id=self.frame_id)
        if keyframe.pose is not None:
            pose = conv.matrix_to_pose_stamped(keyframe.pose, Header(stamp=stamp, frame_id=self.map_frame))
            self.pose_pub.publish(pose)
            if self.tf_pub is not None:
                self.tf_pub.publish(conv.pose_to_tf_message(pose, self.frame_id))
        if keyframe.depth is not None:
            millimetres = np.nan_to_num(keyframe.depth * 1000.0, nan=0.0).round().clip(0, 65535).astype(np.uint16)
            self.depth_pub.publish(
                conv.depth_to_compressed_depth(millimetres, camera)
                if self.compressed
                else conv.mono_to_image(millimetres, camera)
            )
            depth_intrinsics = keyframe.depth_intrinsics or keyframe.intrinsics
            if depth_intrinsics is not None:
                self.depth_info_pub.publish(conv.intrinsics_to_camera_info(depth_intrinsics, camera))
        if keyframe.intrinsics is not None:
            self.info_pub.publish(conv.intrinsics_to_camera_info(keyframe.intrinsics, camera))
        self.image_pub.publish(
            conv.rgb_to_compressed(keyframe.image, camera)
            if self.compressed
            else conv.rgb_to_image(keyframe.image, camera)
        )


def main(args: list[str] | None = None) -> int:
    return run_node(ReplayNode, "showroom_replay", args, finished=lambda node: node.finished)


if __name__ == "__main__":
    sys.exit(main())
