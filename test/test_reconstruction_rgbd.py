"""Depth conversion, RGB-D back-projection (registered and not) and multi-keyframe fusion."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from showroom_ros.capture.keyframes import Keyframe
from showroom_ros.geometry.camera import CameraIntrinsics
from showroom_ros.io.datasets import load_frame_folder
from showroom_ros.reconstruction.rgbd import (
    RegistrationError,
    RGBDFusionConfig,
    backproject_rgbd,
    depth_to_metres,
    fuse_rgbd,
)

K = CameraIntrinsics(200.0, 200.0, 79.5, 59.5, 160, 120)


def coded_image(height: int, width: int) -> np.ndarray:
    """Colour image whose pixel (v, u) has colour (u % 256, v % 256, 7): colours tell where they came from."""
    v, u = np.mgrid[0:height, 0:width]
    return np.stack([u % 256, v % 256, np.full_like(u, 7)], axis=-1).astype(np.uint8)


def plane_depth(intrinsics: CameraIntrinsics, pose: np.ndarray, plane_z: float) -> np.ndarray:
    """Exact depth (camera z) of the world plane z = plane_z seen from a camera-to-world ``pose``."""
    v, u = np.mgrid[0 : intrinsics.height, 0 : intrinsics.width].astype(np.float64)
    rays = np.stack(
        [(u - intrinsics.cx) / intrinsics.fx, (v - intrinsics.cy) / intrinsics.fy, np.ones_like(u)], -1
    )
    world_rays_z = rays @ pose[2, :3]
    return ((plane_z - pose[2, 3]) / world_rays_z).astype(np.float32)


def pose_at(x: float = 0.0, yaw_deg: float = 0.0) -> np.ndarray:
    pose = np.eye(4)
    angle = np.deg2rad(yaw_deg)
    pose[:3, :3] = [[np.cos(angle), 0, np.sin(angle)], [0, 1, 0], [-np.sin(angle), 0, np.cos(angle)]]
    pose[0, 3] = x
    return pose


# --- depth_to_metres -------------------------------------------------------------------------------


def test_16uc1_millimetres_become_metres_with_nan_for_zero() -> None:
    raw = np.array([[0, 1000, 2500], [65535, 1, 0]], dtype=np.uint16)
    metres = depth_to_metres(raw)
    assert metres.dtype == np.float32
    np.testing.assert_array_equal(np.isnan(metres), [[True, False, False], [False, False, True]])
    np.testing.assert_allclose(metres[0, 1:], [1.0, 2.5])
    assert metres[1, 0] == pytest.approx(65.535)
    np.testing.assert_allclose(depth_to_metres(raw, depth_scale=5000.0)[0, 2], 0.5)


def test_32fc1_is_already_metres_and_invalid_values_become_nan() -> None:
    raw = np.array([[1.5, 0.0, np.nan], [np.inf, -2.0, 3.25]], dtype=np.float32)
    metres = depth_to_metres(raw, depth_scale=1000.0)  # scale is ignored for float depth
    np.testing.assert_array_equal(np.isnan(metres), [[False, True, True], [True, True, False]])
    assert metres[0, 0] == 1.5 and metres[1, 2] == 3.25
    assert raw[0, 1] == 0.0  # input untouched
    assert depth_to_metres(raw.astype(np.float64)).dtype == np.float32
    assert depth_to_metres(np.ones((4, 4, 1), np.uint16)).shape == (4, 4)


def test_depth_to_metres_rejects_bad_input() -> None:
    with pytest.raises(ValueError, match="2-D"):
        depth_to_metres(np.zeros((2, 2, 3), np.uint16))
    with pytest.raises(ValueError, match="depth_scale"):
        depth_to_metres(np.zeros((2, 2), np.uint16), depth_scale=0.0)
    with pytest.raises(ValueError, match="integer"):
        depth_to_metres(np.array([["a"]]))


# --- backproject_rgbd ------------------------------------------------------------------------------


def test_registered_plane_backprojects_exactly_with_its_own_colours() -> None:
    depth = np.full((120, 160), 2.0, np.float32)
    points, colors = backproject_rgbd(depth, None, coded_image(120, 160), K, 0.1, 6.0, 1)
    assert points.dtype == np.float32 and colors.dtype == np.uint8
    assert len(points) == 120 * 160
    np.testing.assert_allclose(points[:, 2], 2.0, atol=1e-6)
    u = points[:, 0] / points[:, 2] * K.fx + K.cx
    v = points[:, 1] / points[:, 2] * K.fy + K.cy
    np.testing.assert_allclose(u, np.rint(u), atol=1e-3)  # every point sits on its pixel centre ray
    np.testing.assert_array_equal(colors[:, 0], np.rint(u).astype(int) % 256)
    np.testing.assert_array_equal(colors[:, 1], np.rint(v).astype(int) % 256)


def test_half_size_registered_depth_uses_scaled_colour_intrinsics() -> None:
    depth = np.full((60, 80), 1.5, np.float32)
    # Each 2x2 colour block carries the code of the depth pixel it covers: (u_depth, v_depth).
    image = np.repeat(np.repeat(coded_image(60, 80), 2, axis=0), 2, axis=1)
    points, colors = backproject_rgbd(depth, None, image, K, 0.1, 6.0, 1)
    assert len(points) == 60 * 80
    half = K.scaled(80, 60)
    u_depth = np.rint(points[:, 0] / points[:, 2] * half.fx + half.cx).astype(int)
    v_depth = np.rint(points[:, 1] / points[:, 2] * half.fy + half.cy).astype(int)
    np.testing.assert_array_equal(colors[:, 0], u_depth)
    np.testing.assert_array_equal(colors[:, 1], v_depth)


def test_unregistered_depth_with_wider_view_is_coloured_by_projection_and_clipped() -> None:
    depth_k = CameraIntrinsics(100.0, 100.0, 79.5, 59.5, 160, 120)  # twice the colour camera's field of view
    depth = np.full((120, 160), 3.0, np.float32)
    points, colors = backproject_rgbd(depth, depth_k, coded_image(120, 160), K, 0.1, 6.0, 1)
    u_colour = points[:, 0] / points[:, 2] * K.fx + K.cx
    v_colour = points[:, 1] / points[:, 2] * K.fy + K.cy
    assert (np.rint(u_colour) >= 0).all() and (np.rint(u_colour) <= 159).all()
    assert (np.rint(v_colour) >= 0).all() and (np.rint(v_colour) <= 119).all()
    # Only the central half (in each direction) of the depth image falls inside the colour image.
    assert 0.2 < len(points) / depth.size < 0.3
    np.testing.assert_array_equal(colors[:, 0], np.rint(u_colour).astype(int) % 256)
    np.testing.assert_allclose(points[:, 2], 3.0)


def test_invalid_depth_range_and_stride_filter_points() -> None:
    depth = np.full((120, 160), 2.0, np.float32)
    depth[0, :] = np.nan
    depth[1, :] = 0.05
    depth[2, :] = 9.0
    points, _ = backproject_rgbd(depth, None, coded_image(120, 160), K, 0.1, 6.0, 1)
    assert len(points) == 117 * 160
    strided, _ = backproject_rgbd(
        np.full((120, 160), 2.0, np.float32), None, coded_image(120, 160), K, 0.1, 6.0, 4
    )
    assert len(strided) == 30 * 40


def test_backproject_rejects_mismatched_inputs() -> None:
    depth = np.full((120, 160), 2.0, np.float32)
    with pytest.raises(ValueError, match="aspect"):
        backproject_rgbd(depth, CameraIntrinsics(100, 100, 50, 50, 100, 100), coded_image(120, 160), K)
    with pytest.raises(ValueError, match="uint8"):
        backproject_rgbd(depth, None, np.zeros((120, 160, 3), np.float32), K)
    with pytest.raises(ValueError, match="metres"):
        backproject_rgbd(depth.astype(np.uint16), None, coded_image(120, 160), K)
    with pytest.raises(ValueError, match="min_depth"):
        backproject_rgbd(depth, None, coded_image(120, 160), K, 3.0, 1.0)


# --- fuse_rgbd -------------------------------------------------------------------------------------


def plane_keyframes(poses: list[np.ndarray], plane_z: float = 2.0) -> list[Keyframe]:
    return [
        Keyframe(
            image=coded_image(120, 160),
            stamp_ns=i,
            intrinsics=K,
            depth=plane_depth(K, pose, plane_z),
            pose=pose,
            frame_id=f"cam{i}",
        )
        for i, pose in enumerate(poses)
    ]


def test_fused_plane_stays_on_the_plane_and_counts_observations() -> None:
    keyframes = plane_keyframes([pose_at(0.0), pose_at(0.5), pose_at(0.2, yaw_deg=8.0)])
    config = RGBDFusionConfig(voxel_size=0.02, pixel_stride=1, outlier_neighbors=0)
    result = fuse_rgbd(keyframes, config)
    assert result.frame_id == "map" and result.metric and result.backend == "rgbd" and result.mesh is None
    assert result.points.dtype == np.float32 and result.colors.dtype == np.uint8
    np.testing.assert_allclose(result.points[:, 2], 2.0, atol=1e-6)
    assert result.confidence.min() >= 1 and result.confidence.max() == 3
    # On the plane (|y| < 0.4 m) camera 0 sees x in [-0.8, 0.8], camera 1 [-0.3, 1.3], camera 2 [-0.29, 1.34].
    x, central = result.points[:, 0], np.abs(result.points[:, 1]) < 0.4
    assert (result.confidence[central & (x > -0.27) & (x < 0.77)] == 3).all()
    assert (result.confidence[central & (x > 0.82) & (x < 1.27)] == 2).all()
    assert (result.confidence[(x < -0.31) | (x > 1.32)] == 1).all()
    # One point per 2 cm voxel: no two fused points closer than the grid allows on a plane.
    cells = np.floor((result.points[:, :2] - result.points[:, :2].min(0)) / 0.02).astype(int)
    assert len(np.unique(cells, axis=0)) >= 0.9 * len(cells)
    assert result.camera_poses.shape == (3, 4, 4) and len(result.intrinsics) == 3
    assert {"backproject", "fuse"} <= set(result.timings)


def test_statistical_outlier_removal_drops_isolated_spikes() -> None:
    keyframes = plane_keyframes([pose_at(0.0)])
    keyframes[0].depth[60, 80] = 1.0  # a flying pixel 1 m in front of the plane
    kept = fuse_rgbd(keyframes, RGBDFusionConfig(voxel_size=0.01, pixel_stride=1))
    assert (np.abs(kept.points[:, 2] - 2.0) < 1e-5).all()
    assert "outlier_removal" in kept.timings
    raw = fuse_rgbd(keyframes, RGBDFusionConfig(voxel_size=0.01, pixel_stride=1, outlier_neighbors=0))
    assert (np.abs(raw.points[:, 2] - 1.0) < 1e-5).sum() == 1


def test_missing_inputs_are_named_in_the_error() -> None:
    keyframes = plane_keyframes([pose_at(0.0), pose_at(0.3)])
    keyframes[1].depth = None
    with pytest.raises(ValueError, match=r"keyframe 1 \(frame 'cam1'.*no depth"):
        fuse_rgbd(keyframes)
    keyframes = plane_keyframes([pose_at(0.0), pose_at(0.3)])
    keyframes[0].intrinsics = None
    with pytest.raises(ValueError, match=r"keyframe 0.*intrinsics"):
        fuse_rgbd(keyframes)
    keyframes = plane_keyframes([pose_at(0.0), pose_at(0.3)])
    keyframes[1].pose = None
    with pytest.raises(ValueError, match=r"keyframe 1.*no camera pose.*register_missing_poses"):
        fuse_rgbd(keyframes, RGBDFusionConfig(register_missing_poses=False))
    with pytest.raises(ValueError, match="at least one keyframe"):
        fuse_rgbd([])
    keyframes = plane_keyframes([pose_at(0.0)])
    keyframes[0].depth[:] = np.nan
    with pytest.raises(ValueError, match="no valid depth"):
        fuse_rgbd(keyframes)


def test_unregistrable_keyframe_raises_registration_error() -> None:
    keyframes = plane_keyframes([pose_at(0.0), pose_at(0.0)])
    rng = np.random.default_rng(0)
    keyframes[1].depth = rng.uniform(1.0, 5.0, size=(120, 160)).astype(np.float32)  # structureless noise
    for keyframe in keyframes:
        keyframe.pose = None
    with pytest.raises(RegistrationError, match="could not register keyframe 1"):
        fuse_rgbd(keyframes)


# --- real data -------------------------------------------------------------------------------------


def test_sample_keyframes_fuse_inside_the_ground_truth_scene(repo_root: Path, shared_root: Path) -> None:
    result = fuse_rgbd(load_frame_folder(repo_root / "data" / "redkitchen"))
    assert result.num_points > 50_000 and result.frame_id == "map"
    assert np.bincount(result.confidence.astype(int)).argmax() == 1 and result.confidence.max() == 5

    colour = CameraIntrinsics(525.0, 525.0, 320.0, 240.0, 640, 480)
    depth = CameraIntrinsics(585.0, 585.0, 320.0, 240.0, 640, 480)
    scene = load_frame_folder(
        shared_root / "data" / "7scenes_redkitchen", intrinsics=colour, depth_intrinsics=depth
    )
    assert len(scene) == 20
    reference = fuse_rgbd(scene, RGBDFusionConfig(voxel_size=0.02, pixel_stride=4, outlier_neighbors=0))
    low, high = reference.points.min(0) - 0.05, reference.points.max(0) + 0.05
    assert ((result.points >= low) & (result.points <= high)).all()
    from scipy.spatial import cKDTree

    distances, _ = cKDTree(reference.points).query(result.points)
    assert np.median(distances) < 0.01
    assert np.mean(distances < 0.05) > 0.98


def test_sample_keyframes_register_without_poses(repo_root: Path) -> None:
    keyframes = load_frame_folder(repo_root / "data" / "redkitchen")
    truth = np.stack([k.pose for k in keyframes])
    for keyframe in keyframes:
        keyframe.pose = None
    result = fuse_rgbd(keyframes)
    assert result.frame_id == "showroom" and "registration" in result.timings
    np.testing.assert_allclose(result.camera_poses[0], np.eye(4))
    for index in range(1, len(keyframes)):
        expected = np.linalg.inv(truth[0]) @ truth[index]
        error = np.linalg.inv(expected) @ result.camera_poses[index]
        angle = np.degrees(np.arccos(np.clip((np.trace(error[:3, :3]) - 1) / 2, -1, 1)))
        assert np.linalg.norm(error[:3, 3]) < 0.12, index
        assert angle < 3.0, index


# --- TSDF surface -----------------------------------------------------------------------------------


def test_tsdf_mesh_of_a_plane_lies_on_it_and_covers_what_the_cameras_saw() -> None:
    keyframes = plane_keyframes([pose_at(0.0), pose_at(0.5), pose_at(0.2, yaw_deg=8.0)])
    config = RGBDFusionConfig(voxel_size=0.02, pixel_stride=1, outlier_neighbors=0, tsdf_mesh=True)
    result = fuse_rgbd(keyframes, config)
    mesh = result.mesh
    assert mesh is not None and mesh.num_triangles > 1000 and "tsdf_mesh" in result.timings
    assert mesh.vertices.dtype == np.float32 and mesh.triangles.dtype == np.int32
    assert mesh.vertex_colors.shape == mesh.vertices.shape and mesh.vertex_colors.dtype == np.uint8
    assert mesh.triangles.max() < len(mesh.vertices)
    np.testing.assert_allclose(mesh.vertices[:, 2], 2.0, atol=0.002)
    # The mesh spans what the cameras saw (the fused points' extent: x in [-0.8, 1.34]), and no further.
    plain = fuse_rgbd(keyframes, RGBDFusionConfig(voxel_size=0.02, pixel_stride=1, outlier_neighbors=0))
    assert plain.mesh is None
    np.testing.assert_array_equal(plain.points, result.points)
    seen_low, seen_high = plain.points[:, :2].min(0), plain.points[:, :2].max(0)
    assert seen_low[0] < -0.75 and seen_high[0] > 1.3
    np.testing.assert_allclose(mesh.vertices[:, :2].min(0), seen_low, atol=0.02)
    np.testing.assert_allclose(mesh.vertices[:, :2].max(0), seen_high, atol=0.02)


def test_tsdf_mesh_ignores_depth_outside_the_range_and_bad_config_raises() -> None:
    keyframes = plane_keyframes([pose_at(0.0)])
    keyframes[0].depth[:, :40] = 3.0  # a farther strip: beyond max_depth below
    far = fuse_rgbd(keyframes, RGBDFusionConfig(voxel_size=0.02, outlier_neighbors=0, tsdf_mesh=True))
    assert far.mesh is not None and (np.abs(far.mesh.vertices[:, 2] - 3.0) < 0.01).sum() > 100
    near = fuse_rgbd(keyframes, RGBDFusionConfig(voxel_size=0.02, outlier_neighbors=0, tsdf_mesh=True, max_depth=2.5))
    assert near.mesh is not None and near.mesh.num_triangles > 1000
    np.testing.assert_allclose(near.mesh.vertices[:, 2], 2.0, atol=0.002)
    with pytest.raises(ValueError, match="tsdf_voxel_size"):
        RGBDFusionConfig(tsdf_voxel_size=0.0)
    with pytest.raises(ValueError, match="tsdf_trunc_voxels"):
        RGBDFusionConfig(tsdf_trunc_voxels=0.5)


def test_tsdf_mesh_of_the_sample_keyframes_is_on_the_ground_truth(repo_root: Path, shared_root: Path) -> None:
    """Real data, against the 20-frame reference: the TSDF surface is at least as close as the 5-view cloud."""
    from scipy.spatial import cKDTree

    result = fuse_rgbd(load_frame_folder(repo_root / "data" / "redkitchen"), RGBDFusionConfig(tsdf_mesh=True))
    assert result.mesh is not None and result.mesh.num_triangles > 100_000
    colour = CameraIntrinsics(525.0, 525.0, 320.0, 240.0, 640, 480)
    depth = CameraIntrinsics(585.0, 585.0, 320.0, 240.0, 640, 480)
    scene = load_frame_folder(shared_root / "data" / "7scenes_redkitchen", intrinsics=colour, depth_intrinsics=depth)
    reference = fuse_rgbd(scene, RGBDFusionConfig(voxel_size=0.01, pixel_stride=2, outlier_neighbors=0)).points
    distances, _ = cKDTree(reference).query(result.mesh.vertices)
    assert np.median(distances) < 0.007 and np.quantile(distances, 0.9) < 0.012
    # Grey mesh colours would mean the colour camera was not used.
    assert result.mesh.vertex_colors.astype(float).std(axis=0).min() > 10


@pytest.mark.parametrize("sources_count", [1, 5, 64, 70])
def test_fuse_points_confidence_counts_distinct_sources_per_voxel(sources_count):
    """Against a per-voxel set count, on both paths (a bit per source up to 64 sources, a sort beyond)."""
    from showroom_ros.reconstruction.rgbd import fuse_points

    rng = np.random.default_rng(sources_count)
    points = rng.uniform(0.0, 0.2, (5000, 3))
    colors = rng.integers(0, 256, (5000, 3)).astype(np.float64)
    sources = rng.integers(0, sources_count, 5000)
    fused, _, confidence = fuse_points(points, colors, sources, 0.02)
    cells = np.floor((points - points.min(axis=0)) / 0.02).astype(np.int64)
    seen: dict[tuple, set] = {}
    for cell, source in zip(map(tuple, cells), sources, strict=True):
        seen.setdefault(cell, set()).add(int(source))
    assert sorted(confidence.astype(int).tolist()) == sorted(len(s) for s in seen.values())
    assert len(fused) == len(seen)
