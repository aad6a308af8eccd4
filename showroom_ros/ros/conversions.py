"""Conversions between ROS 2 messages and the core's numpy types.

Camera input is decoded by :mod:`showroom_ros.io.sensor_messages`, the one decoder the bag reader uses
as well (its names are re-exported here for the node); this module builds the messages the package
publishes and reads poses.
"""

from __future__ import annotations

import array
import struct

import cv2
import numpy as np
from builtin_interfaces.msg import Time
from geometry_msgs.msg import Point, Pose, PoseArray, PoseStamped, Quaternion, TransformStamped
from nav_msgs.msg import OccupancyGrid as OccupancyGridMsg
from nav_msgs.msg import Path as PathMsg
from scipy.spatial.transform import Rotation
from sensor_msgs.msg import CameraInfo, CompressedImage, Image, PointCloud2, PointField
from std_msgs.msg import ColorRGBA, Header
from visualization_msgs.msg import Marker, MarkerArray

from showroom_ros.geometry.camera import CameraIntrinsics
from showroom_ros.io.message_layout import (
    CLOUD_DTYPE,
    MAP_MESH_NAMESPACE,
    MESH_NAMESPACE,
    TRIANGLES_PER_MARKER,
    chunk_markers_cdr,
    cloud_cdr,
    cloud_records,
    mesh_marker_chunks,
    mesh_markers_cdr,
)
from showroom_ros.io.sensor_messages import MessageError as MessageError
from showroom_ros.io.sensor_messages import camera_info_to_intrinsics as camera_info_to_intrinsics
from showroom_ros.io.sensor_messages import compressed_depth_to_array as compressed_depth_to_array
from showroom_ros.io.sensor_messages import compressed_to_rgb as compressed_to_rgb
from showroom_ros.io.sensor_messages import depth_image_to_array as depth_image_to_array
from showroom_ros.io.sensor_messages import encode_compressed_depth
from showroom_ros.io.sensor_messages import image_to_rgb as image_to_rgb
from showroom_ros.io.sensor_messages import stamp_to_ns as stamp_to_ns
from showroom_ros.mapping.mesh_chunks import ChunkUpdate
from showroom_ros.mapping.occupancy import OccupancyGrid
from showroom_ros.reconstruction.result import TriangleMesh

MAX_POSITION_M = 1e7
"""Largest |coordinate| accepted in a pose: beyond it float32 clouds lose all precision."""


def serialized_stamp_ns(data: bytes) -> int:
    """``header.stamp`` of a serialized message that starts with a std_msgs/Header (Image,
    CompressedImage, CameraInfo...), read from the CDR bytes without deserializing the rest."""
    if len(data) < 12 or data[0] != 0 or data[1] not in (0, 1):
        raise MessageError(f"not a CDR message with a header ({len(data)} bytes)")
    sec, nanosec = struct.unpack("<iI" if data[1] == 1 else ">iI", data[4:12])
    return stamp_to_ns(Time(sec=sec, nanosec=nanosec))


def serialized_marker_array_stamp_ns(data: bytes) -> int | None:
    """The first marker's ``header.stamp`` from MarkerArray CDR bytes (the node stamps every marker alike),
    without deserializing a mesh of a million points in Python; None for an empty array."""
    if len(data) < 8 or data[0] != 0 or data[1] not in (0, 1):
        raise MessageError(f"not a CDR message ({len(data)} bytes)")
    order = "<" if data[1] == 1 else ">"
    (count,) = struct.unpack_from(order + "I", data, 4)
    if count == 0:
        return None
    if len(data) < 16:
        raise MessageError(f"MarkerArray of {count} markers in {len(data)} bytes")
    sec, nanosec = struct.unpack_from(order + "iI", data, 8)
    return sec * 1_000_000_000 + nanosec


def ns_to_stamp(ns: int) -> Time:
    return Time(sec=int(ns // 1_000_000_000), nanosec=int(ns % 1_000_000_000))


def rgb_to_compressed(rgb: np.ndarray, header: Header, image_format: str = "jpeg") -> CompressedImage:
    """Encode like image_transport's ``compressed`` plugin (format string included)."""
    extension = {"jpeg": ".jpg", "png": ".png"}[image_format]
    ok, encoded = cv2.imencode(extension, cv2.cvtColor(rgb, cv2.COLOR_RGB2BGR))
    if not ok:
        raise ValueError(f"OpenCV could not encode the image as {image_format}")
    return CompressedImage(header=header, format=f"rgb8; {image_format} compressed bgr8", data=_as_byte_array(encoded))


def depth_to_compressed_depth(depth: np.ndarray, header: Header, compression: str = "png") -> CompressedImage:
    """(H, W) uint16 or float32-metre depth as image_transport's ``compressedDepth`` plugin sends it."""
    image_format, data = encode_compressed_depth(depth, compression)
    return CompressedImage(header=header, format=image_format, data=_as_byte_array(np.frombuffer(data, np.uint8)))


def intrinsics_to_camera_info(intrinsics: CameraIntrinsics, header: Header) -> CameraInfo:
    k = intrinsics.matrix
    p = np.zeros((3, 4))
    p[:3, :3] = k
    return CameraInfo(
        header=header,
        width=intrinsics.width,
        height=intrinsics.height,
        distortion_model="plumb_bob",
        d=[0.0] * 5,
        k=k.ravel().tolist(),
        r=np.eye(3).ravel().tolist(),
        p=p.ravel().tolist(),
    )


def rgb_to_image(rgb: np.ndarray, header: Header) -> Image:
    if rgb.ndim != 3 or rgb.shape[2] != 3 or rgb.dtype != np.uint8:
        raise ValueError(f"expected (H, W, 3) uint8 RGB, got {rgb.shape} {rgb.dtype}")
    return Image(
        header=header,
        height=rgb.shape[0],
        width=rgb.shape[1],
        encoding="rgb8",
        is_bigendian=0,
        step=rgb.shape[1] * 3,
        data=_as_byte_array(rgb),
    )


def mono_to_image(mono: np.ndarray, header: Header) -> Image:
    """(H, W) uint8 → mono8, uint16 → 16UC1, float32 → 32FC1."""
    encodings = {np.dtype(np.uint8): "mono8", np.dtype(np.uint16): "16UC1", np.dtype(np.float32): "32FC1"}
    if mono.ndim != 2 or mono.dtype not in encodings:
        raise ValueError(f"expected (H, W) uint8, uint16 or float32, got {mono.shape} {mono.dtype}")
    return Image(
        header=header,
        height=mono.shape[0],
        width=mono.shape[1],
        encoding=encodings[mono.dtype],
        is_bigendian=0,
        step=mono.shape[1] * mono.dtype.itemsize,
        data=_as_byte_array(mono.astype(mono.dtype.newbyteorder("<"), copy=False)),
    )


def _as_byte_array(values: np.ndarray) -> array.array:
    # rclpy takes array.array('B') without a per-element check: ~5x faster than bytes.
    out = array.array("B")
    out.frombytes(np.ascontiguousarray(values).view(np.uint8).reshape(-1))  # one copy, straight from the buffer
    return out


def pose_to_matrix(pose: Pose) -> np.ndarray:
    """geometry_msgs/Pose → 4x4 float64 (a zero quaternion is an error, not the identity)."""
    q = np.array([pose.orientation.x, pose.orientation.y, pose.orientation.z, pose.orientation.w])
    position = np.array([pose.position.x, pose.position.y, pose.position.z], dtype=np.float64)
    if not np.all(np.isfinite(q)):
        raise MessageError("pose has an invalid (zero or non-finite) orientation quaternion")
    scale = float(np.max(np.abs(q)))
    # Normalise by the largest component first: a huge but finite quaternion must not overflow the norm.
    norm = float(np.linalg.norm(q / scale)) * scale if scale > 0 else 0.0
    if not np.isfinite(norm) or norm < 1e-6:
        raise MessageError("pose has an invalid (zero or non-finite) orientation quaternion")
    if not np.all(np.isfinite(position)):
        raise MessageError("pose has a non-finite position")
    if np.any(np.abs(position) > MAX_POSITION_M):
        raise MessageError(f"pose position {position.tolist()} is implausibly far (> {MAX_POSITION_M:g} m)")
    matrix = np.eye(4)
    matrix[:3, :3] = Rotation.from_quat((q / scale) / (norm / scale)).as_matrix()
    matrix[:3, 3] = position
    if not np.all(np.isfinite(matrix)):
        raise MessageError("pose is not finite")
    return matrix


def transform_to_matrix(transform: TransformStamped) -> np.ndarray:
    t, r = transform.transform.translation, transform.transform.rotation
    pose = Pose(position=Point(x=t.x, y=t.y, z=t.z), orientation=r)
    return pose_to_matrix(pose)


def matrix_to_pose(matrix: np.ndarray) -> Pose:
    matrix = np.asarray(matrix, dtype=np.float64)
    # Orthonormalise first: KinectFusion-style poses are slightly non-rigid.
    u, _, vt = np.linalg.svd(matrix[:3, :3])
    rotation = u @ vt
    if np.linalg.det(rotation) < 0:
        rotation = u @ np.diag([1.0, 1.0, -1.0]) @ vt
    x, y, z, w = Rotation.from_matrix(rotation).as_quat()
    px, py, pz = (float(v) for v in matrix[:3, 3])
    return Pose(position=Point(x=px, y=py, z=pz), orientation=Quaternion(x=x, y=y, z=z, w=w))


def pose_to_transform(matrix: np.ndarray, header: Header, child_frame_id: str) -> TransformStamped:
    """A 4x4 pose of ``child_frame_id`` in ``header.frame_id`` as a TransformStamped."""
    pose = matrix_to_pose(matrix)
    transform = TransformStamped(header=header, child_frame_id=child_frame_id)
    t = transform.transform.translation
    t.x, t.y, t.z = pose.position.x, pose.position.y, pose.position.z
    transform.transform.rotation = pose.orientation
    return transform


def pose_to_tf_message(pose: PoseStamped, child_frame_id: str):
    """A tf2_msgs/TFMessage holding one transform (tf2_msgs is imported here: real ROS 2 only)."""
    from tf2_msgs.msg import TFMessage

    return TFMessage(transforms=[pose_to_transform(pose_to_matrix(pose.pose), pose.header, child_frame_id)])


def poses_to_pose_array(poses: np.ndarray, header: Header) -> PoseArray:
    return PoseArray(header=header, poses=[matrix_to_pose(p) for p in poses])


def matrix_to_pose_stamped(matrix: np.ndarray, header: Header) -> PoseStamped:
    return PoseStamped(header=header, pose=matrix_to_pose(matrix))


_CLOUD_FIELDS = [
    PointField(name="x", offset=0, datatype=PointField.FLOAT32, count=1),
    PointField(name="y", offset=4, datatype=PointField.FLOAT32, count=1),
    PointField(name="z", offset=8, datatype=PointField.FLOAT32, count=1),
    PointField(name="rgb", offset=12, datatype=PointField.FLOAT32, count=1),
]


def points_to_cloud(points: np.ndarray, colors: np.ndarray, header: Header) -> PointCloud2:
    """XYZ + packed RGB (the layout RViz and PCL read), unorganised, dense."""
    data = array.array("B", b"\0") * (len(points) * CLOUD_DTYPE.itemsize)
    cloud = cloud_records(points, colors, out=np.frombuffer(data, dtype=CLOUD_DTYPE))  # filled in place
    return PointCloud2(
        header=header,
        height=1,
        width=len(cloud),
        fields=_CLOUD_FIELDS,
        is_bigendian=False,
        point_step=CLOUD_DTYPE.itemsize,
        row_step=CLOUD_DTYPE.itemsize * len(cloud),
        data=data,
        is_dense=True,
    )


def cloud_to_points(msg: PointCloud2) -> tuple[np.ndarray, np.ndarray]:
    """Read back x, y, z and packed rgb (for tests and tools)."""
    offsets = {f.name: f.offset for f in msg.fields}
    if not {"x", "y", "z", "rgb"} <= offsets.keys():
        raise MessageError(f"PointCloud2 lacks x/y/z/rgb fields: {sorted(offsets)}")
    count = msg.width * msg.height
    dtype = np.dtype(
        {
            "names": ["x", "y", "z", "rgb"],
            "formats": ["<f4"] * 4,
            "offsets": [offsets[k] for k in ("x", "y", "z", "rgb")],
            "itemsize": msg.point_step,
        }
    )
    cloud = np.frombuffer(bytes(msg.data), dtype=dtype, count=count)
    points = np.stack([cloud["x"], cloud["y"], cloud["z"]], axis=1)
    packed = cloud["rgb"].view(np.uint32)
    colors = np.stack([(packed >> 16) & 255, (packed >> 8) & 255, packed & 255], axis=1).astype(np.uint8)
    return points, colors


def mesh_to_markers(
    mesh: TriangleMesh,
    header: Header,
    namespace: str = MESH_NAMESPACE,
    max_triangles_per_marker: int = TRIANGLES_PER_MARKER,
) -> MarkerArray:
    """TRIANGLE_LIST markers with per-vertex colours, split so no single marker is huge.

    The first marker is a DELETEALL so a smaller new mesh never leaves stale pieces in RViz.
    """
    markers = list(mesh_to_markers_clear(header, namespace).markers)
    for index, (corners, rgba) in enumerate(mesh_marker_chunks(mesh, max_triangles_per_marker), start=1):
        marker = Marker(header=header, ns=namespace, id=index, type=Marker.TRIANGLE_LIST, action=Marker.ADD)
        marker.pose.orientation.w = 1.0
        marker.scale.x = marker.scale.y = marker.scale.z = 1.0
        marker.color.a = 1.0
        marker.points = [Point(x=x, y=y, z=z) for x, y, z in corners.tolist()]
        marker.colors = [ColorRGBA(r=r, g=g, b=b, a=a) for r, g, b, a in rgba.tolist()]
        markers.append(marker)
    return MarkerArray(markers=markers)


def mesh_to_markers_serialized(
    mesh: TriangleMesh | None,
    header: Header,
    namespace: str = MESH_NAMESPACE,
    max_triangles_per_marker: int = TRIANGLES_PER_MARKER,
) -> bytes:
    """:func:`mesh_to_markers` (or, for ``mesh`` None, :func:`mesh_to_markers_clear`) as serialized CDR.

    Byte-identical to ``serialize_message`` of the message objects, built from numpy without one Python
    object per vertex; ``Publisher.publish`` sends bytes as they are.
    """
    return mesh_markers_cdr(
        mesh, header.stamp.sec, header.stamp.nanosec, header.frame_id, namespace, max_triangles_per_marker
    )


def points_to_cloud_serialized(points: np.ndarray, colors: np.ndarray, header: Header) -> bytes:
    """:func:`points_to_cloud` as serialized CDR bytes, ready for ``Publisher.publish``."""
    return cloud_cdr(points, colors, header.stamp.sec, header.stamp.nanosec, header.frame_id)


def mesh_to_markers_clear(header: Header, namespace: str = MESH_NAMESPACE) -> MarkerArray:
    """A MarkerArray that removes every mesh marker (published on reset)."""
    return MarkerArray(markers=[Marker(header=header, ns=namespace, id=0, action=Marker.DELETEALL)])


def chunk_update_to_markers(update: ChunkUpdate, header: Header, namespace: str = MAP_MESH_NAMESPACE) -> MarkerArray:
    """The map mesh's changed chunks as TRIANGLE_LIST markers (id = chunk id) and DELETEs for removed ones.

    Message classes, one Python object per corner: the reference for :func:`chunk_update_to_markers_serialized`.
    """
    markers = []
    for chunk in update.changed:
        marker = Marker(header=header, ns=namespace, id=chunk.chunk_id, type=Marker.TRIANGLE_LIST, action=Marker.ADD)
        marker.pose.orientation.w = 1.0
        marker.scale.x = marker.scale.y = marker.scale.z = 1.0
        marker.color.a = 1.0
        corners = np.asarray(chunk.triangles, np.int64).reshape(-1)
        marker.points = [Point(x=x, y=y, z=z) for x, y, z in np.asarray(chunk.vertices, np.float64)[corners].tolist()]
        rgb = np.asarray(chunk.colors, np.float32)[corners] / 255.0
        marker.colors = [ColorRGBA(r=r, g=g, b=b, a=1.0) for r, g, b in rgb.tolist()]
        markers.append(marker)
    for chunk_id in update.removed:
        removed = Marker(header=header, ns=namespace, id=int(chunk_id), type=Marker.TRIANGLE_LIST)
        removed.action = Marker.DELETE
        markers.append(removed)
    return MarkerArray(markers=markers)


def chunk_update_to_markers_serialized(
    update: ChunkUpdate, header: Header, namespace: str = MAP_MESH_NAMESPACE
) -> bytes:
    """:func:`chunk_update_to_markers` as serialized CDR, built from numpy (no per-corner objects)."""
    changed = [(c.chunk_id, c.vertices, c.colors, c.triangles) for c in update.changed]
    return chunk_markers_cdr(
        changed, update.removed, header.stamp.sec, header.stamp.nanosec, header.frame_id, namespace
    )


def occupancy_to_msg(grid: OccupancyGrid, header: Header) -> OccupancyGridMsg:
    """nav_msgs/OccupancyGrid in the z = 0 plane of ``header.frame_id``: row-major from cell (0, 0) at
    ``origin_xy``, rows along +y (what Nav2 and RViz's Map display expect)."""
    data = np.asarray(grid.data)
    if data.ndim != 2 or data.dtype != np.int8 or not np.isin(data, (-1, 0, 100)).all():
        raise ValueError("occupancy grid must be a 2-D int8 array of -1, 0 and 100")
    msg = OccupancyGridMsg(header=header)
    msg.info.map_load_time = header.stamp
    msg.info.resolution = float(grid.resolution)
    msg.info.width, msg.info.height = grid.width, grid.height
    msg.info.origin.position.x, msg.info.origin.position.y = float(grid.origin_xy[0]), float(grid.origin_xy[1])
    msg.info.origin.orientation.w = 1.0
    msg.data = array.array("b", np.ascontiguousarray(data).tobytes())
    return msg


def trajectory_to_path(frame_id: str, trajectory: list[tuple[int, np.ndarray]], stamp_ns: int) -> PathMsg:
    """nav_msgs/Path of (stamp, camera-to-frame pose) pairs, each pose stamped with its own frame."""
    path = PathMsg()
    path.header.frame_id = frame_id
    path.header.stamp = ns_to_stamp(stamp_ns)
    for stamp, pose in trajectory:
        path.poses.append(matrix_to_pose_stamped(pose, Header(stamp=ns_to_stamp(stamp), frame_id=frame_id)))
    return path
