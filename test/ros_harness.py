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


def call_service(node: Node, srv_type: Any, name: str, request: Any, timeout: float = 60.0) -> Any:
    client = node.create_client(srv_type, name)
    try:
        if not client.wait_for_service(timeout_sec=20.0):
            raise AssertionError(f"service {name} did not appear")
        future = client.call_async(request)
        if not spin_until(node, future.done, timeout):
            raise AssertionError(f"service {name} did not answer in {timeout} s")
        return future.result()
    finally:
        node.destroy_client(client)


def ros_init_for_tests() -> None:
    export_ros_environment()
    if not rclpy.ok():
        rclpy.init()
