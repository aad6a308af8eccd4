"""The robot map's topics: ``~/map`` (surface cloud), ``~/map_mesh`` (chunked mesh), ``~/occupancy``.

The map itself (:class:`showroom_ros.mapping.robot_map.RobotMap`) is ROS-free; this class only turns
its updates into messages. ``~/map_mesh`` is incremental: each update sends only the chunks that
changed (one TRIANGLE_LIST marker per chunk, id = chunk id, so an ADD replaces the old one) and a
DELETE per removed chunk. A subscriber that joins later would miss the chunks sent before it, so
every chunk's latest mesh is kept here and a full snapshot is published whenever a new subscriber
matches (Iron and newer; on Humble, which has no matched event, the topic keeps a deeper history).
"""

from __future__ import annotations

import threading
from typing import Any

import numpy as np
from nav_msgs.msg import OccupancyGrid as OccupancyGridMsg
from rclpy.node import Node
from rclpy.qos import DurabilityPolicy, QoSProfile, ReliabilityPolicy
from sensor_msgs.msg import PointCloud2
from std_msgs.msg import Header
from visualization_msgs.msg import MarkerArray

from showroom_ros.mapping.mesh_chunks import ChunkMesh, ChunkUpdate
from showroom_ros.mapping.occupancy import OccupancyGrid
from showroom_ros.ros import conversions as conv
from showroom_ros.ros.guard import Guard
from showroom_ros.ros.qos import LATCHED

#: Without a matched event (Humble), late joiners get this many of the last mesh updates.
HISTORY_WITHOUT_MATCHED_EVENT = 100


def _publisher_events(callback: Any) -> tuple[Any, bool]:
    """Publisher event callbacks with ``matched`` where this rclpy has it (Iron+), else None."""
    try:
        from rclpy.event_handler import PublisherEventCallbacks
    except ImportError:  # Humble: rclpy.qos_event
        return None, False
    try:
        return PublisherEventCallbacks(matched=callback), True
    except TypeError:
        return None, False


class MapOutputs:
    """Publishes map updates from the worker thread; sends a snapshot of every chunk to new subscribers."""

    def __init__(self, node: Node, create_publisher: Any, guard: Guard) -> None:
        self._node = node
        self.cloud_pub = create_publisher(PointCloud2, "~/map", LATCHED)
        events, has_matched = _publisher_events(guard("event", "~/map_mesh matched", self._on_matched))
        mesh_qos = LATCHED
        if not has_matched:
            mesh_qos = QoSProfile(
                depth=HISTORY_WITHOUT_MATCHED_EVENT,
                reliability=ReliabilityPolicy.RELIABLE,
                durability=DurabilityPolicy.TRANSIENT_LOCAL,
            )
        kwargs = {"event_callbacks": events} if events is not None else {}
        self.mesh_pub = create_publisher(MarkerArray, "~/map_mesh", mesh_qos, **kwargs)
        self.occupancy_pub = create_publisher(OccupancyGridMsg, "~/occupancy", LATCHED)
        self._lock = threading.Lock()
        self._chunks: dict[int, ChunkMesh] = {}
        self._frame_id = ""
        self._stamp_ns = 0
        self.snapshots_sent = 0

    def header(self, frame_id: str, stamp_ns: int) -> Header:
        """At the newest camera frame the map includes (the clock's now only while it includes none)."""
        stamp = conv.ns_to_stamp(stamp_ns) if stamp_ns > 0 else self._node.get_clock().now().to_msg()
        return Header(frame_id=frame_id, stamp=stamp)

    def publish(
        self,
        frame_id: str,
        chunks: ChunkUpdate,
        surface: tuple[np.ndarray, np.ndarray] | None,
        occupancy: OccupancyGrid | None,
        stamp_ns: int = 0,
    ) -> None:
        """Send changed/removed chunks, then the surface cloud and the grid (each when given), stamped
        ``stamp_ns`` (the newest keyframe in the map)."""
        header = self.header(frame_id, stamp_ns)
        with self._lock:
            self._frame_id, self._stamp_ns = frame_id, stamp_ns
            for chunk in chunks.changed:
                self._chunks[chunk.chunk_id] = chunk
            for chunk_id in chunks.removed:
                self._chunks.pop(chunk_id, None)
            if chunks.changed or chunks.removed:
                self.mesh_pub.publish(conv.chunk_update_to_markers_serialized(chunks, header))
        if surface is not None:
            points, colors = surface
            self.cloud_pub.publish(conv.points_to_cloud_serialized(points, colors, header))
        if occupancy is not None:
            self.occupancy_pub.publish(conv.occupancy_to_msg(occupancy, header))

    def clear(self, frame_id: str) -> None:
        """Delete every published chunk, empty the cloud and publish an all-unknown (empty) grid."""
        with self._lock:
            removed = sorted(self._chunks)
        self.publish(frame_id, ChunkUpdate(removed=removed), (np.zeros((0, 3)), np.zeros((0, 3), np.uint8)), None)
        empty = OccupancyGrid(np.zeros((0, 0), np.int8), 0.05, (0.0, 0.0))
        self.occupancy_pub.publish(conv.occupancy_to_msg(empty, self.header(frame_id, 0)))

    def replace_all(self, chunks: ChunkUpdate) -> ChunkUpdate:
        """After a load: the loaded map's chunks, and DELETEs for published chunks it does not have."""
        with self._lock:
            kept = {chunk.chunk_id for chunk in chunks.changed}
            stale = [chunk_id for chunk_id in self._chunks if chunk_id not in kept]
        return ChunkUpdate(changed=list(chunks.changed), removed=sorted(set(chunks.removed) | set(stale)))

    def _on_matched(self, info: Any) -> None:
        """A new subscriber: send it (and the others: ADD replaces in place) every chunk we have."""
        if getattr(info, "current_count_change", 0) <= 0:
            return
        with self._lock:
            if not self._chunks:
                return
            snapshot = ChunkUpdate(changed=list(self._chunks.values()))
            self.mesh_pub.publish(
                conv.chunk_update_to_markers_serialized(snapshot, self.header(self._frame_id, self._stamp_ns))
            )
            self.snapshots_sent += 1
