"""Screened Poisson surface: normal orientation, trimming of invented surfaces, passes, real data."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
from scipy.spatial import cKDTree

from showroom_ros.io.datasets import load_frame_folder
from showroom_ros.reconstruction.result import Reconstruction, TriangleMesh
from showroom_ros.reconstruction.rgbd import fuse_rgbd
from showroom_ros.reconstruction.surface import (
    SurfaceConfig,
    attach_mesh,
    decimate_mesh,
    orient_normals_to_cameras,
    reconstruct_surface,
    surface_support,
)

CAMERAS = np.array([[0.0, -0.5, 0.6], [0.3, -0.6, 0.5]])


def open_room(points_per_face: int = 3000, seed: int = 0) -> np.ndarray:
    """Floor z = 0 and three 1 m walls (x = -1, x = 1, y = 1) of a 2 x 2 m room: open at the front and top."""
    rng = np.random.default_rng(seed)
    n = points_per_face
    floor = np.c_[rng.uniform(-1, 1, (n, 2)), np.zeros(n)]
    left = np.c_[np.full(n, -1.0), rng.uniform(-1, 1, n), rng.uniform(0, 1, n)]
    right = np.c_[np.full(n, 1.0), rng.uniform(-1, 1, n), rng.uniform(0, 1, n)]
    back = np.c_[rng.uniform(-1, 1, n), np.full(n, 1.0), rng.uniform(0, 1, n)]
    return np.concatenate([floor, left, right, back])


def test_normals_are_flipped_towards_the_cameras() -> None:
    rng = np.random.default_rng(1)
    points = np.c_[rng.uniform(-1, 1, (500, 2)), np.full(500, 2.0)]
    normals = np.tile([0.0, 0.0, 1.0], (500, 1)) * rng.choice([-1.0, 1.0], size=(500, 1))
    oriented = orient_normals_to_cameras(points, normals, np.zeros((1, 3)))
    np.testing.assert_array_equal(oriented[:, 2], -1.0)
    # With poses, a camera looking away from the points does not vote: the one facing them decides.
    facing, away = np.eye(4), np.eye(4)
    facing[:3, 3] = [0.0, 0.0, 0.5]
    away[:3, 3] = [0.0, 0.0, 2.3]  # behind the plane, looking further along +z, away from it
    oriented = orient_normals_to_cameras(points, normals, np.stack([facing, away]))
    np.testing.assert_array_equal(oriented[:, 2], -1.0)
    # Turned round to face the plane from 0.2 m behind it: where both see the plane the nearer camera
    # wins; beyond its 70-degree cone only the front camera votes.
    away[:3, :3] = np.diag([-1.0, 1.0, -1.0])
    away[:3, 3] = [0.0, 0.0, 2.2]
    oriented = orient_normals_to_cameras(points, normals, np.stack([facing, away]))
    lateral = np.linalg.norm(points[:, :2], axis=1)
    assert (oriented[lateral < 0.4, 2] == 1.0).all()
    assert (oriented[lateral > 0.8, 2] == -1.0).all()
    assert orient_normals_to_cameras(points, normals, None) is normals


def test_open_room_mesh_stays_on_the_samples_and_invents_no_roof() -> None:
    points = open_room()
    colors = np.tile(np.array([[200, 40, 40]], np.uint8), (len(points), 1))
    timings: dict[str, float] = {}
    mesh = reconstruct_surface(points, colors, CAMERAS, SurfaceConfig(depth=7), timings)
    assert isinstance(mesh, TriangleMesh)
    assert mesh.vertices.dtype == np.float32 and mesh.triangles.dtype == np.int32
    assert mesh.vertex_colors.dtype == np.uint8 and mesh.vertex_colors.shape == mesh.vertices.shape
    assert mesh.num_triangles > 1000
    assert {"normals", "poisson", "trim"} <= set(timings)
    distances, _ = cKDTree(points).query(mesh.vertices)
    assert distances.max() < 0.06  # no closing lid or front wall
    assert np.median(distances) < 0.02
    assert (mesh.vertices[:, 2] < 1.06).all() and (mesh.vertices[:, 1] > -1.06).all()
    assert np.abs(mesh.vertex_colors.astype(int) - [200, 40, 40]).max() <= 2
    # Every input face is covered: some vertex lies near each sample (completion).
    coverage, _ = cKDTree(mesh.vertices).query(points)
    assert np.mean(coverage < 0.05) > 0.97


def test_without_trimming_poisson_invents_surfaces() -> None:
    """The control for the test above: the trimming is what removes them."""
    points = open_room()
    untrimmed = SurfaceConfig(depth=7, density_quantile=0.0, max_distance_factor=0.0, crop_margin=10.0)
    mesh = reconstruct_surface(points, None, CAMERAS, untrimmed)
    distances, _ = cKDTree(points).query(mesh.vertices)
    assert distances.max() > 0.1


def test_two_passes_run_and_stay_on_the_samples() -> None:
    points = open_room(2000, seed=3)
    timings: dict[str, float] = {}
    mesh = reconstruct_surface(points, None, CAMERAS, SurfaceConfig(depth=6, passes=2), timings)
    distances, _ = cKDTree(points).query(mesh.vertices)
    assert mesh.num_triangles > 500 and distances.max() < 0.1


def test_bad_inputs_and_config_raise() -> None:
    with pytest.raises(ValueError, match="at least"):
        reconstruct_surface(np.zeros((5, 3)), None, None)
    with pytest.raises(ValueError, match=r"\(N, 3\)"):
        reconstruct_surface(np.zeros((50, 2)), None, None)
    with pytest.raises(ValueError, match="colors"):
        reconstruct_surface(open_room(100), np.zeros((3, 3), np.uint8), None)
    with pytest.raises(ValueError, match="cameras"):
        reconstruct_surface(open_room(100), None, np.zeros((2, 2)))
    with pytest.raises(ValueError, match="passes"):
        SurfaceConfig(passes=3)
    with pytest.raises(ValueError, match="depth"):
        SurfaceConfig(depth=20)
    with pytest.raises(ValueError, match="density_quantile"):
        SurfaceConfig(density_quantile=1.0)
    with pytest.raises(ValueError, match="min_support"):
        SurfaceConfig(min_support=1.5)


def test_attach_mesh_returns_a_meshed_copy(repo_root: Path) -> None:
    fused = fuse_rgbd(load_frame_folder(repo_root / "data" / "redkitchen"))
    meshed = attach_mesh(fused, SurfaceConfig(depth=8))
    assert isinstance(meshed, Reconstruction)
    assert fused.mesh is None and "poisson" not in fused.timings  # the input is unchanged
    assert meshed.mesh is not None and meshed.mesh.num_triangles > 20_000
    assert meshed.points is fused.points and meshed.frame_id == "map"
    assert {"fuse", "normals", "poisson", "trim", "support"} <= set(meshed.timings)
    assert meshed.notes == []  # dense: no "sparse result" note
    distances, _ = cKDTree(fused.points).query(meshed.mesh.vertices)
    assert np.median(distances) < 0.01 and distances.max() < 0.08
    low, high = fused.points.min(0), fused.points.max(0)
    margin = 0.02 * np.linalg.norm(high - low) + 1e-6
    assert ((meshed.mesh.vertices >= low - margin) & (meshed.mesh.vertices <= high + margin)).all()


def test_decimate_mesh_bounds_triangles_and_keeps_shape_and_colour() -> None:
    points = open_room(2000, seed=5)
    colors = np.tile(np.array([[10, 200, 30]], np.uint8), (len(points), 1))
    mesh = reconstruct_surface(points, colors, CAMERAS, SurfaceConfig(depth=6))
    assert decimate_mesh(mesh, 0) is mesh and decimate_mesh(mesh, mesh.num_triangles) is mesh
    small = decimate_mesh(mesh, mesh.num_triangles // 4)
    assert 0 < small.num_triangles <= mesh.num_triangles // 4
    assert small.vertices.dtype == np.float32 and small.triangles.dtype == np.int32
    assert small.triangles.max() < len(small.vertices)
    distances, _ = cKDTree(points).query(small.vertices)
    assert np.median(distances) < 0.03
    assert np.abs(small.vertex_colors.astype(int) - [10, 200, 30]).max() <= 3


def _cloud(points: np.ndarray) -> Reconstruction:
    n = len(points)
    return Reconstruction(
        points=points.astype(np.float32),
        colors=np.full((n, 3), 120, np.uint8),
        confidence=np.ones(n, np.float32),
        camera_poses=np.zeros((0, 4, 4)),
        intrinsics=[],
    )


def test_support_rule_meshes_a_dense_room_and_refuses_a_sparse_one() -> None:
    """The same open room: densely sampled it gets a mesh; 150 points per face get points only and a note."""
    dense = attach_mesh(_cloud(open_room(3000)), SurfaceConfig(depth=7))
    assert dense.mesh is not None and dense.notes == []
    sparse = attach_mesh(_cloud(open_room(150, seed=3)), SurfaceConfig(depth=7))
    assert sparse.mesh is None and len(sparse.notes) == 1
    assert sparse.notes[0].startswith("sparse result, no mesh: 600 points cover only")
    assert "depth topic" in sparse.notes[0] and "model" in sparse.notes[0]
    # The rule can be switched off, and then Poisson meshes anything (what issue 14 complained about).
    assert attach_mesh(_cloud(open_room(150, seed=3)), SurfaceConfig(depth=7, min_support=0)).mesh is not None
    tiny = attach_mesh(_cloud(open_room(5)), SurfaceConfig(depth=7))
    assert tiny.mesh is None and "too few" in tiny.notes[0]


def test_support_of_a_dense_rgbd_cloud_and_of_its_sparse_subsample(repo_root: Path) -> None:
    """Real data: the fused kitchen supports its mesh; 2000 of its points (an SfM-sized cloud) do not."""
    fused = fuse_rgbd(load_frame_folder(repo_root / "data" / "redkitchen"))
    config = SurfaceConfig(depth=8)
    mesh = reconstruct_surface(fused.points, fused.colors, fused.camera_poses, config)
    dense = surface_support(mesh, fused.points, config.support_cells, config.depth, config.poisson_scale)
    subsample = fused.points[np.random.default_rng(0).choice(len(fused.points), 2000, replace=False)]
    sparse_mesh = reconstruct_surface(subsample, None, fused.camera_poses, config)
    sparse = surface_support(sparse_mesh, subsample, config.support_cells, config.depth, config.poisson_scale)
    assert dense >= 0.9 > config.min_support > sparse, (dense, sparse)


def test_attach_mesh_keeps_a_tsdf_mesh_from_depth_unless_told_to_run_poisson() -> None:
    """A backend's depth (TSDF) mesh is kept as it is: no Poisson, no support rule; Poisson on request."""
    points = open_room(3000)
    n = len(points)
    tsdf = TriangleMesh(
        np.array([[0, 0, 0], [1, 0, 0], [0, 1, 0]], np.float32),
        np.array([[0, 1, 2]], np.int32),
        np.zeros((3, 3), np.uint8),
    )
    cloud = Reconstruction(
        points=points.astype(np.float32),
        colors=np.full((n, 3), 120, np.uint8),
        confidence=np.ones(n, np.float32),
        camera_poses=np.zeros((0, 4, 4)),
        intrinsics=[],
        mesh=tsdf,
        timings={"tsdf_mesh": 0.5},
    )
    kept = attach_mesh(cloud, SurfaceConfig(depth=7))
    assert kept.mesh is tsdf and "poisson" not in kept.timings and kept.notes == []
    replaced = attach_mesh(cloud, SurfaceConfig(depth=7, keep_backend_mesh=False))
    assert replaced.mesh is not None and replaced.mesh.num_triangles > 1000 and "poisson" in replaced.timings
