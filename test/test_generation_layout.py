"""ShowRoom's extension rules and our layout plausibility check, on label maps with known geometry."""

from __future__ import annotations

import numpy as np
import pytest

torch = pytest.importorskip("torch")

from showroom_ros.generation.layout import (  # noqa: E402
    LEFT,
    RIGHT,
    ShowRoomRules,
    check_layout_plausibility,
    choose_extension,
    compare_wall_areas,
    expected_layout,
    homography_folds,
    is_front_view,
    label_counts,
    relative_side,
    viewing_angle_deg,
)
from showroom_ros.generation.st_roomnet import (  # noqa: E402
    IDENTITY_THETA,
    LEFT_WALL,
    RIGHT_WALL,
    RoomLayout,
    labels_from_warped,
    projective_warp,
    reference_layout,
)
from showroom_ros.generation.view_synthesis import yawed_pose  # noqa: E402
from showroom_ros.geometry.camera import CameraIntrinsics  # noqa: E402
from showroom_ros.reconstruction.render import look_at  # noqa: E402

UP = np.array([0.0, 0.0, 1.0])


def warped_layout(theta) -> np.ndarray:
    """The reference layout warped by ``theta``, as ST-RoomNet would output it."""
    reference = torch.from_numpy(reference_layout()).float()
    return labels_from_warped(projective_warp(reference, torch.tensor([list(theta)], dtype=torch.float32)))[
        0
    ].numpy()


def shifted(dx: float) -> np.ndarray:
    """Layout whose front wall moved by ``-dx * 200`` px horizontally (reference sampled at x + dx)."""
    theta = list(IDENTITY_THETA)
    theta[2] = dx
    return warped_layout(theta)


FRONTAL = reference_layout()
OFF_CENTRE = shifted(0.6)  # front wall centre 120 px left of the image centre


def camera(position, yaw_deg: float, height_offset: float = 0.0) -> np.ndarray:
    """Level camera at ``position`` looking along heading ``yaw_deg`` (0 = +x, 90 = +y) in a z-up map."""
    eye = np.asarray(position, dtype=float) + np.array([0.0, 0.0, height_offset])
    heading = np.array([np.cos(np.radians(yaw_deg)), np.sin(np.radians(yaw_deg)), 0.0])
    return look_at(eye, eye + heading, UP)


def test_front_view_test() -> None:
    assert is_front_view(FRONTAL)
    assert not is_front_view(OFF_CENTRE), "front wall 120 px off centre (limit 100 px)"
    assert is_front_view(shifted(0.4)), "80 px off centre is still frontal"
    no_ceiling = FRONTAL.copy()
    no_ceiling[no_ceiling == 5] = 1
    assert not is_front_view(no_ceiling), "all five surfaces must each cover 5000 px"
    small_front = shifted(0.0)
    small_front[150:250, 150:250][small_front[150:250, 150:250] == 1] = 2
    assert label_counts(small_front)[1] == 0
    assert not is_front_view(small_front)


def test_angle_and_side() -> None:
    a = camera([0, 0, 0], 0)
    b = camera([1, 0, 0], 90)
    assert viewing_angle_deg(a, b) == pytest.approx(90.0)
    # ShowRoom's side is the sign of (d_a x d_b) . baseline: d_a x d_b = +z here; upstream says "left" if > 0.
    above = camera([0, 0, 0], 90, height_offset=1.0)
    below = camera([0, 0, 0], 90, height_offset=-1.0)
    assert relative_side(a, above) == LEFT
    assert relative_side(a, below) == RIGHT
    assert relative_side(a, b) == RIGHT, "coplanar cameras: the triple product is 0, a tie counts as right"
    assert relative_side(a, a) == RIGHT, "same position: NaN counts as right"
    described = ShowRoomRules(near_angle_deg=70.0, positive_side=RIGHT)  # the fixture README's description
    assert relative_side(a, above, described) == RIGHT and relative_side(a, b, described) == LEFT
    with pytest.raises(ValueError):
        ShowRoomRules(positive_side="up")


def test_wall_area_comparison() -> None:
    wide_left = shifted(-0.3)  # front wall moved right: more left wall, less right wall
    wide_right = shifted(0.3)
    assert (
        label_counts(wide_left)[LEFT_WALL]
        > label_counts(FRONTAL)[LEFT_WALL]
        > label_counts(wide_right)[LEFT_WALL]
    )
    # View 1 is on the right of view 0: compare view 0's left wall with view 1's right wall.
    choice = compare_wall_areas(0, 1, [wide_left, wide_left], 60.0, RIGHT)
    assert (choice.keyframe_index, choice.direction) == (0, LEFT)
    choice = compare_wall_areas(0, 1, [wide_right, wide_right], 60.0, RIGHT)
    assert (choice.keyframe_index, choice.direction) == (1, RIGHT)
    # View 1 on the left: view 0's right wall against view 1's left wall.
    choice = compare_wall_areas(0, 1, [wide_right, wide_right], 60.0, LEFT)
    assert (choice.keyframe_index, choice.direction) == (0, RIGHT)
    choice = compare_wall_areas(0, 1, [FRONTAL, wide_left], 60.0, LEFT)
    assert (choice.keyframe_index, choice.direction) == (1, LEFT)
    for angle in (30.0, 150.0):  # nearly the same or opposite views: view 0, to the right
        overlap = compare_wall_areas(0, 1, [wide_left, wide_left], angle, RIGHT)
        assert (overlap.keyframe_index, overlap.direction) == (0, RIGHT)


def test_three_views_showroom_rules() -> None:
    a = camera([0, 0, 0], 0)
    b = camera([1, 0, 0], 10)
    c = camera([2, 0, 0], 20)
    assert choose_extension([FRONTAL] * 3, [a, b, c]).keyframe_index is None
    assert choose_extension([OFF_CENTRE] * 3, [a, b, c]).keyframe_index is None

    # Two frontal; the non-frontal one is near (<= 55 deg) view 0 only -> extend view 1 towards side(1, nf).
    nf = camera([0, 0, 1.0], 30)  # above: gives the triple product a sign
    far = camera([3, 0, 0], 120)
    choice = choose_extension([FRONTAL, FRONTAL, OFF_CENTRE], [a, far, nf])
    assert choice.keyframe_index == 1
    assert choice.direction == relative_side(far, nf)

    # The "near" threshold: 55 deg upstream, 70 deg in the fixture README's description.
    nf65 = camera([0, 0, 1.0], 65)  # 65 deg from view 0, 55 deg from view 1
    upstream = choose_extension([FRONTAL, FRONTAL, OFF_CENTRE], [a, far, nf65])
    assert (upstream.keyframe_index, upstream.direction) == (0, relative_side(a, nf65))
    described = choose_extension(
        [FRONTAL, FRONTAL, OFF_CENTRE],
        [a, far, nf65],
        ShowRoomRules(near_angle_deg=70.0, positive_side=RIGHT),
    )
    assert "wall" in described.reason, "both within 70 deg: the wall-area comparison decides"

    # One frontal, two non-frontal looking the same way -> extend the frontal one away from them.
    n1 = camera([0, 0, 1.0], 60)
    n2 = camera([0, 1, 0.5], 70)
    choice = choose_extension([OFF_CENTRE, FRONTAL, OFF_CENTRE], [n1, a, n2])
    assert choice.keyframe_index == 1
    assert choice.direction == (LEFT if relative_side(a, n1) == RIGHT else RIGHT)
    # ... but looking different ways: nothing.
    n3 = camera([0, 1, 0.5], 200)
    assert choose_extension([OFF_CENTRE, FRONTAL, OFF_CENTRE], [n1, a, n3]).keyframe_index is None


def test_other_view_counts() -> None:
    a = camera([0, 0, 0], 0)
    b = camera([1, 0, 1], 60)
    only = choose_extension([shifted(-0.3)], [a])
    assert (only.keyframe_index, only.direction) == (0, LEFT)
    assert choose_extension([OFF_CENTRE], [a]).keyframe_index is None
    pair = choose_extension([OFF_CENTRE, FRONTAL], [b, a])
    assert pair.keyframe_index == 1
    assert pair.direction == (LEFT if relative_side(a, b) == RIGHT else RIGHT)
    # Four views: the first triple that extends something decides.
    views = [FRONTAL, FRONTAL, FRONTAL, OFF_CENTRE]
    poses = [a, camera([3, 0, 0], 120), camera([4, 0, 0], 130), camera([0, 0, 1], 30)]
    choice = choose_extension(views, poses)
    assert choice.keyframe_index is not None and "views (0, 1, 3)" in choice.reason
    with pytest.raises(ValueError, match="poses"):
        choose_extension([FRONTAL], [a, a])


def test_plausibility() -> None:
    good = RoomLayout(np.array(IDENTITY_THETA, np.float32), FRONTAL)
    verdict = check_layout_plausibility(good, FRONTAL)
    assert verdict.plausible and verdict.agreement == 1.0
    moved = RoomLayout(np.array(IDENTITY_THETA, np.float32), shifted(0.9))
    verdict = check_layout_plausibility(moved, FRONTAL)
    assert not verdict.plausible and verdict.agreement < 0.6
    one_surface = RoomLayout(np.array(IDENTITY_THETA, np.float32), np.full((400, 400), 1, np.uint8))
    assert not check_layout_plausibility(one_surface).plausible
    folding = np.array([1, 0, 0, 0, 1, 0, 2.0, 0], np.float32)
    assert homography_folds(folding) and not homography_folds(np.array(IDENTITY_THETA))
    assert not check_layout_plausibility(RoomLayout(folding, FRONTAL)).plausible
    nothing_known = np.zeros((400, 400), np.uint8)
    assert check_layout_plausibility(moved, nothing_known).agreement is None


def test_expected_layout_after_a_turn() -> None:
    intrinsics = CameraIntrinsics(200.0, 200.0, 199.5, 199.5, 400, 400)
    source = look_at(np.zeros(3), np.array([1.0, 0, 0]), UP)
    turned = yawed_pose(source, 20.0, UP)  # left
    expected = expected_layout(
        RoomLayout(np.zeros(8, np.float32), FRONTAL), source, intrinsics, turned, intrinsics
    )
    assert expected is not None
    shift = 200.0 * np.tan(np.radians(20.0))  # the scene moves right by f tan(yaw) at the centre
    assert expected[200, 200] == FRONTAL[200, round(199.5 - shift)] == LEFT_WALL
    assert np.all(expected[200, :30] == 0), "the far left was never seen"
    # The right edge looks 44.9 - 20 = 24.9 deg right of the source axis: source column 292, right wall.
    assert expected[200, 399] == FRONTAL[200, round(199.5 + 200.0 * np.tan(np.radians(24.9)))] == RIGHT_WALL
    moved_camera = turned.copy()
    moved_camera[:3, 3] += 0.5
    assert (
        expected_layout(RoomLayout(np.zeros(8), FRONTAL), source, intrinsics, moved_camera, intrinsics)
        is None
    )
