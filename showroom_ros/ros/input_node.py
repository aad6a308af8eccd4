"""The camera inputs of the ``showroom`` node, on their own node and single-threaded executor.

Why: rclpy's MultiThreadedExecutor rebuilds its wait set in Python on every wake-up and hands each
callback to a thread pool. At 30 Hz RGB-D (image, depth, two CameraInfos, a pose: ~150 messages/s)
that machinery cost more CPU than the callbacks themselves (py-spy on the idle node: 55 % of the
samples in ``wait_for_ready_callbacks``; the node took 44 % of a core without taking a keyframe). A
SingleThreadedExecutor over just the input subscriptions and the collector's poll timer does the
same work for about half (benchmarks/bench_node.py --only idle, docs/benchmarks.md), and the main
node's multi-threaded executor (services that wait on the worker, status) is woken rarely.
Where rclpy has it (Kilted and later), the C++ ``EventsExecutor`` halves that again: it dispatches each
message from a C++ event queue instead of rebuilding a wait set in Python per message.

Every callback registered here goes through the owner's guard, like the main node's.
"""

from __future__ import annotations

import threading
from collections.abc import Callable
from typing import Any

from rclpy.executors import Executor, ExternalShutdownException, SingleThreadedExecutor
from rclpy.node import Node

try:  # rclpy.experimental exists from Kilted on
    from rclpy.experimental import EventsExecutor
except ImportError:
    EventsExecutor = None

Guard = Callable[[str, str, Callable], Callable]
INPUT_EXECUTORS = ("auto", "events", "single")


def events_executor_available() -> bool:
    """Whether this rclpy ships the C++ EventsExecutor (rclpy.experimental, Kilted and later)."""
    return EventsExecutor is not None


def make_input_executor(kind: str, context: Any) -> Executor:
    """The executor for the camera inputs; ``events`` on an rclpy without it is a clear error."""
    if kind not in INPUT_EXECUTORS:
        raise ValueError(f"input_executor must be one of {INPUT_EXECUTORS}, got {kind!r}")
    if kind == "events" and EventsExecutor is None:
        raise RuntimeError(
            "input_executor: events needs rclpy's EventsExecutor (ROS 2 Kilted or later); "
            "use auto or single on this distribution"
        )
    if kind != "single" and EventsExecutor is not None:
        return EventsExecutor(context=context)
    return SingleThreadedExecutor(context=context)


class InputNode(Node):
    """A plain node whose subscriptions and timers are wrapped by ``guard`` (the owner's)."""

    def __init__(self, name: str, guard: Guard, **kwargs: Any) -> None:
        super().__init__(name, start_parameter_services=False, **kwargs)
        self._owner_guard = guard
        for service in self.services:  # what rclpy registered itself (the type-description service)
            service.callback = guard("service", service.srv_name, service.callback)

    def create_subscription(self, msg_type: Any, topic: str, callback: Callable, *args: Any, **kwargs: Any):
        return super().create_subscription(
            msg_type, topic, self._owner_guard("subscription", topic, callback), *args, **kwargs
        )

    def create_timer(self, timer_period_sec: float, callback: Callable, *args: Any, **kwargs: Any):
        name = getattr(callback, "__name__", "timer")

        def tick(*_timer_info: Any) -> Any:
            # The EventsExecutor passes a TimerInfo to every timer callback; the Python executors
            # only to callbacks that annotate a parameter with it. Ours take none.
            return callback()

        return super().create_timer(timer_period_sec, self._owner_guard("timer", name, tick), *args, **kwargs)


class InputSpinner:
    """Spins an :class:`InputNode` on a daemon thread until :meth:`stop` or the context shuts down."""

    def __init__(self, node: InputNode, executor: str = "auto") -> None:
        self.node = node
        self._executor = make_input_executor(executor, node.context)
        self.executor_name = type(self._executor).__name__
        self._executor.add_node(node)
        self._stopping = threading.Event()
        self._thread = threading.Thread(target=self._spin, name="showroom-input", daemon=True)

    def start(self) -> None:
        self._thread.start()

    def _spin(self) -> None:
        while not self._stopping.is_set() and self.node.context.ok():
            try:
                self._executor.spin_once(timeout_sec=0.1)
            except (ExternalShutdownException, KeyboardInterrupt):
                return
            except Exception:  # the context shut down under us (rclpy raises several kinds)
                if not self.node.context.ok() or self._stopping.is_set():
                    return
                raise

    def stop(self, timeout: float = 0.5) -> bool:
        """Stop spinning; True when the thread ended (then the node can be destroyed safely)."""
        self._stopping.set()
        if self._thread.is_alive():
            self._thread.join(timeout)
        finished = not self._thread.is_alive()
        self._executor.shutdown(timeout_sec=0)
        if finished:
            self.node.destroy_node()
        return finished
