"""rosbag2 files (MCAP or sqlite3) read and written with `rosbags`, no ROS install needed.

Messages travel as CDR bytes, the same bytes rclpy publishes, so a bag written here plays with
`ros2 bag play` and opens in Foxglove. Our own interface types are registered from msg/.
"""

from __future__ import annotations

import shutil
import tempfile
from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from pathlib import Path

from rosbags.rosbag2 import Reader, StoragePlugin, Writer
from rosbags.typesys import Stores, get_types_from_msg, get_typestore
from rosbags.typesys.store import Typestore

MSG_DIR = Path(__file__).resolve().parents[1] / "msg"


@dataclass(frozen=True)
class BagMessage:
    topic: str
    msgtype: str  # e.g. "sensor_msgs/msg/PointCloud2"
    stamp_ns: int
    data: bytes  # CDR, as rclpy.serialization.serialize_message produces


def showroom_typestore(msg_dir: Path | None = None) -> Typestore:
    """Kilted's standard types plus showroom_ros/msg/* (matching type hashes)."""
    typestore = get_typestore(Stores.ROS2_KILTED)
    folder = msg_dir or _find_msg_dir()
    types = {}
    for path in sorted(folder.glob("*.msg")) if folder else []:
        types.update(get_types_from_msg(path.read_text(), f"showroom_ros/msg/{path.stem}"))
    typestore.register(types)
    return typestore


def _find_msg_dir() -> Path | None:
    if MSG_DIR.is_dir():
        return MSG_DIR
    try:
        from ament_index_python.packages import get_package_share_directory

        installed = Path(get_package_share_directory("showroom_ros")) / "msg"
        return installed if installed.is_dir() else None
    except (ImportError, LookupError):
        return None


def write_bag(path: Path, messages: Iterable[BagMessage], storage: str = "mcap") -> Path:
    """Write a rosbag2 directory at ``path`` atomically (a bag half-written is never left behind)."""
    path = Path(path)
    if path.exists():
        raise FileExistsError(f"{path} already exists; choose another name or remove it first")
    plugins = {"mcap": StoragePlugin.MCAP, "sqlite3": StoragePlugin.SQLITE3}
    if storage not in plugins:
        raise ValueError(f"unknown bag storage '{storage}' (use mcap or sqlite3)")
    typestore = showroom_typestore()
    path.parent.mkdir(parents=True, exist_ok=True)
    staging = Path(tempfile.mkdtemp(prefix=f".{path.name}-", dir=path.parent))
    target = staging / path.name
    try:
        with Writer(target, version=9, storage_plugin=plugins[storage]) as writer:
            connections = {}
            for message in messages:
                key = (message.topic, message.msgtype)
                if key not in connections:
                    if message.msgtype not in typestore.fielddefs:
                        raise ValueError(f"unknown message type {message.msgtype}")
                    connections[key] = writer.add_connection(message.topic, message.msgtype, typestore=typestore)
                writer.write(connections[key], message.stamp_ns, message.data)
        target.rename(path)
    finally:
        shutil.rmtree(staging, ignore_errors=True)
    return path


def read_bag(path: Path, topics: Iterable[str] | None = None) -> Iterator[BagMessage]:
    """Every message of the bag (optionally only some topics), in time order."""
    wanted = set(topics) if topics is not None else None
    with Reader(Path(path)) as reader:
        connections = [c for c in reader.connections if wanted is None or c.topic in wanted]
        if wanted is not None:
            missing = wanted - {c.topic for c in connections}
            if missing:
                available = ", ".join(sorted({c.topic for c in reader.connections})) or "none"
                raise ValueError(f"bag {path} has no topic(s) {', '.join(sorted(missing))} (it has: {available})")
        for connection, stamp, data in reader.messages(connections=connections):
            yield BagMessage(connection.topic, connection.msgtype, stamp, bytes(data))
