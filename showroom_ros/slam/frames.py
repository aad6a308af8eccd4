"""One camera frame as SLAM sees it: depth on the colour camera's pixel grid, ORB features with their
3D points, a downsampled cloud ready for GICP, and a small place-recognition descriptor.

Everything is in the colour camera's optical frame (the image's ``frame_id``), so a pose is that
frame's pose whatever the depth camera's own intrinsics. Unregistered depth (two sensors, as the
Kinect v1) is resampled onto the colour grid assuming one optical centre, as the map does.
"""

from __future__ import annotations

from dataclasses import dataclass

import cv2
import numpy as np
import small_gicp

from showroom_ros.geometry.camera import CameraIntrinsics
from showroom_ros.slam.config import SlamConfig

MAX_WIDTH = 640  # larger images are tracked at this width (ORB and GICP gain nothing above it)
THUMBNAIL = (40, 30)  # place-recognition descriptor: a blurred, normalised tiny image (PTAM-style)
CLOUD_STRIDE = 4
MIN_SIZE = 32  # smaller images carry no trackable features


class FrameError(ValueError):
    """A frame SLAM cannot use at all (wrong shape or intrinsics): said, never raised past the caller."""


@dataclass
class SlamFrame:
    stamp_ns: int
    gray: np.ndarray  # (H, W) uint8 at the tracking resolution
    depth: np.ndarray  # (H, W) float32 metres on the same grid, NaN where invalid
    K: np.ndarray  # 3x3 intrinsics of that grid
    keypoints: np.ndarray  # (N, 2) float32 pixels
    descriptors: np.ndarray  # (N, 32) uint8 ORB
    points: np.ndarray  # (N, 3) float32 camera-frame points of the keypoints, NaN without depth
    cloud: small_gicp.PointCloud  # downsampled, with covariances
    tree: small_gicp.KdTree
    descriptor: np.ndarray  # (THUMBNAIL area,) float32, unit norm
    valid_depth: float  # share of pixels with depth

    @property
    def cloud_points(self) -> np.ndarray:
        return np.asarray(self.cloud.points())[:, :3]


def _tracking_intrinsics(intrinsics: CameraIntrinsics, width: int, height: int) -> tuple[CameraIntrinsics, float]:
    scale = min(1.0, MAX_WIDTH / width)
    return intrinsics.scaled(round(width * scale), round(height * scale)), scale


def _depth_grid_intrinsics(
    depth: np.ndarray, depth_k: CameraIntrinsics | None, colour_k: CameraIntrinsics
) -> CameraIntrinsics:
    """The depth image's intrinsics at its own size; without its own CameraInfo it is registered to the
    colour camera, possibly at another resolution."""
    height, width = depth.shape[:2]
    return (depth_k or colour_k).scaled(width, height)  # at its own size: the same camera


def depth_on_colour_grid(
    depth_m: np.ndarray, depth_k: CameraIntrinsics | None, colour_k: CameraIntrinsics
) -> np.ndarray:
    """Depth resampled (nearest) to ``colour_k``'s pixel grid: metres, NaN where there is none."""
    width, height = colour_k.width, colour_k.height
    depth = np.asarray(depth_m, dtype=np.float32)
    depth_k = _depth_grid_intrinsics(depth, depth_k, colour_k)
    u = (np.arange(width, dtype=np.float32) - colour_k.cx) / colour_k.fx * depth_k.fx + depth_k.cx
    v = (np.arange(height, dtype=np.float32) - colour_k.cy) / colour_k.fy * depth_k.fy + depth_k.cy
    map_x = np.broadcast_to(u[None, :], (height, width)).astype(np.float32)
    map_y = np.broadcast_to(v[:, None], (height, width)).astype(np.float32)
    clean = np.where(np.isfinite(depth), depth, 0).astype(np.float32)
    out = cv2.remap(clean, map_x, map_y, cv2.INTER_NEAREST, borderMode=cv2.BORDER_CONSTANT, borderValue=0)
    out[out <= 0] = np.nan
    return out


def backproject(depth: np.ndarray, K: np.ndarray, stride: int = 1) -> np.ndarray:
    """Camera-frame points (N, 3) float64 of the valid pixels of ``depth`` (every ``stride``-th)."""
    z = depth[::stride, ::stride]
    v, u = np.nonzero(np.isfinite(z))
    z = z[v, u].astype(np.float64)
    u = u * stride
    v = v * stride
    return np.stack([(u - K[0, 2]) * z / K[0, 0], (v - K[1, 2]) * z / K[1, 1], z], axis=1)


def place_descriptor(gray: np.ndarray) -> np.ndarray:
    """A blurred 40x30 thumbnail, zero mean and unit norm: similar views give a cosine near 1."""
    small = cv2.resize(gray, THUMBNAIL, interpolation=cv2.INTER_AREA).astype(np.float32)
    small = cv2.GaussianBlur(small, (5, 5), 1.0).ravel()
    small -= small.mean()
    norm = float(np.linalg.norm(small))
    return small / norm if norm > 1e-6 else np.zeros_like(small)


def _depth_camera_points(
    depth_m: np.ndarray,
    depth_k: CameraIntrinsics | None,
    colour_k: CameraIntrinsics,
    config: SlamConfig,
) -> np.ndarray:
    """The GICP cloud from the depth image on its own grid (resampling it first would quantise it)."""
    depth = np.asarray(depth_m, dtype=np.float32)
    depth_k = _depth_grid_intrinsics(depth, depth_k, colour_k)
    stride = max(1, round(CLOUD_STRIDE * depth.shape[1] / colour_k.width))  # the tracking grid's density
    clean = depth.copy()
    with np.errstate(invalid="ignore"):
        clean[~((clean >= config.min_depth) & (clean <= config.max_depth))] = np.nan
    points = backproject(clean, depth_k.matrix, stride)
    # A nonsense CameraInfo (a focal length of a pixel) would spread the cloud over kilometres and stall
    # GICP for seconds: keep points within a 150-degree field of view.
    return points[(np.abs(points[:, 0]) <= 4 * points[:, 2]) & (np.abs(points[:, 1]) <= 4 * points[:, 2])]


class FrameBuilder:
    """Turns (colour, depth, intrinsics) into a :class:`SlamFrame`; owns the ORB detector."""

    def __init__(self, config: SlamConfig) -> None:
        self.config = config
        self._orb = cv2.ORB_create(nfeatures=config.orb_features, fastThreshold=12)

    def build(
        self,
        stamp_ns: int,
        image: np.ndarray,
        depth_m: np.ndarray,
        intrinsics: CameraIntrinsics,
        depth_intrinsics: CameraIntrinsics | None,
    ) -> SlamFrame:
        image = np.asarray(image)
        if image.ndim != 3 or image.shape[2] != 3 or image.dtype != np.uint8:
            raise FrameError(f"slam needs (H, W, 3) uint8 colour, got {image.shape} {image.dtype}")
        depth_m = np.asarray(depth_m)
        if depth_m.ndim != 2:
            raise FrameError(f"slam needs a (H, W) depth image, got {depth_m.shape}")
        height, width = image.shape[:2]
        if height < MIN_SIZE or width < MIN_SIZE:
            raise FrameError(f"slam needs images of at least {MIN_SIZE}x{MIN_SIZE} pixels, got {width}x{height}")
        k, scale = _tracking_intrinsics(intrinsics, width, height)
        gray = cv2.cvtColor(image, cv2.COLOR_RGB2GRAY)
        if scale < 1.0:
            gray = cv2.resize(gray, (k.width, k.height), interpolation=cv2.INTER_AREA)
        depth = depth_on_colour_grid(depth_m, depth_intrinsics, k)
        with np.errstate(invalid="ignore"):
            depth[(depth < self.config.min_depth) | (depth > self.config.max_depth)] = np.nan
        valid = float(np.isfinite(depth).mean())
        keypoints, descriptors = self._orb.detectAndCompute(gray, None)
        if descriptors is None or not keypoints:
            pixels = np.zeros((0, 2), np.float32)
            descriptors = np.zeros((0, 32), np.uint8)
        else:
            pixels = np.array([kp.pt for kp in keypoints], dtype=np.float32)
        K = k.matrix.astype(np.float64)
        cols = np.clip(np.rint(pixels[:, 0]).astype(int), 0, k.width - 1)
        rows = np.clip(np.rint(pixels[:, 1]).astype(int), 0, k.height - 1)
        z = depth[rows, cols].astype(np.float32)
        points = np.stack(
            [(pixels[:, 0] - K[0, 2]) * z / K[0, 0], (pixels[:, 1] - K[1, 2]) * z / K[1, 1], z], axis=1
        ).astype(np.float32)
        raw = _depth_camera_points(depth_m, depth_intrinsics, k, self.config)
        if len(raw) < 30:
            raw = np.zeros((0, 3))
        cloud, tree = small_gicp.preprocess_points(raw, downsampling_resolution=self.config.cloud_voxel)
        return SlamFrame(
            stamp_ns=int(stamp_ns),
            gray=gray,
            depth=depth,
            K=K,
            keypoints=pixels,
            descriptors=np.asarray(descriptors, np.uint8),
            points=points,
            cloud=cloud,
            tree=tree,
            descriptor=place_descriptor(gray),
            valid_depth=valid,
        )
