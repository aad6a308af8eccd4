"""Candidate libraries for RGB-D SLAM on a 2-core CPU: odometry, pose-graph back-ends, descriptor search.

Run from the repository root (about 5 minutes on 2 idle cores)::

    python -P benchmarks/bench_slam_libraries.py                      # all 167 frames, table on stdout
    python -P benchmarks/bench_slam_libraries.py --frames 60 --json   # fewer frames, JSON on stdout
    python -P benchmarks/bench_slam_libraries.py --rgbd-frames 60 --out output/slam_libraries.json

Data: ``../shared/data/7scenes_redkitchen_walk`` (500 frames = every 2nd frame of a 30 Hz Kinect
sequence), subsampled every 3rd frame ("5 Hz": frames 0, 3, 6, ...: 167 frames). Depth uses
K(585, 585, 320, 240); colour uses K(525, 525, 320, 240) with the same optical centre, so the colour
of a depth pixel is a constant remap of the colour image (no depth needed).

1. Frame-to-frame odometry chains: each frame registered to the previous one from a constant-velocity
   guess, poses composed, a rejected step (failure, overlap < 30 %, > 0.3 m or > 30 deg) keeps the
   previous motion. Open3D RGB-D odometry (hybrid term, 640x480, colour remapped onto the depth
   grid), Open3D point-to-plane ICP (tensor ``t.pipelines`` and legacy), small_gicp GICP and VGICP
   (2 cm voxels, 8 cm max correspondence), ORB(1000) + solvePnPRansac alone and as the seed of
   small_gicp GICP. Reported: per-frame time (median, p90 ms; includes the per-frame preprocessing:
   back-projection, downsampling, normals/covariances, features; not image decoding) and ATE RMSE
   (cm) after an SE(3) Kabsch alignment (no scale) to the ground truth. The RGB-D odometry runs twice:
   Open3D's default depth_diff_max (3 cm) and 7 cm (5 Hz steps are larger than the default expects).
2. Pose-graph back-ends on one synthetic graph built from the ground truth: keyframes = every 5th
   subsampled frame, odometry edges = GT relative pose with noise (1 cm, 0.5 deg per axis, seeded),
   loop edges between keyframes > 20 apart and within 0.5 m (GT + the same noise), 5 % of the loop
   edges replaced by wrong poses, initial values = composed noisy odometry. gtsam LM (Cauchy on loop
   edges; also without a robust model for reference), gtsam ISAM2 fed keyframe by keyframe, g2o
   (g2opy) LM with a Cauchy kernel, Open3D global_optimization (LM, line process, prune 0.25).
   Reported: time (ms, median of repeats), keyframe ATE (cm), outlier loop edges rejected (Open3D:
   pruned; others: residual > 10 cm after optimisation) and inlier loop edges lost the same way.
3. Place-recognition nearest-neighbour search: faiss IndexFlatIP vs numpy matmul + argpartition over
   1,000 and 10,000 unit descriptors of 768 floats (one query, top-5; microseconds per query).

Every measurement runs in its own spawned process (Open3D's RGB-D odometry leaves OpenMP threads
spinning that slow later libraries in the same process ~3x). The machine may be shared: the load
average is printed for the whole run and per row; ``--threads`` (default 2) sets OpenMP/BLAS threads.
Progress goes to stderr, the table (or ``--json``) to stdout, ``--out`` writes the JSON report.
"""

from __future__ import annotations

import argparse
import json
import math
import multiprocessing
import os
import platform
import sys
import time
from collections.abc import Callable
from concurrent.futures import ProcessPoolExecutor
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import cv2
import numpy as np

DATA = Path(__file__).resolve().parents[2] / "shared" / "data" / "7scenes_redkitchen_walk"  # ../shared beside the repo
W, H = 640, 480
F_DEPTH, F_COLOR, CX, CY = 585.0, 525.0, 320.0, 240.0
DEPTH_MIN, DEPTH_MAX = 0.1, 4.0
VOXEL = 0.02  # downsampling for every point-cloud method (m)
MAX_CORR = 0.08  # max correspondence distance of the ICP-family methods (m)
MIN_OVERLAP = 0.3  # a step whose inlier fraction is below this is rejected
MAX_STEP_T, MAX_STEP_R = 0.3, math.radians(30.0)  # a larger step between 5 Hz frames is rejected
THREADS = int(os.environ.get("SLAM_BENCH_THREADS", "2"))  # set by --threads for the worker processes


def log(message: str) -> None:
    """Progress line on stderr."""
    print(message, file=sys.stderr, flush=True)


# --------------------------------------------------------------------------------------------- data


@dataclass
class Frame:
    """One RGB-D frame: colour (BGR uint8), depth (uint16 mm) and ground-truth camera-to-world."""

    index: int
    color: np.ndarray
    depth: np.ndarray
    c2w: np.ndarray


def orthonormalize(pose: np.ndarray) -> np.ndarray:
    """Project the rotation block of a 4x4 pose onto SO(3)."""
    u, _, vt = np.linalg.svd(pose[:3, :3])
    rotation = u @ vt
    if np.linalg.det(rotation) < 0:
        rotation = u @ np.diag([1.0, 1.0, -1.0]) @ vt
    out = np.eye(4)
    out[:3, :3], out[:3, 3] = rotation, pose[:3, 3]
    return out


def read_walk(data: Path) -> list[tuple[str, str, np.ndarray]]:
    """All lines of ``frames_c2w.txt``: colour file, depth file, 4x4 camera-to-world."""
    rows = []
    for line in (data / "frames_c2w.txt").read_text().splitlines():
        parts = line.split()
        if len(parts) == 18:
            rows.append((parts[0], parts[1], orthonormalize(np.array(parts[2:], float).reshape(4, 4))))
    return rows


def load_frames(data: Path, step: int, count: int | None) -> list[Frame]:
    """Decode every ``step``-th frame of the walk (the first ``count`` of them)."""
    rows = read_walk(data)[::step][:count]
    frames = []
    for i, (rgb, dep, pose) in enumerate(rows):
        color = cv2.imread(str(data / rgb), cv2.IMREAD_COLOR)
        depth = cv2.imread(str(data / dep), cv2.IMREAD_UNCHANGED)
        if color is None or depth is None:
            raise FileNotFoundError(f"cannot read {rgb} / {dep}")
        frames.append(Frame(i, color, depth, pose))
    return frames


# ----------------------------------------------------------------------------------------- geometry

_U, _V = np.meshgrid(np.arange(W, dtype=np.float32), np.arange(H, dtype=np.float32))
_RAY_X = (_U - CX) / F_DEPTH
_RAY_Y = (_V - CY) / F_DEPTH
# Colour sampled at each depth pixel: same optical centre, so u_c = cx + (525/585) (u_d - cx).
_MAP_X = (CX + (_U - CX) * (F_COLOR / F_DEPTH)).astype(np.float32)
_MAP_Y = (CY + (_V - CY) * (F_COLOR / F_DEPTH)).astype(np.float32)


def backproject(depth: np.ndarray) -> np.ndarray:
    """Nx3 float64 camera-frame points of the valid depth pixels (K585)."""
    z = depth.astype(np.float32) * 1e-3
    valid = (z > DEPTH_MIN) & (z < DEPTH_MAX)
    zv = z[valid]
    return np.stack([_RAY_X[valid] * zv, _RAY_Y[valid] * zv, zv], axis=1).astype(np.float64)


def color_on_depth_grid(color: np.ndarray) -> np.ndarray:
    """Colour image resampled onto the depth camera's pixel grid (RGB uint8)."""
    remapped = cv2.remap(color, _MAP_X, _MAP_Y, cv2.INTER_LINEAR)
    return cv2.cvtColor(remapped, cv2.COLOR_BGR2RGB)


def exp_so3(w: np.ndarray) -> np.ndarray:
    """Rotation matrix of a rotation vector."""
    rotation, _ = cv2.Rodrigues(np.asarray(w, np.float64).reshape(3, 1))
    return rotation


def rotation_angle(rotation: np.ndarray) -> float:
    """Angle (rad) of a rotation matrix."""
    return float(np.arccos(np.clip((np.trace(rotation) - 1.0) / 2.0, -1.0, 1.0)))


def plausible(motion: np.ndarray) -> bool:
    """Whether a frame-to-frame motion is small enough for 5 Hz handheld capture."""
    return bool(np.linalg.norm(motion[:3, 3]) < MAX_STEP_T and rotation_angle(motion[:3, :3]) < MAX_STEP_R)


def kabsch_ate(estimated: np.ndarray, truth: np.ndarray) -> float:
    """ATE RMSE (m) of positions after the best rigid (no scale) alignment of ``estimated`` onto ``truth``."""
    mu_e, mu_t = estimated.mean(0), truth.mean(0)
    cov = (truth - mu_t).T @ (estimated - mu_e) / len(estimated)
    u, _, vt = np.linalg.svd(cov)
    d = np.eye(3)
    if np.linalg.det(u) * np.linalg.det(vt) < 0:
        d[2, 2] = -1.0
    rotation = u @ d @ vt
    aligned = (estimated - mu_e) @ rotation.T + mu_t
    return float(np.sqrt(np.mean(np.sum((aligned - truth) ** 2, axis=1))))


# ----------------------------------------------------------------------------------------- odometry


@dataclass
class OdometryResult:
    """Outcome of one frame-to-frame chain."""

    name: str
    frames: int
    median_ms: float
    p90_ms: float
    ate_cm: float
    rejected: int
    note: str = ""
    error: str = ""


# A tracker is built once per run: ``prepare(frame) -> state`` and ``register(prev, cur, init) -> (ok, T_prev_cur)``.
Prepare = Callable[[Frame], Any]
Register = Callable[[Any, Any, np.ndarray], tuple[bool, np.ndarray]]


def run_chain(
    name: str, frames: list[Frame], prepare: Prepare, register: Register, note: str = ""
) -> tuple[OdometryResult, list[np.ndarray]]:
    """Register each frame to the previous one with a constant-velocity guess and compose the poses."""
    poses = [frames[0].c2w.copy()]
    motion = np.eye(4)  # T_prev_cur of the last accepted step
    prev = prepare(frames[0])
    times, rejected = [], 0
    for frame in frames[1:]:
        start = time.perf_counter()
        cur = prepare(frame)
        ok, estimate = register(prev, cur, motion)
        times.append(time.perf_counter() - start)
        if ok and plausible(estimate):
            motion = estimate
        else:
            rejected += 1
        poses.append(poses[-1] @ motion)
        prev = cur
        if frame.index % 20 == 0:
            log(f"  {name}: frame {frame.index}/{len(frames) - 1}, {1e3 * float(np.median(times)):.0f} ms/frame")
    estimated = np.array([pose[:3, 3] for pose in poses])
    truth = np.array([f.c2w[:3, 3] for f in frames])
    result = OdometryResult(
        name=name,
        frames=len(frames),
        median_ms=1e3 * float(np.median(times)),
        p90_ms=1e3 * float(np.percentile(times, 90)),
        ate_cm=100.0 * kabsch_ate(estimated, truth),
        rejected=rejected,
        note=note,
    )
    return result, poses


def open3d_rgbd_tracker(depth_diff_max: float = 0.03) -> tuple[Prepare, Register]:
    """Open3D RGB-D odometry, hybrid (photometric + geometric) Jacobian, full 640x480 (0.03: Open3D's default)."""
    import open3d as o3d

    intrinsic = o3d.camera.PinholeCameraIntrinsic(W, H, F_DEPTH, F_DEPTH, CX, CY)
    option = o3d.pipelines.odometry.OdometryOption(depth_diff_max=depth_diff_max)
    jacobian = o3d.pipelines.odometry.RGBDOdometryJacobianFromHybridTerm()

    def prepare(frame: Frame) -> Any:
        color = o3d.geometry.Image(np.ascontiguousarray(color_on_depth_grid(frame.color)))
        depth = o3d.geometry.Image(frame.depth)
        return o3d.geometry.RGBDImage.create_from_color_and_depth(
            color, depth, depth_scale=1000.0, depth_trunc=DEPTH_MAX, convert_rgb_to_intensity=True
        )

    def register(prev: Any, cur: Any, init: np.ndarray) -> tuple[bool, np.ndarray]:
        # source = current, target = previous: the returned T maps current-camera points into the previous camera.
        ok, transform, _ = o3d.pipelines.odometry.compute_rgbd_odometry(cur, prev, intrinsic, init, jacobian, option)
        return bool(ok), np.asarray(transform)

    return prepare, register


def open3d_icp_tracker() -> tuple[Prepare, Register]:
    """Open3D tensor point-to-plane ICP on 2 cm voxel clouds."""
    import open3d as o3d

    reg = o3d.t.pipelines.registration
    criteria = reg.ICPConvergenceCriteria(relative_fitness=1e-6, relative_rmse=1e-6, max_iteration=30)
    method = reg.TransformationEstimationPointToPlane()

    def prepare(frame: Frame) -> Any:
        cloud = o3d.t.geometry.PointCloud(o3d.core.Tensor(backproject(frame.depth).astype(np.float32)))
        cloud = cloud.voxel_down_sample(VOXEL)
        cloud.estimate_normals(max_nn=20, radius=3 * VOXEL)
        return cloud

    def register(prev: Any, cur: Any, init: np.ndarray) -> tuple[bool, np.ndarray]:
        result = reg.icp(cur, prev, MAX_CORR, o3d.core.Tensor(init), method, criteria)
        return result.fitness >= MIN_OVERLAP, result.transformation.numpy().astype(np.float64)

    return prepare, register


def open3d_legacy_icp_tracker() -> tuple[Prepare, Register]:
    """Open3D legacy ``registration_icp`` point-to-plane on 2 cm voxel clouds."""
    import open3d as o3d

    reg = o3d.pipelines.registration
    criteria = reg.ICPConvergenceCriteria(relative_fitness=1e-6, relative_rmse=1e-6, max_iteration=30)
    method = reg.TransformationEstimationPointToPlane()
    search = o3d.geometry.KDTreeSearchParamHybrid(radius=3 * VOXEL, max_nn=20)

    def prepare(frame: Frame) -> Any:
        cloud = o3d.geometry.PointCloud(o3d.utility.Vector3dVector(backproject(frame.depth)))
        cloud = cloud.voxel_down_sample(VOXEL)
        cloud.estimate_normals(search)
        return cloud

    def register(prev: Any, cur: Any, init: np.ndarray) -> tuple[bool, np.ndarray]:
        result = reg.registration_icp(cur, prev, MAX_CORR, init, method, criteria)
        return result.fitness >= MIN_OVERLAP, np.asarray(result.transformation)

    return prepare, register


def small_gicp_tracker(kind: str) -> tuple[Prepare, Register]:
    """small_gicp GICP (kd-tree) or VGICP (Gaussian voxel map, 2.5x the downsampling voxel)."""
    import small_gicp

    def prepare(frame: Frame) -> Any:
        cloud, tree = small_gicp.preprocess_points(backproject(frame.depth), VOXEL, 10, THREADS)
        voxels = None
        if kind == "VGICP":
            voxels = small_gicp.GaussianVoxelMap(2.5 * VOXEL)
            voxels.insert(cloud)
        return cloud, tree, voxels

    def register(prev: Any, cur: Any, init: np.ndarray) -> tuple[bool, np.ndarray]:
        target, tree, voxels = prev
        source = cur[0]
        if kind == "VGICP":
            result = small_gicp.align(voxels, source, init, MAX_CORR, THREADS)
        else:
            result = small_gicp.align(target, source, tree, init, "GICP", MAX_CORR, THREADS)
        return result.num_inliers >= MIN_OVERLAP * source.size(), np.asarray(result.T_target_source)

    return prepare, register


def orb_pnp_tracker(refine: bool) -> tuple[Prepare, Register]:
    """ORB (1000) + ratio-test matches + solvePnPRansac on the previous frame's depth; optionally GICP refinement."""
    import small_gicp

    orb = cv2.ORB_create(1000)
    matcher = cv2.BFMatcher(cv2.NORM_HAMMING)
    k_color = np.array([[F_COLOR, 0, CX], [0, F_COLOR, CY], [0, 0, 1]], np.float64)

    def prepare(frame: Frame) -> Any:
        gray = cv2.cvtColor(frame.color, cv2.COLOR_BGR2GRAY)
        keypoints, descriptors = orb.detectAndCompute(gray, None)
        pixels = np.array([kp.pt for kp in keypoints], np.float64).reshape(-1, 2)
        # 3D of each keypoint: depth at the matching depth pixel, back-projected with K525 (same optical centre).
        ud = np.rint(CX + (pixels[:, 0] - CX) * (F_DEPTH / F_COLOR)).astype(int)
        vd = np.rint(CY + (pixels[:, 1] - CY) * (F_DEPTH / F_COLOR)).astype(int)
        inside = (ud >= 0) & (ud < W) & (vd >= 0) & (vd < H)
        z = np.zeros(len(pixels))
        z[inside] = frame.depth[vd[inside], ud[inside]] * 1e-3
        points = np.stack([(pixels[:, 0] - CX) * z / F_COLOR, (pixels[:, 1] - CY) * z / F_COLOR, z], axis=1)
        valid = (z > DEPTH_MIN) & (z < DEPTH_MAX)
        cloud = small_gicp.preprocess_points(backproject(frame.depth), VOXEL, 10, THREADS) if refine else None
        return pixels, descriptors, points, valid, cloud

    def pnp(prev: Any, cur: Any) -> np.ndarray | None:
        """T_cur_prev from 2D (current) - 3D (previous) matches, or None."""
        _, prev_desc, prev_points, prev_valid, _ = prev
        cur_pixels, cur_desc, _, _, _ = cur
        if prev_desc is None or cur_desc is None or len(prev_desc) < 2 or len(cur_desc) < 2:
            return None
        pairs = matcher.knnMatch(cur_desc, prev_desc, k=2)
        good = [p[0] for p in pairs if len(p) == 2 and p[0].distance < 0.8 * p[1].distance]
        good = [m for m in good if prev_valid[m.trainIdx]]
        if len(good) < 15:
            return None
        obj = np.array([prev_points[m.trainIdx] for m in good], np.float64)
        img = np.array([cur_pixels[m.queryIdx] for m in good], np.float64)
        ok, rvec, tvec, inliers = cv2.solvePnPRansac(
            obj, img, k_color, None, iterationsCount=200, reprojectionError=3.0, confidence=0.999
        )
        if not ok or inliers is None or len(inliers) < 15:
            return None
        transform = np.eye(4)
        transform[:3, :3], transform[:3, 3] = exp_so3(rvec), tvec.ravel()
        return transform

    def register(prev: Any, cur: Any, init: np.ndarray) -> tuple[bool, np.ndarray]:
        t_cur_prev = pnp(prev, cur)
        seed = np.linalg.inv(t_cur_prev) if t_cur_prev is not None else None
        if not refine:
            return seed is not None, seed if seed is not None else init
        if seed is None or not plausible(seed):
            seed = init
        (target, tree), (source, _) = prev[4], cur[4]
        result = small_gicp.align(target, source, tree, seed, "GICP", MAX_CORR, THREADS)
        return result.num_inliers >= MIN_OVERLAP * source.size(), np.asarray(result.T_target_source)

    return prepare, register


ODOMETRY_METHODS: dict[str, tuple[Callable[[], tuple[Prepare, Register]], str]] = {
    "open3d RGBD odometry hybrid 640x480": (open3d_rgbd_tracker, "default options, depth_diff_max 0.03"),
    "open3d RGBD odometry hybrid, ddiff .07": (lambda: open3d_rgbd_tracker(0.07), "depth_diff_max 0.07"),
    "open3d t.icp point-to-plane": (open3d_icp_tracker, f"voxel {VOXEL} m, corr {MAX_CORR} m"),
    "open3d legacy icp point-to-plane": (open3d_legacy_icp_tracker, f"voxel {VOXEL} m, corr {MAX_CORR} m"),
    "small_gicp GICP": (lambda: small_gicp_tracker("GICP"), f"voxel {VOXEL} m, corr {MAX_CORR} m"),
    "small_gicp VGICP": (lambda: small_gicp_tracker("VGICP"), f"voxelmap {2.5 * VOXEL:.2f} m"),
    "ORB+PnP RANSAC only": (lambda: orb_pnp_tracker(False), "no refinement"),
    "ORB+PnP -> small_gicp GICP": (lambda: orb_pnp_tracker(True), "PnP seed, else const-vel"),
}


def isolated(function: Callable[..., Any], *args: Any, in_process: bool = False) -> Any:
    """``function(*args)`` in a fresh spawned process.

    Open3D's RGB-D odometry leaves OpenMP threads spinning that slow every later library in the same
    process about 3x on 2 cores, so each measurement gets its own interpreter.
    """
    if in_process:
        return function(*args)
    with ProcessPoolExecutor(max_workers=1, mp_context=multiprocessing.get_context("spawn")) as pool:
        return pool.submit(function, *args).result()


def odometry_worker(name: str, data: str, step: int, count: int | None) -> dict[str, Any]:
    """One frame-to-frame chain (loads its own frames); failures are reported, not raised."""
    factory, note = ODOMETRY_METHODS[name]
    try:
        frames = load_frames(Path(data), step, count)
        prepare, register = factory()
        result, _ = run_chain(name, frames, prepare, register, note)
    except Exception as exc:  # a library that fails is reported, not fatal
        result = OdometryResult(name, count or 0, math.nan, math.nan, math.nan, 0, note, f"{type(exc).__name__}: {exc}")
    return asdict(result)


def bench_odometry(data: Path, step: int, frames: int, rgbd_frames: int, in_process: bool) -> list[dict[str, Any]]:
    """Every frame-to-frame chain; the Open3D RGB-D odometry on the first ``rgbd_frames`` frames only."""
    results = []
    for name in ODOMETRY_METHODS:
        count = rgbd_frames if name.startswith("open3d RGBD") else frames
        log(f"odometry: {name} on {count} frames")
        load = os.getloadavg()[0]
        result = isolated(odometry_worker, name, str(data), step, count, in_process=in_process)
        result["load1"] = round((load + os.getloadavg()[0]) / 2, 2)
        log(f"  -> {result['median_ms']:.1f} ms median, ATE {result['ate_cm']:.2f} cm, rejected {result['rejected']}")
        results.append(result)
    return results


# --------------------------------------------------------------------------------------- pose graph

SIGMA_T, SIGMA_R = 0.01, math.radians(0.5)
OUTLIER_RESIDUAL = 0.10  # m: a loop edge with a larger residual after optimisation is counted as rejected


@dataclass
class Edge:
    """Relative-pose measurement ``T_i^-1 T_j`` between keyframes i < j."""

    i: int
    j: int
    measurement: np.ndarray
    loop: bool
    outlier: bool = False


@dataclass
class PoseGraphProblem:
    """Keyframe ground truth, noisy edges and the dead-reckoning initial values."""

    truth: list[np.ndarray]
    initial: list[np.ndarray]
    edges: list[Edge]

    @property
    def loops(self) -> list[Edge]:
        """Loop edges (including the outliers)."""
        return [e for e in self.edges if e.loop]


def perturb(pose: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    """``pose`` times a random motion of SIGMA_T per axis and SIGMA_R per axis."""
    noise = np.eye(4)
    noise[:3, :3] = exp_so3(rng.normal(0.0, SIGMA_R, 3))
    noise[:3, 3] = rng.normal(0.0, SIGMA_T, 3)
    return pose @ noise


def build_pose_graph(poses: list[np.ndarray], kf_step: int, seed: int = 7) -> PoseGraphProblem:
    """Synthetic graph from GT keyframes: noisy odometry, loops (>20 apart, <0.5 m), 5 % wrong loops."""
    rng = np.random.default_rng(seed)
    truth = poses[::kf_step]
    edges = [Edge(k, k + 1, perturb(np.linalg.inv(truth[k]) @ truth[k + 1], rng), False) for k in range(len(truth) - 1)]
    for j in range(len(truth)):
        for i in range(j - 20):
            if np.linalg.norm(truth[i][:3, 3] - truth[j][:3, 3]) < 0.5:
                edges.append(Edge(i, j, perturb(np.linalg.inv(truth[i]) @ truth[j], rng), True))
    loops = [e for e in edges if e.loop]
    for edge in rng.choice(np.array(loops, dtype=object), size=max(1, round(0.05 * len(loops))), replace=False):
        wrong = np.eye(4)
        wrong[:3, :3] = exp_so3(rng.normal(size=3) / math.sqrt(3) * math.radians(rng.uniform(10, 45)))
        direction = rng.normal(size=3)
        wrong[:3, 3] = direction / np.linalg.norm(direction) * rng.uniform(0.3, 1.0)
        edge.measurement, edge.outlier = wrong, True
    initial = [truth[0].copy()]
    for edge in edges[: len(truth) - 1]:
        initial.append(initial[-1] @ edge.measurement)
    return PoseGraphProblem(truth, initial, edges)


@dataclass
class BackendResult:
    """Outcome of one pose-graph back-end."""

    name: str
    time_ms: float
    ate_cm: float
    outliers_rejected: int
    outliers: int
    inliers_lost: int
    loops: int
    note: str = ""
    error: str = ""
    extra: dict[str, float] = field(default_factory=dict)


def edge_residual(poses: list[np.ndarray], edge: Edge) -> float:
    """Translation (m) of ``Z^-1 T_i^-1 T_j``."""
    error = np.linalg.inv(edge.measurement) @ np.linalg.inv(poses[edge.i]) @ poses[edge.j]
    return float(np.linalg.norm(error[:3, 3]))


def score(
    name: str, problem: PoseGraphProblem, poses: list[np.ndarray], seconds: float, rejected: set[int] | None = None
) -> BackendResult:
    """ATE and rejected loop edges (by residual, or the given edge indices) of optimised poses."""
    loops = [(n, e) for n, e in enumerate(problem.edges) if e.loop]
    if rejected is None:
        rejected = {n for n, e in loops if edge_residual(poses, e) > OUTLIER_RESIDUAL}
    ate = kabsch_ate(np.array([p[:3, 3] for p in poses]), np.array([p[:3, 3] for p in problem.truth]))
    return BackendResult(
        name=name,
        time_ms=1e3 * seconds,
        ate_cm=100.0 * ate,
        outliers_rejected=sum(1 for n, e in loops if e.outlier and n in rejected),
        outliers=sum(1 for _, e in loops if e.outlier),
        inliers_lost=sum(1 for n, e in loops if not e.outlier and n in rejected),
        loops=len(loops),
    )


def timed(function: Callable[[], Any], repeats: int) -> tuple[Any, float]:
    """Result of the last call and the median wall time (s) over ``repeats`` calls."""
    times, result = [], None
    for _ in range(repeats):
        start = time.perf_counter()
        result = function()
        times.append(time.perf_counter() - start)
    return result, float(np.median(times))


def gtsam_graph(problem: PoseGraphProblem, robust: bool) -> tuple[Any, Any]:
    """gtsam factor graph (prior on keyframe 0, Cauchy on loop edges if ``robust``) and initial values."""
    import gtsam

    sigmas = np.array([SIGMA_R] * 3 + [SIGMA_T] * 3)  # Pose3 tangent: rotation first
    odometry_noise = gtsam.noiseModel.Diagonal.Sigmas(sigmas)
    loop_noise = odometry_noise
    if robust:
        loop_noise = gtsam.noiseModel.Robust.Create(gtsam.noiseModel.mEstimator.Cauchy.Create(1.0), odometry_noise)
    graph = gtsam.NonlinearFactorGraph()
    graph.add(gtsam.PriorFactorPose3(0, gtsam.Pose3(problem.initial[0]), gtsam.noiseModel.Isotropic.Sigma(6, 1e-6)))
    for edge in problem.edges:
        noise = loop_noise if edge.loop else odometry_noise
        graph.add(gtsam.BetweenFactorPose3(edge.i, edge.j, gtsam.Pose3(edge.measurement), noise))
    values = gtsam.Values()
    for k, pose in enumerate(problem.initial):
        values.insert(k, gtsam.Pose3(pose))
    return graph, values


def bench_gtsam_lm(problem: PoseGraphProblem, robust: bool, repeats: int) -> BackendResult:
    """gtsam batch Levenberg-Marquardt."""
    import gtsam

    graph, values = gtsam_graph(problem, robust)

    def solve() -> Any:
        params = gtsam.LevenbergMarquardtParams()
        params.setMaxIterations(100)
        return gtsam.LevenbergMarquardtOptimizer(graph, values, params).optimize()

    result, seconds = timed(solve, repeats)
    poses = [result.atPose3(k).matrix() for k in range(len(problem.initial))]
    name = "gtsam LM + Cauchy(1) on loops" if robust else "gtsam LM, no robust model"
    return score(name, problem, poses, seconds)


def bench_gtsam_isam2(problem: PoseGraphProblem, repeats: int) -> BackendResult:
    """gtsam ISAM2 fed keyframe by keyframe (odometry edge + loops ending at the new keyframe)."""
    import gtsam

    sigmas = np.array([SIGMA_R] * 3 + [SIGMA_T] * 3)
    odometry_noise = gtsam.noiseModel.Diagonal.Sigmas(sigmas)
    loop_noise = gtsam.noiseModel.Robust.Create(gtsam.noiseModel.mEstimator.Cauchy.Create(1.0), odometry_noise)
    by_target: dict[int, list[Edge]] = {}
    for edge in problem.edges:
        by_target.setdefault(edge.j, []).append(edge)

    def solve() -> tuple[list[np.ndarray], list[float]]:
        params = gtsam.ISAM2Params()
        params.setRelinearizeThreshold(0.01)
        params.relinearizeSkip = 1
        isam = gtsam.ISAM2(params)
        update_times = []
        estimate = None
        for k in range(len(problem.initial)):
            start = time.perf_counter()
            graph, values = gtsam.NonlinearFactorGraph(), gtsam.Values()
            if k == 0:
                graph.add(
                    gtsam.PriorFactorPose3(
                        0, gtsam.Pose3(problem.initial[0]), gtsam.noiseModel.Isotropic.Sigma(6, 1e-6)
                    )
                )
                values.insert(0, gtsam.Pose3(problem.initial[0]))
            else:
                odometry = next(e for e in by_target[k] if not e.loop)
                values.insert(k, estimate.atPose3(k - 1).compose(gtsam.Pose3(odometry.measurement)))
                for edge in by_target[k]:
                    noise = loop_noise if edge.loop else odometry_noise
                    graph.add(gtsam.BetweenFactorPose3(edge.i, edge.j, gtsam.Pose3(edge.measurement), noise))
            isam.update(graph, values)
            estimate = isam.calculateEstimate()
            update_times.append(time.perf_counter() - start)
        poses = [estimate.atPose3(k).matrix() for k in range(len(problem.initial))]
        return poses, update_times

    (poses, update_times), seconds = timed(solve, repeats)
    result = score("gtsam ISAM2 + Cauchy(1), incremental", problem, poses, seconds)
    result.extra = {
        "update_median_ms": 1e3 * float(np.median(update_times)),
        "update_max_ms": 1e3 * float(np.max(update_times)),
    }
    result.note = (
        f"per update {result.extra['update_median_ms']:.2f} ms median, {result.extra['update_max_ms']:.2f} max"
    )
    return result


def bench_g2o(problem: PoseGraphProblem, repeats: int) -> BackendResult:
    """g2o (g2opy) Levenberg-Marquardt, EdgeSE3 with a Cauchy kernel on loop edges."""
    import g2opy as g2o

    # EdgeSE3 error = [translation, quaternion vector part (~ angle / 2)]: information matches SIGMA_T, SIGMA_R.
    information = np.diag([SIGMA_T**-2] * 3 + [(SIGMA_R / 2.0) ** -2] * 3)

    def solve() -> list[np.ndarray]:
        optimizer = g2o.SparseOptimizer()
        optimizer.set_algorithm(g2o.OptimizationAlgorithmLevenberg(g2o.BlockSolverSE3(g2o.LinearSolverEigenSE3())))
        for k, pose in enumerate(problem.initial):
            vertex = g2o.VertexSE3()
            vertex.set_id(k)
            vertex.set_estimate(g2o.Isometry3d(pose))
            vertex.set_fixed(k == 0)
            optimizer.add_vertex(vertex)
        for edge in problem.edges:
            g2o_edge = g2o.EdgeSE3()
            g2o_edge.set_vertex(0, optimizer.vertex(edge.i))
            g2o_edge.set_vertex(1, optimizer.vertex(edge.j))
            g2o_edge.set_measurement(g2o.Isometry3d(edge.measurement))
            g2o_edge.set_information(information)
            if edge.loop:
                g2o_edge.set_robust_kernel(g2o.RobustKernelCauchy(1.0))
            optimizer.add_edge(g2o_edge)
        optimizer.initialize_optimization()
        optimizer.optimize(100)
        return [optimizer.vertex(k).estimate().matrix() for k in range(len(problem.initial))]

    poses, seconds = timed(solve, repeats)
    return score("g2o LM + Cauchy(1) on loops", problem, poses, seconds)


def bench_open3d_graph(problem: PoseGraphProblem, repeats: int) -> BackendResult:
    """Open3D global_optimization (LM, line process, prune 0.25), loop edges uncertain."""
    import open3d as o3d

    reg = o3d.pipelines.registration
    information = np.diag([SIGMA_R**-2] * 3 + [SIGMA_T**-2] * 3)  # Open3D ordering: rotation, translation
    o3d.utility.set_verbosity_level(o3d.utility.VerbosityLevel.Error)

    def solve() -> tuple[list[np.ndarray], set[int]]:
        graph = reg.PoseGraph()
        for pose in problem.initial:
            graph.nodes.append(reg.PoseGraphNode(pose))  # node pose = camera-to-world
        for edge in problem.edges:
            # Open3D edge (source, target, T) with T = pose_target^-1 pose_source: source = j, target = i.
            graph.edges.append(reg.PoseGraphEdge(edge.j, edge.i, edge.measurement, information, uncertain=edge.loop))
        option = reg.GlobalOptimizationOption(edge_prune_threshold=0.25, reference_node=0)
        reg.global_optimization(
            graph, reg.GlobalOptimizationLevenbergMarquardt(), reg.GlobalOptimizationConvergenceCriteria(), option
        )
        kept = {(e.source_node_id, e.target_node_id) for e in graph.edges}
        pruned = {n for n, e in enumerate(problem.edges) if (e.j, e.i) not in kept}
        return [np.asarray(node.pose) for node in graph.nodes], pruned

    (poses, pruned), seconds = timed(solve, repeats)
    result = score("open3d global_optimization LM", problem, poses, seconds, rejected=pruned)
    residual = score("", problem, poses, seconds)
    result.note = f"pruned edges; by residual>10cm: {residual.outliers_rejected}/{residual.outliers} out"
    return result


BACKENDS: dict[str, Callable[[PoseGraphProblem, int], BackendResult]] = {
    "gtsam LM + Cauchy(1) on loops": lambda problem, repeats: bench_gtsam_lm(problem, True, repeats),
    "gtsam LM, no robust model": lambda problem, repeats: bench_gtsam_lm(problem, False, repeats),
    "gtsam ISAM2 + Cauchy(1), incremental": bench_gtsam_isam2,
    "g2o LM + Cauchy(1) on loops": bench_g2o,
    "open3d global_optimization LM": bench_open3d_graph,
}


def walk_poses(data: Path, step: int) -> list[np.ndarray]:
    """Ground-truth camera-to-world of every ``step``-th frame of the walk."""
    return [pose for _, _, pose in read_walk(data)[::step]]


def pose_graph_worker(name: str, data: str, step: int, kf_step: int, repeats: int) -> dict[str, Any]:
    """One back-end on the (deterministic) synthetic graph; failures are reported, not raised."""
    try:
        result = BACKENDS[name](build_pose_graph(walk_poses(Path(data), step), kf_step), repeats)
        result.name = name
    except Exception as exc:  # e.g. g2opy not installed
        result = BackendResult(name, math.nan, math.nan, 0, 0, 0, 0, error=f"{type(exc).__name__}: {exc}")
    return asdict(result)


def bench_pose_graph(
    data: Path, step: int, kf_step: int, repeats: int, in_process: bool
) -> tuple[dict[str, Any], list[dict[str, Any]]]:
    """Every back-end on the same synthetic graph, each in its own process."""
    problem = build_pose_graph(walk_poses(data, step), kf_step)
    info = {
        "keyframes": len(problem.truth),
        "odometry_edges": len(problem.edges) - len(problem.loops),
        "loop_edges": len(problem.loops),
        "outlier_loop_edges": sum(e.outlier for e in problem.loops),
        "initial_ate_cm": 100.0
        * kabsch_ate(np.array([p[:3, 3] for p in problem.initial]), np.array([p[:3, 3] for p in problem.truth])),
    }
    log(f"pose graph: {info}")
    results = []
    for name in BACKENDS:
        log(f"pose graph: {name}")
        load = os.getloadavg()[0]
        result = isolated(pose_graph_worker, name, str(data), step, kf_step, repeats, in_process=in_process)
        result["load1"] = round((load + os.getloadavg()[0]) / 2, 2)
        results.append(result)
    return info, results


# ------------------------------------------------------------------------------------ place recog.


def bench_knn(sizes: tuple[int, ...], dim: int = 768, k: int = 5, queries: int = 300) -> list[dict[str, Any]]:
    """Microseconds per single top-k inner-product query: faiss IndexFlatIP vs numpy matmul + argpartition."""
    rng = np.random.default_rng(0)
    rows = []
    for size in sizes:
        database = rng.normal(size=(size, dim)).astype(np.float32)
        database /= np.linalg.norm(database, axis=1, keepdims=True)
        probes = database[rng.integers(0, size, queries)] + 0.05 * rng.normal(size=(queries, dim)).astype(np.float32)
        probes /= np.linalg.norm(probes, axis=1, keepdims=True)

        def numpy_query(q: np.ndarray, database: np.ndarray = database) -> np.ndarray:
            scores = database @ q
            top = np.argpartition(-scores, k)[:k]
            return top[np.argsort(-scores[top])]

        row: dict[str, Any] = {"size": size, "dim": dim, "k": k}
        times = []
        answers_np = []
        for q in probes:
            start = time.perf_counter()
            answers_np.append(numpy_query(q))
            times.append(time.perf_counter() - start)
        row["numpy_median_us"] = 1e6 * float(np.median(times))
        row["numpy_p90_us"] = 1e6 * float(np.percentile(times, 90))
        try:
            import faiss

            index = faiss.IndexFlatIP(dim)
            index.add(database)
            times, agree = [], 0
            for q, expected in zip(probes, answers_np, strict=True):
                start = time.perf_counter()
                _, ids = index.search(q[None, :], k)
                times.append(time.perf_counter() - start)
                agree += int(ids[0, 0] == expected[0])
            row["faiss_median_us"] = 1e6 * float(np.median(times))
            row["faiss_p90_us"] = 1e6 * float(np.percentile(times, 90))
            row["top1_agreement"] = agree / queries
            row["faiss_threads"] = faiss.omp_get_max_threads()
        except Exception as exc:
            row["faiss_error"] = f"{type(exc).__name__}: {exc}"
        log(f"knn: {row}")
        rows.append(row)
    return rows


# ---------------------------------------------------------------------------------------------- main


def versions() -> dict[str, str]:
    """Library versions (or the import error)."""
    out = {"python": platform.python_version(), "numpy": np.__version__, "opencv": cv2.__version__}
    for module, attribute in (("open3d", "__version__"), ("faiss", "__version__"), ("small_gicp", "__version__")):
        try:
            out[module] = str(getattr(__import__(module), attribute, "?"))
        except Exception as exc:
            out[module] = f"unavailable ({type(exc).__name__})"
    for module, dist in (("gtsam", "gtsam"), ("g2opy", "g2opy"), ("small_gicp", "small_gicp")):
        try:
            from importlib.metadata import version

            out[module] = version(dist)
        except Exception:
            out.setdefault(module, "?")
    return out


def fmt(value: float, digits: int = 1) -> str:
    """Number for the table, or ``-`` for NaN."""
    return "-" if value is None or not math.isfinite(value) else f"{value:.{digits}f}"


def print_table(report: dict[str, Any]) -> None:
    """Human-readable summary on stdout."""
    meta = report["meta"]
    print(f"# SLAM libraries: {meta['cpu_count']} CPUs, {meta['frames']} frames (every {meta['step']}) of the walk")
    print(
        f"threads {meta['settings']['threads']}; load average (1/5/15 min) start {meta['loadavg_start']} "
        f"end {meta['loadavg_end']}; total {meta['total_s']:.0f} s; 'load' = 1-min load during that row"
    )
    print()
    print("## Frame-to-frame odometry (constant-velocity guess)")
    print(f"| {'method':38} | frames | median ms | p90 ms | ATE cm | rejected | load | note |")
    print(f"|{'-' * 40}|-------:|----------:|-------:|-------:|---------:|-----:|------|")
    for r in report["odometry"]:
        note = r["error"] or r["note"]
        print(
            f"| {r['name']:38} | {r['frames']:6d} | {fmt(r['median_ms']):>9} | {fmt(r['p90_ms']):>6} "
            f"| {fmt(r['ate_cm'], 2):>6} | {r['rejected']:8d} | {fmt(r.get('load1', math.nan)):>4} | {note} |"
        )
    print()
    g = report["pose_graph"]["graph"]
    print(
        f"## Pose graph: {g['keyframes']} keyframes, {g['odometry_edges']} odometry + {g['loop_edges']} loop edges "
        f"({g['outlier_loop_edges']} outliers); initial ATE {g['initial_ate_cm']:.2f} cm"
    )
    print(f"| {'back-end':38} | time ms | ATE cm | outliers rejected | inliers lost | load | note |")
    print(f"|{'-' * 40}|--------:|-------:|------------------:|-------------:|-----:|------|")
    for r in report["pose_graph"]["backends"]:
        note = r["error"] or r["note"]
        rejected = f"{r['outliers_rejected']}/{r['outliers']}"
        print(
            f"| {r['name']:38} | {fmt(r['time_ms'], 2):>7} | {fmt(r['ate_cm'], 2):>6} | {rejected:>17} "
            f"| {r['inliers_lost']:>12} | {fmt(r.get('load1', math.nan)):>4} | {note} |"
        )
    print()
    load = report["knn"][0].get("load1", math.nan) if report["knn"] else math.nan
    print(f"## Place recognition: one top-5 inner-product query, 768-d float32 (us); load {fmt(load)}")
    print("| descriptors | numpy median | numpy p90 | faiss median | faiss p90 | top-1 agree |")
    print("|------------:|-------------:|----------:|-------------:|----------:|------------:|")
    for r in report["knn"]:
        print(
            f"| {r['size']:11d} | {fmt(r['numpy_median_us']):>12} | {fmt(r['numpy_p90_us']):>9} "
            f"| {fmt(r.get('faiss_median_us', math.nan)):>12} | {fmt(r.get('faiss_p90_us', math.nan)):>9} "
            f"| {fmt(r.get('top1_agreement', math.nan), 2):>11} |"
        )


def main(argv: list[str] | None = None) -> int:
    """Parse arguments, run the three benchmarks, print and save the report."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--data", type=Path, default=DATA, help="7-Scenes redkitchen walk folder")
    parser.add_argument("--step", type=int, default=3, help="subsample of the walk (3: 5 Hz)")
    parser.add_argument("--frames", type=int, default=None, help="subsampled frames per odometry method (all)")
    parser.add_argument("--rgbd-frames", type=int, default=None, help="frames for the slow Open3D RGB-D odometry")
    parser.add_argument("--kf-step", type=int, default=5, help="keyframe every N subsampled frames (pose graph)")
    parser.add_argument("--repeats", type=int, default=5, help="repeats of each pose-graph solve (median)")
    parser.add_argument("--skip-odometry", action="store_true", help="pose graph and k-NN only")
    parser.add_argument("--threads", type=int, default=THREADS, help="threads per library (OpenMP, BLAS, small_gicp)")
    parser.add_argument("--in-process", action="store_true", help="no subprocess per measurement (debugging)")
    parser.add_argument("--json", action="store_true", help="print the JSON report on stdout instead of the table")
    parser.add_argument("--out", type=Path, default=None, help="also write the JSON report here")
    args = parser.parse_args(argv)

    for variable in ("SLAM_BENCH_THREADS", "OMP_NUM_THREADS", "OPENBLAS_NUM_THREADS", "MKL_NUM_THREADS"):
        os.environ[variable] = str(args.threads)  # inherited by the spawned worker processes
    start = time.perf_counter()
    loadavg_start = [round(x, 2) for x in os.getloadavg()]
    total = len(read_walk(args.data)[:: args.step])
    frames = min(total, args.frames or total)
    rgbd_frames = min(frames, args.rgbd_frames or frames)
    log(f"load average {loadavg_start}; {frames} of {total} frames (every {args.step}) from {args.data}")

    odometry = [] if args.skip_odometry else bench_odometry(args.data, args.step, frames, rgbd_frames, args.in_process)
    graph_info, backends = bench_pose_graph(args.data, args.step, args.kf_step, args.repeats, args.in_process)
    load = os.getloadavg()[0]
    knn = isolated(bench_knn, (1000, 10000), in_process=args.in_process)
    for row in knn:
        row["load1"] = round((load + os.getloadavg()[0]) / 2, 2)

    report = {
        "meta": {
            "data": str(args.data),
            "step": args.step,
            "frames": frames,
            "rgbd_frames": rgbd_frames,
            "cpu_count": os.cpu_count(),
            "loadavg_start": loadavg_start,
            "loadavg_end": [round(x, 2) for x in os.getloadavg()],
            "total_s": time.perf_counter() - start,
            "versions": versions(),
            "settings": {"voxel_m": VOXEL, "max_corr_m": MAX_CORR, "min_overlap": MIN_OVERLAP, "threads": args.threads},
        },
        "odometry": odometry,
        "pose_graph": {"graph": graph_info, "backends": backends},
        "knn": knn,
    }
    text = json.dumps(report, indent=2, default=float)
    if args.out:
        args.out.parent.mkdir(parents=True, exist_ok=True)
        args.out.write_text(text + "\n")
        log(f"wrote {args.out}")
    if args.json:
        print(text)
    else:
        print_table(report)
    return 0


if __name__ == "__main__":
    sys.exit(main())
