"""Node numbers of issue 2, measured on real processes.

    python benchmarks/bench_node.py            (inside `. scripts/env.sh`; `make bench` does that)

1. PointCloud2 build for 300k points as the node publishes it (conversions.points_to_cloud_serialized):
   median of the first 30 builds in a fresh process, and of the next 30 (steady state); beside it the
   message class (conversions.points_to_cloud).
2. CPU of the node process while it receives 30 Hz 640x480 rgb8 images that never become
   keyframes (the same image over and over: no motion), over 20 s.
3. Trigger -> mesh published for the 5 demo keyframes (the node's own measure, ~/status),
   with the per-stage seconds of the pipeline.
4. Publish path (issue 13 item 4): a 100k-triangle MarkerArray and a 300k-point PointCloud2 built as
   serialized CDR from numpy and published (a subscriber in another node), median of 20; beside it
   the old path through rclpy message classes (one Python object per vertex), median of 3.

    python benchmarks/bench_node.py --only publish      (section 4 alone: seconds, no node process)
    python benchmarks/bench_node.py --only idle         (section 2 alone: node CPU while ingesting)
"""

from __future__ import annotations

import argparse
import statistics
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

import numpy as np
import psutil
import rclpy
from rclpy.node import Node
from rclpy.qos import qos_profile_sensor_data
from sensor_msgs.msg import CameraInfo, Image
from std_msgs.msg import Header

from showroom_ros.geometry.camera import CameraIntrinsics
from showroom_ros.msg import ReconstructionStatus
from showroom_ros.ros import conversions as conv
from showroom_ros.ros.processes import NodeProcess, export_ros_environment, find_share_file, ros_environment

REPO = Path(__file__).resolve().parents[1]


def median_ms(action: Callable[[], object], count: int) -> float:
    """Median wall time of ``count`` calls of ``action``, in ms."""
    times = []
    for _ in range(count):
        started = time.perf_counter()
        action()
        times.append(time.perf_counter() - started)
    return statistics.median(times) * 1000


def bench_cloud_build(n: int = 300_000, repeats: int = 30, serialized: bool = True) -> tuple[float, float]:
    """Median ms of the first ``repeats`` builds in a fresh process, then of ``repeats`` more.

    ``serialized``: the CDR bytes the node publishes (``points_to_cloud_serialized``); else the message
    class (``points_to_cloud``, the reference the tests compare against).

    The first builds pay page faults for every 4.8 MB buffer until glibc's dynamic mmap threshold
    adapts; a node that keeps publishing runs at the second figure.
    """
    rng = np.random.default_rng(0)
    points = rng.normal(size=(n, 3)).astype(np.float32)
    colors = rng.integers(0, 256, (n, 3), dtype=np.uint8)
    header = Header(frame_id="map")
    build = conv.points_to_cloud_serialized if serialized else conv.points_to_cloud
    cold = median_ms(lambda: build(points, colors, header), repeats)
    return cold, median_ms(lambda: build(points, colors, header), repeats)


def bench_idle_cpu(seconds: float, workdir: Path, input_executor: str = "auto") -> tuple[float, int]:
    env = ros_environment()
    params = {
        "image_topics": ["/bench/image"],
        "camera_info_topics": ["/bench/info"],
        "depth_topics": ["/bench/depth"],
        "depth_info_topics": ["/bench/depth_info"],
        "pose_source": "none",
        "output_dir": str(workdir),
        "autosave": False,
        "model": "",  # no background model load (torch import) inside the measured window
        "input_executor": input_executor,
    }
    node = NodeProcess("showroom_node", params, workdir, find_share_file("config", "showroom.yaml"), env=env)
    client = Node("bench_publisher")
    image_pub = client.create_publisher(Image, "/bench/image", qos_profile_sensor_data)
    info_pub = client.create_publisher(CameraInfo, "/bench/info", qos_profile_sensor_data)
    depth_pub = client.create_publisher(Image, "/bench/depth", qos_profile_sensor_data)
    depth_info_pub = client.create_publisher(CameraInfo, "/bench/depth_info", qos_profile_sensor_data)
    statuses: list = []
    client.create_subscription(ReconstructionStatus, "/showroom/status", statuses.append, 10)
    rgb = np.random.default_rng(1).integers(0, 256, (480, 640, 3), dtype=np.uint8)
    header = Header(frame_id="camera")
    image = conv.rgb_to_image(rgb, header)
    info = conv.intrinsics_to_camera_info(CameraIntrinsics(525, 525, 320, 240, 640, 480), header)
    depth_mm = np.random.default_rng(2).integers(500, 4000, (480, 640)).astype(np.uint16)
    depth = Image(header=header, height=480, width=640, encoding="16UC1", step=1280, data=depth_mm.tobytes())
    depth_info = conv.intrinsics_to_camera_info(CameraIntrinsics(585, 585, 320, 240, 640, 480), header)
    deadline = time.monotonic() + 30
    while image_pub.get_subscription_count() == 0 and time.monotonic() < deadline:
        rclpy.spin_once(client, timeout_sec=0.1)
    process = psutil.Process(node.process.pid)
    time.sleep(2.0)  # let start-up finish before measuring
    cpu_before = process.cpu_times()
    started = time.monotonic()
    sent = 0
    while time.monotonic() - started < seconds:
        now = client.get_clock().now().to_msg()
        image.header.stamp = info.header.stamp = depth.header.stamp = depth_info.header.stamp = now
        info_pub.publish(info)
        depth_info_pub.publish(depth_info)
        depth_pub.publish(depth)
        image_pub.publish(image)
        sent += 1
        target = started + sent / 30.0
        while time.monotonic() < target:
            rclpy.spin_once(client, timeout_sec=max(0.0, target - time.monotonic()))
    wall = time.monotonic() - started
    cpu_after = process.cpu_times()
    used = (cpu_after.user - cpu_before.user) + (cpu_after.system - cpu_before.system)
    for _ in range(20):
        rclpy.spin_once(client, timeout_sec=0.1)
    received = statuses[-1].frames_received if statuses else 0
    client.destroy_node()
    node.stop()
    print(
        f"  sent {sent} images in {wall:.1f} s; node reports {received} received, "
        f"{statuses[-1].num_keyframes if statuses else '?'} keyframes"
    )
    return 100.0 * used / wall, received


def _sphere_mesh(triangles: int):
    """A coloured mesh with about ``triangles`` triangles (the size the node publishes to RViz)."""
    import open3d as o3d

    from showroom_ros.reconstruction.result import TriangleMesh

    resolution = int(np.sqrt(triangles / 2)) + 1
    sphere = o3d.geometry.TriangleMesh.create_sphere(radius=1.0, resolution=resolution)
    vertices = np.asarray(sphere.vertices, dtype=np.float32)
    faces = np.asarray(sphere.triangles, dtype=np.int32)[:triangles]
    colors = np.random.default_rng(0).integers(0, 256, (len(vertices), 3), dtype=np.uint8)
    return TriangleMesh(vertices=vertices, triangles=faces, vertex_colors=colors)


def bench_publish(repeats: int = 20) -> dict[str, float]:
    """Median ms to build + publish the mesh markers and the cloud, serialized vs message classes."""
    from sensor_msgs.msg import PointCloud2
    from visualization_msgs.msg import MarkerArray

    from showroom_ros.io.message_layout import DISPLAY_MAX_TRIANGLES

    mesh = _sphere_mesh(DISPLAY_MAX_TRIANGLES)
    rng = np.random.default_rng(0)
    points = rng.normal(size=(300_000, 3)).astype(np.float32)
    colors = rng.integers(0, 256, (300_000, 3), dtype=np.uint8)
    publisher_node, listener = Node("bench_publish"), Node("bench_listen")
    mesh_pub = publisher_node.create_publisher(MarkerArray, "/bench/mesh", 1)
    cloud_pub = publisher_node.create_publisher(PointCloud2, "/bench/cloud", 1)
    listener.create_subscription(MarkerArray, "/bench/mesh", lambda _: None, 1, raw=True)
    listener.create_subscription(PointCloud2, "/bench/cloud", lambda _: None, 1, raw=True)
    header = Header(frame_id="map")

    results = {
        "mesh serialized": median_ms(lambda: mesh_pub.publish(conv.mesh_to_markers_serialized(mesh, header)), repeats),
        "cloud serialized": median_ms(
            lambda: cloud_pub.publish(conv.points_to_cloud_serialized(points, colors, header)), repeats
        ),
        "mesh message classes": median_ms(lambda: mesh_pub.publish(conv.mesh_to_markers(mesh, header)), 3),
        "cloud message classes": median_ms(lambda: cloud_pub.publish(conv.points_to_cloud(points, colors, header)), 3),
    }
    results["triangles"] = float(len(mesh.triangles))
    publisher_node.destroy_node()
    listener.destroy_node()
    return results


def bench_cloud_parts(n: int = 300_000, repeats: int = 30) -> dict[str, float]:
    """Median ms of each step of the serialized cloud: fill the records, whole CDR, publish finished bytes."""
    from sensor_msgs.msg import PointCloud2

    from showroom_ros.io.message_layout import CLOUD_DTYPE, cloud_cdr, cloud_records

    rng = np.random.default_rng(0)
    points = rng.normal(size=(n, 3)).astype(np.float32)
    colors = rng.integers(0, 256, (n, 3), dtype=np.uint8)
    records = np.empty(n, CLOUD_DTYPE)
    publisher_node, listener = Node("bench_cloud_parts"), Node("bench_cloud_parts_listen")
    cloud_pub = publisher_node.create_publisher(PointCloud2, "/bench/cloud_parts", 1)
    listener.create_subscription(PointCloud2, "/bench/cloud_parts", lambda _: None, 1, raw=True)
    data = cloud_cdr(points, colors, 0, 0, "map")

    parts = {
        "fill records": median_ms(lambda: cloud_records(points, colors, out=records), repeats),
        "cloud_cdr (records + header + bytes)": median_ms(lambda: cloud_cdr(points, colors, 0, 0, "map"), repeats),
        "publish finished bytes": median_ms(lambda: cloud_pub.publish(data), repeats),
    }
    publisher_node.destroy_node()
    listener.destroy_node()
    return parts


def print_publish() -> None:
    parts = bench_cloud_parts()
    print("   300k-point cloud by step: " + ", ".join(f"{name} {ms:.2f} ms" for name, ms in parts.items()))
    r = bench_publish()
    print(
        f"4. publish, {int(r['triangles'])}-triangle MarkerArray built+published: {r['mesh serialized']:.1f} ms "
        f"serialized from numpy (message classes: {r['mesh message classes']:.0f} ms); 300k-point PointCloud2: "
        f"{r['cloud serialized']:.2f} ms serialized (message classes: {r['cloud message classes']:.1f} ms)"
    )


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--seconds", type=float, default=20.0)
    parser.add_argument("--only", choices=["publish", "idle"], help="run one section only")
    parser.add_argument(
        "--input-executor", default="auto", choices=["auto", "events", "single"], help="the node's input_executor"
    )
    args = parser.parse_args()
    export_ros_environment()
    if args.only == "publish":
        rclpy.init()
        print_publish()
        rclpy.try_shutdown()
        return
    if args.only == "idle":
        rclpy.init()
        with tempfile.TemporaryDirectory() as workdir:
            cpu, _ = bench_idle_cpu(args.seconds, Path(workdir), args.input_executor)
        print(
            f"node CPU at 30 Hz 640x480 RGB-D (+ both CameraInfos) without keyframes, input_executor "
            f"{args.input_executor}: {cpu:.1f} % of one core"
        )
        print(f"load average: {Path('/proc/loadavg').read_text().split()[:3]}")
        rclpy.try_shutdown()
        return
    cold, steady = bench_cloud_build()
    _, classes = bench_cloud_build(serialized=False)
    print(
        f"1. PointCloud2 build, 300k points, serialized (as published): {steady:.2f} ms steady state ({cold:.2f} ms "
        f"over the first 30 builds of a fresh process); through the message class: {classes:.2f} ms"
    )
    rclpy.init()
    with tempfile.TemporaryDirectory() as workdir:
        cpu, _ = bench_idle_cpu(args.seconds, Path(workdir), args.input_executor)
    print(f"2. node CPU at 30 Hz 640x480 RGB-D (+ both CameraInfos) without keyframes: {cpu:.1f} % of one core")
    print_publish()
    rclpy.try_shutdown()
    from showroom_ros.ros.demo import run_demo

    with tempfile.TemporaryDirectory() as out:
        print("3. trigger -> mesh published, 5 demo keyframes (demo run):")
        run_demo(Path(out), find_share_file("data", "redkitchen"))


if __name__ == "__main__":
    main()
