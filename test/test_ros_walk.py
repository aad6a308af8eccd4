"""Frame-rate mapping through the real node, driven as a robot drives it: a real RGB-D walk (7-Scenes
redkitchen, ../shared/data/7scenes_redkitchen_walk) published from this process, with poses late and out
of order, bursts faster than integration, map services called while frames stream, and stop signals in
the middle of integration.
"""

from __future__ import annotations

import random
import signal
import threading
import time
from pathlib import Path

import cv2
import numpy as np
import pytest
from ros_harness import REPO_ROOT, ROS_AVAILABLE, call_service, requires_ros, spin_until

pytestmark = requires_ros

if ROS_AVAILABLE:
    from showroom_ros.ros.replay_node import SHOWROOM_PARAMETERS_FOR_REPLAY
else:  # collected (and skipped) without ROS
    SHOWROOM_PARAMETERS_FOR_REPLAY = {}

CONFIG = REPO_ROOT / "config" / "showroom.yaml"
WALK = "7scenes_redkitchen_walk"


def _walk(shared_root: Path, count: int, step: int = 1) -> tuple[list[tuple], object, object]:
    """(rgb, depth mm, pose) of the first frames, and the (colour, depth) intrinsics of the bundled camera.yaml."""
    from showroom_ros.io.datasets import read_camera_yaml, read_frame_index

    records = read_frame_index(shared_root / "data" / WALK / "frames_c2w.txt")[: count * step : step]
    camera = read_camera_yaml(REPO_ROOT / "data" / "redkitchen" / "camera.yaml")
    frames = [
        (
            cv2.cvtColor(cv2.imread(str(r.rgb)), cv2.COLOR_BGR2RGB),
            cv2.imread(str(r.depth), cv2.IMREAD_UNCHANGED),
            r.pose,
        )
        for r in records
    ]
    return frames, camera.color, camera.depth


class Walker:
    """Publishes the walk (colour, depth, both CameraInfos, poses) and records every output's raw stamp."""

    OUTPUTS = ("map_mesh", "occupancy", "map", "cloud", "mesh", "keyframes")

    def __init__(self, client) -> None:
        from geometry_msgs.msg import PoseArray, PoseStamped
        from nav_msgs.msg import OccupancyGrid
        from sensor_msgs.msg import CameraInfo, Image, PointCloud2
        from visualization_msgs.msg import MarkerArray

        from showroom_ros.msg import ReconstructionStatus
        from showroom_ros.ros.qos import LATCHED

        self.client = client
        params = SHOWROOM_PARAMETERS_FOR_REPLAY
        reliable = 20
        self.image = client.create_publisher(Image, params["image_topics"][0], reliable)
        self.depth = client.create_publisher(Image, params["depth_topics"][0], reliable)
        self.info = client.create_publisher(CameraInfo, params["camera_info_topics"][0], reliable)
        self.depth_info = client.create_publisher(CameraInfo, params["depth_info_topics"][0], reliable)
        self.pose = client.create_publisher(PoseStamped, params["pose_topics"][0], reliable)
        self.stamps: dict[str, list[int]] = {name: [] for name in self.OUTPUTS}
        self.statuses: list = []
        types = {
            "map_mesh": MarkerArray,
            "occupancy": OccupancyGrid,
            "map": PointCloud2,
            "cloud": PointCloud2,
            "mesh": MarkerArray,
            "keyframes": PoseArray,
        }
        # Serialized: a client that deserializes a 100k-triangle MarkerArray in Python spends a second per
        # message and falls behind; the stamps are read from the bytes.
        for name, msg_type in types.items():
            client.create_subscription(msg_type, f"/showroom/{name}", lambda m, n=name: self._on(n, m), 10, raw=True)
        client.create_subscription(ReconstructionStatus, "/showroom/status", self.statuses.append, LATCHED)
        self.sent: list[int] = []

    def _on(self, name: str, data: bytes) -> None:
        from showroom_ros.ros import conversions as conv

        markers = name in ("map_mesh", "mesh")
        stamp = conv.serialized_marker_array_stamp_ns(data) if markers else conv.serialized_stamp_ns(data)
        if stamp is not None:
            self.stamps[name].append(stamp)

    def camera_frame(self, rgb, depth_mm, stamp_ns: int, color_k, depth_k) -> None:
        from std_msgs.msg import Header

        from showroom_ros.ros import conversions as conv

        header = Header(stamp=conv.ns_to_stamp(stamp_ns), frame_id="camera_color_optical_frame")
        self.depth_info.publish(conv.intrinsics_to_camera_info(depth_k, header))
        self.depth.publish(conv.mono_to_image(depth_mm, header))
        self.info.publish(conv.intrinsics_to_camera_info(color_k, header))
        self.image.publish(conv.rgb_to_image(rgb, header))
        self.sent.append(stamp_ns)

    def pose_message(self, pose: np.ndarray, stamp_ns: int) -> None:
        from std_msgs.msg import Header

        from showroom_ros.ros import conversions as conv

        self.pose.publish(conv.matrix_to_pose_stamped(pose, Header(stamp=conv.ns_to_stamp(stamp_ns), frame_id="map")))

    def spin(self, seconds: float) -> None:
        spin_until(self.client, lambda: False, seconds)

    @property
    def status(self):
        return self.statuses[-1] if self.statuses else None


def _node(processes, tmp_path: Path, **overrides):
    params = {
        **SHOWROOM_PARAMETERS_FOR_REPLAY,
        "output_dir": str(tmp_path / "out"),
        "backend": "rgbd",
        "autosave": False,
        "input_reliability": "reliable",
        "evaluation_rate_hz": 10.0,
        **overrides,
    }
    return processes("showroom_node", params, CONFIG)


def _start(walker: Walker, node) -> None:
    assert spin_until(walker.client, lambda: walker.status is not None, 60), node.log()
    walker.spin(1.0)  # discovery of the camera topics


def test_late_and_out_of_order_poses_still_map_every_frame_and_every_stamp_is_a_frames(
    client, processes, tmp_path, shared_root
):
    """Poses arrive 0.3-0.6 s after their frames and shuffled; the node waits for them (wait_timeout) and
    maps the frames. Every output of every kind is stamped with a frame that was sent: this fails on
    publish-time stamps."""
    frames, color_k, depth_k = _walk(shared_root, 40, step=3)
    # A deep map queue: what is under test is late poses and stamps, not throughput (a loaded CI machine
    # would otherwise drop frames, rightly, and make the count a matter of timing).
    node = _node(processes, tmp_path, wait_timeout=2.0, max_keyframes=3, window_overlap=0, map_queue_size=100)
    walker = Walker(client)
    _start(walker, node)
    rng = random.Random(20)
    start_ns = time.time_ns()
    stamps = [start_ns + i * 100_000_000 for i in range(len(frames))]
    late: list[tuple[float, np.ndarray, int]] = []
    for i, (rgb, depth, pose) in enumerate(frames):
        walker.camera_frame(rgb, depth, stamps[i], color_k, depth_k)
        late.append((time.monotonic() + rng.uniform(0.3, 0.6), pose, stamps[i]))
        due = sorted((item for item in late if item[0] <= time.monotonic()), key=lambda _: rng.random())
        for item in due:  # out of order
            walker.pose_message(item[1], item[2])
            late.remove(item)
        walker.spin(0.1)
    for _, pose, stamp in sorted(late, key=lambda _: rng.random()):
        walker.pose_message(pose, stamp)
    mapped = lambda: walker.status.map_keyframes_integrated + walker.status.map_keyframes_redundant  # noqa: E731
    assert spin_until(client, lambda: mapped() >= 0.8 * len(frames), 90), (
        walker.status,
        node.log(),
    )
    walker.spin(3.0)
    sent = set(walker.sent)
    for name in ("map_mesh", "occupancy", "map", "cloud", "mesh", "keyframes"):
        assert walker.stamps[name], f"no ~/{name} received\n{node.log()}"
        foreign = [s for s in walker.stamps[name] if s not in sent]
        assert not foreign, f"~/{name} stamped {foreign[:3]}: not a camera frame's stamp"
    assert max(walker.stamps["map_mesh"]) >= stamps[int(0.8 * len(frames))]
    status = walker.status
    assert status.map_age_s >= 0 and status.map_keyframes_dropped == 0, status
    assert node.alive() and "Traceback" not in node.log(), node.log()


def test_a_burst_faster_than_integration_is_bounded_and_counted(client, processes, tmp_path, shared_root):
    frames, color_k, depth_k = _walk(shared_root, 60, step=2)
    # Best effort, as cameras publish: a reliable subscription would slow this sender down to the node's pace.
    node = _node(
        processes,
        tmp_path,
        input_reliability="best_effort",
        evaluation_rate_hz=60.0,
        map_queue_size=2,
        map_publish_rate_hz=0.5,
    )
    walker = Walker(client)
    _start(walker, node)
    start_ns, sending = time.time_ns(), time.monotonic()
    for i, (rgb, depth, pose) in enumerate(frames):  # as fast as this process can send them
        stamp = start_ns + i * 33_000_000
        walker.pose_message(pose, stamp)
        walker.camera_frame(rgb, depth, stamp, color_k, depth_k)
        walker.spin(0.005)
    print(f"sent {len(frames)} frames in {time.monotonic() - sending:.1f} s")
    assert spin_until(
        client, lambda: walker.status.map_keyframes_waiting == 0 and walker.status.map_keyframes_dropped > 0, 90
    ), (walker.status, node.log())
    walker.spin(2.0)
    waiting = [s.map_keyframes_waiting for s in walker.statuses]
    assert max(waiting) <= 2, waiting
    last = walker.status
    assert last.map_keyframes_integrated > 0, last
    assert last.map_keyframes_integrated + last.map_keyframes_dropped <= len(frames), last
    assert "the oldest waiting one is dropped" in node.log() and node.log().count("Said once") == 1, node.log()
    assert node.alive() and "Traceback" not in node.log()


def test_map_services_answer_while_frames_are_integrated_and_the_map_stays_consistent(
    client, processes, tmp_path, shared_root
):
    from std_srvs.srv import Trigger

    from showroom_ros.srv import LoadMap, SaveReconstruction

    frames, color_k, depth_k = _walk(shared_root, 60, step=4)
    node = _node(processes, tmp_path, map_publish_rate_hz=4.0)
    walker = Walker(client)
    _start(walker, node)
    stop = threading.Event()
    start_ns = time.time_ns()
    answers: dict[str, object] = {}

    def stream() -> None:
        from rclpy.node import Node

        publisher_node = Node("walk_streamer")
        streamer = Walker(publisher_node)
        for i, (rgb, depth, pose) in enumerate(frames):
            if stop.is_set():
                break
            stamp = start_ns + i * 100_000_000
            streamer.pose_message(pose, stamp)
            streamer.camera_frame(rgb, depth, stamp, color_k, depth_k)
            time.sleep(0.1)
        publisher_node.destroy_node()

    thread = threading.Thread(target=stream)
    thread.start()
    try:
        assert spin_until(client, lambda: walker.status.map_keyframes_integrated >= 5, 60), walker.status
        answers["save"] = call_service(
            client, SaveReconstruction, "/showroom/save_map", SaveReconstruction.Request(name="walk"), 60
        )
        answers["clear"] = call_service(client, Trigger, "/showroom/clear_map", Trigger.Request(), 60)
        walker.spin(0.5)
        assert spin_until(client, lambda: walker.status.map_keyframes_integrated >= 3, 60), walker.status
        answers["load"] = call_service(client, LoadMap, "/showroom/load_map", LoadMap.Request(name="walk"), 60)
    finally:
        stop.set()
        thread.join(30)
    for name, answer in answers.items():
        assert answer.success, (name, answer.message, node.log())
    assert answers["load"].num_blocks > 0
    # A few frames after the load, so that the latched last update is a partial one (some chunks only).
    assert spin_until(client, lambda: walker.status.map_keyframes_waiting == 0, 60), walker.status
    integrated = walker.status.map_keyframes_integrated
    restart_ns = time.time_ns()
    for i, (rgb, depth, pose) in enumerate(frames[-6:] + frames[:6]):
        walker.pose_message(pose, restart_ns + i * 100_000_000)
        walker.camera_frame(rgb, depth, restart_ns + i * 100_000_000, color_k, depth_k)
        walker.spin(0.1)
    assert spin_until(client, lambda: walker.status.map_keyframes_integrated > integrated, 60), walker.status
    # Let the map settle before a late subscriber joins.
    assert spin_until(client, lambda: walker.status.map_keyframes_waiting == 0, 60), walker.status
    walker.spin(3.0)
    # Consistent afterwards: what a late subscriber holds after applying every ~/map_mesh message in order
    # (ADD replaces a chunk by id, DELETE removes it), as RViz does, is the surface of the map saved now.
    # Without the snapshot sent on matching it would hold only the latched last (partial) update.
    from visualization_msgs.msg import Marker, MarkerArray

    from showroom_ros.ros.qos import LATCHED

    received: list = []
    client.create_subscription(MarkerArray, "/showroom/map_mesh", received.append, LATCHED)
    assert spin_until(client, lambda: bool(received), 60), node.log()
    walker.spin(3.0)  # the latched last update comes first, the snapshot sent on matching after it
    after = call_service(client, SaveReconstruction, "/showroom/save_map", SaveReconstruction.Request(name="after"))
    assert after.success, after.message
    held: dict[int, int] = {}
    for message in received:
        ids = [m.id for m in message.markers]
        assert len(ids) == len(set(ids)), ids
        for marker in message.markers:
            if marker.action == Marker.ADD:
                held[marker.id] = len(marker.points) // 3
            else:
                held.pop(marker.id, None)
    import open3d as o3d

    saved = o3d.io.read_triangle_mesh(str(tmp_path / "out" / "after_map_mesh.ply"))
    published = sum(held.values())
    assert abs(published - len(saved.triangles)) <= 0.02 * len(saved.triangles), (published, len(saved.triangles))
    assert node.alive() and "Traceback" not in node.log(), node.log()


@pytest.mark.parametrize("signum", [signal.SIGINT, signal.SIGTERM], ids=["SIGINT", "SIGTERM"])
def test_a_stop_signal_mid_integration_exits_0_within_2_s_and_leaves_no_partial_map_file(
    client, processes, tmp_path, shared_root, signum
):
    from showroom_ros.srv import SaveReconstruction

    frames, color_k, depth_k = _walk(shared_root, 30, step=5)
    # Every frame fused (no static-scene gate), a deep queue, frames streaming until the signal: the map's
    # thread is integrating when it comes, with a save queued behind.
    node = _node(processes, tmp_path, evaluation_rate_hz=30.0, map_queue_size=50, map_redundant_translation=0.0)
    walker = Walker(client)
    _start(walker, node)
    stop = threading.Event()

    def stream() -> None:
        from rclpy.node import Node

        publisher_node = Node("walk_signal_streamer")
        streamer = Walker(publisher_node)
        start_ns, i = time.time_ns(), 0
        while not stop.is_set():
            rgb, depth, pose = frames[i % len(frames)]
            stamp = start_ns + i * 33_000_000
            streamer.pose_message(pose, stamp)
            streamer.camera_frame(rgb, depth, stamp, color_k, depth_k)
            i += 1
            time.sleep(0.033)
        publisher_node.destroy_node()

    thread = threading.Thread(target=stream)
    thread.start()
    try:
        integrating = lambda: walker.status.map_keyframes_integrated >= 3  # noqa: E731
        assert spin_until(client, integrating, 60), (walker.status, node.log())
        save_client = client.create_client(SaveReconstruction, "/showroom/save_map")
        save_client.call_async(SaveReconstruction.Request(name="mid"))  # a save queued behind the integration
        walker.spin(0.1)
        code, elapsed = node.signal_and_wait(signum)
        client.destroy_client(save_client)
    finally:
        stop.set()
        thread.join(10)
    assert code == 0 and elapsed < 2.0, f"exit {code} after {elapsed:.2f} s\n{node.log()}"
    out = tmp_path / "out"
    leftovers = [p.name for p in out.rglob("*") if ".tmp" in p.name]
    assert not leftovers, leftovers
    for volume in out.glob("*_volume.npz"):  # a map file that exists is complete
        with np.load(volume) as data:
            assert data.files
    for ply in out.glob("*.ply"):
        assert ply.read_bytes()[:3] == b"ply", ply
