"""Registration of RGB-only reconstructions to the robot: pose alignment, scale from depth.

Synthetic scenes with known similarity transforms (scale 0.1-10, arbitrary rotation) must be recovered
to 1e-6; noise must degrade the fit gradually, not break it; degenerate layouts (collinear cameras,
2 keyframes, no motion) must be detected and reported rather than producing a silent wrong answer.
"""

from __future__ import annotations

import numpy as np
import pytest
from scipy.spatial.transform import Rotation

from showroom_ros.capture.keyframes import Keyframe
from showroom_ros.geometry.camera import CameraIntrinsics
from showroom_ros.geometry.similarity import DegenerateGeometryError, Similarity, umeyama
from showroom_ros.reconstruction.registration import (
    ANCHORED_FRAME_ID,
    align_poses,
    depth_in_colour_pixels,
    estimate_depth_scale,
    register_to_keyframes,
    transform_reconstruction,
)
from showroom_ros.reconstruction.result import Reconstruction, TriangleMesh

K = CameraIntrinsics(100.0, 100.0, 39.5, 29.5, 80, 60)


def _random_similarity(rng: np.random.Generator, scale: float) -> Similarity:
    rotation = Rotation.random(random_state=rng).as_matrix()
    return Similarity(scale=scale, rotation=rotation, translation=rng.uniform(-5, 5, 3))


def _look_at(centre: np.ndarray, target: np.ndarray) -> np.ndarray:
    """Camera-to-world pose (OpenCV axes) at ``centre`` looking at ``target``."""
    forward = target - centre
    forward /= np.linalg.norm(forward)
    right = np.cross(forward, [0.0, 0.0, 1.0])
    right /= np.linalg.norm(right)
    down = np.cross(forward, right)
    pose = np.eye(4)
    pose[:3, :3] = np.stack([right, down, forward], axis=1)
    pose[:3, 3] = centre
    return pose


def _ring_of_cameras(count: int, rng: np.random.Generator, height_jitter: float = 0.3) -> np.ndarray:
    angles = np.linspace(0, 1.2, count)
    centres = np.stack(
        [2 * np.cos(angles), 2 * np.sin(angles), rng.uniform(-height_jitter, height_jitter, count)], 1
    )
    return np.stack([_look_at(c, np.zeros(3)) for c in centres])


@pytest.mark.parametrize("scale", [0.1, 1.0, 10.0])
@pytest.mark.parametrize("count", [3, 5])
def test_align_poses_recovers_the_model_to_map_similarity(scale: float, count: int):
    rng = np.random.default_rng(count * 10 + int(scale))
    known = _ring_of_cameras(count, rng)
    model_to_map = _random_similarity(rng, scale)
    predicted = model_to_map.inverse().transform_poses(known)  # what a model would return
    alignment = align_poses(predicted, known)
    assert alignment.method == "Umeyama on camera centres" and not alignment.warnings
    assert alignment.similarity.scale == pytest.approx(scale, rel=1e-6)
    np.testing.assert_allclose(alignment.similarity.rotation, model_to_map.rotation, atol=1e-6)
    np.testing.assert_allclose(alignment.similarity.transform_poses(predicted), known, atol=1e-6)
    assert alignment.centre_rms < 1e-6 and alignment.rotation_errors_deg.max() < 1e-4


def test_align_poses_degrades_gracefully_with_noise():
    rng = np.random.default_rng(7)
    known = _ring_of_cameras(5, rng)
    truth = _random_similarity(rng, 0.5)
    errors = []
    for sigma in (0.0, 0.005, 0.02, 0.05):
        predicted = truth.inverse().transform_poses(known)
        noisy = predicted.copy()
        noisy[:, :3, 3] += rng.normal(scale=sigma / truth.scale, size=(5, 3))
        alignment = align_poses(noisy, known)
        errors.append(abs(alignment.similarity.scale / truth.scale - 1))
        assert alignment.centre_rms < 4 * sigma + 1e-9  # residual stays of the order of the noise
    assert errors[0] < 1e-9
    assert errors[1] < 0.05 and errors[3] < 0.25
    assert errors[3] > errors[0]


def test_collinear_cameras_are_detected_and_rotation_comes_from_orientations():
    rng = np.random.default_rng(3)
    rotations = Rotation.random(4, random_state=rng).as_matrix()
    known = np.repeat(np.eye(4)[None], 4, axis=0)
    known[:, :3, :3] = rotations
    known[:, :3, 3] = np.outer(np.linspace(0, 1.5, 4), [1.0, 0.2, 0.0])  # a robot driving straight
    truth = _random_similarity(rng, 4.0)
    predicted = truth.inverse().transform_poses(known)
    with pytest.raises(DegenerateGeometryError, match="collinear"):
        umeyama(predicted[:, :3, 3], known[:, :3, 3])
    alignment = align_poses(predicted, known)
    assert any("collinear" in w for w in alignment.warnings)
    assert alignment.similarity.scale == pytest.approx(4.0, rel=1e-6)
    np.testing.assert_allclose(alignment.similarity.transform_poses(predicted), known, atol=1e-6)


def test_two_keyframes_are_reported_and_still_aligned():
    rng = np.random.default_rng(4)
    known = _ring_of_cameras(2, rng)
    truth = _random_similarity(rng, 0.25)
    alignment = align_poses(truth.inverse().transform_poses(known), known)
    assert any("only 2" in w for w in alignment.warnings)
    assert alignment.similarity.scale == pytest.approx(0.25, rel=1e-6)


def test_no_baseline_or_single_pose_cannot_fix_the_scale():
    rng = np.random.default_rng(5)
    known = _ring_of_cameras(3, rng)
    known[:, :3, 3] = [1.0, 2.0, 0.5]  # turned on the spot
    with pytest.raises(DegenerateGeometryError, match="moved only"):
        align_poses(known, known)
    with pytest.raises(DegenerateGeometryError, match="at least 2"):
        align_poses(known[:1], known[:1])
    # With a scale from elsewhere (depth), one pose is enough.
    truth = Similarity(
        scale=2.0, rotation=Rotation.random(random_state=rng).as_matrix(), translation=np.array([1.0, 0.0, 0.0])
    )
    predicted = truth.inverse().transform_poses(known[:1])
    alignment = align_poses(predicted, known[:1], fixed_scale=2.0)
    np.testing.assert_allclose(alignment.similarity.matrix, truth.matrix, atol=1e-9)


def test_mismatched_inputs_raise_clear_errors():
    with pytest.raises(ValueError, match="pair up"):
        align_poses(np.repeat(np.eye(4)[None], 3, 0), np.repeat(np.eye(4)[None], 2, 0))
    with pytest.raises(ValueError, match=r"\(K, 4, 4\)"):
        align_poses(np.eye(4), np.eye(4))


# --- whole reconstructions ------------------------------------------------------------------------


def _scene(rng: np.random.Generator, count: int = 4) -> tuple[np.ndarray, np.ndarray]:
    """Map-frame camera poses around a box of points."""
    points = rng.uniform(-0.5, 0.5, size=(400, 3))
    return _ring_of_cameras(count, rng), points


def _depth_image(pose: np.ndarray, points: np.ndarray) -> np.ndarray:
    """A sensor depth image (registered, K) of ``points`` seen from ``pose``: one z-buffered pixel each."""
    camera = (points - pose[:3, 3]) @ pose[:3, :3]
    depth = np.full((K.height, K.width), np.inf, dtype=np.float32)
    u = np.rint(camera[:, 0] / camera[:, 2] * K.fx + K.cx).astype(int)
    v = np.rint(camera[:, 1] / camera[:, 2] * K.fy + K.cy).astype(int)
    inside = (u >= 0) & (u < K.width) & (v >= 0) & (v < K.height)
    np.minimum.at(depth, (v[inside], u[inside]), camera[inside, 2].astype(np.float32))
    depth[np.isinf(depth)] = np.nan
    return depth


def _observations(pose_in_model: np.ndarray, model_points: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    camera = (model_points - pose_in_model[:3, 3]) @ pose_in_model[:3, :3]
    pixels = np.stack(
        [camera[:, 0] / camera[:, 2] * K.fx + K.cx, camera[:, 1] / camera[:, 2] * K.fy + K.cy], 1
    )
    return pixels, camera[:, 2]


def _keyframes(poses: np.ndarray, with_pose: bool, depths: list[np.ndarray] | None = None) -> list[Keyframe]:
    image = np.zeros((K.height, K.width, 3), np.uint8)
    return [
        Keyframe(
            image=image, intrinsics=K, pose=pose if with_pose else None, depth=None if depths is None else d
        )
        for pose, d in zip(poses, depths or [None] * len(poses), strict=True)
    ]


def _model_reconstruction(poses_in_model: np.ndarray, model_points: np.ndarray) -> Reconstruction:
    n = len(model_points)
    mesh = TriangleMesh(
        model_points[:3].astype(np.float32), np.array([[0, 1, 2]], np.int32), np.zeros((3, 3), np.uint8)
    )
    return Reconstruction(
        points=model_points.astype(np.float32),
        colors=np.zeros((n, 3), np.uint8),
        confidence=np.ones(n, np.float32),
        camera_poses=poses_in_model,
        intrinsics=[K] * len(poses_in_model),
        frame_id="model",
        metric=False,
        mesh=mesh,
    )


def test_register_with_known_poses_lands_in_map_at_metric_scale():
    rng = np.random.default_rng(11)
    poses, points = _scene(rng)
    model_from_map = _random_similarity(rng, 0.3).inverse()
    model_points = model_from_map.transform_points(points)
    reconstruction = _model_reconstruction(model_from_map.transform_poses(poses), model_points)
    registered, report = register_to_keyframes(reconstruction, _keyframes(poses, with_pose=True))
    assert registered.frame_id == "map" and registered.metric and report.metric
    np.testing.assert_allclose(registered.points, points, atol=1e-5)  # float32 storage
    np.testing.assert_allclose(registered.camera_poses, poses, atol=1e-6)
    np.testing.assert_allclose(registered.mesh.vertices, points[:3], atol=1e-5)
    assert "aligned to 4 known keyframe poses" in report.summary()
    assert reconstruction.frame_id == "model"  # the input is not modified


def test_register_with_depth_only_is_metric_and_anchored_at_the_first_camera():
    rng = np.random.default_rng(12)
    poses, points = _scene(rng, 3)
    depths = [_depth_image(p, points) for p in poses]
    model_from_map = _random_similarity(rng, 0.2).inverse()  # model units = 5 x metres
    model_poses = model_from_map.transform_poses(poses)
    model_points = model_from_map.transform_points(points)
    observations = [_observations(p, model_points) for p in model_poses]
    registered, report = register_to_keyframes(
        _model_reconstruction(model_poses, model_points),
        _keyframes(poses, with_pose=False, depths=depths),
        depth_observations=observations,
    )
    assert registered.frame_id == ANCHORED_FRAME_ID and registered.metric
    assert report.depth_scale is not None and report.depth_scale.scale == pytest.approx(0.2, rel=1e-3)
    np.testing.assert_allclose(registered.camera_poses[0], np.eye(4), atol=1e-9)
    # Metric: distances between cameras are the true ones.
    true_baseline = np.linalg.norm(poses[1, :3, 3] - poses[0, :3, 3])
    assert np.linalg.norm(registered.camera_poses[1, :3, 3]) == pytest.approx(true_baseline, rel=1e-3)


def test_register_with_one_pose_and_depth_goes_to_map():
    rng = np.random.default_rng(13)
    poses, points = _scene(rng, 3)
    depths = [_depth_image(p, points) for p in poses]
    model_from_map = _random_similarity(rng, 2.0).inverse()
    model_poses = model_from_map.transform_poses(poses)
    model_points = model_from_map.transform_points(points)
    keyframes = _keyframes(poses, with_pose=False, depths=depths)
    keyframes[1].pose = poses[1]
    registered, report = register_to_keyframes(
        _model_reconstruction(model_poses, model_points),
        keyframes,
        depth_observations=[_observations(p, model_points) for p in model_poses],
    )
    assert registered.frame_id == "map" and registered.metric
    np.testing.assert_allclose(registered.camera_poses, poses, atol=5e-3)
    assert "only 1 keyframe has a pose" in report.summary()


def test_register_without_poses_or_depth_is_not_metric_and_says_so():
    rng = np.random.default_rng(14)
    poses, points = _scene(rng)
    registered, report = register_to_keyframes(
        _model_reconstruction(poses, points), _keyframes(poses, with_pose=False)
    )
    assert registered.frame_id == ANCHORED_FRAME_ID and not registered.metric and not report.metric
    np.testing.assert_allclose(registered.camera_poses[0], np.eye(4), atol=1e-9)
    assert "NOT metric" in report.summary()


def test_degenerate_poses_fall_back_and_are_reported():
    rng = np.random.default_rng(15)
    poses, points = _scene(rng, 3)
    poses[:, :3, 3] = [0.5, 0.5, 0.5]  # rotation only: no baseline
    registered, report = register_to_keyframes(_model_reconstruction(poses, points), _keyframes(poses, True))
    assert registered.frame_id == ANCHORED_FRAME_ID and not registered.metric
    assert "moved only" in report.summary()


def test_cameras_map_to_their_keyframes():
    rng = np.random.default_rng(16)
    poses, points = _scene(rng, 4)
    truth = _random_similarity(rng, 1.5)
    kept = [0, 2, 3]  # the backend could not place keyframe 1
    reconstruction = _model_reconstruction(truth.inverse().transform_poses(poses[kept]), points)
    registered, report = register_to_keyframes(reconstruction, _keyframes(poses, True), camera_keyframes=kept)
    np.testing.assert_allclose(registered.camera_poses, poses[kept], atol=1e-6)
    assert "[1] could not be placed" in report.summary()
    with pytest.raises(ValueError, match="pair up"):
        register_to_keyframes(reconstruction, _keyframes(poses, True), camera_keyframes=[0, 1])


def test_depth_scale_is_robust_and_refuses_empty_depth():
    rng = np.random.default_rng(17)
    depth = rng.uniform(1.0, 3.0, size=(K.height, K.width)).astype(np.float32)
    v, u = np.mgrid[0 : K.height : 3, 0 : K.width : 3]
    pixels = np.stack([u.ravel(), v.ravel()], 1).astype(float)
    predicted = depth[v.ravel(), u.ravel()] / 0.25
    predicted[::10] *= 3.0  # 10 % outliers (edges, misregistered depth)
    estimate = estimate_depth_scale([(pixels, predicted)], [depth])
    assert estimate.scale == pytest.approx(0.25, rel=1e-6)
    with pytest.raises(DegenerateGeometryError, match="valid sensor depth"):
        estimate_depth_scale([(pixels, predicted)], [np.full_like(depth, np.nan)])


def test_depth_from_a_separate_depth_camera_is_resampled_to_colour_pixels():
    """A Kinect-style pair: the depth camera has other intrinsics; depth must land on the colour pixels."""
    depth_k = CameraIntrinsics(117.0, 117.0, 39.5, 29.5, 80, 60)
    plane = np.full((60, 80), 2.0, np.float32)
    keyframe = Keyframe(np.zeros((60, 80, 3), np.uint8), intrinsics=K, depth=plane, depth_intrinsics=depth_k)
    resampled = depth_in_colour_pixels(keyframe, pixel_stride=1)
    assert resampled.shape == (60, 80)
    assert np.nanmax(np.abs(resampled - 2.0)) < 1e-6
    assert np.isfinite(resampled[25:35, 35:45]).all()


def test_transform_reconstruction_handles_an_empty_camera_list():
    reconstruction = Reconstruction(
        np.zeros((1, 3), np.float32),
        np.zeros((1, 3), np.uint8),
        np.ones(1, np.float32),
        np.zeros((0, 4, 4)),
        [],
    )
    moved = transform_reconstruction(reconstruction, Similarity(scale=2.0, translation=np.ones(3)), "map", True)
    np.testing.assert_allclose(moved.points, [[1.0, 1.0, 1.0]])
