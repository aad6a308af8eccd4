"""Message <-> numpy conversions: every encoding, bad layouts, clouds, markers, poses.

Camera messages are decoded by ``showroom_ros.io.sensor_messages`` (the node's and the bag reader's one
decoder); the property tests below run it on rclpy messages and on the same bytes read by ``rosbags``.
"""

from __future__ import annotations

import numpy as np
import pytest
from ros_harness import requires_ros

pytestmark = requires_ros


@pytest.fixture
def header():
    from std_msgs.msg import Header

    return Header(frame_id="cam")


def _image(array: np.ndarray, encoding: str, header, step: int | None = None, bigendian: bool = False):
    from sensor_msgs.msg import Image

    height, width = array.shape[:2]
    row = array.reshape(height, -1).view(np.uint8).reshape(height, -1)
    step = step or row.shape[1]
    padded = np.zeros((height, step), np.uint8)
    padded[:, : row.shape[1]] = row
    return Image(
        header=header,
        height=height,
        width=width,
        encoding=encoding,
        is_bigendian=bigendian,
        step=step,
        data=padded.tobytes(),
    )


def test_colour_encodings_decode_to_rgb(header):
    import cv2

    from showroom_ros.ros.conversions import image_to_rgb

    rgb = np.random.default_rng(1).integers(0, 256, (6, 10, 3), dtype=np.uint8)
    assert np.array_equal(image_to_rgb(_image(rgb, "rgb8", header)), rgb)
    assert np.array_equal(image_to_rgb(_image(rgb[..., ::-1].copy(), "bgr8", header)), rgb)
    rgba = np.concatenate([rgb, np.full((6, 10, 1), 7, np.uint8)], axis=2)
    assert np.array_equal(image_to_rgb(_image(rgba, "rgba8", header)), rgb)
    bgra = np.concatenate([rgb[..., ::-1], np.full((6, 10, 1), 7, np.uint8)], axis=2)
    assert np.array_equal(image_to_rgb(_image(bgra, "bgra8", header)), rgb)
    gray = rgb[..., 0].copy()
    assert np.array_equal(image_to_rgb(_image(gray, "mono8", header)), np.repeat(gray[..., None], 3, axis=2))
    # Rows padded beyond width*3 (step) are read correctly.
    assert np.array_equal(image_to_rgb(_image(rgb, "rgb8", header, step=40)), rgb)
    uyvy = cv2.cvtColor(rgb, cv2.COLOR_RGB2YUV)  # only shape/dtype matter for the layout check
    decoded = image_to_rgb(_image(uyvy[..., :2].copy(), "yuv422", header))
    assert decoded.shape == (6, 10, 3)


def test_depth_encodings_keep_their_values(header):
    from showroom_ros.ros.conversions import depth_image_to_array

    millimetres = np.array([[0, 1, 65535], [1000, 2500, 42]], np.uint16)
    assert np.array_equal(depth_image_to_array(_image(millimetres, "16UC1", header)), millimetres)
    big = _image(millimetres.astype(">u2"), "16UC1", header, bigendian=True)
    assert np.array_equal(depth_image_to_array(big), millimetres)  # not mapped to uint8, unlike PyPI cv-bridge
    metres = np.array([[0.5, np.nan], [np.inf, 3.25]], np.float32)
    np.testing.assert_array_equal(depth_image_to_array(_image(metres, "32FC1", header)), metres)


@pytest.mark.parametrize(
    "mutate, message",
    [
        (lambda m: setattr(m, "encoding", "bayer_rggb16"), "unsupported image encoding"),
        (lambda m: setattr(m, "data", bytes(m.data)[:10]), "truncated"),
        (lambda m: setattr(m, "step", 3), "step"),
        (lambda m: (setattr(m, "width", 0), setattr(m, "height", 0)), "empty"),
    ],
)
def test_bad_images_raise_clear_errors(header, mutate, message):
    from showroom_ros.ros.conversions import MessageError, image_to_rgb

    msg = _image(np.zeros((4, 5, 3), np.uint8), "rgb8", header)
    mutate(msg)
    with pytest.raises(MessageError, match=message):
        image_to_rgb(msg)


def test_colour_and_depth_are_not_mixed_up(header):
    from showroom_ros.ros.conversions import MessageError, depth_image_to_array, image_to_rgb

    with pytest.raises(MessageError, match="expected a colour image"):
        image_to_rgb(_image(np.zeros((2, 2), np.uint16), "16UC1", header))
    with pytest.raises(MessageError, match="expected a depth image"):
        depth_image_to_array(_image(np.zeros((2, 2, 3), np.uint8), "rgb8", header))


def test_compressed_round_trips(header):
    from sensor_msgs.msg import CompressedImage

    from showroom_ros.ros.conversions import (
        MessageError,
        compressed_depth_to_array,
        compressed_to_rgb,
        depth_to_compressed_depth,
        rgb_to_compressed,
    )

    rgb = np.zeros((32, 48, 3), np.uint8)
    rgb[:, :24] = (200, 30, 10)
    decoded = compressed_to_rgb(rgb_to_compressed(rgb, header, "png"))
    assert np.array_equal(decoded, rgb)  # PNG is lossless: channel order must survive
    depth = np.arange(32 * 48, dtype=np.uint16).reshape(32, 48)
    assert np.array_equal(compressed_depth_to_array(depth_to_compressed_depth(depth, header)), depth)
    rvl = depth_to_compressed_depth(depth, header, "rvl")  # what robots that pick RVL publish
    assert rvl.format == "16UC1; compressedDepth rvl"
    assert np.array_equal(compressed_depth_to_array(rvl), depth)
    metres = np.where(depth % 7 == 0, np.nan, 0.5 + depth / 1000.0).astype(np.float32)
    for compression in ("png", "rvl"):
        decoded = compressed_depth_to_array(depth_to_compressed_depth(metres, header, compression))
        np.testing.assert_allclose(decoded, metres, rtol=1e-3)  # quantised inverse depth: mm at these ranges
    with pytest.raises(MessageError, match="could not decode"):
        compressed_to_rgb(CompressedImage(format="jpeg", data=b"not a jpeg at all"))
    with pytest.raises(MessageError, match="no data"):
        compressed_to_rgb(CompressedImage(format="jpeg"))


def test_camera_info_needs_a_calibration(header):
    from sensor_msgs.msg import CameraInfo

    from showroom_ros.geometry.camera import CameraIntrinsics
    from showroom_ros.ros.conversions import MessageError, camera_info_to_intrinsics, intrinsics_to_camera_info

    intrinsics = CameraIntrinsics(525.0, 526.0, 319.5, 239.5, 640, 480)
    assert camera_info_to_intrinsics(intrinsics_to_camera_info(intrinsics, header)) == intrinsics
    with pytest.raises(MessageError, match="no calibration"):
        camera_info_to_intrinsics(CameraInfo(width=640, height=480))


def test_point_cloud_round_trip_and_layout(header):
    from sensor_msgs.msg import PointField

    from showroom_ros.ros.conversions import cloud_to_points, points_to_cloud

    rng = np.random.default_rng(0)
    points = rng.normal(size=(1000, 3)).astype(np.float32)
    colors = rng.integers(0, 256, (1000, 3), dtype=np.uint8)
    msg = points_to_cloud(points, colors, header)
    assert [f.name for f in msg.fields] == ["x", "y", "z", "rgb"]
    assert all(f.datatype == PointField.FLOAT32 for f in msg.fields)
    assert msg.point_step == 16 and msg.row_step == 16000 and len(msg.data) == 16000
    back_points, back_colors = cloud_to_points(msg)
    assert np.array_equal(back_points, points) and np.array_equal(back_colors, colors)
    # rgb packs 0x00RRGGBB, as RViz's RGB8 transformer reads it
    packed = np.frombuffer(bytes(msg.data), np.uint32).reshape(-1, 4)[:, 3]
    assert packed[0] == (int(colors[0, 0]) << 16 | int(colors[0, 1]) << 8 | int(colors[0, 2]))


def test_mesh_markers_split_and_keep_colours(header):
    from visualization_msgs.msg import Marker

    from showroom_ros.reconstruction.result import TriangleMesh
    from showroom_ros.ros.conversions import mesh_to_markers

    vertices = np.random.default_rng(2).normal(size=(30, 3)).astype(np.float32)
    triangles = np.arange(30, dtype=np.int32).reshape(10, 3)
    colours = np.tile(np.array([[255, 0, 0]], np.uint8), (30, 1))
    markers = mesh_to_markers(TriangleMesh(vertices, triangles, colours), header, max_triangles_per_marker=4).markers
    assert markers[0].action == Marker.DELETEALL
    assert [len(m.points) for m in markers[1:]] == [12, 12, 6]
    assert len({m.id for m in markers[1:]}) == 3
    assert markers[1].colors[0].r == pytest.approx(1.0) and markers[1].colors[0].g == 0.0
    assert markers[3].points[-1].x == pytest.approx(float(vertices[29, 0]))


def test_pose_conversions_round_trip():
    from scipy.spatial.transform import Rotation

    from showroom_ros.ros.conversions import MessageError, matrix_to_pose, pose_to_matrix

    matrix = np.eye(4)
    matrix[:3, :3] = Rotation.from_euler("xyz", [10, -40, 170], degrees=True).as_matrix()
    matrix[:3, 3] = [1.5, -2.0, 0.25]
    np.testing.assert_allclose(pose_to_matrix(matrix_to_pose(matrix)), matrix, atol=1e-12)
    pose = matrix_to_pose(np.eye(4))
    pose.orientation.w = 0.0
    with pytest.raises(MessageError, match="quaternion"):
        pose_to_matrix(pose)


def test_pose_to_transform_keeps_the_pose(header):
    from geometry_msgs.msg import Pose
    from scipy.spatial.transform import Rotation

    from showroom_ros.ros.conversions import pose_to_matrix, pose_to_transform

    matrix = np.eye(4)
    matrix[:3, :3] = Rotation.from_euler("zyx", [30, 10, -5], degrees=True).as_matrix()
    matrix[:3, 3] = [0.5, -1.0, 2.0]
    transform = pose_to_transform(matrix, header, "showroom_keyframe_0")
    assert transform.header.frame_id == "cam" and transform.child_frame_id == "showroom_keyframe_0"
    t = transform.transform.translation
    back = pose_to_matrix(
        Pose(position=type(Pose().position)(x=t.x, y=t.y, z=t.z), orientation=transform.transform.rotation)
    )
    np.testing.assert_allclose(back, matrix, atol=1e-12)


# --- property tests: any value in any field either converts to a valid value or raises MessageError ---

_PROPERTY_SEED = 20261203
_PROPERTY_CASES = 1500
_MIN_CONVERTED = {"image": 0.1, "depth": 0.08, "compressed": 0.25, "compressed_depth": 0.04, "info": 0.15, "pose": 0.3}
"""Share of generated messages that must convert: about half of what the seeded generator yields, so the
property cannot pass by refusing everything."""
_ROSBAGS_TYPES = {
    "image": "sensor_msgs/msg/Image",
    "depth": "sensor_msgs/msg/Image",
    "compressed": "sensor_msgs/msg/CompressedImage",
    "compressed_depth": "sensor_msgs/msg/CompressedImage",
    "info": "sensor_msgs/msg/CameraInfo",
}


def _outcome(convert, msg):
    from showroom_ros.io.sensor_messages import MessageError

    try:
        return convert(msg)
    except MessageError as error:
        assert str(error), "empty MessageError"
        return error


def _same_outcome(a, b) -> bool:
    if isinstance(a, Exception) or isinstance(b, Exception):
        return type(a) is type(b) and str(a) == str(b)
    if isinstance(a, np.ndarray):
        return a.dtype == b.dtype and np.array_equal(a, b, equal_nan=a.dtype.kind == "f")
    return a == b


def _check_every_generated(kind: str, convert) -> None:
    """Run ``convert`` on generated messages: each gives a valid value or MessageError (anything else fails
    with the seed), at least ``_MIN_CONVERTED[kind]`` of them convert, and the same bytes read by
    ``rosbags`` (as the bag reader reads them) give the same outcome: one decoder, one set of rules."""
    from rclpy.serialization import serialize_message
    from ros_harness import random_message
    from rosbags.typesys import Stores, get_typestore

    typestore = get_typestore(Stores.ROS2_KILTED)
    converted = 0
    for case in range(_PROPERTY_CASES):
        seed = _PROPERTY_SEED + case
        msg = random_message(kind, np.random.default_rng(seed), now_ns=1_700_000_000 * 10**9)
        try:
            outcome = _outcome(convert, msg)
            if kind in _ROSBAGS_TYPES:
                from_bag = typestore.deserialize_cdr(serialize_message(msg), _ROSBAGS_TYPES[kind])
                assert _same_outcome(outcome, _outcome(convert, from_bag)), "rclpy and rosbags messages differ"
        except Exception as error:  # exactly what the property forbids
            raise AssertionError(f"{kind} seed {seed}: {type(error).__name__}: {error}\n{msg}") from error
        converted += not isinstance(outcome, Exception)
    assert converted >= _MIN_CONVERTED[kind] * _PROPERTY_CASES, f"only {converted} {kind} messages converted"


def test_the_node_decodes_with_the_io_decoder():
    """ros/conversions re-exports the io decoder: the node cannot drift from the bag reader."""
    from showroom_ros.io import sensor_messages
    from showroom_ros.ros import conversions

    for name in (
        "MessageError",
        "image_to_rgb",
        "compressed_to_rgb",
        "depth_image_to_array",
        "compressed_depth_to_array",
        "camera_info_to_intrinsics",
        "stamp_to_ns",
    ):
        assert getattr(conversions, name) is getattr(sensor_messages, name), name


def test_any_image_message_decodes_or_raises_message_error():
    from showroom_ros.io.sensor_messages import image_to_rgb

    def convert(msg):
        rgb = image_to_rgb(msg)
        assert rgb.dtype == np.uint8 and rgb.shape == (msg.height, msg.width, 3)
        return rgb

    _check_every_generated("image", convert)


def test_any_depth_message_decodes_or_raises_message_error():
    from showroom_ros.io.sensor_messages import depth_image_to_array

    def convert(msg):
        depth = depth_image_to_array(msg)
        assert depth.shape == (msg.height, msg.width) and depth.dtype in (np.uint16, np.float32)
        return depth

    _check_every_generated("depth", convert)


def test_any_compressed_message_decodes_or_raises_message_error():
    from showroom_ros.io.sensor_messages import compressed_depth_to_array, compressed_to_rgb

    def colour(msg):
        rgb = compressed_to_rgb(msg)
        assert rgb.dtype == np.uint8 and rgb.ndim == 3 and rgb.shape[2] == 3
        return rgb

    def depth(msg):
        values = compressed_depth_to_array(msg)
        assert values.ndim == 2 and values.dtype in (np.uint16, np.float32)
        return values

    _check_every_generated("compressed", colour)
    _check_every_generated("compressed_depth", depth)


def test_any_camera_info_converts_or_raises_message_error():
    """Defect 1 of issue 14: a NaN in K raised ValueError from CameraIntrinsics and killed the node."""
    from showroom_ros.io.sensor_messages import camera_info_to_intrinsics

    def convert(msg):
        intrinsics = camera_info_to_intrinsics(msg)
        values = [intrinsics.fx, intrinsics.fy, intrinsics.cx, intrinsics.cy]
        assert all(np.isfinite(values)) and intrinsics.fx > 0 and intrinsics.fy > 0
        assert (intrinsics.width, intrinsics.height) == (msg.width, msg.height)
        return intrinsics

    _check_every_generated("info", convert)


def test_nan_or_inf_in_k_is_a_message_error_not_a_value_error(header):
    from sensor_msgs.msg import CameraInfo

    from showroom_ros.ros.conversions import MessageError, camera_info_to_intrinsics

    for index in (0, 2, 4, 5):
        for bad in (float("nan"), float("inf")):
            k = [525.0, 0.0, 320.0, 0.0, 525.0, 240.0, 0.0, 0.0, 1.0]
            k[index] = bad
            with pytest.raises(MessageError):
                camera_info_to_intrinsics(CameraInfo(header=header, width=640, height=480, k=k))


def test_any_pose_converts_or_raises_message_error():
    from showroom_ros.ros.conversions import pose_to_matrix

    def convert(msg):
        matrix = pose_to_matrix(msg.pose)
        assert matrix.shape == (4, 4) and np.all(np.isfinite(matrix))
        rotation = matrix[:3, :3]
        assert np.allclose(rotation @ rotation.T, np.eye(3), atol=1e-6)
        assert np.isclose(np.linalg.det(rotation), 1.0, atol=1e-6)
        return matrix

    _check_every_generated("pose", convert)


# --- serialized publishing (issue 13 item 4, issue 14 defect 12) ---------------------------------


def _assert_same_wire_message(ours: bytes, reference, msg_type) -> None:
    """``ours`` deserializes to exactly ``reference`` and matches its CDR bytes but for padding.

    Fast-CDR leaves its alignment padding uninitialised, so two serializations of one message can
    differ there; every other byte must be identical, and our padding is zero.
    """
    from rclpy.serialization import deserialize_message, serialize_message

    assert deserialize_message(ours, msg_type) == reference
    theirs = serialize_message(reference)
    assert len(ours) == len(theirs)
    a, b = np.frombuffer(ours, np.uint8), np.frombuffer(theirs, np.uint8)
    differing = np.flatnonzero(a != b)
    assert np.all(a[differing] == 0), f"non-padding bytes differ at {differing[:10]}"


def test_serialized_cloud_matches_the_message_class_for_generated_clouds():
    from builtin_interfaces.msg import Time
    from sensor_msgs.msg import PointCloud2
    from std_msgs.msg import Header

    from showroom_ros.ros.conversions import points_to_cloud, points_to_cloud_serialized

    for seed in range(40):
        rng = np.random.default_rng(seed)
        count = int(rng.choice([0, 1, 2, 3, 5, 17, int(rng.integers(0, 5000))]))
        # float64 too: the node publishes reconstructions' float64 points through the serialized path.
        points = (rng.normal(size=(count, 3)) * 10 ** rng.uniform(-3, 3)).astype([np.float32, np.float64][seed % 2])
        colors = rng.integers(0, 256, (count, 3), dtype=np.uint8)
        frame = ["", "map", "x" * int(rng.integers(0, 9)), "\u00e9t\u00e9"][seed % 4]
        stamp = Time(sec=int(rng.integers(0, 2**31)), nanosec=int(rng.integers(0, 10**9)))
        header = Header(frame_id=frame, stamp=stamp)
        try:
            _assert_same_wire_message(
                points_to_cloud_serialized(points, colors, header), points_to_cloud(points, colors, header), PointCloud2
            )
        except AssertionError as error:
            raise AssertionError(f"seed {seed}: {error}") from error


def test_serialized_markers_match_the_message_class_for_generated_meshes():
    from builtin_interfaces.msg import Time
    from std_msgs.msg import Header
    from visualization_msgs.msg import MarkerArray

    from showroom_ros.reconstruction.result import TriangleMesh
    from showroom_ros.ros.conversions import mesh_to_markers, mesh_to_markers_clear, mesh_to_markers_serialized

    for seed in range(25):
        rng = np.random.default_rng(seed)
        vertices = int(rng.integers(3, 400))
        triangles = int(rng.choice([0, 1, 2, int(rng.integers(0, 700))]))
        mesh = TriangleMesh(
            vertices=rng.normal(size=(vertices, 3)).astype(np.float32),
            triangles=rng.integers(0, vertices, (triangles, 3)).astype(np.int32),
            vertex_colors=rng.integers(0, 256, (vertices, 3), dtype=np.uint8),
        )
        per_marker = int(rng.integers(1, 300))
        header = Header(frame_id=["map", "", "showroom"][seed % 3], stamp=Time(sec=seed, nanosec=seed * 7))
        try:
            _assert_same_wire_message(
                mesh_to_markers_serialized(mesh, header, max_triangles_per_marker=per_marker),
                mesh_to_markers(mesh, header, max_triangles_per_marker=per_marker),
                MarkerArray,
            )
            clear = mesh_to_markers_serialized(None, header)
            _assert_same_wire_message(clear, mesh_to_markers_clear(header), MarkerArray)
        except AssertionError as error:
            raise AssertionError(f"seed {seed}: {error}") from error


def test_serialized_chunk_updates_match_the_message_class_for_generated_chunks():
    from builtin_interfaces.msg import Time
    from std_msgs.msg import Header
    from visualization_msgs.msg import Marker, MarkerArray

    from showroom_ros.mapping.mesh_chunks import ChunkMesh, ChunkUpdate
    from showroom_ros.ros.conversions import chunk_update_to_markers, chunk_update_to_markers_serialized

    for seed in range(25):
        rng = np.random.default_rng(seed)
        changed = []
        for index in range(int(rng.integers(0, 5))):
            vertices = int(rng.integers(3, 200))
            changed.append(
                ChunkMesh(
                    chunk_id=int(rng.integers(0, 2**30)),
                    key=(index, 0, 0),
                    vertices=rng.normal(size=(vertices, 3)).astype(np.float32),
                    colors=rng.integers(0, 256, (vertices, 3), dtype=np.uint8),
                    triangles=rng.integers(0, vertices, (int(rng.integers(0, 300)), 3)).astype(np.int32),
                )
            )
        update = ChunkUpdate(changed=changed, removed=[int(v) for v in rng.integers(0, 2**30, int(rng.integers(0, 4)))])
        header = Header(frame_id=["map", "odom"][seed % 2], stamp=Time(sec=seed, nanosec=seed * 11))
        try:
            serialized = chunk_update_to_markers_serialized(update, header)
            _assert_same_wire_message(serialized, chunk_update_to_markers(update, header), MarkerArray)
        except AssertionError as error:
            raise AssertionError(f"seed {seed}: {error}") from error
        from rclpy.serialization import deserialize_message

        markers = deserialize_message(serialized, MarkerArray).markers
        assert [m.id for m in markers] == [c.chunk_id for c in changed] + update.removed
        assert [m.action for m in markers] == [Marker.ADD] * len(changed) + [Marker.DELETE] * len(update.removed)
        for marker, chunk in zip(markers, changed, strict=False):
            assert len(marker.points) == 3 * len(chunk.triangles)
            if len(chunk.triangles):
                corner = chunk.vertices[chunk.triangles[-1, 2]]
                np.testing.assert_allclose([marker.points[-1].x, marker.points[-1].y, marker.points[-1].z], corner)


def test_occupancy_grid_message_keeps_cells_origin_and_refuses_other_values():
    from std_msgs.msg import Header

    from showroom_ros.mapping.occupancy import OccupancyGrid
    from showroom_ros.ros.conversions import occupancy_to_msg

    rng = np.random.default_rng(3)
    data = rng.choice(np.array([-1, 0, 100], np.int8), size=(7, 11))
    msg = occupancy_to_msg(OccupancyGrid(data, 0.05, (-1.25, 2.5)), Header(frame_id="map"))
    assert (msg.info.width, msg.info.height, msg.info.resolution) == (11, 7, pytest.approx(0.05))
    assert (msg.info.origin.position.x, msg.info.origin.position.y, msg.info.origin.orientation.w) == (-1.25, 2.5, 1.0)
    np.testing.assert_array_equal(np.array(msg.data, np.int8).reshape(7, 11), data)  # row 0 = lowest y
    with pytest.raises(ValueError, match="-1, 0 and 100"):
        occupancy_to_msg(OccupancyGrid(np.full((2, 2), 50, np.int8), 0.05, (0.0, 0.0)), Header())


def test_stamp_read_from_serialized_bytes_equals_the_deserialized_header():
    from rclpy.serialization import serialize_message
    from sensor_msgs.msg import CameraInfo, CompressedImage, Image

    from showroom_ros.ros.conversions import MessageError, serialized_stamp_ns, stamp_to_ns

    rng = np.random.default_rng(5)
    for seed in range(300):
        msg = [Image, CompressedImage, CameraInfo][seed % 3]()
        msg.header.stamp.sec = int(rng.integers(-(2**31), 2**31))
        msg.header.stamp.nanosec = int(rng.integers(0, 10**9))
        msg.header.frame_id = "x" * int(rng.integers(0, 40))
        data = serialize_message(msg)
        assert serialized_stamp_ns(data) == stamp_to_ns(msg.header.stamp), seed
    for bad in (b"", b"\x00\x01\x00\x00", b"\x07" * 40):
        with pytest.raises(MessageError):
            serialized_stamp_ns(bad)
