"""`make demo`: replay the 5 bundled RGB-D keyframes through the real node and save the result.

Two processes, as on a robot: ``showroom_replay`` publishes colour, 16UC1 depth, both CameraInfos
and the ground-truth camera poses (pose topic); ``showroom_node`` selects the keyframes,
reconstructs when its buffer is full and publishes the cloud, mesh and keyframe poses. This
process watches ``~/status``, calls ``~/save`` and prints where the files are and how long each
stage took.
"""

from __future__ import annotations

import argparse
import shutil
import sys
import time
from pathlib import Path

import rclpy
from rclpy.node import Node

from showroom_ros.io.file_names import reconstruction_files
from showroom_ros.msg import ReconstructionStatus
from showroom_ros.ros.processes import NodeProcess, export_ros_environment, find_share_file
from showroom_ros.ros.replay_node import SHOWROOM_PARAMETERS_FOR_REPLAY
from showroom_ros.srv import SaveReconstruction

DEMO_PARAMETERS = {**SHOWROOM_PARAMETERS_FOR_REPLAY, "autosave": False}
DEMO_NAME = "demo"
PLAIN_NAMES = {"cloud": "cloud.ply", "mesh": "mesh.ply", "png": "preview.png"}
"""The README's names for the saved files anyone opens first (copies; the saved ones stay)."""


def run_demo(out: Path, folder: Path, timeout: float = 300.0) -> int:
    out = out.resolve()
    out.mkdir(parents=True, exist_ok=True)
    env = export_ros_environment(isolated=True)
    logs = out / "logs"
    node = NodeProcess(
        "showroom_node",
        {**DEMO_PARAMETERS, "output_dir": str(out)},
        logs,
        find_share_file("config", "showroom.yaml"),
        env=env,
    )
    replay = None
    rclpy.init()
    client = Node("showroom_demo")
    statuses: list[ReconstructionStatus] = []
    client.create_subscription(ReconstructionStatus, "/showroom/status", statuses.append, 10)
    started = time.monotonic()
    try:
        print(f"[demo] showroom node starting (log: {node.log_path})")
        replay = NodeProcess(
            "showroom_replay", {"folder": str(folder), "rate_hz": 5.0, "repeat_each": 2, "loop": True}, logs, env=env
        )
        print(f"[demo] replaying {folder} (log: {replay.log_path})")
        last_line = ""
        while time.monotonic() - started < timeout:
            rclpy.spin_once(client, timeout_sec=0.1)
            if not node.alive():
                print(node.log(), file=sys.stderr)
                print("[demo] the showroom node exited unexpectedly", file=sys.stderr)
                return 1
            if statuses:
                s = statuses[-1]
                line = f"[demo] {s.state}: {s.num_keyframes}/{s.max_keyframes} keyframes - {s.message}"
                if line != last_line:
                    print(line, flush=True)
                    last_line = line
                if s.state == "reconstructing" and replay.alive():
                    replay.stop()  # the node has its keyframes
                if s.num_points > 0:
                    break
                if s.state == "error":
                    print(f"[demo] failed: {s.message}\n{node.log()}", file=sys.stderr)
                    return 1
        else:
            print(f"[demo] no reconstruction within {timeout:.0f} s\n{node.log()}", file=sys.stderr)
            return 1
        status = statuses[-1]
        save = client.create_client(SaveReconstruction, "/showroom/save")
        save.wait_for_service(timeout_sec=10.0)
        future = save.call_async(SaveReconstruction.Request(name=DEMO_NAME))
        while not future.done():
            rclpy.spin_once(client, timeout_sec=0.1)
        saved = future.result()
        if not saved.success:
            print(f"[demo] save failed: {saved.message}", file=sys.stderr)
            return 1
        files = _standard_names(out, [Path(f) for f in saved.files])
        print(
            f"\n[demo] backend {status.backend}: {status.num_points} points, {status.num_triangles} triangles "
            f"in frame '{status.frame_id}' (metric: {status.metric})"
        )
        print(f"[demo] trigger -> mesh published: {status.last_duration_s:.2f} s")
        _print_stage_timings(files.get("npz"))
        print("[demo] outputs:")
        for kind, path in files.items():
            print(f"  {kind:8s} {path}")
        return 0
    finally:
        client.destroy_node()
        rclpy.try_shutdown()
        for process in (replay, node):
            if process is not None:
                process.stop()


def _standard_names(out: Path, saved: list[Path]) -> dict[str, Path]:
    """Kind -> file of what ``~/save`` wrote as :data:`DEMO_NAME`, with :data:`PLAIN_NAMES` copies."""
    written = {path.resolve() for path in saved}
    files: dict[str, Path] = {}
    for kind, path in reconstruction_files(out, DEMO_NAME).items():
        if path.resolve() in written:
            files[kind] = shutil.copyfile(path, out / PLAIN_NAMES[kind]) if kind in PLAIN_NAMES else path
    return files


def _print_stage_timings(npz: Path | None) -> None:
    if npz is None:
        return
    from showroom_ros.io.export import load_reconstruction

    timings = load_reconstruction(npz).timings
    if timings:
        print("[demo] stages: " + ", ".join(f"{name} {seconds:.2f} s" for name, seconds in timings.items()))


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--out", type=Path, default=Path("output/demo"), help="where the outputs go")
    parser.add_argument(
        "--folder",
        type=Path,
        default=find_share_file("data", "redkitchen"),
        help="frame folder to replay (frames_c2w.txt layout)",
    )
    parser.add_argument("--timeout", type=float, default=300.0)
    args = parser.parse_args(argv)
    return run_demo(args.out, args.folder, args.timeout)


if __name__ == "__main__":
    sys.exit(main())
