"""Cloud fusion shared by the learned backends and the map: voxel averaging and a scale-free scene size.

Both need the same two operations on a reconstruction's points: merge the points that fall in one voxel
(weighted by confidence) and measure how far the scene is from its cameras, whatever its scale.
"""

from __future__ import annotations

import numpy as np

from showroom_ros.reconstruction.result import Reconstruction


def voxel_fuse(
    points: np.ndarray, colors: np.ndarray, confidence: np.ndarray, voxel_size: float
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """One point per occupied voxel: confidence-weighted mean position and colour, maximum confidence.

    Weighting by confidence lets a well-observed surface keep its place when a noisier reconstruction
    of the same area is merged; the maximum (not the sum) keeps confidences comparable over time.
    """
    if not (np.isfinite(voxel_size) and voxel_size > 0):
        raise ValueError(f"voxel_size must be a positive number, got {voxel_size}")
    points = np.asarray(points, dtype=np.float64)
    if len(points) == 0:
        return np.zeros((0, 3), np.float32), np.zeros((0, 3), np.uint8), np.zeros(0, np.float32)
    origin = points.min(axis=0)
    cells = np.floor((points - origin) / voxel_size).astype(np.int64)
    extent = cells.max(axis=0) + 1
    if float(np.prod(extent.astype(np.float64))) >= 2.0**62:
        raise ValueError(f"the cloud spans {extent} voxels of {voxel_size}: too many; raise the voxel size")
    keys = (cells[:, 0] * extent[1] + cells[:, 1]) * extent[2] + cells[:, 2]
    _, voxel_of_point = np.unique(keys, return_inverse=True)
    voxel_of_point = voxel_of_point.ravel()
    count = int(voxel_of_point.max()) + 1
    weights = np.maximum(np.asarray(confidence, dtype=np.float64), 1e-6)
    total = np.bincount(voxel_of_point, weights, minlength=count)
    fused_points = np.stack(
        [np.bincount(voxel_of_point, weights * points[:, a], minlength=count) for a in range(3)], axis=1
    )
    fused_colors = np.stack(
        [np.bincount(voxel_of_point, weights * colors[:, a], minlength=count) for a in range(3)], axis=1
    )
    best = np.full(count, -np.inf)
    np.maximum.at(best, voxel_of_point, np.asarray(confidence, dtype=np.float64))
    return (
        (fused_points / total[:, None]).astype(np.float32),
        np.clip(np.rint(fused_colors / total[:, None]), 0, 255).astype(np.uint8),
        best.astype(np.float32),
    )



def median_scene_depth(reconstruction: Reconstruction) -> float:
    """Median distance from the cameras to the points in front of them: a scale-free size of the scene.

    Two reconstructions of the same room seen from similar distances have similar values, which is what
    brings a non-metric reconstruction to roughly the map's scale before feature matching.
    """
    points = np.asarray(reconstruction.points, dtype=np.float64)
    depths = []
    for pose in np.asarray(reconstruction.camera_poses, dtype=np.float64).reshape(-1, 4, 4):
        z = (points - pose[:3, 3]) @ pose[:3, 2]
        depths.append(z[z > 0])
    if not depths or sum(len(d) for d in depths) == 0:
        centre = points.mean(axis=0) if len(points) else np.zeros(3)
        return float(np.median(np.linalg.norm(points - centre, axis=1))) if len(points) else 1.0
    return float(np.median(np.concatenate(depths)))
