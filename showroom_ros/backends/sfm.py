"""``sfm`` backend: COLMAP (through pycolmap) on the RGB keyframes, when there are no weights and no depth.

SIFT features and matching on the 3-5 keyframes (along the epipolar lines of the known poses when
there are poses, else COLMAP's exhaustive matcher), then one of two things:

* every keyframe has a pose and intrinsics: the points are triangulated with those poses held fixed.
  On a handful of wide-baseline views of a room, incremental SfM from scratch often cannot find an
  initial pair; triangulating with the robot's poses still works and is in ``map`` at metric scale.
* otherwise: incremental mapping (poses and points from scratch), then registration to whatever the
  keyframes know (:func:`showroom_ros.reconstruction.registration.register_to_keyframes`: poses, depth, or nothing).

The result is sparse: a few hundred to a few thousand coloured points, with the keyframe cameras, and
a note that says so and what would make it dense (``Reconstruction.notes``, shown in ``~/status``).
With known poses, matching uses them too (:func:`epipolar_matches`): about 1-2k points instead of a
few hundred on 5 wide-baseline 540x405 photos (benchmarks/bench_sfm.py, docs/benchmarks.md).
COLMAP works on files, so the keyframes are written to a temporary folder that is deleted afterwards.
"""

from __future__ import annotations

import contextlib
import time
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import cv2
import numpy as np

from showroom_ros.capture.keyframes import Keyframe
from showroom_ros.geometry.camera import CameraIntrinsics
from showroom_ros.io.scratch import scratch_directory
from showroom_ros.reconstruction.pipeline import ProgressCallback, ReconstructionError
from showroom_ros.reconstruction.registration import RegistrationReport, register_to_keyframes
from showroom_ros.reconstruction.result import Reconstruction
from showroom_ros.reconstruction.surface import DENSE_HINT

COLMAP_PIXEL_OFFSET = 0.5
"""COLMAP puts the centre of the top-left pixel at (0.5, 0.5); OpenCV / ROS CameraInfo put it at (0, 0)."""


@dataclass
class SfMConfig:
    """Parameters of :class:`SfMBackend`.

    ``max_num_features`` SIFT features per keyframe (COLMAP's default 8192). ``use_known_poses``
    triangulates with the keyframe poses when all keyframes have poses and intrinsics.
    ``init_min_num_inliers`` / ``abs_pose_min_num_inliers`` are relaxed from COLMAP's 100 / 30, which
    are tuned for hundreds of images, so that 3-5 keyframes can form a model at all.
    ``keep_two_view_tracks`` keeps points seen by only 2 keyframes (most of them, with 5 views).
    ``seed`` makes RANSAC and the mapper repeatable; ``num_threads`` -1 uses all cores.

    Feature options (measured in benchmarks/bench_sfm.py, docs/benchmarks.md): ``first_octave`` -1
    upsamples the image first so that small images still give fine-scale features;
    ``peak_threshold`` is SIFT's contrast threshold (lower: more, weaker features);
    ``domain_size_pooling`` (DSP-SIFT) and ``estimate_affine_shape`` make descriptors more robust
    to wide baselines but cost time.

    Matching with known poses (``epipolar_matching``): when every keyframe has a pose and
    intrinsics the relative geometry of every pair is known, so a match only has to beat the
    other features near its epipolar line (within ``epipolar_max_error`` pixels at 640 px width,
    scaled with the image), not all 8k features of the other image. That ratio test
    (``epipolar_max_ratio``) is far less strict, which is what turns a few hundred points into a few
    thousand on wide baselines. Matches are written to COLMAP as verified two-view geometry.
    Otherwise COLMAP's exhaustive matcher runs with RANSAC verification (``guided_matching``
    re-matches with the estimated F). ``min_triangulation_angle`` (degrees) is COLMAP's
    ``min_angle`` / ``filter_min_tri_angle`` (default 1.5).
    """

    max_num_features: int = 8192
    use_known_poses: bool = True
    init_min_num_inliers: int = 50
    abs_pose_min_num_inliers: int = 15
    min_num_matches: int = 15
    keep_two_view_tracks: bool = True
    max_reprojection_error: float = 4.0
    first_octave: int = -1
    peak_threshold: float = 0.004
    domain_size_pooling: bool = True
    estimate_affine_shape: bool = False
    guided_matching: bool = False
    epipolar_matching: bool = True
    epipolar_max_error: float = 4.0
    epipolar_max_ratio: float = 0.9
    epipolar_max_distance: float = 0.7
    min_triangulation_angle: float = 1.5
    seed: int = 0
    num_threads: int = -1
    quiet: bool = True

    def __post_init__(self) -> None:
        if self.max_num_features < 100:
            raise ValueError(f"max_num_features must be at least 100, got {self.max_num_features}")
        if self.init_min_num_inliers < 8 or self.abs_pose_min_num_inliers < 4 or self.min_num_matches < 8:
            raise ValueError("init_min_num_inliers >= 8, abs_pose_min_num_inliers >= 4, min_num_matches >= 8")
        if not self.max_reprojection_error > 0:
            raise ValueError(f"max_reprojection_error must be > 0 pixels, got {self.max_reprojection_error}")
        if not self.epipolar_max_error > 0 or not 0 < self.epipolar_max_ratio <= 1:
            raise ValueError("epipolar_max_error must be > 0 pixels and epipolar_max_ratio in (0, 1]")
        if not 0 < self.epipolar_max_distance <= np.pi or not self.peak_threshold > 0:
            raise ValueError("epipolar_max_distance must be in (0, pi] radians and peak_threshold > 0")
        if not 0 <= self.min_triangulation_angle < 90:
            raise ValueError(f"min_triangulation_angle must be in [0, 90) degrees, got {self.min_triangulation_angle}")


@dataclass
class SfMResult:
    """What COLMAP produced before registration: points, and camera-to-model poses of the views it placed."""

    points: np.ndarray  # (N, 3) float64
    colors: np.ndarray  # (N, 3) uint8
    track_lengths: np.ndarray  # (N,) number of keyframes that see each point
    camera_to_model: np.ndarray  # (M, 4, 4)
    registered: list[int]  # keyframe index of each pose
    intrinsics: dict[int, CameraIntrinsics]  # per registered keyframe, OpenCV convention
    observations: list[tuple[np.ndarray, np.ndarray] | None]  # per keyframe: (pixels, z) for depth scale
    mode: str
    num_verified_pairs: int = 0
    timings: dict[str, float] = field(default_factory=dict)
    seen_by: np.ndarray = field(default_factory=lambda: np.zeros((0, 0), dtype=bool))  # (N, K) track


def pycolmap_unavailable_reason() -> str | None:
    try:
        import pycolmap  # noqa: F401
    except ImportError as error:
        return f"pycolmap is not installed ({error}); pip install 'showroom_ros[sfm]'"
    return None


@contextlib.contextmanager
def _colmap_log_level(quiet: bool) -> Iterator[None]:
    """COLMAP logs every step at INFO to stderr; in a node that drowns the useful lines.

    Also to stderr only: glog's default also writes ``<prog>.<host>.<user>.log.<LEVEL>.<time>.<pid>`` files
    into the temporary folder, three more at every start of a process that runs COLMAP, never removed.
    """
    import pycolmap

    pycolmap.logging.logtostderr = True
    previous = pycolmap.logging.minloglevel
    if quiet:
        pycolmap.logging.minloglevel = 2  # errors only
    try:
        yield
    finally:
        pycolmap.logging.minloglevel = previous


def _rigid_from_pose(camera_to_world: np.ndarray) -> Any:
    import pycolmap

    world_to_camera = np.linalg.inv(np.asarray(camera_to_world, dtype=np.float64))
    return pycolmap.Rigid3d(world_to_camera[:3, :])


def _pose_from_rigid(cam_from_world: Any) -> np.ndarray:
    world_to_camera = np.eye(4)
    world_to_camera[:3, :] = np.asarray(cam_from_world.matrix())
    return np.linalg.inv(world_to_camera)


def _colmap_pinhole_params(intrinsics: CameraIntrinsics, width: int, height: int) -> list[float]:
    k = intrinsics.scaled(width, height) if (intrinsics.width, intrinsics.height) != (width, height) else intrinsics
    return [k.fx, k.fy, k.cx + COLMAP_PIXEL_OFFSET, k.cy + COLMAP_PIXEL_OFFSET]


def _intrinsics_from_colmap(camera: Any) -> CameraIntrinsics:
    """OpenCV-convention pinhole intrinsics of a COLMAP camera (distortion, if any, is ignored)."""
    matrix = np.asarray(camera.calibration_matrix(), dtype=np.float64)
    return CameraIntrinsics(
        float(matrix[0, 0]),
        float(matrix[1, 1]),
        float(matrix[0, 2]) - COLMAP_PIXEL_OFFSET,
        float(matrix[1, 2]) - COLMAP_PIXEL_OFFSET,
        int(camera.width),
        int(camera.height),
    )


EPIPOLAR_REFERENCE_WIDTH = 640
"""``SfMConfig.epipolar_max_error`` is in pixels of a 640 px wide image and scales with the width."""

_MATCH_BLOCK = 1024
"""Rows of the descriptor-similarity matrix computed at once: 1024 x 8192 float32 is 32 MiB."""


def _fundamental(
    pose_1: np.ndarray, pose_2: np.ndarray, k_1: np.ndarray, k_2: np.ndarray
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """F (x2^T F x1 = 0), E and the 3x4 cam2-from-cam1 of two camera-to-world poses and pixel matrices."""
    relative = np.linalg.inv(pose_2) @ pose_1
    rotation, translation = relative[:3, :3], relative[:3, 3]
    skew = np.array(
        [
            [0.0, -translation[2], translation[1]],
            [translation[2], 0.0, -translation[0]],
            [-translation[1], translation[0], 0.0],
        ]
    )
    essential = skew @ rotation
    fundamental = np.linalg.inv(k_2).T @ essential @ np.linalg.inv(k_1)
    return fundamental, essential, relative[:3, :]


def _top2(values: np.ndarray, axis: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Index of the largest value along ``axis``, that value, and the second largest."""
    best = np.argmax(values, axis=axis)
    first = np.take_along_axis(values, np.expand_dims(best, axis), axis).squeeze(axis)
    masked = values.copy()
    np.put_along_axis(masked, np.expand_dims(best, axis), -np.inf, axis)
    second = masked.max(axis=axis)
    return best, first, second


def epipolar_matches(
    keypoints_1: np.ndarray,
    descriptors_1: np.ndarray,
    keypoints_2: np.ndarray,
    descriptors_2: np.ndarray,
    fundamental: np.ndarray,
    max_error: float,
    max_ratio: float,
    max_distance: float,
) -> np.ndarray:
    """(M, 2) mutual nearest-neighbour SIFT matches among features that fit the known epipolar geometry.

    Candidates are pairs whose Sampson distance to ``fundamental`` is at most ``max_error`` pixels.
    Among them each feature's best match (descriptor angle, as COLMAP measures it) must be under
    ``max_distance`` radians, ``max_ratio`` times closer than its second best, in both directions.
    With the geometry known a true match competes only with the few features along its epipolar
    line, so the ratio test rarely rejects it; without poses it competes with the whole image.
    """
    if len(keypoints_1) == 0 or len(keypoints_2) == 0:
        return np.zeros((0, 2), dtype=np.uint32)
    d1 = descriptors_1.astype(np.float32)
    d2 = descriptors_2.astype(np.float32)
    d1 /= np.maximum(np.linalg.norm(d1, axis=1, keepdims=True), 1e-9)
    d2 /= np.maximum(np.linalg.norm(d2, axis=1, keepdims=True), 1e-9)
    # Lines in float64, then float32 for the (rows x columns) products: pixel-level precision is plenty.
    x1 = np.hstack([keypoints_1[:, :2], np.ones((len(keypoints_1), 1))]).astype(np.float64)
    x2 = np.hstack([keypoints_2[:, :2], np.ones((len(keypoints_2), 1))]).astype(np.float64)
    lines_in_2 = (x1 @ fundamental.T).astype(np.float32)  # F x1 per row
    lines_in_1 = (x2 @ fundamental).astype(np.float32)  # F^T x2 per row
    x2 = x2.astype(np.float32)
    norm_1 = (lines_in_2[:, :2] ** 2).sum(axis=1)
    norm_2 = (lines_in_1[:, :2] ** 2).sum(axis=1)
    columns = len(keypoints_2)
    col_best = np.zeros(columns, dtype=np.int64)
    col_first = np.full(columns, -np.inf, dtype=np.float32)
    col_second = np.full(columns, -np.inf, dtype=np.float32)
    row_best = np.zeros(len(keypoints_1), dtype=np.int64)
    row_first = np.full(len(keypoints_1), -np.inf, dtype=np.float32)
    row_second = np.full(len(keypoints_1), -np.inf, dtype=np.float32)
    for start in range(0, len(keypoints_1), _MATCH_BLOCK):
        rows = slice(start, start + _MATCH_BLOCK)
        algebraic = lines_in_2[rows] @ x2.T  # x2^T F x1
        sampson = algebraic**2 / (norm_1[rows, None] + norm_2[None, :])
        similarity = d1[rows] @ d2.T
        similarity[sampson > np.float32(max_error**2)] = -np.inf
        best, first, second = _top2(similarity, axis=1)
        row_best[rows], row_first[rows], row_second[rows] = best, first, second
        best, first, second = _top2(similarity, axis=0)
        better = first > col_first
        # Merge this block's column top-2 with the running top-2.
        new_second = np.where(better, np.maximum(col_first, second), np.maximum(col_second, first))
        col_best = np.where(better, best + start, col_best)
        col_first = np.where(better, first, col_first)
        col_second = new_second

    def passes(first: np.ndarray, second: np.ndarray) -> np.ndarray:
        angle_1 = np.arccos(np.clip(first, -1.0, 1.0))
        angle_2 = np.arccos(np.clip(second, -1.0, 1.0))  # -inf (no rival) -> pi
        return np.isfinite(first) & (angle_1 <= max_distance) & (angle_1 < max_ratio * angle_2)

    rows_ok = passes(row_first, row_second)
    cols_ok = passes(col_first, col_second)
    index = np.flatnonzero(rows_ok)
    partner = row_best[index]
    mutual = cols_ok[partner] & (col_best[partner] == index)
    return np.stack([index[mutual], partner[mutual]], axis=1).astype(np.uint32)


def _match_with_known_poses(database: Path, names: list[str], keyframes: list[Keyframe], config: SfMConfig) -> int:
    """Epipolar-constrained matches of every keyframe pair, written to COLMAP as verified geometry."""
    import pycolmap

    pairs = 0
    with pycolmap.Database.open(database) as db:
        images = {image.name: image for image in db.read_all_images()}
        ids = [images[name].image_id for name in names]
        k_matrices = [np.asarray(db.read_camera(images[n].camera_id).calibration_matrix()) for n in names]
        keypoints = [np.asarray(db.read_keypoints(i)) for i in ids]
        descriptors = [np.asarray(db.read_descriptors(i).data) for i in ids]
        for first in range(len(names)):
            for second in range(first + 1, len(names)):
                pose_1, pose_2 = keyframes[first].pose, keyframes[second].pose
                assert pose_1 is not None and pose_2 is not None
                fundamental, essential, relative = _fundamental(pose_1, pose_2, k_matrices[first], k_matrices[second])
                scale = keyframes[first].width / EPIPOLAR_REFERENCE_WIDTH
                matches = epipolar_matches(
                    keypoints[first],
                    descriptors[first],
                    keypoints[second],
                    descriptors[second],
                    fundamental,
                    config.epipolar_max_error * scale,
                    config.epipolar_max_ratio,
                    config.epipolar_max_distance,
                )
                if len(matches) < config.min_num_matches:
                    continue
                db.write_matches(ids[first], ids[second], matches)
                geometry = pycolmap.TwoViewGeometry(
                    config=pycolmap.TwoViewGeometryConfiguration.CALIBRATED,
                    inlier_matches=matches,
                    F=fundamental,
                    E=essential,
                    cam2_from_cam1=pycolmap.Rigid3d(relative),
                )
                db.write_two_view_geometry(ids[first], ids[second], geometry)
                pairs += 1
    return pairs


def run_colmap(keyframes: Sequence[Keyframe], config: SfMConfig, progress: ProgressCallback) -> SfMResult:
    """Features, matches, then triangulation with known poses or incremental mapping (module docstring)."""
    import pycolmap

    keyframes = list(keyframes)
    timings: dict[str, float] = {}
    known_intrinsics = all(k.intrinsics is not None for k in keyframes)
    use_poses = config.use_known_poses and known_intrinsics and all(k.pose is not None for k in keyframes)
    names = [f"keyframe_{index:03d}.png" for index in range(len(keyframes))]
    pycolmap.set_random_seed(config.seed)
    with scratch_directory("showroom_sfm_") as root, _colmap_log_level(config.quiet):
        images = root / "images"
        images.mkdir()
        database = root / "database.db"
        started = time.perf_counter()
        for name, keyframe in zip(names, keyframes, strict=True):
            if not cv2.imwrite(str(images / name), cv2.cvtColor(keyframe.image, cv2.COLOR_RGB2BGR)):
                raise ReconstructionError(f"could not write a temporary image under {images}")
        timings["write_images"] = time.perf_counter() - started

        progress(0.1, "SfM: extracting SIFT features")
        started = time.perf_counter()
        reader = pycolmap.ImageReaderOptions()
        same_size = len({(k.width, k.height) for k in keyframes}) == 1
        if known_intrinsics:
            reader.camera_model = "PINHOLE"
            camera_mode = pycolmap.CameraMode.PER_IMAGE
        else:
            camera_mode = pycolmap.CameraMode.SINGLE if same_size else pycolmap.CameraMode.PER_IMAGE
        extraction = pycolmap.FeatureExtractionOptions()
        extraction.sift.max_num_features = config.max_num_features
        extraction.sift.first_octave = config.first_octave
        extraction.sift.peak_threshold = config.peak_threshold
        extraction.sift.domain_size_pooling = config.domain_size_pooling
        extraction.sift.estimate_affine_shape = config.estimate_affine_shape
        extraction.num_threads = config.num_threads
        pycolmap.extract_features(
            database,
            images,
            image_names=names,
            camera_mode=camera_mode,
            reader_options=reader,
            extraction_options=extraction,
            device=pycolmap.Device.cpu,
        )
        with pycolmap.Database.open(database) as db:
            image_ids = {image.name: image.image_id for image in db.read_all_images()}
            camera_of = {image.name: image.camera_id for image in db.read_all_images()}
            if known_intrinsics:
                for name, keyframe in zip(names, keyframes, strict=True):
                    camera = db.read_camera(camera_of[name])
                    assert keyframe.intrinsics is not None
                    camera.params = _colmap_pinhole_params(keyframe.intrinsics, keyframe.width, keyframe.height)
                    camera.has_prior_focal_length = True
                    db.update_camera(camera)
        timings["features"] = time.perf_counter() - started

        progress(0.3, "SfM: matching features between keyframes")
        started = time.perf_counter()
        if use_poses and config.epipolar_matching:
            verified_pairs = _match_with_known_poses(database, names, keyframes, config)
        else:
            matching = pycolmap.FeatureMatchingOptions()
            matching.num_threads = config.num_threads
            matching.guided_matching = config.guided_matching
            pycolmap.match_exhaustive(database, matching_options=matching, device=pycolmap.Device.cpu)
            with pycolmap.Database.open(database) as db:
                verified_pairs = int(db.num_verified_image_pairs())
        timings["matching"] = time.perf_counter() - started

        options = pycolmap.IncrementalPipelineOptions()
        options.random_seed = config.seed
        options.num_threads = config.num_threads
        options.min_num_matches = config.min_num_matches
        options.min_model_size = 2
        options.mapper.init_min_num_inliers = config.init_min_num_inliers
        options.mapper.abs_pose_min_num_inliers = config.abs_pose_min_num_inliers
        options.mapper.filter_max_reproj_error = config.max_reprojection_error
        options.triangulation.ignore_two_view_tracks = not config.keep_two_view_tracks
        options.triangulation.min_angle = config.min_triangulation_angle
        options.mapper.filter_min_tri_angle = config.min_triangulation_angle
        options.mapper.random_seed = config.seed
        options.triangulation.random_seed = config.seed
        if known_intrinsics:
            options.ba_refine_focal_length = False
            options.ba_refine_principal_point = False
            options.ba_refine_extra_params = False
        output = root / "model"
        output.mkdir()
        started = time.perf_counter()
        if use_poses:
            progress(0.5, "SfM: triangulating with the known keyframe poses")
            model = pycolmap.Reconstruction()
            with pycolmap.Database.open(database) as db:
                for camera in db.read_all_cameras():
                    model.add_camera_with_trivial_rig(camera)
            for name, keyframe in zip(names, keyframes, strict=True):
                image = pycolmap.Image(name=name, camera_id=camera_of[name], image_id=image_ids[name])
                model.add_image_with_trivial_frame(image, _rigid_from_pose(keyframe.pose))
            model = pycolmap.triangulate_points(model, database, images, output, options=options)
            mode = "triangulated with known poses"
            timings["triangulation"] = time.perf_counter() - started
        else:
            progress(0.5, "SfM: incremental mapping (no poses known)")
            models = pycolmap.incremental_mapping(database, images, output, options)
            timings["mapping"] = time.perf_counter() - started
            if not models:
                raise ReconstructionError(
                    f"SfM could not build a model from {len(keyframes)} keyframes ({verified_pairs} matched "
                    "keyframe pairs): too little overlap or texture. Give the keyframes poses (TF or a pose "
                    "topic), add depth, or configure learned model weights"
                )
            model = max(models.values(), key=lambda m: (m.num_reg_images(), m.num_points3D()))
            mode = "incremental mapping"
        return _collect(model, names, keyframes, mode, verified_pairs, timings)


def _collect(
    model: Any, names: list[str], keyframes: list[Keyframe], mode: str, pairs: int, timings: dict[str, float]
) -> SfMResult:
    index_of = {name: index for index, name in enumerate(names)}
    point_ids = list(model.point3D_ids())
    points = np.array([model.points3D[i].xyz for i in point_ids], dtype=np.float64).reshape(-1, 3)
    colors = np.array([model.points3D[i].color for i in point_ids], dtype=np.uint8).reshape(-1, 3)
    tracks = np.array([model.points3D[i].track.length() for i in point_ids], dtype=np.float32)
    row_of = {point_id: row for row, point_id in enumerate(point_ids)}
    seen_by = np.zeros((len(point_ids), len(keyframes)), dtype=bool)
    registered: list[tuple[int, np.ndarray, CameraIntrinsics]] = []
    observations: list[tuple[np.ndarray, np.ndarray] | None] = [None] * len(keyframes)
    for image in model.images.values():
        if not image.has_pose:
            continue
        index = index_of[image.name]
        pose = _pose_from_rigid(image.cam_from_world())
        registered.append((index, pose, _intrinsics_from_colmap(model.cameras[image.camera_id])))
        seen = [p for p in image.points2D if p.has_point3D()]
        seen_by[[row_of[p.point3D_id] for p in seen], index] = True
        if seen:
            pixels = np.array([p.xy for p in seen], dtype=np.float64) - COLMAP_PIXEL_OFFSET
            world = np.array([model.points3D[p.point3D_id].xyz for p in seen], dtype=np.float64)
            depth = (world - pose[:3, 3]) @ pose[:3, 2]
            observations[index] = (pixels, depth)
    registered.sort(key=lambda item: item[0])
    return SfMResult(
        points=points,
        colors=colors,
        track_lengths=tracks,
        camera_to_model=np.stack([pose for _, pose, _ in registered]) if registered else np.zeros((0, 4, 4)),
        registered=[index for index, _, _ in registered],
        intrinsics={index: k for index, _, k in registered},
        observations=observations,
        mode=mode,
        num_verified_pairs=pairs,
        timings=timings,
        seen_by=seen_by,
    )


class SfMBackend:
    """COLMAP structure from motion on the RGB keyframes (needs pycolmap, no weights, no depth)."""

    name = "sfm"

    def __init__(self, config: SfMConfig | None = None) -> None:
        self.config = config or SfMConfig()
        self.last_registration: RegistrationReport | None = None

    def unavailable_reason(self, keyframes: Sequence[Keyframe]) -> str | None:
        reason = pycolmap_unavailable_reason()
        if reason is not None:
            return reason
        if len(keyframes) < 2:
            return f"SfM needs at least 2 keyframes, got {len(keyframes)}"
        return None

    def reconstruct(self, keyframes: Sequence[Keyframe], progress: ProgressCallback) -> Reconstruction:
        keyframes = list(keyframes)
        result = run_colmap(keyframes, self.config, progress)
        if len(result.points) == 0 or len(result.registered) < 2:
            raise ReconstructionError(
                f"SfM ({result.mode}) produced {len(result.points)} points from {len(result.registered)} "
                f"placed keyframes ({result.num_verified_pairs} matched pairs): too little overlap or texture"
            )
        intrinsics = [keyframes[i].intrinsics or result.intrinsics[i] for i in result.registered]
        reconstruction = Reconstruction(
            points=result.points.astype(np.float32),
            colors=result.colors,
            confidence=result.track_lengths,
            camera_poses=result.camera_to_model,
            intrinsics=[k for k in intrinsics if k is not None],
            frame_id="colmap",
            metric=False,
            backend=self.name,
            timings=dict(result.timings),
            sparse=True,
            notes=[
                f"sparse result: {len(result.points)} SfM points from {len(result.registered)} keyframes "
                f"({result.mode}); {DENSE_HINT}"
            ],
        )
        started = time.perf_counter()
        if result.mode == "triangulated with known poses":
            # Already in the poses' frame, at their scale.
            reconstruction.frame_id, reconstruction.metric = "map", True
            self.last_registration = None
            progress(0.6, f"SfM: {len(result.points)} points triangulated with the known keyframe poses")
        else:
            reconstruction, report = register_to_keyframes(
                reconstruction, keyframes, result.registered, result.observations
            )
            self.last_registration = report
            progress(0.6, f"SfM: {len(result.registered)}/{len(keyframes)} keyframes placed; {report.summary()}")
        reconstruction.timings["registration"] = time.perf_counter() - started
        return reconstruction
