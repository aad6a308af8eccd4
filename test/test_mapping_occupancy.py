"""Occupancy grid from the map and keyframe rays: a box room with a pillar, exact depth, generated cameras."""

from __future__ import annotations

import numpy as np
import pytest
from test_mapping_volume import ROOM_MAX, ROOM_MIN, SMALL_K, look_at

from showroom_ros.mapping.occupancy import FREE, OCCUPIED, UNKNOWN, OccupancyConfig, Rays, build_occupancy, depth_rays
from showroom_ros.mapping.volume import TsdfVolume, VolumeConfig

SEEDS = [int(s) for s in np.random.default_rng(424242).integers(0, 2**31 - 1, 6)]
PILLAR_MIN = np.array([0.6, -0.5, 0.0])
PILLAR_MAX = np.array([1.1, 0.0, 2.4])


def _rays_cam(k=SMALL_K):
    v, u = np.mgrid[0 : k.height, 0 : k.width].astype(np.float64)
    return np.stack([(u - k.cx) / k.fx, (v - k.cy) / k.fy, np.ones_like(u)], axis=-1)


def room_with_pillar_depth(pose: np.ndarray, k=SMALL_K) -> np.ndarray:
    """Exact camera-z depth of a box room with a floor-to-ceiling pillar, from a camera inside the room."""
    rays = _rays_cam(k) @ pose[:3, :3].T
    origin = pose[:3, 3]
    with np.errstate(divide="ignore", invalid="ignore"):
        t_exit = np.where(
            rays > 0, (ROOM_MAX - origin) / rays, np.where(rays < 0, (ROOM_MIN - origin) / rays, np.inf)
        ).min(-1)
        t1 = (PILLAR_MIN - origin) / rays
        t2 = (PILLAR_MAX - origin) / rays
    t_near = np.nanmax(np.minimum(t1, t2), axis=-1)
    t_far = np.nanmin(np.maximum(t1, t2), axis=-1)
    hits_pillar = (t_near <= t_far) & (t_near > 0)
    return np.where(hits_pillar, np.minimum(t_near, t_exit), t_exit).astype(np.float32)


def cameras(rng: np.random.Generator, count: int) -> list[np.ndarray]:
    poses = []
    while len(poses) < count:
        eye = np.append(rng.uniform(ROOM_MIN[:2] + 0.4, ROOM_MAX[:2] - 0.4), rng.uniform(0.5, 1.2))
        if np.all(eye[:2] > PILLAR_MIN[:2] - 0.2) and np.all(eye[:2] < PILLAR_MAX[:2] + 0.2):
            continue
        target = np.append(rng.uniform(ROOM_MIN[:2], ROOM_MAX[:2]), rng.uniform(0.0, 1.0))
        if np.linalg.norm((target - eye)[:2]) > 0.5:
            poses.append(look_at(eye, target))
    return poses


def _surface(depth: np.ndarray, pose: np.ndarray) -> np.ndarray:
    return depth_rays(depth, SMALL_K, pose, stride=1, depth_max=10.0).endpoints


def _segment_distance(p: np.ndarray, a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """Distance of 2D points p (M, 2) to their nearest segment a-b (N, 2): (M,)."""
    ab = b - a
    t = np.clip(((p[:, None] - a[None]) * ab[None]).sum(-1) / np.maximum((ab * ab).sum(-1), 1e-12)[None], 0, 1)
    return np.linalg.norm(p[:, None] - (a[None] + t[..., None] * ab[None]), axis=-1).min(axis=1)


@pytest.mark.parametrize("seed", SEEDS)
def test_cells_follow_the_room_the_pillar_and_the_rays(seed: int) -> None:
    rng = np.random.default_rng(seed)
    config = OccupancyConfig(resolution=0.1, min_height=0.1, max_height=1.5, padding=0.5)
    poses = cameras(rng, 4)
    depths = [room_with_pillar_depth(p) for p in poses]
    surface = np.concatenate([_surface(d, p) for d, p in zip(depths, poses, strict=True)])
    rays = [depth_rays(d, SMALL_K, p, stride=3, depth_max=10.0) for d, p in zip(depths, poses, strict=True)]
    grid = build_occupancy(surface, rays, config)
    assert set(np.unique(grid.data)) <= {FREE, OCCUPIED, UNKNOWN}
    res = grid.resolution
    rows, cols = np.mgrid[0 : grid.height, 0 : grid.width]
    centre = np.stack([grid.origin_xy[0] + (cols + 0.5) * res, grid.origin_xy[1] + (rows + 0.5) * res], -1)

    # Every surface point in the band marks its cell occupied; no occupied cell lacks one.
    band = surface[(surface[:, 2] >= 0.1) & (surface[:, 2] <= 1.5)]
    r, c = grid.cell_of(band[:, :2])
    expected = np.zeros(grid.data.shape, bool)
    expected[r, c] = True
    np.testing.assert_array_equal(grid.data == OCCUPIED, expected, err_msg=f"seed {seed}")

    # Outside the room (beyond a cell of slack) nothing was observed.
    outside = np.any((centre < ROOM_MIN[:2] - res) | (centre > ROOM_MAX[:2] + res), axis=-1)
    assert np.all(grid.data[outside] == UNKNOWN), f"seed {seed}"
    # Inside the pillar (a cell away from its faces) nothing is free: rays stop at its surface.
    in_pillar = np.all((centre > PILLAR_MIN[:2] + res) & (centre < PILLAR_MAX[:2] - res), axis=-1)
    assert not np.any(grid.data[in_pillar] == FREE), f"seed {seed}"

    # Every free cell lies on a ray's in-band stretch, and every such stretch is free or occupied.
    free_centres = centre[grid.data == FREE]
    assert len(free_centres) > 50, f"seed {seed}"
    pick = rng.choice(len(free_centres), min(300, len(free_centres)), replace=False)
    ends = np.concatenate([r.endpoints for r in rays])
    origins = np.concatenate([np.broadcast_to(r.origin, r.endpoints.shape) for r in rays])
    distance = _segment_distance(free_centres[pick], origins[:, :2], ends[:, :2])
    assert np.all(distance <= res * 0.75), f"seed {seed}: free cell {distance.max():.3f} m from every ray"
    for ray in rays:
        # Midpoint of the first 10% of each ray, when it is in the band, is observed.
        mid = ray.origin + 0.1 * (ray.endpoints - ray.origin)
        mid = mid[(mid[:, 2] >= 0.1) & (mid[:, 2] <= 1.5) & (np.linalg.norm(ray.endpoints - ray.origin, axis=1) > 1.5)]
        r, c = grid.cell_of(mid[:, :2])
        # Sampling every half cell may cut a cell's corner without a sample in it: allow a sliver.
        missed = (grid.data[r, c] == UNKNOWN).mean() if len(r) else 0.0
        assert missed < 0.01, f"seed {seed}: {missed:.3%} of in-band ray points left unknown"


def test_rays_entirely_above_or_below_the_band_observe_nothing() -> None:
    config = OccupancyConfig(resolution=0.05, min_height=0.2, max_height=1.0)
    high = Rays(origin=np.array([0.0, 0.0, 2.0]), endpoints=np.array([[3.0, 0.0, 1.8], [0.0, 3.0, 1.5]]))
    low = Rays(origin=np.array([0.0, 0.0, 0.1]), endpoints=np.array([[3.0, 1.0, 0.05]]))
    grid = build_occupancy(np.zeros((0, 3)), [high, low], config)
    assert not np.any(grid.data == FREE)
    slanted = Rays(origin=np.array([0.0, 0.0, 2.0]), endpoints=np.array([[2.0, 0.0, 0.0]]))
    grid = build_occupancy(np.zeros((0, 3)), [slanted], config)
    free = np.argwhere(grid.data == FREE)
    xs = grid.origin_xy[0] + (free[:, 1] + 0.5) * grid.resolution
    # z = 2 - x along the ray: in the band [0.2, 1.0] for x in [1.0, 1.8] (minus the stop margin near the end).
    assert xs.min() >= 1.0 - grid.resolution and xs.max() <= 1.8 + grid.resolution and len(free) >= 14


def test_grid_from_the_tsdf_map_sees_the_pillar() -> None:
    rng = np.random.default_rng(5)
    volume = TsdfVolume(VolumeConfig(voxel_size=0.04, depth_max=6.0))
    poses = cameras(rng, 5)
    rays = []
    for pose in poses:
        depth = room_with_pillar_depth(pose)
        volume.integrate(depth, SMALL_K, pose)
        rays.append(depth_rays(depth, SMALL_K, pose, stride=2, depth_max=6.0))
    points, _ = volume.extract_point_cloud()
    grid = build_occupancy(points, rays, OccupancyConfig(resolution=0.05))
    # Points of the pillar faces seen by a camera are occupied within a cell.
    r, c = grid.cell_of(np.array([[0.85, -0.5], [0.6, -0.25], [1.1, -0.25], [0.85, 0.0]]))
    near = [
        np.any(grid.data[max(i - 1, 0) : i + 2, max(j - 1, 0) : j + 2] == OCCUPIED) for i, j in zip(r, c, strict=True)
    ]
    assert sum(near) >= 2
    assert (grid.data == FREE).sum() > (grid.data == OCCUPIED).sum()


def test_empty_input_gives_an_empty_grid() -> None:
    grid = build_occupancy(np.zeros((0, 3)), [], OccupancyConfig())
    assert grid.data.shape == (0, 0)


def test_non_finite_surface_points_are_ignored() -> None:
    config = OccupancyConfig(resolution=0.1, padding=0.2)
    good = np.array([[0.05, 0.05, 0.5], [1.05, 0.55, 1.0]])
    bad = np.array([[np.nan, 0.0, 0.5], [0.0, np.inf, 0.5], [-np.inf, 1.0, 0.5]])
    grid = build_occupancy(np.concatenate([good, bad]), [], config)
    clean = build_occupancy(good, [], config)
    np.testing.assert_array_equal(grid.data, clean.data)
    assert grid.origin_xy == clean.origin_xy and (grid.data == OCCUPIED).sum() == 2
