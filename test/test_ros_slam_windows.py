"""Camera-only ``pose_source: slam`` through the node: learned windows (a tiny random-weight Fast3R saved
here: plumbing, not quality) chained through their shared keyframes into ``map_frame``, with
``~/trajectory`` carrying every chained keyframe; and the settings it needs."""

from __future__ import annotations

import pytest
from ros_harness import (
    LATCHED_QOS,
    REPO_ROOT,
    NodeProcess,
    call_service,
    requires_ros,
    ros_init_for_tests,
    spin_until,
)

pytestmark = [requires_ros, pytest.mark.ros]

CAMERA_ONLY = {
    "image_topics": ["/camera/color/image_raw"],
    "camera_info_topics": ["/camera/color/camera_info"],
    "depth_topics": [""],
    "depth_info_topics": [""],
    "pose_source": "slam",
    "backend": "fast3r",
    "max_keyframes": 4,
    "min_keyframes": 3,
    "window_overlap": 2,
    "autosave": False,
    "build_mesh": False,
    "model_input_size": 256,
    "model_dtype": "fp32",
    "min_image_motion": 0.0,
}


def test_camera_only_windows_are_chained_into_the_map_frame(tmp_path, shared_root) -> None:
    """Chained into map_frame; then ~/load_map is refused (the chain is not saved: windows could not be
    placed in a loaded map) and ~/clear_map starts a new chain with an empty ~/trajectory."""
    from nav_msgs.msg import Path as PathMsg
    from rclpy.node import Node
    from std_srvs.srv import Trigger

    from showroom_ros.models import Fast3R, Fast3RConfig
    from showroom_ros.msg import ReconstructionStatus
    from showroom_ros.srv import LoadMap

    weights = tmp_path / "tiny_fast3r"
    Fast3R(Fast3RConfig.from_json_file(shared_root / "fixtures/fast3r/tiny_golden_config.json")).save_pretrained(
        weights
    )
    ros_init_for_tests()
    client = Node(f"showroom_slam_windows_test_{tmp_path.name[-8:]}")
    statuses: list = []
    paths: list = []
    client.create_subscription(ReconstructionStatus, "/showroom/status", statuses.append, LATCHED_QOS)
    client.create_subscription(PathMsg, "/showroom/trajectory", paths.append, LATCHED_QOS)
    node = NodeProcess(
        "showroom_node",
        {**CAMERA_ONLY, "model": str(weights), "output_dir": str(tmp_path / "out")},
        tmp_path,
        REPO_ROOT / "config" / "showroom.yaml",
    )
    replay = None
    try:
        settled = spin_until(
            client, lambda: not node.alive() or (bool(statuses) and "loading" not in statuses[-1].backend_reason), 120
        )
        assert settled, node.log()[-3000:]
        replay = NodeProcess(
            "showroom_replay",
            {"folder": str(REPO_ROOT / "data" / "redkitchen"), "loop": True, "repeat_each": 1, "publish_depth": False},
            tmp_path,
        )
        # Three windows: the second and third are placed through the keyframes they share.
        ok = spin_until(client, lambda: not node.alive() or (bool(paths) and len(paths[-1].poses) >= 8), 240)
        assert ok and node.alive(), node.log()[-3000:]
        path = paths[-1]
        assert path.header.frame_id == "map" and all(p.header.frame_id == "map" for p in path.poses)
        stamps = [p.header.stamp.sec * 10**9 + p.header.stamp.nanosec for p in path.poses]
        assert stamps == sorted(stamps) and len(set(stamps)) == len(stamps)
        log = node.log()
        assert "placed in map" in log and "not placed" not in log, log[-3000:]
        done = [s for s in statuses if s.num_points > 0]
        assert done and done[-1].frame_id == "map" and not done[-1].metric  # photos alone: no metric scale

        refused = call_service(client, LoadMap, "/showroom/load_map", LoadMap.Request(name="any"), 60)
        assert not refused.success and "window chain is not saved" in refused.message, refused.message
        cleared = call_service(client, Trigger, "/showroom/clear_map", Trigger.Request(), 60)
        assert cleared.success, cleared.message
        assert spin_until(client, lambda: not paths[-1].poses, 30), len(paths[-1].poses)
        # The next window starts the new chain: its trajectory holds that window's keyframes only.
        emptied = len(paths)
        assert spin_until(client, lambda: not node.alive() or len(paths) > emptied, 240), node.log()[-3000:]
        assert 0 < len(paths[emptied].poses) <= CAMERA_ONLY["max_keyframes"], len(paths[emptied].poses)
        assert node.alive() and "Traceback" not in node.log(), node.log()[-3000:]
    finally:
        if replay is not None:
            replay.stop()
        node.stop()
        client.destroy_node()


@pytest.mark.parametrize(
    ("overrides", "said"),
    [
        ({"window_overlap": 1}, "window_overlap >= 2"),
        ({"image_topics": ["/a", "/b"], "camera_info_topics": ["", ""]}, "one camera"),
    ],
)
def test_camera_only_slam_refuses_settings_it_cannot_chain(tmp_path, overrides, said) -> None:
    node = NodeProcess(
        "showroom_node",
        {**CAMERA_ONLY, "output_dir": str(tmp_path / "out"), **overrides},
        tmp_path,
        REPO_ROOT / "config" / "showroom.yaml",
    )
    try:
        node.process.wait(timeout=60)
        assert node.process.returncode == 2, node.log()[-2000:]
        assert said in node.log()
    finally:
        node.stop()
