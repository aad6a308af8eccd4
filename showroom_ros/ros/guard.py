"""One guard for every callback of the showroom nodes: a raising callback never takes the node down.

rclpy lets an exception in a callback escape ``spin()`` and end the process; a robot's mapping node
must instead answer, count and say what went wrong, and go on. The main node, its camera-input node
and the map outputs all wrap their callbacks here, so the count in ``/diagnostics`` is complete.
"""

from __future__ import annotations

import threading
import time
import traceback
from collections.abc import Callable
from typing import Any

from rcl_interfaces.msg import SetParametersResult

GUARD_ATTR = "showroom_guarded"
"""Set on every guarded callback: the original callback."""
REPORT_EVERY_S = 5.0
Guard = Callable[[str, str, Callable], Callable]
"""(kind, name, callback) -> the guarded callback."""


class CallbackGuard:
    """Wraps callbacks; counts failures by kind; logs each kind at most once every ``REPORT_EVERY_S``.

    Thread-safe: callbacks fail on the input thread, the executor's threads and the worker at once,
    while the status timer reads the counts (:meth:`snapshot` copies them under the lock).
    """

    def __init__(self, logger: Callable[[], Any]) -> None:
        self._logger = logger
        self._lock = threading.Lock()
        self._errors: dict[str, int] = {}
        self._last_error = ""
        self._reported: dict[str, float] = {}

    def wrap(self, kind: str, name: str, callback: Callable) -> Callable:
        """``callback`` inside the guard (idempotent). A failing service answers ``success=false`` with the
        reason and a parameter change is refused with it. No ``__wrapped__``: rclpy inspects the
        signature to decide whether to pass MessageInfo."""
        if callable(getattr(callback, GUARD_ATTR, None)):
            return callback

        def guarded(*args: Any) -> Any:
            try:
                return callback(*args)
            except Exception as error:  # the one place that may catch everything
                self.failed(kind, name, error)
                reason = f"internal error: {type(error).__name__}: {error}"
                if kind == "parameters":
                    return SetParametersResult(successful=False, reason=reason)
                if kind == "service" and len(args) >= 2:
                    response = args[1]
                    if hasattr(response, "success"):
                        response.success = False
                    if hasattr(response, "message"):
                        response.message = reason
                    return response
                return None

        setattr(guarded, GUARD_ATTR, callback)
        guarded.__name__ = f"guarded_{getattr(callback, '__name__', kind)}"
        return guarded

    def wrap_existing(self, node: Any) -> None:
        """Guard what rclpy registered itself, bypassing the node's overrides (its type-description and
        lifecycle services)."""
        for service in node.services:
            service.callback = self.wrap("service", service.srv_name, service.callback)
        for subscription in node.subscriptions:
            subscription.callback = self.wrap("subscription", subscription.topic_name, subscription.callback)
        for timer in node.timers:
            timer.callback = self.wrap("timer", getattr(timer.callback, "__name__", "timer"), timer.callback)

    def failed(self, kind: str, name: str, error: BaseException) -> None:
        """Count the failure; log it with its place and reason, once per kind every 5 s (else at debug)."""
        key = f"{kind} {name}: {type(error).__name__}"
        with self._lock:
            count = self._errors[key] = self._errors.get(key, 0) + 1
            self._last_error = f"{key}: {error}"
        message = (
            f"{kind} callback on {name} failed ({count} time(s) so far), the node goes on: "
            f"{type(error).__name__}: {error}"
        )
        if self.report_due(key):
            where = traceback.extract_tb(error.__traceback__)[-1] if error.__traceback__ else None
            self._logger().error(message + (f" (at {where.filename}:{where.lineno})" if where else ""))
        else:
            self._logger().debug(message)

    def report_due(self, key: str) -> bool:
        """True at most once every REPORT_EVERY_S per key (rclpy's throttle is per call site, which would
        hide a second, different problem behind the first)."""
        now = time.monotonic()
        with self._lock:
            if now - self._reported.get(key, -1e9) < REPORT_EVERY_S:
                return False
            self._reported[key] = now
        return True

    def errors(self) -> dict[str, int]:
        """A copy of the failure counts by kind."""
        with self._lock:
            return dict(self._errors)

    def snapshot(self) -> tuple[int, str]:
        """(total failures, the last one) for ``/diagnostics``."""
        with self._lock:
            return sum(self._errors.values()), self._last_error
