"""RGB-only backends on the 5 bundled redkitchen keyframes: accuracy of ``sfm``, seconds of every backend.

Run from the repository root::

    python benchmarks/bench_backends.py                  # everything (learned models: several minutes)
    python benchmarks/bench_backends.py --skip-learned   # sfm and rgbd only

``sfm``: registered views, points, seconds, and camera-centre error against the ground-truth poses after
a similarity alignment (Umeyama), with and without the known poses. Learned backends: the ViT-L/512
architecture with RANDOM weights (the real checkpoint cannot be downloaded here), saved and loaded
through :class:`ModelHolder` like the node does. Their seconds are meaningful, their geometry is not.
Results go to docs/rgb_backends.md by hand.
"""

from __future__ import annotations

import argparse
import os
import platform
import statistics
import sys
import tempfile
import time
from dataclasses import replace
from pathlib import Path

import numpy as np

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from showroom_ros.backends import LearnedBackend, LearnedConfig, ModelHolder, SfMBackend, SfMConfig  # noqa: E402
from showroom_ros.capture.keyframes import Keyframe  # noqa: E402
from showroom_ros.geometry.camera import CameraIntrinsics  # noqa: E402
from showroom_ros.io.datasets import load_frame_folder  # noqa: E402
from showroom_ros.reconstruction.pipeline import ReconstructionError, RGBDBackend  # noqa: E402
from showroom_ros.reconstruction.registration import align_poses  # noqa: E402

DATA = REPO / "data" / "redkitchen"


def _quiet(fraction: float, stage: str) -> None:
    pass


def depth_agreement(points: np.ndarray, keyframes: list[Keyframe]) -> float:
    """Median |z - z_sensor| / z_sensor of points seen in the keyframes' depth images (depth camera's K)."""
    errors = []
    for keyframe in keyframes:
        pose, depth, k = keyframe.pose, keyframe.depth, keyframe.depth_intrinsics
        assert pose is not None and depth is not None and k is not None
        camera = (points - pose[:3, 3]) @ pose[:3, :3]
        camera = camera[camera[:, 2] > 0.1]
        u = np.rint(camera[:, 0] / camera[:, 2] * k.fx + k.cx).astype(int)
        v = np.rint(camera[:, 1] / camera[:, 2] * k.fy + k.cy).astype(int)
        inside = (u >= 0) & (u < depth.shape[1]) & (v >= 0) & (v < depth.shape[0])
        measured = depth[v[inside], u[inside]]
        valid = np.isfinite(measured)
        errors.append(np.abs(camera[inside][valid, 2] - measured[valid]) / measured[valid])
    return float(np.median(np.concatenate(errors)))


def bench_sfm(repeats: int) -> None:
    truth = np.stack([k.pose for k in load_frame_folder(DATA, with_depth=False)])
    cases = [
        ("RGB + known poses (triangulation)", {"with_depth": False}),
        ("RGB only, no poses (incremental)", {"with_depth": False, "with_poses": False}),
        ("RGB + depth, no poses (scale from depth)", {"with_poses": False}),
        (
            "RGB only, no poses, no intrinsics",
            {"with_depth": False, "with_poses": False, "intrinsics": "drop"},
        ),
    ]
    print("\n## sfm on the 5 redkitchen keyframes")
    print(
        "| case | registered | points | seconds (median) | frame | metric "
        "| centre RMS | centre max | rot max | scale |"
    )
    print("|---|---|---|---|---|---|---|---|---|---|")
    for label, options in cases:
        drop = options.pop("intrinsics", None) == "drop"
        seconds, result, backend = [], None, None
        for _ in range(repeats):
            keyframes = load_frame_folder(DATA, **options)
            if drop:
                for keyframe in keyframes:
                    keyframe.intrinsics = None
            backend = SfMBackend()
            started = time.perf_counter()
            result = backend.reconstruct(keyframes, _quiet)
            seconds.append(time.perf_counter() - started)
        assert result is not None and backend is not None
        registered = len(result.camera_poses)
        alignment = align_poses(result.camera_poses, truth[:registered]) if registered == 5 else None
        errors = (
            f"{alignment.centre_rms * 100:.1f} cm | {alignment.centre_errors.max() * 100:.1f} cm | "
            f"{alignment.rotation_errors_deg.max():.1f} deg | {alignment.similarity.scale:.3g}"
            if alignment
            else "n/a | n/a | n/a | n/a"
        )
        print(
            f"| {label} | {registered}/5 | {result.num_points} | {statistics.median(seconds):.2f} "
            f"(min {min(seconds):.2f}) | {result.frame_id} | {result.metric} | {errors} |"
        )
        if result.frame_id == "map":
            agreement = depth_agreement(result.points.astype(np.float64), load_frame_folder(DATA))
            print(f"|  points vs sensor depth (median relative) | {agreement:.1%} |||||||||")
        stages = ", ".join(f"{k} {v:.2f}" for k, v in result.timings.items())
        print(f"|  stages (last run) | {stages} |||||||||")


def _shared_groups() -> list[tuple[str, list[Keyframe]]]:
    """More real 5-view groups from ../shared (the 4 suggested 7-Scenes subsets, the slambook2 room)."""
    shared = REPO.parent / "shared" / "data"
    groups: list[tuple[str, list[Keyframe]]] = []
    kitchen = shared / "7scenes_redkitchen"
    if (kitchen / "suggested_subsets.txt").is_file():
        rgb_k = CameraIntrinsics(525.0, 525.0, 320.0, 240.0, 640, 480)
        depth_k = CameraIntrinsics(585.0, 585.0, 320.0, 240.0, 640, 480)
        for line in (kitchen / "suggested_subsets.txt").read_text().splitlines():
            names = line.split("[")[0].split()
            if line.startswith("#") or len(names) != 5:
                continue
            keyframes = load_frame_folder(kitchen, names=names, intrinsics=rgb_k, depth_intrinsics=depth_k)
            groups.append((f"7-Scenes {names[0][-6:]}..{names[-1][-6:]}", keyframes))
    dining = shared / "slambook2_diningroom"
    if (dining / "frames_c2w.txt").is_file():
        k = CameraIntrinsics(518.0, 519.0, 325.5, 253.5, 640, 480)
        groups.append(("slambook2 dining room", load_frame_folder(dining, intrinsics=k)))
    return groups


COLMAP_DEFAULTS = SfMConfig(init_min_num_inliers=100, abs_pose_min_num_inliers=30, keep_two_view_tracks=False)


def _from_scratch(keyframes: list[Keyframe], truth: np.ndarray, config: SfMConfig) -> str:
    try:
        result = SfMBackend(config).reconstruct(keyframes, _quiet)
    except ReconstructionError:
        return "no model | - | -"
    registered = len(result.camera_poses)
    rms = f"{align_poses(result.camera_poses, truth).centre_rms * 100:.1f} cm" if registered == 5 else "n/a"
    return f"{registered}/5 | {result.num_points} | {rms}"


def bench_sfm_groups() -> None:
    """Does incremental SfM from scratch build a model on real 5-view groups? And with known poses?"""
    print("\n## sfm on more real 5-view groups (RGB only; 1 run each)")
    print(
        "| group | from scratch, our settings: registered | points | centre RMS "
        "| COLMAP defaults, no intrinsics: registered | points | centre RMS | known poses: points | s |"
    )
    print("|---|---|---|---|---|---|---|---|---|")
    for label, keyframes in _shared_groups():
        truth = np.stack([k.pose for k in keyframes])
        rgb_only = [replace(k, depth=None, depth_intrinsics=None) for k in keyframes]
        pose_free = [replace(k, pose=None) for k in rgb_only]
        uncalibrated = [replace(k, intrinsics=None) for k in pose_free]
        ours = _from_scratch(pose_free, truth, SfMConfig())
        defaults = _from_scratch(uncalibrated, truth, COLMAP_DEFAULTS)
        started = time.perf_counter()
        try:
            posed = SfMBackend().reconstruct(rgb_only, _quiet)
            known = f"{posed.num_points} | {time.perf_counter() - started:.1f}"
        except ReconstructionError as error:
            known = f"failed: {error} | -"
        print(f"| {label} | {ours} | {defaults} | {known} |")


def bench_registration_noise(trials: int = 200) -> None:
    """Scale error of the pose alignment as camera-centre noise grows (5 cameras on a 2 m arc)."""
    from scipy.spatial.transform import Rotation

    from showroom_ros.geometry.similarity import Similarity

    rng = np.random.default_rng(7)
    angles = np.linspace(0, 1.2, 5)
    known = np.repeat(np.eye(4)[None], 5, axis=0)
    known[:, :3, :3] = Rotation.random(5, random_state=rng).as_matrix()
    known[:, :3, 3] = np.stack([2 * np.cos(angles), 2 * np.sin(angles), rng.uniform(-0.3, 0.3, 5)], 1)
    truth = Similarity(
        scale=0.5, rotation=Rotation.random(random_state=rng).as_matrix(), translation=rng.uniform(-5, 5, 3)
    )
    print(f"\n## pose alignment under camera-centre noise ({trials} trials each)")
    print("| noise | median scale error | 95th percentile | median centre RMS |")
    print("|---|---|---|---|")
    for sigma in (0.005, 0.02, 0.05):
        errors, residuals = [], []
        for _ in range(trials):
            predicted = truth.inverse().transform_poses(known)
            predicted[:, :3, 3] += rng.normal(scale=sigma / truth.scale, size=(5, 3))
            alignment = align_poses(predicted, known)
            errors.append(abs(alignment.similarity.scale / truth.scale - 1))
            residuals.append(alignment.centre_rms)
        print(
            f"| {sigma * 100:.1f} cm | {np.median(errors):.2%} | {np.percentile(errors, 95):.2%} "
            f"| {np.median(residuals) * 100:.2f} cm |"
        )


def bench_mapping() -> None:
    """Overlap alignment of the accumulated map on the redkitchen RGB-D halves (keyframes 0-2, 2-4)."""
    from scipy.spatial.transform import Rotation

    from showroom_ros.geometry.similarity import Similarity
    from showroom_ros.mapping.point_map import AccumulatedMap
    from showroom_ros.reconstruction.registration import transform_reconstruction
    from showroom_ros.reconstruction.rgbd import RGBDFusionConfig, fuse_rgbd

    keyframes = load_frame_folder(DATA)
    config = RGBDFusionConfig(voxel_size=0.02)
    first, second = fuse_rgbd(keyframes[:3], config), fuse_rgbd(keyframes[2:], config)
    rotation = Rotation.from_euler("xyz", [20, -40, 70], degrees=True).as_matrix()
    print(
        f"\n## accumulated map: pose-free half aligned through the overlap ({first.num_points} + "
        f"{second.num_points} points, 2 cm voxels)"
    )
    print("| unknown scale | seconds | fitness | camera error max | rotation error | scale error |")
    print("|---|---|---|---|---|---|")
    for scale, metric in ((1.0, True), (0.3, False)):
        moved = Similarity(scale=scale, rotation=rotation, translation=np.array([1.0, -2.0, 0.5]))
        world = AccumulatedMap()
        world.merge(first)
        started = time.perf_counter()
        merged = world.merge(transform_reconstruction(second, moved, "showroom", metric))
        seconds = time.perf_counter() - started
        report = world.last_report
        assert report is not None
        residual = report.similarity.compose(moved)
        camera_error = np.linalg.norm(merged.camera_poses[-3:, :3, 3] - second.camera_poses[:, :3, 3], axis=1)
        angle = np.degrees(Rotation.from_matrix(residual.rotation).magnitude())
        print(
            f"| {'none' if metric else scale} | {seconds:.2f} | {report.fitness:.2f} | "
            f"{camera_error.max() * 100:.1f} cm | {angle:.2f} deg | {abs(residual.scale - 1):.2%} |"
        )


def bench_rgbd(repeats: int) -> None:
    keyframes = load_frame_folder(DATA)
    seconds = []
    for _ in range(repeats):
        started = time.perf_counter()
        result = RGBDBackend().reconstruct(keyframes, _quiet)
        seconds.append(time.perf_counter() - started)
    print(
        f"\nrgbd (reference, depth + poses): {result.num_points} points, "
        f"median {statistics.median(seconds):.2f} s"
    )


def bench_learned(sizes: list[int], dtypes: list[str], repeats: int, weights_dir: Path) -> None:
    import torch

    from showroom_ros.models import Fast3R, Fast3RConfig, student_config

    keyframes = load_frame_folder(DATA, with_depth=False)  # the RGB-only robot: poses from TF
    print(f"\n## learned backends, CPU, torch {torch.__version__}, {torch.get_num_threads()} threads")
    print(
        "| backend | input | dtype | load s | end-to-end s (median) | network s | poses+cameras s | points "
        "| 1-min load avg |"
    )
    print("|---|---|---|---|---|---|---|---|---|")
    for name in ("fast3r", "showroom"):
        folder = weights_dir / name
        if not (folder / "model.safetensors").is_file():
            started = time.perf_counter()
            config = Fast3RConfig.vit_large_512()
            if name == "showroom":
                config = student_config(config)
            torch.manual_seed(0)
            Fast3R(config).save_pretrained(folder)
            print(f"(created random {name} weights in {time.perf_counter() - started:.0f} s: {folder})")
        for dtype in dtypes:
            holder = ModelHolder(folder, "cpu", dtype, student=name == "showroom")
            started = time.perf_counter()
            holder.start_loading()
            state = holder.wait()
            load_seconds = time.perf_counter() - started
            if state != "ready":
                print(f"| {name} | - | {dtype} | failed: {holder.reason} |")
                continue
            for size in sizes:
                backend = LearnedBackend(name, holder, LearnedConfig(model=str(folder), input_size=size))
                seconds, result = [], None
                for _ in range(repeats):
                    started = time.perf_counter()
                    result = backend.reconstruct(keyframes, _quiet)
                    seconds.append(time.perf_counter() - started)
                assert result is not None
                timings = result.timings
                geometry = f"{size}x{size * 3 // 4}"
                print(
                    f"| {name} | {geometry} | {holder.compute_dtype} | {load_seconds:.1f} | "
                    f"{statistics.median(seconds):.1f} (min {min(seconds):.1f}) | "
                    f"{timings.get('model_network', float('nan')):.1f} | "
                    f"{timings.get('model_poses', 0.0) + timings.get('cameras', 0.0):.1f} | "
                    f"{result.num_points} | {os.getloadavg()[0]:.1f} |"
                )
            del holder, backend
            import gc

            gc.collect()


def main() -> int:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--repeats", type=int, default=3, help="runs per sfm/rgbd case (median reported)")
    parser.add_argument("--learned-repeats", type=int, default=1, help="runs per learned case")
    parser.add_argument("--skip-learned", action="store_true", help="only sfm and rgbd")
    parser.add_argument("--skip-sfm", action="store_true", help="no sfm/rgbd runs")
    parser.add_argument("--geometry-only", action="store_true", help="only registration noise and map merge")
    parser.add_argument("--sizes", type=int, nargs="+", default=[256, 512])
    parser.add_argument("--dtypes", nargs="+", default=["bf16"], help="compute dtypes (bf16, fp32)")
    parser.add_argument(
        "--weights-dir",
        type=Path,
        default=Path(tempfile.gettempdir()) / "showroom_bench_random_vitl",
        help="where the random ViT-L weights are written once (2.6 GB + 2.5 GB)",
    )
    args = parser.parse_args()
    print(
        f"# bench_backends: {platform.processor() or platform.machine()}, {os.cpu_count()} CPUs, "
        f"python {platform.python_version()}"
    )
    bench_registration_noise()
    bench_mapping()
    if args.geometry_only:
        return 0
    if not args.skip_sfm:
        bench_rgbd(args.repeats)
        bench_sfm(args.repeats)
        bench_sfm_groups()
    if not args.skip_learned:
        bench_learned(args.sizes, args.dtypes, args.learned_repeats, args.weights_dir)
    return 0


if __name__ == "__main__":
    sys.exit(main())
