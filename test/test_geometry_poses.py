"""Poses over time: the one interpolation rule (lerp + slerp, tolerance at the ends, no extrapolation),
checked by hand and on generated tracks, and the node's pose history (bounded, resets on time going back)."""

from __future__ import annotations

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from scipy.spatial.transform import Rotation

from showroom_ros.geometry.poses import (
    PoseHistory,
    StampOutOfRange,
    interpolate_pose,
    orthonormalize,
    pose_distance,
    rigid_pose,
)


def _pose(yaw_deg: float, xyz: tuple[float, float, float]) -> np.ndarray:
    pose = np.eye(4)
    pose[:3, :3] = Rotation.from_euler("z", yaw_deg, degrees=True).as_matrix()
    pose[:3, 3] = xyz
    return pose


def test_interpolates_rotation_and_translation_between_samples():
    history = PoseHistory(tolerance_ns=10)
    history.add(1_000, _pose(0.0, (0.0, 0.0, 0.0)))
    history.add(2_000, _pose(90.0, (2.0, 0.0, 0.0)))
    middle = history.lookup(1_500)
    np.testing.assert_allclose(middle, _pose(45.0, (1.0, 0.0, 0.0)), atol=1e-12)
    quarter = history.lookup(1_250)
    np.testing.assert_allclose(quarter, _pose(22.5, (0.5, 0.0, 0.0)), atol=1e-12)
    np.testing.assert_array_equal(history.lookup(2_000), _pose(90.0, (2.0, 0.0, 0.0)))


def test_outside_the_span_only_within_tolerance():
    history = PoseHistory(tolerance_ns=100)
    history.add(1_000, _pose(0.0, (1.0, 2.0, 3.0)))
    history.add(2_000, _pose(10.0, (1.0, 2.0, 3.0)))
    assert history.lookup(2_050) is not None and history.lookup(950) is not None
    assert history.lookup(2_101) is None  # not arrived yet: the caller waits instead of extrapolating
    assert history.lookup(899) is None


def test_time_going_backwards_starts_a_new_history():
    history = PoseHistory(reorder_ns=1_000)
    history.add(5_000, _pose(0.0, (0, 0, 0)))
    history.add(6_000, _pose(0.0, (1, 0, 0)))
    history.add(1_000, _pose(0.0, (9, 9, 9)))  # a bag looping: further back than reordering explains
    assert len(history) == 1 and history.latest_stamp == 1_000


@settings(max_examples=200, deadline=None)
@given(st.permutations(list(range(12))), st.integers(0, 3))
def test_poses_arriving_out_of_order_answer_as_if_they_came_in_order(order, extra):
    """Out-of-order arrival within the reorder window (several publishers, a network) loses nothing: the
    history equals the in-order one, at the samples and between them. It used to start afresh."""
    stamps = [1_000_000 * (i + 1) for i in range(12)]
    poses = [_pose(10.0 * i, (0.1 * i, 0.0, -0.05 * i)) for i in range(12)]
    shuffled, ordered = PoseHistory(max_samples=12 + extra), PoseHistory(max_samples=12 + extra)
    for i in order:
        shuffled.add(stamps[i], poses[i])
    for i in range(12):
        ordered.add(stamps[i], poses[i])
    assert len(shuffled) == len(ordered) == 12
    for query in [*stamps, *(s + 400_000 for s in stamps[:-1])]:
        np.testing.assert_allclose(shuffled.lookup(query), ordered.lookup(query), atol=1e-12)


def test_a_full_history_keeps_the_newest_samples_when_an_old_one_arrives_late():
    history = PoseHistory(max_samples=3, tolerance_ns=1)
    for stamp in (10, 20, 30):
        history.add(stamp, _pose(0.0, (stamp, 0, 0)))
    history.add(5, _pose(0.0, (5, 0, 0)))  # older than everything kept: dropped
    history.add(25, _pose(0.0, (25, 0, 0)))  # inside: the oldest gives way
    assert len(history) == 3 and history.lookup(10) is None and history.lookup(25)[0, 3] == 25


def test_bounded_and_validated():
    history = PoseHistory(max_samples=3)
    for i in range(10):
        history.add(i, np.eye(4))
    assert len(history) == 3
    bad = np.eye(4)
    bad[0, 3] = np.nan
    with pytest.raises(ValueError, match="finite 4x4"):
        history.add(20, bad)


def test_orthonormalize_and_distance():
    noisy = _pose(30.0, (1.0, 0.0, 0.0))
    noisy[:3, :3] *= 1.0005
    fixed = orthonormalize(noisy)
    np.testing.assert_allclose(fixed[:3, :3] @ fixed[:3, :3].T, np.eye(3), atol=1e-12)
    translation, angle = pose_distance(_pose(0.0, (0, 0, 0)), _pose(30.0, (3.0, 4.0, 0.0)))
    assert translation == pytest.approx(5.0) and angle == pytest.approx(30.0)


# --- the one interpolation rule (PoseHistory and the bag reader's TF edges both use it) -------------


def _angle_deg(a: np.ndarray, b: np.ndarray) -> float:
    return float(np.degrees(Rotation.from_matrix(a[:3, :3].T @ b[:3, :3]).magnitude()))


@st.composite
def _tracks(draw: st.DrawFn) -> tuple[list[int], list[np.ndarray]]:
    """2-6 samples at increasing stamps; rotations under 170 degrees apart (slerp's path is then unique)."""
    count = draw(st.integers(2, 6))
    gaps = draw(st.lists(st.integers(1, 10**9), min_size=count, max_size=count))
    rng = np.random.default_rng(draw(st.integers(0, 2**32 - 1)))
    poses = [np.eye(4)]
    for _ in range(count - 1):
        axis = rng.normal(size=3)
        step = Rotation.from_rotvec(axis / np.linalg.norm(axis) * np.radians(draw(st.floats(0.0, 170.0))))
        pose = np.eye(4)
        pose[:3, :3] = step.as_matrix() @ poses[-1][:3, :3]
        pose[:3, 3] = rng.normal(size=3) * draw(st.sampled_from([1e-3, 1.0, 1e3]))
        poses.append(pose)
    noisy = [p.copy() for p in poses]
    for pose in noisy[1::2]:
        pose[:3, :3] *= 1.0 + draw(st.floats(-1e-3, 1e-3))  # tracked poses are not quite rigid
    return np.cumsum(gaps).tolist(), noisy


@settings(max_examples=200, deadline=None)
@given(_tracks(), st.floats(0.0, 1.0, exclude_min=True, exclude_max=True), st.data())
def test_between_samples_translation_is_linear_and_rotation_is_slerp(track, fraction: float, data) -> None:
    stamps, poses = track
    before = data.draw(st.integers(0, len(stamps) - 2))
    stamp = stamps[before] + fraction * (stamps[before + 1] - stamps[before])
    if stamp in (stamps[before], stamps[before + 1]):
        return  # the fraction rounded onto a sample's stamp
    out = interpolate_pose(stamps, poses, stamp, tolerance_ns=0)
    np.testing.assert_allclose(out[:3, :3] @ out[:3, :3].T, np.eye(3), atol=1e-9)
    assert np.linalg.det(out[:3, :3]) == pytest.approx(1.0) and np.array_equal(out[3], [0, 0, 0, 1])
    p0, p1 = orthonormalize(poses[before]), orthonormalize(poses[before + 1])
    f = (stamp - stamps[before]) / (stamps[before + 1] - stamps[before])
    np.testing.assert_allclose(out[:3, 3], (1 - f) * p0[:3, 3] + f * p1[:3, 3], rtol=1e-9, atol=1e-9)
    # On the shortest arc, at constant angular speed.
    total = _angle_deg(p0, p1)
    assert _angle_deg(p0, out) == pytest.approx(f * total, abs=1e-6)
    assert _angle_deg(out, p1) == pytest.approx((1 - f) * total, abs=1e-6)


@settings(max_examples=200, deadline=None)
@given(_tracks(), st.integers(0, 10**6), st.integers(-(2 * 10**6), 2 * 10**6), st.data())
def test_samples_are_returned_as_stored_and_never_extrapolated(track, tolerance: int, offset: int, data) -> None:
    stamps, poses = track
    index = data.draw(st.integers(0, len(stamps) - 1))
    np.testing.assert_array_equal(interpolate_pose(stamps, poses, stamps[index], tolerance), poses[index])
    outside = stamps[0] - abs(offset) - 1 if offset < 0 else stamps[-1] + offset + 1
    nearest = 0 if outside < stamps[0] else len(stamps) - 1
    if abs(outside - stamps[nearest]) <= tolerance:
        np.testing.assert_array_equal(interpolate_pose(stamps, poses, outside, tolerance), poses[nearest])
    else:
        with pytest.raises(StampOutOfRange) as refused:
            interpolate_pose(stamps, poses, outside, tolerance)
        assert refused.value.side == ("before the first" if nearest == 0 else "after the last")
        assert (refused.value.first_ns, refused.value.last_ns) == (stamps[0], stamps[-1])


def test_rigid_pose_from_a_quaternion_by_hand() -> None:
    half = np.sqrt(0.5)  # 90 degrees about z: x -> y
    expected = np.array([[0, -1, 0, 1.0], [1, 0, 0, 2.0], [0, 0, 1, 3.0], [0, 0, 0, 1]])
    np.testing.assert_allclose(rigid_pose([1.0, 2.0, 3.0], [0.0, 0.0, half, half]), expected, atol=1e-15)
    np.testing.assert_allclose(rigid_pose([1.0, 2.0, 3.0], [0.0, 0.0, 3.0, 3.0]), expected, atol=1e-15)
    with pytest.raises(ValueError):
        interpolate_pose([], [], 0, 0)
