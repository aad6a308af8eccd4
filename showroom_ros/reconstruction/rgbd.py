"""RGB-D fusion: depth images + intrinsics + camera poses -> one coloured, metric point cloud.

This is the default backend because it needs no model weights and is exact where the depth is:
every keyframe's depth is back-projected with the depth camera's own intrinsics, coloured by
projecting into the colour camera (a Kinect-style sensor has two cameras with different
intrinsics), moved into the map with its camera-to-map pose, and the keyframes are fused on a
voxel grid so each surface patch is one averaged point with a count of how many keyframes saw it.
"""

from __future__ import annotations

import time
from collections.abc import Sequence
from dataclasses import dataclass

import cv2
import numpy as np
import open3d as o3d
import open3d.core as o3c

from showroom_ros.capture.keyframes import Keyframe
from showroom_ros.geometry.camera import CameraIntrinsics
from showroom_ros.reconstruction.render import render_points
from showroom_ros.reconstruction.result import Reconstruction, TriangleMesh

REGISTERED_FRAME_ID = "showroom"
"""Frame of a reconstruction whose poses were estimated here, anchored at the first keyframe's camera."""


class RegistrationError(ValueError):
    """Keyframes without poses could not be registered to each other (too little overlap or texture)."""


# --- depth conversion and back-projection ----------------------------------------------------------


def depth_to_metres(raw: np.ndarray, depth_scale: float = 1000.0) -> np.ndarray:
    """Depth image in metres as float32, NaN where invalid (0, NaN, inf or negative).

    Integer images (16UC1 from a driver, 16-bit PNG/PGM files) are divided by ``depth_scale``
    (units per metre, 1000 for millimetres); float images (32FC1) are taken as metres already.
    """
    array = np.asarray(raw)
    if array.ndim == 3 and array.shape[2] == 1:
        array = array[:, :, 0]
    if array.ndim != 2:
        raise ValueError(f"depth image must be 2-D (H, W), got shape {array.shape}")
    if np.issubdtype(array.dtype, np.integer) or array.dtype == np.bool_:
        if not (np.isfinite(depth_scale) and depth_scale > 0):
            raise ValueError(f"depth_scale must be a positive number of units per metre, got {depth_scale}")
        metres = array.astype(np.float32) / np.float32(depth_scale)
    elif np.issubdtype(array.dtype, np.floating):
        metres = array.astype(np.float32, copy=True)
    else:
        raise ValueError(
            f"depth image must be integer (e.g. 16UC1) or float (32FC1) metres, got {array.dtype}"
        )
    with np.errstate(invalid="ignore"):
        metres[~(np.isfinite(metres) & (metres > 0))] = np.nan
    return metres


def _intrinsics_for_size(
    intrinsics: CameraIntrinsics, width: int, height: int, what: str
) -> CameraIntrinsics:
    """The intrinsics at an image's actual size: rescaled when only the resolution differs, else an error."""
    if (intrinsics.width, intrinsics.height) == (width, height):
        return intrinsics
    if abs(intrinsics.width / intrinsics.height - width / height) > 0.01 * width / height:
        raise ValueError(
            f"{what} is {width}x{height} but its intrinsics are for {intrinsics.width}x{intrinsics.height} "
            "(different aspect ratio): the CameraInfo does not belong to this image"
        )
    return intrinsics.scaled(width, height)


def backproject_rgbd(
    depth_m: np.ndarray,
    depth_intrinsics: CameraIntrinsics | None,
    image: np.ndarray,
    image_intrinsics: CameraIntrinsics,
    min_depth: float = 0.1,
    max_depth: float = 6.0,
    pixel_stride: int = 1,
) -> tuple[np.ndarray, np.ndarray]:
    """Camera-frame points (N, 3) float32 and their colours (N, 3) uint8 from one depth + colour pair.

    The depth is back-projected with its own intrinsics; each point takes the colour of the pixel it
    projects to in the colour camera (same optical centre assumed, as for a registered or factory-
    aligned RGB-D pair); points that fall outside the colour image are dropped. With
    ``depth_intrinsics`` None the depth is registered to the colour image, possibly at another
    resolution. Intrinsics for another resolution of the same camera are rescaled automatically.
    """
    depth = np.asarray(depth_m)
    if depth.ndim != 2 or not np.issubdtype(depth.dtype, np.floating):
        raise ValueError(f"depth must be a (H, W) float array in metres, got {depth.shape} {depth.dtype}")
    colour = np.asarray(image)
    if colour.ndim != 3 or colour.shape[2] != 3 or colour.dtype != np.uint8:
        raise ValueError(f"image must be (H, W, 3) uint8 RGB, got {colour.shape} {colour.dtype}")
    if int(pixel_stride) < 1:
        raise ValueError(f"pixel_stride must be >= 1, got {pixel_stride}")
    if not (0 <= min_depth < max_depth):
        raise ValueError(f"need 0 <= min_depth < max_depth, got {min_depth} and {max_depth}")
    depth_h, depth_w = depth.shape
    colour_h, colour_w = colour.shape[:2]
    colour_k = _intrinsics_for_size(image_intrinsics, colour_w, colour_h, "the colour image")
    if depth_intrinsics is None:
        depth_k = colour_k.scaled(depth_w, depth_h)
    else:
        depth_k = _intrinsics_for_size(depth_intrinsics, depth_w, depth_h, "the depth image")

    stride = int(pixel_stride)
    rows = np.arange(0, depth_h, stride)
    cols = np.arange(0, depth_w, stride)
    z = depth[np.ix_(rows, cols)].astype(np.float32)
    with np.errstate(invalid="ignore"):
        valid = np.isfinite(z) & (z >= min_depth) & (z <= max_depth)
    v_idx, u_idx = np.nonzero(valid)
    z = z[v_idx, u_idx]
    u = cols[u_idx].astype(np.float32)
    v = rows[v_idx].astype(np.float32)
    x = (u - np.float32(depth_k.cx)) * z / np.float32(depth_k.fx)
    y = (v - np.float32(depth_k.cy)) * z / np.float32(depth_k.fy)

    # Nearest colour pixel of each point in the colour camera.
    u_colour = np.rint(x / z * np.float32(colour_k.fx) + np.float32(colour_k.cx))
    v_colour = np.rint(y / z * np.float32(colour_k.fy) + np.float32(colour_k.cy))
    inside = (u_colour >= 0) & (u_colour < colour_w) & (v_colour >= 0) & (v_colour < colour_h)
    points = np.stack([x[inside], y[inside], z[inside]], axis=1).astype(np.float32, copy=False)
    colors = colour[v_colour[inside].astype(np.intp), u_colour[inside].astype(np.intp)]
    return points, np.ascontiguousarray(colors, dtype=np.uint8)


# --- fusion ---------------------------------------------------------------------------------------


@dataclass
class RGBDFusionConfig:
    """Parameters of :func:`fuse_rgbd`.

    ``voxel_size`` (m) is the output resolution: 1 cm keeps furniture edges and stays fast.
    ``pixel_stride`` 2 samples every other depth pixel; at Kinect resolution and 1-3 m that is still
    denser than the voxel grid. ``outlier_neighbors``/``outlier_std_ratio`` drive Open3D's
    statistical outlier removal (0 neighbours disables it). ``register_missing_poses`` estimates
    poses of keyframes that have none (see :func:`fuse_rgbd`) instead of refusing them; a pair is
    accepted when ICP matches ``registration_min_fitness`` of the points (within 5 cm) with an
    inlier RMSE of at most ``registration_max_rmse`` metres. On the bundled redkitchen keyframes
    correct pairs fit at 0.58-0.96 with 1.5-1.9 cm RMSE.

    ``tsdf_mesh`` also builds the surface here, by TSDF fusion of the depth images and marching cubes
    (:func:`tsdf_surface`; ``tsdf_voxel_size`` m voxels, truncation ``tsdf_trunc_voxels`` voxels), so
    that no screened Poisson is needed: on the 5 demo keyframes it is several times faster and more
    accurate per vertex, with slightly less completion (docs/surface.md, "Trigger to published").
    It is off by default only because the pipeline cannot yet tell a backend that no mesh is wanted.
    """

    voxel_size: float = 0.01
    min_depth: float = 0.1
    max_depth: float = 6.0
    pixel_stride: int = 2
    outlier_neighbors: int = 20
    outlier_std_ratio: float = 2.0
    register_missing_poses: bool = True
    registration_min_fitness: float = 0.3
    registration_max_rmse: float = 0.03
    tsdf_mesh: bool = False
    tsdf_voxel_size: float = 0.008
    tsdf_trunc_voxels: float = 3.0

    def __post_init__(self) -> None:
        if not (np.isfinite(self.voxel_size) and self.voxel_size > 0):
            raise ValueError(f"voxel_size must be > 0 metres, got {self.voxel_size}")
        if not (0 <= self.min_depth < self.max_depth):
            raise ValueError(f"need 0 <= min_depth < max_depth, got {self.min_depth} and {self.max_depth}")
        if self.pixel_stride < 1:
            raise ValueError(f"pixel_stride must be >= 1, got {self.pixel_stride}")
        if self.outlier_neighbors < 0 or self.outlier_std_ratio <= 0:
            raise ValueError("outlier_neighbors must be >= 0 and outlier_std_ratio > 0")
        if not 0 < self.registration_min_fitness <= 1:
            raise ValueError(
                f"registration_min_fitness must be in (0, 1], got {self.registration_min_fitness}"
            )
        if not (np.isfinite(self.tsdf_voxel_size) and self.tsdf_voxel_size > 0) or not self.tsdf_trunc_voxels >= 1:
            raise ValueError("tsdf_voxel_size must be > 0 metres and tsdf_trunc_voxels >= 1")


def _describe(index: int, keyframe: Keyframe) -> str:
    label = f"keyframe {index}"
    if keyframe.frame_id:
        label += f" (frame '{keyframe.frame_id}'"
        label += f", stamp {keyframe.stamp_ns} ns)" if keyframe.stamp_ns else ")"
    elif keyframe.stamp_ns:
        label += f" (stamp {keyframe.stamp_ns} ns)"
    return label


def _check_keyframes(keyframes: Sequence[Keyframe]) -> None:
    if len(keyframes) == 0:
        raise ValueError("RGB-D fusion needs at least one keyframe, got none")
    for index, keyframe in enumerate(keyframes):
        if keyframe.depth is None:
            raise ValueError(f"{_describe(index, keyframe)} has no depth image: RGB-D fusion needs depth")
        if keyframe.intrinsics is None:
            raise ValueError(f"{_describe(index, keyframe)} has no camera intrinsics (CameraInfo)")


def fuse_points(
    points: np.ndarray, colors: np.ndarray, sources: np.ndarray, voxel_size: float
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Average points and colours per voxel; confidence = number of distinct sources (keyframes) per voxel.

    Done with one ``np.unique`` over integer voxel keys rather than Open3D's voxel_down_sample: the
    per-voxel source count needs the point-to-voxel assignment, which Open3D only exposes through a
    per-voxel Python list (seconds for 10^5 voxels), and the numpy grouping is faster than Open3D's
    hash map on these sizes anyway.
    """
    if len(points) == 0:
        return np.zeros((0, 3), np.float32), np.zeros((0, 3), np.uint8), np.zeros(0, np.float32)
    origin = points.min(axis=0).astype(np.float64)
    cells = np.floor((points.astype(np.float64) - origin) / voxel_size).astype(np.int64)
    extent = cells.max(axis=0) + 1
    if float(np.prod(extent.astype(np.float64))) >= 2.0**62:
        raise ValueError(
            f"the cloud spans {extent} voxels of {voxel_size} m: too large for the voxel grid; "
            "raise voxel_size or lower max_depth"
        )
    keys = (cells[:, 0] * extent[1] + cells[:, 1]) * extent[2] + cells[:, 2]
    # Group by key with one argsort (np.unique's return_inverse costs several times more); voxels come
    # out in key order, as np.unique's would.
    order = np.argsort(keys)
    sorted_keys = keys[order]
    first = np.empty(len(keys), dtype=bool)
    first[0] = True
    np.not_equal(sorted_keys[1:], sorted_keys[:-1], out=first[1:])
    voxel_of_point = np.empty(len(keys), dtype=np.int64)
    voxel_of_point[order] = np.cumsum(first) - 1
    members = np.bincount(voxel_of_point)
    voxel_count = len(members)
    fused_points = np.empty((voxel_count, 3), dtype=np.float64)
    fused_colors = np.empty((voxel_count, 3), dtype=np.float64)
    for axis in range(3):
        fused_points[:, axis] = np.bincount(voxel_of_point, points[:, axis], minlength=voxel_count)
        fused_colors[:, axis] = np.bincount(voxel_of_point, colors[:, axis], minlength=voxel_count)
    fused_points /= members[:, None]
    fused_colors /= members[:, None]
    # Distinct sources per voxel: a bit per source OR-ed per voxel, then counted (a second sort over the
    # (voxel, source) pairs took 60 % of the fusion). More than 64 sources fall back to that sort.
    source_ids = np.asarray(sources, dtype=np.int64)
    if int(source_ids.max()) < 64:
        seen = np.zeros(voxel_count, dtype=np.uint64)
        np.bitwise_or.at(seen, voxel_of_point, np.left_shift(np.uint64(1), source_ids.astype(np.uint64)))
        confidence = np.bitwise_count(seen)
    else:
        pair_keys = np.unique(voxel_of_point * (int(source_ids.max()) + 1) + source_ids)
        confidence = np.bincount(pair_keys // (int(source_ids.max()) + 1), minlength=voxel_count)
    return (
        fused_points.astype(np.float32),
        np.clip(np.rint(fused_colors), 0, 255).astype(np.uint8),
        confidence.astype(np.float32),
    )


def _to_open3d(points: np.ndarray, colors: np.ndarray | None = None) -> o3d.geometry.PointCloud:
    cloud = o3d.geometry.PointCloud(o3d.utility.Vector3dVector(np.asarray(points, dtype=np.float64)))
    if colors is not None:
        cloud.colors = o3d.utility.Vector3dVector(np.asarray(colors, dtype=np.float64) / 255.0)
    return cloud


# --- pose estimation for keyframes without poses -------------------------------------------------

_REGISTRATION_VOXEL_M = 0.02
_MIN_FEATURE_MATCHES = 12


@dataclass
class _RegistrationView:
    """What registration needs of one keyframe, computed once."""

    cloud: o3d.geometry.PointCloud  # camera frame, downsampled, with normals
    keypoints_3d: np.ndarray  # (M, 3) camera-frame points of the SIFT keypoints that have depth
    descriptors: np.ndarray  # (M, 128) float32


def _registration_view(keyframe: Keyframe, points_cam: np.ndarray, sift: cv2.SIFT) -> _RegistrationView:
    assert keyframe.intrinsics is not None
    colour_k = _intrinsics_for_size(keyframe.intrinsics, keyframe.width, keyframe.height, "the colour image")
    cloud = _to_open3d(points_cam).voxel_down_sample(_REGISTRATION_VOXEL_M)
    cloud.estimate_normals(o3d.geometry.KDTreeSearchParamHybrid(radius=3 * _REGISTRATION_VOXEL_M, max_nn=30))
    cloud.orient_normals_towards_camera_location(np.zeros(3))
    # Depth as seen by the colour camera, so that colour keypoints can be lifted to 3-D.
    depth_in_colour = render_points(points_cam, None, np.eye(4), colour_k, point_radius_px=1).depth
    gray = cv2.cvtColor(keyframe.image, cv2.COLOR_RGB2GRAY)
    keypoints, descriptors = sift.detectAndCompute(gray, None)
    if descriptors is None or not keypoints:
        return _RegistrationView(cloud, np.zeros((0, 3)), np.zeros((0, 128), np.float32))
    pixels = np.array([kp.pt for kp in keypoints], dtype=np.float64)
    cols = np.clip(np.rint(pixels[:, 0]).astype(int), 0, colour_k.width - 1)
    rows = np.clip(np.rint(pixels[:, 1]).astype(int), 0, colour_k.height - 1)
    z = depth_in_colour[rows, cols].astype(np.float64)
    has_depth = np.isfinite(z)
    z, pixels = z[has_depth], pixels[has_depth]
    lifted = np.stack(
        [(pixels[:, 0] - colour_k.cx) * z / colour_k.fx, (pixels[:, 1] - colour_k.cy) * z / colour_k.fy, z],
        axis=1,
    )
    return _RegistrationView(cloud, lifted, descriptors[has_depth].astype(np.float32))


def _feature_guess(source: _RegistrationView, target: _RegistrationView) -> np.ndarray | None:
    """Source-to-target transform from SIFT matches lifted to 3-D and a RANSAC rigid fit, or None."""
    if len(source.descriptors) < _MIN_FEATURE_MATCHES or len(target.descriptors) < _MIN_FEATURE_MATCHES:
        return None
    pairs = cv2.BFMatcher(cv2.NORM_L2).knnMatch(source.descriptors, target.descriptors, k=2)
    good = [p[0] for p in pairs if len(p) == 2 and p[0].distance < 0.8 * p[1].distance]
    if len(good) < _MIN_FEATURE_MATCHES:
        return None
    correspondences = np.array([[m.queryIdx, m.trainIdx] for m in good], dtype=np.int32)
    reg = o3d.pipelines.registration
    result = reg.registration_ransac_based_on_correspondence(
        _to_open3d(source.keypoints_3d),
        _to_open3d(target.keypoints_3d),
        o3d.utility.Vector2iVector(correspondences),
        0.05,
        reg.TransformationEstimationPointToPoint(False),
        3,
        [reg.CorrespondenceCheckerBasedOnEdgeLength(0.9), reg.CorrespondenceCheckerBasedOnDistance(0.05)],
        reg.RANSACConvergenceCriteria(20000, 0.999),
    )
    inliers = len(result.correspondence_set)
    return result.transformation if inliers >= _MIN_FEATURE_MATCHES // 2 else None


def _register_pair(source: _RegistrationView, target: _RegistrationView) -> tuple[np.ndarray, float, float]:
    """Best source-to-target transform, its fitness and inlier RMSE after point-to-plane ICP.

    Tries the feature-based guess (wide baselines) and the identity (small motions, textureless views).
    """
    reg = o3d.pipelines.registration
    max_distance = 2.5 * _REGISTRATION_VOXEL_M
    guesses = [np.eye(4)]
    feature = _feature_guess(source, target)
    if feature is not None:
        guesses.insert(0, feature)
    best: tuple[np.ndarray, float, float] = (np.eye(4), 0.0, float("inf"))
    for guess in guesses:
        refined = reg.registration_icp(
            source.cloud,
            target.cloud,
            max_distance,
            guess,
            reg.TransformationEstimationPointToPlane(),
            reg.ICPConvergenceCriteria(max_iteration=50),
        )
        if refined.fitness > best[1]:
            best = (np.asarray(refined.transformation), float(refined.fitness), float(refined.inlier_rmse))
    return best


def register_keyframes(
    keyframes: Sequence[Keyframe],
    camera_points: Sequence[tuple[np.ndarray, np.ndarray]],
    config: RGBDFusionConfig,
) -> np.ndarray:
    """Camera-to-frame poses (K, 4, 4) of keyframes registered to each other, the first at the identity.

    Each keyframe is registered to the previous ones, newest first, and chained through the first
    one that fits (fitness >= ``registration_min_fitness``, RMSE <= ``registration_max_rmse``);
    if none fits, :class:`RegistrationError` says which keyframe failed and how well it fitted.
    """
    sift = cv2.SIFT_create(nfeatures=2000)
    views = [
        _registration_view(k, points, sift) for k, (points, _) in zip(keyframes, camera_points, strict=True)
    ]
    poses = [np.eye(4)]
    for index in range(1, len(views)):
        attempts = []
        for previous in range(index - 1, -1, -1):
            transform, fitness, rmse = _register_pair(views[index], views[previous])
            attempts.append(f"to keyframe {previous}: fitness {fitness:.2f}, RMSE {rmse * 100:.1f} cm")
            if fitness >= config.registration_min_fitness and rmse <= config.registration_max_rmse:
                poses.append(poses[previous] @ transform)
                break
        else:
            raise RegistrationError(
                f"could not register {_describe(index, keyframes[index])} without a pose ("
                + "; ".join(attempts)
                + f"; need fitness >= {config.registration_min_fitness}). Give the keyframes poses "
                "(TF or pose topic) or capture views with more overlap"
            )
    return np.stack(poses)


_TSDF_BLOCK_RESOLUTION = 8
"""Voxels per block edge: 8 leaves few empty voxels around a thin surface (16 integrated far slower)."""


def tsdf_surface(keyframes: Sequence[Keyframe], poses: np.ndarray, config: RGBDFusionConfig) -> TriangleMesh:
    """Marching-cubes mesh of the keyframes' depth fused in a TSDF (Open3D tensor ``VoxelBlockGrid``, CPU).

    Why here and not in :mod:`~showroom_ros.reconstruction.surface`: only the backend still has the
    depth images. Each surface is the weighted mean of the depths that saw it, so the mesh stays on
    the measurements and invents nothing beyond the truncation band: unlike Poisson it needs no
    trimming and no support check. Colour comes from the colour camera (its own intrinsics, same
    optical centre assumed, as in :func:`backproject_rgbd`); depths outside [min_depth, max_depth]
    are ignored. ``poses`` are camera-to-frame.
    """
    grid = o3d.t.geometry.VoxelBlockGrid(
        ("tsdf", "weight", "color"),
        (o3c.float32, o3c.float32, o3c.float32),
        ((1), (1), (3)),
        config.tsdf_voxel_size,
        _TSDF_BLOCK_RESOLUTION,
        20_000,
        o3c.Device("CPU:0"),
    )
    trunc = float(config.tsdf_trunc_voxels)
    for keyframe, pose in zip(keyframes, poses, strict=True):
        assert keyframe.depth is not None and keyframe.intrinsics is not None
        depth = np.asarray(keyframe.depth, dtype=np.float32)
        height, width = depth.shape
        colour_k = _intrinsics_for_size(keyframe.intrinsics, keyframe.width, keyframe.height, "the colour image")
        if keyframe.depth_intrinsics is None:
            depth_k = colour_k.scaled(width, height)
        else:
            depth_k = _intrinsics_for_size(keyframe.depth_intrinsics, width, height, "the depth image")
        with np.errstate(invalid="ignore"):
            usable = np.isfinite(depth) & (depth >= config.min_depth) & (depth <= config.max_depth)
        depth_image = o3d.t.geometry.Image(o3c.Tensor(np.where(usable, depth, 0.0).astype(np.float32)))
        colour = np.ascontiguousarray(keyframe.image, dtype=np.float32) / np.float32(255.0)
        k_depth = o3c.Tensor(depth_k.matrix, o3c.float64)
        extrinsic = o3c.Tensor(np.linalg.inv(np.asarray(pose, dtype=np.float64)), o3c.float64)
        coords = grid.compute_unique_block_coordinates(depth_image, k_depth, extrinsic, 1.0, config.max_depth, trunc)
        grid.integrate(
            coords,
            depth_image,
            o3d.t.geometry.Image(o3c.Tensor(colour)),
            k_depth,
            o3c.Tensor(colour_k.matrix, o3c.float64),
            extrinsic,
            1.0,
            config.max_depth,
            trunc,
        )
    if grid.hashmap().size() == 0:
        return TriangleMesh(np.zeros((0, 3), np.float32), np.zeros((0, 3), np.int32), np.zeros((0, 3), np.uint8))
    # Weight > 0.5 keeps every voxel one depth image saw (1.0, i.e. two views, cut completion 0.64 -> 0.51).
    mesh = grid.extract_triangle_mesh(0.5)
    vertices = mesh.vertex.positions.numpy().astype(np.float32)
    colors = np.clip(np.rint(mesh.vertex.colors.numpy() * 255.0), 0, 255).astype(np.uint8)
    return TriangleMesh(vertices, mesh.triangle.indices.numpy().astype(np.int32), colors)


def fuse_rgbd(keyframes: Sequence[Keyframe], config: RGBDFusionConfig | None = None) -> Reconstruction:
    """Fuse RGB-D keyframes into one coloured cloud (``mesh`` None: see :mod:`showroom_ros.reconstruction.surface`).

    Keyframes need depth and intrinsics. With every pose known the result is in ``map`` (the
    poses' frame). If any pose is missing and ``config.register_missing_poses`` is on, all poses
    are estimated instead by registering each keyframe to the ones before it (SIFT matches lifted
    to 3-D with the depth, RANSAC, then point-to-plane ICP; a fit below ``registration_min_fitness``
    raises :class:`RegistrationError`). Those poses are anchored at the first keyframe's camera
    and the frame is ``showroom``. ``confidence`` counts the keyframes that observed each voxel.
    With ``config.tsdf_mesh`` the result also has the TSDF surface (:func:`tsdf_surface`), which
    :func:`~showroom_ros.reconstruction.surface.attach_mesh` then keeps instead of running Poisson.
    """
    config = config or RGBDFusionConfig()
    keyframes = list(keyframes)
    _check_keyframes(keyframes)
    timings: dict[str, float] = {}

    started = time.perf_counter()
    camera_points: list[tuple[np.ndarray, np.ndarray]] = []
    for keyframe in keyframes:
        assert keyframe.depth is not None and keyframe.intrinsics is not None
        camera_points.append(
            backproject_rgbd(
                keyframe.depth,
                keyframe.depth_intrinsics,
                keyframe.image,
                keyframe.intrinsics,
                config.min_depth,
                config.max_depth,
                config.pixel_stride,
            )
        )
    timings["backproject"] = time.perf_counter() - started
    for index, (points, _) in enumerate(camera_points):
        if len(points) == 0:
            raise ValueError(
                f"{_describe(index, keyframes[index])} has no valid depth between "
                f"{config.min_depth} and {config.max_depth} m"
            )

    frame_id = "map"
    missing = [i for i, k in enumerate(keyframes) if k.pose is None]
    if missing:
        if not config.register_missing_poses:
            names = ", ".join(_describe(i, keyframes[i]) for i in missing)
            raise ValueError(
                f"{names} ha{'s' if len(missing) == 1 else 've'} no camera pose "
                "and register_missing_poses is off"
            )
        started = time.perf_counter()
        poses = register_keyframes(keyframes, camera_points, config)
        frame_id = REGISTERED_FRAME_ID
        timings["registration"] = time.perf_counter() - started
    else:
        poses = np.stack([np.asarray(k.pose, dtype=np.float64) for k in keyframes])

    started = time.perf_counter()
    world_points = []
    for (points, _), pose in zip(camera_points, poses, strict=True):
        world_points.append(points.astype(np.float64) @ pose[:3, :3].T + pose[:3, 3])
    all_points = np.concatenate(world_points)
    all_colors = np.concatenate([colors for _, colors in camera_points])
    sources = np.concatenate([np.full(len(p), i, dtype=np.int64) for i, p in enumerate(world_points)])
    fused_points, fused_colors, confidence = fuse_points(all_points, all_colors, sources, config.voxel_size)
    timings["fuse"] = time.perf_counter() - started

    if config.outlier_neighbors > 0 and len(fused_points) > config.outlier_neighbors:
        started = time.perf_counter()
        _, kept = _to_open3d(fused_points).remove_statistical_outlier(
            config.outlier_neighbors, config.outlier_std_ratio
        )
        kept = np.asarray(kept, dtype=np.int64)
        fused_points, fused_colors, confidence = fused_points[kept], fused_colors[kept], confidence[kept]
        timings["outlier_removal"] = time.perf_counter() - started

    mesh = None
    if config.tsdf_mesh:
        started = time.perf_counter()
        mesh = tsdf_surface(keyframes, poses, config)
        timings["tsdf_mesh"] = time.perf_counter() - started

    return Reconstruction(
        points=fused_points,
        colors=fused_colors,
        confidence=confidence,
        camera_poses=poses,
        intrinsics=[k.intrinsics for k in keyframes if k.intrinsics is not None],
        frame_id=frame_id,
        metric=True,
        backend="rgbd",
        mesh=mesh,
        timings=timings,
    )
