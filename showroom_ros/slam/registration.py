"""How one frame is placed against another: ORB matches + PnP RANSAC on the target's depth (a global
guess that needs no prior), refined by small_gicp's GICP on the depth clouds, and judged.

Tracking, local edges, loop closures and relocalisation all use this one function, so "verified"
means the same everywhere: enough PnP inliers, enough cloud overlap, a small metric error, a well-
conditioned GICP (a blank wall slides), and PnP and GICP agreeing.
"""

from __future__ import annotations

from dataclasses import dataclass

import cv2
import numpy as np
import small_gicp

from showroom_ros.slam.config import SlamConfig
from showroom_ros.slam.frames import SlamFrame

_MATCHER = cv2.BFMatcher(cv2.NORM_HAMMING)
MIN_CONDITION = 1e-4  # smallest / largest GICP Hessian eigenvalue: below it the fit is degenerate
GEOMETRY_ONLY_FITNESS = 0.65  # depth-only tracking (no feature agreement) needs more overlap ...
GEOMETRY_ONLY_RMSE = 0.02  # ... and a smaller error (m)


@dataclass
class Registration:
    """``source`` placed in ``target``'s camera frame, and how much to believe it."""

    T_target_source: np.ndarray
    pnp_inliers: int
    fitness: float  # share of the source cloud within the correspondence distance
    rmse: float  # m, over those inliers
    conditioning: float
    reason: str = ""  # why it is not accepted; "" when it is

    @property
    def accepted(self) -> bool:
        return not self.reason


def match(source: SlamFrame, target: SlamFrame, ratio: float = 0.8) -> tuple[np.ndarray, np.ndarray]:
    """Indices (source, target) of ORB matches passing Lowe's ratio test, target keypoints with depth."""
    if len(source.descriptors) < 2 or len(target.descriptors) < 2:
        return np.zeros(0, int), np.zeros(0, int)
    pairs = _MATCHER.knnMatch(source.descriptors, target.descriptors, k=2)
    src, tgt = [], []
    for pair in pairs:
        if len(pair) == 2 and pair[0].distance < ratio * pair[1].distance:
            src.append(pair[0].queryIdx)
            tgt.append(pair[0].trainIdx)
    src_idx, tgt_idx = np.asarray(src, int), np.asarray(tgt, int)
    has_depth = np.isfinite(target.points[tgt_idx, 2]) if len(tgt_idx) else np.zeros(0, bool)
    return src_idx[has_depth], tgt_idx[has_depth]


def pnp_guess(source: SlamFrame, target: SlamFrame, min_inliers: int) -> tuple[np.ndarray | None, int]:
    """T_target_source from target 3D points and source pixels (cv2.solvePnPRansac), and its inliers."""
    src_idx, tgt_idx = match(source, target)
    if len(src_idx) < max(6, min_inliers):
        return None, len(src_idx)
    ok, rvec, tvec, inliers = cv2.solvePnPRansac(
        target.points[tgt_idx].astype(np.float64),
        source.keypoints[src_idx].astype(np.float64),
        source.K,
        None,
        iterationsCount=200,
        reprojectionError=3.0,
        confidence=0.999,
        flags=cv2.SOLVEPNP_EPNP,
    )
    count = 0 if inliers is None else len(inliers)
    if not ok or count < min_inliers:
        return None, count
    T_source_target = np.eye(4)
    T_source_target[:3, :3] = cv2.Rodrigues(rvec)[0]
    T_source_target[:3, 3] = tvec.ravel()
    return np.linalg.inv(T_source_target), count


def _rotation_deg(T: np.ndarray) -> float:
    return float(np.degrees(np.arccos(np.clip((np.trace(T[:3, :3]) - 1) / 2, -1.0, 1.0))))


def refine(
    source: SlamFrame, target: SlamFrame, init_T_target_source: np.ndarray, max_correspondence: float
) -> tuple[np.ndarray, float, float, float]:
    """GICP (small_gicp) from a guess: (T_target_source, fitness, rmse in m, Hessian conditioning)."""
    if source.cloud.size() < 30 or target.cloud.size() < 30:
        return init_T_target_source, 0.0, float("inf"), 0.0
    result = small_gicp.align(
        target.cloud,
        source.cloud,
        target.tree,
        init_T_target_source,
        registration_type="GICP",
        max_correspondence_distance=max_correspondence,
        max_iterations=30,
    )
    T = np.asarray(result.T_target_source)
    moved = (T[:3, :3] @ source.cloud_points.T).T + T[:3, 3]
    _, sq = target.tree.batch_nearest_neighbor_search(moved)
    sq = np.asarray(sq)
    inliers = sq <= max_correspondence**2
    fitness = float(inliers.mean()) if len(sq) else 0.0
    rmse = float(np.sqrt(sq[inliers].mean())) if inliers.any() else float("inf")
    eigen = np.linalg.eigvalsh(np.asarray(result.H))
    conditioning = float(eigen[0] / eigen[-1]) if eigen[-1] > 0 else 0.0
    return T, fitness, rmse, conditioning


def register(
    source: SlamFrame,
    target: SlamFrame,
    config: SlamConfig,
    prior_T_target_source: np.ndarray | None = None,
    min_inliers: int | None = None,
    min_fitness: float | None = None,
    max_rmse: float | None = None,
    geometry_only: bool = False,
) -> Registration:
    """Place ``source`` in ``target``: PnP first (its own guess), else the prior (tracking's constant
    velocity) when ``geometry_only`` allows it (too few feature matches: blur, little texture); then
    GICP; then the verdict. Without a prior, PnP is required."""
    min_inliers = config.min_pnp_inliers if min_inliers is None else min_inliers
    min_fitness = config.min_fitness if min_fitness is None else min_fitness
    guess, inliers = pnp_guess(source, target, min_inliers)
    if guess is None and (prior_T_target_source is None or not geometry_only):
        reason = f"{inliers} feature matches agree (need {min_inliers})"
        return Registration(
            np.eye(4) if prior_T_target_source is None else prior_T_target_source, inliers, 0, 0, 0, reason
        )
    start = guess if guess is not None else prior_T_target_source
    T, fitness, rmse, conditioning = refine(source, target, start, config.max_correspondence)
    step = np.linalg.inv(start) @ T
    if guess is None:  # depth alone, from the motion prior: held to a stricter standard
        min_fitness = max(min_fitness, GEOMETRY_ONLY_FITNESS)
        max_rmse = GEOMETRY_ONLY_RMSE if max_rmse is None else min(max_rmse, GEOMETRY_ONLY_RMSE)
    reason = ""
    if conditioning < MIN_CONDITION:
        reason = f"geometry is degenerate (a plane or too little depth; conditioning {conditioning:.1e})"
    elif fitness < min_fitness:
        reason = f"depth overlap {fitness:.2f} (need {min_fitness:.2f})"
    elif max_rmse is not None and rmse > max_rmse:
        reason = f"depth error {rmse * 100:.1f} cm (max {max_rmse * 100:.1f})"
    elif np.linalg.norm(step[:3, 3]) > 0.1 or _rotation_deg(step) > 10.0:
        reason = "features and depth disagree" if guess is not None else "depth alone moved too far from the motion"
    return Registration(T, inliers, fitness, rmse, conditioning, reason)
