"""The numpy splat renderer: projection, z-buffer, splat size, and the preview viewpoint."""

from __future__ import annotations

import numpy as np
import pytest

from showroom_ros.geometry.camera import CameraIntrinsics
from showroom_ros.reconstruction.render import RenderResult, look_at, preview_camera, render_points

K = CameraIntrinsics(100.0, 100.0, 32.0, 24.0, 64, 48)
RED, GREEN, BLUE = (255, 0, 0), (0, 255, 0), (0, 0, 255)


def test_point_lands_on_its_pinhole_pixel_with_its_depth() -> None:
    # x = 0.2 m at z = 2 m -> u = 100 * 0.1 + 32 = 42; y = -0.1 -> v = 100 * -0.05 + 24 = 19
    result = render_points(np.array([[0.2, -0.1, 2.0]]), np.array([RED], np.uint8), np.eye(4), K, 0)
    assert isinstance(result, RenderResult)
    assert result.image.shape == (48, 64, 3) and result.image.dtype == np.uint8
    assert result.depth.dtype == np.float32 and result.mask.dtype == bool
    assert np.argwhere(result.mask).tolist() == [[19, 42]]
    assert result.image[19, 42].tolist() == list(RED)
    assert result.depth[19, 42] == pytest.approx(2.0)
    assert np.isnan(result.depth[~result.mask]).all()
    assert (result.image[~result.mask] == 0).all()


def test_nearest_point_wins_whatever_the_input_order() -> None:
    points = np.array([[0.0, 0.0, 3.0], [0.0, 0.0, 1.0], [0.0, 0.0, 2.0]])
    colors = np.array([RED, GREEN, BLUE], np.uint8)
    for order in ([0, 1, 2], [1, 2, 0], [2, 0, 1]):
        result = render_points(points[order], colors[order], np.eye(4), K, 0)
        assert result.mask.sum() == 1
        assert result.image[24, 32].tolist() == list(GREEN)
        assert result.depth[24, 32] == pytest.approx(1.0)


def test_radius_draws_a_square_and_near_splats_cover_far_ones() -> None:
    far = render_points(np.array([[0.0, 0.0, 2.0]]), np.array([RED], np.uint8), np.eye(4), K, 2)
    assert far.mask.sum() == 25
    assert np.argwhere(far.mask).min(axis=0).tolist() == [22, 30]
    # A near point one pixel to the side wins every pixel its splat shares with the far one.
    points = np.array([[0.0, 0.0, 2.0], [0.01, 0.0, 1.0]])  # near point at u = 33
    both = render_points(points, np.array([RED, GREEN], np.uint8), np.eye(4), K, 1)
    assert both.image[24, 32].tolist() == list(GREEN)
    assert both.image[24, 31].tolist() == list(RED)
    assert both.mask.sum() == 12


def test_camera_pose_is_camera_to_frame() -> None:
    # Camera 1 m along +x of the frame, looking along +z: a point at x = 1 appears at the centre.
    pose = np.eye(4)
    pose[0, 3] = 1.0
    result = render_points(np.array([[1.0, 0.0, 2.0]]), None, pose, K, 0, background=(9, 9, 9))
    assert result.mask[24, 32]
    assert result.image[0, 0].tolist() == [9, 9, 9]
    # Turned 180 degrees about y, the camera sees nothing in front of the original one.
    turned = look_at(np.zeros(3), np.array([0.0, 0.0, -1.0]), np.array([0.0, -1.0, 0.0]))
    assert not render_points(np.array([[0.0, 0.0, 2.0]]), None, turned, K, 0).mask.any()


def test_points_behind_outside_or_invalid_are_skipped() -> None:
    points = np.array([[0.0, 0.0, -2.0], [50.0, 0.0, 1.0], [np.nan, 0.0, 1.0], [0.0, 0.0, 0.0]])
    result = render_points(points, None, np.eye(4), K, 1)
    assert not result.mask.any()
    assert result.coverage == 0.0
    empty = render_points(np.zeros((0, 3)), np.zeros((0, 3), np.uint8), np.eye(4), K)
    assert not empty.mask.any()


def test_float_colours_are_read_as_zero_to_one() -> None:
    result = render_points(np.array([[0.0, 0.0, 1.0]]), np.array([[1.0, 0.5, 0.0]]), np.eye(4), K, 0)
    assert result.image[24, 32].tolist() == [255, 128, 0]


def test_bad_inputs_raise_clear_errors() -> None:
    with pytest.raises(ValueError, match="points"):
        render_points(np.zeros((4, 2)), None, np.eye(4), K)
    with pytest.raises(ValueError, match="colors"):
        render_points(np.zeros((4, 3)), np.zeros((3, 3), np.uint8), np.eye(4), K)
    with pytest.raises(ValueError, match="pose"):
        render_points(np.zeros((4, 3)), None, np.eye(3), K)
    with pytest.raises(ValueError, match="radius"):
        render_points(np.zeros((4, 3)), None, np.eye(4), K, -1)


def test_look_at_gives_a_proper_rotation_facing_the_target() -> None:
    eye, target = np.array([1.0, -2.0, 0.5]), np.array([0.0, 0.0, 3.0])
    pose = look_at(eye, target, np.array([0.0, -1.0, 0.0]))
    rotation = pose[:3, :3]
    np.testing.assert_allclose(rotation.T @ rotation, np.eye(3), atol=1e-12)
    assert np.linalg.det(rotation) == pytest.approx(1.0)
    forward = (target - eye) / np.linalg.norm(target - eye)
    np.testing.assert_allclose(rotation[:, 2], forward, atol=1e-12)
    assert rotation[:, 1] @ np.array([0.0, -1.0, 0.0]) < 0  # image y points down, away from 'up'


@pytest.mark.parametrize("with_cameras", [False, True])
def test_preview_camera_shows_the_whole_cloud(with_cameras: bool) -> None:
    rng = np.random.default_rng(0)
    points = rng.uniform([-2.0, -1.0, 1.0], [2.0, 1.0, 4.0], size=(5000, 3))
    cameras = None
    if with_cameras:
        cameras = np.stack([np.eye(4)] * 3)
        cameras[:, 0, 3] = [-0.5, 0.0, 0.5]
    pose, intrinsics = preview_camera(points, cameras, width=320, height=240, fit_quantile=1.0)
    assert (intrinsics.width, intrinsics.height) == (320, 240)
    cam = (points - pose[:3, 3]) @ pose[:3, :3]
    assert (cam[:, 2] > 0).all()
    u = intrinsics.fx * cam[:, 0] / cam[:, 2] + intrinsics.cx
    v = intrinsics.fy * cam[:, 1] / cam[:, 2] + intrinsics.cy
    assert (u >= 0).all() and (u <= 319).all() and (v >= 0).all() and (v <= 239).all()
    result = render_points(points, None, pose, intrinsics, 1)
    assert result.coverage > 0.2
    if with_cameras:  # behind the cameras (-z) and above them (-y in the cameras' frame)
        assert pose[2, 3] < 0.0 and pose[1, 3] < 0.0


def test_preview_camera_rejects_an_empty_cloud() -> None:
    with pytest.raises(ValueError, match="empty"):
        preview_camera(np.full((3, 3), np.nan))
