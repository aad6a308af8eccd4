"""A few hundred malformed messages, then a valid set: the node must survive and still reconstruct."""

from __future__ import annotations

import time

import numpy as np
import pytest
from ros_harness import REPO_ROOT, NodeProcess, call_service, requires_ros, ros_init_for_tests, spin_until

pytestmark = [requires_ros, pytest.mark.ros]


def _malformed_messages(rng: np.random.Generator):
    """(topic kind, message) pairs covering every bad-input class the issue lists."""
    from geometry_msgs.msg import PoseStamped
    from sensor_msgs.msg import CameraInfo, Image
    from std_msgs.msg import Header

    from showroom_ros.geometry.camera import CameraIntrinsics
    from showroom_ros.ros.conversions import intrinsics_to_camera_info, mono_to_image, rgb_to_image

    def header():
        return Header(frame_id="camera_color_optical_frame", stamp=Time_now())

    good_rgb = rng.integers(0, 255, (48, 64, 3), dtype=np.uint8)
    cases = []
    for encoding in ("rgb8", "bgr8", "mono8", "16UC1", "32FC1", "bayer_rggb8", "jpeg", "", "rgb16"):
        msg = rgb_to_image(good_rgb, header())
        msg.encoding = encoding
        cases.append(("image", msg))
    truncated = rgb_to_image(good_rgb, header())
    truncated.data = truncated.data[: len(truncated.data) // 2]
    cases.append(("image", truncated))
    cases.append(("image", Image(header=header(), height=0, width=0, encoding="rgb8", step=0)))
    small_step = rgb_to_image(good_rgb, header())
    small_step.step = 10
    cases.append(("image", small_step))
    cases.append(("image", rgb_to_image(np.zeros((480, 640, 3), np.uint8), header())))  # size != CameraInfo
    for depth in (
        np.full((480, 640), np.nan, np.float32),
        np.full((480, 640), np.inf, np.float32),
        np.zeros((480, 640), np.uint16),
        rng.random((7, 9)).astype(np.float32),
    ):
        cases.append(("depth", mono_to_image(depth, header())))
    wrong_depth = mono_to_image(np.zeros((480, 640), np.uint8), header())
    cases.append(("depth", wrong_depth))
    truncated_depth = mono_to_image(np.ones((480, 640), np.uint16), header())
    truncated_depth.data = truncated_depth.data[:100]
    cases.append(("depth", truncated_depth))
    cases.append(("info", CameraInfo(header=header(), width=640, height=480)))  # K all zero
    bad_info = intrinsics_to_camera_info(CameraIntrinsics(525, 525, 320, 240, 640, 480), header())
    bad_info.width = 0
    cases.append(("info", bad_info))
    zero_quaternion = PoseStamped(header=Header(frame_id="map", stamp=Time_now()))
    zero_quaternion.pose.orientation.w = 0.0
    cases.append(("pose", zero_quaternion))
    nan_pose = PoseStamped(header=Header(frame_id="map", stamp=Time_now()))
    nan_pose.pose.orientation.w = 1.0
    nan_pose.pose.position.x = float("nan")
    cases.append(("pose", nan_pose))
    wrong_frame = PoseStamped(header=Header(frame_id="odom", stamp=Time_now()))
    wrong_frame.pose.orientation.w = 1.0
    cases.append(("pose", wrong_frame))
    return cases


def Time_now():
    from builtin_interfaces.msg import Time

    ns = time.time_ns()
    return Time(sec=ns // 1_000_000_000, nanosec=ns % 1_000_000_000)


def test_fuzzed_inputs_leave_the_node_running_and_a_valid_set_still_reconstructs(tmp_path):
    from geometry_msgs.msg import PoseStamped
    from rclpy.node import Node
    from sensor_msgs.msg import CameraInfo, Image
    from std_srvs.srv import Trigger

    from showroom_ros.geometry.camera import CameraIntrinsics
    from showroom_ros.msg import ReconstructionStatus
    from showroom_ros.ros.conversions import intrinsics_to_camera_info
    from showroom_ros.ros.replay_node import SHOWROOM_PARAMETERS_FOR_REPLAY
    from showroom_ros.srv import Reconstruct

    ros_init_for_tests()
    client = Node("showroom_fuzzer")
    params = {
        **SHOWROOM_PARAMETERS_FOR_REPLAY,
        "evaluation_rate_hz": 60.0,
        "wait_timeout": 0.3,
        "output_dir": str(tmp_path / "out"),
        "autosave": False,
        "build_mesh": False,  # the mesh is tested elsewhere; Poisson is the slowest stage
    }
    node = NodeProcess("showroom_node", params, tmp_path, REPO_ROOT / "config" / "showroom.yaml")
    try:
        statuses: list = []
        client.create_subscription(ReconstructionStatus, "/showroom/status", statuses.append, 10)
        publishers = {
            "image": client.create_publisher(Image, "/camera/color/image_raw", 10),
            "depth": client.create_publisher(Image, "/camera/depth/image_raw", 10),
            "info": client.create_publisher(CameraInfo, "/camera/color/camera_info", 10),
            "pose": client.create_publisher(PoseStamped, "/camera/pose", 10),
        }
        assert spin_until(client, lambda: publishers["image"].get_subscription_count() > 0, 30), node.log()
        # The valid CameraInfo first, so image checks past the "no CameraInfo" stage are reached too.
        publishers["info"].publish(intrinsics_to_camera_info(CameraIntrinsics(50, 50, 32, 24, 64, 48), _header()))
        rng = np.random.default_rng(0)
        # Best-effort inputs may drop some of a burst, so rounds of every malformed case go out until
        # at least 300 were sent and the node has warned about each kind (bounded: 90 s).
        expected = ("unsupported image encoding", "truncated", "empty", "no calibration", "bad pose")
        sent, deadline = 0, time.monotonic() + 90
        while time.monotonic() < deadline:
            for kind, msg in _malformed_messages(rng):
                publishers[kind].publish(msg)
                sent += 1
                rclpy_spin(client, 0.01)
            if sent >= 300 and all(text in node.log() for text in expected):
                break
        assert spin_until(client, lambda: bool(statuses) and statuses[-1].frames_rejected >= 50, 20), node.log()
        assert node.alive(), node.log()
        log = node.log()
        for text in expected:
            assert text in log, f"no warning mentioning '{text}'"

        replay = NodeProcess(
            "showroom_replay",
            {"folder": str(REPO_ROOT / "data" / "redkitchen"), "rate_hz": 5.0, "repeat_each": 2, "loop": True},
            tmp_path,
        )
        try:
            ok = spin_until(client, lambda: statuses[-1].num_points > 0 or not node.alive(), 150)
            assert node.alive() and ok, f"{statuses[-1]}\n{node.log()}"
        finally:
            replay.stop()
        assert call_service(client, Trigger, "/showroom/reset", Trigger.Request()).success
        again = call_service(client, Reconstruct, "/showroom/reconstruct", Reconstruct.Request())
        assert not again.success and "need at least 3 keyframes, have 0" in again.message
    finally:
        node.stop()
        client.destroy_node()


def _header():
    from std_msgs.msg import Header

    return Header(frame_id="camera_color_optical_frame", stamp=Time_now())


def rclpy_spin(node, seconds: float) -> None:
    import rclpy

    rclpy.spin_once(node, timeout_sec=seconds)
