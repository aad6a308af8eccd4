"""CameraIntrinsics refuses what would poison back-projection (non-finite or non-positive values), and
rescales to another resolution as cv2.resize moves the pixels."""

from __future__ import annotations

import math

import cv2
import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

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


def test_scaled_against_hand_computed_values() -> None:
    """OpenCV's convention: pixel (i, j) is centred on integer coordinates, so a W-pixel row spans
    [-0.5, W - 0.5] and a resize by s maps x to (x + 0.5) * s - 0.5; focal lengths scale by s."""
    camera = CameraIntrinsics(fx=500.0, fy=400.0, cx=320.0, cy=240.0, width=640, height=480)
    # Half size: fx 500 * 0.5 = 250, fy 400 * 0.5 = 200; cx (320 + 0.5) * 0.5 - 0.5 = 159.75,
    # cy (240 + 0.5) * 0.5 - 0.5 = 119.75 (a plain 320 * 0.5 = 160 would be a quarter pixel off).
    assert camera.scaled(320, 240) == CameraIntrinsics(250.0, 200.0, 159.75, 119.75, 320, 240)
    # Anisotropic, up: sx = 1280 / 640 = 2, sy = 720 / 480 = 1.5; fx 1000, fy 600,
    # cx (320.5 * 2) - 0.5 = 640.5, cy (240.5 * 1.5) - 0.5 = 360.25.
    assert camera.scaled(1280, 720) == CameraIntrinsics(1000.0, 600.0, 640.5, 360.25, 1280, 720)
    # The image centre stays the centre: (640 - 1) / 2 = 319.5 -> (160 - 1) / 2 = 79.5 at a quarter,
    # (480 - 1) / 2 = 239.5 -> (120 - 1) / 2 = 59.5.
    centred = CameraIntrinsics(500.0, 500.0, 319.5, 239.5, 640, 480)
    assert centred.scaled(160, 120) == CameraIntrinsics(125.0, 125.0, 79.5, 59.5, 160, 120)
    assert camera.scaled(640, 480) == camera


@settings(max_examples=60, deadline=None)
@given(
    size=st.tuples(st.integers(8, 300), st.integers(8, 300)),
    new_size=st.tuples(st.integers(8, 300), st.integers(8, 300)),
    focal=st.tuples(st.floats(20.0, 2000.0), st.floats(20.0, 2000.0)),
    centre=st.tuples(st.floats(-50.0, 350.0), st.floats(-50.0, 350.0)),
)
def test_scaled_intrinsics_see_what_cv2_resize_shows(size, new_size, focal, centre) -> None:
    """A resized image (cv2.resize, bilinear) seen through the scaled intrinsics: every pixel's ray
    meets the source image where resize sampled it. The image holds its own pixel coordinates, which
    bilinear interpolation reproduces exactly (inside the border, where it does not clamp)."""
    (width, height), (new_width, new_height) = size, new_size
    camera = CameraIntrinsics(*focal, *centre, width, height)
    scaled = camera.scaled(new_width, new_height)
    v, u = np.mgrid[0:height, 0:width].astype(np.float32)
    sampled = cv2.resize(np.dstack([u, v]), (new_width, new_height), interpolation=cv2.INTER_LINEAR)
    v2, u2 = np.mgrid[0:new_height, 0:new_width].astype(np.float64)
    # The ray through (u2, v2) of the scaled camera, projected by the original one.
    expected_u = camera.fx * (u2 - scaled.cx) / scaled.fx + camera.cx
    expected_v = camera.fy * (v2 - scaled.cy) / scaled.fy + camera.cy
    inside = (expected_u >= 0) & (expected_u <= width - 1) & (expected_v >= 0) & (expected_v <= height - 1)
    assert inside.any()
    np.testing.assert_allclose(sampled[..., 0][inside], expected_u[inside], atol=0.02)
    np.testing.assert_allclose(sampled[..., 1][inside], expected_v[inside], atol=0.02)


@settings(max_examples=200, deadline=None)
@given(
    focal=st.tuples(st.floats(1.0, 5000.0), st.floats(1.0, 5000.0)),
    centre=st.tuples(st.floats(-1000.0, 5000.0), st.floats(-1000.0, 5000.0)),
    size=st.tuples(st.integers(1, 4000), st.integers(1, 4000)),
    other=st.tuples(st.integers(1, 4000), st.integers(1, 4000)),
)
def test_scaling_there_and_back_is_the_same_camera(focal, centre, size, other) -> None:
    camera = CameraIntrinsics(*focal, *centre, *size)
    back = camera.scaled(*other).scaled(*size)
    assert (back.width, back.height) == size
    np.testing.assert_allclose([back.fx, back.fy, back.cx, back.cy], [*focal, *centre], rtol=1e-9, atol=1e-6)
