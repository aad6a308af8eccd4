"""Writing and reloading reconstructions: PLY, GLB, PNG, NPZ, atomically."""

from __future__ import annotations

import os
import re
import tempfile
from pathlib import Path

import cv2
import numpy as np
import open3d as o3d
import pytest
import trimesh
from hypothesis import given, settings
from hypothesis import strategies as st

from showroom_ros.geometry.camera import CameraIntrinsics
from showroom_ros.io.export import (
    atomic_write,
    load_reconstruction,
    save_glb,
    save_mesh_ply,
    save_point_cloud_ply,
    save_preview_png,
    save_reconstruction,
)
from showroom_ros.io.file_names import NAME_RULE, InvalidName, name_refusal
from showroom_ros.reconstruction.result import Reconstruction, TriangleMesh


def small_reconstruction(with_mesh: bool = True) -> Reconstruction:
    rng = np.random.default_rng(0)
    points = np.c_[rng.uniform(-1, 1, (500, 2)), rng.uniform(1.9, 2.1, 500)].astype(np.float32)
    colors = rng.integers(0, 256, (500, 3), dtype=np.uint8)
    mesh = None
    if with_mesh:
        vertices = np.array([[0, 0, 2], [1, 0, 2], [0, 1, 2], [1, 1, 2]], np.float32)
        triangles = np.array([[0, 1, 2], [1, 3, 2]], np.int32)
        mesh = TriangleMesh(vertices, triangles, np.array([[255, 0, 0], [0, 255, 0], [0, 0, 255], [9, 9, 9]], np.uint8))
    poses = np.stack([np.eye(4), np.eye(4)])
    poses[1, 0, 3] = 0.4
    return Reconstruction(
        points=points,
        colors=colors,
        confidence=rng.integers(1, 4, 500).astype(np.float32),
        camera_poses=poses,
        intrinsics=[CameraIntrinsics(525.0, 525.0, 320.0, 240.0, 640, 480)] * 2,
        frame_id="showroom",
        metric=False,
        backend="rgbd",
        mesh=mesh,
        timings={"fuse": 0.25, "poisson": 1.5},
    )


def test_save_reconstruction_writes_every_file_and_round_trips(tmp_path: Path) -> None:
    original = small_reconstruction()
    files = save_reconstruction(original, tmp_path / "out", "scan")
    assert set(files) == {"cloud", "mesh", "glb", "png", "npz"}
    assert files["cloud"].name == "scan.ply" and files["mesh"].name == "scan_mesh.ply"
    assert all(path.is_file() and path.stat().st_size > 0 for path in files.values())
    assert sorted(p.name for p in (tmp_path / "out").iterdir()) == sorted(p.name for p in files.values())

    cloud = o3d.t.io.read_point_cloud(str(files["cloud"]))
    np.testing.assert_allclose(cloud.point.positions.numpy(), original.points)
    np.testing.assert_array_equal(cloud.point.colors.numpy(), original.colors)
    np.testing.assert_allclose(cloud.point.confidence.numpy().ravel(), original.confidence)

    mesh = o3d.io.read_triangle_mesh(str(files["mesh"]))
    np.testing.assert_array_equal(np.asarray(mesh.triangles), original.mesh.triangles)
    np.testing.assert_allclose(np.asarray(mesh.vertex_colors) * 255, original.mesh.vertex_colors, atol=0.5)

    scene = trimesh.load(files["glb"])
    geometry = next(iter(scene.geometry.values()))
    assert len(geometry.faces) == 2 and len(geometry.vertices) == 4

    png = cv2.imread(str(files["png"]))
    assert png.shape == (720, 960, 3) and (png != 255).any()

    loaded = load_reconstruction(files["npz"])
    np.testing.assert_array_equal(loaded.points, original.points)
    np.testing.assert_array_equal(loaded.colors, original.colors)
    np.testing.assert_array_equal(loaded.confidence, original.confidence)
    np.testing.assert_array_equal(loaded.camera_poses, original.camera_poses)
    assert loaded.intrinsics == original.intrinsics
    assert (loaded.frame_id, loaded.metric, loaded.backend) == ("showroom", False, "rgbd")
    assert loaded.timings == original.timings
    assert loaded.notes == [] and not loaded.sparse
    np.testing.assert_array_equal(loaded.mesh.triangles, original.mesh.triangles)
    np.testing.assert_array_equal(loaded.mesh.vertex_colors, original.mesh.vertex_colors)


def test_points_only_reconstruction_exports_a_point_glb_and_no_mesh(tmp_path: Path) -> None:
    original = small_reconstruction(with_mesh=False)
    files = save_reconstruction(original, tmp_path, "cloud_only")
    assert "mesh" not in files
    geometry = next(iter(trimesh.load(files["glb"]).geometry.values()))
    assert isinstance(geometry, trimesh.PointCloud) and len(geometry.vertices) == 500
    assert load_reconstruction(files["npz"]).mesh is None


def test_individual_writers_overwrite_in_place(tmp_path: Path) -> None:
    reconstruction = small_reconstruction()
    target = tmp_path / "cloud.ply"
    target.write_text("old")
    save_point_cloud_ply(reconstruction, target)
    assert target.read_bytes().startswith(b"ply")
    save_mesh_ply(reconstruction.mesh, tmp_path / "mesh.ply")
    save_glb(reconstruction, tmp_path / "model.glb")
    assert (tmp_path / "model.glb").read_bytes()[:4] == b"glTF"
    save_preview_png(reconstruction, tmp_path / "preview.png", width=200, height=100)
    assert cv2.imread(str(tmp_path / "preview.png")).shape == (100, 200, 3)
    assert not list(tmp_path.glob(".*"))  # no temporary files left behind


def test_failed_write_leaves_the_old_file_and_no_temporary(tmp_path: Path) -> None:
    target = tmp_path / "model.glb"
    target.write_bytes(b"previous version")

    def failing_writer(temporary: Path) -> None:
        temporary.write_bytes(b"half written")
        raise RuntimeError("disk full")

    with pytest.raises(RuntimeError, match="disk full"):
        atomic_write(target, failing_writer)
    assert target.read_bytes() == b"previous version"
    assert [p.name for p in tmp_path.iterdir()] == ["model.glb"]


@settings(max_examples=60, deadline=None)
@given(name=st.text(max_size=140).filter(lambda name: name_refusal(name) is not None))
def test_a_name_that_breaks_the_rule_is_refused_before_anything_is_written(name: str) -> None:
    with tempfile.TemporaryDirectory() as scratch:
        with pytest.raises(InvalidName, match=re.escape(NAME_RULE)):
            save_reconstruction(small_reconstruction(), Path(scratch, "out"), name)
        assert os.listdir(scratch) == []


def test_foreign_files_raise(tmp_path: Path) -> None:
    foreign = tmp_path / "other.npz"
    np.savez(foreign, something=np.zeros(3))
    with pytest.raises(ValueError, match="not a showroom reconstruction"):
        load_reconstruction(foreign)
    with pytest.raises(ValueError, match="cannot read"):
        load_reconstruction(tmp_path / "missing.npz")


def test_prune_saved_keeps_the_newest_within_count_and_bytes(tmp_path: Path) -> None:
    """Defect 10 (issue 14): autosave filled the disk; the oldest groups go, other files stay."""
    import os
    import random

    from showroom_ros.io.export import prune_saved

    seed = random.randrange(1_000_000)
    rng = random.Random(seed)
    reconstruction = small_reconstruction()
    names = [f"reconstruction-{i:03d}" for i in range(rng.randint(3, 7))]
    for age, name in enumerate(names):
        files = save_reconstruction(reconstruction, tmp_path, name)
        for path in files.values():
            os.utime(path, ns=(age * 10**9, age * 10**9))  # oldest first, whatever the clock's resolution
    (tmp_path / "keep-me.npz").write_bytes(b"foreign")
    group_bytes = sum(p.stat().st_size for p in tmp_path.glob(f"{names[0]}*"))
    keep = rng.randint(1, len(names))
    pruned = prune_saved(tmp_path, "reconstruction-", keep=keep)
    assert pruned == names[: len(names) - keep], seed
    left = sorted({p.name.split(".")[0].removesuffix("_mesh") for p in tmp_path.glob("reconstruction-*")})
    assert left == names[len(names) - keep :], seed
    # Byte budget: only the newest fits; it is never deleted, even when it alone is over budget.
    budget = group_bytes + 1
    assert prune_saved(tmp_path, "reconstruction-", keep=100, max_bytes=budget) == names[len(names) - keep : -1]
    assert prune_saved(tmp_path, "reconstruction-", keep=100, max_bytes=1) == []
    assert len(list(tmp_path.glob(f"{names[-1]}*"))) == 5 and (tmp_path / "keep-me.npz").exists()


@pytest.mark.parametrize("with_mesh", [True, False])
def test_glb_export_leaves_no_trimesh_cycles_for_a_later_collection(tmp_path: Path, with_mesh: bool) -> None:
    """A node autosaves every few seconds: trimesh's reference cycles held ~15 MB each until a rare full GC."""
    import gc

    gc.collect()
    gc.disable()  # what the node sees between its (rare) generation-2 collections
    try:
        save_glb(small_reconstruction(with_mesh), tmp_path / "a.glb")
        alive = [o for o in gc.get_objects() if isinstance(o, (trimesh.Trimesh, trimesh.PointCloud, trimesh.Scene))]
    finally:
        gc.enable()
    assert alive == []
    assert trimesh.load(tmp_path / "a.glb").is_empty is False


def test_notes_and_the_sparse_flag_survive_a_save(tmp_path: Path) -> None:
    from dataclasses import replace

    original = replace(small_reconstruction(with_mesh=False), notes=["sparse result: 12 points", "ü"], sparse=True)
    loaded = load_reconstruction(save_reconstruction(original, tmp_path, "sparse")["npz"])
    assert loaded.notes == original.notes and loaded.sparse
