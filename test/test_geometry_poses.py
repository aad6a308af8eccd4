"""Pose history: interpolation between stamps, tolerance at the ends, resets on time going back."""

from __future__ import annotations

import numpy as np
import pytest
from scipy.spatial.transform import Rotation

from showroom_ros.geometry.poses import PoseHistory, orthonormalize, pose_distance


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
    history = PoseHistory()
    history.add(5_000, _pose(0.0, (0, 0, 0)))
    history.add(6_000, _pose(0.0, (1, 0, 0)))
    history.add(1_000, _pose(0.0, (9, 9, 9)))  # a bag looping
    assert len(history) == 1 and history.latest_stamp == 1_000


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
