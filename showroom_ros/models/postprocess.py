"""Fast3R post-processing: focal length, camera poses by PnP-RANSAC, local->global alignment, points.

This follows upstream's ``MultiViewDUSt3RLitModule`` helpers (ARCHITECTURE.md §6):

* focal (``first_view_from_global_head``): Weiszfeld fit of ``p = f * (X/Z, Y/Z)`` on view 0's global
  pointmap, over pixels at or above the 10% confidence quantile, principal point at (W/2, H/2);
* poses: per view, OpenCV ``solvePnPRansac`` (SQPnP, 100 iterations, 5 px) between the global pointmap
  and the pixel grid, over pixels with conf > 1; camera-to-world in view 0's camera frame, identity and
  focal ``None`` on failure;
* alignment: an Umeyama similarity (:func:`showroom_ros.geometry.similarity.umeyama`) from each view's
  local pointmap to its global one.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence

import cv2
import numpy as np
import torch

from showroom_ros.geometry.similarity import DegenerateGeometryError, Similarity, umeyama

Outputs = Sequence[Mapping[str, torch.Tensor]]


def pixel_grid(height: int, width: int) -> np.ndarray:
    """(H, W, 2) float32 (u, v) = (column, row) of every pixel."""
    v, u = np.mgrid[0:height, 0:width]
    return np.stack((u, v), axis=-1).astype(np.float32)


def estimate_focal(
    pts3d: torch.Tensor, conf: torch.Tensor, min_conf_quantile: float = 0.10, iterations: int = 100
) -> float:
    """Focal (pixels) of the camera that sees ``pts3d`` (H, W, 3, its own frame) at the pixel grid.

    Weiszfeld iterations make the fit robust to outliers; the result is clamped at 0 (a negative focal
    means the pointmap is not a camera view, and PnP then fails), as upstream does.
    """
    pts3d = torch.as_tensor(pts3d).detach().float().cpu()
    conf = torch.as_tensor(conf).detach().float().cpu()
    height, width = conf.shape
    mask = conf >= torch.quantile(conf.flatten(), min_conf_quantile)
    rows, cols = torch.meshgrid(torch.arange(height), torch.arange(width), indexing="ij")
    pixels = torch.stack((cols - width / 2, rows - height / 2), dim=-1).float()[mask]
    points = pts3d[mask]
    ray = (points[:, :2] / points[:, 2:3]).nan_to_num(nan=0.0, posinf=0.0, neginf=0.0)
    dot_ray_px = (ray * pixels).sum(dim=-1)
    dot_ray_ray = ray.square().sum(dim=-1)
    focal = dot_ray_px.mean() / dot_ray_ray.mean()
    for _ in range(iterations):
        residual = (pixels - focal * ray).norm(dim=-1)
        weights = residual.clip(min=1e-8).reciprocal()
        focal = (weights * dot_ray_px).mean() / (weights * dot_ray_ray).mean()
    value = float(focal.clip(min=0))
    return value if np.isfinite(value) else 0.0


def solve_pose_pnp(
    pts3d: np.ndarray,
    conf: np.ndarray,
    focal: float,
    iterations: int = 100,
    reprojection_error: float = 5.0,
) -> tuple[np.ndarray | None, int]:
    """Camera-to-world (4, 4) float32 of one view from its world-frame pointmap, and the inlier count.

    Returns (None, 0) when fewer than 4 pixels have conf > 1, the focal is not positive, or RANSAC fails.
    """
    height, width = conf.shape
    mask = conf > 1.0
    if int(mask.sum()) < 4 or not focal > 0:
        return None, 0
    object_points = np.ascontiguousarray(pts3d[mask], dtype=np.float32)
    image_points = np.ascontiguousarray(pixel_grid(height, width)[mask])
    camera = np.array([[focal, 0, width / 2], [0, focal, height / 2], [0, 0, 1]], dtype=np.float64)
    try:
        success, rvec, tvec, inliers = cv2.solvePnPRansac(
            object_points,
            image_points,
            camera,
            None,
            iterationsCount=iterations,
            reprojectionError=reprojection_error,
            flags=cv2.SOLVEPNP_SQPNP,
        )
    except cv2.error:
        return None, 0
    if not success or inliers is None:
        return None, 0
    world_to_camera = np.eye(4, dtype=np.float32)
    world_to_camera[:3, :3] = cv2.Rodrigues(rvec)[0]
    world_to_camera[:3, 3] = tvec.reshape(3)
    return np.linalg.inv(world_to_camera), len(inliers)


def estimate_poses(
    outputs: Outputs,
    niter_pnp: int = 100,
    focal_method: str = "first_view_from_global_head",
    reprojection_error: float = 5.0,
) -> tuple[list[list[np.ndarray]], list[list[float | None]]]:
    """Camera-to-world poses (in view 0's camera frame) and focals for every batch element and view.

    Returns ``poses[b][v]`` (4, 4) float32 and ``focals[b][v]`` (None where PnP failed, with an identity
    pose), like upstream's ``estimate_camera_poses``. ``focal_method`` is ``first_view_from_global_head``
    (one Weiszfeld focal from view 0, shared) or ``individual`` (per view, the best of 100 focals
    geometrically spaced in [S/2, 3S] by RANSAC inlier count, S = max(H, W)).
    """
    if focal_method not in ("first_view_from_global_head", "individual"):
        raise ValueError(f"unknown focal_method {focal_method!r}")
    if len(outputs) == 0:
        raise ValueError("no views to estimate poses for")
    global_pts = [_numpy(view["pts3d_in_other_view"]) for view in outputs]
    global_conf = [_numpy(view["conf"]) for view in outputs]
    batch = global_pts[0].shape[0]
    all_poses: list[list[np.ndarray]] = []
    all_focals: list[list[float | None]] = []
    for b in range(batch):
        poses, focals = [], []
        shared_focal = None
        if focal_method == "first_view_from_global_head":
            shared_focal = estimate_focal(outputs[0]["pts3d_in_other_view"][b], outputs[0]["conf"][b])
        for v in range(len(outputs)):
            pts, conf = global_pts[v][b], global_conf[v][b]
            if shared_focal is not None:
                pose, _ = solve_pose_pnp(pts, conf, shared_focal, niter_pnp, reprojection_error)
                focal: float | None = shared_focal
            else:
                pose, focal = _best_focal_pose(pts, conf, niter_pnp, reprojection_error)
            if pose is None:
                poses.append(np.eye(4, dtype=np.float32))
                focals.append(None)
            else:
                poses.append(pose)
                focals.append(focal)
        all_poses.append(poses)
        all_focals.append(focals)
    return all_poses, all_focals


def _best_focal_pose(
    pts: np.ndarray, conf: np.ndarray, iterations: int, reprojection_error: float
) -> tuple[np.ndarray | None, float | None]:
    size = max(conf.shape)
    best: tuple[np.ndarray | None, float | None, int] = (None, None, 0)
    for focal in np.geomspace(size / 2, size * 3, 100):
        pose, inliers = solve_pose_pnp(pts, conf, float(focal), iterations, reprojection_error)
        if pose is not None and inliers > best[2]:
            best = (pose, float(focal), inliers)
    return best[0], best[1]


def align_local_to_global(
    outputs: Outputs, min_conf_thr_percentile: float = 0.0
) -> tuple[list[torch.Tensor], list[list[Similarity]]]:
    """Each view's local pointmap mapped into view 0's frame by a similarity fitted to its global map.

    Pixels with global conf at or above the given percentile are used (fewer than 3: all pixels). Where
    they cannot fix a similarity (fewer than 3 pixels, coincident points, no positive scale) the view
    keeps its local frame (identity); collinear points are fitted, as only those points move. Returns
    aligned (B, H, W, 3) float32 tensors per view and the similarities [v][b].
    """
    aligned_views, similarities = [], []
    for index, view in enumerate(outputs):
        if "pts3d_local" not in view:
            raise ValueError(f"view {index} has no 'pts3d_local': this model has no local head")
        local = view["pts3d_local"].detach().float().cpu()
        glob = view["pts3d_in_other_view"].detach().float().cpu()
        conf = view["conf"].detach().float().cpu()
        aligned, fits = [], []
        for b in range(local.shape[0]):
            flat_conf = conf[b].flatten()
            mask = flat_conf >= torch.quantile(flat_conf, min_conf_thr_percentile / 100.0)
            if int(mask.sum()) < 3:
                mask = torch.ones_like(mask)
            src, dst = local[b].reshape(-1, 3), glob[b].reshape(-1, 3)
            try:
                fit = umeyama(src[mask].numpy(), dst[mask].numpy(), min_planarity=0.0)
            except DegenerateGeometryError:
                fit = Similarity()
            moved = fit.transform_points(src.double().numpy())
            aligned.append(torch.from_numpy(moved.astype(np.float32)).reshape(local[b].shape))
            fits.append(fit)
        aligned_views.append(torch.stack(aligned))
        similarities.append(fits)
    return aligned_views, similarities


def confident_mask(
    conf: np.ndarray, percentile: float | None = None, threshold: float | None = None
) -> np.ndarray:
    """Boolean mask of pixels kept: conf >= the view's own percentile and/or >= an absolute threshold."""
    keep = np.isfinite(conf)
    if percentile is not None and percentile > 0:
        keep &= conf >= np.percentile(conf, percentile)
    if threshold is not None:
        keep &= conf >= threshold
    return keep


def _numpy(tensor: torch.Tensor) -> np.ndarray:
    return tensor.detach().float().cpu().numpy()
