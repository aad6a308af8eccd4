"""``showroom view``: a reconstruction in the browser (viser)."""

from __future__ import annotations

import argparse
import threading
import time
from pathlib import Path
from typing import Any

import numpy as np

from showroom_ros.apps.cli_common import (
    GENERATED_SUFFIXES,
    CliError,
    find_reconstruction,
    positive_int,
    read_reconstruction,
)
from showroom_ros.io.console import result
from showroom_ros.io.file_names import KEYFRAMES_SUFFIX


def _load_views_folder(folder: Path) -> list[Any]:
    from showroom_ros.io.datasets import DatasetError, load_frame_folder

    try:
        return load_frame_folder(folder, with_depth=False)
    except DatasetError as error:
        raise CliError(str(error)) from None


def load_view_inputs(path: Path, generated: Path | None = None) -> tuple[Any, list[np.ndarray] | None, list[Any], Path]:
    """Reconstruction, keyframe images (when saved beside it) and generated views for ``showroom view``."""
    npz = find_reconstruction(path)
    reconstruction = read_reconstruction(npz)
    images = None
    keyframe_folder = npz.with_name(npz.stem + KEYFRAMES_SUFFIX)
    if keyframe_folder.is_dir():
        frames = _load_views_folder(keyframe_folder)
        if len(frames) == len(reconstruction.camera_poses):
            images = [frame.image for frame in frames]
    views: list[Any] = []
    if generated is not None:
        if not generated.is_dir():
            raise CliError(f"--generated {generated} is not a folder")
        views = _load_views_folder(generated)
    else:
        for suffix in GENERATED_SUFFIXES:
            candidate = npz.with_name(npz.stem + suffix) if suffix.startswith("_") else npz.parent / suffix
            if candidate.is_dir() and any(candidate.glob("frames_c2w*.txt")):
                views = _load_views_folder(candidate)
                break
    return reconstruction, images, views, npz


def cmd_view(args: argparse.Namespace) -> int:
    from showroom_ros.apps.viewer import ReconstructionViewer, ViewerError

    reconstruction, images, generated, npz = load_view_inputs(
        Path(args.path), Path(args.generated).expanduser() if args.generated else None
    )
    viewer = ReconstructionViewer(max_points=args.max_points)
    try:
        url = viewer.start(args.host, args.port)
    except ViewerError as error:
        raise CliError(str(error)) from None
    stop = threading.Event()
    try:
        viewer.show(reconstruction, keyframe_images=images, generated=generated)
        result(  # the result: a script reads the URL from stdout
            f"showroom viewer: {url}  ({npz.name}: {reconstruction.num_points:,} points"
            f"{', mesh' if reconstruction.mesh is not None else ''}, "
            f"{len(reconstruction.camera_poses)} keyframes"
            f"{f', {len(generated)} generated views' if generated else ''}); Ctrl-C to stop"
        )
        deadline = None if args.seconds is None else time.monotonic() + args.seconds
        while not stop.is_set():
            if deadline is not None and time.monotonic() >= deadline:
                break
            stop.wait(0.2)
    except KeyboardInterrupt:
        pass
    finally:
        viewer.stop()
    return 0


def add_parser(commands: Any) -> argparse.ArgumentParser:
    """Register ``showroom view`` on the subcommand parsers."""
    view = commands.add_parser(
        "view",
        help="show a reconstruction in the browser (viser)",
        description="Serve a reconstruction (.npz written by `showroom reconstruct`, or its folder) "
        "on a local "
        "web page: cloud, mesh (toggle), keyframe cameras with their images, generated views.",
    )
    view.add_argument("path", help="reconstruction .npz or the folder `showroom reconstruct` wrote")
    view.add_argument("--host", default="127.0.0.1", help="address to listen on (default 127.0.0.1: this machine only)")
    view.add_argument("--port", type=int, default=8080, help="port (default 8080; 0 = any free port)")
    view.add_argument("--generated", help="folder of generated views (frames_c2w.txt layout)")
    view.add_argument("--max-points", type=positive_int, default=600_000, help="points sent to the browser")
    view.add_argument("--seconds", type=float, help=argparse.SUPPRESS)  # stop after this long (tests)
    view.set_defaults(handler=cmd_view)
    return view
