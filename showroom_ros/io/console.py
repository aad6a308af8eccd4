"""What the command-line tools write where: the result on stdout, everything else on stderr.

Why: ``showroom reconstruct --map --json | jq`` must read one JSON document, so stdout carries only a
command's result. Progress and notes go to stderr: a tqdm bar with an ETA on a terminal, plain lines
when stderr is a pipe or a file (CI logs keep no carriage returns), nothing with ``--quiet``.
:func:`stdout_for_results` also moves what libraries print to stdout (Open3D writes its warnings to
file descriptor 1 from C++) onto stderr for the duration of a command.

The ``showroom`` subcommands (``apps.cli``, ``generation.cli``, ``distillation.cli``) all use this one
module, so the rule has one owner.
"""

from __future__ import annotations

import contextlib
import ctypes
import os
import sys
import time
from collections.abc import Iterator
from typing import IO, Any, Protocol

from tqdm import tqdm

PLAIN_LINE_INTERVAL_S = 5.0
"""Plain (non-terminal) progress writes at most one line per this many seconds, plus its first and last."""


class Progress(Protocol):
    """The part of a tqdm bar the tools use; the plain-line and silent forms offer the same."""

    def update(self, n: int = 1) -> object: ...

    def set_description(self, desc: str | None = None, refresh: bool = True) -> object: ...

    def set_postfix_str(self, s: str = "", refresh: bool = True) -> object: ...

    def close(self) -> object: ...


class ProgressFactory(Protocol):
    """Makes the progress of one stage: ``(total or None, description, unit)``."""

    def __call__(self, total: int | None, description: str, unit: str = "frame") -> Progress: ...


class _Silent:
    def update(self, n: int = 1) -> None:
        pass

    def set_description(self, desc: str | None = None, refresh: bool = True) -> None:
        pass

    def set_postfix_str(self, s: str = "", refresh: bool = True) -> None:
        pass

    def close(self) -> None:
        pass


def silent(total: int | None, description: str, unit: str = "frame") -> Progress:
    """No progress at all (``--quiet``, library use)."""
    return _Silent()


class _PlainLines:
    """Progress as whole lines on stderr, throttled: for logs and pipes, where a redrawn bar is noise."""

    def __init__(self, total: int | None, description: str, unit: str, percent: bool, initial: int) -> None:
        self.total, self.description, self.unit, self.percent = total, description, unit, percent
        self.n, self.initial, self.postfix = initial, initial, ""
        self.started = time.monotonic()
        self.last_line = -float("inf")
        self.closed = False
        self._write()

    def _text(self) -> str:
        elapsed = time.monotonic() - self.started
        if self.percent:
            done = f"{self.n:3d}%"
        elif self.total:
            done = f"{self.n}/{self.total} {self.unit}s ({100 * self.n / self.total:.0f}%)"
        else:
            done = f"{self.n} {self.unit}s"
        if self.closed:
            timing = f"in {tqdm.format_interval(elapsed)}"
        else:
            timing = f"{tqdm.format_interval(elapsed)} elapsed"
            if self.total and self.initial < self.n < self.total:  # this run's rate, not a resumed run's past
                rate = (self.n - self.initial) / max(elapsed, 1e-9)
                timing += f", ETA {tqdm.format_interval((self.total - self.n) / rate)}"
        return ", ".join(part for part in (f"{self.description}: {done}", timing, self.postfix) if part)

    def _write(self) -> None:
        self.last_line = time.monotonic()
        say(self._text())

    def update(self, n: int = 1) -> None:
        self.n += n
        if time.monotonic() - self.last_line >= PLAIN_LINE_INTERVAL_S:
            self._write()

    def set_description(self, desc: str | None = None, refresh: bool = True) -> None:
        if desc and desc != self.description:
            self.description = desc
            self._write()

    def set_postfix_str(self, s: str = "", refresh: bool = True) -> None:
        changed, self.postfix = s != self.postfix, s
        if changed and self.percent:  # a percent bar's postfix is its stage: a new stage is worth a line
            self._write()

    def close(self) -> None:
        if not self.closed:
            self.closed = True
            self._write()


def progress_bar(
    total: int | None,
    description: str,
    unit: str = "frame",
    *,
    quiet: bool = False,
    percent: bool = False,
    initial: int = 0,
) -> Progress:
    """The progress of one stage on stderr: a bar with an ETA on a terminal, plain lines otherwise.

    ``percent`` bars count to ``total`` = 100 (a pipeline that reports fractions, not items);
    ``initial`` is where a resumed run starts (training from a checkpoint).
    """
    if quiet:
        return _Silent()
    if not _stderr_is_terminal():
        return _PlainLines(total, description, unit, percent, initial)
    bar_format = "{desc}: {percentage:3.0f}%|{bar}| [{elapsed}<{remaining}]{postfix}" if percent else None
    return tqdm(
        total=total,
        initial=initial,
        desc=description,
        unit=unit,
        file=sys.stderr,
        leave=False,
        dynamic_ncols=True,
        bar_format=bar_format,
    )


class FractionProgress:
    """A percent bar fed as ``(fraction, stage)``: the callback the pipeline and the view generator report to.

    The bar only moves forward (a later stage may report a smaller fraction of its own); the stage is
    shown after it. ``first_stage`` keeps the first report (the pipeline's backend choice).
    """

    def __init__(self, description: str, quiet: bool = False) -> None:
        self.bar = progress_bar(100, description, quiet=quiet, percent=True)
        self.shown = 0
        self.first_stage = ""
        self.stage = ""

    def __call__(self, fraction: float, stage: str) -> None:
        self.first_stage = self.first_stage or stage
        percent = min(100, round(100 * fraction))
        if percent > self.shown:
            self.bar.update(percent - self.shown)
            self.shown = percent
        if stage != self.stage:
            self.stage = stage
            self.bar.set_postfix_str(stage)

    def __enter__(self) -> FractionProgress:
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.bar.close()


def progress_factory(quiet: bool) -> ProgressFactory:
    """A :data:`ProgressFactory` for stages that take one (``apps.offline``, ``apps.map_session``)."""
    if quiet:
        return silent

    def factory(total: int | None, description: str, unit: str = "frame") -> Progress:
        return progress_bar(total, description, unit)

    return factory


def _stderr_is_terminal() -> bool:
    try:
        return sys.stderr.isatty()
    except (AttributeError, ValueError):  # replaced or closed
        return False


def say(text: str, quiet: bool = False) -> None:
    """A note for the person at the terminal: stderr, above any bar being drawn; nothing when ``quiet``."""
    if not quiet:
        tqdm.write(text, file=sys.stderr)
        sys.stderr.flush()


# --- stdout for the result only ------------------------------------------------------------------

_results: IO[str] | None = None
"""While :func:`stdout_for_results` runs: the real stdout (sys.stdout and fd 1 point at stderr meanwhile)."""


def result(text: str) -> None:
    """Write (part of) the command's result to stdout, the one thing that goes there."""
    stream = _results if _results is not None else sys.stdout
    stream.write(text if text.endswith("\n") else text + "\n")
    stream.flush()


def _flush_c_stdio() -> None:
    """Flush C's stdio buffers, so text a library printf'ed lands where fd 1 pointed when it did."""
    with contextlib.suppress(OSError, AttributeError, TypeError):
        ctypes.CDLL(None).fflush(None)


def _fileno(stream: Any) -> int | None:
    try:
        return int(stream.fileno())
    except (AttributeError, OSError, ValueError):  # io.UnsupportedOperation is both
        return None


@contextlib.contextmanager
def stdout_for_results() -> Iterator[None]:
    """Run a command with stdout reserved for :func:`result`: every other write to stdout lands on stderr.

    Python's ``sys.stdout`` is pointed at ``sys.stderr``; when ``sys.stdout`` is the process's file
    descriptor 1, fd 1 itself is pointed at fd 2 too (``dup2``), which catches C and C++ libraries that
    write there. Everything is restored on exit, exceptions included. Re-entering is a no-op.
    """
    global _results
    if _results is not None:
        yield
        return
    sys.stdout.flush()
    _flush_c_stdio()
    real = sys.stdout
    saved_fd = os.dup(1) if _fileno(real) == 1 and _fileno(sys.stderr) is not None else None
    if saved_fd is not None:
        _results = os.fdopen(saved_fd, "w", encoding=getattr(real, "encoding", None) or "utf-8", closefd=False)
        os.dup2(sys.stderr.fileno(), 1)
    else:
        _results = real  # not the process's stdout (e.g. pytest's capture): Python's writes only
    try:
        with contextlib.redirect_stdout(sys.stderr):
            yield
    finally:
        sys.stderr.flush()
        _flush_c_stdio()
        stream, _results = _results, None
        stream.flush()
        if saved_fd is not None:
            os.dup2(saved_fd, 1)
            stream.close()
            os.close(saved_fd)
