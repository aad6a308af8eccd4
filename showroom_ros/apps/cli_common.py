"""What the ``showroom`` subcommands share: the user-facing error, exit codes, finding and reading a
reconstruction, atomic text output and argument types."""

from __future__ import annotations

import argparse
from pathlib import Path
from typing import Any

import numpy as np

from showroom_ros.io.file_names import GENERATED_SUFFIX

EXIT_ERROR = 1
EXIT_USAGE = 2
EXIT_INTERRUPTED = 130
GENERATED_SUFFIXES = (GENERATED_SUFFIX, "generated")  # beside the .npz, or a folder named "generated"


class CliError(RuntimeError):
    """A user-facing failure: printed as one line, exit status 1."""


# --- small helpers -------------------------------------------------------------------------------


def write_text(path: Path, text: str) -> None:
    """Complete or absent, like every other output; imported here because io.export loads Open3D (~1 s)."""
    from showroom_ros.io.export import atomic_write_text

    atomic_write_text(path, text)


def fmt_seconds(seconds: float) -> str:
    return f"{seconds:.2f} s" if seconds < 100 else f"{seconds:.0f} s"


def find_reconstruction(path: Path) -> Path:
    """The .npz of a reconstruction: the file itself, or the only one in a folder written by reconstruct."""
    path = path.expanduser()
    if not path.exists():
        raise CliError(f"{path} does not exist")
    if path.is_file():
        if path.suffix != ".npz":
            raise CliError(f"{path} is not a reconstruction .npz (run `showroom reconstruct` first)")
        return path
    candidates = sorted(path.glob("*.npz"))
    if not candidates:
        raise CliError(f"{path} holds no reconstruction .npz (run `showroom reconstruct ... --out {path}` first)")
    if len(candidates) > 1:
        names = ", ".join(c.name for c in candidates)
        raise CliError(f"{path} holds several reconstructions ({names}): name the .npz to use")
    return candidates[0]


def read_reconstruction(npz: Path) -> Any:
    from showroom_ros.io.export import load_reconstruction

    try:
        return load_reconstruction(npz)
    except ValueError as error:
        raise CliError(str(error)) from None


def finite_float(text: str) -> float:
    value = float(text)
    if not np.isfinite(value):
        raise argparse.ArgumentTypeError(f"not a finite number: {text}")
    return value


def positive_int(text: str) -> int:
    value = int(text)
    if value < 1:
        raise argparse.ArgumentTypeError(f"must be >= 1, got {value}")
    return value
