"""Helpers for tests that run real ROS 2 nodes in their own processes.

Each test session gets its own ROS_DOMAIN_ID and localhost-only discovery, so parallel runs and
other ROS graphs on the machine never see each other.
"""

from __future__ import annotations

import os
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

from showroom_ros.ros.processes import NodeProcess, export_ros_environment, ros_environment  # noqa: F401

REPO_ROOT = Path(__file__).resolve().parents[1]

# Nodes started by tests never download model weights, whatever the network allows.
os.environ["HF_HUB_OFFLINE"] = "1"

try:  # the ROS layer needs rclpy and our generated interfaces (built by `make setup`)
    import rclpy
    from rclpy.node import Node
    from rclpy.qos import DurabilityPolicy, QoSProfile, ReliabilityPolicy

    from showroom_ros.msg import ReconstructionStatus  # noqa: F401

    ROS_AVAILABLE, ROS_MISSING = True, ""
except ImportError as error:  # pragma: no cover - depends on the environment
    ROS_AVAILABLE, ROS_MISSING = False, f"ROS 2 layer not importable ({error}); run `make setup` first"

requires_ros = pytest.mark.skipif(not ROS_AVAILABLE, reason=ROS_MISSING)

LATCHED_QOS = (
    QoSProfile(depth=1, reliability=ReliabilityPolicy.RELIABLE, durability=DurabilityPolicy.TRANSIENT_LOCAL)
    if ROS_AVAILABLE
    else None
)


def spin_until(node: Node, condition: Callable[[], bool], timeout: float) -> bool:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        rclpy.spin_once(node, timeout_sec=0.05)
        if condition():
            return True
    return condition()


def call_service(
    node: Node, srv_type: Any, name: str, request: Any, timeout: float = 60.0, resend_after: float | None = None
) -> Any:
    """Call and wait. ``resend_after`` (idempotent services only): send again after that many seconds of
    silence. The graph may still list the service of an earlier node of the same name that just stopped:
    a request sent to it is lost, and only a resend reaches the new one."""
    client = node.create_client(srv_type, name)
    try:
        if not client.wait_for_service(timeout_sec=20.0):
            raise AssertionError(f"service {name} did not appear")
        deadline = time.monotonic() + timeout
        while True:
            future = client.call_async(request)
            wait = (
                deadline - time.monotonic() if resend_after is None else min(resend_after, deadline - time.monotonic())
            )
            if spin_until(node, future.done, max(0.0, wait)):
                return future.result()
            if time.monotonic() >= deadline:
                raise AssertionError(f"service {name} did not answer in {timeout} s")
    finally:
        node.destroy_client(client)


def ros_init_for_tests() -> None:
    export_ros_environment()
    if not rclpy.ok():
        rclpy.init()


# --- seeded generators of hostile messages (conversion property tests, node fuzzing) ----------------

_WILD_FLOATS = (
    float("nan"),
    float("inf"),
    -float("inf"),
    0.0,
    -0.0,
    -1.0,
    1.0,
    1e308,
    -1e308,
    5e-324,
    1e-7,
    3.4e38,
    1e12,
)
_WILD_UINTS = (0, 1, 2, 3, 7, 48, 64, 480, 640, 65_535, 65_536, 65_537, 2**31 - 1, 2**31, 2**32 - 1)
_WILD_STRINGS = (
    "",
    " ",
    "/",
    "map",
    "odom",
    "camera_color_optical_frame",
    "/camera_color_optical_frame",
    "a" * 300,
    "\u00e9\u4e2d\U0001f600",
    "frame with spaces",
    "..",
    "\t\n",
)
WILD_ENCODINGS = (
    "rgb8",
    "bgr8",
    "rgba8",
    "bgra8",
    "mono8",
    "8UC1",
    "8UC3",
    "8UC4",
    "mono16",
    "16UC1",
    "32FC1",
    "yuv422",
    "uyvy",
    "yuyv",
    "yuv422_yuy2",
    "bayer_rggb8",
    "jpeg",
    "",
    " rgb8 ",
    "rgb16",
    "\u00e9",
)
MESSAGE_KINDS = ("image", "compressed", "depth", "compressed_depth", "info", "pose")


def wild_float(rng: Any, plausible: float = 1.0) -> float:
    """Half the time a hostile value (NaN, inf, huge, tiny, negative), else a plausible one."""
    if rng.random() < 0.5:
        return float(_WILD_FLOATS[rng.integers(len(_WILD_FLOATS))])
    return float(plausible * rng.uniform(-2.0, 2.0))


def wild_uint(rng: Any, plausible: int) -> int:
    return int(_WILD_UINTS[rng.integers(len(_WILD_UINTS))]) if rng.random() < 0.4 else plausible


def wild_string(rng: Any, plausible: str) -> str:
    if rng.random() < 0.4:
        return _WILD_STRINGS[rng.integers(len(_WILD_STRINGS))]
    return plausible


def wild_stamp(rng: Any, now_ns: int) -> Any:
    """Zero, past, future, random or now (callers publishing in sequence also get out-of-order)."""
    from builtin_interfaces.msg import Time

    choice = rng.integers(6)
    if choice == 0:
        return Time()
    if choice == 1:
        return Time(sec=int(rng.integers(-(2**31), 2**31)), nanosec=int(rng.integers(0, 2**32)))
    offset = {2: -(10**12), 3: 10**12, 4: int(rng.integers(-(10**9), 10**9)), 5: 0}[int(choice)]
    ns = max(0, now_ns + offset)
    return Time(sec=ns // 1_000_000_000 % 2**31, nanosec=ns % 1_000_000_000)


def _wild_header(rng: Any, now_ns: int, frame: str) -> Any:
    from std_msgs.msg import Header

    return Header(stamp=wild_stamp(rng, now_ns), frame_id=wild_string(rng, frame))


def _wild_bytes(rng: Any, length: int) -> bytes:
    import numpy as np

    return rng.integers(0, 256, max(0, length), dtype=np.uint8).tobytes()


def random_message(kind: str, rng: Any, now_ns: int = 0) -> Any:
    """A message of ``kind`` (see MESSAGE_KINDS) with any value in every field, drawn from ``rng``."""
    import struct

    import cv2
    import numpy as np
    from geometry_msgs.msg import PoseStamped
    from sensor_msgs.msg import CameraInfo, CompressedImage, Image

    frame = "camera_color_optical_frame"
    if kind in ("image", "depth"):
        height, width = int(rng.integers(1, 49)), int(rng.integers(1, 65))
        encoding = (
            WILD_ENCODINGS[rng.integers(len(WILD_ENCODINGS))]
            if rng.random() < 0.5
            else ("rgb8" if kind == "image" else ("16UC1", "32FC1")[rng.integers(2)])
        )
        bpp = {"16UC1": 2, "mono16": 2, "32FC1": 4, "rgb8": 3, "bgr8": 3}.get(encoding, int(rng.integers(1, 5)))
        step = wild_uint(rng, width * bpp)
        length = step * height if step * height < 1 << 16 else int(rng.integers(0, 1 << 12))
        length = length if rng.random() < 0.7 else int(rng.integers(0, length + 16))
        data = _wild_bytes(rng, length)
        if encoding == "32FC1" and rng.random() < 0.5 and length % 4 == 0:
            with np.errstate(over="ignore"):
                floats = np.array([wild_float(rng, 3.0) for _ in range(16)]).astype(np.float32)
            data = np.resize(floats, length // 4).astype("<f4").tobytes()
        return Image(
            header=_wild_header(rng, now_ns, frame),
            height=wild_uint(rng, height),
            width=wild_uint(rng, width),
            encoding=encoding,
            is_bigendian=int(rng.integers(0, 2)) if rng.random() < 0.9 else int(rng.integers(0, 256)),
            step=step,
            data=data,
        )
    if kind in ("compressed", "compressed_depth"):
        height, width = int(rng.integers(1, 33)), int(rng.integers(1, 33))
        variant = int(rng.integers(4))
        if variant == 0:
            data = _wild_bytes(rng, int(rng.integers(0, 300)))
        else:
            depth = kind == "compressed_depth"
            pixels = rng.integers(0, 65_535 if depth else 255, (height, width) if depth else (height, width, 3))
            pixels = pixels.astype(np.uint16 if depth else np.uint8)
            _, encoded = cv2.imencode(".png" if depth or variant == 1 else ".jpg", pixels)
            data = encoded.tobytes()
            if variant == 3:
                data = data[: int(rng.integers(0, len(data) + 1))]
            if depth and rng.random() < 0.8:
                with np.errstate(over="ignore"):  # huge doubles become float32 inf, as a sender's would
                    quant = np.array([wild_float(rng), wild_float(rng)]).astype("<f4")
                data = struct.pack("<i", int(rng.integers(-3, 3))) + quant.tobytes() + data
        formats = ("16UC1; compressedDepth png", "32FC1; compressedDepth png", "rgb8; jpeg compressed bgr8", "png", "")
        return CompressedImage(
            header=_wild_header(rng, now_ns, frame),
            format=wild_string(rng, formats[rng.integers(len(formats))]),
            data=data,
        )
    if kind == "info":
        k = [50.0, 0.0, 32.0, 0.0, 50.0, 24.0, 0.0, 0.0, 1.0]
        for index in rng.choice(9, size=int(rng.integers(0, 4)), replace=False):
            k[int(index)] = wild_float(rng, 100.0)
        return CameraInfo(
            header=_wild_header(rng, now_ns, frame),
            width=wild_uint(rng, 64),
            height=wild_uint(rng, 48),
            distortion_model=wild_string(rng, "plumb_bob"),
            d=[wild_float(rng, 0.1) if rng.random() < 0.2 else 0.0 for _ in range(int(rng.integers(0, 15)))],
            k=k,
            r=[wild_float(rng) if rng.random() < 0.1 else float(v) for v in np.eye(3).ravel()],
            p=[wild_float(rng, 50.0) if rng.random() < 0.1 else 0.0 for _ in range(12)],
        )
    if kind == "pose":
        msg = PoseStamped(header=_wild_header(rng, now_ns, "map"))
        p, q = msg.pose.position, msg.pose.orientation
        p.x, p.y, p.z = (wild_float(rng, 3.0) if rng.random() < 0.3 else float(rng.normal()) for _ in range(3))
        q.x, q.y, q.z, q.w = (wild_float(rng) if rng.random() < 0.3 else float(rng.normal()) for _ in range(4))
        return msg
    raise ValueError(f"unknown message kind {kind!r}")


# --- seeded generators of hostile service requests (service fuzzing) --------------------------------

WILD_NAMES = (
    "",
    " ",
    ".",
    "..",
    "../escape",
    "../../etc/passwd",
    "/tmp/absolute",
    "a/b",
    "a\\b",
    "name with spaces",
    "x" * 300,
    "ok_name",
    "map.v2",
    "-",
    "-rf",
    "~",
    "$HOME",
    "*",
    "\u00e9t\u00e9",
    "\n",
    "CON",
    "kitchen",
)
_WILD_INT32 = (-(2**31), -2, -1, 0, 1, 2, 4, 5, 100, 2**31 - 1)
_WILD_INT64 = (-(2**63), -1, 0, 1, 3, 2**32, 2**63 - 1)
_WILD_FLOAT32 = (float("nan"), float("inf"), -float("inf"), 0.0, -0.0, -1.0, 1.0, 7.5, 1e30, 3.4e38, -3.4e38)
WILD_BACKENDS = ("", "opencv", "diffusers", "dalle", " opencv", "OPENCV", "opencv\n")
SERVICE_KINDS = ("reconstruct", "reset", "save", "save_map", "load_map", "clear_map", "generate_views")


def _pick(rng: Any, values: tuple) -> Any:
    return values[int(rng.integers(len(values)))]


def _wild_float32(rng: Any, plausible: float) -> float:
    return float(_pick(rng, _WILD_FLOAT32)) if rng.random() < 0.5 else float(plausible * rng.uniform(-2.0, 2.0))


def random_request(kind: str, rng: Any) -> tuple[Any, Any]:
    """(service type, request) for one of the node's services, every field drawn from hostile values
    half of the time and plausible ones otherwise; types and bounds are those of the .srv files."""
    from std_srvs.srv import Trigger

    from showroom_ros.srv import GenerateViews, LoadMap, Reconstruct, SaveReconstruction

    if kind == "reconstruct":
        return Reconstruct, Reconstruct.Request()
    if kind in ("reset", "clear_map"):
        return Trigger, Trigger.Request()
    if kind in ("save", "save_map"):
        return SaveReconstruction, SaveReconstruction.Request(name=_pick(rng, WILD_NAMES))
    if kind == "load_map":
        return LoadMap, LoadMap.Request(name=_pick(rng, WILD_NAMES))
    assert kind == "generate_views", kind
    yaw_count = int(_pick(rng, (0, 0, 1, 2, 16, 17, 100)))
    request = GenerateViews.Request(
        keyframe_index=int(_pick(rng, _WILD_INT32)) if rng.random() < 0.5 else int(rng.integers(-1, 4)),
        yaw_degrees=[_wild_float32(rng, 30.0) for _ in range(yaw_count)],
        num_views=wild_uint(rng, int(rng.integers(0, 4))),
        prompt=wild_string(rng, "an empty room") if rng.random() < 0.9 else "wall " * 2000,
        negative_prompt=wild_string(rng, ""),
        steps=wild_uint(rng, int(rng.integers(0, 3))),
        guidance_scale=_wild_float32(rng, 7.5),
        seed=int(_pick(rng, _WILD_INT64)),
        backend=_pick(rng, WILD_BACKENDS),
        add_to_reconstruction=bool(rng.random() < 0.2),
    )
    return GenerateViews, request


# --- fixtures of the real-process test modules (registered by conftest.py; a module may define its own) --
@pytest.fixture(scope="module")
def client():
    """A client node in the test process (the outside user of the nodes under test)."""
    ros_init_for_tests()
    node = Node(f"showroom_test_client_{os.getpid()}")
    yield node
    node.destroy_node()
    rclpy.try_shutdown()


@pytest.fixture
def processes(tmp_path):
    """start(name, parameters, params_file=None) -> a NodeProcess, stopped (SIGINT) after the test."""
    started: list[NodeProcess] = []

    def start(name: str, parameters: dict, params_file: Path | None = None) -> NodeProcess:
        process = NodeProcess(name, parameters, tmp_path, params_file)
        started.append(process)
        return process

    yield start
    for process in started:
        process.stop()
