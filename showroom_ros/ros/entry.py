"""The one way the package's executables start, spin and stop a node.

A bad parameter or input file ends the process with exit status 2 and one line on stderr (no
traceback); Ctrl-C and `ros2 launch` shutdown end it cleanly with status 0.
"""

from __future__ import annotations

import sys
import time
from collections.abc import Callable

import rclpy
from rclpy.exceptions import ParameterException
from rclpy.executors import Executor, ExternalShutdownException, MultiThreadedExecutor, SingleThreadedExecutor
from rclpy.node import Node


def run_node(
    make_node: Callable[[], Node],
    program: str,
    args: list[str] | None = None,
    threads: int = 1,
    finished: Callable[[Node], bool] | None = None,
    linger_s: float = 1.0,
) -> int:
    """Spin ``make_node()`` until shutdown, or until ``finished(node)`` (then ``linger_s`` more, so
    late subscribers still get the last messages)."""
    rclpy.init(args=args if args is not None else sys.argv)
    try:
        node = make_node()
    except (ValueError, OSError, ParameterException) as error:
        print(f"{program}: configuration error: {error}", file=sys.stderr)
        rclpy.try_shutdown()
        return 2
    executor: Executor = MultiThreadedExecutor(num_threads=threads) if threads > 1 else SingleThreadedExecutor()
    executor.add_node(node)
    try:
        if finished is None:
            executor.spin()
        else:
            while rclpy.ok() and not finished(node):
                executor.spin_once(timeout_sec=0.1)
            deadline = time.monotonic() + linger_s
            while rclpy.ok() and time.monotonic() < deadline:
                executor.spin_once(timeout_sec=0.1)
    except (KeyboardInterrupt, ExternalShutdownException):
        pass
    finally:
        executor.shutdown()
        node.destroy_node()
        rclpy.try_shutdown()
    return 0
