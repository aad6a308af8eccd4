"""Robot-mapping core (issue 12): speed, memory and accuracy of the TSDF map, chunked mesh and occupancy grid.

Measures, on the CPU:
  integrate   one 640x480 RGB-D keyframe (7-Scenes redkitchen) at 2 cm voxels, median of the frames
  occupancy   build_occupancy over a 20 m x 20 m synthetic floor at 5 cm (surface points + 3 keyframes of rays)
  chunks      incremental ChunkedMesh.update after a 3-keyframe window in a map of >= 5,000 blocks,
              and the bytes sent vs the bytes of the whole mesh
  robot map   RobotMap.integrate of one 3-keyframe window (TSDF integration, chunk update, kept surface cloud,
              incremental occupancy) in that map, then surface() and occupancy() as the node publishes them
  memory      blocks and bytes of a 200 m2 (10 m x 20 m) synthetic floor at 2 cm
  accuracy    all frames of 7scenes_redkitchen and slambook2_diningroom (their poses): map mesh vertices vs
              the ground-truth depth points (median, p90) and completion (GT points within 5 cm of the mesh);
              occupancy vs the GT points in the band (occupied cells within 10 cm of a GT surface, free cells
              with no GT surface in them)
  first       the first integration after start (a 5-keyframe window) and after loading a 16k-block map:
              does it pay Open3D's hash-map growth? (capacity before and after each)
  beyond      a long synthetic corridor walked out and back with a block budget and a spill folder: RSS vs
              blocks mapped, for the TSDF alone and for the whole RobotMap, against the same walk without
              a budget (each run in its own process, RSS after malloc_trim as the node does after a job)

Run from the repository root:  python benchmarks/bench_mapping.py [first|beyond ...]  (no argument: all)
"""

from __future__ import annotations

import contextlib
import ctypes
import subprocess
import sys
import tempfile
import time
from dataclasses import replace
from pathlib import Path

import cv2
import numpy as np
from scipy.spatial import cKDTree

REPO_ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO_ROOT))

from showroom_ros.capture.keyframes import Keyframe  # noqa: E402
from showroom_ros.geometry.camera import CameraIntrinsics  # noqa: E402
from showroom_ros.mapping.mesh_chunks import ChunkedMesh  # noqa: E402
from showroom_ros.mapping.occupancy import (  # noqa: E402
    FREE,
    OCCUPIED,
    OccupancyConfig,
    build_occupancy,
    depth_rays,
)
from showroom_ros.mapping.robot_map import RobotMap, RobotMapConfig  # noqa: E402
from showroom_ros.mapping.volume import IntegrationReport, TsdfVolume, VolumeConfig  # noqa: E402
from showroom_ros.reconstruction.result import Reconstruction  # noqa: E402

SHARED = REPO_ROOT.parent / "shared" / "data"
K_KITCHEN = CameraIntrinsics(fx=585.0, fy=585.0, cx=320.0, cy=240.0, width=640, height=480)
K_KITCHEN_RGB = CameraIntrinsics(fx=525.0, fy=525.0, cx=320.0, cy=240.0, width=640, height=480)
K_DINING = CameraIntrinsics(fx=518.0, fy=519.0, cx=325.5, cy=253.5, width=640, height=480)


def look_at(eye: np.ndarray, target: np.ndarray) -> np.ndarray:
    forward = (target - eye) / np.linalg.norm(target - eye)
    right = np.cross(forward, [0.0, 0.0, 1.0])
    right /= np.linalg.norm(right)
    pose = np.eye(4)
    pose[:3, 0], pose[:3, 1], pose[:3, 2], pose[:3, 3] = right, np.cross(forward, right), forward, eye
    return pose


def box_depth(pose: np.ndarray, k: CameraIntrinsics, lo: np.ndarray, hi: np.ndarray) -> np.ndarray:
    v, u = np.mgrid[0 : k.height, 0 : k.width].astype(np.float64)
    rays = np.stack([(u - k.cx) / k.fx, (v - k.cy) / k.fy, np.ones_like(u)], -1) @ pose[:3, :3].T
    o = pose[:3, 3]
    with np.errstate(divide="ignore", invalid="ignore"):
        t = np.where(rays > 0, (hi - o) / rays, np.where(rays < 0, (lo - o) / rays, np.inf)).min(-1)
    return t.astype(np.float32)


def kitchen_frames() -> list[tuple[np.ndarray, np.ndarray, np.ndarray, CameraIntrinsics, CameraIntrinsics]]:
    folder = SHARED / "7scenes_redkitchen"
    frames = []
    for pose_file in sorted(folder.glob("frame-*.pose.txt")):
        stem = str(pose_file)[: -len(".pose.txt")]
        depth = cv2.imread(stem + ".depth.png", cv2.IMREAD_UNCHANGED).astype(np.float32) / 1000.0
        color = cv2.cvtColor(cv2.imread(stem + ".color.jpg"), cv2.COLOR_BGR2RGB)
        frames.append((depth, color, np.loadtxt(pose_file), K_KITCHEN, K_KITCHEN_RGB))
    return frames


def dining_frames() -> list[tuple[np.ndarray, np.ndarray, np.ndarray, CameraIntrinsics, CameraIntrinsics]]:
    folder = SHARED / "slambook2_diningroom"
    frames = []
    for line in (folder / "frames_c2w.txt").read_text().splitlines():
        if line.startswith("#") or not line.strip():
            continue
        rgb, depth_name, *numbers = line.split()
        depth = cv2.imread(str(folder / depth_name), cv2.IMREAD_UNCHANGED).astype(np.float32) / 1000.0
        color = cv2.cvtColor(cv2.imread(str(folder / rgb)), cv2.COLOR_BGR2RGB)
        frames.append((depth, color, np.array(numbers, float).reshape(4, 4), K_DINING, K_DINING))
    return frames


def backproject(depth: np.ndarray, k: CameraIntrinsics, pose: np.ndarray, depth_max: float) -> np.ndarray:
    v, u = np.nonzero((depth > 0) & (depth <= depth_max))
    z = depth[v, u].astype(np.float64)
    cam = np.stack([(u - k.cx) / k.fx * z, (v - k.cy) / k.fy * z, z], -1)
    return cam @ pose[:3, :3].T + pose[:3, 3]


def bench_integrate() -> None:
    frames = kitchen_frames()
    volume = TsdfVolume(VolumeConfig(voxel_size=0.02, depth_max=4.0))
    times = []
    for depth, color, pose, k, kc in frames:
        start = time.perf_counter()
        volume.integrate(depth, k, pose, color, kc)
        times.append(time.perf_counter() - start)
    print(
        f"integrate 640x480 RGB-D at 2 cm: median {np.median(times[1:]) * 1e3:.0f} ms, "
        f"max {max(times[1:]) * 1e3:.0f} ms over {len(times) - 1} frames (first {times[0] * 1e3:.0f} ms)"
    )


def bench_occupancy() -> None:
    rng = np.random.default_rng(0)
    lo, hi = np.array([-10.0, -10.0, 0.0]), np.array([10.0, 10.0, 2.4])
    k = CameraIntrinsics(fx=525.0, fy=525.0, cx=320.0, cy=240.0, width=640, height=480)
    # The map's surface: walls, floor and 40 pillars, sampled every 2 cm in the band region.
    xs = np.arange(-10, 10, 0.02)
    zs = np.arange(0, 2.4, 0.05)
    walls = [np.stack(np.meshgrid(xs, [y], zs), -1).reshape(-1, 3) for y in (-10.0, 10.0)]
    walls += [np.stack(np.meshgrid([x], xs, zs), -1).reshape(-1, 3) for x in (-10.0, 10.0)]
    floor = np.stack(np.meshgrid(xs[::2], xs[::2], [0.0]), -1).reshape(-1, 3)
    pillars = rng.uniform(-9, 9, (40, 2))
    ring = np.stack([np.cos(np.linspace(0, 2 * np.pi, 40)), np.sin(np.linspace(0, 2 * np.pi, 40))], -1) * 0.15
    pillar_points = np.concatenate(
        [
            np.concatenate([(p + ring)[:, None].repeat(len(zs), 1), zs[None, :, None].repeat(40, 0)], -1).reshape(-1, 3)
            for p in pillars
        ]
    )
    surface = np.concatenate([*walls, floor, pillar_points])
    poses = [look_at(np.array([x, y, 1.0]), np.array([x + 3, y + 1, 0.5])) for x, y in rng.uniform(-8, 5, (3, 2))]
    rays = [depth_rays(box_depth(p, k, lo, hi), k, p, stride=4, depth_max=8.0) for p in poses]
    config = OccupancyConfig(resolution=0.05)
    times = []
    for _ in range(3):
        start = time.perf_counter()
        grid = build_occupancy(surface, rays, config)
        times.append(time.perf_counter() - start)
    print(
        f"occupancy {grid.width}x{grid.height} cells (20 m x 20 m at 5 cm), {len(surface)} surface points, "
        f"{sum(len(r.endpoints) for r in rays)} rays: median {np.median(times) * 1e3:.0f} ms"
    )


def bench_chunks_and_memory() -> None:
    k = CameraIntrinsics(fx=525.0, fy=525.0, cx=320.0, cy=240.0, width=640, height=480)
    lo, hi = np.array([0.0, 0.0, 0.0]), np.array([10.0, 20.0, 2.4])
    rng = np.random.default_rng(1)
    volume = TsdfVolume(VolumeConfig(voxel_size=0.02, depth_max=4.0, block_budget=200_000))
    chunks = ChunkedMesh(volume, chunk_size_m=1.0)
    # Walk a lawnmower path over the 10 m x 20 m floor, looking down at the floor and around at the walls.
    path = [(x, y) for y in np.arange(1.0, 19.5, 1.5) for x in np.arange(1.0, 9.5, 2.0)]
    integrate_times = []
    for x, y in path:
        eye = np.array([x, y, 1.3])
        target = np.array([x + rng.uniform(-1.5, 1.5), y + rng.uniform(0.5, 1.5), 0.0])
        pose = look_at(eye, target)
        start = time.perf_counter()
        volume.integrate(box_depth(pose, k, lo, hi), k, pose)
        integrate_times.append(time.perf_counter() - start)
    start = time.perf_counter()
    full = chunks.update(None)
    full_seconds = time.perf_counter() - start
    print(
        f"memory: 200 m2 floor at 2 cm after {len(path)} keyframes: {volume.block_count} blocks, "
        f"{volume.memory_bytes() / 2**20:.0f} MiB of voxels (budget {volume.config.block_budget} blocks = "
        f"{volume.config.block_budget * volume.memory_bytes() / max(volume.block_count, 1) / 2**20:.0f} MiB)"
    )
    print(
        f"chunks: full extraction {len(full.changed)} chunks, {full.nbytes / 2**20:.1f} MiB, "
        f"{full_seconds * 1e3:.0f} ms"
    )
    window = []
    for x, y in [(5.0, 10.0), (5.3, 10.2), (5.6, 10.4)]:
        pose = look_at(np.array([x, y, 1.3]), np.array([x + 1.0, y + 1.0, 0.0]))
        window.append(volume.integrate(box_depth(pose, k, lo, hi), k, pose))
    merged = IntegrationReport(
        np.unique(np.concatenate([r.touched_blocks for r in window]), axis=0),
        np.concatenate([r.dropped_blocks for r in window]),
    )
    start = time.perf_counter()
    update = chunks.update(merged)
    seconds = time.perf_counter() - start
    print(
        f"chunks: incremental update after a 3-keyframe window in a map of {volume.block_count} blocks: "
        f"{seconds * 1e3:.0f} ms, {len(update.changed)} of {len(chunks.published)} chunks, "
        f"{update.nbytes / 2**20:.2f} MiB ({update.nbytes / max(full.nbytes, 1):.1%} of the whole mesh)"
    )


def bench_robot_map() -> None:
    """End to end per window, as the node runs it: integrate + chunks + surface + occupancy."""
    k = CameraIntrinsics(fx=525.0, fy=525.0, cx=320.0, cy=240.0, width=640, height=480)
    lo, hi = np.array([0.0, 0.0, 0.0]), np.array([10.0, 20.0, 2.4])
    rng = np.random.default_rng(1)
    image = np.full((k.height, k.width, 3), 128, np.uint8)

    def window(poses: list[np.ndarray], stamp: int) -> tuple[Reconstruction, list[Keyframe]]:
        frames = [
            Keyframe(image=image, stamp_ns=stamp + i, intrinsics=k, depth=box_depth(p, k, lo, hi), pose=p)
            for i, p in enumerate(poses)
        ]
        empty = np.zeros((0, 3))
        recon = Reconstruction(empty, empty.astype(np.uint8), np.zeros(0), np.stack(poses), [k] * len(poses))
        return recon, frames

    config = RobotMapConfig(volume=VolumeConfig(voxel_size=0.02, depth_max=4.0, block_budget=200_000))
    robot_map = RobotMap(config)
    path = [(x, y) for y in np.arange(1.0, 19.5, 1.5) for x in np.arange(1.0, 9.5, 2.0)]
    poses = []
    for x, y in path:
        target = np.array([x + rng.uniform(-1.5, 1.5), y + rng.uniform(0.5, 1.5), 0.0])
        poses.append(look_at(np.array([x, y, 1.3]), target))
    start = time.perf_counter()
    for first in range(0, len(poses), 5):
        robot_map.integrate(*window(poses[first : first + 5], 1000 * first))
    build = time.perf_counter() - start
    times = []
    for repeat, (x, y) in enumerate([(5.0, 10.0), (3.0, 6.0), (7.0, 14.0)]):
        poses = [look_at(np.array([x + d, y + d, 1.3]), np.array([x + d + 1, y + d + 1, 0.0])) for d in (0, 0.3, 0.6)]
        recon, frames = window(poses, 10**6 * (repeat + 1))
        start = time.perf_counter()
        update = robot_map.integrate(recon, frames)
        points, _ = robot_map.surface()
        grid = robot_map.occupancy()
        times.append(time.perf_counter() - start)
    print(
        f"robot map: {len(path)} keyframes in windows of 5 took {build:.1f} s; then a 3-keyframe window in a map of "
        f"{robot_map.block_count} blocks, integrate + chunks + surface + occupancy: "
        f"{', '.join(f'{t * 1e3:.0f}' for t in times)} ms ({len(update.chunks.changed)} chunks, "
        f"{update.chunks.nbytes / 2**20:.2f} MiB, {len(points)} surface points, grid {grid.width}x{grid.height})"
    )


def bench_accuracy(name: str, frames: list, floor_axis_from_first: bool) -> None:
    volume = TsdfVolume(VolumeConfig(voxel_size=0.02, depth_max=4.0))
    rays, gt = [], []
    for depth, color, pose, k, kc in frames:
        volume.integrate(depth, k, pose, color, kc)
        rays.append(depth_rays(depth, k, pose, stride=4, depth_max=4.0))
        gt.append(backproject(depth, k, pose, 4.0)[::3])
    gt_points = np.concatenate(gt)
    mesh = volume.extract_mesh()
    vertices = np.asarray(mesh.vertices)
    error, _ = cKDTree(gt_points).query(vertices)
    completion, _ = cKDTree(vertices).query(gt_points[::5])
    print(
        f"accuracy {name} ({len(frames)} frames, 2 cm): mesh {len(mesh.triangles)} triangles, "
        f"median {np.median(error) * 100:.1f} cm, p90 {np.percentile(error, 90) * 100:.1f} cm, "
        f"completion within 5 cm {np.mean(completion < 0.05):.1%}"
    )
    # Occupancy needs z up: these worlds are not gravity-aligned, so the map is rotated so that the first
    # camera's -y (up in the image) is +z, and the floor is the 1st percentile of heights.
    up = -frames[0][2][:3, 1] if floor_axis_from_first else np.array([0.0, 0.0, 1.0])
    x_axis = np.cross(up, [0.0, 0.0, 1.0]) if abs(up[2]) < 0.9 else np.cross(up, [1.0, 0.0, 0.0])
    x_axis /= np.linalg.norm(x_axis)
    rotation = np.stack([x_axis, np.cross(up, x_axis), up])  # rows: new x, y, z in old coordinates
    surface, _ = volume.extract_point_cloud()
    surface = surface @ rotation.T
    gt_rot = gt_points @ rotation.T
    for ray in rays:
        ray.origin = rotation @ ray.origin
        ray.endpoints = ray.endpoints @ rotation.T
    floor = float(np.percentile(gt_rot[:, 2], 1))
    config = OccupancyConfig(resolution=0.05, floor_z=floor, min_height=0.1, max_height=1.5)
    grid = build_occupancy(surface, rays, config)
    band = gt_rot[(gt_rot[:, 2] >= floor + 0.1) & (gt_rot[:, 2] <= floor + 1.5)]
    rows, cols = np.nonzero(grid.data == OCCUPIED)
    centres = np.stack([grid.origin_xy[0] + (cols + 0.5) * 0.05, grid.origin_xy[1] + (rows + 0.5) * 0.05], -1)
    near, _ = cKDTree(band[:, :2]).query(centres) if len(centres) else (np.zeros(0), None)
    r, c = grid.cell_of(band[:, :2])
    inside = (r >= 0) & (r < grid.height) & (c >= 0) & (c < grid.width)
    gt_cells = np.zeros(grid.data.shape, bool)
    gt_cells[r[inside], c[inside]] = True
    free = grid.data == FREE
    print(
        f"occupancy {name}: {grid.width}x{grid.height} cells, {free.sum()} free, {len(rows)} occupied; "
        f"occupied within 10 cm of a GT surface {np.mean(near <= 0.1 + 0.0354):.1%}; "
        f"free cells without GT surface {1 - (free & gt_cells).sum() / max(free.sum(), 1):.1%}"
    )


def floor_poses(count: int, seed: int = 1) -> list[np.ndarray]:
    """The lawnmower walk over the 10 m x 20 m floor of bench_chunks_and_memory."""
    rng = np.random.default_rng(seed)
    path = [(x, y) for y in np.arange(1.0, 19.5, 1.5) for x in np.arange(1.0, 9.5, 2.0)][:count]
    return [
        look_at(np.array([x, y, 1.3]), np.array([x + rng.uniform(-1.5, 1.5), y + rng.uniform(0.5, 1.5), 0.0]))
        for x, y in path
    ]


def bench_first_integration() -> None:
    """The first integration after start and after a load: before, it paid Open3D's hash-map growth.

    Uses only what the volume API had before the reserve (so the same function measures the old code),
    plus ``reserve_ahead`` where it exists.
    """
    k = CameraIntrinsics(fx=525.0, fy=525.0, cx=320.0, cy=240.0, width=640, height=480)
    lo, hi = np.array([0.0, 0.0, 0.0]), np.array([10.0, 20.0, 2.4])
    config = VolumeConfig(voxel_size=0.02, depth_max=4.0, block_budget=60_000)  # the node's defaults

    def window(volume: TsdfVolume, poses: list[np.ndarray]) -> tuple[float, int, int]:
        capacity = volume.grid.hashmap().capacity()
        start = time.perf_counter()
        for pose in poses:
            volume.integrate(box_depth(pose, k, lo, hi), k, pose)
        return time.perf_counter() - start, capacity, volume.grid.hashmap().capacity()

    # After start: a wide first window (5 keyframes turning round in the middle of the open floor).
    centre = np.array([5.0, 10.0, 1.3])
    turn = [2 * np.pi * i / 5 for i in range(5)]
    wide = [look_at(centre, centre + np.array([3 * np.cos(a), 3 * np.sin(a), -1.1])) for a in turn]
    start = time.perf_counter()
    fresh = TsdfVolume(config)
    made = time.perf_counter() - start
    seconds, before, after = window(fresh, wide)
    print(
        f"first: a new map (made in {made * 1e3:.0f} ms, capacity {before}): the first 5-keyframe window, "
        f"{fresh.block_count} blocks, took {seconds * 1e3:.0f} ms; capacity {before} -> {after}"
    )
    seconds, before, after = window(fresh, floor_poses(5, seed=3))
    print(f"first: the second window {seconds * 1e3:.0f} ms (capacity {before} -> {after})")
    # After a load: a map of ~16k blocks saved and loaded, then one window.
    built = TsdfVolume(config)
    for pose in floor_poses(65):
        built.integrate(box_depth(pose, k, lo, hi), k, pose)
    with tempfile.TemporaryDirectory() as folder:
        built.save(Path(folder) / "floor.npz")
        start = time.perf_counter()
        loaded = TsdfVolume.load(Path(folder) / "floor.npz")
        load_seconds = time.perf_counter() - start
    revisit = [look_at(np.array([5.0 + d, 10.0 + d, 1.3]), np.array([6.0 + d, 11.0 + d, 0.0])) for d in (0, 0.3, 0.6)]
    seconds, before, after = window(loaded, revisit)
    print(
        f"first: after loading a map of {loaded.block_count} blocks ({load_seconds:.1f} s, capacity {before}), "
        f"the first 3-keyframe window took {seconds * 1e3:.0f} ms; capacity {before} -> {after}"
    )
    # Growing ahead, while nothing waits on the map (the node: after publishing), against growing inside.
    for ahead in (False, True) if hasattr(loaded, "reserve_ahead") else (False,):
        grown = TsdfVolume(config)
        inside, outside, windows = [], [], floor_poses(65)
        for first in range(0, len(windows), 5):
            start = time.perf_counter()
            if ahead and grown.reserve_ahead():
                outside.append(time.perf_counter() - start)
            seconds, before, after = window(grown, windows[first : first + 5])
            inside.append((seconds, after != before))
        print(
            f"first: 65 keyframes in windows of 5, {'with' if ahead else 'without'} reserve_ahead() between windows "
            f"({grown.block_count} blocks at the end): {len(outside)} growths outside integration "
            f"({', '.join(f'{a * 1e3:.0f}' for a in outside) or '-'} ms), {sum(g for _, g in inside)} inside; "
            f"slowest window {max(t for t, _ in inside) * 1e3:.0f} ms, all windows {sum(t for t, _ in inside):.1f} s"
        )


def _rss_mib() -> float:
    """Resident memory after handing freed heap back (glibc malloc_trim, as the node does after each job)."""
    with contextlib.suppress(OSError):
        ctypes.CDLL("libc.so.6").malloc_trim(0)
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 1024
    return float("nan")


CORRIDOR_LENGTH = 60.0
CORRIDOR_BUDGET = 6000  # blocks: about 60 MB of voxels


def corridor_run(what: str, budget: int | None) -> None:
    """One corridor walk in this process (``what``: volume | robot-map); prints RSS vs blocks mapped."""
    k = CameraIntrinsics(fx=262.5, fy=262.5, cx=160.0, cy=120.0, width=320, height=240)
    lo, hi = np.array([0.0, 0.0, 0.0]), np.array([CORRIDOR_LENGTH, 2.0, 2.4])
    xs = np.arange(0.5, CORRIDOR_LENGTH - 0.5, 0.25)
    out = [look_at(np.array([x, 1.0, 1.3]), np.array([x + 2.5, 1.0 + 0.6 * np.sin(x), 0.8])) for x in xs]
    back = [look_at(np.array([x, 1.0, 1.3]), np.array([x - 2.5, 1.0 + 0.6 * np.cos(x), 0.8])) for x in xs[::-1]]
    image = np.full((k.height, k.width, 3), 128, np.uint8)
    with tempfile.TemporaryDirectory() as folder:
        volume_config = VolumeConfig(voxel_size=0.02, depth_max=4.0, block_budget=budget or 10**7)
        if budget is not None:
            volume_config = replace(volume_config, spill_dir=folder)
        baseline = _rss_mib()  # the start: before the map (its hash map's capacity, zero-filled by Open3D, counts)
        robot_map = RobotMap(RobotMapConfig(volume=volume_config)) if what == "robot-map" else None
        volume = robot_map.volume if robot_map is not None else TsdfVolume(volume_config)
        rows, times = [], []
        poses = out + back
        for first in range(0, len(poses), 3):
            window = poses[first : first + 3]
            depths = [box_depth(p, k, lo, hi) for p in window]
            start = time.perf_counter()
            if robot_map is None:
                for pose, depth in zip(window, depths, strict=True):
                    volume.integrate(depth, k, pose)
            else:
                frames = [
                    Keyframe(image=image, stamp_ns=first + i, intrinsics=k, depth=d, pose=p)
                    for i, (p, d) in enumerate(zip(window, depths, strict=True))
                ]
                empty = np.zeros((0, 3))
                recon = Reconstruction(empty, empty.astype(np.uint8), np.zeros(0), np.stack(window), [k] * len(window))
                robot_map.integrate(recon, frames)
            times.append(time.perf_counter() - start)
            if hasattr(volume, "reserve_ahead"):
                volume.reserve_ahead()  # the node does it after publishing
            if (first // 3) % 20 == 0 or first + 3 >= len(poses):
                leg = "out" if first < len(out) else "back"
                cache = getattr(robot_map.chunks, "nbytes", 0) / 2**20 if robot_map is not None else 0.0
                rows.append((leg, volume.block_count, volume.memory_bytes() / 2**20, cache, _rss_mib() - baseline))
        label = f"{what}, budget {budget} blocks + spill" if budget else f"{what}, no budget"
        stored = getattr(volume, "stored_bytes", 0) / 2**20
        print(
            f"beyond: {label}: {len(poses)} keyframes ({CORRIDOR_LENGTH:.0f} m corridor out and back), per window of 3 "
            f"median {np.median(times) * 1e3:.0f} ms, p90 {np.percentile(times, 90) * 1e3:.0f} ms, "
            f"max {max(times) * 1e3:.0f} ms; on disk at the end {stored:.1f} MiB"
        )
        print("beyond:   leg  | blocks mapped | voxels in memory MiB | chunk cache MiB | RSS above the start MiB")
        for leg, blocks, voxels, cache, rss in rows:
            print(f"beyond:   {leg:4s} | {blocks:13d} | {voxels:20.0f} | {cache:15.0f} | {rss:8.0f}")


def bench_beyond_budget() -> None:
    """Each corridor run in a process of its own, so that one run's freed memory does not hide another's."""
    for what in ("volume", "robot-map"):
        for budget in (None, CORRIDOR_BUDGET):
            arguments = [sys.executable, "-P", __file__, "corridor", what, str(budget or 0)]
            result = subprocess.run(arguments, capture_output=True, text=True, check=False)
            print(result.stdout, end="")
            if result.returncode:
                print(f"beyond: {what} run failed: {result.stderr[-2000:]}")


def main() -> None:
    print(f"CPU Open3D; load average at the start {Path('/proc/loadavg').read_text()}", end="")
    chosen = sys.argv[1:]
    if chosen[:1] == ["corridor"]:
        corridor_run(chosen[1], int(chosen[2]) or None)
        return
    benches = {
        "integrate": bench_integrate,
        "occupancy": bench_occupancy,
        "chunks": bench_chunks_and_memory,
        "robot-map": bench_robot_map,
        "accuracy": lambda: (
            bench_accuracy("7scenes_redkitchen", kitchen_frames(), True),
            bench_accuracy("slambook2_diningroom", dining_frames(), True),
        ),
        "first": bench_first_integration,
        "beyond": bench_beyond_budget,
    }
    unknown = set(chosen) - set(benches)
    if unknown:
        raise SystemExit(f"unknown benchmarks {sorted(unknown)}; choose from {sorted(benches)}")
    for name in chosen or benches:
        benches[name]()
    print(f"load average at the end {Path('/proc/loadavg').read_text()}", end="")


if __name__ == "__main__":
    main()
