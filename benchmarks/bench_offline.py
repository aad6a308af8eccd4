"""Time to first picture of `showroom reconstruct` on the sample folder, for every available backend.

Each run is a fresh process, as a user would start it: ``python -m showroom_ros.apps.cli reconstruct
data/redkitchen --backend NAME --json``. Reported per backend: the wall time of the whole command
(interpreter start, imports, reading, reconstructing, writing every file), the time until the PNG
preview was written measured inside the command, and the stages the pipeline reported. Backends
that cannot run here (no weights, no pycolmap) are listed with the reason.

    python benchmarks/bench_offline.py [--repeats 2] [--path data/redkitchen] [--backends rgbd,sfm]
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]


def run_once(path: Path, backend: str, extra: list[str], out: Path) -> tuple[float, dict | None, str]:
    command = [
        sys.executable,
        "-m",
        "showroom_ros.apps.cli",
        "reconstruct",
        str(path),
        "--backend",
        backend,
        "--out",
        str(out),
        "--json",
        "-q",
        *extra,
    ]
    started = time.perf_counter()
    result = subprocess.run(command, capture_output=True, text=True, cwd=REPO, check=False)
    wall = time.perf_counter() - started
    if result.returncode != 0:
        return wall, None, result.stderr.strip().splitlines()[-1] if result.stderr.strip() else "failed"
    return wall, json.loads(result.stdout), ""


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--path", default=str(REPO / "data" / "redkitchen"))
    parser.add_argument("--backends", default="rgbd,sfm,fast3r,showroom")
    parser.add_argument("--repeats", type=int, default=2)
    parser.add_argument("--model", help="weights for fast3r/showroom (default: none configured)")
    args = parser.parse_args()

    print(
        f"python {platform.python_version()}, {os.cpu_count()} CPUs, load average "
        f"{os.getloadavg()[0]:.1f} at start; input {args.path}; {args.repeats} run(s) each"
    )
    rows = []
    for backend in args.backends.split(","):
        for mesh in (True, False):
            extra = [] if mesh else ["--no-mesh"]
            if args.model and backend in ("fast3r", "showroom"):
                extra += ["--model", args.model]
            walls, firsts, summaries, error = [], [], [], ""
            for _ in range(args.repeats):
                with tempfile.TemporaryDirectory() as folder:
                    wall, summary, error = run_once(Path(args.path), backend, extra, Path(folder) / "out")
                if summary is None:
                    break
                walls.append(wall)
                firsts.append(summary["seconds"]["first_picture"])
                summaries.append(summary)
            label = f"{backend}{'' if mesh else ' --no-mesh'}"
            if not summaries:
                rows.append(f"| {label} | unavailable: {error} | | | |")
                print(rows[-1], flush=True)
                break  # the same reason holds without the mesh
            last = summaries[-1]
            stages = ", ".join(
                [f"startup {last['seconds']['startup']:.2f}", f"load {last['seconds']['load']:.2f}"]
                + [
                    f"{k[6:]} {v:.2f}"
                    for k, v in last["seconds"].items()
                    if k.startswith("stage_") and not k.endswith("_total")
                ]
                + [f"write {last['seconds']['write']:.2f}"]
            )
            rows.append(
                f"| {label} | {statistics.median(walls):.1f} s | {statistics.median(firsts):.1f} s | "
                f"{last['points']:,} pts, {last['triangles']:,} tris | {stages} |"
            )
            print(rows[-1], flush=True)
    print(
        "\n| backend | command wall time (median) | first picture (in command) | result "
        "| stages (s, last run) |"
    )
    print("|---|---|---|---|---|")
    print("\n".join(rows))
    return 0


if __name__ == "__main__":
    sys.exit(main())
