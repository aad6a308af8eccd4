"""~/generate_views through the running node: bad requests are refused with reasons, OpenCV views
come back with masks and poses, a tiny random SD2-architecture diffusers pipeline (built and saved
by the test) runs through the node's loader, and "3D generate" re-runs the reconstruction."""

from __future__ import annotations

import pytest
from ros_harness import LATCHED_QOS, REPO_ROOT, NodeProcess, call_service, requires_ros, ros_init_for_tests, spin_until
from test_generation_inpainting import tiny_sd2_inpainting_pipeline

pytestmark = [requires_ros, pytest.mark.ros]


def test_generate_views_service(tmp_path):
    from rclpy.node import Node

    from showroom_ros.msg import ReconstructionStatus
    from showroom_ros.ros.replay_node import SHOWROOM_PARAMETERS_FOR_REPLAY
    from showroom_ros.srv import GenerateViews

    pipeline_dir = tmp_path / "tiny_sd2"
    tiny_sd2_inpainting_pipeline().save_pretrained(pipeline_dir)
    ros_init_for_tests()
    client = Node("showroom_generate_test")
    params = {
        **SHOWROOM_PARAMETERS_FOR_REPLAY,
        "output_dir": str(tmp_path / "out"),
        "autosave": False,
        "inpaint_model": str(pipeline_dir),
        "generation_backend": "opencv",
        "generation_device": "cpu",
        "build_mesh": False,  # the mesh is tested elsewhere; Poisson is the slowest stage
        # One reconstruction to generate from: no windows queued after it, no idle trigger mid-test.
        "continuous": False,
        "idle_reconstruct_s": 0.0,
    }
    node = NodeProcess("showroom_node", params, tmp_path, REPO_ROOT / "config" / "showroom.yaml")
    replay = None
    try:
        statuses: list = []
        client.create_subscription(ReconstructionStatus, "/showroom/status", statuses.append, LATCHED_QOS)

        def generate(**fields) -> GenerateViews.Response:
            request = GenerateViews.Request(keyframe_index=0, num_views=1, **fields)
            try:
                return call_service(client, GenerateViews, "/showroom/generate_views", request, timeout=240)
            except AssertionError as error:
                raise AssertionError(f"{error}\n{node.log()}") from None

        early = generate()
        assert not early.success and "no reconstruction yet" in early.message

        replay = NodeProcess(
            "showroom_replay",
            {"folder": str(REPO_ROOT / "data" / "redkitchen"), "loop": True, "repeat_each": 2},
            tmp_path,
        )
        ok = spin_until(client, lambda: bool(statuses) and statuses[-1].num_points > 0, 200)
        assert ok, node.log()
        replay.stop()
        points_before = statuses[-1].num_points

        bad = {
            "keyframe index 7 is out of range": {"keyframe_index": 7},
            "number of views must be": {"num_views": 100},
            "at most 16 views": {"yaw_degrees": [5.0] * 100},
            "steps must be": {"steps": 100000},
            "characters; at most": {"prompt": "wall " * 2000},
            "unknown inpainting backend": {"backend": "dalle"},
        }
        for expected, fields in bad.items():
            request_fields = {"num_views": 1, **fields}
            response = call_service(
                client,
                GenerateViews,
                "/showroom/generate_views",
                GenerateViews.Request(**{"keyframe_index": 0, **request_fields}),
            )
            assert not response.success and expected in response.message, (fields, response.message)
        zero = call_service(
            client, GenerateViews, "/showroom/generate_views", GenerateViews.Request(keyframe_index=0, num_views=0)
        )
        assert not zero.success and "number of views" in zero.message

        views = generate(yaw_degrees=[20.0, -20.0], backend="opencv")
        assert views.success, views.message
        assert len(views.images) == len(views.masks) == len(views.poses) == len(views.accepted) == 2
        assert views.images[0].width == 640 and views.images[0].encoding == "rgb8"
        assert views.masks[0].encoding == "mono8" and max(views.masks[0].data) == 255  # a turned view has holes
        assert views.poses[0].header.frame_id == "map"
        assert "OpenCV" in views.message

        diffusion = generate(yaw_degrees=[15.0], backend="diffusers", steps=2, seed=3)
        assert diffusion.success, diffusion.message
        assert "Stable Diffusion inpainting" in diffusion.message and str(pipeline_dir) in diffusion.message

        completed = generate(yaw_degrees=[25.0], backend="opencv", add_to_reconstruction=True)
        assert completed.success, completed.message
        # No layout model is configured, so views are accepted unchecked (and the reason says so).
        assert completed.accepted == [True] and "layout not checked" in completed.reasons[0]
        assert "reconstructed with 1 generated keyframe" in completed.message
        assert spin_until(client, lambda: statuses[-1].num_points != points_before, 60), node.log()
        assert node.alive(), node.log()
    finally:
        if replay is not None:
            replay.stop()
        node.stop()
        client.destroy_node()


def test_generation_queues_behind_continuous_windows_and_only_one_at_a_time(tmp_path):
    """A moving robot (continuous windows from a looping replay) still gets its views: the request waits
    behind the running window instead of being refused, a second request while the first waits is
    refused with a reason, and windows go on after the generation."""
    from rclpy.node import Node

    from showroom_ros.msg import ReconstructionStatus
    from showroom_ros.ros.replay_node import SHOWROOM_PARAMETERS_FOR_REPLAY
    from showroom_ros.srv import GenerateViews

    ros_init_for_tests()
    client = Node("showroom_generate_queue_test")
    params = {
        **SHOWROOM_PARAMETERS_FOR_REPLAY,
        "output_dir": str(tmp_path / "out"),
        "autosave": False,
        "generation_backend": "opencv",
        "backend": "rgbd",
        "min_keyframes": 3,
        "max_keyframes": 3,
        "continuous": True,
    }
    node = NodeProcess("showroom_node", params, tmp_path, REPO_ROOT / "config" / "showroom.yaml")
    replay = NodeProcess(
        "showroom_replay", {"folder": str(REPO_ROOT / "data" / "redkitchen"), "loop": True, "repeat_each": 2}, tmp_path
    )
    try:
        statuses: list = []
        client.create_subscription(ReconstructionStatus, "/showroom/status", statuses.append, LATCHED_QOS)
        # A first window done, and the next one running: the moment a request used to be refused.
        assert spin_until(client, lambda: any(s.num_points > 0 for s in statuses), 200), node.log()
        service = client.create_client(GenerateViews, "/showroom/generate_views")
        assert service.wait_for_service(timeout_sec=20.0)
        # Sixteen views keep the first generation busy for seconds, so the second request, sent right
        # behind it, meets it queued or running. A window can end between seeing "reconstructing" and the
        # request's arrival; then the generation was not queued, and the next window is tried.
        long_request = GenerateViews.Request(keyframe_index=0, num_views=16, backend="opencv")
        short_request = GenerateViews.Request(keyframe_index=0, yaw_degrees=[20.0], backend="opencv")
        for _attempt in range(5):
            assert spin_until(client, lambda: statuses[-1].state == "reconstructing", 120), node.log()
            since = len(statuses)
            first = service.call_async(long_request)
            second = service.call_async(short_request)
            pending = (first, second)
            assert spin_until(client, lambda pending=pending: all(f.done() for f in pending), 240), node.log()
            if any("generation queued" in s.message for s in statuses[since:]):
                break
        else:
            raise AssertionError(f"no request was queued behind a window in 5 tries\n{node.log()}")
        assert not second.result().success and "already queued or running" in second.result().message
        answer = first.result()
        assert answer.success, answer.message
        assert len(answer.images) == 16 and answer.images[0].width == 640
        generated_at = len(statuses)
        # The robot's windows carry on after the generation.
        assert spin_until(
            client, lambda: any("reconstruction done" in s.message for s in statuses[generated_at:]), 120
        ), node.log()
        assert node.alive(), node.log()
    finally:
        replay.stop()
        node.stop()
        client.destroy_node()
