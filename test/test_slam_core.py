"""The SLAM core (showroom_ros/slam) on real RGB-D frames: 7-Scenes redkitchen (the shared walk) and, as
"another place", the slambook2 dining room. No ROS here: test_ros_slam.py drives the node.

Ground truth caveat, measured (docs/slam.md): 7-Scenes' KinectFusion poses and the depth disagree by about
1.3 cm / 0.5 deg per frame (a frame registered to the map fused from the ground truth moves that much),
so the bounds here leave room for that.
"""

from __future__ import annotations

from pathlib import Path

import cv2
import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from showroom_ros.geometry.camera import CameraIntrinsics
from showroom_ros.geometry.similarity import trajectory_alignment
from showroom_ros.io.datasets import read_frame_index
from showroom_ros.slam.config import SlamConfig
from showroom_ros.slam.frames import FrameBuilder, FrameError
from showroom_ros.slam.gravity import LEVEL_CAMERA, floor_pose, initial_pose
from showroom_ros.slam.pose_graph import PoseGraph
from showroom_ros.slam.registration import register
from showroom_ros.slam.storage import SlamFileError, load_slam, save_slam
from showroom_ros.slam.system import RgbdSlam

COLOUR_K = CameraIntrinsics(525.0, 525.0, 320.0, 240.0, 640, 480)
DEPTH_K = CameraIntrinsics(585.0, 585.0, 320.0, 240.0, 640, 480)
DINING_K = CameraIntrinsics(518.0, 519.0, 325.5, 253.5, 640, 480)


Frame = tuple[int, np.ndarray, np.ndarray, np.ndarray]


def _walk(shared_root: Path, start: int, stop: int, step: int = 3) -> list[Frame]:
    """(stamp ns, rgb, depth m, ground-truth pose) of walk frames start..stop, every ``step``-th."""
    folder = shared_root / "data" / "7scenes_redkitchen_walk"
    frames = []
    for record in read_frame_index(folder / "frames_c2w.txt")[start:stop:step]:
        number = int(Path(record.rgb).name.split(".")[0].split("-")[-1])
        rgb = cv2.cvtColor(cv2.imread(str(record.rgb)), cv2.COLOR_BGR2RGB)
        depth = cv2.imread(str(record.depth), cv2.IMREAD_UNCHANGED).astype(np.float32) / 1000.0
        depth[depth == 0] = np.nan
        frames.append((round(number * 1e9 / 30), rgb, depth, record.pose))
    return frames


def _dining(shared_root: Path) -> list[tuple[np.ndarray, np.ndarray]]:
    folder = shared_root / "data" / "slambook2_diningroom"
    frames = []
    for index in range(1, 6):
        rgb = cv2.cvtColor(cv2.imread(str(folder / "color" / f"{index}.png")), cv2.COLOR_BGR2RGB)
        depth = cv2.imread(str(folder / "depth" / f"{index}.pgm"), cv2.IMREAD_UNCHANGED).astype(np.float32) / 1000
        depth[depth == 0] = np.nan
        frames.append((rgb, depth))
    return frames


def _ate(estimate: dict[int, np.ndarray], truth: dict[int, np.ndarray]) -> float:
    return trajectory_alignment(estimate, truth)[1]


def _relative_error(T: np.ndarray, truth: np.ndarray) -> tuple[float, float]:
    error = np.linalg.inv(truth) @ T
    angle = np.degrees(np.arccos(np.clip((np.trace(error[:3, :3]) - 1) / 2, -1, 1)))
    return float(np.linalg.norm(error[:3, 3])), float(angle)


@pytest.fixture(scope="module")
def walk_start(shared_root: Path):
    return _walk(shared_root, 0, 90)


@pytest.fixture(scope="module")
def builder() -> FrameBuilder:
    return FrameBuilder(SlamConfig())


# --- registration --------------------------------------------------------------------------------------
def test_consecutive_frames_register_close_to_the_ground_truth(walk_start, builder) -> None:
    errors = []
    for (s0, rgb0, d0, p0), (s1, rgb1, d1, p1) in zip(walk_start[:-1:3], walk_start[1::3], strict=False):
        target = builder.build(s0, rgb0, d0, COLOUR_K, DEPTH_K)
        source = builder.build(s1, rgb1, d1, COLOUR_K, DEPTH_K)
        result = register(source, target, SlamConfig())
        assert result.accepted, result.reason
        errors.append(_relative_error(result.T_target_source, np.linalg.inv(p0) @ p1))
    metres, degrees = np.array(errors).T
    # Steps of ~5 cm; the ground truth itself is good to about a centimetre here.
    assert np.median(metres) < 0.015 and np.median(degrees) < 1.0, (metres, degrees)


def test_another_place_and_a_covered_lens_do_not_register(walk_start, builder, shared_root) -> None:
    stamp, rgb, depth, _ = walk_start[0]
    target = builder.build(stamp, rgb, depth, COLOUR_K, DEPTH_K)
    for other_rgb, other_depth in _dining(shared_root):
        foreign = builder.build(stamp + 1, other_rgb, other_depth, DINING_K, None)
        assert not register(foreign, target, SlamConfig(), min_inliers=40, max_rmse=0.03).accepted
    black = builder.build(stamp + 2, np.zeros_like(rgb), np.full_like(depth, np.nan), COLOUR_K, DEPTH_K)
    assert len(black.keypoints) == 0 and black.valid_depth == 0.0
    assert not register(black, target, SlamConfig()).accepted


@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(
    height=st.integers(1, 64),
    width=st.integers(1, 64),
    channels=st.sampled_from([1, 3, 4]),
    depth_fill=st.sampled_from([np.nan, np.inf, -1.0, 0.0, 1.5, 1e9]),
    depth_shape=st.sampled_from(["same", "other", "flat"]),
)
def test_any_frame_either_builds_or_is_a_frame_error(height, width, channels, depth_fill, depth_shape) -> None:
    """Whatever arrives, the frame builder says FrameError or builds; nothing else escapes."""
    builder = FrameBuilder(SlamConfig())
    rng = np.random.default_rng(height * 100 + width)
    image = rng.integers(0, 255, (height, width, channels), dtype=np.uint8)
    if channels == 1:
        image = image[:, :, 0]
    depth = {"same": np.full((height, width), depth_fill, np.float32), "other": np.full((7, 5), depth_fill, np.float32)}
    depth_m = depth.get(depth_shape, np.full(height * width, depth_fill, np.float32))
    intrinsics = CameraIntrinsics(50.0, 50.0, width / 2, height / 2, width, height)
    try:
        frame = builder.build(0, image, depth_m, intrinsics, None)
    except FrameError:
        return
    assert frame.depth.shape == frame.gray.shape
    assert np.all(np.isnan(frame.depth) | ((frame.depth >= 0.2) & (frame.depth <= 4.0)))


# --- the whole system ---------------------------------------------------------------------------------------
def test_a_revisit_closes_a_loop_and_the_trajectory_stays_accurate(shared_root) -> None:
    """Walk frames 0..300 (every 3rd, as at 5 Hz): the camera comes back over the table, closures are
    found, every one is true, and the keyframes stay within the ground truth's own accuracy."""
    frames = _walk(shared_root, 0, 300)
    slam = RgbdSlam(SlamConfig())
    truth = {stamp: pose for stamp, _, _, pose in frames}
    for index, (stamp, rgb, depth, _) in enumerate(frames):
        result = slam.track(stamp, rgb, depth, COLOUR_K, DEPTH_K)
        assert result.state in ("tracking", "relocalised"), (index, result.reason)
    assert slam.counters.closures_accepted >= 5, slam.counters
    keyframes = dict(slam.trajectory())
    assert _ate(keyframes, truth) < 0.05, _ate(keyframes, truth)  # the floor chain: about 8 cm
    for edge in slam.graph.edges:  # every accepted closure is a true one
        if edge.kind == "closure":
            first, second = slam.keyframe_stamps[edge.first], slam.keyframe_stamps[edge.second]
            metres, degrees = _relative_error(edge.T_first_second, np.linalg.inv(truth[first]) @ truth[second])
            assert metres < 0.08 and degrees < 4.0, (edge.first, edge.second, metres, degrees)


def test_a_jump_back_is_lost_for_a_frame_then_relocalised_in_the_same_map(shared_root) -> None:
    frames = _walk(shared_root, 90, 180) + [(s + 10**11, rgb, d, p) for s, rgb, d, p in _walk(shared_root, 90, 120)]
    slam = RgbdSlam(SlamConfig())
    states = [slam.track(stamp, rgb, depth, COLOUR_K, DEPTH_K).state for stamp, rgb, depth, _ in frames]
    assert states[:30].count("lost") == 0
    assert "relocalised" in states[30:33] and states[-1] == "tracking", states[28:]


def test_black_and_foreign_frames_are_lost_then_the_walk_relocalises(shared_root) -> None:
    walk_start = _walk(shared_root, 0, 180)
    slam = RgbdSlam(SlamConfig())
    truth = {}
    poses = {}
    for stamp, rgb, depth, pose in walk_start[:40]:
        result = slam.track(stamp, rgb, depth, COLOUR_K, DEPTH_K)
        truth[stamp], poses[stamp] = pose, result.pose
    last = walk_start[39][0]
    black = slam.track(last + 1, np.zeros((480, 640, 3), np.uint8), np.full((480, 640), np.nan, np.float32), COLOUR_K)
    assert black.state == "lost" and black.pose is None
    assert "depth" in black.reason or "features" in black.reason, black.reason
    for offset, (rgb, depth) in enumerate(_dining(shared_root)):
        foreign = slam.track(last + 2 + offset, rgb, depth, DINING_K)
        assert foreign.state == "lost" and foreign.pose is None, foreign
        assert "not relocalised" in foreign.reason
    keyframes_while_lost = len(slam.graph)
    resumed = [slam.track(stamp, rgb, depth, COLOUR_K, DEPTH_K) for stamp, rgb, depth, _ in walk_start[45:]]
    assert resumed[0].state == "relocalised", resumed[0].reason
    assert all(r.state == "tracking" for r in resumed[1:])
    assert len(slam.graph) >= keyframes_while_lost
    for (stamp, *_, pose), result in zip(walk_start[45:], resumed, strict=True):
        truth[stamp], poses[stamp] = pose, result.pose
    assert _ate(poses, truth) < 0.06  # the same map frame: one alignment fits before and after (else: metres)


# --- the pose graph ------------------------------------------------------------------------------------------
def _ring(count: int, radius: float) -> list[np.ndarray]:
    poses = []
    for i in range(count):
        angle = 2 * np.pi * i / count
        pose = np.eye(4)
        pose[:3, :3] = cv2.Rodrigues(np.array([0.0, 0.0, angle]))[0]
        pose[:3, 3] = [radius * np.cos(angle), radius * np.sin(angle), 0.0]
        poses.append(pose)
    return poses


def _closed_ring(truth: list[np.ndarray], wrong_closure: bool) -> tuple[float, float, float]:
    """(end error before the closure, end error after, worst error after) of a biased odometry ring."""
    rng = np.random.default_rng(3)
    graph = PoseGraph(SlamConfig())
    estimate = truth[0].copy()
    graph.add_node(0, estimate)
    for i in range(1, len(truth)):
        drifted = np.linalg.inv(truth[i - 1]) @ truth[i]
        drifted[:3, 3] += rng.normal(0, 0.01, 3) + 0.02  # a bias: the ring does not close by itself
        estimate = estimate @ drifted
        graph.add_node(i, estimate)
        graph.add_edge(i - 1, i, drifted, "odometry")
    graph.optimise()
    end = len(truth) - 1
    before = float(np.linalg.norm(graph.pose(end)[:3, 3] - truth[end][:3, 3]))
    graph.add_edge(end, 0, np.linalg.inv(truth[end]) @ truth[0], "closure")
    if wrong_closure:  # a closure 1.1 m off, between two places that are not the same
        wrong = np.linalg.inv(truth[end // 2]) @ truth[0]
        wrong[:3, 3] += [1.0, -0.5, 0.0]
        graph.add_edge(end // 2, 0, wrong, "closure")
    graph.optimise(extra_iterations=3)
    errors = [float(np.linalg.norm(graph.pose(i)[:3, 3] - truth[i][:3, 3])) for i in range(len(truth))]
    return before, errors[end], max(errors)


def test_the_pose_graph_closes_a_drifted_ring_and_a_wrong_closure_does_not_bend_it() -> None:
    truth = _ring(24, 2.0)
    before, after, worst = _closed_ring(truth, wrong_closure=False)
    assert before > 0.3 and after < before / 4, (before, after)
    assert worst < before / 1.5, (before, worst)
    _, after_wrong, worst_wrong = _closed_ring(truth, wrong_closure=True)
    # Under the Cauchy kernel the wrong closure barely moves the graph (a Gaussian one bends it by decimetres).
    assert after_wrong < after + 0.03 and worst_wrong < worst + 0.03, (after, after_wrong, worst, worst_wrong)


def test_edges_need_known_nodes_and_a_known_kind() -> None:
    graph = PoseGraph(SlamConfig())
    graph.add_node(0, np.eye(4))
    with pytest.raises(KeyError):
        graph.add_edge(0, 1, np.eye(4), "odometry")
    graph.add_node(1, np.eye(4))
    with pytest.raises(ValueError, match="kind"):
        graph.add_edge(0, 1, np.eye(4), "guess")
    with pytest.raises(ValueError, match="already"):
        graph.add_node(1, np.eye(4))


# --- saved maps ------------------------------------------------------------------------------------------------
def test_a_saved_slam_relocalises_the_same_place_and_refuses_another(shared_root, tmp_path) -> None:
    walk_start = _walk(shared_root, 0, 180)
    slam = RgbdSlam(SlamConfig())
    given_poses = {}
    for stamp, rgb, depth, _ in walk_start[:45]:
        given_poses[stamp] = slam.track(stamp, rgb, depth, COLOUR_K, DEPTH_K).pose
    path = save_slam(slam, tmp_path / "room_slam.npz")
    assert not list(tmp_path.glob("*.tmp"))
    loaded = load_slam(path, SlamConfig())
    assert loaded.state == "lost" and "not relocalised" in loaded.reason
    for key, pose in slam.graph.poses().items():
        np.testing.assert_allclose(loaded.graph.pose(key), pose, atol=1e-4)
    for rgb, depth in _dining(shared_root):
        refused = loaded.track(10**12, rgb, depth, DINING_K)
        assert refused.pose is None and "not relocalised" in refused.reason
    stamp, rgb, depth, _ = walk_start[30]
    found = loaded.track(stamp, rgb, depth, COLOUR_K, DEPTH_K)
    assert found.state == "relocalised", found.reason
    metres, degrees = _relative_error(found.pose, given_poses[stamp])
    assert metres < 0.02 and degrees < 1.0, (metres, degrees)
    next_stamp, rgb, depth, _ = walk_start[31]
    assert loaded.track(next_stamp, rgb, depth, COLOUR_K, DEPTH_K).state == "tracking"


@pytest.mark.parametrize("damage", ["truncated", "not_npz", "version", "missing_array"])
def test_a_damaged_slam_file_is_a_clear_error(walk_start, tmp_path, damage) -> None:
    slam = RgbdSlam(SlamConfig())
    for stamp, rgb, depth, _ in walk_start[:12]:
        slam.track(stamp, rgb, depth, COLOUR_K, DEPTH_K)
    path = save_slam(slam, tmp_path / "room_slam.npz")
    data = dict(np.load(path))
    if damage == "truncated":
        path.write_bytes(path.read_bytes()[:500])
    elif damage == "not_npz":
        path.write_text("hello")
    elif damage == "version":
        data["version"] = np.array(99)
        np.savez(path, **data)
    else:
        del data["cloud_offsets"]
        np.savez(path, **data)
    with pytest.raises(SlamFileError):
        load_slam(path, SlamConfig())


# --- which way is up -------------------------------------------------------------------------------------------
def test_a_level_first_camera_looks_along_the_maps_y_axis_at_the_given_height(walk_start, builder) -> None:
    stamp, rgb, depth, _ = walk_start[0]
    pose = initial_pose(builder.build(stamp, rgb, depth, COLOUR_K, DEPTH_K), SlamConfig(camera_height=1.3))
    np.testing.assert_allclose(pose[:3, :3], LEVEL_CAMERA)
    np.testing.assert_allclose(pose[:3, 3], [0, 0, 1.3])
    np.testing.assert_allclose(pose[:3, :3] @ [0, 0, 1], [0, 1, 0])  # optical axis: horizontal
    np.testing.assert_allclose(pose[:3, :3] @ [0, -1, 0], [0, 0, 1])  # image up: map up


def test_a_floor_plane_gives_up_and_the_cameras_height() -> None:
    """A camera 1.2 m over a floor, pitched 20 deg down; the floor points in its frame."""
    rng = np.random.default_rng(0)
    floor = np.column_stack([rng.uniform(-2, 2, 4000), rng.uniform(0.5, 4, 4000), np.zeros(4000)])  # z-up world
    wall = np.column_stack([rng.uniform(-2, 2, 2000), np.full(2000, 4.0), rng.uniform(0, 2.5, 2000)])
    pitch = np.radians(20)
    camera = np.eye(4)
    camera[:3, :3] = LEVEL_CAMERA @ cv2.Rodrigues(np.array([-pitch, 0.0, 0.0]))[0]
    camera[:3, 3] = [0, 0, 1.2]
    points = np.vstack([floor, wall])
    in_camera = (points - camera[:3, 3]) @ camera[:3, :3]
    pose, why = floor_pose(in_camera + rng.normal(0, 0.005, in_camera.shape))
    assert pose is not None, why
    assert abs(pose[2, 3] - 1.2) < 0.02
    up_in_camera = pose[2, :3]  # the map's z axis in camera coordinates
    np.testing.assert_allclose(up_in_camera, camera[2, :3], atol=0.02)
    assert floor_pose(in_camera[:100])[0] is None


def test_localization_only_tracks_in_a_loaded_map_without_growing_it(shared_root, tmp_path) -> None:
    frames = _walk(shared_root, 0, 180)
    slam = RgbdSlam(SlamConfig())
    for stamp, rgb, depth, _ in frames[:50]:
        slam.track(stamp, rgb, depth, COLOUR_K, DEPTH_K)
    loaded = load_slam(save_slam(slam, tmp_path / "room_slam.npz"), SlamConfig())
    loaded.localization_only = True
    keyframes = len(loaded.graph)
    states = [loaded.track(s + 10**11, rgb, d, COLOUR_K, DEPTH_K).state for s, rgb, d, _ in frames[10:50]]
    assert states[0] == "relocalised" and states.count("lost") == 0, states
    assert len(loaded.graph) == keyframes and len(loaded.database) == keyframes
