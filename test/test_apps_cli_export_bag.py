"""`showroom export-bag`: the node's messages built without rclpy, checked against rclpy's own.

The CDR bytes in the bag come from the rosbags typestore; rclpy must deserialise them into exactly
the messages showroom_ros.ros.conversions builds for the same data. The MCAP must also decode with
an independent reader (mcap-ros2-support, what Foxglove-style tools use) from its embedded schemas.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
from rosbags.rosbag2 import Reader

from showroom_ros.apps.cli import main
from showroom_ros.geometry.camera import CameraIntrinsics
from showroom_ros.io.export import save_npz
from showroom_ros.io.export_bag import mesh_markers_message, reconstruction_messages, serialize
from showroom_ros.reconstruction.result import Reconstruction, TriangleMesh

STAMP_NS = 1_700_000_123_456_789_012


def _reconstruction(frame_id: str = "odom", triangles: int = 120) -> Reconstruction:
    rng = np.random.default_rng(7)
    points = rng.normal(size=(500, 3)).astype(np.float32)
    poses = np.stack([np.eye(4)] * 3)
    poses[1, :3, :3] = [[0.0, -1.0, 0.0], [1.0, 0.0, 0.0], [0.0, 0.0, 1.0]]
    poses[1, :3, 3] = [1.0, 2.0, 3.0]
    poses[2, :3, :3] = [[1.0, 0.0, 0.0], [0.0, 0.0, -1.0], [0.0, 1.0, 0.0]]
    poses[2, :3, :3] *= 1.0002  # slightly non-rigid, as tracked poses are: both sides orthonormalise
    mesh = TriangleMesh(
        vertices=rng.normal(size=(80, 3)).astype(np.float32),
        triangles=rng.integers(0, 80, size=(triangles, 3)).astype(np.int32),
        vertex_colors=rng.integers(0, 256, size=(80, 3), dtype=np.uint8),
    )
    return Reconstruction(
        points=points,
        colors=rng.integers(0, 256, size=(500, 3), dtype=np.uint8),
        confidence=np.ones(500, np.float32),
        camera_poses=poses,
        intrinsics=[CameraIntrinsics(500.0, 500.0, 320.0, 240.0, 640, 480)] * 3,
        frame_id=frame_id,
        mesh=mesh,
    )


def test_bytes_deserialise_to_the_rclpy_messages() -> None:
    try:
        from rclpy.serialization import deserialize_message
        from std_msgs.msg import Header

        from showroom_ros.ros import conversions
    except ImportError as error:
        pytest.skip(
            f"rclpy is not importable here ({error}); the typestore bytes are checked by the other tests"
        )
    from builtin_interfaces.msg import Time
    from geometry_msgs.msg import PoseArray
    from sensor_msgs.msg import PointCloud2
    from visualization_msgs.msg import MarkerArray

    reconstruction = _reconstruction()
    messages = {m.topic: m for m in reconstruction_messages(reconstruction, STAMP_NS, max_triangles=0)}
    assert set(messages) == {"/showroom/cloud", "/showroom/mesh", "/showroom/keyframes"}
    header = Header(frame_id="odom", stamp=Time(sec=STAMP_NS // 10**9, nanosec=STAMP_NS % 10**9))

    cloud = deserialize_message(messages["/showroom/cloud"].data, PointCloud2)
    expected_cloud = conversions.points_to_cloud(reconstruction.points, reconstruction.colors, header)
    assert cloud == expected_cloud
    changed = reconstruction.colors.copy()
    changed[3, 1] ^= 1
    assert cloud != conversions.points_to_cloud(reconstruction.points, changed, header)  # equality is strict

    markers = deserialize_message(messages["/showroom/mesh"].data, MarkerArray)
    assert markers == conversions.mesh_to_markers(reconstruction.mesh, header)
    assert len(markers.markers) == 2 and len(markers.markers[1].points) == 3 * 120

    poses = deserialize_message(messages["/showroom/keyframes"].data, PoseArray)
    assert poses == conversions.poses_to_pose_array(reconstruction.camera_poses, header)
    # Split markers (several TRIANGLE_LISTs) match too.
    split = mesh_markers_message(reconstruction.mesh, "odom", STAMP_NS, max_triangles_per_marker=50)
    expected = conversions.mesh_to_markers(reconstruction.mesh, header, max_triangles_per_marker=50)
    assert deserialize_message(serialize(split), MarkerArray) == expected and len(expected.markers) == 4


def test_cli_writes_a_playable_mcap(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    reconstruction = _reconstruction(frame_id="map")
    npz = save_npz(reconstruction, tmp_path / "room.npz")
    bag = tmp_path / "room_bag"
    assert main(["export-bag", str(tmp_path), "--out", str(bag), "--stamp", "1700000000.5"]) == 0
    assert "ros2 bag play" in capsys.readouterr().out
    assert (bag / "metadata.yaml").is_file() and list(bag.glob("*.mcap"))

    with Reader(bag) as reader:
        topics = {c.topic: c.msgtype for c in reader.connections}
        assert topics == {
            "/showroom/cloud": "sensor_msgs/msg/PointCloud2",
            "/showroom/mesh": "visualization_msgs/msg/MarkerArray",
            "/showroom/keyframes": "geometry_msgs/msg/PoseArray",
        }
        assert [t for _, t, _ in reader.messages()] == [1_700_000_000_500_000_000] * 3

    from mcap.reader import make_reader
    from mcap_ros2.decoder import DecoderFactory

    with next(bag.glob("*.mcap")).open("rb") as stream:
        reader = make_reader(stream, decoder_factories=[DecoderFactory()])
        decoded = {channel.topic: message for _, channel, _, message in reader.iter_decoded_messages()}
    cloud = decoded["/showroom/cloud"]
    assert cloud.header.frame_id == "map" and cloud.width == 500 and cloud.point_step == 16
    xyz = np.frombuffer(bytes(cloud.data), dtype="<f4").reshape(-1, 4)[:, :3]
    np.testing.assert_array_equal(xyz, reconstruction.points)
    assert len(decoded["/showroom/keyframes"].poses) == 3
    assert decoded["/showroom/mesh"].markers[0].action == 3  # DELETEALL first, as the node publishes
    assert len(decoded["/showroom/mesh"].markers[1].points) == 360

    # Frame override, sqlite3 storage, decimation to the node's marker budget.
    other = tmp_path / "room_db3"
    assert (
        main(
            [
                "export-bag",
                str(npz),
                "--out",
                str(other),
                "--storage",
                "sqlite3",
                "--frame-id",
                "world",
                "--max-triangles",
                "50",
                "-q",
            ]
        )
        == 0
    )
    with Reader(other) as reader:
        assert len(list(reader.messages())) == 3 and list(other.glob("*.db3"))


def test_cli_export_errors(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    def fails(argv: list[str]) -> str:
        assert main(argv) == 1
        message = capsys.readouterr().err.strip()
        assert message.count("\n") == 0 and "Traceback" not in message
        return message

    assert "no reconstruction .npz" in fails(["export-bag", str(tmp_path)])
    save_npz(_reconstruction(), tmp_path / "a.npz")
    save_npz(_reconstruction(), tmp_path / "b.npz")
    assert "several reconstructions" in fails(["export-bag", str(tmp_path)])
    (tmp_path / "taken").mkdir()
    assert "already exists" in fails(
        ["export-bag", str(tmp_path / "a.npz"), "--out", str(tmp_path / "taken")]
    )
    (tmp_path / "junk.npz").write_bytes(b"not a zip")
    assert "cannot read" in fails(["export-bag", str(tmp_path / "junk.npz"), "--out", str(tmp_path / "x")])
