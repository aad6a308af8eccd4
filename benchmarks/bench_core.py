"""Seconds per stage of the RGB-D core on the bundled 5 redkitchen keyframes (no ROS).

Stages: decode (JPEG + 16-bit PNG), back-projection, voxel fusion, statistical outlier removal,
normals, screened Poisson, trimming, export (cloud/mesh PLY, GLB, PNG, NPZ), plus the keyframe
selector's cost per 640x480 frame. Each run is repeated and the median is printed. The machine's
load average and the process CPU time are printed too: other processes inflate wall time, and CPU
time (summed over threads) tells how much work the core itself did.

Run from the repository root:  python benchmarks/bench_core.py [--repeats 3] [--depth 9] [--passes 1]
"""

from __future__ import annotations

import argparse
import os
import statistics
import sys
import tempfile
import time
from pathlib import Path

REPO_ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO_ROOT))

import open3d as o3d  # noqa: E402

from showroom_ros.capture.keyframes import Keyframe, KeyframeSelector  # noqa: E402
from showroom_ros.io.datasets import load_frame_folder  # noqa: E402
from showroom_ros.io.export import save_reconstruction  # noqa: E402
from showroom_ros.reconstruction.rgbd import RGBDFusionConfig, fuse_rgbd  # noqa: E402
from showroom_ros.reconstruction.surface import SurfaceConfig, attach_mesh  # noqa: E402

STAGES = ("decode", "backproject", "fuse", "outlier_removal", "normals", "poisson", "trim", "export")


def one_run(
    fusion: RGBDFusionConfig, surface: SurfaceConfig, output: Path
) -> tuple[dict[str, float], int, int, float]:
    """Stage wall seconds, point and triangle counts, and the process CPU seconds of the whole run."""
    cpu_started = time.process_time()
    started = time.perf_counter()
    keyframes = load_frame_folder(REPO_ROOT / "data" / "redkitchen")
    decode = time.perf_counter() - started
    reconstruction = attach_mesh(fuse_rgbd(keyframes, fusion), surface)
    started = time.perf_counter()
    save_reconstruction(reconstruction, output, "bench")
    export = time.perf_counter() - started
    timings = {"decode": decode, **reconstruction.timings, "export": export}
    assert reconstruction.mesh is not None
    cpu = time.process_time() - cpu_started
    return timings, reconstruction.num_points, reconstruction.mesh.num_triangles, cpu


def selector_cost_ms(repeats: int = 300) -> float:
    keyframes = load_frame_folder(REPO_ROOT / "data" / "redkitchen", with_depth=False)
    selector = KeyframeSelector()
    reference = Keyframe(image=keyframes[0].image)
    started = time.perf_counter()
    for index in range(repeats):
        selector.evaluate(keyframes[1 + index % 4].image, reference=reference)
    return (time.perf_counter() - started) / repeats * 1000.0


def main() -> int:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--depth", type=int, default=SurfaceConfig().depth)
    parser.add_argument("--passes", type=int, default=SurfaceConfig().passes)
    parser.add_argument("--voxel", type=float, default=RGBDFusionConfig().voxel_size)
    parser.add_argument("--stride", type=int, default=RGBDFusionConfig().pixel_stride)
    args = parser.parse_args()
    fusion = RGBDFusionConfig(voxel_size=args.voxel, pixel_stride=args.stride)
    surface = SurfaceConfig(depth=args.depth, passes=args.passes)
    print(
        f"open3d {o3d.__version__}, {os.cpu_count()} CPUs, load average before: {os.getloadavg()[0]:.2f}; "
        f"voxel {args.voxel} m, stride {args.stride}, Poisson depth {args.depth}, passes {args.passes}"
    )
    print(f"keyframe selector: {selector_cost_ms():.2f} ms per 640x480 frame (mean of 300)")

    runs, cpu_seconds = [], []
    with tempfile.TemporaryDirectory() as folder:
        for _ in range(args.repeats):
            timings, points, triangles, cpu = one_run(fusion, surface, Path(folder))
            runs.append(timings)
            cpu_seconds.append(cpu)
    print(f"{points} fused points, {triangles} triangles; median of {args.repeats} runs")
    print("\n| stage | seconds |\n|---|---|")
    total = 0.0
    for stage in STAGES:
        values = [run.get(stage, 0.0) for run in runs]
        median = statistics.median(values)
        total += median
        print(f"| {stage} | {median:.2f} |")
    totals = [sum(run.get(stage, 0.0) for stage in STAGES) for run in runs]
    print(f"| **total** (sum of medians) | **{total:.2f}** |")
    print(f"\nper-run wall totals: {', '.join(f'{t:.2f}' for t in totals)} s")
    print(f"per-run process CPU: {', '.join(f'{t:.2f}' for t in cpu_seconds)} s (summed over threads)")
    print(f"load average after: {os.getloadavg()[0]:.2f}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
