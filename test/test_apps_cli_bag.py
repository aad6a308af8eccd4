"""rosbag2 input: a bag written here with rosbags (Image, depth, CameraInfo, /tf, /tf_static), the TF
buffer's chain lookup and interpolation (the same rule as the node's pose history), the node's decoder on
rosbags messages (compressedDepth png and rvl included), and `showroom reconstruct BAG` against the
sample's poses."""

from __future__ import annotations

import json
from pathlib import Path

import cv2
import numpy as np
import pytest
from rosbags.typesys import Stores, get_typestore
from scipy.spatial.transform import Rotation
from test_apps_cli_reconstruct import run_failing

from showroom_ros.apps.cli import main
from showroom_ros.apps.offline import BagOptions, load_bag
from showroom_ros.geometry.poses import orthonormalize
from showroom_ros.io.bags import BagMessage, write_bag
from showroom_ros.io.datasets import load_frame_folder
from showroom_ros.io.export import load_reconstruction
from showroom_ros.io.sensor_messages import (
    MessageError,
    compressed_depth_to_array,
    compressed_to_rgb,
    depth_image_to_array,
    encode_compressed_depth,
    image_to_rgb,
)

REPO = Path(__file__).resolve().parents[1]
SAMPLE = REPO / "data" / "redkitchen"
TS = get_typestore(Stores.ROS2_KILTED)
T0 = 1_700_000_000_000_000_000
OPTICAL = "camera_color_optical_frame"
# optical (x right, y down, z forward) -> camera_link (x forward, y left, z up)
OPTICAL_IN_LINK = np.array([[0, 0, 1, 0], [-1, 0, 0, 0], [0, -1, 0, 0], [0, 0, 0, 1]], dtype=np.float64)


def _rigid(rotvec: np.ndarray, translation: np.ndarray) -> np.ndarray:
    matrix = np.eye(4)
    matrix[:3, :3] = Rotation.from_rotvec(rotvec).as_matrix()
    matrix[:3, 3] = translation
    return matrix


MAP_TO_ODOM = _rigid(np.array([0.0, 0.0, 0.3]), np.array([0.5, -0.2, 0.0]))
BASE_TO_LINK = _rigid(np.array([0.0, 0.05, 0.0]), np.array([0.1, 0.0, 0.4]))


def _header(stamp_ns: int, frame_id: str):
    sec, nanosec = divmod(stamp_ns, 1_000_000_000)
    return TS.types["std_msgs/msg/Header"](
        stamp=TS.types["builtin_interfaces/msg/Time"](sec=sec, nanosec=nanosec), frame_id=frame_id
    )


def _transform(stamp_ns: int, parent: str, child: str, matrix: np.ndarray):
    types = TS.types
    x, y, z, w = Rotation.from_matrix(matrix[:3, :3]).as_quat()
    return types["geometry_msgs/msg/TransformStamped"](
        header=_header(stamp_ns, parent),
        child_frame_id=child,
        transform=types["geometry_msgs/msg/Transform"](
            translation=types["geometry_msgs/msg/Vector3"](x=matrix[0, 3], y=matrix[1, 3], z=matrix[2, 3]),
            rotation=types["geometry_msgs/msg/Quaternion"](x=x, y=y, z=z, w=w),
        ),
    )


def _tf(stamp_ns: int, transforms: list) -> bytes:
    return bytes(
        TS.serialize_cdr(TS.types["tf2_msgs/msg/TFMessage"](transforms=transforms), "tf2_msgs/msg/TFMessage")
    )


def _pose_stamped(stamp_ns: int, frame: str, pose: np.ndarray) -> bytes:
    types = TS.types
    x, y, z, w = Rotation.from_matrix(pose[:3, :3]).as_quat()
    message = types["geometry_msgs/msg/PoseStamped"](
        header=_header(stamp_ns, frame),
        pose=types["geometry_msgs/msg/Pose"](
            position=types["geometry_msgs/msg/Point"](x=pose[0, 3], y=pose[1, 3], z=pose[2, 3]),
            orientation=types["geometry_msgs/msg/Quaternion"](x=x, y=y, z=z, w=w),
        ),
    )
    return bytes(TS.serialize_cdr(message, "geometry_msgs/msg/PoseStamped"))


def _image(stamp_ns: int, frame: str, pixels: np.ndarray, encoding: str) -> bytes:
    height, width = pixels.shape[:2]
    data = np.frombuffer(np.ascontiguousarray(pixels).tobytes(), dtype=np.uint8)
    message = TS.types["sensor_msgs/msg/Image"](
        header=_header(stamp_ns, frame),
        height=height,
        width=width,
        encoding=encoding,
        is_bigendian=0,
        step=len(data) // height,
        data=data,
    )
    return bytes(TS.serialize_cdr(message, "sensor_msgs/msg/Image"))


def _camera_info(stamp_ns: int, frame: str, k: np.ndarray, width: int, height: int) -> bytes:
    types = TS.types
    p = np.zeros((3, 4))
    p[:3, :3] = k
    message = types["sensor_msgs/msg/CameraInfo"](
        header=_header(stamp_ns, frame),
        height=height,
        width=width,
        distortion_model="plumb_bob",
        d=np.zeros(5),
        k=k.reshape(-1),
        r=np.eye(3).reshape(-1),
        p=p.reshape(-1),
        binning_x=0,
        binning_y=0,
        roi=types["sensor_msgs/msg/RegionOfInterest"](
            x_offset=0, y_offset=0, height=0, width=0, do_rectify=False
        ),
    )
    return bytes(TS.serialize_cdr(message, "sensor_msgs/msg/CameraInfo"))


def _compressed_depth(stamp_ns: int, frame: str, depth: np.ndarray, compression: str) -> bytes:
    image_format, data = encode_compressed_depth(depth, compression)
    message = TS.types["sensor_msgs/msg/CompressedImage"](
        header=_header(stamp_ns, frame), format=image_format, data=np.frombuffer(data, np.uint8)
    )
    return bytes(TS.serialize_cdr(message, "sensor_msgs/msg/CompressedImage"))


def sample_bag_messages(
    pose_topic: bool = False, depth_transport: tuple[str, str] | None = None
) -> tuple[list[BagMessage], list[np.ndarray]]:
    """The 5 sample frames recorded as a robot would: plus a repeated and a blurred frame, and a TF
    tree map -> odom -> base_link -> camera_link -> optical whose moving edge is sampled 20 ms either
    side of each image, so the camera pose at the image stamp only comes out right if interpolated.
    ``pose_topic``: no TF; the optical frame's poses in 'odom' on /camera/pose (PoseStamped) instead.
    ``depth_transport`` ("16UC1" or "32FC1", "png" or "rvl"): depth as compressed_depth_image_transport
    publishes it, on /camera/depth/image_raw/compressedDepth (32FC1: the millimetres as metres)."""
    keyframes = load_frame_folder(SAMPLE)
    lines = [line.split() for line in (SAMPLE / "frames_c2w.txt").read_text().splitlines() if line[:1] != "#"]
    depths_mm = [cv2.imread(str(SAMPLE / fields[1]), cv2.IMREAD_UNCHANGED) for fields in lines]
    assert all(depth.dtype == np.uint16 for depth in depths_mm)
    # (image index, seconds after T0, blurred?)
    schedule = [
        (0, 0.0, False),
        (0, 0.25, False),
        (1, 0.5, True),
        (1, 0.75, False),
        (2, 1.0, False),
        (3, 1.25, False),
        (4, 1.5, False),
    ]
    messages: list[BagMessage] = []
    static = [
        _transform(T0, "map", "odom", MAP_TO_ODOM),
        _transform(T0, "base_link", "camera_link", BASE_TO_LINK),
        _transform(T0, "camera_link", OPTICAL, OPTICAL_IN_LINK),
    ]
    if not pose_topic:
        messages.append(BagMessage("/tf_static", "tf2_msgs/msg/TFMessage", T0, _tf(T0, static)))
    colour_k, depth_k = keyframes[0].intrinsics.matrix, keyframes[0].depth_intrinsics.matrix
    # Body-frame offsets +-(rotation, translation): slerp/lerp halfway between them is exactly no offset.
    wobble_rotation, wobble_translation = np.array([0.02, -0.03, 0.01]), np.array([0.01, 0.02, -0.015])
    for step, (index, seconds, blurred) in enumerate(schedule):
        stamp = T0 + round(seconds * 1e9)
        pose = orthonormalize(
            keyframes[index].pose
        )  # TF carries rigid transforms; the sample's are not quite
        base = np.linalg.inv(MAP_TO_ODOM) @ pose @ np.linalg.inv(BASE_TO_LINK @ OPTICAL_IN_LINK)
        before = base @ _rigid(-wobble_rotation, -wobble_translation)
        after = base @ _rigid(wobble_rotation, wobble_translation)
        for offset, matrix in ((-20_000_000, before), (20_000_000, after)):
            if not pose_topic:
                transform = _transform(stamp + offset, "odom", "base_link", matrix)
                messages.append(
                    BagMessage(
                        "/tf", "tf2_msgs/msg/TFMessage", stamp + offset, _tf(stamp + offset, [transform])
                    )
                )
        if pose_topic:
            messages.append(
                BagMessage(
                    "/camera/pose",
                    "geometry_msgs/msg/PoseStamped",
                    stamp,
                    _pose_stamped(stamp, "odom", np.linalg.inv(MAP_TO_ODOM) @ pose),
                )
            )
        rgb = keyframes[index].image
        if blurred:
            rgb = cv2.GaussianBlur(rgb, (0, 0), 4.0)
        messages.append(
            BagMessage(
                "/camera/color/camera_info",
                "sensor_msgs/msg/CameraInfo",
                stamp,
                _camera_info(stamp, OPTICAL, colour_k, 640, 480),
            )
        )
        messages.append(
            BagMessage(
                "/camera/color/image_raw",
                "sensor_msgs/msg/Image",
                stamp + 1_000_000,
                _image(stamp, OPTICAL, rgb, "rgb8"),
            )
        )
        depth_stamp = stamp + 5_000_000 * (
            step % 2
        )  # depth a few ms off the colour stamp, as real drivers do
        messages.append(
            BagMessage(
                "/camera/depth/camera_info",
                "sensor_msgs/msg/CameraInfo",
                depth_stamp,
                _camera_info(depth_stamp, OPTICAL, depth_k, 640, 480),
            )
        )
        if depth_transport is None:
            depth_message = BagMessage(
                "/camera/depth/image_raw",
                "sensor_msgs/msg/Image",
                depth_stamp + 2_000_000,
                _image(depth_stamp, OPTICAL, depths_mm[index].astype(np.uint16), "16UC1"),
            )
        else:
            encoding, compression = depth_transport
            depth = depths_mm[index] if encoding == "16UC1" else (depths_mm[index] / 1000.0).astype(np.float32)
            depth_message = BagMessage(
                "/camera/depth/image_raw/compressedDepth",
                "sensor_msgs/msg/CompressedImage",
                depth_stamp + 2_000_000,
                _compressed_depth(depth_stamp, OPTICAL, depth, compression),
            )
        messages.append(depth_message)
    messages.sort(key=lambda m: m.stamp_ns)
    return messages, [orthonormalize(k.pose) for k in keyframes]


@pytest.fixture(scope="module")
def sample_bag(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, list[np.ndarray]]:
    messages, poses = sample_bag_messages()
    path = write_bag(tmp_path_factory.mktemp("bags") / "kitchen", messages, storage="mcap")
    return path, poses


def test_bag_keyframes_follow_the_tf_chain(sample_bag: tuple[Path, list[np.ndarray]]) -> None:
    path, poses = sample_bag
    loaded = load_bag(path)
    assert loaded.kind == "rosbag2" and loaded.frames_considered == 7
    assert loaded.fixed_frame == "map"
    assert len(loaded.keyframes) == 5
    assert sum(loaded.rejections.values()) == 2  # the repeated view and the blurred one
    for keyframe, pose in zip(loaded.keyframes, poses, strict=True):
        np.testing.assert_allclose(keyframe.pose, pose, atol=1e-6)
        assert keyframe.depth is not None and keyframe.intrinsics.fx == 525.0
        assert keyframe.depth_intrinsics is not None and keyframe.depth_intrinsics.fx == 585.0
        assert keyframe.frame_id == OPTICAL
    # The odom frame as the fixed frame gives the same cameras seen from odom.
    in_odom = load_bag(path, BagOptions(fixed_frame="odom"))
    np.testing.assert_allclose(in_odom.keyframes[0].pose, np.linalg.inv(MAP_TO_ODOM) @ poses[0], atol=1e-6)


def test_reconstruct_bag_matches_the_folder(
    sample_bag: tuple[Path, list[np.ndarray]], tmp_path: Path
) -> None:
    path, poses = sample_bag
    assert main(["reconstruct", str(path), "--out", str(tmp_path / "bag"), "--no-mesh", "--quiet"]) == 0
    assert main(["reconstruct", str(SAMPLE), "--out", str(tmp_path / "folder"), "--no-mesh", "--quiet"]) == 0
    from_bag = load_reconstruction(tmp_path / "bag" / "kitchen.npz")
    from_folder = load_reconstruction(tmp_path / "folder" / "redkitchen.npz")
    summary = json.loads((tmp_path / "bag" / "summary.json").read_text())
    assert summary["kind"] == "rosbag2" and summary["backend"] == "rgbd" and summary["frame_id"] == "map"
    assert any("TF map -> camera_color_optical_frame" in note for note in summary["selection"])
    np.testing.assert_allclose(from_bag.camera_poses, np.stack(poses), atol=1e-6)
    assert abs(from_bag.num_points - from_folder.num_points) <= 0.01 * from_folder.num_points
    np.testing.assert_allclose(from_bag.points.min(axis=0), from_folder.points.min(axis=0), atol=0.02)
    np.testing.assert_allclose(from_bag.points.max(axis=0), from_folder.points.max(axis=0), atol=0.02)


def test_sqlite3_bag_and_pose_topic(tmp_path: Path) -> None:
    """The same recording in sqlite3 storage, with poses from a PoseStamped topic in 'odom' instead of TF."""
    messages, poses = sample_bag_messages(pose_topic=True)
    path = write_bag(tmp_path / "kitchen_sqlite", messages, storage="sqlite3")
    loaded = load_bag(path, BagOptions(pose_topic="/camera/pose"))
    assert loaded.fixed_frame == "odom" and len(loaded.keyframes) == 5
    np.testing.assert_allclose(loaded.keyframes[2].pose, np.linalg.inv(MAP_TO_ODOM) @ poses[2], atol=1e-6)
    out = tmp_path / "out"
    assert (
        main(["reconstruct", str(path), "--pose-topic", "/camera/pose", "--out", str(out), "--no-mesh", "-q"])
        == 0
    )
    assert json.loads((out / "summary.json").read_text())["frame_id"] == "odom"


def test_bad_bags_give_one_line_errors(
    sample_bag: tuple[Path, list[np.ndarray]], tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    path, _ = sample_bag
    out = str(tmp_path / "out")
    message = run_failing(["reconstruct", str(path), "--image-topic", "/front/image", "--out", out], capsys)
    assert "no topic /front/image" in message and "/camera/color/image_raw" in message
    message = run_failing(["reconstruct", str(path), "--depth-topic", "/tf", "--out", out], capsys)
    assert "tf2_msgs/msg/TFMessage" in message
    message = run_failing(["reconstruct", str(path), "--fixed-frame", "world", "--out", out], capsys)
    assert "0 of 7 images" in message and "world" in message
    # A bag with only TF: no image topic to use.
    only_tf = write_bag(
        tmp_path / "only_tf", [m for m in sample_bag_messages()[0] if m.topic.startswith("/tf")]
    )
    assert "no colour image topic" in run_failing(["reconstruct", str(only_tf), "--out", out], capsys)
    broken = tmp_path / "broken.mcap"
    broken.write_bytes(b"\x89MCAP0\r\n" + b"garbage" * 10)
    assert "cannot open" in run_failing(["reconstruct", str(broken), "--out", out], capsys)
    assert "--all" in run_failing(["reconstruct", str(path), "--all", "--out", out], capsys)


@pytest.mark.parametrize("transport", [("16UC1", "rvl"), ("32FC1", "rvl"), ("32FC1", "png")])
def test_compressed_depth_bags_give_the_raw_bags_depth(
    sample_bag: tuple[Path, list[np.ndarray]], tmp_path: Path, transport: tuple[str, str]
) -> None:
    """Depth recorded through compressed_depth_image_transport (RVL, or 32FC1 as quantised inverse depth)
    gives the keyframes the raw recording gives: exactly for 16UC1, within a quantisation step for 32FC1."""
    raw = load_bag(sample_bag[0])
    messages, _ = sample_bag_messages(depth_transport=transport)
    compressed = load_bag(write_bag(tmp_path / "compressed", messages, storage="mcap"))
    assert any("/camera/depth/image_raw/compressedDepth" in note for note in compressed.notes)
    assert len(compressed.keyframes) == len(raw.keyframes) == 5
    for ours, theirs in zip(compressed.keyframes, raw.keyframes, strict=True):
        assert ours.depth is not None and theirs.depth is not None
        assert np.array_equal(np.isnan(ours.depth), np.isnan(theirs.depth))
        if transport[0] == "16UC1":
            np.testing.assert_array_equal(ours.depth, theirs.depth)
        else:  # |1/d - 1/d'| <= 1/A, A = 100 x 101 (the publisher's default quantisation)
            valid = ~np.isnan(theirs.depth)
            assert np.all(np.abs(1 / ours.depth[valid] - 1 / theirs.depth[valid]) <= 1.01 / 10_100)


def test_rosbags_messages_decode_with_the_node_rules() -> None:
    """Colour and depth messages as drivers publish them, read by rosbags and decoded by the node's decoder."""
    rgb = np.random.default_rng(3).integers(0, 256, (6, 10, 3), dtype=np.uint8)
    image_type, compressed_type = (
        TS.types["sensor_msgs/msg/Image"],
        TS.types["sensor_msgs/msg/CompressedImage"],
    )

    def image(pixels: np.ndarray, encoding: str, step: int | None = None, bigendian: int = 0):
        height = pixels.shape[0]
        rows = np.ascontiguousarray(pixels).reshape(height, -1).view(np.uint8).reshape(height, -1)
        step = step or rows.shape[1]
        padded = np.zeros((height, step), np.uint8)
        padded[:, : rows.shape[1]] = rows
        return image_type(
            header=_header(0, "cam"),
            height=height,
            width=pixels.shape[1],
            encoding=encoding,
            is_bigendian=bigendian,
            step=step,
            data=padded.reshape(-1),
        )

    def compressed(image_format: str, data: bytes):
        return compressed_type(header=_header(0, "cam"), format=image_format, data=np.frombuffer(data, np.uint8))

    assert np.array_equal(image_to_rgb(image(rgb, "rgb8")), rgb)
    assert np.array_equal(image_to_rgb(image(rgb, "rgb8", step=40)), rgb)
    assert np.array_equal(image_to_rgb(image(rgb[..., ::-1], "bgr8")), rgb)
    assert np.array_equal(image_to_rgb(image(rgb[..., 0], "mono8")), np.repeat(rgb[..., :1], 3, axis=2))
    ok, png = cv2.imencode(".png", rgb[..., ::-1])
    assert ok and np.array_equal(compressed_to_rgb(compressed("rgb8; png compressed bgr8", png.tobytes())), rgb)
    truncated = image(rgb, "rgb8")
    truncated.data = truncated.data[:-5]
    with pytest.raises(MessageError, match="truncated"):
        image_to_rgb(truncated)
    with pytest.raises(MessageError, match="unsupported image encoding"):
        image_to_rgb(image(rgb.astype(np.uint16), "rgb16"))

    millimetres = np.array([[0, 1000, 2500], [65535, 42, 1]], np.uint16)
    assert np.array_equal(depth_image_to_array(image(millimetres, "16UC1")), millimetres)
    big = image(millimetres.astype(">u2"), "16UC1", bigendian=1)
    assert np.array_equal(depth_image_to_array(big), millimetres)
    floats = np.array([[0.5, np.nan, 2.0]], np.float32)
    np.testing.assert_array_equal(depth_image_to_array(image(floats, "32FC1")), floats)
    for compression in ("png", "rvl"):
        packed = compressed(*encode_compressed_depth(millimetres, compression))
        np.testing.assert_array_equal(compressed_depth_to_array(packed), millimetres)
        metres = compressed_depth_to_array(compressed(*encode_compressed_depth(floats, compression)))
        np.testing.assert_allclose(metres, floats, rtol=1e-4)  # 32FC1: refused by the bag reader before
    with pytest.raises(MessageError, match="expected a depth image"):
        depth_image_to_array(image(rgb, "rgb8"))
