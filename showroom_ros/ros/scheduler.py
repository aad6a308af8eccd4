"""The node's one worker thread and everything queued on it: windows, the generation, map jobs.

One owner for the queue, so three questions have one answer each: is anything queued or running
(:meth:`Scheduler.busy`), what is the node doing now (:meth:`Scheduler.snapshot`,
read by the status part under this lock), and which keyframes does the next window share with the
last (``window_overlap``). A job's state ("reconstructing", "generating") is set when it *starts* on
the worker, not when it is queued, so a job queued behind another never overwrites what the running
one says. Nothing submits work from the worker to itself: a buffer that filled while a window ran is
picked up by the input node's poll (:meth:`Scheduler.start_window` again).
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable
from concurrent.futures import CancelledError, Future, ThreadPoolExecutor
from concurrent.futures import TimeoutError as FutureTimeout
from dataclasses import dataclass
from typing import Any

from showroom_ros.capture.keyframes import Keyframe, KeyframeBuffer

#: The state a running job of each kind shows in ~/status. (Map work runs on the map's own thread:
#: ros/robot_mapping.py.)
RUNNING_STATE = {"window": "reconstructing", "generation": "generating"}


@dataclass(frozen=True)
class SchedulerState:
    """What ~/status says about the work (a consistent copy taken under the lock)."""

    state: str
    progress: float
    message: str
    backend_reason: str
    queued: int
    pending_windows: int
    superseded_windows: int  # queued windows replaced by a newer one (continuous mode, queue full)


@dataclass
class _Job:
    kind: str
    future: Future
    keyframes: list[Keyframe]


class Scheduler:
    """Runs jobs one at a time on a worker thread; ``after_job`` runs on the worker after each (malloc_trim)."""

    def __init__(self, after_job: Callable[[], None] = lambda: None) -> None:
        self._lock = threading.RLock()
        self._worker = ThreadPoolExecutor(max_workers=1, thread_name_prefix="showroom-worker")
        self._after_job = after_job
        self._jobs: list[_Job] = []
        self._carried: list[Keyframe] = []  # keyframes the next window shares with the last one
        self._state, self._progress, self._message = "collecting", 0.0, "waiting for keyframes"
        self._backend_reason = ""
        self._superseded = 0
        self._closed = False

    # --- state ------------------------------------------------------------------------------------
    def snapshot(self) -> SchedulerState:
        with self._lock:
            self._prune()
            return SchedulerState(
                state=self._state,
                progress=float(self._progress),
                message=self._message,
                backend_reason=self._backend_reason,
                queued=len(self._jobs),
                pending_windows=sum(job.kind == "window" for job in self._jobs),
                superseded_windows=self._superseded,
            )

    def set(self, state: str | None = None, message: str | None = None, progress: float | None = None) -> None:
        """Change what ~/status says (any of the three)."""
        with self._lock:
            if state is not None:
                self._state = state
            if message is not None:
                self._message = message
            if progress is not None:
                self._progress = progress

    def report(self, fraction: float, stage: str) -> None:
        """A running job's progress; the first stage (fraction 0) names the backend chosen and why."""
        with self._lock:
            self._progress, self._message = fraction, stage
            if fraction == 0.0:
                self._backend_reason = stage

    def busy(self) -> bool:
        """Anything queued or running: a window, the generation, or a map job."""
        with self._lock:
            self._prune()
            return bool(self._jobs)

    def _prune(self) -> None:
        self._jobs = [job for job in self._jobs if not job.future.done()]

    # --- submitting -------------------------------------------------------------------------------
    def _submit(self, kind: str, work: Callable[..., Any], *args: Any, keyframes: list | None = None) -> Future | None:
        """Queue ``work`` (call with the lock held); None once the scheduler is closed."""
        if self._closed:
            return None
        try:
            future = self._worker.submit(self._run, kind, work, *args)
        except RuntimeError:  # shut down meanwhile
            return None
        self._jobs.append(_Job(kind, future, keyframes or []))
        return future

    def _run(self, kind: str, work: Callable[..., Any], *args: Any) -> Any:
        state = RUNNING_STATE[kind]
        if state is not None:
            with self._lock:
                if self._state != state:
                    self._state, self._progress = state, 0.0
        try:
            return work(*args)
        finally:
            with self._lock:
                if state is not None and self._state == state:
                    self._state = "collecting"  # the job said nothing else (it normally does)
            self._after_job()

    def start_window(
        self,
        buffer: KeyframeBuffer,
        why: str,
        work: Callable[[list[Keyframe]], Any],
        continuous: bool,
        max_pending: int,
        overlap: int,
        superseded: Callable[[list[Keyframe]], None] = lambda keyframes: None,
    ) -> Future | None:
        """Take the buffered keyframes as a window and queue ``work(keyframes)``; None when refused
        (busy and not continuous, or only keyframes the last window already had).

        Continuous mode queues the window behind a running one and keeps its last ``overlap`` keyframes
        buffered as the start of the next window. With ``max_pending`` windows already queued, the oldest
        one not yet running is replaced by this one (the newest wins: a moving robot wants the view it has
        now; the keyframes went to the map at keyframe rate), and ``superseded(its keyframes)`` is told.
        """
        with self._lock:
            self._prune()
            if not continuous and self._jobs:
                return None
            keyframes = list(buffer)
            if not any(all(k is not c for c in self._carried) for k in keyframes):
                return None
            windows = [job for job in self._jobs if job.kind == "window"]
            if continuous and len(windows) >= max_pending:
                oldest = next((job for job in windows if job.future.cancel()), None)
                if oldest is None:
                    return None
                self._jobs.remove(oldest)
                self._superseded += 1
                superseded(oldest.keyframes)
            buffer.clear()
            self._carried = []
            if continuous:
                kept = min(overlap, len(keyframes) - 1)
                self._carried = keyframes[len(keyframes) - kept :] if kept > 0 else []
                for keyframe in self._carried:
                    buffer.add(keyframe)
            future = self._submit("window", work, keyframes, keyframes=keyframes)
            if future is not None:
                self._message = f"reconstructing ({why})"
                if len(self._jobs) == 1:  # nothing ahead of it: it starts now
                    self._state, self._progress = "reconstructing", 0.0
            return future

    def submit_generation(self, work: Callable[..., Any], *args: Any) -> tuple[Future | None, str]:
        """Queue the one generation behind whatever is queued (never in front of a window); (None, why)
        when one is already queued or running."""
        with self._lock:
            self._prune()
            if any(job.kind == "generation" for job in self._jobs):
                return None, "a generation is already queued or running; call again when it is done"
            ahead = bool(self._jobs)
            future = self._submit("generation", work, *args)
            if future is None:
                return None, "the node is stopping"
            if ahead:
                self._message = "generation queued behind the running reconstruction"
            else:
                self._state, self._progress, self._message = "generating", 0.0, "generating views"
            return future, ""

    def forget_window_overlap(self) -> None:
        with self._lock:
            self._carried = []

    # --- stopping ---------------------------------------------------------------------------------
    def quiesce(self, timeout_s: float) -> bool:
        """Cancel what is queued and wait up to ``timeout_s`` for the running job; True when idle.

        Used when the node is deactivated: a running job that does not finish in time is abandoned to
        finish on its own (its results go to deactivated publishers, which drop them).
        """
        with self._lock:
            jobs = list(self._jobs)
        for job in jobs:
            job.future.cancel()
        deadline = time.monotonic() + timeout_s
        for job in jobs:
            try:
                job.future.result(timeout=max(0.0, deadline - time.monotonic()))
            except (CancelledError, FutureTimeout):
                pass
            except Exception:  # the job's own failure was already reported by the job
                pass
        with self._lock:
            self._prune()
            self._carried = []
            return not self._jobs

    def shutdown(self) -> None:
        """Cancel queued work and stop taking more; a running job is abandoned, not joined."""
        with self._lock:
            self._closed = True
        self._worker.shutdown(wait=False, cancel_futures=True)


def wait_for(job: Future, timeout: float, still_running: str) -> tuple[Any, str | None]:
    """A job's result, or None and the message a service answers with."""
    try:
        return job.result(timeout=timeout), None
    except FutureTimeout:
        return None, still_running
    except CancelledError:
        return None, "cancelled: the node was deactivated or is stopping"
    except Exception as error:
        return None, str(error)
