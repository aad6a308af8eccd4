"""A reconstruction as the node publishes it, written to a rosbag2 without ROS installed.

``showroom export-bag`` is for pip users with no rclpy: the PointCloud2, MarkerArray and PoseArray
the node publishes on ``~/cloud``, ``~/mesh`` and ``~/keyframes`` are built here as ``rosbags``
typestore messages (ROS 2 Kilted definitions) and serialised to CDR, field for field what
:mod:`showroom_ros.ros.conversions` builds with rclpy (a test deserialises these bytes with rclpy
and compares), so ``ros2 bag play`` and Foxglove show the same thing the node would.
"""

from __future__ import annotations

import time
from functools import cache
from pathlib import Path
from typing import Any

import numpy as np
from rosbags.typesys import Stores, get_typestore
from rosbags.typesys.store import Typestore
from scipy.spatial.transform import Rotation

from showroom_ros.geometry.poses import orthonormalize
from showroom_ros.io.bags import BagMessage, write_bag
from showroom_ros.io.message_layout import (
    CLOUD_DTYPE,
    DISPLAY_MAX_TRIANGLES,
    MESH_NAMESPACE,
    TRIANGLES_PER_MARKER,
    cloud_records,
    mesh_marker_chunks,
)
from showroom_ros.reconstruction.result import Reconstruction, TriangleMesh
from showroom_ros.reconstruction.surface import decimate_mesh

DEFAULT_TOPIC_PREFIX = "/showroom"  # the node's name: its topics are /showroom/cloud, ...
DEFAULT_MAX_TRIANGLES = DISPLAY_MAX_TRIANGLES  # the node's mesh_max_triangles default

CLOUD_TYPE = "sensor_msgs/msg/PointCloud2"
MARKERS_TYPE = "visualization_msgs/msg/MarkerArray"
POSES_TYPE = "geometry_msgs/msg/PoseArray"

_FLOAT32 = 7  # sensor_msgs/PointField.FLOAT32
_TRIANGLE_LIST, _ADD, _DELETEALL = 11, 0, 3  # visualization_msgs/Marker constants


@cache
def typestore() -> Typestore:
    """ROS 2 Kilted message definitions (identical CDR layout in Humble and Jazzy for these types)."""
    return get_typestore(Stores.ROS2_KILTED)


def _t(name: str) -> Any:
    return typestore().types[name]


def _header(frame_id: str, stamp_ns: int) -> Any:
    seconds, nanoseconds = divmod(int(stamp_ns), 1_000_000_000)
    stamp = _t("builtin_interfaces/msg/Time")(sec=seconds, nanosec=nanoseconds)
    return _t("std_msgs/msg/Header")(stamp=stamp, frame_id=frame_id)


def _point(x: float, y: float, z: float) -> Any:
    return _t("geometry_msgs/msg/Point")(x=x, y=y, z=z)


def _quaternion(x: float, y: float, z: float, w: float) -> Any:
    return _t("geometry_msgs/msg/Quaternion")(x=x, y=y, z=z, w=w)


def _empty_bytes() -> np.ndarray:
    return np.zeros(0, dtype=np.uint8)


def cloud_message(points: np.ndarray, colors: np.ndarray, frame_id: str, stamp_ns: int) -> Any:
    """sensor_msgs/PointCloud2: x, y, z and packed rgb floats, unorganised and dense (as RViz/PCL read)."""
    cloud = cloud_records(points, colors)
    field = _t("sensor_msgs/msg/PointField")
    fields = [field(name=name, offset=4 * i, datatype=_FLOAT32, count=1) for i, name in enumerate("xyz")]
    fields.append(field(name="rgb", offset=12, datatype=_FLOAT32, count=1))
    return _t(CLOUD_TYPE)(
        header=_header(frame_id, stamp_ns),
        height=1,
        width=len(cloud),
        fields=fields,
        is_bigendian=False,
        point_step=CLOUD_DTYPE.itemsize,
        row_step=CLOUD_DTYPE.itemsize * len(cloud),
        data=np.frombuffer(cloud.tobytes(), dtype=np.uint8),
        is_dense=True,
    )


def pose_message(matrix: np.ndarray) -> Any:
    """geometry_msgs/Pose of a 4x4 pose, orthonormalised first (tracked poses are slightly non-rigid)."""
    rigid = orthonormalize(np.asarray(matrix, dtype=np.float64))
    x, y, z, w = Rotation.from_matrix(rigid[:3, :3]).as_quat()
    px, py, pz = (float(v) for v in np.asarray(matrix, dtype=np.float64)[:3, 3])
    return _t("geometry_msgs/msg/Pose")(position=_point(px, py, pz), orientation=_quaternion(x, y, z, w))


def pose_array_message(poses: np.ndarray, frame_id: str, stamp_ns: int) -> Any:
    """geometry_msgs/PoseArray of the keyframe camera poses (optical frames)."""
    poses = np.asarray(poses, dtype=np.float64).reshape(-1, 4, 4)
    return _t(POSES_TYPE)(header=_header(frame_id, stamp_ns), poses=[pose_message(p) for p in poses])


def _marker(header: Any, namespace: str, marker_id: int, marker_type: int, action: int) -> Any:
    """A Marker with every field at its ROS default (rosbags types have no defaults)."""
    vector = _t("geometry_msgs/msg/Vector3")
    return _t("visualization_msgs/msg/Marker")(
        header=header,
        ns=namespace,
        id=marker_id,
        type=marker_type,
        action=action,
        pose=_t("geometry_msgs/msg/Pose")(
            position=_point(0.0, 0.0, 0.0), orientation=_quaternion(0.0, 0.0, 0.0, 1.0)
        ),
        scale=vector(x=0.0, y=0.0, z=0.0),
        color=_t("std_msgs/msg/ColorRGBA")(r=0.0, g=0.0, b=0.0, a=0.0),
        lifetime=_t("builtin_interfaces/msg/Duration")(sec=0, nanosec=0),
        frame_locked=False,
        points=[],
        colors=[],
        texture_resource="",
        texture=_t("sensor_msgs/msg/CompressedImage")(header=_header("", 0), format="", data=_empty_bytes()),
        uv_coordinates=[],
        text="",
        mesh_resource="",
        mesh_file=_t("visualization_msgs/msg/MeshFile")(filename="", data=_empty_bytes()),
        mesh_use_embedded_materials=False,
    )


def mesh_markers_message(
    mesh: TriangleMesh | None,
    frame_id: str,
    stamp_ns: int,
    namespace: str = MESH_NAMESPACE,
    max_triangles_per_marker: int = TRIANGLES_PER_MARKER,
) -> Any:
    """visualization_msgs/MarkerArray: a DELETEALL, then TRIANGLE_LIST markers with per-vertex colours.

    The DELETEALL comes first so a smaller new mesh never leaves stale pieces in RViz; a mesh is
    split into markers of at most ``max_triangles_per_marker`` triangles. ``None`` gives only the
    DELETEALL (what the node publishes on reset).
    """
    header = _header(frame_id, stamp_ns)
    markers = [_marker(header, namespace, 0, 0, _DELETEALL)]
    if mesh is None:
        return _t(MARKERS_TYPE)(markers=markers)
    colour = _t("std_msgs/msg/ColorRGBA")
    vector = _t("geometry_msgs/msg/Vector3")
    for marker_id, (corners, rgba) in enumerate(mesh_marker_chunks(mesh, max_triangles_per_marker), start=1):
        marker = _marker(header, namespace, marker_id, _TRIANGLE_LIST, _ADD)
        marker.scale = vector(x=1.0, y=1.0, z=1.0)
        marker.color = colour(r=0.0, g=0.0, b=0.0, a=1.0)
        marker.points = [_point(x, y, z) for x, y, z in corners.tolist()]
        marker.colors = [colour(r=r, g=g, b=b, a=a) for r, g, b, a in rgba.tolist()]
        markers.append(marker)
    return _t(MARKERS_TYPE)(markers=markers)


def serialize(message: Any) -> bytes:
    """CDR bytes, as ``rclpy.serialization.serialize_message`` produces for the same message."""
    return bytes(typestore().serialize_cdr(message, message.__msgtype__))


def reconstruction_messages(
    reconstruction: Reconstruction,
    stamp_ns: int | None = None,
    frame_id: str | None = None,
    topic_prefix: str = DEFAULT_TOPIC_PREFIX,
    max_triangles: int = DEFAULT_MAX_TRIANGLES,
) -> list[BagMessage]:
    """The node's three result messages (cloud, mesh, keyframes) as bag records at ``stamp_ns``."""
    stamp = time.time_ns() if stamp_ns is None else int(stamp_ns)
    frame = reconstruction.frame_id if frame_id is None else frame_id
    if not frame:
        raise ValueError("the reconstruction has no frame_id: pass one (e.g. --frame-id map)")
    prefix = "/" + topic_prefix.strip("/") if topic_prefix.strip("/") else ""
    # As the node publishes it: decimated for RViz (the saved mesh is not).
    mesh = decimate_mesh(reconstruction.mesh, max_triangles) if reconstruction.mesh is not None else None
    cloud = cloud_message(reconstruction.points, reconstruction.colors, frame, stamp)
    markers = mesh_markers_message(mesh, frame, stamp)
    poses = pose_array_message(reconstruction.camera_poses, frame, stamp)
    return [
        BagMessage(f"{prefix}/cloud", CLOUD_TYPE, stamp, serialize(cloud)),
        BagMessage(f"{prefix}/mesh", MARKERS_TYPE, stamp, serialize(markers)),
        BagMessage(f"{prefix}/keyframes", POSES_TYPE, stamp, serialize(poses)),
    ]


def export_reconstruction_bag(
    reconstruction: Reconstruction,
    path: str | Path,
    stamp_ns: int | None = None,
    frame_id: str | None = None,
    storage: str = "mcap",
    topic_prefix: str = DEFAULT_TOPIC_PREFIX,
    max_triangles: int = DEFAULT_MAX_TRIANGLES,
) -> Path:
    """Write the reconstruction's messages to a new rosbag2 directory (refuses to overwrite one)."""
    messages = reconstruction_messages(reconstruction, stamp_ns, frame_id, topic_prefix, max_triangles)
    return write_bag(Path(path).expanduser(), messages, storage=storage)
