"""Accuracy of the RGB-D core on the bundled 5 redkitchen keyframes against a 20-frame reference.

Reference ("GT"): all 20 frames of ../shared/data/7scenes_redkitchen (depth K = 585, colour K = 525,
ground-truth KinectFusion poses) fused with the same back-projection at 1 cm and stride 1. It is the
best surface the sensor gives, so the numbers measure what fusion and meshing of only 5 views add
or lose, not the Kinect's own error.

For the fused 5-keyframe cloud and for screened-Poisson meshes (passes 1 and 2, octree depths 8 and 9,
a few density trims, with and without the distance trim) it prints:
  accuracy    mean / median / 90th percentile distance from each mesh vertex (or cloud point) to GT
  completion  fraction of GT points within 5 cm of the mesh (exact point-to-triangle distance)
  seconds     wall time of reconstruct_surface

Run from the repository root:  python benchmarks/bench_accuracy.py [--quick]
"""

from __future__ import annotations

import argparse
import os
import sys
import time
from pathlib import Path

import numpy as np
import open3d as o3d
from scipy.spatial import cKDTree

REPO_ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO_ROOT))

from showroom_ros.geometry.camera import CameraIntrinsics  # noqa: E402
from showroom_ros.io.datasets import load_frame_folder  # noqa: E402
from showroom_ros.reconstruction.result import TriangleMesh  # noqa: E402
from showroom_ros.reconstruction.rgbd import RGBDFusionConfig, fuse_rgbd  # noqa: E402
from showroom_ros.reconstruction.surface import SurfaceConfig, reconstruct_surface  # noqa: E402

SHARED_SCENE = REPO_ROOT.parent / "shared" / "data" / "7scenes_redkitchen"
COMPLETION_THRESHOLD_M = 0.05


def reference_cloud() -> np.ndarray:
    """All 20 shared frames fused at 1 cm with GT poses."""
    colour = CameraIntrinsics(525.0, 525.0, 320.0, 240.0, 640, 480)
    depth = CameraIntrinsics(585.0, 585.0, 320.0, 240.0, 640, 480)
    keyframes = load_frame_folder(SHARED_SCENE, intrinsics=colour, depth_intrinsics=depth, depth_scale=1000.0)
    fused = fuse_rgbd(keyframes, RGBDFusionConfig(voxel_size=0.01, pixel_stride=1))
    return fused.points.astype(np.float64)


def cloud_accuracy(points: np.ndarray, reference: cKDTree) -> np.ndarray:
    distances, _ = reference.query(points, workers=-1)
    return distances


def mesh_completion(mesh: TriangleMesh, reference: np.ndarray) -> float:
    scene = o3d.t.geometry.RaycastingScene()
    legacy = o3d.geometry.TriangleMesh(
        o3d.utility.Vector3dVector(mesh.vertices.astype(np.float64)),
        o3d.utility.Vector3iVector(mesh.triangles),
    )
    scene.add_triangles(o3d.t.geometry.TriangleMesh.from_legacy(legacy))
    distances = scene.compute_distance(o3d.core.Tensor(reference.astype(np.float32))).numpy()
    return float(np.mean(distances <= COMPLETION_THRESHOLD_M))


def summary(distances: np.ndarray) -> str:
    cm = distances * 100.0
    return f"{cm.mean():6.2f} {np.median(cm):6.2f} {np.quantile(cm, 0.9):6.2f}"


def main() -> int:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--quick", action="store_true", help="only depth 9, passes 1 and 2, trim 0.05")
    args = parser.parse_args()
    if not SHARED_SCENE.is_dir():
        print(f"reference scene not found: {SHARED_SCENE}", file=sys.stderr)
        return 2

    started = time.perf_counter()
    reference = reference_cloud()
    tree = cKDTree(reference)
    print(f"reference: {len(reference)} points from 20 frames ({time.perf_counter() - started:.1f} s)")

    keyframes = load_frame_folder(REPO_ROOT / "data" / "redkitchen")
    fused = fuse_rgbd(keyframes, RGBDFusionConfig())
    cloud_distances = cloud_accuracy(fused.points.astype(np.float64), tree)
    cloud_tree = cKDTree(fused.points.astype(np.float64))
    cloud_completion = float(np.mean(cloud_tree.query(reference, workers=-1)[0] <= COMPLETION_THRESHOLD_M))
    print(f"fused 5-keyframe cloud: {fused.num_points} points")
    print(
        "\n| input | passes | depth | density trim | distance trim (x spacing) | vertices "
        "| accuracy mean / median / p90 (cm) | completion (5 cm) | seconds |"
    )
    print("|---|---|---|---|---|---|---|---|---|")
    print(
        f"| fused cloud (points) | - | - | - | - | {fused.num_points} | {summary(cloud_distances)} "
        f"| {cloud_completion:.3f} | - |"
    )

    if args.quick:
        settings = [(9, 1, 0.05, 5.0), (9, 2, 0.05, 5.0)]
    else:
        settings = [(8, passes, trim, 5.0) for passes in (1, 2) for trim in (0.0, 0.05, 0.1)]
        settings += [(9, passes, trim, 5.0) for passes in (1, 2) for trim in (0.0, 0.02, 0.05, 0.1)]
        settings += [(9, passes, 0.05, 0.0) for passes in (1, 2)]
    for depth, passes, trim, distance_factor in settings:
        config = SurfaceConfig(
            depth=depth, passes=passes, density_quantile=trim, max_distance_factor=distance_factor
        )
        started = time.perf_counter()
        mesh = reconstruct_surface(fused.points, fused.colors, fused.camera_poses, config)
        seconds = time.perf_counter() - started
        distances = cloud_accuracy(mesh.vertices.astype(np.float64), tree)
        completion = mesh_completion(mesh, reference)
        print(
            f"| SPR | {passes} | {depth} | {trim:.2f} | {distance_factor:g} | {len(mesh.vertices)} "
            f"| {summary(distances)} | {completion:.3f} | {seconds:.2f} |",
            flush=True,
        )
    print(
        f"\nload average: {os.getloadavg()[0]:.2f} (other processes inflate the seconds, not the distances)"
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
