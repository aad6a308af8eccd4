"""Issue 13 item 1: the Fast3R network on each inference engine vs our eager torch, side by side.

    pip install onnxruntime onnx openvino          # the optional engines (requirements-engines.txt)
    python -P benchmarks/bench_engines.py --sizes 256,512 --threads 2

The release ViT-L/512 config with seeded random weights (the 2.6 GB release cannot be downloaded here;
dense kernels do not care about the values), the 5 real redkitchen photos in ``data/`` as the views,
``--threads`` threads. Every (engine, precision, size) runs in its own process, so peak RSS is that
run's alone: eager torch fp32 first (it writes the reference pointmaps), eager torch bf16, then each
engine through :class:`showroom_ros.models.engines.NetworkEngine` exactly as the node uses it (build or
cache load, the accuracy gate on its probe, then the timed forwards). Timed: the whole
``Fast3R.forward`` (network on the engine, activations in torch), best of ``--repeats`` after one
warm-up (``--no-warmup`` skips it, for the slow runs at 512x384).

Printed per run: seconds, ratio to eager torch in the same precision (int8 against fp32), build/load
seconds, peak RSS, max |pts3d - eager fp32| and the relative depth error vs eager fp32 (median, p90) over
all pixels of the 5 views. Random weights make the pointmaps meaningless as geometry: the errors say how
far an engine moves the network's output, not how good a reconstruction is.
"""

from __future__ import annotations

import argparse
import json
import resource
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))  # run with -P: the script's folder is not on the path
from bench_fast3r import build_model

from showroom_ros.models import preprocess_images

REPO = Path(__file__).resolve().parents[1]
PHOTOS = sorted((REPO / "data" / "redkitchen").glob("frame-*.color.jpg"))
DEFAULT_RUNS = "torch:fp32,torch:bf16,compile:fp32,onnxruntime:fp32,onnxruntime:int8,openvino:fp32,openvino:bf16"


def peak_rss_mb() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def one_run(args: argparse.Namespace) -> dict:
    """Child process: one engine, one precision, one size; prints one JSON line."""
    torch.set_num_threads(args.threads)
    engine, precision = args.one.split(":")
    views = preprocess_images([str(p) for p in PHOTOS[: args.views]], size=args.size)
    # "torch:bf16" stores the weights in bf16 (model_dtype bf16 on a GPU); "torch-autocast:bf16" keeps them
    # fp32 and autocasts per op, as the node runs bf16 on a CPU and as the bf16 engines start from.
    dtype = torch.bfloat16 if (engine == "torch" and precision == "bf16") else torch.float32
    model = build_model(args.model, dtype, torch.device("cpu"), None)
    result: dict = {
        "model": args.model,
        "engine": engine,
        "precision": precision,
        "size": args.size,
        "executed": precision,
    }
    if engine not in ("torch", "torch-autocast"):
        network_engine = model.use_engine(engine, precision, cache_dir=args.cache, tolerance=float("inf"))
        started = time.perf_counter()
        network_engine.prepare(tuple(views[0]["img"].shape[-2:]))
        report = next(iter(network_engine.reports.values()))
        result.update(
            build_s=time.perf_counter() - started,
            built=report.built,
            executed=report.executed,
            gate_diff=report.max_abs_diff,
        )
    autocast = torch.bfloat16 if precision == "bf16" else None

    def forward() -> torch.Tensor:
        with torch.inference_mode():
            outputs = model(views, sequential_image_ids=True, autocast_dtype=autocast)
        return torch.stack([o["pts3d_in_other_view"][0] for o in outputs])

    if not args.no_warmup:
        forward()
    times = []
    for _ in range(args.repeats):
        started = time.perf_counter()
        points = forward()
        times.append(time.perf_counter() - started)
    result.update(seconds=min(times), peak_rss_mb=peak_rss_mb())
    reference_path = Path(args.reference)
    if engine == "torch" and precision == "fp32":
        torch.save(points, reference_path)
    reference = torch.load(reference_path, weights_only=True)
    difference = (points - reference).abs()
    depth_error = ((points[..., 2] - reference[..., 2]).abs() / reference[..., 2].abs().clamp(min=1e-6)).flatten()
    result.update(
        max_abs_diff=float(difference.max()),
        points_range=float(reference.max() - reference.min()),
        depth_rel_median=float(depth_error.median()),
        depth_rel_p90=float(depth_error.quantile(0.9)),
    )
    return result


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--sizes", default="256", help="long sides, comma separated: 256 (256x192), 512 (512x384)")
    parser.add_argument("--runs", default=DEFAULT_RUNS, help="engine:precision pairs, comma separated")
    parser.add_argument(
        "--model", default="teacher", choices=["teacher", "student"], help="release config, or its half-width student"
    )
    parser.add_argument("--views", type=int, default=5)
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--repeats", type=int, default=1)
    parser.add_argument("--no-warmup", action="store_true")
    parser.add_argument("--cache", default=None, help="engine cache folder (default: a fresh temporary one)")
    parser.add_argument("--timeout", type=float, default=3600, help="seconds per run")
    parser.add_argument("--one", help=argparse.SUPPRESS)
    parser.add_argument("--size", type=int, help=argparse.SUPPRESS)
    parser.add_argument("--reference", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.one:
        print("RESULT " + json.dumps(one_run(args)), flush=True)
        return

    cache = args.cache or tempfile.mkdtemp(prefix="showroom-engines-")
    Path(cache).mkdir(parents=True, exist_ok=True)
    print(
        f"load average {Path('/proc/loadavg').read_text().split()[:3]}; {args.model}, {args.views} views, "
        f"{args.threads} threads, torch {torch.__version__}; cache {cache}",
        flush=True,
    )
    rows = []
    for size in (int(s) for s in args.sizes.split(",")):
        reference = Path(cache) / f"reference-{args.model}-{size}.pt"
        eager: dict[str, float] = {}
        for run in args.runs.split(","):
            command = [
                sys.executable,
                "-P",
                __file__,
                "--one",
                run,
                "--size",
                str(size),
                "--reference",
                str(reference),
                "--model",
                args.model,
                "--views",
                str(args.views),
                "--threads",
                str(args.threads),
                "--repeats",
                str(args.repeats),
                "--cache",
                cache,
            ] + (["--no-warmup"] if args.no_warmup else [])
            started = time.perf_counter()
            try:
                done = subprocess.run(command, capture_output=True, text=True, timeout=args.timeout)
            except subprocess.TimeoutExpired:
                print(f"{run} at {size}: timed out after {args.timeout:.0f} s", flush=True)
                continue
            lines = [line for line in done.stdout.splitlines() if line.startswith("RESULT ")]
            if done.returncode != 0 or not lines:
                print(f"{run} at {size}: failed (exit {done.returncode}): {done.stderr.strip()[-800:]}", flush=True)
                continue
            result = json.loads(lines[-1][len("RESULT ") :])
            result["wall_s"] = time.perf_counter() - started
            if result["engine"] in ("torch", "torch-autocast"):
                eager[result["precision"]] = result["seconds"]
            baseline = eager.get("bf16" if result["precision"] == "bf16" else "fp32")
            result["ratio"] = result["seconds"] / baseline if baseline else float("nan")
            rows.append(result)
            print("RUN " + json.dumps(result), flush=True)
    print(f"\nload average after {Path('/proc/loadavg').read_text().split()[:3]}")
    print(
        "| size | engine | precision (executes) | seconds | ratio to eager | build/load s | peak RSS MB | "
        "max abs diff vs fp32 | depth rel. error median / p90 |"
    )
    print("|---|---|---|---|---|---|---|---|---|")
    for r in rows:
        height = r["size"] * 3 // 4
        build = f"{r['build_s']:.0f} ({'built' if r['built'] else 'cached'})" if "build_s" in r else "-"
        print(
            f"| {r['size']}x{height} | {r['engine']} | {r['precision']} ({r['executed']}) | {r['seconds']:.2f} | "
            f"{r['ratio']:.2f} | {build} | {r['peak_rss_mb']:.0f} | {r['max_abs_diff']:.1e} | "
            f"{r['depth_rel_median']:.1e} / {r['depth_rel_p90']:.1e} |"
        )


if __name__ == "__main__":
    main()
