"""Incremental chunked map mesh: replaying ADD/MODIFY/DELETE gives exactly the full marching-cubes mesh."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
from test_mapping_volume import SMALL_K, box_room_depth, room_poses

from showroom_ros.mapping.mesh_chunks import ChunkedMesh, ChunkMesh, ChunkUpdate, chunk_id, unpack_chunk_id
from showroom_ros.mapping.volume import TsdfVolume, VolumeConfig

SEEDS = [int(s) for s in np.random.default_rng(1312).integers(0, 2**31 - 1, 5)]


def _apply(scene: dict[int, ChunkMesh], update: ChunkUpdate) -> None:
    """What a subscriber (RViz) does with the markers."""
    assert not {c.chunk_id for c in update.changed} & set(update.removed)
    for chunk in update.changed:
        scene[chunk.chunk_id] = chunk
    for removed in update.removed:
        assert removed in scene, "DELETE for a chunk never sent"
        del scene[removed]


def _centroids(vertices: np.ndarray, triangles: np.ndarray) -> np.ndarray:
    c = np.asarray(vertices, np.float64)[np.asarray(triangles)].mean(axis=1)
    return c[np.lexsort(np.round(c, 4).T)]


def _assert_scene_is_the_full_mesh(scene: dict[int, ChunkMesh], volume: TsdfVolume, seed: int) -> None:
    full = volume.extract_mesh()
    expected = _centroids(np.asarray(full.vertices), np.asarray(full.triangles))
    if scene:
        got = _centroids(
            np.concatenate([c.vertices for c in scene.values()]),
            np.concatenate(
                [
                    c.triangles + off
                    for c, off in zip(
                        scene.values(), np.cumsum([0] + [len(c.vertices) for c in scene.values()])[:-1], strict=True
                    )
                ]
            ),
        )
    else:
        got = np.zeros((0, 3))
    assert len(got) == len(expected), f"seed {seed}: {len(got)} chunk triangles vs {len(expected)} in the full mesh"
    np.testing.assert_allclose(got, expected, atol=1e-4, err_msg=f"seed {seed}")


@pytest.mark.parametrize("seed", SEEDS)
def test_replayed_updates_equal_the_full_mesh_and_ids_are_stable(seed: int) -> None:
    rng = np.random.default_rng(seed)
    volume = TsdfVolume(VolumeConfig(voxel_size=0.05, depth_max=6.0))
    chunks = ChunkedMesh(volume, chunk_size_m=float(rng.choice([0.4, 0.8, 1.0])))
    scene: dict[int, ChunkMesh] = {}
    for pose in room_poses(rng, 4):
        before = {k: (v.vertices.copy(), v.triangles.copy()) for k, v in scene.items()}
        report = volume.integrate(box_room_depth(pose, SMALL_K), SMALL_K, pose)
        update = chunks.update(report)
        _apply(scene, update)
        _assert_scene_is_the_full_mesh(scene, volume, seed)
        for chunk in update.changed:
            assert chunk_id(chunk.key) == chunk.chunk_id and unpack_chunk_id(chunk.chunk_id) == chunk.key
            assert chunk.colors.dtype == np.uint8 and chunk.triangles.max() < len(chunk.vertices)
            lo = np.array(chunk.key) * chunks.chunk_size
            centre = chunk.vertices[chunk.triangles].mean(axis=1)
            assert np.all((centre >= lo - 1e-4) & (centre <= lo + chunks.chunk_size + 1e-4)), f"seed {seed}"
        # Chunks far from every block this frame wrote were not resent.
        touched_chunks = {tuple(k) for k in np.floor_divide(report.touched_blocks, chunks.chunk_blocks).tolist()}
        for chunk in update.changed:
            assert any(max(abs(a - b) for a, b in zip(chunk.key, t, strict=True)) <= 1 for t in touched_chunks), (
                f"seed {seed}"
            )
        untouched = set(before) - {c.chunk_id for c in update.changed}
        for cid in untouched:
            np.testing.assert_array_equal(scene[cid].vertices, before[cid][0])
    assert chunks.published == set(scene)


@pytest.mark.parametrize("budget", [100, 10_000])
def test_far_integration_leaves_first_chunks_alone_and_budget_drops_delete_them(budget: int) -> None:
    k = SMALL_K
    volume = TsdfVolume(VolumeConfig(voxel_size=0.05, depth_max=6.0, block_budget=budget))
    chunks = ChunkedMesh(volume, chunk_size_m=0.8)
    scene: dict[int, ChunkMesh] = {}
    # Two rooms 30 m apart: the second one's update never touches the first one's chunks.
    from test_mapping_volume import look_at

    first = look_at(np.array([0.0, 0.0, 1.2]), np.array([1.9, 0.7, 0.6]))
    update = chunks.update(volume.integrate(box_room_depth(first, k), k, first))
    _apply(scene, update)
    first_ids = set(scene)
    shift = np.array([30.0, 0.0, 0.0])
    second = first.copy()
    second[:3, 3] += shift
    depth = box_room_depth(second, k, lo=np.array([-2.0, -1.5, 0.0]) + shift, hi=np.array([2.0, 1.5, 2.4]) + shift)
    report = volume.integrate(depth, k, second)
    update = chunks.update(report)
    # First-room chunks are resent only where the budget dropped blocks (MODIFY of what is left, or DELETE).
    near_dropped = {
        chunk_id(tuple(key))
        for key in np.floor_divide(
            (
                report.dropped_blocks[:, None, :]
                + np.array([[i, j, m] for i in (-1, 0, 1) for j in (-1, 0, 1) for m in (-1, 0, 1)])[None]
            ).reshape(-1, 3),
            chunks.chunk_blocks,
        ).tolist()
    }
    assert {c.chunk_id for c in update.changed} & first_ids <= near_dropped
    if budget == 100:  # the budget dropped the first room (farthest from the camera): DELETE its chunks
        assert len(report.dropped_blocks) > 0
        assert set(update.removed) and set(update.removed) <= first_ids
    else:
        assert len(report.dropped_blocks) == 0 and not update.removed
        assert not {c.chunk_id for c in update.changed} & first_ids
    _apply(scene, update)
    _assert_scene_is_the_full_mesh(scene, volume, 0)


def test_full_rebuild_after_load_and_reset(tmp_path: Path) -> None:
    rng = np.random.default_rng(3)
    volume = TsdfVolume(VolumeConfig(voxel_size=0.05, depth_max=6.0))
    for pose in room_poses(rng, 2):
        volume.integrate(box_room_depth(pose, SMALL_K), SMALL_K, pose)
    volume.save(tmp_path / "v.npz")
    loaded = TsdfVolume.load(tmp_path / "v.npz")
    chunks = ChunkedMesh(loaded)
    scene: dict[int, ChunkMesh] = {}
    _apply(scene, chunks.update(None))
    _assert_scene_is_the_full_mesh(scene, volume, 3)
    assert chunks.update(None).removed == []
    cleared = chunks.reset()
    assert sorted(cleared.removed) == sorted(scene) and chunks.published == set()


def _sorted_rows(points: np.ndarray) -> np.ndarray:
    return points[np.lexsort(points.T)]


@pytest.mark.parametrize("seed", SEEDS[:3])
def test_incremental_points_and_chunks_equal_a_full_recomputation(seed: int) -> None:
    """Speed must not change the answer: after every update the kept cloud is exactly the grid's cloud,
    and the chunks equal those of a full rebuild (same triangles per chunk, up to order)."""
    rng = np.random.default_rng(seed)
    volume = TsdfVolume(VolumeConfig(voxel_size=0.05, depth_max=6.0, block_budget=int(rng.choice([150, 10_000]))))
    chunks = ChunkedMesh(volume, chunk_size_m=float(rng.choice([0.4, 1.0])), keep_points=True)
    for pose in room_poses(rng, 4):
        pose[:3, 3] += rng.uniform(-0.3, 0.3, 3) * [1, 1, 0]
        chunks.update(volume.integrate(box_room_depth(pose, SMALL_K), SMALL_K, pose))
        got, colours = chunks.points()
        expected, expected_colours = volume.extract_point_cloud()
        assert len(got) == len(expected) > 0, f"seed {seed}"
        np.testing.assert_array_equal(_sorted_rows(got), _sorted_rows(expected), err_msg=f"seed {seed}")
        np.testing.assert_array_equal(
            _sorted_rows(np.hstack([got, colours])), _sorted_rows(np.hstack([expected, expected_colours]))
        )
        full = ChunkedMesh(volume, chunk_size_m=chunks.chunk_size)
        rebuilt = {c.chunk_id: c for c in full.update(None).changed}
        assert chunks.published == set(rebuilt), f"seed {seed}"
        for cid, reference in rebuilt.items():
            mine = chunks.chunk(cid)
            assert mine is not None
            np.testing.assert_array_equal(
                _sorted_rows(mine.vertices[mine.triangles].reshape(-1, 9)),
                _sorted_rows(reference.vertices[reference.triangles].reshape(-1, 9)),
                err_msg=f"seed {seed} chunk {cid}",
            )
