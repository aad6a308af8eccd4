"""Novel views of a synthetic room with known geometry: images, depth and holes vs ray tracing."""

from __future__ import annotations

import cv2
import numpy as np
import pytest

from showroom_ros.generation.view_synthesis import (
    HoleMaskConfig,
    clean_hole_mask,
    estimate_up_direction,
    render_mesh,
    render_novel_view,
    warp_by_rotation,
    yawed_pose,
)
from showroom_ros.geometry.camera import CameraIntrinsics
from showroom_ros.reconstruction.render import look_at
from showroom_ros.reconstruction.result import Reconstruction, TriangleMesh

UP = np.array([0.0, 0.0, 1.0])
HALF = 2.0  # the room spans x, y in [-2, 2]
HEIGHT = 2.5  # and z in [0, 2.5]
WINDOW = (-0.5, 0.5, 0.8, 1.6)  # y0, y1, z0, z1 of the opening in the front wall (x = +2)
EYE = np.array([0.0, 0.0, 1.2])
INTRINSICS = CameraIntrinsics(120.0, 120.0, 79.5, 59.5, 160, 120)

# (name, axis, value, colour): the plane axis == value, seen from inside.
FACES = [
    ("front", 0, HALF, (200, 40, 40)),
    ("back", 0, -HALF, (40, 200, 40)),
    ("left", 1, HALF, (40, 40, 200)),
    ("right", 1, -HALF, (200, 200, 40)),
    ("floor", 2, 0.0, (120, 80, 40)),
    ("ceiling", 2, HEIGHT, (230, 230, 230)),
]
BOUNDS = np.array([[-HALF, HALF], [-HALF, HALF], [0.0, HEIGHT]])


def rectangle(axis: int, value: float, range_a: tuple[float, float], range_b: tuple[float, float]):
    """Two triangles covering a rectangle in the plane ``axis == value`` (the other axes in order)."""
    others = [a for a in range(3) if a != axis]
    corners = []
    (a0, a1), (b0, b1) = range_a, range_b
    for a, b in ((a0, b0), (a1, b0), (a1, b1), (a0, b1)):
        point = np.zeros(3)
        point[axis], point[others[0]], point[others[1]] = value, a, b
        corners.append(point)
    return np.array(corners), np.array([[0, 1, 2], [0, 2, 3]])


def room_mesh(
    faces=("front", "back", "left", "right", "floor", "ceiling"), window: bool = True
) -> TriangleMesh:
    vertices, triangles, colours = [], [], []
    for name, axis, value, colour in FACES:
        if name not in faces:
            continue
        others = [a for a in range(3) if a != axis]
        range_a, range_b = tuple(BOUNDS[others[0]]), tuple(BOUNDS[others[1]])
        pieces = [(range_a, range_b)]
        if name == "front" and window:
            y0, y1, z0, z1 = WINDOW
            pieces = [
                ((range_a[0], y0), range_b),
                ((y1, range_a[1]), range_b),
                ((y0, y1), (range_b[0], z0)),
                ((y0, y1), (z1, range_b[1])),
            ]
        for piece_a, piece_b in pieces:
            corners, tris = rectangle(axis, value, piece_a, piece_b)
            triangles.append(tris + sum(len(v) for v in vertices))
            vertices.append(corners)
            colours.append(np.tile(colour, (4, 1)))
    return TriangleMesh(
        np.concatenate(vertices).astype(np.float32),
        np.concatenate(triangles).astype(np.int32),
        np.concatenate(colours).astype(np.uint8),
    )


def room_points(spacing: float = 0.02, faces=("front", "back", "left", "right", "floor", "ceiling")):
    """A dense coloured cloud on the room's surfaces (window left open)."""
    points, colours = [], []
    for name, axis, value, colour in FACES:
        if name not in faces:
            continue
        others = [a for a in range(3) if a != axis]
        a = np.arange(BOUNDS[others[0], 0], BOUNDS[others[0], 1] + 1e-9, spacing)
        b = np.arange(BOUNDS[others[1], 0], BOUNDS[others[1], 1] + 1e-9, spacing)
        grid_a, grid_b = np.meshgrid(a, b)
        face = np.zeros((grid_a.size, 3))
        face[:, axis], face[:, others[0]], face[:, others[1]] = value, grid_a.ravel(), grid_b.ravel()
        if name == "front":
            y0, y1, z0, z1 = WINDOW
            inside = (face[:, 1] > y0) & (face[:, 1] < y1) & (face[:, 2] > z0) & (face[:, 2] < z1)
            face = face[~inside]
        points.append(face)
        colours.append(np.tile(colour, (len(face), 1)))
    return np.concatenate(points).astype(np.float32), np.concatenate(colours).astype(np.uint8)


def ray_trace(pose: np.ndarray, intrinsics: CameraIntrinsics, faces=None):
    """Ground truth per pixel centre (colour, depth, 'nothing there'), intersecting the box analytically."""
    names = faces or [f[0] for f in FACES]
    cols, rows = np.meshgrid(
        np.arange(intrinsics.width, dtype=float), np.arange(intrinsics.height, dtype=float)
    )
    directions = (
        np.stack(
            [
                (cols - intrinsics.cx) / intrinsics.fx,
                (rows - intrinsics.cy) / intrinsics.fy,
                np.ones_like(cols),
            ],
            -1,
        )
        @ pose[:3, :3].T
    )
    origin = pose[:3, 3]
    best_t = np.full(cols.shape, np.inf)
    best_face = np.full(cols.shape, -1)
    for index, (name, axis, value, _) in enumerate(FACES):
        with np.errstate(divide="ignore", invalid="ignore"):
            t = (value - origin[axis]) / directions[..., axis]
        hit = origin + directions * t[..., None]
        inside = np.ones(cols.shape, bool)
        for other in range(3):
            if other != axis:
                inside &= (hit[..., other] >= BOUNDS[other, 0] - 1e-9) & (
                    hit[..., other] <= BOUNDS[other, 1] + 1e-9
                )
        if name == "front":
            y0, y1, z0, z1 = WINDOW
            inside &= ~((hit[..., 1] > y0) & (hit[..., 1] < y1) & (hit[..., 2] > z0) & (hit[..., 2] < z1))
        valid = (t > 1e-9) & inside & (name in names)
        closer = valid & (t < best_t)
        best_t[closer], best_face[closer] = t[closer], index
    palette = np.array([f[3] for f in FACES] + [(0, 0, 0)], dtype=np.uint8)
    image = palette[best_face]
    depth = np.where(best_face >= 0, best_t, np.nan).astype(np.float32)
    return image, depth, best_face


def boundary(face_ids: np.ndarray, width: int = 1) -> np.ndarray:
    """Pixels within ``width`` of a change of face (where a pixel-centre test is ambiguous)."""
    ids = face_ids.astype(np.int32)
    kernel = np.ones((2 * width + 1, 2 * width + 1), np.uint8)
    grown = cv2.dilate(ids.astype(np.float32), kernel)
    shrunk = cv2.erode(ids.astype(np.float32), kernel)
    return grown != shrunk


def camera_at(heading_deg: float, pitch_deg: float = 0.0) -> np.ndarray:
    heading = np.radians(heading_deg)
    pitch = np.radians(pitch_deg)
    forward = np.array([np.cos(heading) * np.cos(pitch), np.sin(heading) * np.cos(pitch), np.sin(pitch)])
    return look_at(EYE, EYE + forward, UP)


def test_mesh_render_matches_ray_tracing() -> None:
    pose = camera_at(10.0, -5.0)
    expected_image, expected_depth, faces = ray_trace(pose, INTRINSICS)
    assert (faces == -1).any(), "the window must be in view"
    rendered = render_mesh(room_mesh(), pose, INTRINSICS)
    sure = ~boundary(faces)
    np.testing.assert_array_equal(rendered.image[sure], expected_image[sure])
    np.testing.assert_array_equal(rendered.mask[sure], faces[sure] >= 0)
    known = sure & (faces >= 0)
    np.testing.assert_allclose(rendered.depth[known], expected_depth[known], rtol=1e-4)
    assert np.isnan(rendered.depth[~rendered.mask]).all()


def test_holes_are_exactly_the_missing_geometry() -> None:
    pose = camera_at(0.0)
    _, _, faces = ray_trace(pose, INTRINSICS)
    reconstruction = Reconstruction(
        np.zeros((0, 3), np.float32),
        np.zeros((0, 3), np.uint8),
        np.zeros(0, np.float32),
        pose[None],
        [INTRINSICS],
        mesh=room_mesh(),
    )
    exact = HoleMaskConfig(close_px=0, min_hole_area_px=0, dilate_px=0)
    view = render_novel_view(reconstruction, pose, INTRINSICS, hole_config=exact)
    assert view.source == "mesh"
    window = faces == -1
    sure = ~boundary(faces)
    np.testing.assert_array_equal(view.hole_mask[sure], window[sure])
    assert window.sum() > 500 and view.hole_fraction == pytest.approx(window.mean(), abs=0.01)
    assert np.all(view.image[view.hole_mask] == 0)
    # Default clean-up grows the hole by dilate_px and nothing else appears.
    grown = render_novel_view(reconstruction, pose, INTRINSICS)
    disc = cv2.getStructuringElement(cv2.MORPH_ELLIPSE, (2 * 4 + 1,) * 2)
    assert np.all(grown.hole_mask[window & sure])
    assert not np.any(
        grown.hole_mask & ~cv2.dilate(window.astype(np.uint8), disc, iterations=1).astype(bool) & sure
    )


def test_point_cloud_view_and_its_cleaned_holes() -> None:
    pose = camera_at(-35.0, -10.0)  # sees the front and right walls, the floor and the window
    expected_image, _, faces = ray_trace(pose, INTRINSICS)
    assert len(np.unique(faces)) >= 4
    points, colours = room_points()
    reconstruction = Reconstruction(
        points, colours, np.ones(len(points), np.float32), pose[None], [INTRINSICS]
    )
    view = render_novel_view(reconstruction, pose, INTRINSICS, render_source="points")
    assert view.source == "points"
    window = faces == -1
    inner = cv2.erode(window.astype(np.uint8), np.ones((7, 7), np.uint8)).astype(bool)
    outer = cv2.dilate(window.astype(np.uint8), np.ones((17, 17), np.uint8)).astype(bool)
    assert np.all(view.hole_mask[inner]), "the window is a hole"
    assert not np.any(view.hole_mask & ~outer), "splat gaps elsewhere are not holes"
    far_from_edges = ~boundary(faces, 2) & ~view.hole_mask
    agreement = np.all(view.image[far_from_edges] == expected_image[far_from_edges], axis=1).mean()
    assert agreement > 0.995


def test_turning_left_uncovers_the_left_and_the_photo_is_moved_exactly() -> None:
    """Only the front wall was reconstructed; the keyframe photo is the exact view of the whole room."""
    keyframe_pose = camera_at(0.0)
    photo, _, _ = ray_trace(keyframe_pose, INTRINSICS)
    wall_only = Reconstruction(
        np.zeros((0, 3), np.float32),
        np.zeros((0, 3), np.uint8),
        np.zeros(0, np.float32),
        keyframe_pose[None],
        [INTRINSICS],
        mesh=room_mesh(faces=("front",)),
    )
    turned = yawed_pose(keyframe_pose, 30.0, UP)
    assert turned[:3, 2] @ np.array([np.cos(np.radians(30)), np.sin(np.radians(30)), 0]) == pytest.approx(1.0)

    geometry_only = render_novel_view(wall_only, turned, INTRINSICS)
    # The wall ends 45 deg left of the keyframe axis, 15 deg left of the turned one: column 79.5 - 120 tan 15.
    left, right = geometry_only.hole_mask[:, :80].mean(), geometry_only.hole_mask[:, 80:].mean()
    assert left > right + 0.3, "turning left shows the unscanned left of the room"
    assert geometry_only.hole_mask[:, :40].all()
    assert not geometry_only.covered[:, :47].any() and geometry_only.covered[20:100, 49:60].all()

    with_photo = render_novel_view(
        wall_only,
        turned,
        INTRINSICS,
        source_image=photo,
        source_pose=keyframe_pose,
        source_intrinsics=INTRINSICS,
    )
    truth, _, faces = ray_trace(turned, INTRINSICS)
    _, defined = warp_by_rotation(photo, keyframe_pose, INTRINSICS, turned, INTRINSICS)
    assert 0.4 < defined.mean() < 0.8 and defined[:, -1].all() and not defined[:, 0].any()
    check = (
        defined & ~boundary(faces, 2) & ~cv2.dilate((~defined).astype(np.uint8), np.ones((5, 5))).astype(bool)
    )
    np.testing.assert_array_equal(with_photo.image[check], truth[check])
    # The photo also covers the window area.
    assert with_photo.hole_fraction < geometry_only.hole_fraction - 0.1
    assert not with_photo.hole_mask[:, -20:].any()
    # Depth comes only from geometry: the photo's side walls carry none.
    assert np.isnan(with_photo.depth[defined & ~geometry_only.covered]).all()


def test_yaw_conventions_and_vertical() -> None:
    level = camera_at(0.0)
    quarter = yawed_pose(level, 90.0, UP)
    np.testing.assert_allclose(quarter[:3, 2], [0, 1, 0], atol=1e-12)  # +x heading turned left to +y
    np.testing.assert_allclose(yawed_pose(level, 90.0)[:3, :3], quarter[:3, :3], atol=1e-12)
    np.testing.assert_allclose(quarter[:3, 3], level[:3, 3])
    pitched = camera_at(0.0, -30.0)
    about_gravity = yawed_pose(pitched, 40.0, UP)
    assert np.degrees(np.arcsin(about_gravity[2, 2])) == pytest.approx(-30.0), "gravity yaw keeps the pitch"
    about_camera = yawed_pose(pitched, 40.0)
    assert np.degrees(np.arcsin(about_camera[2, 2])) != pytest.approx(-30.0, abs=1.0)

    up, why = estimate_up_direction(np.stack([camera_at(h, -10.0) for h in (0, 60, 120)]))
    np.testing.assert_array_equal(up, UP)
    assert "gravity" in why
    up, why = estimate_up_direction(np.eye(4)[None])  # a y-down world (first camera, SLAM)
    np.testing.assert_allclose(up, [0, -1, 0])
    with pytest.raises(ValueError):
        yawed_pose(level, float("nan"))


def test_clean_hole_mask_rules() -> None:
    covered = np.ones((60, 80), bool)
    covered[10:12, 10:12] = False  # a 4-pixel splat gap
    covered[30:50, 40:70] = False  # a 600-pixel real hole
    covered[5, :] = False  # a 1-pixel crack across the image
    hole = clean_hole_mask(covered, HoleMaskConfig(close_px=1, min_hole_area_px=64, dilate_px=0))
    assert not hole[10:12, 10:12].any() and not hole[5].any()
    np.testing.assert_array_equal(hole[31:49, 41:69], True)  # closing with a disc rounds the corners
    assert hole.sum() <= 600
    assert not clean_hole_mask(np.ones((10, 10), bool)).any()
