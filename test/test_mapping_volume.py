"""The TSDF map on Open3D's VoxelBlockGrid: synthetic box rooms with exact depth, and real 7-Scenes frames."""

from __future__ import annotations

import os
import stat
from pathlib import Path

import cv2
import numpy as np
import pytest
from scipy.spatial import cKDTree

from showroom_ros.geometry.camera import CameraIntrinsics
from showroom_ros.mapping.volume import TsdfVolume, VolumeConfig, render_depth_from_points

ROOM_MIN = np.array([-2.0, -1.5, 0.0])
ROOM_MAX = np.array([2.0, 1.5, 2.4])
SMALL_K = CameraIntrinsics(fx=160.0, fy=160.0, cx=80.0, cy=60.0, width=160, height=120)


def look_at(eye: np.ndarray, target: np.ndarray) -> np.ndarray:
    """Camera-to-world pose (OpenCV optical axes) at ``eye`` looking at ``target``, world z up."""
    forward = (target - eye) / np.linalg.norm(target - eye)
    right = np.cross(forward, [0.0, 0.0, 1.0])
    right /= np.linalg.norm(right)
    down = np.cross(forward, right)
    pose = np.eye(4)
    pose[:3, 0], pose[:3, 1], pose[:3, 2], pose[:3, 3] = right, down, forward, eye
    return pose


def box_room_depth(
    pose_c2w: np.ndarray, k: CameraIntrinsics, lo: np.ndarray = ROOM_MIN, hi: np.ndarray = ROOM_MAX
) -> np.ndarray:
    """Exact depth (camera z) of the inside of an axis-aligned box room seen from a camera inside it."""
    v, u = np.mgrid[0 : k.height, 0 : k.width].astype(np.float64)
    rays_cam = np.stack([(u - k.cx) / k.fx, (v - k.cy) / k.fy, np.ones_like(u)], axis=-1)
    rays = rays_cam @ pose_c2w[:3, :3].T
    origin = pose_c2w[:3, 3]
    with np.errstate(divide="ignore", invalid="ignore"):
        t_hi = (hi - origin) / rays
        t_lo = (lo - origin) / rays
    t_exit = np.where(rays > 0, t_hi, np.where(rays < 0, t_lo, np.inf)).min(axis=-1)
    return t_exit.astype(np.float32)  # rays_cam z = 1, so ray parameter t is camera z


def box_surface_distance(points: np.ndarray, lo: np.ndarray = ROOM_MIN, hi: np.ndarray = ROOM_MAX) -> np.ndarray:
    """Distance from points inside the box to its nearest wall/floor/ceiling."""
    return np.minimum(points - lo, hi - points).min(axis=1)


def room_poses(rng: np.random.Generator, count: int) -> list[np.ndarray]:
    """Cameras well inside the room looking at random points of it (never exactly axis-aligned)."""
    poses = []
    while len(poses) < count:
        eye = rng.uniform(ROOM_MIN + 0.6, ROOM_MAX - 0.6)
        target = rng.uniform(ROOM_MIN + 0.1, ROOM_MAX - 0.1)
        if np.linalg.norm(target - eye) > 0.8 and abs((target - eye)[2]) < 0.95 * np.linalg.norm(target - eye):
            poses.append(look_at(eye, target))
    return poses


SEEDS = [int(s) for s in np.random.default_rng(20261203).integers(0, 2**31 - 1, 6)]


@pytest.mark.parametrize("seed", SEEDS)
def test_box_room_surface_lies_on_the_walls(seed: int) -> None:
    rng = np.random.default_rng(seed)
    volume = TsdfVolume(VolumeConfig(voxel_size=0.04, depth_max=6.0))
    for pose in room_poses(rng, 3):
        report = volume.integrate(box_room_depth(pose, SMALL_K), SMALL_K, pose)
        assert len(report.touched_blocks) > 0 and len(report.dropped_blocks) == 0
    points, colors = volume.extract_point_cloud()
    assert len(points) > 500, f"seed {seed}: only {len(points)} surface points"
    assert colors.shape == points.shape and colors.dtype == np.uint8
    error = box_surface_distance(points)
    assert np.median(np.abs(error)) < 0.01, f"seed {seed}: median wall error {np.median(np.abs(error)):.4f} m"
    assert np.percentile(np.abs(error), 95) < 0.04, f"seed {seed}"
    mesh = volume.extract_mesh()
    vertices = np.asarray(mesh.vertices)
    assert len(mesh.triangles) > 0 and np.percentile(np.abs(box_surface_distance(vertices)), 95) < 0.04


def test_depth_range_limits_what_is_integrated() -> None:
    pose = look_at(np.array([0.0, 0.0, 1.2]), np.array([1.9, 0.3, 1.0]))
    depth = box_room_depth(pose, SMALL_K)
    near = TsdfVolume(VolumeConfig(voxel_size=0.04, depth_max=1.0))
    near.integrate(depth, SMALL_K, pose)
    assert len(near.extract_point_cloud()[0]) == 0  # the wall is ~1.9 m away, beyond depth_max
    far = TsdfVolume(VolumeConfig(voxel_size=0.04, depth_max=4.0))
    far.integrate(depth, SMALL_K, pose)
    assert len(far.extract_point_cloud()[0]) > 100


@pytest.mark.parametrize("seed", SEEDS[:5])
def test_block_budget_drops_blocks_farthest_from_the_latest_camera(seed: int) -> None:
    rng = np.random.default_rng(seed)
    budget = int(rng.integers(20, 200))
    volume = TsdfVolume(VolumeConfig(voxel_size=0.04, depth_max=6.0, block_budget=budget))
    dropped_total = 0
    for pose in room_poses(rng, 3):
        before = volume.block_coords()
        report = volume.integrate(box_room_depth(pose, SMALL_K), SMALL_K, pose)
        assert volume.block_count <= max(budget, len(report.touched_blocks)), f"seed {seed}"
        if len(report.dropped_blocks):
            dropped_total += len(report.dropped_blocks)
            assert "block budget" in report.message
            size, camera = volume.config.block_size, pose[:3, 3]

            def distance(b: np.ndarray, size: float = size, camera: np.ndarray = camera) -> np.ndarray:
                return np.linalg.norm((b + 0.5) * size - camera, axis=1)

            dropped = {tuple(b) for b in report.dropped_blocks.tolist()}
            in_frame = {tuple(b) for b in report.touched_blocks.tolist()}
            assert not dropped & in_frame, f"seed {seed}: the frame's own blocks were dropped"
            kept_old = np.array([b for b in before.tolist() if tuple(b) not in dropped | in_frame])
            if len(kept_old):
                assert distance(report.dropped_blocks).min() >= distance(kept_old).max() - 1e-9, f"seed {seed}"
    assert dropped_total > 0, f"seed {seed}: a budget of {budget} blocks was never reached"


@pytest.mark.parametrize("seed", SEEDS[:4])
def test_save_and_load_give_the_same_map(seed: int, tmp_path_factory: pytest.TempPathFactory) -> None:
    rng = np.random.default_rng(seed)
    volume = TsdfVolume(VolumeConfig(voxel_size=0.05, depth_max=6.0))
    for pose in room_poses(rng, 2):
        color = rng.integers(0, 256, (SMALL_K.height, SMALL_K.width, 3), dtype=np.uint8)
        volume.integrate(box_room_depth(pose, SMALL_K), SMALL_K, pose, color)
    path = tmp_path_factory.mktemp("vol") / "map.npz"
    volume.save(path)
    assert [p.name for p in path.parent.iterdir()] == ["map.npz"]  # no temp file left behind
    umask = os.umask(0)
    os.umask(umask)
    assert stat.S_IMODE(path.stat().st_mode) == 0o666 & ~umask  # not mkstemp's 0600
    loaded = TsdfVolume.load(path)
    assert loaded.config == volume.config and loaded.block_count == volume.block_count
    a, ca = volume.extract_point_cloud()
    b, cb = loaded.extract_point_cloud()
    order_a, order_b = np.lexsort(a.T), np.lexsort(b.T)
    np.testing.assert_allclose(a[order_a], b[order_b], atol=1e-6)
    np.testing.assert_array_equal(ca[order_a], cb[order_b])
    # The loaded map keeps growing.
    pose = room_poses(rng, 1)[0]
    loaded.integrate(box_room_depth(pose, SMALL_K), SMALL_K, pose)


def test_depth_rendered_from_a_pointmap_rebuilds_the_surface() -> None:
    rng = np.random.default_rng(7)
    pose = look_at(np.array([0.3, -0.2, 1.3]), np.array([1.9, 0.8, 0.9]))
    depth = box_room_depth(pose, SMALL_K)
    v, u = np.mgrid[0 : SMALL_K.height, 0 : SMALL_K.width]
    cam = np.stack([(u - SMALL_K.cx) / SMALL_K.fx * depth, (v - SMALL_K.cy) / SMALL_K.fy * depth, depth], -1).reshape(
        -1, 3
    )
    world = cam @ pose[:3, :3].T + pose[:3, 3]
    confidence = rng.uniform(0, 1, len(world))
    world_noisy = world.copy()
    world_noisy[confidence < 0.3] += rng.normal(0, 0.5, (int((confidence < 0.3).sum()), 3))  # junk, low confidence
    rendered = render_depth_from_points(world_noisy, pose, SMALL_K, confidence, min_confidence=0.3)
    valid = np.isfinite(rendered)
    assert valid.mean() > 0.9
    assert np.median(np.abs(rendered[valid] - depth[valid])) < 0.01
    volume = TsdfVolume(VolumeConfig(voxel_size=0.04, depth_max=6.0))
    volume.integrate(rendered, SMALL_K, pose)
    points, _ = volume.extract_point_cloud()
    assert np.percentile(np.abs(box_surface_distance(points)), 90) < 0.04


def _kitchen_frame(kitchen: Path, index: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    stem = kitchen / f"frame-{index:06d}"
    depth = cv2.imread(str(stem) + ".depth.png", cv2.IMREAD_UNCHANGED).astype(np.float32) / 1000.0
    color = cv2.cvtColor(cv2.imread(str(stem) + ".color.jpg"), cv2.COLOR_BGR2RGB)
    pose = np.loadtxt(str(stem) + ".pose.txt")
    return depth, color, pose


def test_real_kitchen_frames_fuse_onto_the_measured_depth(shared_root: Path) -> None:
    k = CameraIntrinsics(fx=585.0, fy=585.0, cx=320.0, cy=240.0, width=640, height=480)
    volume = TsdfVolume(VolumeConfig(voxel_size=0.03, depth_max=3.5))
    frames = [_kitchen_frame(shared_root / "data" / "7scenes_redkitchen", i) for i in (0, 50, 100)]
    for depth, color, pose in frames:
        volume.integrate(depth, k, pose, color)
    points, colors = volume.extract_point_cloud()
    assert len(points) > 10_000 and colors.std() > 5  # real colours, not a constant
    # Every surface point is near a measured depth point of some frame (no invented surface) ...
    measured = []
    for depth, _, pose in frames:
        v, u = np.nonzero(depth > 0)
        z = depth[v, u]
        cam = np.stack([(u - k.cx) / k.fx * z, (v - k.cy) / k.fy * z, z], -1)[::7]
        measured.append(cam @ pose[:3, :3].T + pose[:3, 3])
    tree = cKDTree(np.concatenate(measured))
    distance, _ = tree.query(points)
    assert np.median(distance) < 0.02 and np.percentile(distance, 90) < 0.05
    # ... and the measured depth of frame 0 is covered by the map (completion within 5 cm).
    covered, _ = cKDTree(points).query(measured[0])
    assert (covered < 0.05).mean() > 0.85


def test_empty_and_invalid_inputs(tmp_path: Path) -> None:
    volume = TsdfVolume(VolumeConfig(voxel_size=0.05))
    pose = look_at(np.array([0.0, 0.0, 1.0]), np.array([1.0, 0.0, 1.0]))
    nothing = np.full((SMALL_K.height, SMALL_K.width), np.nan, np.float32)
    assert len(volume.integrate(nothing, SMALL_K, pose).touched_blocks) == 0 and volume.block_count == 0
    assert len(volume.extract_point_cloud()[0]) == 0 and len(volume.extract_mesh().triangles) == 0
    volume.save(tmp_path / "empty.npz")
    assert TsdfVolume.load(tmp_path / "empty.npz").block_count == 0
    with pytest.raises(ValueError):
        volume.integrate(np.ones((3, 3), np.float32), SMALL_K, pose)
    with pytest.raises(ValueError):
        volume.integrate(box_room_depth(pose, SMALL_K), SMALL_K, np.full((4, 4), np.nan))
    with pytest.raises(ValueError):
        VolumeConfig(depth_min=2.0, depth_max=1.0)
