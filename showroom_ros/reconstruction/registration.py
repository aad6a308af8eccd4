"""Putting an RGB-only reconstruction where the robot is: similarity alignment, scale from depth.

Learned models and SfM return cameras and points in a frame of their own (Fast3R: view 0's camera,
arbitrary scale). A robot needs them in ``map`` in metres. This module estimates the similarity
(scale, rotation, translation) that takes the predicted cameras onto the keyframe poses known from TF
or a pose topic (Umeyama on the camera centres, with the camera orientations where the centres
alone cannot fix the rotation), measures scale from depth images when there are any, and applies
the result to a :class:`~showroom_ros.reconstruction.result.Reconstruction`. With neither poses nor depth
the result stays in a ``showroom`` frame anchored at the first keyframe's camera, not metric, and
the report says so. The transform and its fit are
:class:`~showroom_ros.geometry.similarity.Similarity` and :func:`~showroom_ros.geometry.similarity.umeyama`.

Everything here checks its geometry first: too few cameras, cameras that did not move, collinear
cameras and empty depth raise :class:`DegenerateGeometryError` with a message that says what to do.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field, replace

import numpy as np

from showroom_ros.capture.keyframes import Keyframe
from showroom_ros.geometry.poses import orthonormalize
from showroom_ros.geometry.similarity import DegenerateGeometryError, Similarity, spread_profile, umeyama
from showroom_ros.reconstruction.result import Reconstruction, TriangleMesh

ANCHORED_FRAME_ID = "showroom"
"""Frame of a reconstruction that could not be placed in the map: the first keyframe's camera."""

MAP_FRAME_ID = "map"
"""Placeholder for the node's ``map_frame`` (the node renames it)."""


# --- aligning predicted cameras to known poses ------------------------------------------------------


def _as_rotation(matrix: np.ndarray) -> np.ndarray:
    """Nearest proper rotation (SVD); sums of rotations and noisy poses are not orthonormal."""
    u, _, vt = np.linalg.svd(np.asarray(matrix, dtype=np.float64))
    correction = np.diag([1.0, 1.0, np.sign(np.linalg.det(u @ vt)) or 1.0])
    return u @ correction @ vt


@dataclass
class PoseAlignment:
    """A similarity from predicted camera poses to known ones, with how well it fits.

    ``method`` says which data fixed the rotation. ``centre_errors`` (target units, i.e. metres) and
    ``rotation_errors_deg`` are per camera after alignment. ``warnings`` lists degeneracies that were
    worked around (collinear cameras, 2 cameras) or poor fits.
    """

    similarity: Similarity
    num_cameras: int
    method: str
    centre_errors: np.ndarray
    rotation_errors_deg: np.ndarray
    warnings: list[str] = field(default_factory=list)

    @property
    def centre_rms(self) -> float:
        return float(np.sqrt(np.mean(self.centre_errors**2))) if len(self.centre_errors) else 0.0

    def summary(self) -> str:
        text = (
            f"{self.method} on {self.num_cameras} cameras: scale {self.similarity.scale:.4g}, "
            f"camera-centre RMS {self.centre_rms:.3f} m, "
            f"max rotation error {self.rotation_errors_deg.max():.1f} deg"
        )
        return text + "".join(f"; {warning}" for warning in self.warnings)


def _check_poses(poses: np.ndarray, name: str) -> np.ndarray:
    poses = np.asarray(poses, dtype=np.float64)
    if poses.ndim != 3 or poses.shape[1:] != (4, 4):
        raise ValueError(f"{name} must be (K, 4, 4) camera-to-frame poses, got shape {poses.shape}")
    if not np.all(np.isfinite(poses)):
        raise ValueError(f"{name} contain NaN or inf")
    # Tracked and ground-truth poses are often slightly non-orthonormal (det 0.9995 in 7-Scenes), which
    # would read as a degree of rotation error near the identity.
    return np.stack([orthonormalize(pose) for pose in poses]) if len(poses) else poses


def _rotation_from_orientations(source: np.ndarray, target: np.ndarray) -> np.ndarray:
    """Chordal mean of R_target_i R_source_i^T: the rotation turning the source cameras into the targets."""
    return _as_rotation(sum(t[:3, :3] @ s[:3, :3].T for s, t in zip(source, target, strict=True)))


def _rotation_angles_deg(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    relative = np.einsum("kji,kjl->kil", a[:, :3, :3], b[:, :3, :3])
    cosine = np.clip((np.trace(relative, axis1=1, axis2=2) - 1.0) / 2.0, -1.0, 1.0)
    return np.degrees(np.arccos(cosine))


def align_poses(
    predicted: np.ndarray,
    known: np.ndarray,
    fixed_scale: float | None = None,
    min_baseline: float = 0.05,
    collinear_ratio: float = 0.05,
    max_relative_rms: float = 0.25,
) -> PoseAlignment:
    """The similarity taking ``predicted`` camera-to-model poses onto ``known`` camera-to-map poses.

    With 3+ cameras spread in a plane or volume this is Umeyama on the camera centres. With 2 cameras,
    or centres on a line (second principal extent below ``collinear_ratio`` of the first; a robot
    driving straight), the centres cannot fix the rotation about that line, so the rotation comes
    from the camera orientations and the scale and translation from the centres; a warning says so.
    The scale needs a baseline: known centres spread less than ``min_baseline`` (map units, metres)
    raise :class:`DegenerateGeometryError` unless ``fixed_scale`` (e.g. from depth) is given, which
    also allows a single camera.
    """
    predicted = _check_poses(predicted, "predicted poses")
    known = _check_poses(known, "known poses")
    if len(predicted) != len(known):
        raise ValueError(f"{len(predicted)} predicted poses but {len(known)} known poses: they must pair up")
    count = len(known)
    if fixed_scale is not None and not (np.isfinite(fixed_scale) and fixed_scale > 0):
        raise ValueError(f"fixed_scale must be positive, got {fixed_scale}")
    if count == 0 or (count < 2 and fixed_scale is None):
        raise DegenerateGeometryError(
            f"need poses of at least 2 keyframes to fix position and scale, got {count}"
        )
    source_centres, target_centres = predicted[:, :3, 3], known[:, :3, 3]
    target_extent = spread_profile(target_centres) if count > 1 else np.zeros(3)
    source_extent = spread_profile(source_centres) if count > 1 else np.zeros(3)
    baseline = float(np.linalg.norm(target_centres - target_centres.mean(axis=0), axis=1).max())
    warnings: list[str] = []
    if fixed_scale is None:
        if baseline < min_baseline:
            raise DegenerateGeometryError(
                f"the keyframe cameras moved only {baseline:.3f} m (need {min_baseline:g} m): the scale "
                "cannot be recovered from their poses; move the camera sideways between keyframes "
                "or add depth"
            )
        if source_extent[0] <= 1e-9 * max(1.0, float(np.abs(source_centres).max())):
            raise DegenerateGeometryError(
                "the reconstruction put every camera at the same place: scale cannot be aligned to the poses"
            )

    planar = count >= 3 and target_extent[1] >= collinear_ratio * target_extent[0] > 0
    if planar and fixed_scale is None:
        similarity = umeyama(source_centres, target_centres, with_scale=True, min_planarity=0.0)
        method = "Umeyama on camera centres"
    else:
        if count == 2:
            warnings.append("only 2 posed keyframes: rotation taken from the camera orientations")
        elif count >= 3 and not planar:
            warnings.append(
                f"cameras are nearly collinear "
                f"(extent ratio {target_extent[1] / max(target_extent[0], 1e-12):.2g}): "
                "rotation taken from the camera orientations"
            )
        rotation = _rotation_from_orientations(predicted, known)
        if fixed_scale is not None:
            scale = float(fixed_scale)
            method = "camera orientations + centres, scale given"
        else:
            rotated = (source_centres - source_centres.mean(axis=0)) @ rotation.T
            offsets = target_centres - target_centres.mean(axis=0)
            scale = float((rotated * offsets).sum() / (rotated**2).sum())
            if not scale > 0:
                raise DegenerateGeometryError(
                    "the predicted and known camera positions do not agree "
                    "(their layouts are mirrored or opposite)"
                )
            method = "camera orientations + centres"
        translation = target_centres.mean(axis=0) - scale * rotation @ source_centres.mean(axis=0)
        similarity = Similarity(scale=scale, rotation=rotation, translation=translation)

    aligned = similarity.transform_poses(predicted)
    centre_errors = np.linalg.norm(aligned[:, :3, 3] - target_centres, axis=1)
    rotation_errors = _rotation_angles_deg(aligned, known)
    alignment = PoseAlignment(similarity, count, method, centre_errors, rotation_errors, warnings)
    if count > 1 and baseline > 0 and alignment.centre_rms > max_relative_rms * baseline:
        warnings.append(
            f"poor fit: camera-centre RMS {alignment.centre_rms:.3f} m is more than "
            f"{max_relative_rms:.0%} of the {baseline:.3f} m camera spread"
        )
    return alignment


# --- scale from depth -------------------------------------------------------------------------------


@dataclass
class DepthScale:
    """Metres per reconstruction unit, measured as the median ratio of sensor depth to predicted depth.

    ``spread`` is the median absolute deviation of the ratios relative to the median: 0.05 means the
    predicted depths agree with the sensor to about 5 % after scaling.
    """

    scale: float
    num_samples: int
    spread: float

    def summary(self) -> str:
        return (
            f"scale from depth {self.scale:.4g} m/unit ({self.num_samples} samples, spread {self.spread:.1%})"
        )


def depth_in_colour_pixels(keyframe: Keyframe, pixel_stride: int = 2) -> np.ndarray | None:
    """The keyframe's depth (metres, NaN invalid) resampled onto the colour image's pixel grid.

    A Kinect-style sensor's depth camera has its own intrinsics: its pixels are back-projected with
    them and projected into the colour camera (nearest surface wins). Without intrinsics the depth is
    taken as registered to the colour image. None when the keyframe has no depth.
    """
    if keyframe.depth is None:
        return None
    height, width = keyframe.height, keyframe.width
    if keyframe.intrinsics is None or keyframe.depth_intrinsics is None:
        import cv2

        if keyframe.depth.shape == (height, width):
            return keyframe.depth
        return cv2.resize(keyframe.depth, (width, height), interpolation=cv2.INTER_NEAREST)
    from showroom_ros.reconstruction.rgbd import backproject_rgbd

    points, _ = backproject_rgbd(
        keyframe.depth,
        keyframe.depth_intrinsics,
        keyframe.image,
        keyframe.intrinsics,
        min_depth=1e-3,
        max_depth=1e3,
        pixel_stride=pixel_stride,
    )
    colour_k = keyframe.intrinsics.scaled(width, height)
    out = np.full((height, width), np.inf, dtype=np.float32)
    if len(points):
        u = np.rint(points[:, 0] / points[:, 2] * colour_k.fx + colour_k.cx).astype(np.intp)
        v = np.rint(points[:, 1] / points[:, 2] * colour_k.fy + colour_k.cy).astype(np.intp)
        inside = (u >= 0) & (u < width) & (v >= 0) & (v < height)
        np.minimum.at(out, (v[inside], u[inside]), points[inside, 2])
    out[~np.isfinite(out)] = np.nan
    return out


def estimate_depth_scale(
    observations: Sequence[tuple[np.ndarray, np.ndarray] | None],
    depths: Sequence[np.ndarray | None],
    min_samples: int = 20,
) -> DepthScale:
    """Metres per unit from predicted depths at colour pixels and the sensor's depth there.

    ``observations[i]`` is ``(pixels (M, 2) as (u, v) in keyframe i's colour image, predicted z (M,)
    in keyframe i's camera frame, reconstruction units)`` or None; ``depths[i]`` is that keyframe's
    depth on the colour pixel grid (see :func:`depth_in_colour_pixels`) or None. The median ratio is
    robust to the few pixels where RGB and depth disagree (edges, unregistered sensors).
    """
    if len(observations) != len(depths):
        raise ValueError(f"{len(observations)} observation sets but {len(depths)} depth images")
    ratios: list[np.ndarray] = []
    for observation, depth in zip(observations, depths, strict=True):
        if observation is None or depth is None:
            continue
        pixels, predicted_z = (np.asarray(a, dtype=np.float64) for a in observation)
        if pixels.ndim != 2 or pixels.shape[1] != 2 or predicted_z.shape != (len(pixels),):
            raise ValueError(
                f"observations must be (M, 2) pixels and (M,) depths, got {pixels.shape}, {predicted_z.shape}"
            )
        u = np.rint(pixels[:, 0]).astype(np.intp)
        v = np.rint(pixels[:, 1]).astype(np.intp)
        inside = (u >= 0) & (u < depth.shape[1]) & (v >= 0) & (v < depth.shape[0]) & np.isfinite(predicted_z)
        inside &= predicted_z > 0
        measured = np.full(len(pixels), np.nan)
        measured[inside] = depth[v[inside], u[inside]]
        valid = inside & np.isfinite(measured) & (measured > 0)
        ratios.append(measured[valid] / predicted_z[valid])
    all_ratios = np.concatenate(ratios) if ratios else np.zeros(0)
    if len(all_ratios) < min_samples:
        raise DegenerateGeometryError(
            f"only {len(all_ratios)} pixels have both valid sensor depth and a reconstructed point in front "
            f"of the camera (need {min_samples}): cannot measure the scale from depth"
        )
    scale = float(np.median(all_ratios))
    spread = float(np.median(np.abs(all_ratios - scale)) / scale)
    return DepthScale(scale, len(all_ratios), spread)


# --- applying a registration -----------------------------------------------------------------------


def transform_reconstruction(
    reconstruction: Reconstruction, similarity: Similarity, frame_id: str, metric: bool
) -> Reconstruction:
    """A copy of ``reconstruction`` (points, cameras, mesh) moved by ``similarity`` into ``frame_id``."""
    mesh = reconstruction.mesh
    if mesh is not None:
        mesh = TriangleMesh(
            vertices=similarity.transform_points(mesh.vertices).astype(np.float32),
            triangles=mesh.triangles,
            vertex_colors=mesh.vertex_colors,
        )
    poses = reconstruction.camera_poses
    return replace(
        reconstruction,
        points=similarity.transform_points(reconstruction.points).astype(np.float32),
        camera_poses=similarity.transform_poses(poses) if len(poses) else np.asarray(poses, dtype=np.float64),
        mesh=mesh,
        frame_id=frame_id,
        metric=metric,
        timings=dict(reconstruction.timings),
    )


@dataclass
class RegistrationReport:
    """How a reconstruction was placed: frame, whether metric, the similarity used, and why."""

    frame_id: str
    metric: bool
    similarity: Similarity
    method: str
    pose_alignment: PoseAlignment | None = None
    depth_scale: DepthScale | None = None
    notes: list[str] = field(default_factory=list)

    def summary(self) -> str:
        parts = [
            f"{'metric' if self.metric else 'NOT metric (arbitrary scale)'} "
            f"in '{self.frame_id}': {self.method}"
        ]
        if self.pose_alignment is not None:
            parts.append(self.pose_alignment.summary())
        if self.depth_scale is not None:
            parts.append(self.depth_scale.summary())
        parts.extend(self.notes)
        return "; ".join(parts)


def register_to_keyframes(
    reconstruction: Reconstruction,
    keyframes: Sequence[Keyframe],
    camera_keyframes: Sequence[int] | None = None,
    depth_observations: Sequence[tuple[np.ndarray, np.ndarray] | None] | None = None,
    min_baseline: float = 0.05,
) -> tuple[Reconstruction, RegistrationReport]:
    """Move a reconstruction from its own frame into ``map`` at metric scale when the keyframes allow it.

    ``reconstruction.camera_poses[j]`` is the predicted camera-to-model pose of keyframe
    ``camera_keyframes[j]`` (default: j; a backend leaves out the views it could not pose).
    ``depth_observations[i]`` (per keyframe, see :func:`estimate_depth_scale`) enables scale from depth.
    In order of preference:

    1. 2+ cameras whose keyframes have known poses, with enough baseline: similarity from predicted
       to known poses (:func:`align_poses`) -> ``map``, metric. Depth, when present, is measured too
       and its agreement with the pose scale is reported.
    2. Depth: scale from depth; placed in ``map`` through the posed keyframes when there are any
       (1 is enough), else in ``showroom`` anchored at the first camera; metric.
    3. Neither: ``showroom`` frame anchored at the first camera, in the model's units, not metric.
    """
    keyframes = list(keyframes)
    predicted = np.asarray(reconstruction.camera_poses, dtype=np.float64).reshape(-1, 4, 4)
    indices = list(range(len(predicted))) if camera_keyframes is None else [int(i) for i in camera_keyframes]
    if len(indices) != len(predicted):
        raise ValueError(
            f"{len(predicted)} camera poses but {len(indices)} keyframe indices: they must pair up"
        )
    if len(set(indices)) != len(indices) or any(not 0 <= i < len(keyframes) for i in indices):
        raise ValueError(f"camera keyframe indices {indices} must be distinct and below {len(keyframes)}")
    if len(predicted) == 0:
        raise DegenerateGeometryError("the reconstruction has no cameras: nothing to register")
    posed = [j for j, i in enumerate(indices) if keyframes[i].pose is not None]
    known = np.stack([keyframes[indices[j]].pose for j in posed]) if posed else np.zeros((0, 4, 4))
    notes: list[str] = []
    if len(indices) < len(keyframes):
        missing = sorted(set(range(len(keyframes))) - set(indices))
        notes.append(f"keyframes {missing} could not be placed by the reconstruction")

    depth_scale: DepthScale | None = None
    if depth_observations is not None and any(k.depth is not None for k in keyframes):
        if len(depth_observations) != len(keyframes):
            raise ValueError(
                f"{len(depth_observations)} depth observation sets for {len(keyframes)} keyframes"
            )
        depths = [depth_in_colour_pixels(k) for k in keyframes]
        try:
            depth_scale = estimate_depth_scale(depth_observations, depths)
        except DegenerateGeometryError as error:
            notes.append(f"depth not used: {error}")

    pose_error: str | None = None
    if len(posed) >= 2:
        try:
            alignment = align_poses(predicted[posed], known, min_baseline=min_baseline)
        except DegenerateGeometryError as error:
            pose_error = str(error)
        else:
            if depth_scale is not None:
                ratio = depth_scale.scale / alignment.similarity.scale
                notes.append(f"depth scale / pose scale = {ratio:.3f}")
            method = f"aligned to {len(posed)} known keyframe poses"
            registered = transform_reconstruction(reconstruction, alignment.similarity, MAP_FRAME_ID, True)
            report = RegistrationReport(
                MAP_FRAME_ID, True, alignment.similarity, method, alignment, depth_scale
            )
            report.notes = notes
            return registered, report
    elif len(posed) == 1:
        pose_error = "only 1 keyframe has a pose (2 are needed to fix the scale)"

    if depth_scale is not None:
        if posed:
            alignment = align_poses(predicted[posed], known, fixed_scale=depth_scale.scale)
            if pose_error:
                notes.append(f"poses alone could not fix the scale: {pose_error}")
            method = f"scale from depth, placed through {len(posed)} known keyframe pose(s)"
            registered = transform_reconstruction(reconstruction, alignment.similarity, MAP_FRAME_ID, True)
            report = RegistrationReport(
                MAP_FRAME_ID, True, alignment.similarity, method, alignment, depth_scale
            )
            report.notes = notes
            return registered, report
        # Scale first, then make the (scaled) first camera the origin: x -> anchor(s x).
        scaling = Similarity(scale=depth_scale.scale)
        similarity = _anchor_at_first_camera(scaling.transform_poses(predicted)).compose(scaling)
        method = f"scale from depth; no keyframe poses, so anchored at keyframe {indices[0]}'s camera"
        registered = transform_reconstruction(reconstruction, similarity, ANCHORED_FRAME_ID, True)
        report = RegistrationReport(ANCHORED_FRAME_ID, True, similarity, method, None, depth_scale)
        report.notes = notes
        return registered, report

    if pose_error:
        notes.append(f"could not use the keyframe poses: {pose_error}")
    similarity = _anchor_at_first_camera(predicted)
    method = f"no usable poses or depth: anchored at keyframe {indices[0]}'s camera, scale arbitrary"
    registered = transform_reconstruction(reconstruction, similarity, ANCHORED_FRAME_ID, False)
    report = RegistrationReport(ANCHORED_FRAME_ID, False, similarity, method)
    report.notes = notes
    return registered, report


def _anchor_at_first_camera(predicted: np.ndarray) -> Similarity:
    """The rigid transform that makes the first camera's pose the identity (the ``showroom`` frame)."""
    if len(predicted) == 0:
        return Similarity()
    return Similarity.from_rigid(np.linalg.inv(predicted[0]))
