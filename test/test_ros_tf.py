"""pose_source: tf — the normal case on a real ROS 2. tf2_ros/tf2_msgs have no PyPI wheels, so this
runs only where they import (a real ROS 2 install); the topic source shares all code after the lookup."""

from __future__ import annotations

import importlib.util

import pytest
from ros_harness import LATCHED_QOS, REPO_ROOT, NodeProcess, requires_ros, ros_init_for_tests, spin_until

TF_MISSING = importlib.util.find_spec("tf2_ros") is None or importlib.util.find_spec("tf2_msgs") is None
pytestmark = [
    requires_ros,
    pytest.mark.ros,
    pytest.mark.skipif(TF_MISSING, reason="tf2_ros/tf2_msgs are not installable from PyPI; needs a real ROS 2"),
    pytest.mark.may_skip_on_ci("CI's ROS 2 comes from PyPI wheels, and tf2_ros/tf2_msgs have none"),
]


def test_node_takes_camera_poses_from_tf(tmp_path):
    from rclpy.node import Node

    from showroom_ros.msg import ReconstructionStatus

    ros_init_for_tests()
    client = Node("showroom_tf_test")
    params = {
        "image_topics": ["/camera/color/image_raw"],
        "camera_info_topics": ["/camera/color/camera_info"],
        "depth_topics": ["/camera/depth/image_raw"],
        "depth_info_topics": ["/camera/depth/camera_info"],
        "pose_source": "tf",
        "output_dir": str(tmp_path / "out"),
        "autosave": False,
    }
    node = NodeProcess("showroom_node", params, tmp_path, REPO_ROOT / "config" / "showroom.yaml")
    replay = NodeProcess(
        "showroom_replay",
        {"folder": str(REPO_ROOT / "data" / "redkitchen"), "publish_tf": True, "repeat_each": 3},
        tmp_path,
    )
    try:
        statuses: list = []
        client.create_subscription(ReconstructionStatus, "/showroom/status", statuses.append, LATCHED_QOS)
        ok = spin_until(client, lambda: bool(statuses) and statuses[-1].num_points > 0, 150)
        assert ok, node.log()
        assert statuses[-1].frame_id == "map" and statuses[-1].metric
    finally:
        replay.stop()
        node.stop()
        client.destroy_node()
