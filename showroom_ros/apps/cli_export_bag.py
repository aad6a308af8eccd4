"""``showroom export-bag``: what the node would publish for a reconstruction, as a rosbag2 (MCAP)."""

from __future__ import annotations

import argparse
import json
from pathlib import Path
from typing import Any

from showroom_ros.apps.cli_common import (
    CliError,
    find_reconstruction,
    read_reconstruction,
)
from showroom_ros.io.console import result
from showroom_ros.io.message_layout import DISPLAY_MAX_TRIANGLES


def cmd_export_bag(args: argparse.Namespace) -> int:
    from showroom_ros.io.export_bag import export_reconstruction_bag

    npz = find_reconstruction(Path(args.path))
    reconstruction = read_reconstruction(npz)
    out = Path(args.out).expanduser() if args.out else npz.with_name(npz.stem + "_bag")
    if out.exists():
        raise CliError(f"{out} already exists: choose another --out or remove it first")
    stamp_ns = None if args.stamp is None else round(args.stamp * 1e9)
    if stamp_ns is not None and stamp_ns < 0:
        raise CliError("--stamp must be >= 0 seconds")
    try:
        path = export_reconstruction_bag(
            reconstruction,
            out,
            stamp_ns=stamp_ns,
            frame_id=args.frame_id,
            storage=args.storage,
            topic_prefix=args.topic_prefix,
            max_triangles=args.max_triangles,
        )
    except FileExistsError as error:
        raise CliError(str(error)) from None
    prefix = "/" + args.topic_prefix.strip("/") if args.topic_prefix.strip("/") else ""
    frame_id = args.frame_id or reconstruction.frame_id
    if args.json:
        document = {
            "bag": str(path),
            "storage": args.storage,
            "frame_id": frame_id,
            "topics": [f"{prefix}/cloud", f"{prefix}/mesh", f"{prefix}/keyframes"],
            "points": int(reconstruction.num_points),
            "keyframes": len(reconstruction.camera_poses),
        }
        result(json.dumps(document, indent=2))
    elif not args.quiet:
        result(
            f"wrote {path} ({args.storage}): {prefix}/cloud ({reconstruction.num_points:,} points), "
            f"{prefix}/mesh, {prefix}/keyframes ({len(reconstruction.camera_poses)} poses) in frame "
            f"'{frame_id}'; play with `ros2 bag play {path}`"
        )
    return 0


def add_parser(commands: Any) -> argparse.ArgumentParser:
    """Register ``showroom export-bag`` on the subcommand parsers."""
    export = commands.add_parser(
        "export-bag",
        help="write the node's messages for a reconstruction to a rosbag2 (MCAP)",
        description="Write PointCloud2 (<prefix>/cloud), MarkerArray (<prefix>/mesh) and PoseArray "
        "(<prefix>/keyframes) of a reconstruction to a rosbag2, without ROS installed.",
    )
    export.add_argument("path", help="reconstruction .npz or the folder `showroom reconstruct` wrote")
    export.add_argument("--out", help="bag folder to create (default: <name>_bag beside the .npz)")
    export.add_argument("--storage", choices=("mcap", "sqlite3"), default="mcap", help="bag storage (default mcap)")
    export.add_argument("--topic-prefix", default="/showroom", help="topic namespace (default /showroom, the node's)")
    export.add_argument("--frame-id", help="header frame (default: the reconstruction's frame)")
    export.add_argument(
        "--max-triangles",
        type=int,
        default=DISPLAY_MAX_TRIANGLES,
        help="decimate the mesh markers to this many triangles, as the node does (0: keep all)",
    )
    export.add_argument("--stamp", type=float, help="message time in seconds since the epoch (default: now)")
    export.add_argument("--json", action="store_true", help="print what was written as JSON")
    export.add_argument("--quiet", "-q", action="store_true", help="print nothing on success")
    export.set_defaults(handler=cmd_export_bag)
    return export
