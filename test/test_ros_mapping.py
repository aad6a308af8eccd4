"""Robot mapping through the node (issue 12), driven from another process over real DDS.

The replay node publishes the 5 bundled redkitchen RGB-D keyframes with their ground-truth poses,
moved into a z-up frame (7-Scenes' world is not gravity-aligned; a robot's map frame is, REP-103).
With windows of 3 keyframes overlapping by 1, the node must integrate two windows into its TSDF map
and publish a growing chunked ~/map_mesh (only changed chunks resent, stable ids, each triangle in its
chunk's cube), an ~/occupancy grid whose occupied cells lie on the real surfaces, a snapshot of every
chunk to a subscriber that joins late, and ~/save_map / ~/clear_map / ~/load_map that round-trip.
"""

from __future__ import annotations

import shutil
from pathlib import Path

import numpy as np
import pytest
from ros_harness import LATCHED_QOS, REPO_ROOT, NodeProcess, call_service, requires_ros, ros_init_for_tests, spin_until

pytestmark = [requires_ros, pytest.mark.ros]

CHUNK = 0.96  # a whole number of 16 cm blocks (the node rounds map_chunk_size to blocks)


@pytest.fixture(scope="module")
def z_up_kitchen(tmp_path_factory) -> tuple[Path, np.ndarray]:
    """data/redkitchen with its poses in a z-up frame, and the ground-truth surface points in that frame."""
    from showroom_ros.apps.map_session import gravity_from_first_camera
    from showroom_ros.io.datasets import load_frame_folder

    source = REPO_ROOT / "data" / "redkitchen"
    folder = tmp_path_factory.mktemp("kitchen_z_up")
    keyframes = load_frame_folder(source)
    to_z_up = gravity_from_first_camera(keyframes[0].pose)
    lines = []
    for path in source.iterdir():
        if path.suffix in (".jpg", ".png", ".yaml", ".md"):
            shutil.copy(path, folder / path.name)
    surface = []
    for line in (source / "frames_c2w.txt").read_text().splitlines():
        if not line.strip() or line.startswith("#"):
            continue
        rgb, depth, *numbers = line.split()
        pose = to_z_up @ np.array(numbers, dtype=np.float64).reshape(4, 4)
        lines.append(" ".join([rgb, depth, *(f"{v:.9g}" for v in pose.reshape(-1))]))
    (folder / "frames_c2w.txt").write_text("\n".join(lines) + "\n")
    for keyframe in load_frame_folder(folder):
        k, depth = keyframe.depth_intrinsics, keyframe.depth
        v, u = np.nonzero(np.isfinite(depth) & (depth > 0.1) & (depth < 4.0))
        z = depth[v, u]
        camera = np.stack([(u - k.cx) / k.fx * z, (v - k.cy) / k.fy * z, z, np.ones_like(z)])
        surface.append((keyframe.pose @ camera)[:3].T[::7])
    return folder, np.concatenate(surface)


@pytest.fixture
def client():
    from rclpy.node import Node

    ros_init_for_tests()
    node = Node(f"showroom_mapping_test_{np.random.default_rng().integers(1 << 30)}")
    yield node
    node.destroy_node()


class Collect:
    """Every message of a topic: reliable, transient local, and deep enough that none is replaced."""

    def __init__(self, node, msg_type, topic):
        from rclpy.qos import QoSProfile

        self.msgs: list = []
        qos = QoSProfile(depth=100, reliability=LATCHED_QOS.reliability, durability=LATCHED_QOS.durability)
        self.sub = node.create_subscription(msg_type, topic, self.msgs.append, qos)


def _chunk_cube_holds_triangles(marker) -> bool:
    from showroom_ros.mapping.mesh_chunks import unpack_chunk_id

    key = np.array(unpack_chunk_id(marker.id), dtype=np.float64)
    corners = np.array([[p.x, p.y, p.z] for p in marker.points]).reshape(-1, 3, 3)
    centroids = corners.mean(axis=1)
    return bool(np.all((centroids >= key * CHUNK - 1e-6) & (centroids < (key + 1) * CHUNK + 1e-6)))


def test_node_maps_windows_into_chunks_occupancy_and_saved_files(client, tmp_path, z_up_kitchen):
    from nav_msgs.msg import OccupancyGrid
    from sensor_msgs.msg import PointCloud2
    from std_srvs.srv import Trigger
    from visualization_msgs.msg import Marker, MarkerArray

    from showroom_ros.io.map_files import read_nav2_map
    from showroom_ros.msg import ReconstructionStatus
    from showroom_ros.ros.replay_node import SHOWROOM_PARAMETERS_FOR_REPLAY
    from showroom_ros.srv import LoadMap, SaveReconstruction

    folder, surface = z_up_kitchen
    floor = float(np.percentile(surface[:, 2], 1))
    params = {
        **SHOWROOM_PARAMETERS_FOR_REPLAY,
        "output_dir": str(tmp_path / "out"),
        "autosave": False,
        "build_mesh": False,
        "max_keyframes": 3,
        "window_overlap": 1,
        "idle_reconstruct_s": 2.0,
        "map_chunk_size": CHUNK,
        "floor_z": floor,
    }
    node = NodeProcess("showroom_node", params, tmp_path, REPO_ROOT / "config" / "showroom.yaml")
    meshes = Collect(client, MarkerArray, "/showroom/map_mesh")
    grids = Collect(client, OccupancyGrid, "/showroom/occupancy")
    clouds = Collect(client, PointCloud2, "/showroom/map")
    statuses = Collect(client, ReconstructionStatus, "/showroom/status")
    replay = None
    try:
        assert spin_until(client, lambda: bool(statuses.msgs), 60), node.log()
        replay = NodeProcess(
            "showroom_replay", {"folder": str(folder), "rate_hz": 5.0, "repeat_each": 3, "loop": True}, tmp_path
        )
        # 5 keyframes, each fused as it is taken; the map is published as it grows (changed chunks only).
        assert spin_until(client, lambda: len(meshes.msgs) >= 2 and len(grids.msgs) >= 2, 240), node.log()
        assert node.alive(), node.log()
        replay.stop()
        # Quiet the node before inspecting: no new window may start (reset empties the buffer, keeps the map).
        reset_ok = lambda: call_service(client, Trigger, "/showroom/reset", Trigger.Request(), timeout=30).success  # noqa: E731
        assert spin_until(client, reset_ok, 120), node.log()
        assert "the map is kept" in statuses.msgs[-1].message or spin_until(
            client, lambda: "the map is kept" in statuses.msgs[-1].message, 5
        )
        # Keyframe rate: each keyframe went into the map when it was taken, not when its window ran.
        status = statuses.msgs[-1]
        # (A frame whose view is in the map already, within 5 cm and 5 deg, is not fused again.)
        assert status.map_keyframes_integrated >= 3 and status.map_keyframes_dropped == 0, status
        assert status.map_age_s >= 0.0, status

        first, second = meshes.msgs[0], meshes.msgs[1]
        for update in (first, second):
            assert all(m.action in (Marker.ADD, Marker.DELETE) for m in update.markers)  # never DELETEALL
            ids = [m.id for m in update.markers]
            assert len(ids) == len(set(ids))
            added = [m for m in update.markers if m.action == Marker.ADD]
            assert added and all(_chunk_cube_holds_triangles(m) for m in added)
        # The second window touches part of the map: only those chunks come again, under the same ids.
        first_ids = {m.id for m in first.markers}
        second_ids = {m.id for m in second.markers}
        assert second_ids & first_ids and len(second.markers) < len(first.markers) + len(second_ids - first_ids)
        # ~/map is the TSDF's surface: on the real surfaces the depth camera saw (median within 2 cm).
        from scipy.spatial import cKDTree

        from showroom_ros.ros.conversions import cloud_to_points

        map_points, _ = cloud_to_points(clouds.msgs[-1])
        assert len(map_points) > 10_000
        distances, _ = cKDTree(surface).query(map_points)
        assert np.median(distances) < 0.02, np.median(distances)

        grid = grids.msgs[-1]
        cells = np.array(grid.data, np.int8).reshape(grid.info.height, grid.info.width)
        assert {-1, 0, 100} <= set(np.unique(cells).tolist())
        # Occupied cells sit on real surfaces in the obstacle band (ground-truth depth, same poses).
        band = surface[(surface[:, 2] > floor + 0.1) & (surface[:, 2] < floor + 1.5)]
        resolution, origin = grid.info.resolution, (grid.info.origin.position.x, grid.info.origin.position.y)
        true_cells = np.zeros_like(cells, dtype=bool)
        cols = np.floor((band[:, 0] - origin[0]) / resolution).astype(int)
        rows = np.floor((band[:, 1] - origin[1]) / resolution).astype(int)
        inside = (rows >= 0) & (rows < cells.shape[0]) & (cols >= 0) & (cols < cells.shape[1])
        true_cells[rows[inside], cols[inside]] = True
        near = np.zeros_like(true_cells)
        for dr in (-2, -1, 0, 1, 2):  # within 10 cm
            for dc in (-2, -1, 0, 1, 2):
                near |= np.roll(np.roll(true_cells, dr, 0), dc, 1)
        occupied = cells == 100
        assert near[occupied].mean() > 0.9, near[occupied].mean()

        # A subscriber that joins now gets every chunk (a snapshot), not just the last update: the chunks
        # that all updates so far add up to (ADD replaces, DELETE removes; the looping replay may have
        # driven more than two windows before the reset).
        current: set[int] = set()
        for update in meshes.msgs:
            for marker in update.markers:
                (current.add if marker.action == Marker.ADD else current.discard)(marker.id)
        late = Collect(client, MarkerArray, "/showroom/map_mesh")
        snapshot = lambda: [m for m in late.msgs if {k.id for k in m.markers if k.action == Marker.ADD} == current]  # noqa: E731
        assert spin_until(client, lambda: bool(snapshot()), 20), [len(m.markers) for m in late.msgs]
        snapshot_ids = current

        saved = call_service(
            client, SaveReconstruction, "/showroom/save_map", SaveReconstruction.Request(name="kitchen"), timeout=120
        )
        assert saved.success, saved.message + node.log()
        files = {Path(f).name for f in saved.files}
        expected = {"kitchen_map_mesh.ply", "kitchen_map_cloud.ply", "kitchen_occupancy.yaml", "kitchen_volume.npz"}
        assert expected <= files, files
        assert all(Path(f).parent == (tmp_path / "out").resolve() for f in saved.files)
        nav2 = read_nav2_map(tmp_path / "out" / "kitchen_occupancy.yaml")
        np.testing.assert_array_equal(nav2.data, cells)  # the same grid, as nav2_map_server reads it back
        bad = call_service(client, SaveReconstruction, "/showroom/save_map", SaveReconstruction.Request(name="../x"))
        assert not bad.success and "invalid name" in bad.message

        before = len(meshes.msgs)
        cleared = call_service(client, Trigger, "/showroom/clear_map", Trigger.Request(), timeout=60)
        assert cleared.success, cleared.message
        assert spin_until(client, lambda: len(meshes.msgs) > before and clouds.msgs[-1].width == 0, 20)
        deleted = {m.id for m in meshes.msgs[-1].markers if m.action == Marker.DELETE}
        assert deleted == snapshot_ids

        missing = call_service(client, LoadMap, "/showroom/load_map", LoadMap.Request(name="nothing"), timeout=60)
        assert not missing.success and "nothing" in missing.message
        loaded = call_service(client, LoadMap, "/showroom/load_map", LoadMap.Request(name="kitchen"), timeout=120)
        assert loaded.success and loaded.num_blocks > 0, loaded.message
        assert spin_until(client, lambda: clouds.msgs[-1].width > 0, 30)
        assert {m.id for m in meshes.msgs[-1].markers if m.action == Marker.ADD} == snapshot_ids
        assert node.alive() and "Traceback" not in node.log(), node.log()
    finally:
        if replay is not None:
            replay.stop()
        node.stop()


def test_without_poses_there_is_no_robot_map_and_status_says_why(client, tmp_path):
    """pose_source none: no metric, gravity-aligned frame; ~/map keeps merging clouds, ~/occupancy stays silent."""
    from nav_msgs.msg import OccupancyGrid
    from sensor_msgs.msg import PointCloud2

    from showroom_ros.msg import ReconstructionStatus
    from showroom_ros.ros.replay_node import SHOWROOM_PARAMETERS_FOR_REPLAY

    params = {
        **SHOWROOM_PARAMETERS_FOR_REPLAY,
        "pose_source": "none",
        "output_dir": str(tmp_path / "out"),
        "autosave": False,
        "build_mesh": False,
        "max_keyframes": 3,
    }
    node = NodeProcess("showroom_node", params, tmp_path, REPO_ROOT / "config" / "showroom.yaml")
    grids = Collect(client, OccupancyGrid, "/showroom/occupancy")
    clouds = Collect(client, PointCloud2, "/showroom/map")
    statuses = Collect(client, ReconstructionStatus, "/showroom/status")
    replay = None
    try:
        assert spin_until(client, lambda: bool(statuses.msgs), 60), node.log()
        replay = NodeProcess(
            "showroom_replay",
            {"folder": str(REPO_ROOT / "data" / "redkitchen"), "rate_hz": 5.0, "repeat_each": 2, "loop": True},
            tmp_path,
        )
        done = lambda: bool(statuses.msgs) and statuses.msgs[-1].num_points > 0 and bool(statuses.msgs[-1].notes)  # noqa: E731
        assert spin_until(client, done, 180), node.log()
        final = statuses.msgs[-1]
        assert final.frame_id != "map" and any("not in the robot map" in note for note in final.notes), final.notes
        assert any("poses" in note for note in final.notes), final.notes  # what would give a map
        assert spin_until(client, lambda: bool(clouds.msgs) and clouds.msgs[-1].width > 0, 20), node.log()
        assert not grids.msgs
        assert node.alive() and "Traceback" not in node.log(), node.log()
    finally:
        if replay is not None:
            replay.stop()
        node.stop()
