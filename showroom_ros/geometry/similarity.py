"""Similarity transforms ``x -> scale * rotation @ x + translation`` and their least-squares fit (Umeyama).

One class and one fit for every layer: the models align each view's local pointmap onto its global one
with them, and reconstruction places a whole reconstruction in the robot's map. The fields are
keyword-only, so no caller can swap scale and rotation by position (two earlier classes had opposite
field orders).
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np


class DegenerateGeometryError(ValueError):
    """The cameras or points do not determine the transform (too few, coincident, collinear, no depth)."""


def _frozen(array: np.ndarray) -> np.ndarray:
    array.setflags(write=False)
    return array


@dataclass(frozen=True, kw_only=True, eq=False)
class Similarity:
    """``x -> scale * rotation @ x + translation``: from a source frame to a target frame.

    ``Similarity()`` is the identity; ``Similarity(scale=2.0)`` only scales. The arrays are stored as
    read-only float64 copies, so a transform cannot change after it was checked. No ``==``: compare
    :attr:`matrix` with a tolerance instead.
    """

    scale: float = 1.0
    rotation: np.ndarray = field(default_factory=lambda: np.eye(3))  # (3, 3)
    translation: np.ndarray = field(default_factory=lambda: np.zeros(3))  # (3,)

    def __post_init__(self) -> None:
        rotation = np.array(self.rotation, dtype=np.float64)
        translation = np.array(self.translation, dtype=np.float64).reshape(-1)
        if rotation.shape != (3, 3) or translation.shape != (3,):
            raise ValueError(
                f"similarity needs a 3x3 rotation and a 3-vector, got {rotation.shape}, {translation.shape}"
            )
        if not (np.isfinite(self.scale) and self.scale > 0):
            raise ValueError(f"similarity scale must be a positive finite number, got {self.scale}")
        if not (np.all(np.isfinite(rotation)) and np.all(np.isfinite(translation))):
            raise ValueError("similarity rotation and translation must be finite")
        object.__setattr__(self, "scale", float(self.scale))
        object.__setattr__(self, "rotation", _frozen(rotation))
        object.__setattr__(self, "translation", _frozen(translation))

    @classmethod
    def from_rigid(cls, transform: np.ndarray, scale: float = 1.0) -> Similarity:
        """A rigid 4x4 transform, optionally scaled (applied as ``rigid(scale * x)``)."""
        transform = np.asarray(transform, dtype=np.float64)
        if transform.shape != (4, 4):
            raise ValueError(f"expected a 4x4 transform, got {transform.shape}")
        return cls(scale=scale, rotation=transform[:3, :3], translation=transform[:3, 3])

    @property
    def matrix(self) -> np.ndarray:
        """The 4x4 matrix ``[[s R, t], [0, 1]]``."""
        out = np.eye(4)
        out[:3, :3] = self.scale * self.rotation
        out[:3, 3] = self.translation
        return out

    def inverse(self) -> Similarity:
        """``x -> (R^T (x - t)) / s``; exact for an orthogonal ``rotation`` (a reflection included)."""
        inverse_rotation = self.rotation.T
        return Similarity(
            scale=1.0 / self.scale,
            rotation=inverse_rotation,
            translation=-(inverse_rotation @ self.translation) / self.scale,
        )

    def compose(self, first: Similarity) -> Similarity:
        """``self`` after ``first``: x -> self(first(x))."""
        return Similarity(
            scale=self.scale * first.scale,
            rotation=self.rotation @ first.rotation,
            translation=self.scale * self.rotation @ first.translation + self.translation,
        )

    def transform_points(self, points: np.ndarray) -> np.ndarray:
        """(N, 3) points in float64 (callers cast; float32 inputs would lose the 1e-6 accuracy)."""
        points = np.asarray(points, dtype=np.float64)
        if points.ndim != 2 or points.shape[1] != 3:
            raise ValueError(f"points must be (N, 3), got {points.shape}")
        return self.scale * points @ self.rotation.T + self.translation

    def transform_poses(self, camera_to_frame: np.ndarray) -> np.ndarray:
        """Camera-to-frame poses (K, 4, 4) in the target frame; they stay rigid (scale moves the centres)."""
        poses = np.asarray(camera_to_frame, dtype=np.float64)
        if poses.ndim != 3 or poses.shape[1:] != (4, 4):
            raise ValueError(f"poses must be (K, 4, 4), got {poses.shape}")
        out = np.repeat(np.eye(4)[None], len(poses), axis=0)
        out[:, :3, :3] = self.rotation @ poses[:, :3, :3]
        out[:, :3, 3] = self.transform_points(poses[:, :3, 3])
        return out


def spread_profile(points: np.ndarray) -> np.ndarray:
    """Singular values of the centred points / sqrt(N): RMS extent along the principal axes, largest first."""
    centred = points - points.mean(axis=0)
    return np.linalg.svd(centred, compute_uv=False) / np.sqrt(max(len(points), 1))


def _check_point_sets(source: np.ndarray, target: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    source = np.asarray(source, dtype=np.float64)
    target = np.asarray(target, dtype=np.float64)
    if source.ndim != 2 or source.shape[1] != 3 or source.shape != target.shape:
        raise ValueError(f"need two (N, 3) arrays of corresponding points, got {source.shape} and {target.shape}")
    if not (np.all(np.isfinite(source)) and np.all(np.isfinite(target))):
        raise ValueError("corresponding points must be finite (no NaN or inf)")
    return source, target


def umeyama(
    source: np.ndarray,
    target: np.ndarray,
    *,
    with_scale: bool = True,
    min_extent: float = 1e-9,
    min_planarity: float = 1e-3,
) -> Similarity:
    """Least-squares similarity taking ``source`` points onto ``target`` points (Umeyama 1991), in float64.

    Closed form: exact on noise-free data for any scale and rotation. The rotation is always proper
    (det +1), also when the data are mirrored. Refuses (with :class:`DegenerateGeometryError`) fewer
    than 3 points, points that coincide (RMS extent at most ``min_extent``), collinear points (second
    principal extent below ``min_planarity`` of the first; pass 0 where the rotation about the line
    does not matter, e.g. when the fit only moves those same points) and point sets that do not
    correspond (a best scale <= 0). Non-finite or mis-shaped input raises a plain ValueError.
    """
    source, target = _check_point_sets(source, target)
    count = len(source)
    if count < 3:
        raise DegenerateGeometryError(
            f"need at least 3 corresponding points for a similarity, got {count}: the rotation about "
            "the line through 2 points is unobservable"
        )
    for name, points in (("source", source), ("target", target)):
        extent = spread_profile(points)
        if extent[0] <= min_extent:
            raise DegenerateGeometryError(f"the {name} points all coincide (RMS extent {extent[0]:.3g})")
        if extent[1] < min_planarity * extent[0]:
            raise DegenerateGeometryError(
                f"the {name} points are collinear (extent ratio {extent[1] / extent[0]:.2g}): "
                "the rotation about their line is unobservable"
            )
    source_mean, target_mean = source.mean(axis=0), target.mean(axis=0)
    source_centred, target_centred = source - source_mean, target - target_mean
    covariance = target_centred.T @ source_centred / count
    u, singular, vt = np.linalg.svd(covariance)
    sign = np.ones(3)
    if np.linalg.det(u) * np.linalg.det(vt) < 0:
        sign[2] = -1.0
    rotation = u @ np.diag(sign) @ vt
    scale = 1.0
    if with_scale:
        source_variance = float((source_centred**2).sum() / count)
        scale = float((singular * sign).sum() / source_variance)
        if not scale > 0:
            raise DegenerateGeometryError(f"the point sets do not correspond (estimated scale {scale:.3g} <= 0)")
    translation = target_mean - scale * rotation @ source_mean
    return Similarity(scale=scale, rotation=rotation, translation=translation)


def trajectory_alignment(
    estimate: dict[int, np.ndarray], truth: dict[int, np.ndarray], with_scale: bool = False
) -> tuple[np.ndarray, float, int]:
    """ATE the usual way: the SE(3) (4x4; Sim(3) with ``with_scale``, its scale in the rotation block)
    taking the estimated camera positions onto the true ones over the stamps both have, the RMSE of what
    is left (m), and how many poses were compared. Fewer than 3: the identity and NaN."""
    stamps = sorted(set(estimate) & set(truth))
    if len(stamps) < 3:
        return np.eye(4), float("nan"), len(stamps)
    a = np.array([estimate[s][:3, 3] for s in stamps])
    b = np.array([truth[s][:3, 3] for s in stamps])
    fit = umeyama(a, b, with_scale=with_scale)
    T = np.eye(4)
    T[:3, :3], T[:3, 3] = fit.scale * fit.rotation, fit.translation
    error = np.linalg.norm(a @ T[:3, :3].T + T[:3, 3] - b, axis=1)
    return T, float(np.sqrt(np.mean(error**2))), len(stamps)
