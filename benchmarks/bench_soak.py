"""Soak and fuzz-throughput numbers of issue 14, measured on real processes over real DDS.

    python -P benchmarks/bench_soak.py                  (inside `. scripts/env.sh`; 10 minutes + fuzz)
    python -P benchmarks/bench_soak.py --minutes 2      (a short check)
    python -P benchmarks/bench_soak.py --minutes 0      (fuzz throughput only)

1. Soak: `showroom_replay` publishes 30 Hz 640x480 RGB-D + both CameraInfos + poses of the 5 demo
   keyframes (each held for 2 s, looping), so the node's buffer fills and it reconstructs about every
   10 s, with the default parameters (autosave on, map on). Every second: the node's resident memory
   and CPU time. Per minute: the RSS floor (minimum; a single sample catches a reconstruction's peak),
   the output directory's size, frames offered (counted by a subscriber here) and received (the node's
   ~/status); minute 1 starts at the first published result. At the end: growth of the floor from
   minute 1 to the last, node CPU, tracebacks in its
   log, and whether it stopped cleanly in the middle of a reconstruction.
2. Fuzz throughput: a fresh node gets N generated hostile messages (test/ros_harness.random_message, every
   subscribed type, reliable QoS so none is lost on the way); messages/s = N over the time until its
   ~/status stops counting rejections.
"""

from __future__ import annotations

import argparse
import re
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import psutil
import rclpy
from rclpy.node import Node
from sensor_msgs.msg import Image

from showroom_ros.msg import ReconstructionStatus
from showroom_ros.ros.processes import NodeProcess, export_ros_environment, find_share_file
from showroom_ros.ros.replay_node import SHOWROOM_PARAMETERS_FOR_REPLAY

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO / "test"))


def _disk_bytes(folder: Path) -> int:
    return sum(p.stat().st_size for p in folder.rglob("*") if p.is_file()) if folder.exists() else 0


def _map_blocks(log_path: Path) -> int | None:
    """The robot map's block count in the node's latest "map: ..." log line (None before the first)."""
    counts = re.findall(r"map: .*?map (\d+) blocks", log_path.read_text(errors="replace")) if log_path.exists() else []
    return int(counts[-1]) if counts else None


def _spin_for(node: Node, seconds: float) -> None:
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        rclpy.spin_once(node, timeout_sec=max(0.0, min(0.05, deadline - time.monotonic())))


def soak(minutes: float, workdir: Path) -> None:
    out = workdir / "out"
    params = {**SHOWROOM_PARAMETERS_FOR_REPLAY, "output_dir": str(out), "build_mesh": True}
    node = NodeProcess("showroom_node", params, workdir, find_share_file("config", "showroom.yaml"))
    client = Node("soak_monitor")
    statuses: list = []
    offered = [0]
    client.create_subscription(ReconstructionStatus, "/showroom/status", statuses.append, 10)
    client.create_subscription(
        Image, "/camera/color/image_raw", lambda _: offered.__setitem__(0, offered[0] + 1), 10, raw=True
    )
    replay = NodeProcess(
        "showroom_replay",
        {"folder": str(find_share_file("data", "redkitchen")), "rate_hz": 30.0, "repeat_each": 60, "loop": True},
        workdir,
    )
    process = psutil.Process(node.process.pid)
    rows, samples, reconstructions, blocks = [], [], set(), []
    # Minute 1 starts after the first result (bounded: 90 s): start-up and imports are not growth.
    deadline = time.monotonic() + 90
    while time.monotonic() < deadline and not (statuses and statuses[-1].num_points > 0):
        _spin_for(client, 0.5)
    started = time.monotonic()
    cpu_start = process.cpu_times()
    try:
        for minute in range(1, int(np.ceil(minutes)) + 1):
            floor_samples = []
            minute_end = started + 60.0 * min(minute, minutes)
            while time.monotonic() < minute_end:
                _spin_for(client, 1.0)
                rss = process.memory_info().rss / 2**20
                floor_samples.append(rss)
                samples.append(rss)
                if statuses and statuses[-1].num_points > 0:
                    reconstructions.add((statuses[-1].num_points, round(statuses[-1].last_duration_s, 3)))
            received = statuses[-1].frames_received if statuses else 0
            disk = _disk_bytes(out) / 2**20
            rows.append((minute, min(floor_samples), max(floor_samples), disk, offered[0], received))
            blocks.append(_map_blocks(node.log_path))
            print(
                f"  minute {minute}: RSS floor {rows[-1][1]:.0f} MB (peak {rows[-1][2]:.0f}), output "
                f"{rows[-1][3]:.0f} MB, images offered {offered[0]}, received by the node {received}, "
                f"map blocks {blocks[-1]}",
                flush=True,
            )
        wall = time.monotonic() - started
        cpu_end = process.cpu_times()
        cpu = 100.0 * ((cpu_end.user - cpu_start.user) + (cpu_end.system - cpu_start.system)) / wall
        # Stop in the middle of a reconstruction when one runs (bounded wait for one to start).
        deadline = time.monotonic() + 30
        while time.monotonic() < deadline and not (statuses and statuses[-1].state == "reconstructing"):
            _spin_for(client, 0.1)
        mid = bool(statuses) and statuses[-1].state == "reconstructing"
    finally:
        replay.stop()
        node.stop()
        client.destroy_node()
    log = node.log_path.read_text(errors="replace")
    last = statuses[-1] if statuses else None
    print(f"1. soak, {minutes:g} min of 30 Hz 640x480 RGB-D + CameraInfo + poses:")
    print(
        f"   RSS floor minute 1 -> {rows[-1][0]}: {rows[0][1]:.0f} -> {rows[-1][1]:.0f} MB "
        f"(growth {rows[-1][1] - rows[0][1]:+.0f} MB; target <= 50 MB over 10 min); peak {max(samples):.0f} MB"
    )
    if blocks and blocks[0] and blocks[-1] is not None:
        print(
            f"   map blocks minute 1 -> {rows[-1][0]}: {blocks[0]} -> {blocks[-1]} "
            f"({100.0 * (blocks[-1] - blocks[0]) / blocks[0]:+.1f} %; target <= +5 % after the first loop)"
        )
    print(f"   output directory: {rows[-1][3]:.0f} MB at the end (per minute: {[round(r[3]) for r in rows]})")
    print(f"   node CPU: {cpu:.0f} % of one core on average")
    if last is not None:
        print(
            f"   images offered {offered[0]}, received by the node {last.frames_received}; keyframes now "
            f"{last.num_keyframes}, rejected {last.frames_rejected}; distinct results seen {len(reconstructions)}"
        )
    print(
        f"   tracebacks in the node log: {log.count('Traceback')}; stopped mid-reconstruction: {mid}; "
        f"exit code {node.process.returncode}"
    )


def fuzz_throughput(messages: int, workdir: Path, seed: int = 14) -> None:
    from geometry_msgs.msg import PoseStamped
    from rclpy.qos import QoSProfile, ReliabilityPolicy
    from ros_harness import random_message
    from sensor_msgs.msg import CameraInfo

    params = {**SHOWROOM_PARAMETERS_FOR_REPLAY, "output_dir": str(workdir / "fuzz"), "autosave": False,
              "build_mesh": False, "evaluation_rate_hz": 60.0}
    node = NodeProcess("showroom_node", params, workdir, find_share_file("config", "showroom.yaml"))
    client = Node("fuzz_throughput")
    statuses: list = []
    client.create_subscription(ReconstructionStatus, "/showroom/status", statuses.append, 10)
    qos = QoSProfile(depth=1000, reliability=ReliabilityPolicy.RELIABLE)
    publishers = [
        ("image", client.create_publisher(Image, "/camera/color/image_raw", qos)),
        ("depth", client.create_publisher(Image, "/camera/depth/image_raw", qos)),
        ("info", client.create_publisher(CameraInfo, "/camera/color/camera_info", qos)),
        ("info", client.create_publisher(CameraInfo, "/camera/depth/camera_info", qos)),
        ("pose", client.create_publisher(PoseStamped, "/camera/pose", qos)),
    ]
    try:
        deadline = time.monotonic() + 30
        while time.monotonic() < deadline and not all(p.get_subscription_count() for _, p in publishers):
            _spin_for(client, 0.1)
        rng = np.random.default_rng(seed)
        batch = [publishers[int(rng.integers(len(publishers)))] for _ in range(messages)]
        generated = [(pub, random_message(kind, rng, time.time_ns())) for kind, pub in batch]
        _spin_for(client, 2.0)
        before = statuses[-1].frames_rejected if statuses else 0
        started = time.monotonic()
        for pub, msg in generated:
            pub.publish(msg)
        published = time.monotonic() - started
        # Absorbed when the rejection count has not moved for 2 s.
        last_change, last_value = time.monotonic(), -1
        while time.monotonic() - last_change < 2.0 and time.monotonic() - started < 300:
            _spin_for(client, 0.2)
            value = statuses[-1].frames_rejected if statuses else 0
            if value != last_value:
                last_change, last_value = time.monotonic(), value
        absorbed = last_change - started
        alive = node.alive()
    finally:
        node.stop()
        client.destroy_node()
    log = node.log_path.read_text(errors="replace")
    tracebacks = log.count("Traceback")
    print(
        f"2. fuzz throughput: {messages} generated messages published in {published:.1f} s, absorbed by the node "
        f"in {absorbed:.1f} s = {messages / max(absorbed, 1e-9):.0f} messages/s ({last_value - before} rejections "
        f"counted); tracebacks in its log: {tracebacks}; alive until stopped: {'yes' if alive else 'NO'}"
    )
    if tracebacks:
        start = log.index("Traceback")
        print("   first traceback:\n" + log[max(0, start - 300) : start + 3000])


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--minutes", type=float, default=10.0)
    parser.add_argument("--fuzz-messages", type=int, default=5000)
    args = parser.parse_args()
    export_ros_environment()
    rclpy.init()
    with tempfile.TemporaryDirectory() as workdir:
        if args.minutes > 0:
            soak(args.minutes, Path(workdir))
        if args.fuzz_messages > 0:
            fuzz_throughput(args.fuzz_messages, Path(workdir))
    rclpy.try_shutdown()


if __name__ == "__main__":
    main()
