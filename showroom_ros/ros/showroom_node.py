"""ROS 2 node ``showroom``: camera topics in, point cloud + mesh + robot map out (docs/node.md).

The node is wiring and lifecycle only; each job is a part in its own file:

======================  =================================================================
ros/settings.py         parameters -> the core's config objects (free of rclpy)
ros/guard.py            one guard for every callback (count, say, go on)
ros/camera_inputs.py    colour / depth / CameraInfo subscriptions -> the keyframe collector
ros/pose_sources.py     camera poses from a topic, TF or nowhere, behind one ``lookup``
ros/slam_tracking.py    pose_source slam: the node's own tracking thread, ~/trajectory
ros/scheduler.py        the worker thread: windows, the generation, map jobs, and the state
ros/reconstruction_jobs.py  what runs on the worker: reconstruct a window, generate views
ros/result_outputs.py   ~/cloud, ~/mesh, ~/keyframes, viewer, autosave
ros/robot_mapping.py    the robot map and its save/load/clear (outputs: ros/map_outputs.py)
ros/window_trigger.py   when a window starts (buffer full, photos then silence)
ros/services.py         the seven services
ros/status.py           ~/status and /diagnostics
ros/parts.py            builds all of the above from the settings
======================  =================================================================

It is a managed (lifecycle) node. With ``lifecycle: false`` (the default) it configures and activates
itself at start, like a plain node; with ``lifecycle: true`` it waits in ``unconfigured`` for
``~/change_state`` (``ros2 lifecycle``, nav2's lifecycle_manager, or the launch file's autostart).
"""

from __future__ import annotations

import sys
import traceback
from collections.abc import Callable
from pathlib import Path
from typing import Any

from rcl_interfaces.msg import SetParametersResult
from rclpy.callback_groups import ReentrantCallbackGroup
from rclpy.lifecycle import LifecycleNode, LifecycleState, TransitionCallbackReturn

from showroom_ros.ros.entry import release_free_heap, remove_own_temporaries, run_node
from showroom_ros.ros.guard import CallbackGuard
from showroom_ros.ros.input_node import InputNode, InputSpinner
from showroom_ros.ros.parameters import SHOWROOM_PARAMETERS, check_parameter, declare_parameters
from showroom_ros.ros.parts import NodeParts, build_parts
from showroom_ros.ros.settings import SettingsError, apply_runtime_change, node_settings
from showroom_ros.ros.status import StatusReporter

SUCCESS, FAILURE = TransitionCallbackReturn.SUCCESS, TransitionCallbackReturn.FAILURE
DEACTIVATE_WAIT_S = 1.0
"""How long deactivation waits for the running job before abandoning it (its outputs are then dropped)."""


class ShowroomNode(LifecycleNode):
    def __init__(self, **kwargs: Any) -> None:
        # Before the node exists: Node.__init__ already registers (guarded) parameter services.
        self.guard = CallbackGuard(lambda: self.get_logger())
        super().__init__("showroom", **kwargs)
        self.params = declare_parameters(self, SHOWROOM_PARAMETERS)
        self.parts: NodeParts | None = None
        self.lifecycle_state = "unconfigured"
        self._configure_error = ""
        self._spinner: InputSpinner | None = None
        self.output_dir = Path(self.params["output_dir"]).expanduser().resolve()
        self._group = ReentrantCallbackGroup()
        self.status = StatusReporter(self, self.params, self.output_dir, self._why_inactive)
        self.create_timer(1.0 / self.params["status_rate_hz"], self.publish_status, callback_group=self._group)
        self.add_on_set_parameters_callback(self._on_set_parameters)
        self.guard.wrap_existing(self)  # rclpy's own services (type description, lifecycle)
        self.publish_status()
        if not self.params["lifecycle"]:
            if self.trigger_configure() != SUCCESS:
                raise SettingsError(self._configure_error)
            self.trigger_activate()

    # --- one guard for every callback: registered through these overrides, none can forget it --------
    def create_subscription(self, msg_type: Any, topic: str, callback: Callable, *args: Any, **kwargs: Any):
        guarded = self.guard.wrap("subscription", topic, callback)
        return super().create_subscription(msg_type, topic, guarded, *args, **kwargs)

    def create_service(self, srv_type: Any, srv_name: str, callback: Callable, *args: Any, **kwargs: Any):
        guarded = self.guard.wrap("service", srv_name, callback)
        return super().create_service(srv_type, srv_name, guarded, *args, **kwargs)

    def create_timer(self, timer_period_sec: float, callback: Callable, *args: Any, **kwargs: Any):
        guarded = self.guard.wrap("timer", getattr(callback, "__name__", "timer"), callback)
        return super().create_timer(timer_period_sec, guarded, *args, **kwargs)

    def add_on_set_parameters_callback(self, callback: Callable) -> Any:
        return super().add_on_set_parameters_callback(self.guard.wrap("parameters", "set_parameters", callback))

    # --- lifecycle ----------------------------------------------------------------------------------
    def on_configure(self, state: LifecycleState) -> TransitionCallbackReturn:
        """Check the parameters together and build every part; learned models begin loading."""
        try:
            settings = node_settings(self.params)
            self.output_dir = settings.output_dir
            self.parts = build_parts(
                self, settings, self._group, self.publish_status, self._why_inactive, self._tf_failed
            )
        except Exception as error:  # rclpy would swallow it silently: say why, and stay unconfigured
            if not isinstance(error, (SettingsError, RuntimeError, OSError)):
                self.get_logger().error(traceback.format_exc())
            self._configure_error = str(error)
            self.get_logger().error(f"configure failed: {error}")
            self._free()
            return FAILURE
        self.status.inputs = self.parts.status_inputs(self.guard)
        self.lifecycle_state = "inactive"
        self.publish_status()
        return SUCCESS

    def on_activate(self, state: LifecycleState) -> TransitionCallbackReturn:
        """Publishers deliver, services serve, camera inputs spin on their own (new) input node."""
        parts = self.parts
        assert parts is not None
        input_node = InputNode(
            f"{self.get_name()}_input",
            self.guard.wrap,
            namespace=self.get_namespace(),
            context=self.context,
            use_global_arguments=False,  # a launch file's __node:= rename would give it the main node's name
            enable_rosout=False,
        )
        parts.inputs.attach(input_node)
        parts.poses.attach(input_node)
        input_node.create_timer(0.1, parts.trigger.poll)
        try:
            self._spinner = InputSpinner(input_node, self.params["input_executor"])
        except RuntimeError as error:
            self.get_logger().warning(f"{error}; spinning the camera inputs with SingleThreadedExecutor")
            self._spinner = InputSpinner(input_node, "single")
        self._spinner.start()
        result = super().on_activate(state)
        problem = parts.jobs.outputs.start_viewer() if self.params["viewer"] else ""
        if problem:
            self.get_logger().error(problem)
            parts.scheduler.set(state="error", message=problem)
        self.lifecycle_state = "active"
        topics = parts.settings.topics
        self.get_logger().info(
            f"showroom active: {len(topics.images)} camera(s), depth={'yes' if topics.depth else 'no'}, poses from "
            f"{self.params['pose_source']}, backend {self.params['backend']}, camera inputs spun by "
            f"{self._spinner.executor_name}, output_dir {self.output_dir}"
        )
        self.publish_status()
        return result

    def on_deactivate(self, state: LifecycleState) -> TransitionCallbackReturn:
        """Inputs stop; queued work is cancelled, running work finishes or is abandoned; the map is kept."""
        assert self.parts is not None
        self.lifecycle_state = "inactive"
        self._stop_inputs()
        if not self.parts.scheduler.quiesce(DEACTIVATE_WAIT_S):
            self.get_logger().warning("deactivated while a job still runs: it finishes unseen (outputs are off)")
        self.parts.jobs.outputs.stop_viewer()
        self.parts.scheduler.set(state="collecting", message="inactive: activate to take frames again")
        result = super().on_deactivate(state)
        self.publish_status()
        return result

    def on_cleanup(self, state: LifecycleState) -> TransitionCallbackReturn:
        """Buffers, map and models freed; back to unconfigured."""
        self._free()
        self.publish_status()
        return SUCCESS

    def on_shutdown(self, state: LifecycleState) -> TransitionCallbackReturn:
        if self.lifecycle_state == "active":
            self.on_deactivate(state)
        self._free()
        self.lifecycle_state = "finalized"
        self.publish_status()
        return SUCCESS

    def on_error(self, state: LifecycleState) -> TransitionCallbackReturn:
        self.get_logger().error(f"a lifecycle transition from '{state.label}' failed; cleaning up")
        self._free()
        return SUCCESS

    def _free(self) -> None:
        """Drop every part: services, lifecycle publishers, the worker, buffers and the map."""
        self._stop_inputs()
        self.status.inputs = None
        parts, self.parts = self.parts, None
        self.lifecycle_state = "unconfigured"
        if parts is not None:
            parts.scheduler.shutdown()
            parts.jobs.outputs.close()
            for service in parts.services.services:
                self.destroy_service(service)
            if parts.slam is not None:
                parts.slam.stop()
            parts.mapping.free()
        for entity in list(self._managed_entities):
            self.destroy_lifecycle_publisher(entity)
        release_free_heap()

    def _stop_inputs(self) -> None:
        if self._spinner is not None:
            self._spinner.stop()
            self._spinner = None

    @property
    def input_node(self) -> InputNode | None:
        """The camera-input node while active (a new one at every activation)."""
        return self._spinner.node if self._spinner is not None else None

    def _why_inactive(self) -> str:
        if self.lifecycle_state == "active":
            return ""
        return f"{self.lifecycle_state}: the node is {self.lifecycle_state}; activate it (~/change_state) to serve"

    # --- parameters and status -----------------------------------------------------------------------
    def _on_set_parameters(self, parameters: list) -> SetParametersResult:
        """Refuse wrong types, out-of-range values and read-only names with a reason; apply the rest."""
        changes = {}
        for parameter in parameters:
            error = check_parameter(parameter.name, parameter.value)
            if error:
                return SetParametersResult(successful=False, reason=error)
            changes[parameter.name] = parameter.value
        if not hasattr(self, "params"):
            return SetParametersResult(successful=True)  # declaration, checked by declare_parameters
        self.params.update(changes)
        if self.parts is not None:
            for name, value in changes.items():
                apply_runtime_change(self.parts.settings.collector, name, value)
        if changes:
            self.get_logger().info("parameters changed: " + ", ".join(f"{k}={v!r}" for k, v in changes.items()))
        return SetParametersResult(successful=True)

    def _tf_failed(self, key: str, message: str) -> None:
        """tf2's own reason, once per kind every 5 s at warning, every time at debug."""
        if self.parts is not None:
            self.parts.counters.note(message)
        (self.get_logger().warning if self.guard.report_due(key) else self.get_logger().debug)(message)

    def publish_status(self) -> None:
        parts = self.parts
        if parts is not None:
            parts.models.check()
        self.status.publish()

    def destroy_node(self) -> None:
        """Stop at once (docs/shutdown.md): queued work is cancelled, running work (a model download, a
        reconstruction, a generation, a save) is abandoned, and an unfinished save's temporaries are
        removed; ``run_node`` then ends the process without joining those threads."""
        _abandon(self)
        super().destroy_node()


def _abandon(node: ShowroomNode) -> None:
    """Last clean-up when a service callback (a save) may still run at shutdown: no rcl handle is
    destroyed under it; queued work is cancelled and unfinished temporaries are removed."""
    spinner, parts = getattr(node, "_spinner", None), getattr(node, "parts", None)
    if spinner is not None:
        spinner.stop(timeout=0.2)
    if parts is not None:
        parts.jobs.outputs.close()
        parts.scheduler.shutdown()
        parts.mapping.stop(timeout_s=0.0)  # queued map work is cancelled; running work is abandoned
        if parts.slam is not None:
            parts.slam.stop(timeout_s=0.0)  # a frame being tracked is abandoned (a daemon thread)
    if getattr(node, "output_dir", None) is not None:
        remove_own_temporaries(node.output_dir)


def main(args: list[str] | None = None) -> int:
    # Three threads for services waiting on the worker, transitions and the status timer; camera inputs
    # have their own.
    return run_node(ShowroomNode, "showroom", args, threads=3, abandon=_abandon)


if __name__ == "__main__":
    sys.exit(main())
