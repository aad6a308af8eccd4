"""CameraIntrinsics refuses what would poison back-projection: non-finite or non-positive values."""

from __future__ import annotations

import math

import numpy as np
import pytest

from showroom_ros.geometry.camera import CameraIntrinsics

_HOSTILE = (float("nan"), float("inf"), -float("inf"))


def test_any_non_finite_field_is_refused_with_value_error():
    """Issue 14 defect 1: a NaN cx/cy passed the sign checks and reached every back-projection."""
    rng = np.random.default_rng(14)
    for _ in range(500):
        values = [float(v) for v in rng.uniform(1.0, 1000.0, 4)]
        bad = rng.choice(4, size=int(rng.integers(1, 5)), replace=False)
        for index in bad:
            values[int(index)] = _HOSTILE[int(rng.integers(len(_HOSTILE)))]
        with pytest.raises(ValueError, match=r"finite|positive"):
            CameraIntrinsics(*values, 640, 480)


def test_valid_intrinsics_survive_scaling_finite():
    rng = np.random.default_rng(3)
    for _ in range(200):
        fx, fy = rng.uniform(1.0, 2000.0, 2)
        cx, cy = rng.uniform(-100.0, 1000.0, 2)
        width, height = (int(v) for v in rng.integers(1, 4000, 2))
        camera = CameraIntrinsics(fx, fy, cx, cy, width, height)
        scaled = camera.scaled(int(rng.integers(1, 4000)), int(rng.integers(1, 4000)))
        assert all(math.isfinite(v) for v in (scaled.fx, scaled.fy, scaled.cx, scaled.cy))
        assert np.all(np.isfinite(camera.matrix))
