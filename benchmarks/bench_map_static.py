"""A static scene seen again and again (issue 20, item 4): does the robot map stay flat? ROS-free.

Each round fuses the same views again with fresh stamps (new keyframes, as the node makes from a looping
replay), through ``RobotMap.fuse_keyframes`` + ``refresh`` with the node's default map settings, and prints
per round: TSDF blocks (and how many are new), the chunk meshes' and kept surface points' bytes, chunks
re-sent, and the process RSS. Three ways the views come back:

  exact     the same depth and pose every round (what a replay sends)
  sensor    fresh depth noise each round (Kinect-like, sigma 1.2 mm + 1.9 mm x (z - 0.4 m)^2, then rounded to
            mm as a 16UC1 image is) and a 2 mm / 0.2 deg pose jitter (a tracker re-localising at the same place)
  mismatch  as exact, but from round 2 on each view's depth is, with probability 0.2, the previous view's: the
            depth/pose pair a switch between views can make (the node pairs colour and depth within 50 ms)

each with the redundancy check off (``redundant_translation_m`` 0, the old behaviour) and at its defaults.
Every configuration runs in its own process, so RSS is its own. Growth is measured after the first round.

    python -P benchmarks/bench_map_static.py                  (5 views of data/redkitchen, 60 rounds each)
    python -P benchmarks/bench_map_static.py --views 15       (15 views spread over the shared 7-Scenes walk)
"""

from __future__ import annotations

import argparse
import gc
import json
import os
import subprocess
import sys
import time
from dataclasses import replace
from pathlib import Path

import numpy as np
import psutil
from scipy.spatial.transform import Rotation

REPO_ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO_ROOT))

from showroom_ros.capture.keyframes import Keyframe  # noqa: E402
from showroom_ros.io.datasets import load_frame_folder, read_camera_yaml  # noqa: E402
from showroom_ros.mapping.robot_map import RobotMap, RobotMapConfig  # noqa: E402

SAMPLE = REPO_ROOT / "data" / "redkitchen"
WALK = REPO_ROOT.parent / "shared" / "data" / "7scenes_redkitchen_walk"
MODELS = ("exact", "sensor", "mismatch")


def load_views(count: int) -> list[Keyframe]:
    """The bundled 5 views, or ``count`` views spread evenly over the 500-frame walk (same Kinect, same intrinsics)."""
    if count == 5:
        return load_frame_folder(SAMPLE)
    names = [line.split()[0] for line in (WALK / "frames_c2w.txt").read_text().splitlines() if line.strip()]
    names = [n for n in names if not n.startswith("#")]
    picked = [names[i] for i in np.linspace(0, len(names) - 1, count).round().astype(int)]
    cameras = read_camera_yaml(SAMPLE / "camera.yaml")
    return load_frame_folder(WALK, names=picked, intrinsics=cameras.color, depth_intrinsics=cameras.depth)


def noisy_depth(depth: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    noisy = depth.copy()
    valid = np.isfinite(noisy) & (noisy > 0)
    sigma = 0.0012 + 0.0019 * (noisy[valid] - 0.4) ** 2
    noisy[valid] = np.round((noisy[valid] + rng.normal(0.0, 1.0, int(valid.sum())) * sigma) * 1000.0) / 1000.0
    return noisy.astype(np.float32)


def jittered(pose: np.ndarray, rng: np.random.Generator, metres: float = 0.002, degrees: float = 0.2) -> np.ndarray:
    moved = pose.copy()
    turn = rng.normal(0.0, 1.0, 3) / np.sqrt(3.0) * np.radians(degrees)
    moved[:3, :3] = Rotation.from_rotvec(turn).as_matrix() @ moved[:3, :3]
    moved[:3, 3] += rng.normal(0.0, 1.0, 3) / np.sqrt(3.0) * metres
    return moved


def round_views(views: list[Keyframe], model: str, round_index: int, stamp: int, rng: np.random.Generator):
    """The views of one round as new keyframes (fresh stamps), changed as the model says."""
    keyframes = []
    for i, view in enumerate(views):
        keyframe = replace(view, stamp_ns=stamp + i)
        if model == "sensor":
            keyframe = replace(keyframe, depth=noisy_depth(view.depth, rng), pose=jittered(view.pose, rng))
        elif model == "mismatch" and round_index > 0 and rng.random() < 0.2:
            keyframe = replace(keyframe, depth=views[i - 1].depth)
        keyframes.append(keyframe)
    return keyframes


def run_one(model: str, check: bool, rounds: int, view_count: int) -> dict:
    """One configuration, in this process: per-round figures as a dict (printed as JSON by the child)."""
    views = load_views(view_count)
    if not all(v.depth is not None and v.pose is not None and v.intrinsics is not None for v in views):
        raise SystemExit("every view needs depth, a pose and intrinsics")
    config = RobotMapConfig() if check else RobotMapConfig(redundant_translation_m=0.0)
    robot_map = RobotMap(config)
    rng = np.random.default_rng(20)
    process = psutil.Process()
    rows, previous = [], set()
    for index in range(rounds):
        keyframes = round_views(views, model, index, (index + 1) * 1_000_000, rng)
        started = time.perf_counter()
        fused = robot_map.fuse_keyframes(keyframes)
        update = robot_map.refresh()
        seconds = time.perf_counter() - started
        gc.collect()
        blocks = {tuple(b) for b in robot_map.volume.block_coords().tolist()}
        chunks = robot_map.chunks._chunks
        rows.append(
            {
                "blocks": len(blocks),
                "new": len(blocks - previous),
                "mesh_mb": sum(c.mesh.nbytes for c in chunks.values()) / 2**20,
                "points_mb": sum(c.points.nbytes + c.point_colors.nbytes for c in chunks.values()) / 2**20,
                "resent": len(update.chunks.changed),
                "redundant": len(fused.redundant),
                "rss_mb": process.memory_info().rss / 2**20,
                "seconds": seconds,
            }
        )
        previous = blocks
    return {"model": model, "check": check, "rows": rows}


def report(result: dict) -> tuple[float, float]:
    rows = result["rows"]
    first, last = rows[0], rows[-1]
    label = f"{result['model']:8s} check {'on ' if result['check'] else 'off'}"
    print(f"\n{label}: round  blocks (new)  meshes MiB  points MiB  chunks re-sent  redundant  RSS MB  s")
    shown = sorted({0, 1, 2, 4, 9, 19, 39, len(rows) - 1} & set(range(len(rows))))
    for i in shown:
        row = rows[i]
        print(
            f"{'':22s}{i + 1:5d}  {row['blocks']:6d} ({row['new']:4d})  {row['mesh_mb']:10.2f}"
            f"  {row['points_mb']:10.2f}  {row['resent']:14d}  {row['redundant']:9d}  {row['rss_mb']:6.0f}"
            f"  {row['seconds']:.2f}"
        )
    blocks = 100.0 * (last["blocks"] - first["blocks"]) / first["blocks"]
    rss = max(r["rss_mb"] for r in rows[1:]) - first["rss_mb"] if len(rows) > 1 else 0.0
    print(
        f"{'':22s}after round 1: blocks {blocks:+.1f} % (target <= +5 %), RSS peak {rss:+.0f} MB "
        f"(target <= +50 MB), chunk meshes {last['mesh_mb'] - first['mesh_mb']:+.2f} MiB"
    )
    return blocks, rss


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument(
        "--rounds",
        type=int,
        default=60,
        help="rounds per configuration (a 10-minute replay of 5 views held 2 s each is 60 loops)",
    )
    parser.add_argument("--views", type=int, default=5, help="5: data/redkitchen; else views of the shared walk")
    parser.add_argument("--models", nargs="+", choices=MODELS, default=list(MODELS))
    parser.add_argument("--one", nargs=2, metavar=("MODEL", "CHECK"), help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.one:
        print(json.dumps(run_one(args.one[0], args.one[1] == "on", args.rounds, args.views)))
        return 0
    print(f"{args.views} views, {args.rounds} rounds; load average {os.getloadavg()[0]:.1f} on {os.cpu_count()} CPUs")
    summary = []
    for model in args.models:
        for check in ("off", "on"):
            child = subprocess.run(
                [
                    sys.executable,
                    "-P",
                    __file__,
                    "--one",
                    model,
                    check,
                    "--rounds",
                    str(args.rounds),
                    "--views",
                    str(args.views),
                ],
                capture_output=True,
                text=True,
                check=True,
            )
            blocks, rss = report(json.loads(child.stdout.strip().splitlines()[-1]))
            summary.append((model, check, blocks, rss))
    print(f"\nsummary (growth after round 1; load average {os.getloadavg()[0]:.1f}):")
    for model, check, blocks, rss in summary:
        print(f"  {model:8s} check {check:3s}: blocks {blocks:+6.1f} %, RSS {rss:+4.0f} MB")
    return 0


if __name__ == "__main__":
    sys.exit(main())
