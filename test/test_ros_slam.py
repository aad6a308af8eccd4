"""``pose_source: slam`` (issue 21) through the real node, attacked from outside as a robot's camera would.

This process is the camera: the real 7-Scenes redkitchen walk (../shared/data/7scenes_redkitchen_walk,
colour rgb8 + depth 16UC1 mm + both CameraInfos, no poses), stamped with the sequence's clock (walk frame
i at i/15 s), sent every 3rd frame (5 frames/s of sequence time). The node estimates the poses; they are
compared with the ground truth only after an SE(3) alignment (the node's map frame is its own, z up).

Each test breaks one promise if it can: a loop closure that makes the trajectory worse or is false,
frames that cannot be placed (covered lens, another room, a cut) reaching ~/camera_pose or the map, stop
signals while the tracker optimises, a saved map the camera cannot find itself in again (or finds itself
in a room it has never seen), and thousands of hostile messages between the valid frames. Defects these
attacks found (a covered lens, a tiny depth focal length, a frame a pixel wide) are fixed and kept as tests.
"""

from __future__ import annotations

import functools
import itertools
import os
import signal
import threading
import time
from pathlib import Path

import cv2
import numpy as np
import pytest
from ros_harness import REPO_ROOT, call_service, random_message, requires_ros, spin_until

pytestmark = [requires_ros, pytest.mark.ros]

CONFIG = REPO_ROOT / "config" / "showroom.yaml"
WALK = "7scenes_redkitchen_walk"
DINING = "slambook2_diningroom"
WALK_HZ = 15.0  # walk frame i is frame 2i of the 30 Hz sequence
FUZZ_MESSAGES = int(os.environ.get("SHOWROOM_FUZZ_MESSAGES", "5000"))
FUZZ_SEED = int(os.environ.get("SHOWROOM_FUZZ_SEED", "21"))
SEND_PERIOD_S = 0.2  # every 3rd walk frame at 5 Hz: the node's evaluation rate, so each sent frame is tracked
TOPICS = {
    "image_topics": ["/camera/color/image_raw"],
    "camera_info_topics": ["/camera/color/camera_info"],
    "depth_topics": ["/camera/depth/image_raw"],
    "depth_info_topics": ["/camera/depth/camera_info"],
}


# --- data ---------------------------------------------------------------------------------------------
@functools.cache
def _walk_index(shared_root: Path) -> tuple:
    from showroom_ros.io.datasets import read_camera_yaml, read_frame_index

    records = read_frame_index(shared_root / "data" / WALK / "frames_c2w.txt")
    camera = read_camera_yaml(REPO_ROOT / "data" / "redkitchen" / "camera.yaml")
    return records, camera.color, camera.depth


@functools.cache
def _walk_frame(shared_root: Path, index: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(rgb, depth mm uint16, camera-to-world ground truth) of walk frame ``index``."""
    records, _, _ = _walk_index(shared_root)
    record = records[index]
    rgb = cv2.cvtColor(cv2.imread(str(record.rgb)), cv2.COLOR_BGR2RGB)
    depth = cv2.imread(str(record.depth), cv2.IMREAD_UNCHANGED)
    return rgb, depth, record.pose


@functools.cache
def _dining_frames(shared_root: Path) -> tuple[list[tuple[np.ndarray, np.ndarray]], object]:
    """The 5 dining-room frames (rgb, depth mm, registered to colour) and their intrinsics (README)."""
    from showroom_ros.geometry.camera import CameraIntrinsics

    folder = shared_root / "data" / DINING
    frames = []
    for k in range(1, 6):
        rgb = cv2.cvtColor(cv2.imread(str(folder / "color" / f"{k}.png")), cv2.COLOR_BGR2RGB)
        depth = cv2.imread(str(folder / "depth" / f"{k}.pgm"), cv2.IMREAD_UNCHANGED)
        assert depth.dtype == np.uint16 and depth.shape == rgb.shape[:2], (depth.dtype, depth.shape)
        frames.append((rgb, depth))
    return frames, CameraIntrinsics(fx=518.0, fy=519.0, cx=325.5, cy=253.5, width=640, height=480)


# --- the camera and the client --------------------------------------------------------------------------
class SlamClient:
    """Publishes RGB-D frames (no poses) and records ~/camera_pose, ~/trajectory and ~/status."""

    def __init__(self, client) -> None:
        from geometry_msgs.msg import PoseStamped
        from nav_msgs.msg import Path as PathMsg
        from rclpy.qos import QoSProfile, ReliabilityPolicy
        from sensor_msgs.msg import CameraInfo, Image

        from showroom_ros.msg import ReconstructionStatus
        from showroom_ros.ros.qos import LATCHED

        self.client = client
        reliable = QoSProfile(depth=20, reliability=ReliabilityPolicy.RELIABLE)
        self.image = client.create_publisher(Image, TOPICS["image_topics"][0], reliable)
        self.depth = client.create_publisher(Image, TOPICS["depth_topics"][0], reliable)
        self.info = client.create_publisher(CameraInfo, TOPICS["camera_info_topics"][0], reliable)
        self.depth_info = client.create_publisher(CameraInfo, TOPICS["depth_info_topics"][0], reliable)
        self.poses: dict[int, np.ndarray] = {}  # ~/camera_pose by stamp
        self.pose_order: list[int] = []
        self.paths: list[dict[int, np.ndarray]] = []  # every ~/trajectory received, keyframe stamp -> pose
        self.statuses: list = []
        self.subscriptions = [
            client.create_subscription(PoseStamped, "/showroom/camera_pose", self._on_pose, 100),
            client.create_subscription(PathMsg, "/showroom/trajectory", self._on_path, LATCHED),
            client.create_subscription(ReconstructionStatus, "/showroom/status", self.statuses.append, LATCHED),
        ]
        self.publishers = [self.image, self.depth, self.info, self.depth_info]

    def close(self) -> None:
        for subscription in self.subscriptions:
            self.client.destroy_subscription(subscription)
        for publisher in self.publishers:
            self.client.destroy_publisher(publisher)

    def _on_pose(self, msg) -> None:
        from showroom_ros.ros import conversions as conv

        stamp = conv.stamp_to_ns(msg.header.stamp)
        assert msg.header.frame_id == "map", msg.header.frame_id
        self.poses[stamp] = conv.pose_to_matrix(msg.pose)
        self.pose_order.append(stamp)

    def _on_path(self, msg) -> None:
        from showroom_ros.ros import conversions as conv

        self.paths.append({conv.stamp_to_ns(p.header.stamp): conv.pose_to_matrix(p.pose) for p in msg.poses})

    def frame(self, rgb: np.ndarray, depth_mm: np.ndarray, stamp_ns: int, color_k, depth_k) -> None:
        from std_msgs.msg import Header

        from showroom_ros.ros import conversions as conv

        header = Header(stamp=conv.ns_to_stamp(stamp_ns), frame_id="camera_color_optical_frame")
        self.depth_info.publish(conv.intrinsics_to_camera_info(depth_k, header))
        self.depth.publish(conv.mono_to_image(depth_mm, header))
        self.info.publish(conv.intrinsics_to_camera_info(color_k, header))
        self.image.publish(conv.rgb_to_image(rgb, header))

    def spin(self, seconds: float) -> None:
        spin_until(self.client, lambda: False, seconds)

    def connected(self) -> bool:
        return bool(self.statuses) and all(p.get_subscription_count() > 0 for p in self.publishers)

    @property
    def status(self):
        return self.statuses[-1] if self.statuses else None


def _slam_node(processes, tmp_path: Path, **overrides):
    """A showroom node with pose_source slam on the four camera topics; windows off (the SLAM is under test)."""
    params = {
        **TOPICS,
        "pose_source": "slam",
        "pose_topics": [""],
        "model": "",
        "backend": "rgbd",
        "output_dir": str(tmp_path / "out"),
        "autosave": False,
        "input_reliability": "reliable",
        "evaluation_rate_hz": 20.0,  # the sender paces; the node's throttle must not drop a paced frame
        "slam_queue_size": 64,  # nor the tracker's queue on a loaded machine: every sent frame is tracked
        "map_queue_size": 200,
        "auto_reconstruct": False,
        "idle_reconstruct_s": 0.0,
        "status_rate_hz": 10.0,
        **overrides,
    }
    return processes("showroom_node", params, CONFIG)


def _connect(camera: SlamClient, node) -> None:
    assert spin_until(camera.client, camera.connected, 60), node.log()
    assert camera.status.tracking_state == "initialising", camera.status
    camera.spin(0.5)


def _stamp(base_ns: int, walk_index: int) -> int:
    return base_ns + round(walk_index * 1e9 / WALK_HZ)


def _stream_walk(
    camera: SlamClient, shared_root: Path, indices, base_ns: int, stamps=None, lockstep: bool = True
) -> list[int]:
    """Send walk frames at most 5 per second; returns their stamps.

    ``lockstep``: each frame is waited for (its ~/camera_pose, up to 2 s) and sent once more, same stamp,
    if none came: on a loaded 2-core machine the node's receive queues (depth 5) and its evaluation
    throttle (by time of processing) drop frames that arrive in a burst after a stall, which is not what
    these tests are about. A frame the tracker loses is then sent twice (it may relocalise the second
    time). Without, the frames go at 5 Hz whatever the node does, as a camera sends them."""
    _, color_k, depth_k = _walk_index(shared_root)
    sent = []
    for n, index in enumerate(indices):
        rgb, depth, _ = _walk_frame(shared_root, index)
        stamp = _stamp(base_ns, index) if stamps is None else stamps[n]
        started = time.monotonic()
        for _attempt in range(2 if lockstep else 1):
            camera.frame(rgb, depth, stamp, color_k, depth_k)
            if not lockstep or spin_until(camera.client, lambda s=stamp: s in camera.poses, 2.0):
                break
        sent.append(stamp)
        camera.spin(max(0.0, SEND_PERIOD_S - (time.monotonic() - started)))
    return sent


def _tracked(camera: SlamClient, stamp: int, node, timeout: float = 60.0) -> None:
    """Wait for ~/camera_pose of ``stamp`` (the tracker has caught up with everything sent before it)."""
    assert spin_until(camera.client, lambda: stamp in camera.poses, timeout), (
        f"frame {stamp} never tracked; last status {camera.status}\n{node.log()}"
    )


def _drained(camera: SlamClient, quiet_s: float = 2.0, timeout: float = 60.0) -> None:
    """Until no new ~/camera_pose came for ``quiet_s`` (the tracker's queue is empty)."""
    deadline = time.monotonic() + timeout
    count = -1
    while len(camera.poses) != count and time.monotonic() < deadline:
        count = len(camera.poses)
        spin_until(camera.client, lambda n=count: len(camera.poses) > n, quiet_s)


def _truth(shared_root: Path, stamps_by_index: dict[int, int]) -> dict[int, np.ndarray]:
    return {stamp: _walk_frame(shared_root, index)[2] for index, stamp in stamps_by_index.items()}


def _alignment(estimate: dict[int, np.ndarray], truth: dict[int, np.ndarray]) -> tuple[np.ndarray, float]:
    """(4x4 SE(3) taking estimate positions onto the truth's, ATE RMSE m): the one ATE, at least 3 poses."""
    from showroom_ros.geometry.similarity import trajectory_alignment

    T, ate, compared = trajectory_alignment(estimate, truth)
    assert compared >= 3, f"only {compared} poses to align"
    return T, ate


def _position_errors(estimate: dict[int, np.ndarray], truth: dict[int, np.ndarray], T: np.ndarray) -> dict:
    return {
        s: float(np.linalg.norm(T[:3, :3] @ estimate[s][:3, 3] + T[:3, 3] - truth[s][:3, 3]))
        for s in estimate
        if s in truth
    }


def _healthy(node) -> None:
    log = node.log()
    assert node.alive(), f"the node died\n{log}"
    assert "Traceback" not in log, log
    errors = [line for line in log.splitlines() if "[ERROR]" in line]
    assert not errors, errors


# --- configuration ----------------------------------------------------------------------------------------
def test_slam_without_depth_topics_is_a_one_line_configuration_error_exit_2(processes, tmp_path):
    node = _slam_node(processes, tmp_path, depth_topics=[""], depth_info_topics=[""])
    code = node.wait(timeout=60)
    log = node.log()
    assert code == 2, f"exit {code}\n{log}"
    lines = [line for line in log.splitlines() if "configuration error" in line]
    assert len(lines) == 1, log
    assert "depth" in lines[0] and "slam" in lines[0], lines[0]
    assert "Traceback" not in log, log


# --- lost and found ----------------------------------------------------------------------------------------
def test_black_foreign_and_cut_frames_are_lost_never_posed_nor_mapped_and_the_walk_relocalises(
    client, processes, tmp_path, shared_root
):
    """Between stretches of the walk: 5 frames of a covered lens (colour and depth all 0), 5 frames of
    another room (the slambook2 dining room, its own intrinsics), and a cut (60 walk frames, 0.8 m, skipped
    in one frame period). Each bad frame must be reported lost and get no ~/camera_pose; none may reach
    the map (every frame is fused here: no redundancy gate); the walk after each must be found again in
    the same map frame, its poses agreeing with the ground truth after one alignment of the whole run."""
    # No redundancy gate (the map takes every tracked frame, so its count is the tracked count); no blur gate
    # in front of the tracker (it would keep a black frame from the tracker: see the covered-lens test below).
    node = _slam_node(
        processes, tmp_path, map_redundant_translation=0.0, map_redundant_rotation_deg=0.0, blur_threshold=0.0
    )
    camera = SlamClient(client)
    try:
        _connect(camera, node)
        _, color_k, depth_k = _walk_index(shared_root)
        base = time.time_ns()
        walk_stamps: dict[int, int] = {}  # walk index -> stamp, for every walk frame sent
        bad: dict[str, list[int]] = {}
        clock = {"stamp": base}

        def next_stamp() -> int:  # one frame period of the stream after the last frame sent
            clock["stamp"] += round(SEND_PERIOD_S * 1e9)
            return clock["stamp"]

        def walk(indices, lockstep: bool = True) -> list[int]:
            stamps = [next_stamp() for _ in indices]
            _stream_walk(camera, shared_root, indices, base, stamps, lockstep=lockstep)
            walk_stamps.update(zip(indices, stamps, strict=True))
            return stamps

        def mapped() -> int:
            s = camera.status
            return s.map_keyframes_integrated + s.map_keyframes_redundant

        def quiet(last_good: int) -> int:
            """Everything sent is tracked and in the map; the map's count then."""
            _tracked(camera, last_good, node)
            assert spin_until(
                client, lambda: camera.status.map_keyframes_waiting == 0 and mapped() == len(camera.poses), 60
            ), (camera.status, len(camera.poses), node.log())
            return mapped()

        def bad_frames(name: str, frames, color, depth) -> None:
            """Send ``frames`` (rgb, depth mm) at 5 Hz; the status must say lost before the walk resumes."""
            seen = len(camera.statuses)
            bad[name] = []
            for rgb, depth_mm in frames:
                stamp = next_stamp()
                camera.frame(rgb, depth_mm, stamp, color, depth)
                bad[name].append(stamp)
                camera.spin(SEND_PERIOD_S)
            lost = lambda: any(s.tracking_state == "lost" for s in camera.statuses[seen:])  # noqa: E731
            assert spin_until(client, lost, 20), (name, [s.tracking_state for s in camera.statuses[seen:]], node.log())
            reasons = {s.tracking_reason for s in camera.statuses[seen:] if s.tracking_state == "lost"}
            assert all(reasons), f"lost without a reason: {reasons}"
            camera.spin(0.5)

        first = walk(range(0, 63, 3))
        before = quiet(first[-1])
        assert camera.status.tracking_state == "tracking", camera.status

        black = np.zeros((480, 640, 3), np.uint8), np.zeros((480, 640), np.uint16)
        bad_frames("black", [black] * 5, color_k, depth_k)
        resumed = walk(range(63, 102, 3))
        after_black = quiet(resumed[-1])

        dining, dining_k = _dining_frames(shared_root)
        bad_frames("dining room", dining, dining_k, dining_k)
        resumed = walk(range(102, 207, 3))
        after_dining = quiet(resumed[-1])

        cut_from = 204  # the next frame sent is walk frame 264: 0.8 m further, one frame period later
        walk([cut_from + 60], lockstep=False)  # sent once: a second copy would be a relocalisation
        resumed = walk(range(cut_from + 63, cut_from + 60 + 27, 3))
        _tracked(camera, resumed[-1], node)
        camera.spin(1.0)

        # No bad frame was posed, and the map took none of them (it took every tracked frame).
        for name, stamps in bad.items():
            posed = [s for s in stamps if s in camera.poses]
            assert not posed, f"{name} frames got ~/camera_pose: {posed}"
        # The map grew by the walk frames between the bad stretches (13 and 35 of them), not by the bad frames.
        assert (after_black - before, after_dining - after_black) == (13, 35), (before, after_black, after_dining)
        assert set(camera.poses) <= set(walk_stamps.values()), "a pose for a stamp that is no walk frame"

        # The cut's first frame moved 0.8 m in 0.2 s (4 m/s): not believed, lost; the next one is found again.
        assert walk_stamps[cut_from + 60] not in camera.poses, "the frame after the cut was tracked through it"
        truth = _truth(shared_root, walk_stamps)
        T, ate = _alignment(camera.poses, truth)
        errors = _position_errors(camera.poses, truth, T)
        worst = max(errors.values())
        print(f"ATE over {len(errors)} tracked walk frames {ate * 100:.1f} cm, worst {worst * 100:.1f} cm")
        assert ate < 0.07 and worst < 0.15, (ate, sorted(errors.values())[-5:])  # measured 4.5 and 8.0 cm
        # Found again after each: the walk right after each bad stretch is tracked (the first or second frame).
        for index in (63, 102, cut_from + 63):
            assert walk_stamps[index] in camera.poses, f"walk frame {index} after the bad frames not tracked"
        log = node.log()
        assert log.count("slam: lost:") >= 3 and log.count("slam: relocalised") >= 3, log
        _healthy(node)
    finally:
        camera.close()


def test_a_covered_lens_is_reported_lost_with_the_default_blur_gate(client, processes, tmp_path, shared_root):
    """As a robot runs it (default blur_threshold): the lens covered for 2 s must say lost in ~/status."""
    node = _slam_node(processes, tmp_path)
    camera = SlamClient(client)
    try:
        _connect(camera, node)
        _, color_k, depth_k = _walk_index(shared_root)
        base = time.time_ns()
        sent = _stream_walk(camera, shared_root, range(0, 30, 3), base)
        _tracked(camera, sent[-1], node)
        assert camera.status.tracking_state == "tracking", camera.status
        seen = len(camera.statuses)
        black_rgb, black_depth = np.zeros((480, 640, 3), np.uint8), np.zeros((480, 640), np.uint16)
        for n in range(10):
            camera.frame(black_rgb, black_depth, _stamp(base, 30 + 3 * n), color_k, depth_k)
            camera.spin(SEND_PERIOD_S)
        camera.spin(1.0)
        states = [s.tracking_state for s in camera.statuses[seen:]]
        assert "lost" in states, f"a covered lens for 2 s, and ~/status said {set(states)}\n{node.log()}"
    finally:
        camera.close()


# --- loop closure ---------------------------------------------------------------------------------------------
def _closure_edges(slam_file: Path, truth: dict[int, np.ndarray]) -> list[tuple[float, float]]:
    """(metres, degrees) between each saved closure edge and the ground truth's relative pose."""
    from showroom_ros.slam.pose_graph import EDGE_KINDS

    with np.load(slam_file) as data:
        stamps = dict(zip(data["keys"].tolist(), data["stamps"].tolist(), strict=True))
        edges = zip(data["edge_kinds"], data["edge_keys"], data["edge_poses"], strict=True)
        errors = []
        for kind, (first, second), pose in edges:
            if EDGE_KINDS[int(kind)] != "closure":
                continue
            a, b = truth[stamps[int(first)]], truth[stamps[int(second)]]
            error = np.linalg.inv(np.linalg.inv(a) @ b) @ pose
            angle = np.degrees(np.arccos(np.clip((np.trace(error[:3, :3]) - 1) / 2, -1, 1)))
            errors.append((float(np.linalg.norm(error[:3, 3])), float(angle)))
    return errors


def test_a_revisit_closes_verified_loops_that_do_not_worsen_the_trajectory(client, processes, tmp_path, shared_root):
    """Walk frames 0..297: from frame ~246 the camera is back where it was at ~100-140. The loop must be
    closed (loop_closures_accepted > 0), every accepted closure must be true (its edge within 15 cm / 10 deg
    of the ground truth's relative pose: true ones are within ~7 cm here) and in the saved graph, the
    keyframes' aligned error after the closures must be no worse than just before them, the map rebuilt."""
    from showroom_ros.srv import SaveReconstruction

    node = _slam_node(processes, tmp_path)
    camera = SlamClient(client)
    try:
        _connect(camera, node)
        base = time.time_ns()
        stamps = {}
        sent = _stream_walk(camera, shared_root, range(0, 243, 3), base)
        stamps.update(zip(range(0, 243, 3), sent, strict=True))
        _tracked(camera, sent[-1], node)
        camera.spin(1.0)  # the trajectory of the last keyframe comes after its frame's pose
        closures_before = camera.status.loop_closures_accepted
        before = camera.paths[-1]
        sent = _stream_walk(camera, shared_root, range(243, 300, 3), base)
        stamps.update(zip(range(243, 300, 3), sent, strict=True))
        _tracked(camera, sent[-1], node)
        camera.spin(1.0)
        status, after = camera.status, camera.paths[-1]
        print(
            f"closures {closures_before} -> {status.loop_closures_accepted} accepted, "
            f"{status.loop_closures_rejected} rejected; keyframes {len(before)} -> {len(after)} "
            f"(status {status.slam_keyframes}); last optimisation {status.last_optimisation_ms:.1f} ms"
        )
        assert status.loop_closures_accepted > closures_before, status
        assert status.slam_keyframes == len(after) and set(before) < set(after), (status, len(before), len(after))
        assert status.tracking_state == "tracking" and status.last_optimisation_ms > 0, status

        truth = _truth(shared_root, stamps)
        keys = sorted(before)
        _, ate_before = _alignment(before, truth)
        _, ate_after_same = _alignment({k: after[k] for k in keys}, truth)
        _, ate_after = _alignment(after, truth)
        _, ate_frames = _alignment(camera.poses, truth)
        print(
            f"ATE of the {len(keys)} keyframes before the closures {ate_before * 100:.2f} cm, after "
            f"{ate_after_same * 100:.2f} cm; all {len(after)} keyframes {ate_after * 100:.2f} cm; "
            f"{len(camera.poses)} frames as tracked {ate_frames * 100:.2f} cm"
        )
        assert ate_after_same <= ate_before + 0.003, (ate_before, ate_after_same)
        assert ate_after < 0.07 and ate_frames < 0.08, (ate_after, ate_frames)  # measured 4.5 and 4.7 cm
        assert len(camera.poses) == len(stamps), f"{len(stamps) - len(camera.poses)} walk frames not tracked"

        saved = call_service(
            client, SaveReconstruction, "/showroom/save_map", SaveReconstruction.Request(name="loop"), 120
        )
        assert saved.success, saved.message
        slam_file = tmp_path / "out" / "loop_slam.npz"
        assert str(slam_file) in saved.files, saved.files
        errors = _closure_edges(slam_file, truth)
        print(f"closure edges vs ground truth (cm, deg): {[(round(m * 100, 1), round(d, 1)) for m, d in errors]}")
        assert len(errors) == camera.status.loop_closures_accepted, (len(errors), camera.status)
        false = [(m, d) for m, d in errors if m > 0.15 or d > 10.0]
        assert not false, f"false loop closures accepted: {false}"
        # The saved graph is the published trajectory (nothing optimised since).
        with np.load(slam_file) as data:
            saved_poses = dict(zip(data["stamps"].tolist(), data["node_poses"], strict=True))
        assert set(saved_poses) == set(camera.paths[-1]), "the saved keyframes are not the published ones"
        drift = max(np.abs(saved_poses[s] - camera.paths[-1][s]).max() for s in saved_poses)
        assert drift < 1e-4, drift
        # The map is rebuilt when a closure moved a keyframe more than a voxel (2 cm) from where the map took it.
        first_seen: dict[int, np.ndarray] = {}
        for path in camera.paths:
            for stamp, pose in path.items():
                first_seen.setdefault(stamp, pose)
        moved = max(np.linalg.norm(saved_poses[s][:3, 3] - first_seen[s][:3, 3]) for s in saved_poses)
        rebuilt = "after a loop closure" in node.log()
        assert rebuilt or moved <= 0.02 + 1e-3, f"keyframes moved {moved * 100:.1f} cm but the map was not rebuilt"
        _healthy(node)
    finally:
        camera.close()


# --- stop signals -----------------------------------------------------------------------------------------------
@pytest.mark.parametrize("signum", [signal.SIGINT, signal.SIGTERM], ids=["SIGINT", "SIGTERM"])
def test_a_stop_signal_while_loops_close_and_the_slam_state_is_saved_exits_0_within_2_s_leaving_no_partial_file(
    client, processes, tmp_path, shared_root, signum
):
    """The first pass of the walk (frames 0..225) is mapped; then the revisit streams at 10 frames/s (faster
    than the tracker on 2 cores: a queue of frames waits) until loops are being closed; then ~/save_map is
    called and the signal sent the moment the SLAM state's temporary file appears (or after 2 s). Exit 0
    within 2 s, and nothing half-written in output_dir."""
    from showroom_ros.srv import SaveReconstruction

    # The most the node evaluates: frames the input thread takes late, back to back, are not thinned out.
    node = _slam_node(processes, tmp_path, evaluation_rate_hz=60.0)
    camera = SlamClient(client)
    out = tmp_path / "out"
    stop = threading.Event()
    _, color_k, depth_k = _walk_index(shared_root)
    revisit = range(228, 400, 3)
    for index in revisit:
        _walk_frame(shared_root, index)  # loaded before the stream starts: it must not stall
    base = time.time_ns()

    def stream() -> None:
        from rclpy.node import Node

        streamer_node = Node("slam_signal_streamer")
        streamer = SlamClient(streamer_node)
        for index in revisit:
            if stop.is_set():
                break
            rgb, depth, _ = _walk_frame(shared_root, index)
            streamer.frame(rgb, depth, _stamp(base, index), color_k, depth_k)
            time.sleep(0.1)
        streamer.close()
        streamer_node.destroy_node()

    try:
        _connect(camera, node)
        _stream_walk(camera, shared_root, range(0, 228, 3), base)
        assert camera.status.tracking_state == "tracking", camera.status
        thread = threading.Thread(target=stream)
        thread.start()
        try:
            closing = lambda: camera.status.loop_closures_accepted > 0  # noqa: E731
            assert spin_until(client, closing, 120), (camera.status, node.log())
            assert node.alive(), node.log()
            save_client = client.create_client(SaveReconstruction, "/showroom/save_map")
            save_client.call_async(SaveReconstruction.Request(name="mid"))
            temporary = out / "mid_slam.npz.tmp"
            deadline = time.monotonic() + 2.0
            while not temporary.exists() and time.monotonic() < deadline:
                time.sleep(0.0002)
            seen = temporary.exists()
            code, elapsed = node.signal_and_wait(signum)
            client.destroy_client(save_client)
        finally:
            stop.set()
            thread.join(10)
        print(f"signal sent {'while' if seen else 'not while'} the SLAM state was written; exit after {elapsed:.2f} s")
        assert code == 0 and elapsed < 2.0, f"exit {code} after {elapsed:.2f} s\n{node.log()}"
        leftovers = [p.name for p in out.rglob("*") if ".tmp" in p.name]
        assert not leftovers, f"partial files left: {leftovers}"
        for saved in out.glob("*_slam.npz"):  # a SLAM file that exists is complete
            with np.load(saved) as data:
                assert len(data["keys"]) == len(data["node_keys"]) > 0, saved
        log = node.log()
        assert "Traceback" not in log and "terminate called" not in log, log
    finally:
        camera.close()


# --- save and load ------------------------------------------------------------------------------------------------
def test_a_saved_map_is_found_again_by_a_new_node_in_the_same_frame_and_another_room_is_not(
    client, processes, tmp_path, shared_root
):
    """A node maps walk frames 0..120 and saves. A new node process loads the map: it must wait lost ('not
    relocalised'), stay so through frames of another room (no pose, nothing fused), then place frames of
    the saved place where the first node had placed the same frames (same map frame, within a few cm).
    A map without its SLAM state, or no map at all, is refused with a reason and changes nothing."""
    import shutil

    from showroom_ros.srv import LoadMap, SaveReconstruction

    out = tmp_path / "out"
    first = _slam_node(processes, tmp_path)
    camera = SlamClient(client)
    try:
        _connect(camera, first)
        indices = range(0, 123, 3)
        sent = _stream_walk(camera, shared_root, indices, time.time_ns())
        _tracked(camera, sent[-1], first)
        camera.spin(1.0)
        first_poses = {index: camera.poses[stamp] for index, stamp in zip(indices, sent, strict=True)}
        trajectory = camera.paths[-1]
        saved = call_service(
            client, SaveReconstruction, "/showroom/save_map", SaveReconstruction.Request(name="kitchen"), 120
        )
        assert saved.success and str(out / "kitchen_slam.npz") in saved.files, saved
        first.stop()
    finally:
        camera.close()
    assert first.process.returncode == 0, first.log_path.read_text(errors="replace")

    second = _slam_node(processes, tmp_path)
    camera = SlamClient(client)
    try:
        _connect(camera, second)

        def load(name: str):
            return call_service(client, LoadMap, "/showroom/load_map", LoadMap.Request(name=name), 120)

        missing = load("nowhere")
        assert not missing.success and missing.message, missing
        for suffix in ("_volume.npz", "_map.yaml"):  # a map saved without pose_source slam
            shutil.copy(out / f"kitchen{suffix}", out / f"noslam{suffix}")
        no_slam = load("noslam")
        print(f"load of a map without SLAM state: {no_slam.message}")
        assert not no_slam.success and "noslam_slam.npz" in no_slam.message, no_slam
        camera.spin(0.5)
        assert camera.status.tracking_state == "initialising", camera.status  # the refused loads changed nothing

        loaded = load("kitchen")
        assert loaded.success and loaded.num_blocks > 0 and "relocalise" in loaded.message, loaded
        waiting = lambda: camera.status.tracking_state == "lost" and bool(camera.paths)  # noqa: E731
        assert spin_until(client, waiting, 10), (camera.status, len(camera.paths))
        assert "not relocalised" in camera.status.tracking_reason, camera.status
        assert camera.status.slam_keyframes == len(trajectory), (camera.status, len(trajectory))
        published = camera.paths[-1]  # the loaded graph, as the first node last published it
        assert set(published) == set(trajectory), "the loaded keyframes are not the saved ones"
        assert max(np.abs(published[s] - trajectory[s]).max() for s in published) < 1e-4

        # Another room: never placed in this map, nothing fused into it.
        dining, dining_k = _dining_frames(shared_root)
        seen = len(camera.statuses)
        base = time.time_ns()
        foreign = [base + n * round(SEND_PERIOD_S * 1e9) for n in range(10)]
        for n, stamp in enumerate(foreign):
            rgb, depth = dining[n % len(dining)]
            camera.frame(rgb, depth, stamp, dining_k, dining_k)
            camera.spin(SEND_PERIOD_S)
        camera.spin(2.0)
        assert not camera.poses, f"frames of another room were placed in the loaded map: {len(camera.poses)}"
        after_foreign = camera.statuses[seen:]
        assert after_foreign and all(s.tracking_state == "lost" for s in after_foreign), after_foreign[-1]
        assert all("not relocalised" in s.tracking_reason for s in after_foreign), after_foreign[-1]
        assert camera.status.map_keyframes_integrated == 0, camera.status
        assert "slam: relocalised" not in second.log()

        # The saved place again, under new stamps: relocalised, and where the first node put the same frames.
        again = range(30, 93, 3)
        stamps = _stream_walk(camera, shared_root, again, foreign[-1] + 10**9)
        _tracked(camera, stamps[-1], second)
        assert "slam: relocalised" in second.log(), second.log()
        positions = {
            i: float(np.linalg.norm(camera.poses[s][:3, 3] - first_poses[i][:3, 3]))
            for i, s in zip(again, stamps, strict=True)
            if s in camera.poses
        }
        angles = {
            i: float(
                np.degrees(
                    np.arccos(
                        np.clip((np.trace(camera.poses[s][:3, :3].T @ first_poses[i][:3, :3]) - 1) / 2, -1.0, 1.0)
                    )
                )
            )
            for i, s in zip(again, stamps, strict=True)
            if s in camera.poses
        }
        print(
            f"the same frames, second node vs first: worst {max(positions.values()) * 100:.1f} cm, "
            f"{max(angles.values()):.1f} deg; median {np.median(list(positions.values())) * 100:.1f} cm"
        )
        assert len(positions) >= len(again) - 1, f"only {len(positions)} of {len(again)} frames placed"
        assert max(positions.values()) < 0.03 and max(angles.values()) < 2.0, (positions, angles)  # measured 0.2 cm
        assert camera.status.tracking_state in ("relocalised", "tracking"), camera.status
        assert camera.status.map_keyframes_integrated > 0, camera.status
        _healthy(second)
    finally:
        camera.close()


# --- generated hostile input ---------------------------------------------------------------------------------------
_SIZES = ((640, 480), (320, 240), (641, 479), (64, 48), (1, 1), (3, 900), (1280, 960))
_FOCALS = (1e-3, 0.5, 525.0, 5e4, 9e6, float("nan"))
# Not 0.5 px for depth: a depth camera of a few px focal length with valid depth makes a cloud kilometres
# wide, which the tracker takes seconds over while holding the GIL (the node freezes: a known defect, pinned
# by test_a_depth_camerainfo_of_a_tiny_focal_length_does_not_freeze_the_node below, not found again here).
_DEPTH_FOCALS = (1e-3, 525.0, 5e4, 9e6, float("nan"))


def _hostile_info(rng, header, width: int, height: int, focals=_FOCALS):
    """A CameraInfo of that size whose K may be anything: tiny, huge, NaN, its centre far outside."""
    from sensor_msgs.msg import CameraInfo

    fx = float(focals[int(rng.integers(len(focals)))])
    fy = fx if rng.random() < 0.8 else float(focals[int(rng.integers(len(focals)))])
    cx, cy = (width / 2, height / 2) if rng.random() < 0.6 else rng.uniform(-4, 4, 2) * (width, height)
    k = [fx, 0.0, float(cx), 0.0, fy, float(cy), 0.0, 0.0, 1.0]
    return CameraInfo(header=header, width=width, height=height, distortion_model="plumb_bob", d=[0.0] * 5, k=k)


def hostile_frame(rng, stamp_ns: int) -> list[tuple[str, object]]:
    """One frame that decodes and completes in the collector, so it reaches the tracker: colour of any size
    and content (noise, flat, stripes), depth of its own size and encoding (noise, zeros, NaN, inf, out of
    range), CameraInfos of those sizes with any K; (topic kind, message) in the order a camera sends them."""
    from std_msgs.msg import Header

    from showroom_ros.ros import conversions as conv

    header = Header(stamp=conv.ns_to_stamp(max(0, stamp_ns)), frame_id="camera_color_optical_frame")
    width, height = _SIZES[int(rng.integers(len(_SIZES)))]
    pattern = int(rng.integers(3))
    if pattern == 0:
        rgb = rng.integers(0, 256, (height, width, 3), dtype=np.uint8)
    elif pattern == 1:
        rgb = np.full((height, width, 3), int(rng.integers(256)), np.uint8)
    else:
        rgb = np.repeat(((np.arange(width) // 7) % 2 * 255).astype(np.uint8)[None, :, None], height, 0)
        rgb = np.ascontiguousarray(np.repeat(rgb, 3, 2))
    d_width, d_height = (width, height) if rng.random() < 0.5 else _SIZES[int(rng.integers(len(_SIZES)))]
    if rng.random() < 0.5:  # 16UC1 millimetres: noise, none, all at the limit, a flat wall
        flat = (None, 0, 65535, 1500)[int(rng.integers(4))]
        shape = (d_height, d_width)
        depth = (rng.integers(0, 65536, shape) if flat is None else np.full(shape, flat)).astype(np.uint16)
    else:  # 32FC1 metres, negative to far, with NaN or infinities sprinkled
        depth = rng.uniform(-1.0, 8.0, (d_height, d_width)).astype(np.float32)
        depth[rng.random((d_height, d_width)) < rng.random()] = (np.nan, np.inf, -np.inf)[int(rng.integers(3))]
    depth_header = Header(stamp=header.stamp, frame_id=header.frame_id)
    info_size = (d_width, d_height) if rng.random() < 0.7 else _SIZES[int(rng.integers(len(_SIZES)))]
    return [
        ("depth_info", _hostile_info(rng, depth_header, *info_size, focals=_DEPTH_FOCALS)),
        ("depth", conv.mono_to_image(depth, depth_header)),
        ("info", _hostile_info(rng, header, width, height)),
        ("image", conv.rgb_to_image(rgb, header)),
    ]


def test_generated_hostile_camera_messages_between_walk_frames_leave_the_tracker_alive_and_right(
    client, processes, tmp_path, shared_root
):
    """5,000 generated messages on the colour, depth and both CameraInfo topics of a node that is tracking:
    ros_harness.random_message (any size, step, encoding, data length; NaN, inf, zero, huge intrinsics;
    stamps zero, past, future, out of order, around the walk's own) and, one in ten, a whole generated
    frame that decodes and reaches the tracker (noise, flat or striped colour of odd sizes, depth of
    another size or encoding, all NaN, inf or out of range, K from 1e-3 to 9e6 px or NaN). After every 250
    a valid walk frame, back and forth over the mapped stretch. The node must stay up and keep publishing
    ~/status, place no generated frame, place every valid frame it tracks where it is (and a share of
    them between the generated ones), and track the walk after the burst. Seeded; the seed is printed."""
    from rclpy.qos import HistoryPolicy, QoSProfile, ReliabilityPolicy
    from sensor_msgs.msg import CameraInfo, Image

    from showroom_ros.ros import conversions as conv

    node = _slam_node(processes, tmp_path, evaluation_rate_hz=60.0)  # the most the node evaluates
    camera = SlamClient(client)
    qos = QoSProfile(depth=1000, history=HistoryPolicy.KEEP_ALL, reliability=ReliabilityPolicy.RELIABLE)
    hostile = {
        "image": client.create_publisher(Image, TOPICS["image_topics"][0], qos),
        "depth": client.create_publisher(Image, TOPICS["depth_topics"][0], qos),
        "info": client.create_publisher(CameraInfo, TOPICS["camera_info_topics"][0], qos),
        "depth_info": client.create_publisher(CameraInfo, TOPICS["depth_info_topics"][0], qos),
    }
    context = f"(seed {FUZZ_SEED}; rerun with SHOWROOM_FUZZ_SEED={FUZZ_SEED})"
    try:
        _connect(camera, node)
        assert spin_until(client, lambda: all(p.get_subscription_count() for p in hostile.values()), 30)
        _, color_k, depth_k = _walk_index(shared_root)
        stretch = list(range(0, 33, 3))
        back_and_forth = itertools.cycle(stretch[1:] + stretch[-2::-1])  # 3, ..., 30, 27, ..., 0, 3, ...
        clock = {"stamp": time.time_ns()}
        valid: dict[int, int] = {}  # stamp -> walk index of every valid frame sent

        def next_valid() -> tuple[int, int]:
            clock["stamp"] += round(SEND_PERIOD_S * 1e9)  # 3 walk frames of sequence time per step
            return next(back_and_forth), clock["stamp"]

        stamps = [clock["stamp"] + round(n * SEND_PERIOD_S * 1e9) for n in range(len(stretch))]
        clock["stamp"] = stamps[-1]
        valid.update(zip(_stream_walk(camera, shared_root, stretch, 0, stamps), stretch, strict=True))
        _tracked(camera, stamps[-1], node)

        rng = np.random.default_rng(FUZZ_SEED)
        names = list(hostile)
        now_ns, started, frames_sent = clock["stamp"], time.monotonic(), 0
        for index in range(FUZZ_MESSAGES):
            # Around each valid frame no generated colour image: it would take the frame's evaluation slot
            # (evaluation_rate_hz), and the frame would not meet the generated depth and CameraInfos.
            near_valid = abs(index % 250 - 249) < 40
            now_ns += int(rng.integers(-(10**8), 10**8))  # around the walk's stamps, back and forth
            if rng.random() < 0.1 and not near_valid:  # a whole frame that decodes: it reaches the tracker
                for name, message in hostile_frame(rng, now_ns + int(rng.integers(-(10**9), 10**9))):
                    hostile[name].publish(message)
                frames_sent += 1
            else:
                name = names[int(rng.integers(1 if near_valid else 0, len(names)))]
                hostile[name].publish(random_message("info" if "info" in name else name, rng, now_ns))
            if index % 250 == 249:  # a valid frame between the generated ones, 60 ms from any generated colour
                walk_index, stamp = next_valid()
                rgb, depth, _ = _walk_frame(shared_root, walk_index)
                valid[stamp] = walk_index
                camera.spin(0.06)
                camera.frame(rgb, depth, stamp, color_k, depth_k)
                camera.spin(0.06)
            if index % 50 == 0:  # at most 400 messages/s: the node's receive queues keep up
                spin_until(client, lambda: False, max(0.0, started + index / 400.0 - time.monotonic()))
                assert node.alive(), f"node died after {index} messages {context}\n{node.log()}"
        fuzz_end = time.time_ns()
        print(
            f"{FUZZ_MESSAGES} generated messages ({frames_sent} of them whole frames) in "
            f"{time.monotonic() - started:.1f} s {context}"
        )
        assert spin_until(client, lambda: camera.status.frames_rejected >= 100, 60), (camera.status, context)
        _drained(camera)
        burst = set(valid) - set(stamps)
        during = len(burst & set(camera.poses))
        print(f"{during} of the {len(burst)} valid frames between the generated ones tracked")
        assert during >= len(burst) // 5, (during, len(burst), camera.status, context)  # measured 6-9 of 20

        # The walk after the burst, on: tracked (the first may have to relocalise), and ~/status still comes.
        after = [next_valid() for _ in range(10)]
        _stream_walk(camera, shared_root, [i for i, _ in after], 0, [s for _, s in after])
        valid.update((s, i) for i, s in after)
        _tracked(camera, after[-1][1], node)
        tracked_after = [s for _, s in after if s in camera.poses]
        assert len(tracked_after) >= len(after) - 1, (len(tracked_after), camera.status, context)
        newest = lambda: conv.stamp_to_ns(camera.status.header.stamp) > fuzz_end  # noqa: E731
        assert spin_until(client, newest, 10), ("no ~/status after the burst", context)

        # Only valid frames were placed, each where it is.
        foreign = sorted(set(camera.poses) - set(valid))
        assert not foreign, f"generated frames got ~/camera_pose: {foreign[:5]} {context}"
        truth = {stamp: _walk_frame(shared_root, index)[2] for stamp, index in valid.items()}
        T, ate = _alignment(camera.poses, truth)
        worst = max(_position_errors(camera.poses, truth, T).values())
        print(f"{len(camera.poses)} valid frames tracked, ATE {ate * 100:.1f} cm, worst {worst * 100:.1f} cm")
        assert ate < 0.07 and worst < 0.15, (ate, worst, context)
        log = node.log()
        assert node.alive() and "Traceback" not in log, f"{context}\n{log}"
        errors = [line for line in log.splitlines() if "[ERROR]" in line]
        assert not errors, f"{context}: {errors[:5]}"
    finally:
        for publisher in hostile.values():
            client.destroy_publisher(publisher)
        camera.close()


def test_a_depth_camerainfo_of_a_tiny_focal_length_does_not_freeze_the_node(client, processes, tmp_path, shared_root):
    """One frame with a textured 1280x960 colour image, valid depth and a depth CameraInfo of fx = fy = 0.5 px
    (measured: 6 s in the tracker; 38 s at 10 px), then the walk again at 5 Hz: the frame may be lost, but
    the walk frames after it must all be tracked."""
    from showroom_ros.geometry.camera import CameraIntrinsics

    node = _slam_node(processes, tmp_path)
    camera = SlamClient(client)
    try:
        _connect(camera, node)
        base = time.time_ns()
        sent = _stream_walk(camera, shared_root, range(0, 33, 3), base)
        _tracked(camera, sent[-1], node)
        rng = np.random.default_rng(0)
        texture = rng.integers(0, 256, (960, 1280, 3), dtype=np.uint8)  # a 1280x960 colour camera
        colour = CameraIntrinsics(fx=1050.0, fy=1050.0, cx=640.0, cy=480.0, width=1280, height=960)
        depth = rng.integers(500, 3500, (480, 640)).astype(np.uint16)
        tiny = CameraIntrinsics(fx=0.5, fy=0.5, cx=320.0, cy=240.0, width=640, height=480)
        camera.frame(texture, depth, _stamp(base, 32), colour, tiny)
        after = _stream_walk(camera, shared_root, range(33, 108, 3), base, lockstep=False)  # as a camera sends
        _drained(camera, quiet_s=3.0)
        tracked = [s for s in after if s in camera.poses]
        assert _stamp(base, 32) not in camera.poses, "the frame with the wrong depth camera was placed"
        assert len(tracked) >= len(after) - 1, f"{len(tracked)} of the {len(after)} walk frames after it tracked"
    finally:
        camera.close()


def test_a_frame_a_pixel_wide_is_lost_not_an_error(client, processes, tmp_path, shared_root):
    """With the blur gate off (blur_threshold 0, so every frame reaches the tracker), a 1x1 colour frame with
    its 1x1 CameraInfo and depth: lost, with a reason, and no error in the node's log."""
    from showroom_ros.geometry.camera import CameraIntrinsics

    node = _slam_node(processes, tmp_path, blur_threshold=0.0)
    camera = SlamClient(client)
    try:
        _connect(camera, node)
        base = time.time_ns()
        sent = _stream_walk(camera, shared_root, range(0, 15, 3), base)
        _tracked(camera, sent[-1], node)
        seen = len(camera.statuses)
        dot = CameraIntrinsics(fx=1.0, fy=1.0, cx=0.5, cy=0.5, width=1, height=1)
        camera.frame(np.full((1, 1, 3), 128, np.uint8), np.full((1, 1), 1500, np.uint16), _stamp(base, 14), dot, dot)
        spin_until(client, lambda: any(s.tracking_state == "lost" for s in camera.statuses[seen:]), 5)
        errors = [line for line in node.log().splitlines() if "[ERROR]" in line]
        assert not errors, errors
        lost = [s for s in camera.statuses[seen:] if s.tracking_state == "lost"]
        assert lost and lost[-1].tracking_reason, [s.tracking_state for s in camera.statuses[seen:]]
    finally:
        camera.close()
