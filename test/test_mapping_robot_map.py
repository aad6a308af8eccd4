"""RobotMap: overlapping windows integrate each keyframe once, chunks stay stable, occupancy remembers free space.

Real data: the bundled redkitchen keyframes fused by the rgbd backend. Occupancy: a synthetic z-up room
with a pillar seen by exact depth cameras (the redkitchen world frame is not gravity-aligned).
"""

from __future__ import annotations

from dataclasses import replace
from pathlib import Path

import numpy as np
import open3d as o3d
import pytest
from scipy.spatial import cKDTree
from scipy.spatial.transform import Rotation
from test_mapping_occupancy import PILLAR_MAX, PILLAR_MIN, room_with_pillar_depth
from test_mapping_volume import ROOM_MAX, ROOM_MIN, SEEDS, SMALL_K, look_at, room_poses

from showroom_ros.apps.map_session import load_map, save_map
from showroom_ros.capture.keyframes import Keyframe
from showroom_ros.io.datasets import load_frame_folder
from showroom_ros.io.map_files import read_nav2_map
from showroom_ros.mapping.mesh_chunks import unpack_chunk_id
from showroom_ros.mapping.occupancy import FREE, OCCUPIED, UNKNOWN, OccupancyConfig
from showroom_ros.mapping.robot_map import MapInputError, RobotMap, RobotMapConfig
from showroom_ros.mapping.volume import TsdfVolume, VolumeConfig
from showroom_ros.reconstruction.rgbd import RGBDFusionConfig, fuse_rgbd

SAMPLE = Path(__file__).resolve().parents[1] / "data" / "redkitchen"
VOLUME = VolumeConfig(voxel_size=0.04, depth_max=4.0)
FUSION = RGBDFusionConfig(voxel_size=0.02, pixel_stride=4)


def _weight_sum(volume: TsdfVolume) -> float:
    hashmap = volume.grid.hashmap()
    return float(hashmap.value_tensors()[1][hashmap.active_buf_indices()].cpu().numpy().sum())


@pytest.fixture(scope="module")
def kitchen() -> dict:
    keyframes = load_frame_folder(SAMPLE)
    first, second = keyframes[:3], keyframes[2:]
    return {
        "keyframes": keyframes,
        "windows": [(fuse_rgbd(first, FUSION), first), (fuse_rgbd(second, FUSION), second)],
    }


def test_overlapping_windows_integrate_each_keyframe_once(kitchen: dict) -> None:
    (r1, k1), (r2, k2) = kitchen["windows"]
    robot_map = RobotMap(RobotMapConfig(volume=VOLUME, gravity_aligned=False))
    u1 = robot_map.integrate(r1, k1)
    assert u1.integrated == [0, 1, 2] and u1.depth_sources == ["sensor"] * 3 and not u1.skipped
    first_ids = {c.chunk_id: c.key for c in u1.chunks.changed}
    assert first_ids and robot_map.chunks.published == set(first_ids)
    u2 = robot_map.integrate(r2, k2)
    assert u2.integrated == [1, 2] and u2.skipped == [0]
    assert not u2.messages, "a keyframe fused already is skipped quietly (at keyframe rate, every one is)"
    assert robot_map.keyframe_count == 5
    for chunk in u2.chunks.changed:  # same id = same place, in every update
        assert unpack_chunk_id(chunk.chunk_id) == chunk.key
        if chunk.chunk_id in first_ids:
            assert first_ids[chunk.chunk_id] == chunk.key

    # The TSDF weight equals that of the five keyframes integrated exactly once each.
    reference = TsdfVolume(VOLUME)
    for keyframe in kitchen["keyframes"]:
        reference.integrate(
            keyframe.depth, keyframe.depth_intrinsics, keyframe.pose, keyframe.image, keyframe.intrinsics
        )
    assert _weight_sum(robot_map.volume) == pytest.approx(_weight_sum(reference), rel=1e-6)
    # ... and integrating the overlap again (as a distinct keyframe, the redundancy check off) would count it twice.
    twice = RobotMap(RobotMapConfig(volume=VOLUME, gravity_aligned=False, redundant_translation_m=0.0))
    twice.integrate(r1, k1)
    twice.integrate(r2, [replace(k, stamp_ns=k.stamp_ns + 1) for k in k2])
    assert _weight_sum(twice.volume) > _weight_sum(reference) * 1.05

    assert u2.occupancy is None and "not gravity-aligned" in u2.occupancy_reason


def test_keyframe_rate_fusion_then_refresh_equals_the_window_path(kitchen: dict) -> None:
    """Keyframes fused one at a time (no reconstruction, nothing meshed), then one refresh: the same TSDF,
    chunks and grid as integrating them as one window; a window arriving later skips what was fused.
    (The grid's free-space memory grows per refresh, so refreshing at other moments may differ in a cell.)"""
    config = RobotMapConfig(volume=VOLUME)
    windowed = RobotMap(config)
    windowed.integrate(kitchen["windows"][0][0], kitchen["keyframes"])  # its own poses: not paired
    streamed = RobotMap(config)
    for keyframe in kitchen["keyframes"]:
        fused = streamed.fuse_keyframes([keyframe])
        assert fused.integrated == [0] and not fused.chunks.changed  # meshing waits for the refresh
    assert streamed.pending == len(kitchen["keyframes"])
    refreshed = streamed.refresh()
    assert streamed.pending == 0 and refreshed.chunks.changed
    assert _weight_sum(streamed.volume) == pytest.approx(_weight_sum(windowed.volume), rel=1e-6)
    assert streamed.chunks.published == windowed.chunks.published
    assert np.array_equal(streamed.occupancy().data, windowed.occupancy().data)
    result, keyframes = kitchen["windows"][1]
    late = streamed.integrate(result, keyframes)
    assert late.integrated == [] and late.skipped == [0, 1, 2] and not late.chunks.changed
    assert streamed.refresh().chunks.changed == []  # nothing pending: nothing to mesh

    # Without pose or depth a keyframe cannot be fused at keyframe rate: skipped, and said why.
    bare = RobotMap(config).fuse_keyframes([replace(kitchen["keyframes"][0], pose=None)])
    assert bare.skipped == [0] and "no pose" in bare.messages[0]


def test_rendered_depth_integrates_without_sensor_depth(kitchen: dict) -> None:
    r1, k1 = kitchen["windows"][0]
    sensor = RobotMap(RobotMapConfig(volume=VOLUME, gravity_aligned=False))
    sensor.integrate(r1, k1)
    rendered = RobotMap(RobotMapConfig(volume=VOLUME, gravity_aligned=False))
    update = rendered.integrate(r1, [replace(k, depth=None, depth_intrinsics=None) for k in k1])
    assert update.integrated == [0, 1, 2] and update.depth_sources == ["rendered"] * 3
    got, _ = rendered.surface()
    expected, _ = sensor.surface()
    assert len(got) > 0.6 * len(expected)
    distance, _ = cKDTree(expected).query(got)
    assert np.median(distance) < 0.02, f"median {np.median(distance):.4f} m from the sensor-depth map"

    # The confidence gate: nothing passes a gate above every point's confidence, so nothing is integrated.
    gated = RobotMap(RobotMapConfig(volume=VOLUME, gravity_aligned=False, render_min_confidence=1e6))
    update = gated.integrate(r1, [replace(k, depth=None, depth_intrinsics=None) for k in k1])
    assert gated.block_count == 0 and any("no rendered depth" in m for m in update.messages)


def test_refuses_non_metric_or_foreign_frame_and_clears(kitchen: dict) -> None:
    r1, k1 = kitchen["windows"][0]
    robot_map = RobotMap(RobotMapConfig(volume=VOLUME, gravity_aligned=False))
    with pytest.raises(MapInputError, match="not metric"):
        robot_map.integrate(replace(r1, metric=False), k1)
    with pytest.raises(MapInputError, match="frame 'showroom'"):
        robot_map.integrate(replace(r1, frame_id="showroom"), k1)
    with pytest.raises(MapInputError, match="sparse"):  # SfM points would carve and invent surfaces
        robot_map.integrate(replace(r1, sparse=True, backend="sfm"), k1)
    assert robot_map.block_count == 0
    robot_map.integrate(r1, k1[:2])
    published = robot_map.chunks.published
    assert published
    cleared = robot_map.clear()
    assert sorted(cleared.removed) == sorted(published) and not cleared.changed
    assert robot_map.block_count == 0 and len(robot_map.surface()[0]) == 0 and robot_map.keyframe_count == 0
    assert robot_map.integrate(r1, k1[:2]).integrated == [0, 1]  # cleared keyframes may come back


def test_block_budget_says_when_blocks_are_dropped(kitchen: dict) -> None:
    r1, k1 = kitchen["windows"][0]
    robot_map = RobotMap(RobotMapConfig(volume=replace(VOLUME, block_budget=150), gravity_aligned=False))
    update = robot_map.integrate(r1, k1)
    assert update.dropped_blocks > 0
    assert "block budget reached" in update.summary and any("block budget" in m for m in update.messages)
    assert robot_map.block_count <= max(150, max(len(r.touched_blocks) for r in update.reports))


def test_config_is_validated() -> None:
    with pytest.raises(ValueError, match="chunk_size_m"):
        RobotMapConfig(chunk_size_m=0.01)
    with pytest.raises(ValueError, match="render_scale"):
        RobotMapConfig(render_scale=0.0)
    with pytest.raises(ValueError, match="frame_id"):
        RobotMapConfig(frame_id=" ")


# --- occupancy in a z-up room ----------------------------------------------------------------------


def _room_keyframes(eyes_targets: list[tuple[list[float], list[float]]], first_stamp: int) -> list[Keyframe]:
    keyframes = []
    for number, (eye, target) in enumerate(eyes_targets):
        pose = look_at(np.array(eye, float), np.array(target, float))
        image = np.full((SMALL_K.height, SMALL_K.width, 3), 150, np.uint8)
        keyframes.append(
            Keyframe(
                image=image,
                stamp_ns=first_stamp + number,
                intrinsics=SMALL_K,
                depth=room_with_pillar_depth(pose),
                pose=pose,
            )
        )
    return keyframes


# Window A looks from the -x half at the pillar; window B looks from the +y side at the +x/+y corner.
WINDOW_A = [
    ([-1.4, 0.6, 0.8], [0.85, -0.25, 0.5]),
    ([-1.2, -0.9, 0.9], [0.85, -0.25, 0.6]),
    ([-1.5, 0.0, 0.7], [2.0, 0.2, 0.4]),
]
WINDOW_B = [([1.6, 1.2, 0.8], [2.0, -1.0, 0.5]), ([1.2, 1.1, 0.9], [2.0, 1.5, 0.3])]
BETWEEN = (-0.3, -0.2)  # between window A's cameras and the pillar: only window A's rays cross it
OCC = OccupancyConfig(resolution=0.1, min_height=0.1, max_height=1.5, padding=0.3)


def _value(grid, xy: tuple[float, float]) -> int:
    row, col = grid.cell_of(np.array([xy]))
    assert 0 <= row[0] < grid.height and 0 <= col[0] < grid.width, f"{xy} outside the grid"
    return int(grid.data[row[0], col[0]])


def test_occupancy_has_obstacles_free_and_unknown_and_remembers_free_space() -> None:
    config = RobotMapConfig(volume=replace(VOLUME, depth_max=6.0), occupancy=OCC, chunk_size_m=0.64)
    window_a, window_b = _room_keyframes(WINDOW_A, 1), _room_keyframes(WINDOW_B, 100)
    robot_map = RobotMap(config)
    u1 = robot_map.integrate(fuse_rgbd(window_a, FUSION), window_a)
    grid = u1.occupancy
    assert grid is not None and u1.occupancy_reason == ""
    assert set(np.unique(grid.data)) == {FREE, OCCUPIED, UNKNOWN}
    assert _value(grid, ((PILLAR_MIN[0] + PILLAR_MAX[0]) / 2, (PILLAR_MIN[1] + PILLAR_MAX[1]) / 2)) in (
        OCCUPIED,
        UNKNOWN,  # the pillar's inside is never seen; its faces are
    )
    assert _value(grid, (PILLAR_MIN[0] + 0.03, -0.25)) == OCCUPIED  # the face the cameras see
    assert _value(grid, BETWEEN) == FREE
    # The floor (z = 0, below min_height) is no obstacle; beyond the walls nothing was observed.
    rows, cols = np.mgrid[0 : grid.height, 0 : grid.width]
    centre = np.stack([grid.origin_xy[0] + (cols + 0.5) * 0.1, grid.origin_xy[1] + (rows + 0.5) * 0.1], -1)
    outside = np.any((centre < ROOM_MIN[:2] - 0.15) | (centre > ROOM_MAX[:2] + 0.15), axis=-1)
    assert outside.any() and np.all(grid.data[outside] == UNKNOWN)
    inside = np.all((centre > ROOM_MIN[:2] + 0.15) & (centre < ROOM_MAX[:2] - 0.15), axis=-1)
    pillar = np.all((centre > PILLAR_MIN[:2] - 0.2) & (centre < PILLAR_MAX[:2] + 0.2), axis=-1)
    assert not np.any(grid.data[inside & ~pillar] == OCCUPIED)

    published = robot_map.chunks.published
    u2 = robot_map.integrate(fuse_rgbd(window_b, FUSION), window_b)
    assert u2.integrated == [0, 1]
    assert 0 < len(u2.chunks.changed) < len(robot_map.chunks.published)  # only the chunks window B touched
    assert published - {c.chunk_id for c in u2.chunks.changed} <= robot_map.chunks.published
    grid2 = u2.occupancy
    assert grid2 is not None
    assert grid2.width * grid2.height >= grid.width * grid.height  # the extent follows the map
    assert _value(grid2, BETWEEN) == FREE  # remembered from window A
    only_b = RobotMap(config)
    only_b_grid = only_b.integrate(fuse_rgbd(window_b, FUSION), window_b).occupancy
    assert only_b_grid is not None
    row, col = only_b_grid.cell_of(np.array([BETWEEN]))
    inside_b = 0 <= row[0] < only_b_grid.height and 0 <= col[0] < only_b_grid.width
    assert not inside_b or only_b_grid.data[row[0], col[0]] != FREE  # window B alone never saw it free


def test_save_and_load_round_trip(tmp_path: Path) -> None:
    config = RobotMapConfig(volume=replace(VOLUME, depth_max=6.0), occupancy=OCC)
    window_a = _room_keyframes(WINDOW_A, 1)
    robot_map = RobotMap(config)
    robot_map.integrate(fuse_rgbd(window_a, FUSION), window_a)
    with pytest.raises(ValueError, match="map name"):
        save_map(robot_map, tmp_path, "../escape")
    with pytest.raises(ValueError, match="empty"):
        save_map(RobotMap(config), tmp_path, "empty")
    written = save_map(robot_map, tmp_path, "room")
    assert {p.name for p in written.values()} == {
        "room_map_mesh.ply",
        "room_map_cloud.ply",
        "room_occupancy.yaml",
        "room_occupancy.pgm",
        "room_volume.npz",
        "room_map.yaml",
    }
    grid = robot_map.occupancy()
    saved = read_nav2_map(written["occupancy_yaml"])
    np.testing.assert_array_equal(saved.data, grid.data)
    assert saved.origin[:2] == pytest.approx(grid.origin_xy) and saved.resolution == pytest.approx(grid.resolution)
    mesh = o3d.io.read_triangle_mesh(str(written["mesh"]))
    assert len(mesh.triangles) == len(robot_map.mesh().triangles) > 0
    points, _ = robot_map.surface()
    assert len(o3d.io.read_point_cloud(str(written["cloud"])).points) == len(points)

    loaded, update = load_map(tmp_path)  # the frame and occupancy band come from room_map.yaml
    assert loaded.config.occupancy == OCC and loaded.frame_id == "map"
    assert len(update.chunks.changed) == len(robot_map.chunks.published)
    got, _ = loaded.surface()
    order = np.lexsort(points.T)
    np.testing.assert_allclose(got[np.lexsort(got.T)], points[order], atol=1e-6)
    np.testing.assert_array_equal(loaded.occupancy().data, grid.data)  # free space came back from the grid files
    # Mapping continues from the loaded map.
    window_b = _room_keyframes(WINDOW_B, 100)
    more = loaded.integrate(fuse_rgbd(window_b, FUSION), window_b)
    assert more.integrated == [0, 1] and loaded.block_count > robot_map.block_count
    assert _value(more.occupancy, BETWEEN) == FREE


def test_incremental_surface_and_occupancy_equal_a_full_recomputation() -> None:
    """The kept cloud and the incrementally counted obstacles give exactly what recomputing from the TSDF gives."""
    config = RobotMapConfig(volume=replace(VOLUME, depth_max=6.0, block_budget=250), occupancy=OCC, chunk_size_m=0.64)
    robot_map = RobotMap(config)
    dropped = 0
    windows = [_room_keyframes(WINDOW_A, 1), _room_keyframes(WINDOW_B, 100), _room_keyframes(WINDOW_A[:2], 200)]
    for window in windows:
        update = robot_map.integrate(fuse_rgbd(window, FUSION), window)
        dropped += update.dropped_blocks
        points, colours = robot_map.surface()
        expected, expected_colours = robot_map.volume.extract_point_cloud()
        order, expected_order = np.lexsort(points.T), np.lexsort(expected.T)
        np.testing.assert_array_equal(points[order], expected[expected_order])
        np.testing.assert_array_equal(colours[order], expected_colours[expected_order])
        reference = robot_map.occupancy_from_scratch()
        assert update.occupancy is not None and reference is not None
        assert update.occupancy.origin_xy == pytest.approx(reference.origin_xy, abs=1e-9)
        np.testing.assert_array_equal(update.occupancy.data, reference.data)
        assert (update.occupancy.data == OCCUPIED).sum() > 10
    assert dropped > 0  # the budget dropped blocks: their obstacles were subtracted again
    robot_map.clear()
    assert len(robot_map.surface()[0]) == 0 and robot_map.occupancy() is None


# --- a static scene seen again (issue 20): redundant keyframes are not fused again -----------------------


def _room_keyframes_at(poses: list[np.ndarray], first_stamp: int) -> list[Keyframe]:
    image = np.full((SMALL_K.height, SMALL_K.width, 3), 150, np.uint8)
    return [
        Keyframe(image=image, stamp_ns=first_stamp + n, intrinsics=SMALL_K, depth=room_with_pillar_depth(p), pose=p)
        for n, p in enumerate(poses)
    ]


def _seen_again(keyframes: list[Keyframe], rng: np.random.Generator, first_stamp: int) -> list[Keyframe]:
    """The same views as new keyframes, as a sensor and a tracker give them back: depth noise (then mm steps,
    as a 16UC1 image has) and a 2 mm / 0.2 deg pose jitter."""
    again = []
    for number, keyframe in enumerate(keyframes):
        depth = keyframe.depth.copy()
        valid = np.isfinite(depth) & (depth > 0)
        sigma = 0.0012 + 0.0019 * (depth[valid] - 0.4) ** 2
        depth[valid] = np.round((depth[valid] + rng.normal(0.0, 1.0, int(valid.sum())) * sigma) * 1000) / 1000
        pose = keyframe.pose.copy()
        axis = rng.normal(size=3)
        pose[:3, :3] = Rotation.from_rotvec(axis / np.linalg.norm(axis) * np.radians(0.2)).as_matrix() @ pose[:3, :3]
        pose[:3, 3] += rng.normal(size=3) / np.sqrt(3) * 0.002
        again.append(replace(keyframe, stamp_ns=first_stamp + number, depth=depth.astype(np.float32), pose=pose))
    return again


@pytest.mark.parametrize("seed", SEEDS[:2])
def test_the_same_views_fused_again_and_again_leave_the_map_as_it_was(kitchen: dict, seed: int) -> None:
    """The node's default map settings; the old behaviour (check off) grows the map on the same input."""
    rng = np.random.default_rng(seed)
    views = kitchen["keyframes"]
    checked, unchecked = RobotMap(), RobotMap(RobotMapConfig(redundant_translation_m=0.0))
    first = checked.fuse_keyframes(views)
    checked.refresh()
    unchecked.fuse_keyframes(views)
    unchecked.refresh()
    blocks, published, weight = checked.block_count, set(checked.chunks.published), _weight_sum(checked.volume)
    assert first.integrated == [0, 1, 2, 3, 4] and not first.redundant
    for loop in range(1, 4):
        again = _seen_again(views, rng, loop * 1000)
        update = checked.fuse_keyframes(again)
        assert update.redundant == [0, 1, 2, 3, 4] and not update.integrated and not update.reports
        assert "5 redundant" in update.summary
        refreshed = checked.refresh()
        assert not refreshed.chunks.changed and not refreshed.chunks.removed
        unchecked.fuse_keyframes(again)
        unchecked.refresh()
    assert checked.block_count == blocks and checked.chunks.published == published
    assert _weight_sum(checked.volume) == weight
    assert checked.redundant_count == 15 and checked.keyframe_count == 5
    assert unchecked.block_count > blocks * 1.01, "the unchecked map should have grown on the same input"
    # The window path asks the same question (and a window of the fused keyframes themselves is just skipped).
    window = _seen_again(views[:3], rng, 9000)
    update = checked.integrate(fuse_rgbd(window, FUSION), window)
    assert update.redundant == [0, 1, 2] and not update.integrated and checked.block_count == blocks
    assert checked.integrate(fuse_rgbd(views[:3], FUSION), views[:3]).skipped == [0, 1, 2]


def test_a_new_viewpoint_still_extends_the_map(kitchen: dict) -> None:
    views = kitchen["keyframes"]
    robot_map = RobotMap(RobotMapConfig(volume=VOLUME, gravity_aligned=False))
    robot_map.fuse_keyframes(views[:3])
    robot_map.refresh()
    before, published = robot_map.block_count, set(robot_map.chunks.published)
    assert robot_map.fuse_keyframes([replace(k, stamp_ns=k.stamp_ns + 7) for k in views[:3]]).redundant == [0, 1, 2]
    update = robot_map.fuse_keyframes([replace(k, stamp_ns=k.stamp_ns + 7) for k in views[3:]])
    assert update.integrated == [0, 1] and not update.redundant
    robot_map.refresh()
    assert robot_map.block_count > before and robot_map.chunks.published > published


@pytest.mark.parametrize("seed", SEEDS)
def test_redundant_means_within_both_thresholds_of_a_fused_keyframe(seed: int) -> None:
    rng = np.random.default_rng(seed)
    config = RobotMapConfig(
        volume=replace(VOLUME, depth_max=6.0),
        redundant_translation_m=float(rng.uniform(0.02, 0.2)),
        redundant_rotation_deg=float(rng.uniform(2.0, 15.0)),
    )
    robot_map = RobotMap(config)
    pose = room_poses(rng, 1)[0]
    robot_map.fuse_keyframes(_room_keyframes_at([pose], 1))

    def moved(metres: float, degrees: float) -> np.ndarray:
        direction, axis = rng.normal(size=3), rng.normal(size=3)
        other = pose.copy()
        turn = Rotation.from_rotvec(axis / np.linalg.norm(axis) * np.radians(degrees)).as_matrix()
        other[:3, :3] = turn @ pose[:3, :3]
        other[:3, 3] += direction / np.linalg.norm(direction) * metres
        return other

    t, r = config.redundant_translation_m, config.redundant_rotation_deg
    near = [moved(rng.uniform(0, 0.95) * t, rng.uniform(0, 0.95) * r) for _ in range(5)]
    far = [moved(rng.uniform(1.05, 3) * t, rng.uniform(0, 0.95) * r) for _ in range(3)]
    turned = [moved(rng.uniform(0, 0.95) * t, rng.uniform(1.05, 3) * r) for _ in range(3)]
    assert all(robot_map.is_redundant(p) for p in near)
    assert not any(robot_map.is_redundant(p) for p in far + turned)
    update = robot_map.fuse_keyframes(_room_keyframes_at(near + far + turned, 100))
    # The near ones are redundant; the first far one is new. Each fused one counts from then on, so a later
    # far/turned one may be redundant with an earlier one.
    assert update.redundant[:5] == list(range(5)) and update.integrated[0] == 5
    assert sorted(update.integrated + update.redundant) == list(range(11))


def test_a_view_whose_blocks_the_budget_dropped_is_fused_again() -> None:
    """Otherwise a place the budget erased could never come back from the same pose."""
    config = RobotMapConfig(volume=replace(VOLUME, depth_max=6.0, block_budget=250), occupancy=OCC)
    robot_map = RobotMap(config)
    first = _room_keyframes(WINDOW_A[:1], 1)
    robot_map.fuse_keyframes(first)
    assert robot_map.is_redundant(first[0].pose)
    update = robot_map.fuse_keyframes(_room_keyframes(WINDOW_B, 10))
    assert update.dropped_blocks > 0
    assert not robot_map.is_redundant(first[0].pose)
    again = robot_map.fuse_keyframes([replace(first[0], stamp_ns=99)])
    assert again.integrated == [0] and again.reports[0].touched_blocks.size


def test_redundancy_thresholds_are_validated_and_zero_turns_the_check_off(kitchen: dict) -> None:
    with pytest.raises(ValueError, match="redundant_translation_m"):
        RobotMapConfig(redundant_translation_m=-0.01)
    with pytest.raises(ValueError, match="redundant_rotation_deg"):
        RobotMapConfig(redundant_rotation_deg=200.0)
    for off in (
        RobotMapConfig(volume=VOLUME, redundant_rotation_deg=0.0),
        RobotMapConfig(volume=VOLUME, redundant_translation_m=0.0),
    ):
        robot_map = RobotMap(off)
        robot_map.fuse_keyframes(kitchen["keyframes"][:1])
        assert robot_map.fuse_keyframes([replace(kitchen["keyframes"][0], stamp_ns=5)]).integrated == [0]
