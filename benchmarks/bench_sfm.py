"""``sfm`` with known poses: points and their accuracy against ground-truth depth, per COLMAP configuration.

Run from the repository root (2 shared cores: ``nice``)::

    nice -n 5 python benchmarks/bench_sfm.py                       # every variant, group and size
    nice -n 5 python benchmarks/bench_sfm.py --variants current default --sizes 540
    nice -n 5 python benchmarks/bench_sfm.py --surface   # calibrate the mesh-support rule instead

Groups: the four wide-baseline 5-frame subsets of ../shared/data/7scenes_redkitchen
(suggested_subsets.txt), the 5 slambook2 dining-room frames, and the bundled data/redkitchen.
Each runs at full size (640x480) and downscaled to 540x405 (the issue's photos were 540x360; small
images are the hard case). The backend gets RGB, intrinsics and the ground-truth poses, never depth.

Two error metrics, in metres, per triangulated point:

* ``surface`` (the one the target uses): distance to the nearest point of the ground-truth surface,
  i.e. the depth images of the group's 5 keyframes back-projected with their poses (every 2nd pixel,
  points beyond 6 m dropped). This is the "accuracy" of multi-view stereo benchmarks (DTU,
  Tanks and Temples). It is not fooled by where SIFT puts its keypoints: on corners and depth edges,
  where a depth pixel a few pixels off lands on the background.
* ``ray``: the point is projected into every keyframe that observes it (its COLMAP track) with the
  ground-truth pose and the depth camera's intrinsics; the depth pixel it lands on is back-projected
  along the same ray, and the error is the median over those keyframes of |z - d| * |ray| / z. Strict:
  on 7-Scenes RGB and depth come from two unregistered sensors, and the poses are the depth camera's,
  so an edge point is often compared with the background behind it.

Medians and p90 are over points with at least one valid depth (``checked`` is that fraction, for the
ray metric). slambook2's poses are approximate (its README: 2.7-10 cm median depth disagreement
between neighbouring frames), so its numbers have a floor of several cm.
"""

from __future__ import annotations

import argparse
import os
import platform
import sys
import time
from dataclasses import replace
from pathlib import Path

import cv2
import numpy as np
from scipy.spatial import cKDTree

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from showroom_ros.backends.sfm import SfMBackend, SfMConfig, run_colmap  # noqa: E402
from showroom_ros.capture.keyframes import Keyframe  # noqa: E402
from showroom_ros.geometry.camera import CameraIntrinsics  # noqa: E402
from showroom_ros.io.datasets import load_frame_folder  # noqa: E402
from showroom_ros.reconstruction.pipeline import RGBDBackend  # noqa: E402
from showroom_ros.reconstruction.result import Reconstruction  # noqa: E402
from showroom_ros.reconstruction.surface import SurfaceConfig, reconstruct_surface, surface_support  # noqa: E402

SHARED = REPO.parent / "shared" / "data"
KITCHEN = SHARED / "7scenes_redkitchen"
DINING = SHARED / "slambook2_diningroom"
KITCHEN_RGB = CameraIntrinsics(525.0, 525.0, 320.0, 240.0, 640, 480)
KITCHEN_DEPTH = CameraIntrinsics(585.0, 585.0, 320.0, 240.0, 640, 480)
DINING_RGB = CameraIntrinsics(518.0, 519.0, 325.5, 253.5, 640, 480)
SMALL_WIDTH = 540

CURRENT = SfMConfig(epipolar_matching=False, peak_threshold=0.02 / 3, domain_size_pooling=False, epipolar_max_ratio=0.8)
"""The configuration before issue 14: COLMAP's exhaustive matcher with RANSAC verification."""

VARIANTS: dict[str, SfMConfig] = {
    "current": CURRENT,
    "guided": replace(CURRENT, guided_matching=True),
    "dsp+affine": replace(CURRENT, domain_size_pooling=True, estimate_affine_shape=True),
    "peak 0.004": replace(CURRENT, peak_threshold=0.004),
    "octave 0": replace(CURRENT, first_octave=0),
    "tri angle 0.5": replace(CURRENT, min_triangulation_angle=0.5),
    "epipolar 4px r0.8": replace(CURRENT, epipolar_matching=True),
    "epipolar 4px r0.9": replace(CURRENT, epipolar_matching=True, epipolar_max_ratio=0.9),
    "epipolar 2px r0.9": replace(CURRENT, epipolar_matching=True, epipolar_max_ratio=0.9, epipolar_max_error=2.0),
    "epipolar 8px r0.9": replace(CURRENT, epipolar_matching=True, epipolar_max_ratio=0.9, epipolar_max_error=8.0),
    "epipolar r0.9 dsp": replace(CURRENT, epipolar_matching=True, epipolar_max_ratio=0.9, domain_size_pooling=True),
    "epipolar r0.85 peak 0.004": replace(
        CURRENT, epipolar_matching=True, epipolar_max_ratio=0.85, peak_threshold=0.004
    ),
    "epipolar r0.8 peak 0.004 dsp": replace(
        CURRENT, epipolar_matching=True, peak_threshold=0.004, domain_size_pooling=True
    ),
    "epipolar r0.85 peak 0.004 dsp": replace(
        CURRENT, epipolar_matching=True, epipolar_max_ratio=0.85, peak_threshold=0.004, domain_size_pooling=True
    ),
    "epipolar r0.9 peak 0.004 dsp": replace(
        CURRENT, epipolar_matching=True, epipolar_max_ratio=0.9, peak_threshold=0.004, domain_size_pooling=True
    ),
    "default": SfMConfig(),
}


def groups() -> dict[str, list[Keyframe]]:
    """Ground-truth keyframes (with depth, for scoring) of every 5-frame group."""
    found: dict[str, list[Keyframe]] = {}
    if KITCHEN.is_dir():
        lines = (KITCHEN / "suggested_subsets.txt").read_text().splitlines()
        subsets = [line.split("[")[0].split() for line in lines if line.strip() and not line.startswith("#")]
        for number, names in enumerate(subsets, start=1):
            found[f"kitchen-{number}"] = load_frame_folder(
                KITCHEN, names=names, intrinsics=KITCHEN_RGB, depth_intrinsics=KITCHEN_DEPTH, depth_scale=1000.0
            )
    if DINING.is_dir():
        found["dining"] = load_frame_folder(DINING, intrinsics=DINING_RGB, depth_scale=1000.0)
    found["bundled"] = load_frame_folder(REPO / "data" / "redkitchen")
    return found


def rgb_only(keyframes: list[Keyframe], width: int | None) -> list[Keyframe]:
    """What the backend sees: RGB (downscaled to ``width``), intrinsics and pose, no depth."""
    out = []
    for keyframe in keyframes:
        image, k = keyframe.image, keyframe.intrinsics
        assert k is not None
        if width is not None and width != keyframe.width:
            height = round(keyframe.height * width / keyframe.width)
            image = cv2.resize(image, (width, height), interpolation=cv2.INTER_AREA)
            k = k.scaled(width, height)
        out.append(Keyframe(image=image, intrinsics=k, pose=keyframe.pose, stamp_ns=keyframe.stamp_ns))
    return out


def ground_truth_surface(truth: list[Keyframe], step: int = 2, max_depth: float = 6.0) -> cKDTree:
    """KD-tree of the group's depth images back-projected into the world with their poses."""
    clouds = []
    for keyframe in truth:
        assert keyframe.depth is not None and keyframe.pose is not None and keyframe.intrinsics is not None
        depth = keyframe.depth[::step, ::step]
        k = keyframe.depth_intrinsics or keyframe.intrinsics.scaled(keyframe.depth.shape[1], keyframe.depth.shape[0])
        v, u = np.mgrid[0 : keyframe.depth.shape[0] : step, 0 : keyframe.depth.shape[1] : step]
        valid = np.isfinite(depth) & (depth > 0) & (depth < max_depth)
        z = depth[valid].astype(np.float64)
        camera = np.stack([(u[valid] - k.cx) / k.fx * z, (v[valid] - k.cy) / k.fy * z, z], axis=1)
        clouds.append(camera @ keyframe.pose[:3, :3].T + keyframe.pose[:3, 3])
    return cKDTree(np.concatenate(clouds))


def point_errors(points: np.ndarray, seen_by: np.ndarray, truth: list[Keyframe]) -> tuple[np.ndarray, float]:
    """Per-point error in metres (module docstring) and the fraction of points that could be checked."""
    per_view = np.full(seen_by.shape, np.nan)
    for index, keyframe in enumerate(truth):
        assert keyframe.depth is not None and keyframe.pose is not None and keyframe.intrinsics is not None
        depth = keyframe.depth
        k = keyframe.depth_intrinsics or keyframe.intrinsics.scaled(depth.shape[1], depth.shape[0])
        rows = np.flatnonzero(seen_by[:, index])
        camera = (points[rows] - keyframe.pose[:3, 3]) @ keyframe.pose[:3, :3]
        z = camera[:, 2]
        front = z > 1e-3
        u = np.full(len(rows), -1)
        v = np.full(len(rows), -1)
        u[front] = np.rint(camera[front, 0] / z[front] * k.fx + k.cx).astype(int)
        v[front] = np.rint(camera[front, 1] / z[front] * k.fy + k.cy).astype(int)
        inside = front & (u >= 0) & (u < depth.shape[1]) & (v >= 0) & (v < depth.shape[0])
        measured = np.full(len(rows), np.nan)
        measured[inside] = depth[v[inside], u[inside]]
        ray = np.linalg.norm(camera, axis=1) / np.where(front, z, 1.0)
        per_view[rows, index] = np.abs(z - measured) * ray
    checked = np.any(np.isfinite(per_view), axis=1)
    errors = np.nanmedian(per_view[checked], axis=1) if checked.any() else np.zeros(0)
    return errors, float(checked.mean()) if len(checked) else 0.0


def _percentile(values: np.ndarray, q: float) -> float:
    return float(np.percentile(values, q)) if len(values) else float("nan")


def _quiet(fraction: float, stage: str) -> None:
    del fraction, stage


def calibrate_support(all_groups: dict[str, list[Keyframe]], threads: int) -> None:
    """Mesh support (surface.surface_support) of dense rgbd clouds vs sparse sfm clouds, per group."""
    config = SurfaceConfig()
    print("| group | cloud | points | triangles | support 2 cells | support 4 cells | support 8 cells |")
    print("|---|---|---:|---:|---:|---:|---:|")
    for group, truth in all_groups.items():
        clouds: list[tuple[str, Reconstruction]] = [("rgbd (depth)", RGBDBackend().reconstruct(truth, _quiet))]
        for name in ("current", "default"):
            for size in (640, SMALL_WIDTH):
                backend = SfMBackend(replace(VARIANTS[name], num_threads=threads))
                clouds.append((f"sfm {name} {size}", backend.reconstruct(rgb_only(truth, size), _quiet)))
        for label, cloud in clouds:
            mesh = reconstruct_surface(cloud.points, cloud.colors, cloud.camera_poses, config)
            support = [
                surface_support(mesh, cloud.points, cells, config.depth, config.poisson_scale) for cells in (2, 4, 8)
            ]
            print(
                f"| {group} | {label} | {cloud.num_points} | {mesh.num_triangles} | "
                + " | ".join(f"{value:.3f}" for value in support)
                + " |",
                flush=True,
            )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--variants", nargs="*", default=list(VARIANTS))
    parser.add_argument("--groups", nargs="*", default=None)
    parser.add_argument("--sizes", nargs="*", default=["640", str(SMALL_WIDTH)])
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--surface", action="store_true", help="calibrate the mesh-support rule instead")
    args = parser.parse_args()
    print(f"# {platform.node()}, {os.cpu_count()} CPUs visible, {args.threads} COLMAP threads\n")
    if args.surface:
        calibrate_support({n: t for n, t in groups().items() if not args.groups or n in args.groups}, args.threads)
        return
    print(
        "| variant | group | size | points | surface median m | surface p90 m | <= 10 cm | ray median m "
        "| ray p90 m | checked | seconds |"
    )
    print("|---|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|")
    all_groups = {name: truth for name, truth in groups().items() if not args.groups or name in args.groups}
    surfaces = {name: ground_truth_surface(truth) for name, truth in all_groups.items()}
    summary: dict[tuple[str, str], list[tuple[int, float, float]]] = {}
    for name in args.variants:
        config = replace(VARIANTS[name], num_threads=args.threads)
        for group, truth in all_groups.items():
            for size in args.sizes:
                keyframes = rgb_only(truth, int(size))
                started = time.perf_counter()
                result = run_colmap(keyframes, config, _quiet)
                seconds = time.perf_counter() - started
                ray, checked = point_errors(result.points, result.seen_by, truth)
                surface = surfaces[group].query(result.points)[0] if len(result.points) else np.zeros(0)
                median = float(np.median(surface)) if len(surface) else float("nan")
                summary.setdefault((name, size), []).append((len(result.points), median, seconds))
                print(
                    f"| {name} | {group} | {size} | {len(result.points)} | {median:.3f} | "
                    f"{_percentile(surface, 90):.3f} | {float(np.mean(surface <= 0.10)) if len(surface) else 0:.0%} | "
                    f"{_percentile(ray, 50):.3f} | {_percentile(ray, 90):.3f} | {checked:.0%} | {seconds:.1f} |",
                    flush=True,
                )
    print(
        "\n| variant | size | groups | min points | median of surface medians m | worst surface median m "
        "| max seconds |"
    )
    print("|---|---:|---:|---:|---:|---:|---:|")
    for (name, size), rows in summary.items():
        points, medians, seconds = zip(*rows, strict=True)
        print(
            f"| {name} | {size} | {len(rows)} | {min(points)} | {float(np.median(medians)):.3f} | "
            f"{max(medians):.3f} | {max(seconds):.1f} |"
        )


if __name__ == "__main__":
    main()
