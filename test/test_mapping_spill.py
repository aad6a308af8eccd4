"""A map larger than its memory budget: blocks go to disk and come back, and nothing of the map is lost.

Synthetic z-up corridors seen by exact depth cameras (seeded walks out to the far end and back). Each
budgeted run is compared with the same walk without a budget: every block's TSDF, weight and colour,
the published chunks (replayed as a subscriber sees them), the surface, the occupancy grid, and the
saved and loaded map. The store's folder going read-only or full mid-walk must give a clear error and
leave the map whole, and the walk then continues to the same map.
"""

from __future__ import annotations

import os
import subprocess
from collections.abc import Iterator
from dataclasses import replace
from pathlib import Path

import numpy as np
import open3d as o3d
import pytest
from test_mapping_volume import SMALL_K, box_room_depth, look_at

from showroom_ros.apps.map_session import load_map, save_map
from showroom_ros.capture.keyframes import Keyframe
from showroom_ros.mapping.block_store import BlockStore, BlockStoreError, BlockStoreFull
from showroom_ros.mapping.mesh_chunks import ChunkMesh, ChunkUpdate, unpack_chunk_id
from showroom_ros.mapping.occupancy import OCCUPIED, OccupancyConfig
from showroom_ros.mapping.robot_map import RobotMap, RobotMapConfig
from showroom_ros.mapping.volume import VOXEL_ATTRIBUTES, TsdfVolume, VolumeConfig
from showroom_ros.reconstruction.result import Reconstruction

SEEDS = [int(s) for s in np.random.default_rng(20261220).integers(0, 2**31 - 1, 3)]
CORRIDOR_MIN = np.array([0.0, 0.0, 0.0])
BASE = VolumeConfig(voxel_size=0.05, depth_max=2.5, block_budget=10**6)


def corridor_walk(rng: np.random.Generator, length: float) -> list[np.ndarray]:
    """Poses along a corridor ``length`` m long (2 m wide, 2.4 m high), to the far end looking ahead and back."""
    out = []
    for x in np.arange(0.6, length - 0.6, rng.uniform(0.35, 0.5)):
        eye = np.array([x, rng.uniform(0.7, 1.3), rng.uniform(1.0, 1.5)])
        out.append(look_at(eye, np.array([x + 2.0, rng.uniform(0.2, 1.8), rng.uniform(0.3, 1.5)])))
    back = []
    for pose in out[::-1]:
        eye = pose[:3, 3] + rng.normal(0, 0.05, 3)
        back.append(look_at(eye, np.array([eye[0] - 2.0, rng.uniform(0.2, 1.8), rng.uniform(0.3, 1.5)])))
    return out + back


def corridor_depth(pose: np.ndarray, length: float) -> np.ndarray:
    return box_room_depth(pose, SMALL_K, CORRIDOR_MIN, np.array([length, 2.0, 2.4]))


def colour_image(rng: np.random.Generator) -> np.ndarray:
    return rng.integers(0, 256, (SMALL_K.height, SMALL_K.width, 3), dtype=np.uint8)


def all_blocks(volume: TsdfVolume) -> tuple[np.ndarray, dict[str, np.ndarray]]:
    """Every block of the map, in memory or on disk, sorted by coordinate."""
    parts = list(volume.iter_blocks(max_blocks=64))
    if not parts:
        return np.zeros((0, 3), np.int32), {name: np.zeros(0) for name in VOXEL_ATTRIBUTES}
    keys = np.concatenate([k for k, _ in parts])
    order = np.lexsort(keys.T[::-1])
    return keys[order], {name: np.concatenate([a[name] for _, a in parts])[order] for name in VOXEL_ATTRIBUTES}


def assert_same_blocks(got: TsdfVolume, expected: TsdfVolume, what: str) -> None:
    keys, values = all_blocks(got)
    expected_keys, expected_values = all_blocks(expected)
    assert len(np.unique(keys, axis=0)) == len(keys), f"{what}: a block is both in memory and on disk"
    np.testing.assert_array_equal(keys, expected_keys, err_msg=f"{what}: block coordinates")
    for name in VOXEL_ATTRIBUTES:  # exactly: the values went to disk and back unchanged
        np.testing.assert_array_equal(values[name], expected_values[name], err_msg=f"{what}: {name}")


# --- the block store ---------------------------------------------------------------------------------


@pytest.mark.parametrize("seed", SEEDS)
def test_block_store_pages_round_trip_within_their_bound(seed: int, tmp_path: Path) -> None:
    rng = np.random.default_rng(seed)
    store = BlockStore(tmp_path, max_bytes=2**30, page_blocks=4)
    assert store.folder is None and not list(tmp_path.iterdir())  # nothing on disk until a page is written
    pages = {}
    for _ in range(int(rng.integers(3, 8))):
        page = tuple(rng.integers(-50, 50, 3).tolist())
        if page in pages:
            continue
        local = np.unique(rng.integers(0, 4, (int(rng.integers(1, 30)), 3)), axis=0)
        keys = (np.array(page) * 4 + local).astype(np.int32)
        arrays = {"tsdf": rng.normal(size=(len(keys), 2, 2)).astype(np.float32), "w": rng.random(len(keys))}
        store.put(page, keys, arrays)
        pages[page] = (keys, arrays)
    assert store.block_count == sum(len(k) for k, _ in pages.values()) and len(store) == len(pages)
    assert store.nbytes == sum(p.stat().st_size for p in store.folder.iterdir())
    for page, (keys, arrays) in pages.items():
        got_keys, got = store.read(page)
        np.testing.assert_array_equal(got_keys, keys)
        for name, array in arrays.items():
            np.testing.assert_array_equal(got[name], array)
    # Blocks by coordinate, across pages; the ones not stored are not invented.
    page, (keys, arrays) = next(iter(pages.items()))
    wanted = np.concatenate([keys[:2], np.array([[10**5, 0, 0]], np.int32)])
    found_keys, found = store.blocks(wanted)
    order = np.lexsort(found_keys.T[::-1])
    expected_order = np.lexsort(keys[:2].T[::-1])
    np.testing.assert_array_equal(found_keys[order], keys[:2][expected_order])
    np.testing.assert_array_equal(found["tsdf"][order], arrays["tsdf"][:2][expected_order])
    # Taking a page back removes it (file and bytes).
    taken_keys, _ = store.take(page)
    np.testing.assert_array_equal(taken_keys, keys)
    assert page not in store and store.nbytes == sum(p.stat().st_size for p in store.folder.iterdir())
    # A block outside the page, or a block the page holds already, is refused.
    other, (other_keys, other_arrays) = list(pages.items())[1]
    with pytest.raises(ValueError, match="not in page"):
        store.put(page, other_keys, other_arrays)
    with pytest.raises(ValueError, match="already holds"):
        store.put(other, other_keys[:1], {name: a[:1] for name, a in other_arrays.items()})
    # Over the byte limit: refused, with the limit named, and the store unchanged.
    before = (store.nbytes, store.block_count, sorted(p.name for p in store.folder.iterdir()))
    store.max_bytes = store.nbytes + 10
    with pytest.raises(BlockStoreFull, match="spill_max_bytes"):
        store.put(page, keys, arrays)
    assert (store.nbytes, store.block_count, sorted(p.name for p in store.folder.iterdir())) == before
    folder = store.folder
    store.close()
    assert not folder.exists()


def test_a_dead_process_block_folder_is_removed_and_a_live_one_kept(tmp_path: Path) -> None:
    dead = subprocess.Popen(["true"])
    dead.wait()
    stale = tmp_path / f"blocks-{dead.pid}-abcd"
    stale.mkdir()
    (stale / "page_+0_+0_+0.npz").write_bytes(b"x")
    alive = tmp_path / f"blocks-{os.getppid()}-abcd"
    alive.mkdir()
    unrelated = tmp_path / "blocks-of-someone-else"
    unrelated.mkdir()
    store = BlockStore(tmp_path, max_bytes=2**20, page_blocks=2)
    store.put((0, 0, 0), np.zeros((1, 3), np.int32), {"v": np.ones(1, np.float32)})
    assert not stale.exists() and alive.exists() and unrelated.exists()
    assert store.folder is not None and store.folder.name.startswith(f"blocks-{os.getpid()}-")


# --- the volume: a walk beyond the budget -----------------------------------------------------------


@pytest.mark.parametrize("seed", SEEDS)
def test_a_walk_beyond_the_budget_returns_to_an_intact_map(seed: int, tmp_path: Path) -> None:
    rng = np.random.default_rng(seed)
    length = float(rng.uniform(9.0, 12.0))
    poses = corridor_walk(rng, length)
    reference = TsdfVolume(BASE)
    frames = []
    for pose in poses:
        frames.append((corridor_depth(pose, length), pose, colour_image(rng)))
        reference.integrate(frames[-1][0], SMALL_K, pose, frames[-1][2])
    budget = reference.block_count // 4  # the walk covers four times the budget
    config = replace(BASE, block_budget=budget, spill_dir=str(tmp_path), spill_page_blocks=int(rng.integers(1, 4)))
    volume = TsdfVolume(config)
    spilled = reloaded = 0
    for depth, pose, colour in frames:
        report = volume.integrate(depth, SMALL_K, pose, colour)
        assert not len(report.dropped_blocks), "with a spill folder nothing is erased"
        assert volume.resident_block_count <= max(budget, len(report.touched_blocks))
        spilled += len(report.spilled_blocks)
        reloaded += len(report.reloaded_blocks)
        if len(report.spilled_blocks):
            assert "went to disk" in report.message
    assert spilled > budget and reloaded > budget // 2, f"seed {seed}: the walk did not leave and return"
    assert volume.stored_block_count > 0 and volume.block_count == reference.block_count
    assert_same_blocks(volume, reference, f"seed {seed}")
    # The whole map saved and loaded: within the budget in memory, the rest on disk, the same values.
    volume.save(tmp_path / "map.npz")
    loaded = TsdfVolume.load(tmp_path / "map.npz", local=replace(config, spill_dir=str(tmp_path / "second")))
    assert loaded.config.block_budget == budget and loaded.resident_block_count <= budget
    assert loaded.stored_block_count > 0
    assert_same_blocks(loaded, reference, f"seed {seed}: loaded")
    # The first integration after the load does not grow the hash map: it was made with room ahead.
    capacity = loaded.capacity
    depth, pose, colour = frames[0]
    loaded.integrate(depth, SMALL_K, pose, colour)
    reference.integrate(depth, SMALL_K, pose, colour)
    assert loaded.capacity == capacity
    assert_same_blocks(loaded, reference, f"seed {seed}: loaded and continued")
    # Without a spill folder the loaded map holds every block in memory (none is lost).
    everything = TsdfVolume.load(tmp_path / "map.npz")
    assert everything.stored_block_count == 0 and everything.block_count == volume.block_count


def test_a_new_block_starts_empty_where_an_erased_block_was() -> None:
    """Open3D gives a new block the buffer slot of an erased one without clearing it: the map must clear it."""
    first = look_at(np.array([0.5, 1.0, 1.2]), np.array([-3.0, 1.0, 1.0]))  # looks at the x = 0 end
    second = look_at(np.array([9.5, 1.0, 1.2]), np.array([13.0, 1.0, 1.0]))  # at the x = 10 end, 9 m away
    budget = TsdfVolume(BASE)
    budget.integrate(corridor_depth(second, 10.0), SMALL_K, second)
    config = replace(BASE, block_budget=budget.block_count)  # room for one end only: the other is erased
    volume = TsdfVolume(config)
    volume.integrate(corridor_depth(first, 10.0), SMALL_K, first)
    report = volume.integrate(corridor_depth(second, 10.0), SMALL_K, second)
    assert len(report.dropped_blocks) > 0
    fresh = TsdfVolume(BASE)
    fresh.integrate(corridor_depth(second, 10.0), SMALL_K, second)
    assert_same_blocks(volume, fresh, "the far end alone")


def test_reserve_ahead_grows_the_hash_map_outside_integration(tmp_path: Path) -> None:
    rng = np.random.default_rng(5)
    poses = corridor_walk(rng, 10.0)[:12]
    config = replace(BASE, reserve_blocks=256)
    ahead, late = TsdfVolume(config), TsdfVolume(config)
    grew_inside = 0
    for pose in poses:
        depth = corridor_depth(pose, 10.0)
        ahead.reserve_ahead()  # while nothing waits on the map
        capacity = ahead.capacity
        report = ahead.integrate(depth, SMALL_K, pose)
        assert len(report.touched_blocks) < config.reserve_blocks // 2  # what reserve_ahead leaves free suffices
        assert ahead.capacity == capacity, "the integration itself grew the hash map"
        capacity = late.capacity
        late.integrate(depth, SMALL_K, pose)
        grew_inside += late.capacity != capacity
    assert grew_inside > 0  # without it, Open3D grows the map inside an integration
    assert_same_blocks(ahead, late, "with and without growing ahead")
    # Never beyond the budget: a map at its budget keeps its capacity.
    small = TsdfVolume(replace(config, block_budget=ahead.resident_block_count))
    assert small.capacity <= ahead.resident_block_count
    with pytest.raises(ValueError, match="reserve_blocks"):
        VolumeConfig(reserve_blocks=-1)
    with pytest.raises(ValueError, match="spill_dir"):
        VolumeConfig(spill_dir=" ")
    with pytest.raises(ValueError, match="spill_max_bytes"):
        VolumeConfig(spill_max_bytes=0)


# --- the robot map: chunks, grid, save and load -----------------------------------------------------


def _apply(scene: dict[int, ChunkMesh], update: ChunkUpdate) -> None:
    """What a subscriber (RViz) does with the markers."""
    for chunk in update.changed:
        scene[chunk.chunk_id] = chunk
    for removed in update.removed:
        del scene[removed]


def _triangles(chunk: ChunkMesh) -> np.ndarray:
    """A chunk's triangles as sorted rows of corner positions and colours (order-free comparison)."""
    rows = np.concatenate(
        [
            chunk.vertices[chunk.triangles].reshape(len(chunk.triangles), -1).view(np.int32),
            chunk.colors[chunk.triangles].reshape(len(chunk.triangles), -1).astype(np.int32),
        ],
        axis=1,
    )
    return rows[np.lexsort(rows.T[::-1])]


def assert_same_scene(got: dict[int, ChunkMesh], expected: dict[int, ChunkMesh], what: str) -> None:
    assert set(got) == set(expected), f"{what}: chunk ids differ"
    for cid in expected:
        np.testing.assert_array_equal(_triangles(got[cid]), _triangles(expected[cid]), err_msg=f"{what}: chunk {cid}")


def _window(poses: list[np.ndarray], depths: list[np.ndarray], images: list[np.ndarray], stamp: int):
    keyframes = [
        Keyframe(image=image, stamp_ns=stamp + i, intrinsics=SMALL_K, depth=depth, pose=pose)
        for i, (pose, depth, image) in enumerate(zip(poses, depths, images, strict=True))
    ]
    empty = np.zeros((0, 3))
    result = Reconstruction(empty, empty.astype(np.uint8), np.zeros(0), np.stack(poses), [SMALL_K] * len(poses))
    return result, keyframes


OCC = OccupancyConfig(resolution=0.1, min_height=0.1, max_height=1.5, padding=0.3)


@pytest.mark.parametrize("seed", SEEDS[:2])
def test_the_robot_map_beyond_its_budget_publishes_and_saves_the_whole_map(seed: int, tmp_path: Path) -> None:
    rng = np.random.default_rng(seed)
    length = float(rng.uniform(9.0, 12.0))
    poses = corridor_walk(rng, length)
    depths = [corridor_depth(p, length) for p in poses]
    images = [colour_image(rng) for _ in poses]
    windows = [slice(i, i + 3) for i in range(0, len(poses), 3)]
    # The static-scene gate off: what is compared is the TSDF with and without the budget; the gate's index
    # of fused views is not saved, so a loaded map would fuse the walk's revisited poses the reference skips.
    reference = RobotMap(RobotMapConfig(volume=BASE, occupancy=OCC, chunk_size_m=0.8, redundant_translation_m=0.0))
    reference_scene: dict[int, ChunkMesh] = {}
    reference_updates = []
    for number, part in enumerate(windows):
        window = _window(poses[part], depths[part], images[part], 100 * number)
        reference_updates.append(reference.integrate(*window).chunks)
        _apply(reference_scene, reference_updates[-1])
    budget = reference.block_count // 4
    volume = replace(BASE, block_budget=budget, spill_dir=str(tmp_path / "spill"), spill_page_blocks=2)
    config = RobotMapConfig(volume=volume, occupancy=OCC, chunk_size_m=0.8, redundant_translation_m=0.0)
    robot_map = RobotMap(config)
    scene: dict[int, ChunkMesh] = {}
    far: set[int] = set()  # chunks published while the walk was at the far end, all of whose blocks were on disk
    for number, part in enumerate(windows):
        update = robot_map.integrate(*_window(poses[part], depths[part], images[part], 100 * number))
        # The same chunks sent and deleted as without the budget: a chunk on disk is not deleted.
        assert update.chunks.removed == reference_updates[number].removed, f"seed {seed}, window {number}"
        assert [c.chunk_id for c in update.chunks.changed] == [c.chunk_id for c in reference_updates[number].changed]
        _apply(scene, update.chunks)
        if update.spilled_blocks:
            assert "went to disk" in update.summary and "on disk" in update.summary
        assert robot_map.volume.resident_block_count <= budget
        stored = {tuple(b) for b in np.floor_divide(robot_map.volume.stored_block_coords(), 2).tolist()}
        resident = {tuple(b) for b in np.floor_divide(robot_map.volume.block_coords(), 2).tolist()}
        far |= {cid for cid in robot_map.chunks.published if unpack_chunk_id(cid) in stored - resident}
    far &= reference.chunks.published  # (a chunk may lose its last triangle to new data, with or without a budget)
    assert len(far) >= 5, f"seed {seed}: hardly any chunk ever lay wholly on disk"
    assert far <= robot_map.chunks.published and far <= set(scene)
    assert robot_map.block_count == reference.block_count and robot_map.volume.stored_block_count > 0
    assert_same_blocks(robot_map.volume, reference.volume, f"seed {seed}")
    assert_same_scene(scene, reference_scene, f"seed {seed}: published chunks")
    points, colours = robot_map.surface()
    expected, expected_colours = reference.surface()
    order, expected_order = np.lexsort(points.T), np.lexsort(expected.T)
    np.testing.assert_array_equal(points[order], expected[expected_order])
    np.testing.assert_array_equal(colours[order], expected_colours[expected_order])
    np.testing.assert_array_equal(robot_map.occupancy().data, reference.occupancy().data)
    assert (robot_map.occupancy().data == OCCUPIED).sum() > 50
    np.testing.assert_array_equal(robot_map.occupancy_from_scratch().data, reference.occupancy().data)
    whole, expected_whole = robot_map.mesh(), reference.mesh()
    assert len(whole.triangles) == len(expected_whole.triangles) > 0

    # ~/save_map writes the whole map; ~/load_map restores it within the budget, the rest on disk.
    written = save_map(robot_map, tmp_path / "saved", "corridor")
    loaded, loaded_update = load_map(written["volume"], config)
    assert loaded.volume.resident_block_count <= budget and loaded.volume.stored_block_count > 0
    assert loaded.volume.store.folder != robot_map.volume.store.folder
    assert_same_blocks(loaded.volume, reference.volume, f"seed {seed}: loaded")
    loaded_scene: dict[int, ChunkMesh] = {}
    _apply(loaded_scene, loaded_update.chunks)
    assert_same_scene(loaded_scene, reference_scene, f"seed {seed}: chunks after the load")
    np.testing.assert_array_equal(loaded.occupancy().data, reference.occupancy().data)
    saved_mesh = o3d.io.read_triangle_mesh(str(written["mesh"]))
    assert len(saved_mesh.triangles) == len(expected_whole.triangles)
    # Mapping continues from the loaded map as it would have without the budget.
    again = _window(poses[:2], depths[:2], images[:2], 10**6)
    _apply(loaded_scene, loaded.integrate(*again).chunks)
    _apply(reference_scene, reference.integrate(*again).chunks)
    assert_same_blocks(loaded.volume, reference.volume, f"seed {seed}: continued after the load")
    assert_same_scene(loaded_scene, reference_scene, f"seed {seed}: chunks continued after the load")
    # Clearing forgets the blocks on disk too; the map's folder goes with the map.
    folder = robot_map.volume.store.folder
    robot_map.clear()
    assert robot_map.block_count == 0 and not list(folder.iterdir())
    robot_map.close()
    assert not folder.exists()


# --- attacks: the store's folder read-only or full ---------------------------------------------------


def _mount_tmpfs(folder: Path, size: str) -> bool:
    """A small tmpfs at ``folder`` (root only); False when it cannot be mounted here."""
    folder.mkdir(parents=True, exist_ok=True)
    result = subprocess.run(["mount", "-t", "tmpfs", "-o", f"size={size}", "tmpfs", str(folder)], capture_output=True)
    return result.returncode == 0


def _set_read_only(folder: Path, mounted: bool, read_only: bool) -> None:
    if mounted:
        subprocess.run(["mount", "-o", f"remount,{'ro' if read_only else 'rw'}", str(folder)], check=True)
    else:  # not root: permissions bind
        for path in [folder, *folder.rglob("*")]:
            if path.is_dir():
                path.chmod(0o555 if read_only else 0o755)


def _walk_until_error(volume: TsdfVolume, frames: list, start: int) -> Iterator[tuple[int, Exception | None]]:
    for index in range(start, len(frames)):
        depth, pose, colour = frames[index]
        try:
            volume.integrate(depth, SMALL_K, pose, colour)
        except BlockStoreError as error:
            yield index, error
            return
        yield index, None


@pytest.mark.parametrize("attack", ["read-only", "disk full", "limit"])
def test_a_store_folder_read_only_or_full_gives_a_clear_error_and_a_whole_map(attack: str, tmp_path: Path) -> None:
    rng = np.random.default_rng(77)
    poses = corridor_walk(rng, 10.0)
    frames = [(corridor_depth(p, 10.0), p, colour_image(rng)) for p in poses]
    full_reference = TsdfVolume(BASE)
    for depth, pose, colour in frames:
        full_reference.integrate(depth, SMALL_K, pose, colour)
    budget = full_reference.block_count // 4
    folder = tmp_path / "spill"
    mounted = _mount_tmpfs(folder, "1m" if attack == "disk full" else "64m")
    if attack == "disk full" and not mounted:
        attack = "limit"  # without root, the store's own bound is the full disk
    try:
        limit = 300_000 if attack == "limit" else 2**30
        config = replace(BASE, block_budget=budget, spill_dir=str(folder), spill_page_blocks=2, spill_max_bytes=limit)
        volume = TsdfVolume(config)
        failed_at, error = None, None
        for index, error in _walk_until_error(volume, frames, 0):
            if error is not None:
                failed_at = index
                break
            if attack == "read-only" and volume.stored_block_count:
                _set_read_only(folder, mounted, read_only=True)
        assert failed_at is not None, f"{attack}: the walk never failed"
        message = str(error)
        expected = {"read-only": "Read-only file system" if mounted else "Permission denied"}
        expected["disk full"] = "No space left on device"
        expected["limit"] = "spill_max_bytes"
        assert expected[attack] in message and str(folder) in message, message
        assert isinstance(error, BlockStoreFull) == (attack == "limit")
        assert "the frame was not integrated" in message
        assert not list(folder.rglob("*.tmp")), "a failed write left a partial page behind"
        # The map is whole: every block integrated before the failing frame is in memory or on disk, unchanged,
        # and nothing of the failing frame went in.
        before = TsdfVolume(BASE)
        for depth, pose, colour in frames[:failed_at]:
            before.integrate(depth, SMALL_K, pose, colour)
        assert_same_blocks(volume, before, f"{attack}: after the error")
        # With room again, the walk continues from the failing frame to the map it would have made.
        if attack == "read-only":
            _set_read_only(folder, mounted, read_only=False)
        else:
            volume.store.max_bytes = 2**30
            if mounted:
                subprocess.run(["mount", "-o", "remount,size=64m", str(folder)], check=True)
        for _, error in _walk_until_error(volume, frames, failed_at):
            assert error is None, str(error)
        assert_same_blocks(volume, full_reference, f"{attack}: continued")
    finally:
        if mounted:
            subprocess.run(["umount", "-l", str(folder)], capture_output=True)
