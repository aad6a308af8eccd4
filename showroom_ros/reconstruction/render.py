"""A small z-buffered point splatter in numpy: previews and novel views of a coloured cloud.

Open3D's offscreen renderer needs EGL/OSMesa, which a headless robot or CI runner rarely has, so
previews and the view-generation conditioning images are drawn here with plain numpy: every point
is projected with the pinhole model, splatted as a small square, and the nearest point wins each
pixel. Poses are camera-to-frame in OpenCV optical axes (x right, y down, z forward), like
everywhere else in the package.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np

from showroom_ros.geometry.camera import CameraIntrinsics

_NEAR_PLANE_M = 1e-3  # points closer than this to the camera plane are not drawn


@dataclass
class RenderResult:
    """One rendered view. ``depth`` is the camera z (not ray length), NaN where nothing was drawn."""

    image: np.ndarray  # (H, W, 3) uint8 RGB
    depth: np.ndarray  # (H, W) float32 metres (or the cloud's units), NaN = empty
    mask: np.ndarray  # (H, W) bool, True where a point was drawn

    @property
    def coverage(self) -> float:
        """Fraction of pixels covered by at least one point."""
        return float(self.mask.mean()) if self.mask.size else 0.0


def _as_points(points: np.ndarray) -> np.ndarray:
    array = np.asarray(points)
    if array.ndim != 2 or array.shape[1] != 3:
        raise ValueError(f"points must be an (N, 3) array, got shape {array.shape}")
    return array.astype(np.float64, copy=False)


def _as_colors(colors: np.ndarray | None, count: int) -> np.ndarray:
    """uint8 RGB; float colours are taken as 0..1 (Open3D's convention)."""
    if colors is None:
        return np.full((count, 3), 200, dtype=np.uint8)
    array = np.asarray(colors)
    if array.shape != (count, 3):
        raise ValueError(f"colors must be ({count}, 3) to match the points, got shape {array.shape}")
    if array.dtype == np.uint8:
        return array
    if np.issubdtype(array.dtype, np.floating):
        return (np.clip(np.nan_to_num(array), 0.0, 1.0) * 255.0 + 0.5).astype(np.uint8)
    return np.clip(array, 0, 255).astype(np.uint8)


def _as_pose(pose_c2w: np.ndarray) -> np.ndarray:
    pose = np.asarray(pose_c2w, dtype=np.float64)
    if pose.shape != (4, 4) or not np.all(np.isfinite(pose)):
        raise ValueError(f"pose_c2w must be a finite 4x4 camera-to-frame matrix, got shape {pose.shape}")
    return pose


def render_points(
    points: np.ndarray,
    colors: np.ndarray | None,
    pose_c2w: np.ndarray,
    intrinsics: CameraIntrinsics,
    point_radius_px: int = 1,
    background: Sequence[int] = (0, 0, 0),
) -> RenderResult:
    """Render a coloured cloud from a camera; each point covers a (2r+1)x(2r+1) square of pixels.

    ``point_radius_px`` = 0 draws single pixels (exact z-buffer test of the projection), 1 draws
    3x3 squares, which closes the holes of a cloud seen slightly closer than it was captured.
    Ties between points at the same pixel go to the smallest camera z.
    """
    xyz = _as_points(points)
    rgb = _as_colors(colors, len(xyz))
    pose = _as_pose(pose_c2w)
    radius = int(point_radius_px)
    if radius < 0:
        raise ValueError(f"point_radius_px must be >= 0, got {point_radius_px}")
    if len(background) != 3:
        raise ValueError(f"background must be an RGB triple, got {background!r}")
    width, height = intrinsics.width, intrinsics.height

    image = np.empty((height, width, 3), dtype=np.uint8)
    image[:] = np.asarray(background, dtype=np.uint8)
    depth = np.full((height, width), np.nan, dtype=np.float32)
    mask = np.zeros((height, width), dtype=bool)

    finite = np.all(np.isfinite(xyz), axis=1)
    rotation, translation = pose[:3, :3], pose[:3, 3]
    # Row-vector form of R^T (X - t): the world-to-camera transform of every point at once.
    cam = (xyz[finite] - translation) @ rotation
    keep = cam[:, 2] > _NEAR_PLANE_M
    cam, rgb = cam[keep], rgb[finite][keep]
    if len(cam) == 0:
        return RenderResult(image, depth, mask)

    z = cam[:, 2]
    u = np.rint(intrinsics.fx * cam[:, 0] / z + intrinsics.cx).astype(np.int64)
    v = np.rint(intrinsics.fy * cam[:, 1] / z + intrinsics.cy).astype(np.int64)
    # Discard points whose whole splat is off-screen before expanding (keeps memory linear in what is seen).
    near_screen = (u >= -radius) & (u < width + radius) & (v >= -radius) & (v < height + radius)
    u, v, z, rgb = u[near_screen], v[near_screen], z[near_screen], rgb[near_screen]
    if len(z) == 0:
        return RenderResult(image, depth, mask)

    # Rank points nearest-first once; each pixel then keeps the smallest rank that lands on it.
    # np.minimum.at is an unbuffered scatter-min, so duplicates resolve correctly without a big sort.
    by_depth = np.argsort(z, kind="stable")
    rank = np.empty(len(z), dtype=np.int64)
    rank[by_depth] = np.arange(len(z))
    nearest_rank = np.full(width * height, len(z), dtype=np.int64)
    for dv in range(-radius, radius + 1):
        for du in range(-radius, radius + 1):
            uu, vv = u + du, v + dv
            inside = (uu >= 0) & (uu < width) & (vv >= 0) & (vv < height)
            np.minimum.at(nearest_rank, vv[inside] * width + uu[inside], rank[inside])
    pixel = np.flatnonzero(nearest_rank < len(z))
    owner = by_depth[nearest_rank[pixel]]

    image.reshape(-1, 3)[pixel] = rgb[owner]
    depth.reshape(-1)[pixel] = z[owner].astype(np.float32)
    mask.reshape(-1)[pixel] = True
    return RenderResult(image, depth, mask)


def look_at(eye: np.ndarray, target: np.ndarray, up: np.ndarray) -> np.ndarray:
    """Camera-to-frame pose (OpenCV optical axes) at ``eye`` looking at ``target`` with ``up`` up."""
    eye = np.asarray(eye, dtype=np.float64)
    forward = np.asarray(target, dtype=np.float64) - eye
    norm = np.linalg.norm(forward)
    if not np.isfinite(norm) or norm < 1e-12:
        raise ValueError("look_at needs an eye position distinct from the target")
    forward /= norm
    down = -np.asarray(up, dtype=np.float64)
    down = down - forward * float(down @ forward)
    if np.linalg.norm(down) < 1e-9:  # looking straight along 'up': any perpendicular will do
        helper = np.array([1.0, 0.0, 0.0]) if abs(forward[0]) < 0.9 else np.array([0.0, 1.0, 0.0])
        down = helper - forward * float(helper @ forward)
    down /= np.linalg.norm(down)
    right = np.cross(down, forward)
    pose = np.eye(4)
    pose[:3, 0], pose[:3, 1], pose[:3, 2], pose[:3, 3] = right, down, forward, eye
    return pose


def preview_camera(
    points: np.ndarray,
    camera_poses: np.ndarray | None = None,
    width: int = 640,
    height: int = 480,
    elevation_deg: float = 25.0,
    margin: float = 0.05,
    fit_quantile: float = 0.995,
) -> tuple[np.ndarray, CameraIntrinsics]:
    """A viewpoint showing the whole cloud: behind and above the keyframe cameras, aimed at the centroid.

    Without ``camera_poses`` the view comes from the frame's -z side with -y up (the OpenCV
    convention of the first camera). The focal length is then chosen so that ``fit_quantile`` of
    the points (robust to a few stray outliers) fit inside the image with ``margin`` to spare.
    """
    xyz = _as_points(points)
    xyz = xyz[np.all(np.isfinite(xyz), axis=1)]
    if len(xyz) == 0:
        raise ValueError("cannot choose a preview camera for an empty point cloud")
    if width <= 0 or height <= 0:
        raise ValueError(f"preview size must be positive, got {width}x{height}")
    centre = np.median(xyz, axis=0)
    spread = np.linalg.norm(xyz - centre, axis=1)
    radius = max(float(np.quantile(spread, fit_quantile)), 1e-3)

    if camera_poses is not None and len(camera_poses) > 0:
        poses = np.asarray(camera_poses, dtype=np.float64).reshape(-1, 4, 4)
        up = -poses[:, :3, 1].mean(axis=0)
        mean_eye = poses[:, :3, 3].mean(axis=0)
        back = mean_eye - centre
        if np.linalg.norm(back) < 1e-6 * radius:
            back = -poses[:, :3, 2].mean(axis=0)
    else:
        up = np.array([0.0, -1.0, 0.0])
        back = np.array([0.0, 0.0, -1.0])
    up /= max(np.linalg.norm(up), 1e-12)
    back = back - up * float(back @ up)  # horizontal part, then tilt it up by the elevation
    if np.linalg.norm(back) < 1e-9:
        back = np.cross(up, [1.0, 0.0, 0.0]) if abs(up[0]) < 0.9 else np.cross(up, [0.0, 1.0, 0.0])
    back /= np.linalg.norm(back)
    elevation = np.deg2rad(elevation_deg)
    direction = np.cos(elevation) * back + np.sin(elevation) * up

    # Stand outside the bounding sphere so every kept point is in front of the camera.
    eye = centre + direction * radius * 2.0
    pose = look_at(eye, centre, up)
    cam = (xyz - eye) @ pose[:3, :3]
    in_front = cam[:, 2] > 1e-6
    cam = cam[in_front]
    slope_x = float(np.quantile(np.abs(cam[:, 0] / cam[:, 2]), fit_quantile)) if len(cam) else 1.0
    slope_y = float(np.quantile(np.abs(cam[:, 1] / cam[:, 2]), fit_quantile)) if len(cam) else 1.0
    usable = 1.0 - 2.0 * margin
    focal = min(usable * width / 2.0 / max(slope_x, 1e-6), usable * height / 2.0 / max(slope_y, 1e-6))
    intrinsics = CameraIntrinsics(focal, focal, (width - 1) / 2.0, (height - 1) / 2.0, width, height)
    return pose, intrinsics
