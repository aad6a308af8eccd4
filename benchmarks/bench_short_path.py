"""The short path of issue 20: from the last of 5 RGB-D photos to ``~/mesh``, through the real node.

    python -P benchmarks/bench_short_path.py            (inside `. scripts/env.sh`; about 2 minutes)

The 5 bundled redkitchen keyframes (data/redkitchen: colour, 16-bit depth, both CameraInfos, GT poses)
are sent as a camera would send 5 photos, 0.4 s apart, to ``showroom_node`` (``backend: rgbd``,
``pose_source: topic``, every other parameter at its default). The clock starts when the 5th photo is
sent and stops when a ``~/mesh`` arrives whose stamp is that photo's (the node stamps every output with
the newest camera frame it includes). Three rounds at 640x480 and three at 540x360 (the same photos
resized, intrinsics scaled), each after ``~/reset``; then 3 photos and silence, which the node
reconstructs after ``idle_reconstruct_s`` (the target: within ``idle_reconstruct_s`` + 2 s).
"""

from __future__ import annotations

import os
import statistics
import sys
import tempfile
import threading
import time
from pathlib import Path

import cv2
import numpy as np
import rclpy
from rclpy.executors import SingleThreadedExecutor
from std_srvs.srv import Trigger
from visualization_msgs.msg import MarkerArray

sys.path.insert(0, str(Path(__file__).resolve().parent))
from bench_walk import NODE, WalkClient, node_parameters

from showroom_ros.io.datasets import load_frame_folder
from showroom_ros.ros import conversions as conv
from showroom_ros.ros.processes import NodeProcess, export_ros_environment, find_share_file

IDLE_RECONSTRUCT_S = 5.0  # the parameter's default (ros/parameters.py)


class ShortPathClient(WalkClient):
    """The walk's camera and client, plus the arrival time of every ``~/mesh`` by its stamp."""

    def __init__(self) -> None:
        super().__init__()
        self.meshes: dict[int, float] = {}
        qos = rclpy.qos.QoSProfile(depth=10, reliability=rclpy.qos.ReliabilityPolicy.RELIABLE)
        self.create_subscription(MarkerArray, f"{NODE}/mesh", self._on_mesh, qos, raw=True)

    def _on_mesh(self, data: bytes) -> None:
        stamp = conv.serialized_marker_array_stamp_ns(data)
        if stamp is not None:
            with self.lock:
                self.meshes.setdefault(stamp, time.monotonic())

    def reset(self) -> None:
        client = self.create_client(Trigger, f"{NODE}/reset")
        client.wait_for_service(timeout_sec=20.0)
        future = client.call_async(Trigger.Request())
        deadline = time.monotonic() + 60
        while not future.done() and time.monotonic() < deadline:
            time.sleep(0.05)
        self.destroy_client(client)


def photos(width: int, height: int) -> list[tuple]:
    """(rgb, depth mm, pose, colour K, depth K) of the 5 bundled keyframes at ``width`` x ``height``."""
    out = []
    for keyframe in load_frame_folder(find_share_file("data", "redkitchen")):
        depth_k = keyframe.depth_intrinsics or keyframe.intrinsics
        rgb = keyframe.image
        depth = np.nan_to_num(keyframe.depth, nan=0.0)
        color_k = keyframe.intrinsics
        if (width, height) != (rgb.shape[1], rgb.shape[0]):
            rgb = cv2.resize(rgb, (width, height), interpolation=cv2.INTER_AREA)
            color_k = color_k.scaled(width, height)
            dh, dw = round(depth.shape[0] * height / keyframe.height), round(depth.shape[1] * width / keyframe.width)
            depth = cv2.resize(depth, (dw, dh), interpolation=cv2.INTER_NEAREST)
            depth_k = depth_k.scaled(dw, dh)
        depth_mm = np.clip(depth * 1000.0, 0, 65535).astype(np.uint16)
        out.append((rgb, depth_mm, keyframe.pose, color_k, depth_k))
    return out


def send(client: ShortPathClient, shots: list[tuple], gap_s: float = 0.4) -> tuple[int, float]:
    """Send the photos ``gap_s`` apart (each twice, 0.05 s apart: best-effort transport may lose one);
    return the last one's stamp and send time."""
    stamp, first_send = 0, 0.0
    for index, (rgb, depth, pose, color_k, depth_k) in enumerate(shots):
        stamp = time.time_ns()
        for copy in range(2):
            sent = client.publish_frame(rgb, depth, pose, stamp, color_k, depth_k)
            first_send = sent if copy == 0 else first_send
            time.sleep(0.05)
        if index < len(shots) - 1:
            time.sleep(gap_s)
    return stamp, first_send


def wait_mesh(client: ShortPathClient, stamp: int, timeout: float) -> float | None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        with client.lock:
            if stamp in client.meshes:
                return client.meshes[stamp]
        time.sleep(0.02)
    return None


def main() -> int:
    export_ros_environment()
    rclpy.init()
    workdir = Path(tempfile.mkdtemp(prefix="bench_short_path_"))
    node = NodeProcess(
        "showroom_node", node_parameters(workdir / "out"), workdir, find_share_file("config", "showroom.yaml")
    )
    client = ShortPathClient()
    executor = SingleThreadedExecutor()
    executor.add_node(client)
    spinner = threading.Thread(target=executor.spin, daemon=True)
    spinner.start()
    print(f"load average {os.getloadavg()}")
    results: dict[str, list[float]] = {}
    try:
        deadline = time.monotonic() + 60
        while not client.connected() and time.monotonic() < deadline:
            time.sleep(0.1)
        time.sleep(1.0)
        for width, height in ((640, 480), (540, 360)):
            shots = photos(width, height)
            for round_ in range(3):
                client.reset()
                time.sleep(1.0)
                stamp, sent = send(client, shots)
                arrived = wait_mesh(client, stamp, 60)
                seconds = float("nan") if arrived is None else arrived - sent
                results.setdefault(f"5 photos {width}x{height}", []).append(seconds)
                print(f"{width}x{height} round {round_ + 1}: last photo -> ~/mesh {seconds:.2f} s")
                time.sleep(2.0)
        shots = photos(640, 480)[:3]
        for round_ in range(2):
            client.reset()
            time.sleep(1.0)
            stamp, sent = send(client, shots)
            arrived = wait_mesh(client, stamp, IDLE_RECONSTRUCT_S + 60)
            seconds = float("nan") if arrived is None else arrived - sent
            results.setdefault("3 photos then silence 640x480", []).append(seconds)
            print(f"3 photos then silence, round {round_ + 1}: last photo -> ~/mesh {seconds:.2f} s")
            time.sleep(2.0)
    finally:
        node.stop()
        executor.shutdown()
        spinner.join(5)  # a daemon thread still inside rclpy at exit aborts the process
        client.destroy_node()
        rclpy.try_shutdown()
    print(f"load average {os.getloadavg()}")
    print("| case | last photo -> ~/mesh (s), each round | median | target |")
    print("|---|---|---|---|")
    for case, values in results.items():
        target = f"<= {IDLE_RECONSTRUCT_S + 2:g} s" if "silence" in case else "<= 2 s"
        rounds = ", ".join(f"{v:.2f}" for v in values)
        print(f"| {case} | {rounds} | {statistics.median(values):.2f} | {target} |")
    return 0


if __name__ == "__main__":
    sys.exit(main())
