"""geometry.transform_tree: the ROS-free TF tree a bag's camera poses come from (chained, interpolated by
the node's one rule, refusing what tf2 would refuse)."""

from __future__ import annotations

import numpy as np
import pytest
from scipy.spatial.transform import Rotation

from showroom_ros.geometry.poses import PoseHistory
from showroom_ros.geometry.transform_tree import TransformBuffer, TransformError


def _rigid(rotvec: np.ndarray, translation: np.ndarray) -> np.ndarray:
    matrix = np.eye(4)
    matrix[:3, :3] = Rotation.from_rotvec(rotvec).as_matrix()
    matrix[:3, 3] = translation
    return matrix


def test_transform_buffer_chains_and_interpolates() -> None:
    tf = TransformBuffer(tolerance_ns=0)
    tf.add("map", "odom", 0, [1.0, 0.0, 0.0], [0.0, 0.0, 0.0, 1.0], static=True)
    quarter = Rotation.from_euler("z", 90, degrees=True).as_quat()
    tf.add("odom", "base", 100, [0.0, 0.0, 0.0], [0.0, 0.0, 0.0, 1.0])
    tf.add("odom", "base", 300, [2.0, 0.0, 0.0], quarter)
    tf.add("base", "cam", 0, [0.0, 1.0, 0.0], [0.0, 0.0, 0.0, 1.0], static=True)
    tf.add("map", "other_root_child", 0, [0.0, 0.0, 5.0], [0.0, 0.0, 0.0, 1.0], static=True)
    assert tf.root("cam") == "map" and tf.frames >= {"map", "odom", "base", "cam"}

    middle = tf.lookup("map", "cam", 200)  # halfway: 1 m along x, 45 degrees about z
    expected_rotation = Rotation.from_euler("z", 45, degrees=True).as_matrix()
    np.testing.assert_allclose(middle[:3, :3], expected_rotation, atol=1e-12)
    np.testing.assert_allclose(
        middle[:3, 3], [1.0 + 1.0 + expected_rotation[0, 1], expected_rotation[1, 1], 0.0], atol=1e-12
    )
    # Between two branches of the tree, and the inverse direction.
    across = tf.lookup("other_root_child", "cam", 300)
    np.testing.assert_allclose(np.linalg.inv(across), tf.lookup("cam", "other_root_child", 300), atol=1e-12)
    np.testing.assert_allclose(across[:3, 3], [3.0 - 1.0, 0.0, -5.0], atol=1e-12)

    with pytest.raises(TransformError, match="after the last"):
        tf.lookup("map", "cam", 301)
    with pytest.raises(TransformError, match="not in the TF tree"):
        tf.lookup("map", "lidar", 200)
    tf.add("world", "island", 0, [0.0, 0.0, 0.0], [0.0, 0.0, 0.0, 1.0], static=True)
    with pytest.raises(TransformError, match="not connected"):
        tf.lookup("map", "island", 200)
    assert not tf.add("map", "bad", 0, [0.0, 0.0, 0.0], [0.0, 0.0, 0.0, 0.0])  # zero quaternion refused
    assert tf.invalid_transforms == 1
    tolerant = TransformBuffer(tolerance_ns=5)
    tolerant.add("a", "b", 10, [1.0, 0.0, 0.0], [0.0, 0.0, 0.0, 1.0])
    assert tolerant.lookup("a", "b", 14)[0, 3] == 1.0


def test_tf_edges_and_the_pose_history_interpolate_alike() -> None:
    """One interpolation rule: a TF edge (fed out of order) and the node's PoseHistory, fed the same generated
    samples, give the same pose at every stamp and refuse the same stamps (outside the span by more than
    the tolerance)."""
    for seed in range(40):
        rng = np.random.default_rng(seed)
        count, tolerance = int(rng.integers(1, 8)), int(rng.integers(0, 50))
        stamps = np.cumsum(rng.integers(1, 200, count)) + 1_000
        poses = [_rigid(rng.normal(size=3) * rng.uniform(0, 2), rng.normal(size=3)) for _ in range(count)]
        tf, history = TransformBuffer(tolerance_ns=tolerance), PoseHistory(tolerance_ns=tolerance)
        for stamp, pose in zip(stamps, poses, strict=True):
            history.add(int(stamp), pose)
        for index in rng.permutation(count):  # a bag's TF arrives in recording order, not stamp order
            x, y, z, w = Rotation.from_matrix(poses[index][:3, :3]).as_quat()
            tf.add("odom", "camera", int(stamps[index]), poses[index][:3, 3], [x, y, z, w])
        queries = np.concatenate([stamps, rng.integers(int(stamps[0]) - 80, int(stamps[-1]) + 80, 30)])
        for stamp in queries.tolist():
            expected = history.lookup(stamp)
            if expected is None:
                with pytest.raises(TransformError, match=r"before the first|after the last"):
                    tf.lookup("odom", "camera", stamp)
            else:
                np.testing.assert_allclose(tf.lookup("odom", "camera", stamp), expected, atol=1e-9)
