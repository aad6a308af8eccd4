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

Run from the repository root:  python benchmarks/bench_mapping.py
"""

from __future__ import annotations

import sys
import time
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


def main() -> None:
    print(f"CPU Open3D; load average at the start {Path('/proc/loadavg').read_text()}")
    bench_integrate()
    bench_occupancy()
    bench_chunks_and_memory()
    bench_robot_map()
    bench_accuracy("7scenes_redkitchen", kitchen_frames(), True)
    bench_accuracy("slambook2_diningroom", dining_frames(), True)


if __name__ == "__main__":
    main()
