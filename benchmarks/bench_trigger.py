"""Trigger -> ready to publish for the 5 demo RGB-D keyframes: seconds per stage and accuracy per surface option.

The clock starts when the decoded keyframes are handed to the pipeline (``fuse_rgbd`` then
``attach_mesh``, what ``ReconstructionPipeline.run`` does for the rgbd backend) and stops when the
messages are serialized: the mesh decimated for RViz (``decimate_mesh`` to 100k triangles, as the
node does) and turned into a MarkerArray, and the cloud into a PointCloud2 (``io/message_layout``,
no ROS needed). Merging into ``~/map`` is not included. Each option runs ``--repeats`` times and
the median of each stage is printed, with the total's median (not the sum of medians).

Accuracy is the docs/surface.md metric against the 20-frame reference fusion of
``../shared/data/7scenes_redkitchen``: distance from each mesh vertex to the reference (mean /
median / p90, cm) and completion (fraction of reference points within 5 cm of the mesh).

Options: screened Poisson at depth 9 (the old default) and 8, the depth a scene-size rule picks,
fewer points into Poisson (voxel downsampling), one Poisson thread instead of all, cheaper
normals, no outlier removal, and TSDF marching cubes from the depth images at 10 / 8 / 7 mm.

Run from the repository root:  nice -n 5 python -P benchmarks/bench_trigger.py [--repeats 3] [--only tsdf-8mm]
"""

from __future__ import annotations

import argparse
import math
import os
import statistics
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass, field, replace
from pathlib import Path

import numpy as np
import open3d as o3d
from scipy.spatial import cKDTree

REPO_ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO_ROOT))

from showroom_ros.capture.keyframes import Keyframe  # noqa: E402
from showroom_ros.geometry.camera import CameraIntrinsics  # noqa: E402
from showroom_ros.io.datasets import load_frame_folder  # noqa: E402
from showroom_ros.io.message_layout import cloud_cdr, mesh_markers_cdr  # noqa: E402
from showroom_ros.reconstruction.result import Reconstruction, TriangleMesh  # noqa: E402
from showroom_ros.reconstruction.rgbd import RGBDFusionConfig, fuse_rgbd  # noqa: E402
from showroom_ros.reconstruction.surface import SurfaceConfig, attach_mesh, decimate_mesh  # noqa: E402

SHARED_SCENE = REPO_ROOT.parent / "shared" / "data" / "7scenes_redkitchen"
COMPLETION_M = 0.05
MESH_MAX_TRIANGLES = 100_000  # the node's mesh_max_triangles


@dataclass
class Option:
    """One configuration of the trigger path."""

    name: str
    fusion: RGBDFusionConfig = field(default_factory=RGBDFusionConfig)
    surface: SurfaceConfig = field(default_factory=SurfaceConfig)
    poisson_voxel: float = 0.0  # > 0: voxel-downsample the cloud before Poisson (the published cloud is not)


def scene_depth(points: np.ndarray, voxel: float, scale: float = 1.1) -> int:
    """Octree depth whose leaf is no larger than the fusion voxel: the 'depth adapted to the scene size' rule."""
    extent = float(np.max(points.max(axis=0) - points.min(axis=0)))
    return math.ceil(math.log2(scale * extent / voxel))


def options(adapted_depth: int) -> list[Option]:
    tsdf = {16: 0.016, 12: 0.012, 10: 0.01, 8: 0.008, 7: 0.007}
    return [
        Option("poisson-d9 (old default)"),
        Option("poisson-d8", surface=SurfaceConfig(depth=8)),
        Option(f"poisson-d{adapted_depth} (scene-size rule)", surface=SurfaceConfig(depth=adapted_depth)),
        Option("poisson-d9, 1.5 cm into Poisson", poisson_voxel=0.015),
        Option("poisson-d9, 2 cm into Poisson", poisson_voxel=0.02),
        Option("poisson-d9, 1 thread", surface=SurfaceConfig(threads=1)),
        Option("poisson-d9, normals max_nn 15", surface=SurfaceConfig(normal_max_neighbors=15)),
        Option("poisson-d9, no outlier removal", fusion=RGBDFusionConfig(outlier_neighbors=0)),
        *[
            Option(f"tsdf-{mm}mm", fusion=RGBDFusionConfig(tsdf_mesh=True, tsdf_voxel_size=size))
            for mm, size in tsdf.items()
        ],
    ]


def downsampled(reconstruction: Reconstruction, voxel: float) -> Reconstruction:
    cloud = o3d.geometry.PointCloud(o3d.utility.Vector3dVector(reconstruction.points.astype(np.float64)))
    cloud.colors = o3d.utility.Vector3dVector(reconstruction.colors.astype(np.float64) / 255.0)
    cloud = cloud.voxel_down_sample(voxel)
    points = np.asarray(cloud.points, dtype=np.float32)
    colors = np.clip(np.rint(np.asarray(cloud.colors) * 255.0), 0, 255).astype(np.uint8)
    return replace(reconstruction, points=points, colors=colors, confidence=np.ones(len(points), np.float32))


def one_run(keyframes: list[Keyframe], option: Option) -> tuple[dict[str, float], float, Reconstruction]:
    """Stage seconds, the total wall seconds and the result (mesh of the Poisson/TSDF option)."""
    started = time.perf_counter()
    fused = fuse_rgbd(keyframes, option.fusion)
    stages = dict(fused.timings)
    meshing_input = fused
    if option.poisson_voxel > 0:
        mark = time.perf_counter()
        meshing_input = downsampled(fused, option.poisson_voxel)
        stages["downsample"] = time.perf_counter() - mark
    meshed = attach_mesh(meshing_input, option.surface)
    result = replace(fused, mesh=meshed.mesh, notes=meshed.notes)
    stages.update({k: v for k, v in meshed.timings.items() if k not in fused.timings})
    mark = time.perf_counter()
    display = decimate_mesh(result.mesh, MESH_MAX_TRIANGLES) if result.mesh is not None else None
    stages["decimate"] = time.perf_counter() - mark
    mark = time.perf_counter()
    mesh_markers_cdr(display, 0, 0, "map")
    stages["markers"] = time.perf_counter() - mark
    mark = time.perf_counter()
    cloud_cdr(result.points, result.colors, 0, 0, "map")
    stages["cloud"] = time.perf_counter() - mark
    return stages, time.perf_counter() - started, result


def reference_cloud() -> np.ndarray:
    """All 20 shared frames fused at 1 cm, stride 1, ground-truth poses (as bench_accuracy.py)."""
    colour = CameraIntrinsics(525.0, 525.0, 320.0, 240.0, 640, 480)
    depth = CameraIntrinsics(585.0, 585.0, 320.0, 240.0, 640, 480)
    keyframes = load_frame_folder(SHARED_SCENE, intrinsics=colour, depth_intrinsics=depth, depth_scale=1000.0)
    return fuse_rgbd(keyframes, RGBDFusionConfig(voxel_size=0.01, pixel_stride=1)).points.astype(np.float64)


def accuracy(mesh: TriangleMesh, reference: np.ndarray, tree: cKDTree) -> str:
    """'mean / median / p90 (cm) | completion' of the docs/surface.md metric."""
    cm = tree.query(mesh.vertices.astype(np.float64), workers=-1)[0] * 100.0
    scene = o3d.t.geometry.RaycastingScene()
    scene.add_triangles(
        o3d.core.Tensor(mesh.vertices.astype(np.float32)), o3d.core.Tensor(mesh.triangles.astype(np.uint32))
    )
    near = scene.compute_distance(o3d.core.Tensor(reference.astype(np.float32))).numpy() <= COMPLETION_M
    return f"{cm.mean():.2f} / {np.median(cm):.2f} / {np.quantile(cm, 0.9):.2f} | {float(np.mean(near)):.3f}"


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--only", default="", help="run only the options whose name contains this text")
    args = parser.parse_args()
    keyframes = load_frame_folder(REPO_ROOT / "data" / "redkitchen")
    measure: Callable[[TriangleMesh], str] | None = None
    if SHARED_SCENE.is_dir():
        reference = reference_cloud()
        tree = cKDTree(reference)
        measure = lambda mesh: accuracy(mesh, reference, tree)  # noqa: E731
    else:
        print(f"reference scene not found ({SHARED_SCENE}): no accuracy column", file=sys.stderr)
    fused = fuse_rgbd(keyframes)
    adapted = scene_depth(fused.points, RGBDFusionConfig().voxel_size)
    print(
        f"open3d {o3d.__version__}, {os.cpu_count()} CPUs, load average {os.getloadavg()}, "
        f"{fused.num_points} fused points; median of {args.repeats} runs"
    )
    print(
        "\n| option | fusion + outliers | normals | Poisson / TSDF | trim + support | decimate + serialize "
        "| **total** | triangles | accuracy mean / median / p90 (cm) | completion |"
    )
    print("|---|---|---|---|---|---|---|---|---|---|")
    for option in options(adapted):
        if args.only and args.only not in option.name:
            continue
        runs = [one_run(keyframes, option) for _ in range(args.repeats)]

        def median(*keys: str, runs: list = runs) -> float:
            return statistics.median(sum(stages.get(k, 0.0) for k in keys) for stages, _, _ in runs)

        result = runs[0][2]
        mesh = result.mesh
        quality = measure(mesh) if measure is not None and mesh is not None else "- | -"
        print(
            f"| {option.name} | {median('backproject', 'fuse', 'outlier_removal'):.2f} | {median('normals'):.2f} "
            f"| {median('poisson', 'tsdf_mesh', 'downsample'):.2f} | {median('trim', 'support'):.2f} "
            f"| {median('decimate', 'markers', 'cloud'):.2f} | **{statistics.median(t for _, t, _ in runs):.2f}** "
            f"| {mesh.num_triangles if mesh is not None else 0} | {quality} |",
            flush=True,
        )
    print(f"\nload average after: {os.getloadavg()}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
