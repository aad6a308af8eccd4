"""RGB-only keyframes through the node: the learned backend with a tiny random-weight Fast3R saved
by the test in the Hugging Face layout (this proves plumbing, not quality: random weights predict
meaningless geometry), registered to the pose topic's map frame; and broken weights, which must
leave the node running, explained in ~/status, with auto falling back to COLMAP (sfm)."""

from __future__ import annotations

import numpy as np
import pytest
from ros_harness import LATCHED_QOS, REPO_ROOT, NodeProcess, requires_ros, ros_init_for_tests, spin_until

pytestmark = [requires_ros, pytest.mark.ros]

RGB_ONLY = {
    "image_topics": ["/camera/color/image_raw"],
    "camera_info_topics": ["/camera/color/camera_info"],
    "depth_topics": [""],
    "depth_info_topics": [""],
    "pose_source": "topic",
    "pose_topics": ["/camera/pose"],
    "autosave": False,
    "build_mesh": False,
    "model_input_size": 256,
    "model_dtype": "fp32",
}


def _run(tmp_path, params):
    from rclpy.node import Node
    from sensor_msgs.msg import PointCloud2

    from showroom_ros.msg import ReconstructionStatus

    ros_init_for_tests()
    client = Node(f"showroom_backend_test_{tmp_path.name[-8:]}")
    node = NodeProcess(
        "showroom_node",
        {**RGB_ONLY, "output_dir": str(tmp_path / "out"), **params},
        tmp_path,
        REPO_ROOT / "config" / "showroom.yaml",
    )
    replay = None
    statuses: list = []
    maps: list = []
    client.create_subscription(ReconstructionStatus, "/showroom/status", statuses.append, LATCHED_QOS)
    client.create_subscription(PointCloud2, "/showroom/map", maps.append, LATCHED_QOS)
    try:
        # Start the replay once the model state is settled (loaded or failed), so `auto` sees it.
        spin_until(client, lambda: bool(statuses) and "loading" not in statuses[-1].backend_reason, 120)
        replay = NodeProcess(
            "showroom_replay",
            {"folder": str(REPO_ROOT / "data" / "redkitchen"), "loop": True, "repeat_each": 2, "publish_depth": False},
            tmp_path,
        )
        ok = spin_until(client, lambda: bool(statuses) and statuses[-1].num_points > 0, 240)
        assert ok and node.alive(), node.log()
        assert spin_until(client, lambda: bool(maps) and maps[-1].width > 0, 30), node.log()
        return statuses, node.log()
    finally:
        if replay is not None:
            replay.stop()
        node.stop()
        client.destroy_node()


@pytest.mark.parametrize("backend", ["fast3r", "showroom"])
def test_learned_backend_reconstructs_rgb_keyframes_in_the_map_frame(tmp_path, shared_root, backend):
    from showroom_ros.models import Fast3R, Fast3RConfig, student_config

    config = Fast3RConfig.from_json_file(shared_root / "fixtures/fast3r/tiny_golden_config.json")
    weights = tmp_path / f"tiny_{backend}"
    if backend == "fast3r":
        Fast3R(config).save_pretrained(weights)
        params = {"model": str(weights)}
    else:  # the student (half-width DPT heads), chosen explicitly
        Fast3R(student_config(config)).save_pretrained(weights)
        params = {"model": "", "student_model": str(weights), "backend": "showroom"}
    # Random weights predict no surface: ~/map merges the clouds here (the TSDF map has its own tests).
    params["volumetric_map"] = False
    statuses, log = _run(tmp_path, params)
    final = statuses[-1]
    assert final.backend == backend, log
    # Known poses on the pose topic: a similarity fit to them puts the result in map at metric scale.
    assert final.frame_id == "map" and final.metric, log
    assert "registration:" in log and f"{backend} model:" in log


def test_learned_backend_runs_on_an_inference_engine_in_the_node(tmp_path, shared_root):
    """model_engine through a real node process: the engine is built at the first window's image size,
    gated, cached where model_engine_cache_dir says, and the node reconstructs on it."""
    pytest.importorskip("onnxruntime")
    from showroom_ros.models import Fast3R, Fast3RConfig

    config = Fast3RConfig.from_json_file(shared_root / "fixtures/fast3r/tiny_golden_config.json")
    weights = tmp_path / "tiny_fast3r"
    Fast3R(config).save_pretrained(weights)
    cache = tmp_path / "engines"
    params = {
        "model": str(weights),
        "backend": "fast3r",
        "volumetric_map": False,
        "model_engine": "onnxruntime",
        "model_engine_cache_dir": str(cache),
        "model_engine_cache_max_gb": 1.0,
    }
    statuses, log = _run(tmp_path, params)
    final = statuses[-1]
    assert final.backend == "fast3r" and final.frame_id == "map", log
    assert "engine onnxruntime fp32" in log, log
    assert not any("eager torch" in note for note in final.notes), final.notes
    built = list(cache.glob("onnxruntime-fp32-256x192-*/meta.json"))
    assert len(built) == 1, (list(cache.iterdir()) if cache.exists() else "no cache", log)


def test_broken_weights_leave_the_node_running_and_auto_falls_back_to_sfm(tmp_path):
    broken = tmp_path / "broken"
    broken.mkdir()
    (broken / "config.json").write_text("{not json")
    statuses, log = _run(tmp_path, {"model": str(broken)})
    assert any("fast3r" in s.backend_reason and "failed" in s.backend_reason for s in statuses), log
    final = statuses[-1]
    assert final.backend == "sfm" and final.frame_id == "map" and final.metric, log
    # Defect 8: a sparse result says so in ~/status, and what would make it dense.
    sparse = [note for note in final.notes if "sparse" in note]
    assert sparse and "depth" in sparse[0] and "weights" in sparse[0], final.notes
    assert "fast3r model:" in log and "ERROR" in log
    assert np.isfinite(final.last_duration_s)
