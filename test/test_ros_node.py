"""The showroom node as its own process, driven by real rclpy publishers and clients.

The replay node (another process) publishes the 5 bundled redkitchen keyframes: colour, 16UC1
depth, both CameraInfos and ground-truth poses on a pose topic. The node must reconstruct them on
its own (auto_reconstruct) and publish a cloud that matches the core pipeline run in-process on
the same files, keyframe poses equal to the ground truth, and a mesh.
"""

from __future__ import annotations

import socket
import urllib.request
from pathlib import Path

import numpy as np
import pytest
from ros_harness import (
    LATCHED_QOS,
    REPO_ROOT,
    ROS_AVAILABLE,
    call_service,
    requires_ros,
    spin_until,
)

pytestmark = [requires_ros, pytest.mark.ros]

if ROS_AVAILABLE:
    from showroom_ros.ros.input_node import events_executor_available
    from showroom_ros.ros.replay_node import SHOWROOM_PARAMETERS_FOR_REPLAY
else:  # collected (and skipped) without ROS
    SHOWROOM_PARAMETERS_FOR_REPLAY = {}

CAMERA_PARAMS = SHOWROOM_PARAMETERS_FOR_REPLAY


class Latest:
    """Keeps the last message of a topic."""

    def __init__(self, node, msg_type, topic, qos=None):
        self.msg = None
        self.count = 0
        self.sub = node.create_subscription(msg_type, topic, self._store, qos or LATCHED_QOS)

    def _store(self, msg):
        self.msg, self.count = msg, self.count + 1


def _showroom(processes, tmp_path: Path, **overrides):
    params = {**CAMERA_PARAMS, "output_dir": str(tmp_path / "out"), "autosave": True, **overrides}
    return processes("showroom_node", params, REPO_ROOT / "config" / "showroom.yaml")


def _replay(processes, **overrides):
    # Looping: a frame lost on the way (best effort, busy machine) comes round again.
    return processes(
        "showroom_replay",
        {"folder": str(REPO_ROOT / "data" / "redkitchen"), "rate_hz": 5.0, "repeat_each": 2, "loop": True, **overrides},
    )


def _wait_for_points(client, node, status, replay=None, timeout=150.0):
    def reconstructed() -> bool:
        if replay is not None and status.msg is not None and status.msg.state == "reconstructing":
            replay.stop()  # the node has its keyframes: no second set while the test inspects the first
        return (status.msg is not None and status.msg.num_points > 0) or not node.alive()

    ok = spin_until(client, reconstructed, timeout)
    assert node.alive(), node.log()
    assert ok and status.msg.num_points > 0, f"no reconstruction: {status.msg}\n{node.log()}"


def test_node_reconstructs_replayed_keyframes_and_serves(client, processes, tmp_path):
    from geometry_msgs.msg import PoseArray
    from sensor_msgs.msg import PointCloud2
    from std_srvs.srv import Trigger
    from visualization_msgs.msg import Marker, MarkerArray

    from showroom_ros.io.datasets import load_frame_folder
    from showroom_ros.msg import ReconstructionStatus
    from showroom_ros.reconstruction.pipeline import PipelineConfig, ReconstructionPipeline, default_backends
    from showroom_ros.ros.conversions import cloud_to_points
    from showroom_ros.srv import Reconstruct, SaveReconstruction

    # The default model (the Fast3R release on the hub) cannot load offline: the node must say so and
    # fall back to RGB-D fusion.
    node = _showroom(processes, tmp_path, model="jedyang97/Fast3R_ViT_Large_512")
    status = Latest(client, ReconstructionStatus, "/showroom/status")
    assert spin_until(client, lambda: status.msg is not None, 30), node.log()

    # An empty buffer is refused with a reason, and the node stays up.
    empty = call_service(client, Reconstruct, "/showroom/reconstruct", Reconstruct.Request())
    assert not empty.success and "at least 3 keyframes" in empty.message

    _wait_for_points(client, node, status, _replay(processes))

    # Late subscribers still get everything (reliable + transient local).
    cloud = Latest(client, PointCloud2, "/showroom/cloud")
    poses = Latest(client, PoseArray, "/showroom/keyframes")
    mesh = Latest(client, MarkerArray, "/showroom/mesh")
    assert spin_until(client, lambda: cloud.msg and poses.msg and mesh.msg, 20), node.log()
    assert cloud.msg.header.frame_id == "map" and status.msg.frame_id == "map" and status.msg.metric
    assert status.msg.backend == "rgbd" and "fast3r" in status.msg.backend_reason, status.msg.backend_reason
    assert "fast3r model:" in node.log()
    # input_executor: auto spins the camera inputs on the C++ EventsExecutor where rclpy has it.
    expected_executor = "EventsExecutor" if events_executor_available() else "SingleThreadedExecutor"
    assert f"camera inputs spun by {expected_executor}" in node.log()
    points, colors = cloud_to_points(cloud.msg)
    assert len(points) == status.msg.num_points

    # Same files through the core pipeline in this process: the ROS path must not change the result.
    keyframes = load_frame_folder(REPO_ROOT / "data" / "redkitchen")
    expected = ReconstructionPipeline(PipelineConfig(build_mesh=False), default_backends()).run(keyframes)
    assert abs(len(points) - expected.num_points) <= 0.01 * expected.num_points
    np.testing.assert_allclose(points.mean(axis=0), expected.points.mean(axis=0), atol=2e-3)
    np.testing.assert_allclose(colors.mean(axis=0), expected.colors.mean(axis=0), atol=1.0)

    received = np.array([[p.position.x, p.position.y, p.position.z] for p in poses.msg.poses])
    truth = np.array([k.pose[:3, 3] for k in keyframes])
    assert received.shape == (5, 3)
    # The looping replay may deliver the frames in another order: each ground-truth pose once.
    gaps = np.linalg.norm(received[:, None] - truth[None], axis=2)
    assert sorted(gaps.argmin(axis=1)) == [0, 1, 2, 3, 4] and gaps.min(axis=1).max() < 1e-6

    triangles = [m for m in mesh.msg.markers if m.type == Marker.TRIANGLE_LIST]
    assert mesh.msg.markers[0].action == Marker.DELETEALL and triangles
    assert all(len(m.points) % 3 == 0 and len(m.points) == len(m.colors) for m in triangles)
    assert sum(len(m.points) for m in triangles) // 3 <= 100_000
    assert status.msg.num_triangles > 0

    # ~/save writes under output_dir only.
    out = tmp_path / "out"
    for bad in ("../escape", "a/b", "..", "/etc/passwd"):
        response = call_service(client, SaveReconstruction, "/showroom/save", SaveReconstruction.Request(name=bad))
        assert not response.success and "invalid name" in response.message, bad
    saved = call_service(client, SaveReconstruction, "/showroom/save", SaveReconstruction.Request(name="kitchen"))
    assert saved.success, saved.message
    assert saved.files and all(Path(f).parent == out.resolve() and Path(f).stat().st_size > 0 for f in saved.files)
    assert not (tmp_path / "escape").exists()
    autosaved = [f for f in out.iterdir() if f.name.startswith("reconstruction-")]
    assert autosaved, "autosave wrote nothing"

    # ~/reset clears the buffer and the last result (an empty ~/cloud replaces it); the map stays.
    reset = call_service(client, Trigger, "/showroom/reset", Trigger.Request())
    assert reset.success, reset.message
    assert spin_until(client, lambda: cloud.msg is not None and cloud.msg.width == 0, 10)
    assert node.alive(), node.log()


def test_node_reconstructs_from_compressed_transport(client, processes, tmp_path):
    from showroom_ros.msg import ReconstructionStatus

    port = _free_port()
    # The Python SingleThreadedExecutor path (Humble/Jazzy, or input_executor: single) end to end.
    node = _showroom(
        processes,
        tmp_path,
        image_transport="compressed",
        autosave=False,
        viewer=True,
        viewer_port=port,
        input_executor="single",
    )
    status = Latest(client, ReconstructionStatus, "/showroom/status")
    assert spin_until(client, lambda: status.msg is not None, 30), node.log()
    _wait_for_points(client, node, status, _replay(processes, image_transport="compressed"))
    assert status.msg.num_triangles > 0 and status.msg.backend == "rgbd"
    assert "camera inputs spun by SingleThreadedExecutor" in node.log()
    # viewer: true serves the viser page (its browser rendering is tested in test_viewer.py).
    assert f"web viewer at http://127.0.0.1:{port}" in node.log()
    with urllib.request.urlopen(f"http://127.0.0.1:{port}/", timeout=10) as page:
        assert page.status == 200 and b"<html" in page.read().lower()


def _free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


@pytest.mark.parametrize(
    "override, message",
    [
        ({"depth_topics": ["/a", "/b"]}, "depth_topics has 2 entries but image_topics has 1"),
        ({"max_keyframes": 99}, "max_keyframes out of range"),
        ({"backend": "nerf"}, "parameter 'backend' must be one of"),
        ({"input_executor": "multi"}, "parameter 'input_executor' must be one of"),
    ],
)
def test_bad_configuration_exits_with_a_clear_message(processes, tmp_path, override, message):
    node = processes("showroom_node", {**CAMERA_PARAMS, "output_dir": str(tmp_path), **override})
    assert node.wait(timeout=60) == 2
    log = node.log()
    assert "configuration error" in log and message in log and "Traceback" not in log


def test_published_messages_round_trip_through_a_bag(client, tmp_path):
    """What the node publishes, written to MCAP and sqlite3 bags with rosbags and read back byte-exact."""
    from rclpy.serialization import deserialize_message, serialize_message
    from std_msgs.msg import Header

    from showroom_ros.io.bags import BagMessage, read_bag, write_bag
    from showroom_ros.msg import ReconstructionStatus
    from showroom_ros.reconstruction.result import TriangleMesh
    from showroom_ros.ros import conversions as conv

    header = Header(frame_id="map")
    rng = np.random.default_rng(3)
    vertices = rng.normal(size=(30, 3)).astype(np.float32)
    mesh = TriangleMesh(vertices, np.arange(30, dtype=np.int32).reshape(10, 3), np.full((30, 3), 90, np.uint8))
    originals = {
        "/showroom/cloud": conv.points_to_cloud(vertices, np.full((30, 3), 7, np.uint8), header),
        "/showroom/mesh": conv.mesh_to_markers(mesh, header, max_triangles_per_marker=4),
        "/showroom/keyframes": conv.poses_to_pose_array(np.stack([np.eye(4)] * 3), header),
        "/showroom/status": ReconstructionStatus(state="collecting", num_points=30, message="ok", metric=True),
    }
    messages = [
        BagMessage(topic, _type_name(msg), 1000 + i, serialize_message(msg))
        for i, (topic, msg) in enumerate(originals.items())
    ]
    for storage in ("mcap", "sqlite3"):
        bag = write_bag(tmp_path / f"bag-{storage}", messages, storage=storage)
        back = list(read_bag(bag))
        assert [m.topic for m in back] == list(originals)
        for message, written, original in zip(back, messages, originals.values(), strict=True):
            assert message.data == written.data  # byte-exact (CDR padding bytes are not comparable across calls)
            assert deserialize_message(message.data, type(original)) == original
    with pytest.raises(ValueError, match="no topic"):
        list(read_bag(tmp_path / "bag-mcap", topics=["/camera/missing"]))
    with pytest.raises(FileExistsError):
        write_bag(tmp_path / "bag-mcap", messages)


def _type_name(msg) -> str:
    module = type(msg).__module__.split(".")  # e.g. sensor_msgs.msg._point_cloud2
    return f"{module[0]}/msg/{type(msg).__name__}"
