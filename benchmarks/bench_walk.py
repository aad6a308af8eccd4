"""The walk benchmark of issue 20 (item 5): a real RGB-D walk with poses through the real node.

    python -P benchmarks/bench_walk.py --rate 5              (inside `. scripts/env.sh`; 500 frames, ~100 s + tail)
    python -P benchmarks/bench_walk.py --rate 15
    python -P benchmarks/bench_walk.py --rate 5 --frames 60  (a short check)
    python -P benchmarks/bench_walk.py --rate 5 --json       (machine output on stdout, progress on stderr)

This process is the camera and the client. It replays ``../shared/data/7scenes_redkitchen_walk`` (every
2nd frame of a 30 Hz Kinect sequence) at ``--rate`` Hz: colour (rgb8), depth (16UC1 mm), both CameraInfos
(the depth camera's own, K = 585: depth is not registered to colour) and the ground-truth pose as a
PoseStamped in ``map``, all stamped with the frame's time in the sequence (frame ``i`` of the original
30 Hz sequence at ``i / 30`` s after the start; ``--stamp-clock playback`` stamps at the send times
instead). ``showroom_node`` runs in its own process with ``backend: rgbd``, ``pose_source: topic`` and every
other parameter at its default (the user's case in issue 20).

Measured from the stamps of the map outputs (``~/map_mesh``, ``~/occupancy``, ``~/map``), whose
``header.stamp`` is the newest camera frame the map includes:
  map lag        arrival at this client - send time of that frame: median and p90. A stamp that matches
                 no sent frame (a publish-time stamp) is counted and reported, never turned into a lag;
  waits          the longest time without a map output during the walk (and first frame -> first map);
  tail           last frame sent -> the final map output;
  node           CPU (% of one core) and RSS (start, peak, end, after the first minute);
  mesh quality   the node's map mesh (written by ``~/save_map``) against a TSDF fused here from the GT
                 poses of the same frames with the node's own map settings: accuracy = distance of each
                 node vertex to the reference surface (median, p90); completion = share of reference
                 vertices within 2 cm and within 5 cm (docs/mapping.md's tolerance) of the node's surface.
The summary goes to stdout (or JSON with ``--json``) and always to a JSON file (``--out``).
"""

from __future__ import annotations

import argparse
import json
import os
import queue
import re
import sys
import tempfile
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import cv2
import numpy as np
import psutil
import rclpy
import yaml
from geometry_msgs.msg import PoseStamped
from nav_msgs.msg import OccupancyGrid
from rclpy.executors import SingleThreadedExecutor
from rclpy.node import Node
from rclpy.qos import DurabilityPolicy, QoSProfile, ReliabilityPolicy, qos_profile_sensor_data
from sensor_msgs.msg import CameraInfo, Image, PointCloud2
from std_msgs.msg import Header
from visualization_msgs.msg import MarkerArray

from showroom_ros.geometry.camera import CameraIntrinsics
from showroom_ros.io.datasets import read_camera_yaml, read_depth, read_frame_index
from showroom_ros.msg import ReconstructionStatus
from showroom_ros.ros import conversions as conv
from showroom_ros.ros.processes import NodeProcess, export_ros_environment, find_share_file
from showroom_ros.ros.settings import robot_map_config
from showroom_ros.srv import SaveReconstruction

REPO = Path(__file__).resolve().parents[1]
DEFAULT_DATA = REPO.parent / "shared" / "data" / "7scenes_redkitchen_walk"
SEQUENCE_HZ = 30.0  # the original Kinect sequence; the walk keeps every 2nd frame
NODE = "/showroom"
MAP_TOPICS = ("map_mesh", "occupancy", "map")
CAMERA_TOPICS = {
    "image_topics": "/walk/color/image_raw",
    "camera_info_topics": "/walk/color/camera_info",
    "depth_topics": "/walk/depth/image_raw",
    "depth_info_topics": "/walk/depth/camera_info",
    "pose_topics": "/walk/pose",
}
COMPLETION_TOLERANCES_M = (0.02, 0.05)  # 5 cm is docs/mapping.md's completion tolerance


def log(message: str) -> None:
    """Progress goes to stderr, so stdout carries only the summary (or the JSON)."""
    print(message, file=sys.stderr, flush=True)


# --- the data -------------------------------------------------------------------------------------------
@dataclass(frozen=True)
class WalkFrame:
    """One frame of the walk: ``number`` is its index in the original 30 Hz sequence."""

    number: int
    rgb: Path
    depth: Path
    pose: np.ndarray


def frame_number(path: Path) -> int:
    """``frame-000123.color.jpg`` -> 123."""
    return int(path.name.split(".")[0].split("-")[-1])


def load_walk(folder: Path, count: int | None) -> tuple[list[WalkFrame], CameraIntrinsics, CameraIntrinsics]:
    """The walk's frames and (colour, depth) intrinsics.

    The folder has no camera.yaml; the bundled ``data/redkitchen`` keyframes come from the same Kinect
    sequence and their camera.yaml has both cameras. Its depth K is checked against the folder's own
    ``camera-intrinsics.txt`` so a different sequence cannot be replayed with the wrong intrinsics.
    """
    records = read_frame_index(folder / "frames_c2w.txt")[:count]
    camera = read_camera_yaml(find_share_file("data", "redkitchen", "camera.yaml"))
    if camera.color is None or camera.depth is None:
        raise SystemExit("data/redkitchen/camera.yaml lacks the colour or the depth camera")
    depth_k = np.loadtxt(folder / "camera-intrinsics.txt")
    if not np.allclose(depth_k, camera.depth.matrix):
        raise SystemExit(f"{folder}/camera-intrinsics.txt does not match data/redkitchen/camera.yaml's depth camera")
    frames = [WalkFrame(frame_number(r.rgb), r.rgb, r.depth, r.pose) for r in records if r.depth and r.pose is not None]
    if len(frames) != len(records):
        raise SystemExit(f"{folder}: every frame needs depth and a pose")
    return frames, camera.color, camera.depth


def sent_pose(pose: np.ndarray) -> np.ndarray:
    """The GT pose as the node receives it (through a PoseStamped quaternion: the slightly non-orthonormal
    rotations of 7-Scenes come out orthonormal), so the reference is fused from exactly the same poses."""
    return conv.pose_to_matrix(conv.matrix_to_pose(pose))


def prefetch(frames: list[WalkFrame], loops: int, out: queue.Queue) -> None:
    """Decode frames ahead of the publisher (OpenCV releases the GIL while decoding)."""
    for _ in range(loops):
        for frame in frames:
            bgr = cv2.imread(str(frame.rgb), cv2.IMREAD_COLOR)
            depth_mm = cv2.imread(str(frame.depth), cv2.IMREAD_UNCHANGED)
            out.put((frame, cv2.cvtColor(bgr, cv2.COLOR_BGR2RGB), depth_mm))
    out.put(None)


# --- this process: the camera and the client -------------------------------------------------------------
@dataclass
class Arrival:
    topic: str
    stamp_ns: int | None  # None: a message without a stamp (an empty MarkerArray)
    at: float  # time.monotonic() in the callback
    bytes: int


class WalkClient(Node):
    """Publishes the camera and records every map output's stamp and arrival time and the node's status."""

    def __init__(self) -> None:
        super().__init__("walk_benchmark")
        camera_qos = qos_profile_sensor_data  # what a camera driver offers; the node subscribes best effort
        self.image_pub = self.create_publisher(Image, CAMERA_TOPICS["image_topics"], camera_qos)
        self.info_pub = self.create_publisher(CameraInfo, CAMERA_TOPICS["camera_info_topics"], camera_qos)
        self.depth_pub = self.create_publisher(Image, CAMERA_TOPICS["depth_topics"], camera_qos)
        self.depth_info_pub = self.create_publisher(CameraInfo, CAMERA_TOPICS["depth_info_topics"], camera_qos)
        self.pose_pub = self.create_publisher(PoseStamped, CAMERA_TOPICS["pose_topics"], 50)
        self.publishers_ = (self.image_pub, self.info_pub, self.depth_pub, self.depth_info_pub, self.pose_pub)
        self.lock = threading.Lock()
        self.arrivals: list[Arrival] = []
        self.statuses: list[ReconstructionStatus] = []
        # The node's map outputs are reliable + transient local; a deep queue so none is lost here.
        latched = QoSProfile(
            depth=50, reliability=ReliabilityPolicy.RELIABLE, durability=DurabilityPolicy.TRANSIENT_LOCAL
        )
        for topic, msg_type in zip(MAP_TOPICS, (MarkerArray, OccupancyGrid, PointCloud2), strict=True):
            self.create_subscription(
                msg_type, f"{NODE}/{topic}", lambda data, t=topic: self._on_map(t, data), latched, raw=True
            )
        self.create_subscription(ReconstructionStatus, f"{NODE}/status", self._on_status, 10)

    def _on_map(self, topic: str, data: bytes) -> None:
        at = time.monotonic()
        stamp = conv.serialized_marker_array_stamp_ns(data) if topic == "map_mesh" else conv.serialized_stamp_ns(data)
        with self.lock:
            self.arrivals.append(Arrival(topic, stamp, at, len(data)))

    def _on_status(self, msg: ReconstructionStatus) -> None:
        with self.lock:
            self.statuses.append(msg)

    def last_status(self) -> ReconstructionStatus | None:
        with self.lock:
            return self.statuses[-1] if self.statuses else None

    def last_arrival(self) -> float | None:
        with self.lock:
            return self.arrivals[-1].at if self.arrivals else None

    def connected(self) -> bool:
        return all(pub.get_subscription_count() > 0 for pub in self.publishers_) and self.last_status() is not None

    def publish_frame(
        self, rgb: np.ndarray, depth_mm: np.ndarray, pose: np.ndarray, stamp_ns: int, color_k: Any, depth_k: Any
    ) -> float:
        """Pose first (the node would otherwise wait for it), then depth, then colour; returns the send time."""
        stamp = conv.ns_to_stamp(stamp_ns)
        camera = Header(stamp=stamp, frame_id="camera_color_optical_frame")
        self.pose_pub.publish(conv.matrix_to_pose_stamped(pose, Header(stamp=stamp, frame_id="map")))
        self.depth_info_pub.publish(conv.intrinsics_to_camera_info(depth_k, camera))
        self.depth_pub.publish(conv.mono_to_image(depth_mm, camera))
        self.info_pub.publish(conv.intrinsics_to_camera_info(color_k, camera))
        self.image_pub.publish(conv.rgb_to_image(rgb, camera))
        return time.monotonic()

    def save_map(self, name: str, timeout: float) -> SaveReconstruction.Response:
        client = self.create_client(SaveReconstruction, f"{NODE}/save_map")
        try:
            if not client.wait_for_service(timeout_sec=20.0):
                raise RuntimeError(f"{NODE}/save_map did not appear")
            future = client.call_async(SaveReconstruction.Request(name=name))
            deadline = time.monotonic() + timeout
            while not future.done() and time.monotonic() < deadline:
                time.sleep(0.05)
            if not future.done():
                raise RuntimeError(f"{NODE}/save_map did not answer in {timeout:.0f} s")
            return future.result()
        finally:
            self.destroy_client(client)


class ResourceSampler(threading.Thread):
    """The node's RSS and CPU time every ``period`` s (monotonic time, MiB, CPU seconds)."""

    def __init__(self, pid: int, period: float = 0.5) -> None:
        super().__init__(daemon=True)
        self.process = psutil.Process(pid)
        self.period = period
        self.samples: list[tuple[float, float, float]] = []
        self.stopped = threading.Event()

    def sample(self) -> tuple[float, float, float] | None:
        try:
            cpu = self.process.cpu_times()
            row = (time.monotonic(), self.process.memory_info().rss / 2**20, cpu.user + cpu.system)
        except psutil.Error:
            return None
        self.samples.append(row)
        return row

    def run(self) -> None:
        while not self.stopped.wait(self.period):
            self.sample()

    def at(self, moment: float) -> tuple[float, float, float]:
        """The sample nearest ``moment``."""
        return min(self.samples, key=lambda row: abs(row[0] - moment))


# --- the run --------------------------------------------------------------------------------------------
@dataclass
class Walk:
    """What happened: frames sent (stamp -> (position in the walk, send time)), arrivals, node samples."""

    rate_hz: float
    sent: dict[int, tuple[int, float]] = field(default_factory=dict)
    send_times: list[float] = field(default_factory=list)
    arrivals: list[Arrival] = field(default_factory=list)
    statuses: list[ReconstructionStatus] = field(default_factory=list)
    samples: list[tuple[float, float, float]] = field(default_factory=list)
    rss_start: float = 0.0
    rss_end: float = 0.0
    final_at: float = 0.0  # when the map was judged final
    tail_timed_out: bool = False
    save: dict[str, Any] = field(default_factory=dict)
    node_exit: int | None = None
    node_log_tracebacks: int = 0
    rebuild_seconds: list[float] = field(default_factory=list)  # map rebuilds after loop closures (SLAM)
    own_cpu_s: float = 0.0


def frame_stamp_ns(start_ns: int, number: int, loop: int, loop_length: int, position: int, args: Any) -> int:
    """``sequence``: frame ``number`` at number/30 s (a loop continues after the last frame); ``playback``:
    the send schedule, position/rate."""
    if args.stamp_clock == "playback":
        return start_ns + round(position * 1e9 / args.rate)
    return start_ns + round((loop * loop_length + number) * 1e9 / SEQUENCE_HZ)


def node_parameters(output_dir: Path) -> dict[str, Any]:
    """``backend: rgbd``, poses on a topic, everything else at config/showroom.yaml's defaults."""
    return {"backend": "rgbd", "pose_source": "topic", "output_dir": str(output_dir)} | {
        name: [topic] for name, topic in CAMERA_TOPICS.items()
    }


def run_walk(
    args: Any,
    frames: list[WalkFrame],
    color_k: Any,
    depth_k: Any,
    workdir: Path,
    parameters: dict[str, Any] | None = None,
    client: WalkClient | None = None,
) -> Walk:
    """Play the walk to a node started with ``parameters`` (default: :func:`node_parameters`)."""
    walk = Walk(rate_hz=args.rate)
    parameters = parameters or node_parameters(workdir / "out")
    node = NodeProcess("showroom_node", parameters, workdir, find_share_file("config", "showroom.yaml"))
    client = client or WalkClient()
    executor = SingleThreadedExecutor()
    executor.add_node(client)
    spinner = threading.Thread(target=executor.spin, daemon=True)
    spinner.start()
    sampler = ResourceSampler(node.process.pid)
    own = psutil.Process()
    try:
        deadline = time.monotonic() + 60
        while not client.connected():
            if time.monotonic() > deadline or not node.alive():
                raise RuntimeError(f"the node did not come up; its log:\n{node.log()[-3000:]}")
            time.sleep(0.1)
        time.sleep(2.0)  # start-up settles (imports, first status) before the RSS baseline
        walk.rss_start = sampler.sample()[1]
        sampler.start()
        decoded: queue.Queue = queue.Queue(maxsize=24)
        threading.Thread(target=prefetch, args=(frames, args.loops, decoded), daemon=True).start()
        loop_length = frames[-1].number + 2  # the next loop continues the sequence's 15 Hz spacing
        start_ns = time.time_ns()
        own_before = own.cpu_times()
        started = time.monotonic()
        position = 0
        log(f"walk: {len(frames) * args.loops} frames at {args.rate:g} Hz")
        while (item := decoded.get()) is not None:
            frame, rgb, depth_mm = item
            target = started + position / args.rate
            while (wait := target - time.monotonic()) > 0:
                time.sleep(wait)
            loop = position // len(frames)
            stamp = frame_stamp_ns(start_ns, frame.number, loop, loop_length, position, args)
            sent_at = client.publish_frame(rgb, depth_mm, frame.pose, stamp, color_k, depth_k)
            walk.sent[stamp] = (position, sent_at)
            walk.send_times.append(sent_at)
            position += 1
            if position % 100 == 0:
                log(f"  {position} frames sent, {len(client.arrivals)} map outputs received")
        own_after = own.cpu_times()
        walk.own_cpu_s = (own_after.user - own_before.user) + (own_after.system - own_before.system)
        wait_for_final_map(client, walk.send_times[-1], args)
        walk.final_at = time.monotonic()
        walk.tail_timed_out = walk.final_at - walk.send_times[-1] >= args.tail_timeout
        walk.rss_end = sampler.sample()[1]
        sampler.stopped.set()
        walk.save = save_node_map(client, args)
    finally:
        sampler.stopped.set()
        node.stop()
        executor.shutdown(timeout_sec=2.0)
        client.destroy_node()
    with client.lock:
        walk.arrivals = list(client.arrivals)
        walk.statuses = list(client.statuses)
    walk.samples = list(sampler.samples)
    walk.node_exit = node.process.returncode
    node_log = node.log_path.read_text(errors="replace")
    walk.node_log_tracebacks = node_log.count("Traceback")
    walk.rebuild_seconds = [
        float(v) for v in re.findall(r"rebuilt from \d+ keyframes after a loop closure in ([\d.]+) s", node_log)
    ]
    return walk


def wait_for_final_map(client: WalkClient, last_sent: float, args: Any) -> None:
    """The map is final when no map output came for ``--quiet`` s and the node is not reconstructing (it
    would publish again); bounded by ``--tail-timeout``. ``--quiet`` must exceed idle_reconstruct_s (5 s),
    after which a last window of >= min_keyframes keyframes starts."""
    log(f"waiting for the final map (quiet for {args.quiet:g} s, at most {args.tail_timeout:g} s)")
    while time.monotonic() - last_sent < args.tail_timeout:
        time.sleep(0.2)
        status = client.last_status()
        busy = status is not None and status.state in ("reconstructing", "generating")
        last_activity = max(last_sent, client.last_arrival() or 0.0)
        if not busy and time.monotonic() - last_activity >= args.quiet:
            return


def save_node_map(client: WalkClient, args: Any) -> dict[str, Any]:
    started = time.monotonic()
    try:
        response = client.save_map("walk", timeout=args.save_timeout)
    except RuntimeError as error:
        return {"success": False, "message": str(error)}
    mesh = next((f for f in response.files if f.endswith("_map_mesh.ply")), None)
    return {
        "success": response.success,
        "message": response.message,
        "seconds": round(time.monotonic() - started, 2),
        "mesh_file": mesh,
    }


# --- the numbers ----------------------------------------------------------------------------------------
def percentiles(values: list[float]) -> dict[str, float] | None:
    if not values:
        return None
    return {
        "median": round(float(np.median(values)), 3),
        "p90": round(float(np.percentile(values, 90)), 3),
        "max": round(float(np.max(values)), 3),
        "count": len(values),
    }


def lag_numbers(walk: Walk) -> dict[str, Any]:
    """Lag of every map output whose stamp is a sent frame; the others are counted as unmatched."""
    matched: dict[str, list[float]] = {topic: [] for topic in MAP_TOPICS}
    unmatched: dict[str, int] = {topic: 0 for topic in MAP_TOPICS}
    unmatched_example: dict[str, Any] = {}
    for arrival in walk.arrivals:
        if arrival.stamp_ns is None:
            continue
        frame = walk.sent.get(arrival.stamp_ns)
        if frame is None:
            unmatched[arrival.topic] += 1
            if arrival.topic not in unmatched_example:
                # How far the stamp is from the arrival's wall clock: ~0 for a publish-time stamp.
                offset = arrival.stamp_ns / 1e9 - (time.time() - (time.monotonic() - arrival.at))
                unmatched_example[arrival.topic] = round(offset, 3)
            continue
        matched[arrival.topic].append(arrival.at - frame[1])
    everything = [lag for lags in matched.values() for lag in lags]
    total_unmatched = sum(unmatched.values())
    if not everything:
        verdict = "no map output carries a sent frame's stamp: the map outputs are not stamped with frame stamps"
    elif total_unmatched:
        verdict = f"{total_unmatched} map outputs carry a stamp that matches no sent frame (publish-time stamps?)"
    else:
        verdict = "every map output is stamped with a sent frame"
    return {
        "all": percentiles(everything),
        "timeline": timeline(walk),
        "by_topic": {topic: percentiles(lags) for topic, lags in matched.items()},
        "unmatched_stamps": unmatched,
        "unmatched_stamp_minus_arrival_wall_s": unmatched_example,
        "verdict": verdict,
    }


def timeline(walk: Walk) -> list[dict[str, Any]]:
    """Every map output: seconds after the first frame, topic, the n-th sent frame it includes (1-based;
    None when its stamp is no sent frame), lag and size, for plots and for reading the JSON by eye."""
    first = walk.send_times[0]
    rows = []
    for arrival in walk.arrivals:
        frame = walk.sent.get(arrival.stamp_ns) if arrival.stamp_ns is not None else None
        rows.append(
            {
                "t_s": round(arrival.at - first, 3),
                "topic": arrival.topic,
                "frame": frame[0] + 1 if frame else None,
                "lag_s": round(arrival.at - frame[1], 3) if frame else None,
                "bytes": arrival.bytes,
            }
        )
    return rows


def wait_numbers(walk: Walk) -> dict[str, Any]:
    """Gaps between map outputs (any of the three topics) from the first frame to the last frame sent."""
    first, last = walk.send_times[0], walk.send_times[-1]
    during = sorted(a.at for a in walk.arrivals if first <= a.at <= last)
    longest = None
    if during:
        gaps = np.diff([*during, last])
        index = int(np.argmax(gaps)) if len(gaps) else 0
        longest = {
            "seconds": round(float(gaps[index]), 2) if len(gaps) else 0.0,
            "from_s_after_first_frame": round(during[index] - first, 2),
        }
    return {
        "first_frame_to_first_map_s": round(during[0] - first, 2) if during else None,
        "longest_between_map_updates": longest,
        "map_outputs_during_walk": len(during),
    }


def tail_numbers(walk: Walk) -> dict[str, Any]:
    last_sent = walk.send_times[-1]
    stamped = [a for a in walk.arrivals if a.stamp_ns is not None]
    if not stamped:
        return {"last_frame_to_final_map_s": None, "note": "no map output at all"}
    final = stamped[-1]
    frame = walk.sent.get(final.stamp_ns)
    final_stamp = [a for a in stamped if a.stamp_ns == final.stamp_ns]
    return {
        "last_frame_to_final_map_s": round(final.at - last_sent, 2),
        "last_frame_to_first_output_of_final_map_s": round(final_stamp[0].at - last_sent, 2) if frame else None,
        "final_map_includes_frame": frame[0] + 1 if frame else None,  # 1-based: the n-th frame sent
        "frames_sent": len(walk.send_times),
        "final_map_after_last_frame": final.at > last_sent,
        "tail_timed_out": walk.tail_timed_out,
    }


def resource_numbers(walk: Walk) -> dict[str, Any]:
    first, last = walk.send_times[0], walk.send_times[-1]
    samples = walk.samples
    if len(samples) < 2:
        return {}

    def cpu_percent(a: float, b: float) -> float:
        start, end = min(samples, key=lambda s: abs(s[0] - a)), min(samples, key=lambda s: abs(s[0] - b))
        return round(100.0 * (end[2] - start[2]) / max(end[0] - start[0], 1e-9), 1)

    def floor(a: float, b: float) -> float:
        """The RSS floor over [a, b]: one sample can catch a window's transient peak, the floor does not."""
        return min(s[1] for s in samples if a <= s[0] <= b)

    after_minute = None
    end = samples[-1][0]
    if end >= first + 65.0:
        at_minute, at_end = floor(first + 55.0, first + 65.0), floor(end - 10.0, end)
        after_minute = {
            "rss_floor_55_65s_mib": round(at_minute, 1),
            "rss_floor_last_10s_mib": round(at_end, 1),
            "growth_mib": round(at_end - at_minute, 1),
        }
    return {
        "node_cpu_percent_of_one_core_walk": cpu_percent(first, last),
        "node_cpu_percent_of_one_core_walk_and_tail": cpu_percent(first, samples[-1][0]),
        "benchmark_process_cpu_percent_walk": round(100.0 * walk.own_cpu_s / max(last - first, 1e-9), 1),
        "rss_mib": {
            "start": round(walk.rss_start, 1),
            "peak": round(max(s[1] for s in samples), 1),
            "end": round(walk.rss_end, 1),
        },
        "rss_after_first_minute": after_minute,
    }


def reference_mesh(frames: list[WalkFrame], depth_k: CameraIntrinsics) -> Any:
    """A TSDF fused here from the GT poses of every frame sent, with the node's map settings (its defaults)."""
    from showroom_ros.mapping.volume import TsdfVolume
    from showroom_ros.ros.parameters import SHOWROOM_PARAMETERS

    shipped = yaml.safe_load(find_share_file("config", "showroom.yaml").read_text())["/**"]["ros__parameters"]
    defaults = {param.name: param.default for param in SHOWROOM_PARAMETERS} | shipped | {"map_spill_max_gb": 0.0}
    volume = TsdfVolume(robot_map_config(defaults).volume)
    for frame in frames:
        volume.integrate(read_depth(frame.depth, 1000.0), depth_k, sent_pose(frame.pose))
    return volume.extract_mesh()


def mesh_quality(node_mesh_file: str | None, frames: list[WalkFrame], depth_k: CameraIntrinsics) -> dict[str, Any]:
    import open3d as o3d

    if not node_mesh_file or not Path(node_mesh_file).is_file():
        return {"note": "no node mesh to compare (save_map failed)"}
    started = time.monotonic()
    reference = reference_mesh(frames, depth_k)
    fused = time.monotonic() - started
    node_mesh = o3d.io.read_triangle_mesh(node_mesh_file)
    node_vertices = np.asarray(node_mesh.vertices, dtype=np.float32)
    reference_vertices = np.asarray(reference.vertices, dtype=np.float32)
    if not len(node_vertices) or not len(reference_vertices):
        return {"note": f"empty mesh: node {len(node_vertices)} vertices, reference {len(reference_vertices)}"}

    def distances_to(mesh: Any, points: np.ndarray) -> np.ndarray:
        """Point-to-surface distance (not to the nearest vertex, which would add half a vertex spacing)."""
        scene = o3d.t.geometry.RaycastingScene()
        scene.add_triangles(o3d.t.geometry.TriangleMesh.from_legacy(mesh))
        return scene.compute_distance(o3d.core.Tensor(points)).numpy()

    accuracy = distances_to(reference, node_vertices)
    coverage = distances_to(node_mesh, reference_vertices)
    return {
        "node_mesh_triangles": len(node_mesh.triangles),
        "reference_mesh_triangles": len(reference.triangles),
        "reference_frames": len(frames),
        "reference_fusion_s": round(fused, 1),
        "accuracy_cm": {
            "median": round(float(np.median(accuracy)) * 100, 2),
            "p90": round(float(np.percentile(accuracy, 90)) * 100, 2),
        },
        "completion": {
            f"within_{tol * 100:g}cm": round(float(np.mean(coverage <= tol)), 4) for tol in COMPLETION_TOLERANCES_M
        },
    }


def machine() -> dict[str, Any]:
    model = next(
        (
            line.split(":", 1)[1].strip()
            for line in Path("/proc/cpuinfo").read_text().splitlines()
            if "model name" in line
        ),
        "unknown",
    )
    return {"cpu_model": model, "cores": os.cpu_count(), "memory_gib": round(psutil.virtual_memory().total / 2**30, 1)}


def loadavg() -> list[float]:
    return [float(x) for x in Path("/proc/loadavg").read_text().split()[:3]]


def summary_lines(result: dict[str, Any]) -> list[str]:
    m, w, lag, waits, tail, res, q = (
        result[k] for k in ("machine", "walk", "map_lag_s", "waits", "tail", "node", "mesh_quality")
    )
    lines = [
        f"walk benchmark: {w['frames_sent']} frames at {w['rate_hz']:g} Hz ({w['achieved_rate_hz']:g} Hz achieved), "
        f"{m['cpu_model']}, {m['cores']} cores, load average {result['load_average_start']} -> "
        f"{result['load_average_end']}",
        f"  node: frames received {w['node_frames_received']}, keyframes left in its buffer "
        f"{w['node_keyframes_left']}, "
        f"map outputs {w['map_outputs']} ({w['distinct_map_stamps']} distinct stamps)",
        f"  stamps: {lag['verdict']}",
    ]
    if lag["all"]:
        lines.append(
            f"  map lag (arrival - send time of the newest frame included): median {lag['all']['median']:.2f} s, "
            f"p90 {lag['all']['p90']:.2f} s, max {lag['all']['max']:.2f} s over {lag['all']['count']} outputs"
        )
        lines += [
            f"    {topic}: median {v['median']:.2f} s, p90 {v['p90']:.2f} s ({v['count']})"
            for topic, v in lag["by_topic"].items()
            if v
        ]
    if any(lag["unmatched_stamps"].values()):
        lines.append(
            f"    stamps matching no sent frame: {lag['unmatched_stamps']} (first one's stamp - arrival "
            f"wall clock, s: {lag['unmatched_stamp_minus_arrival_wall_s']})"
        )
    longest = waits["longest_between_map_updates"]
    lines.append(
        f"  waits: first frame -> first map {waits['first_frame_to_first_map_s']} s; longest without a map output "
        f"during the walk {longest['seconds'] if longest else None} s"
        + (f" (from {longest['from_s_after_first_frame']} s after the first frame)" if longest else "")
    )
    lines.append(
        f"  tail: last frame -> final map {tail.get('last_frame_to_final_map_s')} s; the final map includes frame "
        f"{tail.get('final_map_includes_frame')} of {tail.get('frames_sent')}"
        + (" (tail timed out)" if tail.get("tail_timed_out") else "")
    )
    if res:
        rss = res["rss_mib"]
        minute = res["rss_after_first_minute"]
        lines.append(
            f"  node CPU {res['node_cpu_percent_of_one_core_walk']} % of one core during the walk "
            f"({res['node_cpu_percent_of_one_core_walk_and_tail']} % with the tail; this process "
            f"{res['benchmark_process_cpu_percent_walk']} %); RSS start {rss['start']} MiB, peak {rss['peak']}, "
            f"end {rss['end']}"
            + (
                f"; RSS floor 55-65 s after the first frame {minute['rss_floor_55_65s_mib']} MiB, last 10 s "
                f"{minute['rss_floor_last_10s_mib']} MiB ({minute['growth_mib']:+} MiB)"
                if minute
                else ""
            )
        )
    if "accuracy_cm" in q:
        comp = ", ".join(f"{k.replace('_', ' ')} {v:.1%}" for k, v in q["completion"].items())
        lines.append(
            f"  mesh vs GT-pose TSDF of the same {q['reference_frames']} frames: accuracy median "
            f"{q['accuracy_cm']['median']} cm, p90 {q['accuracy_cm']['p90']} cm; completion {comp} "
            f"(node {q['node_mesh_triangles']} triangles, reference {q['reference_mesh_triangles']})"
        )
    else:
        lines.append(f"  mesh quality: {q.get('note')}")
    lines.append(
        f"  save_map: {result['save_map'].get('message')}; node exit code {w['node_exit_code']}, "
        f"tracebacks in its log {w['node_log_tracebacks']}"
    )
    return lines


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--rate", type=float, default=5.0, help="frames per second sent (the data is 15 Hz)")
    parser.add_argument("--frames", type=int, default=None, help="only the first N frames (a short run)")
    parser.add_argument("--loops", type=int, default=1, help="play the frames this many times (stamps go on)")
    parser.add_argument("--data", type=Path, default=DEFAULT_DATA)
    parser.add_argument(
        "--stamp-clock",
        choices=["sequence", "playback"],
        default="sequence",
        help="sequence: frame i at i/30 s (the original clock); playback: at the send times",
    )
    parser.add_argument("--quiet", type=float, default=15.0, help="s without a map output after which it is final")
    parser.add_argument("--tail-timeout", type=float, default=240.0)
    parser.add_argument("--save-timeout", type=float, default=120.0)
    parser.add_argument("--out", type=Path, default=None, help="JSON file (default output/bench_walk_<rate>hz.json)")
    parser.add_argument("--json", action="store_true", help="print the JSON on stdout instead of the summary")
    args = parser.parse_args()
    frames, color_k, depth_k = load_walk(args.data, args.frames)
    load_start = loadavg()
    export_ros_environment()
    rclpy.init()
    try:
        with tempfile.TemporaryDirectory() as workdir:
            walk = run_walk(args, frames, color_k, depth_k, Path(workdir))
            load_end = loadavg()
            log("comparing the node's mesh with a TSDF fused from the GT poses")
            quality = mesh_quality(walk.save.get("mesh_file"), frames, depth_k)
    finally:
        rclpy.try_shutdown()
    status = walk.statuses[-1] if walk.statuses else None
    duration = walk.send_times[-1] - walk.send_times[0]
    result = {
        "benchmark": "bench_walk (issue 20 item 5)",
        "command": " ".join([Path(sys.argv[0]).as_posix(), *sys.argv[1:]]),
        "date": time.strftime("%Y-%m-%d %H:%M:%S"),
        "machine": machine(),
        "load_average_start": load_start,
        "load_average_end": load_end,
        "data": str(args.data),
        "node_parameters": node_parameters(Path("<tmp>")),
        "walk": {
            "rate_hz": args.rate,
            "frames_sent": len(walk.send_times),
            "loops": args.loops,
            "stamp_clock": args.stamp_clock,
            "achieved_rate_hz": round((len(walk.send_times) - 1) / max(duration, 1e-9), 2),
            "walk_s": round(duration, 1),
            "node_frames_received": status.frames_received if status else None,
            "node_keyframes_left": status.num_keyframes if status else None,
            "node_frames_rejected": status.frames_rejected if status else None,
            "map_outputs": len(walk.arrivals),
            "distinct_map_stamps": len({a.stamp_ns for a in walk.arrivals}),
            "node_exit_code": walk.node_exit,
            "node_log_tracebacks": walk.node_log_tracebacks,
        },
        "map_lag_s": lag_numbers(walk),
        "waits": wait_numbers(walk),
        "tail": tail_numbers(walk),
        "node": resource_numbers(walk),
        "save_map": walk.save,
        "mesh_quality": quality,
    }
    out = args.out or REPO / "output" / f"bench_walk_{args.rate:g}hz.json"
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(result, indent=2) + "\n")
    log(f"written {out}")
    if args.json:
        print(json.dumps(result, indent=2))
    else:
        print("\n".join(summary_lines(result)))


if __name__ == "__main__":
    main()
