"""The array layouts of the messages the package publishes, without any ROS import.

The node builds its messages with rclpy and the bag export with the rosbags typestore; both take
their bytes and arrays from here, so a cloud or mesh in a bag is exactly what the node publishes.
"""

from __future__ import annotations

import struct
from collections.abc import Iterator, Sequence
from typing import NamedTuple

import numpy as np

from showroom_ros.reconstruction.result import TriangleMesh

CLOUD_DTYPE = np.dtype([("x", "<f4"), ("y", "<f4"), ("z", "<f4"), ("rgb", "<f4")])
"""PointCloud2 point: x, y, z and 0x00RRGGBB packed into a float32, as RViz's RGB8 and PCL read it."""

MESH_NAMESPACE = "showroom_mesh"
MAP_MESH_NAMESPACE = "showroom_map_mesh"
TRIANGLES_PER_MARKER = 50_000
DISPLAY_MAX_TRIANGLES = 100_000
"""Mesh triangles sent to RViz (node, bag export): building marker messages costs ~13 us a triangle."""


def cloud_records(points: np.ndarray, colors: np.ndarray, out: np.ndarray | None = None) -> np.ndarray:
    """(N,) records of :data:`CLOUD_DTYPE` from (N, 3) points and (N, 3) uint8 colours.

    ``out`` (N records viewing a message's own buffer) is filled in place: for a 300k-point cloud that
    is 1 ms instead of 9, because a fresh 4.8 MB temporary costs thousands of page faults.
    """
    points = np.asarray(points, dtype=np.float32)
    colors = np.asarray(colors, dtype=np.uint8)
    if points.ndim != 2 or points.shape[1] != 3 or colors.shape != points.shape:
        raise ValueError(f"points {points.shape} and colors {colors.shape} must both be (N, 3)")
    records = np.empty(len(points), dtype=CLOUD_DTYPE) if out is None else out
    records["x"], records["y"], records["z"] = points[:, 0], points[:, 1], points[:, 2]
    packed = (colors[:, 0].astype(np.uint32) << 16) | (colors[:, 1].astype(np.uint32) << 8) | colors[:, 2]
    records["rgb"] = packed.view(np.float32)
    return records


def mesh_marker_chunks(
    mesh: TriangleMesh, max_triangles_per_marker: int = TRIANGLES_PER_MARKER
) -> Iterator[tuple[np.ndarray, np.ndarray]]:
    """Per TRIANGLE_LIST marker: its corners (3 per triangle, float64) and their RGBA (float32, 0..1)."""
    corner_index = np.asarray(mesh.triangles).reshape(-1)
    corners = np.asarray(mesh.vertices)[corner_index].astype(np.float64)
    rgba = np.ones((len(corners), 4), np.float32)
    rgba[:, :3] = np.asarray(mesh.vertex_colors)[corner_index].astype(np.float32) / 255.0
    per_marker = max(1, int(max_triangles_per_marker)) * 3
    for start in range(0, len(corners), per_marker):
        yield corners[start : start + per_marker], rgba[start : start + per_marker]


# --- CDR serialisation straight from numpy --------------------------------------------------------
# ROS 2 messages travel as XCDR1 little-endian ("00 01 00 00" then the fields, each aligned to its own
# size relative to the byte after that 4-byte header). Building the bytes here costs two memcpys per
# array; building rclpy message objects cost one Python object per vertex (~600,000 per mesh), which
# was the node's allocator churn (issue 14, defect 12) and ~1.3 s per 100k-triangle mesh (issue 13).

_CDR_LE_HEADER = b"\x00\x01\x00\x00"
_POINT_FIELDS = (("x", 0), ("y", 4), ("z", 8), ("rgb", 12))
_FLOAT32 = 7  # sensor_msgs/PointField.FLOAT32
TRIANGLE_LIST, MARKER_ADD, MARKER_DELETE, MARKER_DELETEALL = 11, 0, 2, 3


class CdrWriter:
    """Appends CDR fields; big arrays are kept as separate parts and joined once at the end."""

    def __init__(self) -> None:
        self._parts: list[bytes] = [_CDR_LE_HEADER]
        self._size = 0  # bytes after the encapsulation header (alignment is relative to it)

    def align(self, size: int) -> None:
        pad = -self._size % size
        if pad:
            self.raw(b"\0" * pad)

    def raw(self, data: bytes) -> None:
        self._parts.append(data)
        self._size += len(data)

    def pack(self, fmt: str, *values: float | int, align: int) -> None:
        self.align(align)
        self.raw(struct.pack("<" + fmt, *values))

    def uint32(self, value: int) -> None:
        self.pack("I", value, align=4)

    def string(self, text: str) -> None:
        data = text.encode("utf-8") + b"\0"
        self.uint32(len(data))
        self.raw(data)

    def header(self, sec: int, nanosec: int, frame_id: str) -> None:
        self.pack("iI", sec, nanosec, align=4)
        self.string(frame_id)

    def sequence(self, values: np.ndarray, count: int, align: int) -> None:
        """A sequence of ``count`` fixed-size elements whose bytes are ``values`` (little-endian)."""
        self.uint32(count)
        if count:
            self.align(align)
            self.raw(np.ascontiguousarray(values).tobytes())

    def getvalue(self) -> bytes:
        return b"".join(self._parts)


def cloud_cdr(points: np.ndarray, colors: np.ndarray, sec: int, nanosec: int, frame_id: str) -> bytes:
    """A serialized sensor_msgs/PointCloud2 (x, y, z, rgb; unorganised, dense) from numpy."""
    points = np.asarray(points)
    count = len(points)
    prefix = CdrWriter()
    prefix.header(sec, nanosec, frame_id)
    prefix.pack("II", 1, count, align=4)  # height, width
    prefix.uint32(len(_POINT_FIELDS))
    for name, offset in _POINT_FIELDS:
        prefix.string(name)
        prefix.uint32(offset)
        prefix.pack("B", _FLOAT32, align=1)
        prefix.uint32(1)
    prefix.pack("B", 0, align=1)  # is_bigendian
    prefix.pack("II", CLOUD_DTYPE.itemsize, CLOUD_DTYPE.itemsize * count, align=4)
    prefix.uint32(CLOUD_DTYPE.itemsize * count)
    head = prefix.getvalue()
    # One buffer, filled in place: a fresh 4.8 MB temporary per 300k-point cloud costs page faults.
    buffer = bytearray(len(head) + CLOUD_DTYPE.itemsize * count + 1)
    buffer[: len(head)] = head
    cloud_records(points, colors, out=np.frombuffer(buffer, CLOUD_DTYPE, count=count, offset=len(head)))
    buffer[-1] = 1  # is_dense
    return bytes(buffer)


def _marker_cdr(
    out: CdrWriter,
    sec: int,
    nanosec: int,
    frame_id: str,
    namespace: str,
    marker_id: int,
    marker_type: int,
    action: int,
    reserved: _Reserved | None = None,
) -> None:
    """One visualization_msgs/Marker, field by field as the Kilted/Jazzy definition orders them.

    ``reserved`` (corners ``start:stop`` of the mesh) leaves room for the points and colours arrays.
    """
    out.header(sec, nanosec, frame_id)
    out.string(namespace)
    out.pack("iii", marker_id, marker_type, action, align=4)
    adding = action == MARKER_ADD
    out.pack("7d", 0.0, 0.0, 0.0, 0.0, 0.0, 0.0, 1.0, align=8)  # pose (Quaternion's w defaults to 1)
    out.pack("3d", *((1.0,) * 3 if adding else (0.0,) * 3), align=8)  # scale
    out.pack("4f", 0.0, 0.0, 0.0, 1.0 if adding else 0.0, align=4)  # color
    out.pack("iI", 0, 0, align=4)  # lifetime
    out.pack("B", 0, align=1)  # frame_locked
    count = 0 if reserved is None else reserved.stop - reserved.start
    for kind, align in (("corners", 8), ("colors", 4)):
        out.uint32(count)
        if count:
            out.align(align)
            out.raw(_Reserved(reserved.start, reserved.stop, kind, reserved.source))  # type: ignore[arg-type]
    out.string("")  # texture_resource
    out.header(0, 0, "")  # texture.header
    out.string("")  # texture.format
    out.uint32(0)  # texture.data
    out.uint32(0)  # uv_coordinates
    out.string("")  # text
    out.string("")  # mesh_resource
    out.string("")  # mesh_file.filename
    out.uint32(0)  # mesh_file.data
    out.pack("B", 0, align=1)  # mesh_use_embedded_materials


def _mesh_source(vertices: np.ndarray, colors: np.ndarray, triangles: np.ndarray) -> _MeshSource:
    rgba = np.ones((len(vertices), 4), "<f4")
    rgba[:, :3] = np.asarray(colors).astype(np.float32) / 255.0
    return _MeshSource(np.asarray(vertices, dtype="<f8"), rgba, np.asarray(triangles, np.int64).reshape(-1))


def _assemble(out: CdrWriter, sources: list[_MeshSource]) -> bytes:
    """Join the writer's parts, gathering each reserved corner/colour array straight into the buffer."""
    buffer = bytearray(4 + out._size)
    position = 0
    for part in out._parts:
        if isinstance(part, _Reserved):
            source = sources[part.source]
            values = source.vertices if part.kind == "corners" else source.rgba
            width = 24 if part.kind == "corners" else 16
            count = part.stop - part.start
            target = np.frombuffer(buffer, values.dtype, count=count * (width // values.itemsize), offset=position)
            np.take(values, source.corners[part.start : part.stop], axis=0, out=target.reshape(count, -1))
            position += count * width
        else:
            buffer[position : position + len(part)] = part
            position += len(part)
    return bytes(buffer)


def mesh_markers_cdr(
    mesh: TriangleMesh | None,
    sec: int,
    nanosec: int,
    frame_id: str,
    namespace: str = MESH_NAMESPACE,
    max_triangles_per_marker: int = TRIANGLES_PER_MARKER,
) -> bytes:
    """A serialized visualization_msgs/MarkerArray: a DELETEALL, then the mesh's TRIANGLE_LIST markers.

    ``mesh`` None gives the DELETEALL alone (what a reset publishes). The corners and colours are
    gathered from per-vertex arrays straight into the one output buffer: no per-corner temporaries.
    """
    sources = [] if mesh is None else [_mesh_source(mesh.vertices, mesh.vertex_colors, mesh.triangles)]
    corners = len(sources[0].corners) if sources else 0
    per_marker = max(1, int(max_triangles_per_marker)) * 3
    starts = list(range(0, corners, per_marker))
    out = CdrWriter()
    out.uint32(1 + len(starts))
    _marker_cdr(out, sec, nanosec, frame_id, namespace, 0, 0, MARKER_DELETEALL)
    for index, start in enumerate(starts, start=1):
        stop = min(start + per_marker, corners)
        _marker_cdr(out, sec, nanosec, frame_id, namespace, index, TRIANGLE_LIST, MARKER_ADD, _Reserved(start, stop))
    return _assemble(out, sources)


def chunk_markers_cdr(
    changed: Sequence[tuple[int, np.ndarray, np.ndarray, np.ndarray]],
    removed: Sequence[int],
    sec: int,
    nanosec: int,
    frame_id: str,
    namespace: str = MAP_MESH_NAMESPACE,
) -> bytes:
    """A serialized MarkerArray that updates a chunked map mesh in place: one TRIANGLE_LIST marker per
    changed chunk (``(chunk_id, vertices, colours, triangles)``; ADD with the chunk's id replaces the old
    one) and a DELETE per removed chunk id. Untouched chunks are not resent, so the message's size
    follows the change, not the map.
    """
    sources = [_mesh_source(vertices, colors, triangles) for _, vertices, colors, triangles in changed]
    out = CdrWriter()
    out.uint32(len(changed) + len(removed))
    for number, ((marker_id, *_), source) in enumerate(zip(changed, sources, strict=True)):
        reserved = _Reserved(0, len(source.corners), source=number)
        _marker_cdr(out, sec, nanosec, frame_id, namespace, int(marker_id), TRIANGLE_LIST, MARKER_ADD, reserved)
    for marker_id in removed:
        _marker_cdr(out, sec, nanosec, frame_id, namespace, int(marker_id), TRIANGLE_LIST, MARKER_DELETE)
    return _assemble(out, sources)


class _MeshSource(NamedTuple):
    vertices: np.ndarray  # (V, 3) <f8
    rgba: np.ndarray  # (V, 4) <f4
    corners: np.ndarray  # (3T,) vertex index of each triangle corner


class _Reserved:
    """Room for a marker's corner or colour array (of mesh ``source``), filled after the layout is known."""

    def __init__(self, start: int, stop: int, kind: str = "corners", source: int = 0) -> None:
        self.start, self.stop, self.kind, self.source = start, stop, kind, source

    def __len__(self) -> int:
        return (self.stop - self.start) * (24 if self.kind == "corners" else 16)
