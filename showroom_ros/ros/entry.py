"""The one way the package's executables start, spin and stop a node.

A bad parameter or input file ends the process with exit status 2 and one line on stderr (no
traceback); Ctrl-C, SIGTERM and `ros2 launch` shutdown end it with status 0 within about a second, in
every state (docs/shutdown.md): work still running in background threads (a model download, a
reconstruction, a save) is abandoned, not waited for.
"""

from __future__ import annotations

import contextlib
import ctypes
import functools
import importlib
import os
import signal
import sys
import threading
import time
from collections.abc import Callable
from pathlib import Path
from typing import NoReturn

import rclpy
import rclpy.logging
from rclpy.exceptions import ParameterException
from rclpy.executors import Executor, ExternalShutdownException, MultiThreadedExecutor, SingleThreadedExecutor
from rclpy.node import Node

from showroom_ros.io.export import close_temporaries_for_exit
from showroom_ros.io.scratch import hand_scratch_to_cleaner

#: Native modules that install process-wide signal handlers when first imported (pycolmap: glog's
#: failure handler, which prints a stack dump on SIGTERM). Imported up front, in the main thread.
NATIVE_HANDLER_MODULES = ("pycolmap",)
#: How long shutdown waits for running callbacks (a service mid-save) before abandoning them.
CALLBACK_GRACE_S = 0.3


def quiet_native_signal_handlers(modules: tuple[str, ...] = NATIVE_HANDLER_MODULES) -> None:
    """Import ``modules`` now, then give SIGINT/SIGTERM back to Python and rclpy.

    glog (inside pycolmap) replaces the SIGTERM handler on import with one that prints
    "*** Aborted at ... SIGTERM received" and a native stack. Importing it here, before
    ``rclpy.init`` and in the main thread (``signal.signal`` works only there), makes a later lazy
    import elsewhere a no-op, and the handlers restored here are the ones rclpy chains to.
    """
    for name in modules:
        with contextlib.suppress(ImportError):
            importlib.import_module(name)
    if threading.current_thread() is threading.main_thread():
        signal.signal(signal.SIGINT, signal.default_int_handler)
        signal.signal(signal.SIGTERM, signal.SIG_DFL)


@functools.cache
def _glibc() -> ctypes.CDLL | None:
    try:
        libc = ctypes.CDLL("libc.so.6")
        return libc if hasattr(libc, "malloc_trim") else None
    except OSError:  # not glibc (musl, macOS): nothing to trim
        return None


#: glibc mallopt parameters (malloc.h): at most this many arenas, and a fixed mmap threshold.
_M_MMAP_THRESHOLD, _M_ARENA_MAX = -3, -8
MALLOC_ARENAS = 2
MMAP_THRESHOLD_BYTES = 1 << 20


def tune_allocator(arenas: int = MALLOC_ARENAS, mmap_threshold: int = MMAP_THRESHOLD_BYTES) -> bool:
    """Keep a long-running node's resident memory at what it uses (issue 14, defect 12).

    glibc gives each thread that allocates under contention its own arena (up to 8 per core), and
    raises the mmap threshold to 32 MB after the first large free. A node has ~25 threads (DDS,
    executor, worker); at 30 Hz every image callback allocated 1-2 MB buffers from one of 16 arenas,
    each of which grew to ~55 MB of resident, fragmented free memory (measured with malloc_info on a
    10-minute soak: 891 MB of arenas, 685 MB of it free). Two arenas, and buffers >= 1 MB mapped and
    unmapped directly, keep freed images and clouds out of the arenas. Call it first thing in the main
    thread; returns False where the C library is not glibc. ``MALLOC_ARENA_MAX`` /
    ``MALLOC_MMAP_THRESHOLD_`` in the environment take precedence.
    """
    libc = _glibc()
    if libc is None:
        return False
    if "MALLOC_ARENA_MAX" not in os.environ:
        libc.mallopt(_M_ARENA_MAX, int(arenas))
    if "MALLOC_MMAP_THRESHOLD_" not in os.environ:
        libc.mallopt(_M_MMAP_THRESHOLD, int(mmap_threshold))
    return True


def release_free_heap() -> None:
    """Hand memory freed by a finished job back to the OS (glibc ``malloc_trim``).

    A reconstruction allocates and frees a few hundred MB of numpy/Open3D buffers in a worker thread;
    glibc keeps the freed pages in that thread's arena, fragmented, so the node's resident memory
    stays ~200 MB above what it uses (measured on the bundled redkitchen set: 430 -> 220 MB after a
    trim). Costs a few milliseconds; a no-op where the C library is not glibc.
    """
    libc = _glibc()
    if libc is not None:
        libc.malloc_trim(0)


def remove_own_temporaries(folder: Path) -> list[Path]:
    """Delete this process's unfinished atomic-write temporaries (``.<name>.<pid>-<hex>.tmp<suffix>``,
    showroom_ros.io.export) in ``folder`` and its direct sub-folders; returns what was removed.

    A save abandoned at shutdown leaves its temporary behind; the final names are only ever
    written by rename, so they are complete or absent.
    """
    removed: list[Path] = []
    pattern = f".*.{os.getpid()}-*.tmp*"
    try:
        candidates = [*folder.glob(pattern), *folder.glob(f"*/{pattern}")]
    except OSError:
        return removed
    for path in candidates:
        with contextlib.suppress(OSError):
            path.unlink()
            removed.append(path)
    return removed


def _exit_now(code: int) -> NoReturn:
    """End the process without joining background threads (they are abandoned by design).

    Interpreter shutdown would join the worker pool (a reconstruction can run for minutes) and tear
    down torch under a loader thread still running (which aborts); ``os._exit`` skips both.
    """
    for stream in (sys.stdout, sys.stderr):
        with contextlib.suppress(Exception):
            stream.flush()
    os._exit(code)


def _callbacks_finished(executor: Executor, timeout_s: float) -> bool:
    """Whether the executor's running callbacks finish within ``timeout_s``.

    ``Executor.shutdown(timeout_sec)`` is meant to say this, but in this rclpy it never waits (it
    tests ``_is_shutdown`` right after setting it), so its work tracker is asked directly.
    """
    tracker = getattr(executor, "_work_tracker", None)
    if tracker is None:
        return True
    try:
        return bool(tracker.wait(timeout_s))
    except Exception:  # a private API: when it changes, fall back to destroying as before
        return True


def run_node(
    make_node: Callable[[], Node],
    program: str,
    args: list[str] | None = None,
    threads: int = 1,
    finished: Callable[[Node], bool] | None = None,
    linger_s: float = 1.0,
    abandon: Callable[[Node], None] | None = None,
) -> int:
    """Spin ``make_node()`` until shutdown, or until ``finished(node)`` (then ``linger_s`` more, so
    late subscribers still get the last messages).

    When callbacks are still running after the grace period, the node is not destroyed (its handles
    are in use: destroying them under a running callback can crash); ``abandon(node)`` does the
    node's last clean-up instead and the process ends at once.
    """
    tune_allocator()
    quiet_native_signal_handlers()
    rclpy.init(args=args if args is not None else sys.argv)
    # Built before the node: built after, a stop signal in between leaves a half-made executor whose
    # __del__ prints a traceback.
    executor: Executor = MultiThreadedExecutor(num_threads=threads) if threads > 1 else SingleThreadedExecutor()
    try:
        node = make_node()
    except (ValueError, OSError, ParameterException) as error:
        stopped = not rclpy.ok()  # a stop signal arrived while the node was being built
        executor.shutdown(timeout_sec=0)
        rclpy.try_shutdown()
        if stopped:
            _exit_now(0)
        print(f"{program}: configuration error: {error}", file=sys.stderr)
        _exit_now(2)  # threads the half-built node started must not meet interpreter finalization
    except (KeyboardInterrupt, ExternalShutdownException):
        # Stopped while the node was being built: its input thread may already be spinning.
        executor.shutdown(timeout_sec=0)
        rclpy.try_shutdown()
        _exit_now(0)
    except Exception:
        if rclpy.ok():
            raise
        # Stopped during construction: rclpy refuses to create entities on a shut-down context.
        rclpy.try_shutdown()
        _exit_now(0)
    try:
        executor.add_node(node)
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
    except Exception:
        if rclpy.ok():
            raise
        # Stopped between construction and spinning: the node cannot be added on a dead context.
    finally:
        # Work abandoned below may still try to publish on the dead context and log that as an
        # error with a traceback; a stop is not an error, so the node's log goes quiet first.
        with contextlib.suppress(Exception):
            rclpy.logging.set_logger_level(node.get_logger().name, rclpy.logging.LoggingSeverity.FATAL)
        with contextlib.suppress(KeyboardInterrupt):
            idle = _callbacks_finished(executor, CALLBACK_GRACE_S)
            # The process is ending: a save thread about to be abandoned may create no new temporary
            # after this, so the node's clean-up below cannot miss one (io/export.py).
            close_temporaries_for_exit()
            # A COLMAP run abandoned below still uses its scratch folder: removed once this process ends.
            hand_scratch_to_cleaner()
            if isinstance(executor, MultiThreadedExecutor):
                executor.shutdown(timeout_sec=0, wait_for_threads=False)
            else:
                executor.shutdown(timeout_sec=0)
            if idle or abandon is None:
                node.destroy_node()
            else:
                abandon(node)
            rclpy.try_shutdown()
    # Always end here, without interpreter finalization: it kills daemon threads (the camera input
    # spinner, a model loader) that are inside rclpy/pybind11 calls, and pthread_exit unwinding through
    # C++ frames aborts the process ("terminate called without an active exception", exit -6; seen once
    # in a few idle SIGINT stops). Everything the node writes is already complete (atomic renames).
    _exit_now(0)
