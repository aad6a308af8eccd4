"""The managed node (``lifecycle: true``) driven from another process, as ``ros2 lifecycle`` and nav2's
lifecycle_manager drive it: through ``~/change_state``, ``~/get_state`` and ``~/get_available_transitions``,
with camera frames flowing all the while (a looping replay in a third process).
"""

from __future__ import annotations

import signal
import time
from pathlib import Path

import pytest
from ros_harness import (
    LATCHED_QOS,
    REPO_ROOT,
    ROS_AVAILABLE,
    NodeProcess,
    call_service,
    requires_ros,
    spin_until,
)

pytestmark = requires_ros

if ROS_AVAILABLE:
    from showroom_ros.ros.replay_node import SHOWROOM_PARAMETERS_FOR_REPLAY
else:  # collected (and skipped) without ROS
    SHOWROOM_PARAMETERS_FOR_REPLAY = {}


CONFIG = REPO_ROOT / "config" / "showroom.yaml"


def _managed(processes, tmp_path: Path) -> NodeProcess:
    params = {**SHOWROOM_PARAMETERS_FOR_REPLAY, "output_dir": str(tmp_path / "out"), "lifecycle": True}
    return processes("showroom_node", {**params, "autosave": False, "idle_reconstruct_s": 1.0}, CONFIG)


def _replay(processes) -> NodeProcess:
    folder = str(REPO_ROOT / "data" / "redkitchen")
    return processes("showroom_replay", {"folder": folder, "rate_hz": 5.0, "repeat_each": 1, "loop": True}, CONFIG)


class Lifecycle:
    """A client of the node's lifecycle services (what ``ros2 lifecycle set/get/list`` calls)."""

    def __init__(self, client, node: NodeProcess, name: str = "/showroom") -> None:
        from lifecycle_msgs.srv import ChangeState, GetAvailableTransitions, GetState

        self.client, self.node = client, node
        self.change = client.create_client(ChangeState, f"{name}/change_state")
        self.get = client.create_client(GetState, f"{name}/get_state")
        self.transitions = client.create_client(GetAvailableTransitions, f"{name}/get_available_transitions")
        for service in (self.change, self.get, self.transitions):
            assert service.wait_for_service(timeout_sec=30.0), node.log()
        # The graph may still list the services of an earlier test's node of the same name: a request
        # sent before the new server matched is lost. An answered get_state proves the match.
        from lifecycle_msgs.srv import GetState

        deadline = time.monotonic() + 60.0
        while time.monotonic() < deadline:
            future = self.get.call_async(GetState.Request())
            if spin_until(self.client, future.done, 3.0):
                break
        else:
            raise AssertionError(f"get_state never answered\n{node.log()}")

    def _call(self, service, request, timeout: float = 60.0):
        future = service.call_async(request)
        assert spin_until(self.client, future.done, timeout), self.node.log()
        return future.result()

    def close(self) -> None:
        for service in (self.change, self.get, self.transitions):
            self.client.destroy_client(service)

    def state(self) -> str:
        from lifecycle_msgs.srv import GetState

        return self._call(self.get, GetState.Request()).current_state.label

    def set(self, label: str) -> bool:
        """Request a transition by label (configure, activate, deactivate, cleanup, shutdown)."""
        from lifecycle_msgs.msg import Transition
        from lifecycle_msgs.srv import ChangeState

        return self._call(self.change, ChangeState.Request(transition=Transition(label=label))).success

    def available(self) -> set[str]:
        from lifecycle_msgs.srv import GetAvailableTransitions

        answer = self._call(self.transitions, GetAvailableTransitions.Request())
        return {t.transition.label for t in answer.available_transitions}


class Counter:
    def __init__(self, client, msg_type, topic: str, qos) -> None:
        self.count, self.msg = 0, None
        self.sub = client.create_subscription(msg_type, topic, self._on, qos)

    def _on(self, msg) -> None:
        self.count, self.msg = self.count + 1, msg


def test_every_transition_from_another_process_with_frames_flowing(client, processes, tmp_path):
    from sensor_msgs.msg import PointCloud2
    from std_srvs.srv import Trigger

    from showroom_ros.msg import ReconstructionStatus

    node = _managed(processes, tmp_path)
    replay = _replay(processes)
    lifecycle = Lifecycle(client, node)
    status = Counter(client, ReconstructionStatus, "/showroom/status", LATCHED_QOS)
    cloud = Counter(client, PointCloud2, "/showroom/cloud", LATCHED_QOS)

    assert lifecycle.state() == "unconfigured"
    assert lifecycle.available() == {"configure", "shutdown"}
    assert spin_until(client, lambda: status.msg is not None and status.msg.state == "unconfigured", 20), node.log()
    # Invalid transitions are refused, not fatal.
    for label in ("activate", "deactivate", "cleanup", "no_such_transition"):
        assert lifecycle.set(label) is False
    assert node.alive() and lifecycle.state() == "unconfigured"

    assert lifecycle.set("configure") and lifecycle.state() == "inactive"
    assert lifecycle.available() >= {"activate", "cleanup", "shutdown"}
    refused = call_service(client, Trigger, "/showroom/reset", Trigger.Request(), timeout=30)
    assert not refused.success and "inactive" in refused.message, refused.message
    spin_until(client, lambda: False, 3.0)  # frames flow; an inactive node takes none and publishes nothing
    assert cloud.count == 0 and status.msg.frames_received == 0, status.msg

    assert lifecycle.set("activate") and lifecycle.state() == "active"
    assert spin_until(client, lambda: cloud.count > 0 and cloud.msg.width > 0, 120), node.log()
    assert status.msg.state in ("collecting", "reconstructing"), status.msg

    assert lifecycle.set("deactivate") and lifecycle.state() == "inactive"
    spin_until(client, lambda: False, 1.0)  # what was already on the way
    clouds, received = cloud.count, status.msg.frames_received
    spin_until(client, lambda: False, 4.0)
    assert cloud.count == clouds, "a deactivated node published ~/cloud"
    assert status.msg.frames_received == received and status.msg.state == "inactive", status.msg

    assert lifecycle.set("activate")  # inputs come back on a new input node
    assert spin_until(client, lambda: status.msg.frames_received > received, 30), status.msg
    assert lifecycle.set("deactivate") and lifecycle.set("cleanup") and lifecycle.state() == "unconfigured"
    assert lifecycle.set("configure") and lifecycle.state() == "inactive"  # again, from scratch
    assert lifecycle.set("shutdown") and lifecycle.state() == "finalized"
    assert node.alive() and replay.alive()
    assert "Traceback" not in node.log(), node.log()
    lifecycle.close()


def test_a_failed_configure_says_why_and_stays_unconfigured(client, processes, tmp_path):
    """Parameters are checked at configure: a bad combination fails the transition, the node lives on."""
    params = {**SHOWROOM_PARAMETERS_FOR_REPLAY, "output_dir": str(tmp_path / "out"), "lifecycle": True}
    node = processes("showroom_node", {**params, "pose_source": "topic", "pose_topics": ["/a", "/b"]}, CONFIG)
    lifecycle = Lifecycle(client, node)
    assert lifecycle.set("configure") is False
    assert lifecycle.state() == "unconfigured" and node.alive()
    assert spin_until(client, lambda: "pose_topics has 2 entries" in node.log(), 10), node.log()
    lifecycle.close()


@pytest.mark.parametrize("target", ["unconfigured", "inactive", "active", "finalized"])
@pytest.mark.parametrize("signum", [signal.SIGINT, signal.SIGTERM], ids=["SIGINT", "SIGTERM"])
def test_a_signal_in_every_lifecycle_state_exits_0_within_2_s(client, processes, tmp_path, target, signum):
    node = _managed(processes, tmp_path)
    _replay(processes)
    lifecycle = Lifecycle(client, node)
    path = {"unconfigured": [], "inactive": ["configure"], "active": ["configure", "activate"]}
    for label in path.get(target, ["configure", "activate", "shutdown"]):
        assert lifecycle.set(label), node.log()
    assert lifecycle.state() == target
    lifecycle.close()
    if target == "active":
        spin_until(client, lambda: False, 1.0)  # frames are being taken
    code, elapsed = node.signal_and_wait(signum)
    assert code == 0 and elapsed < 2.0, f"exit {code} after {elapsed:.2f} s\n{node.log()}"
