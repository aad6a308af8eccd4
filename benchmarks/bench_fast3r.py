"""Time the Fast3R forward (teacher and ShowRoom student) and compare it with a FLOP floor.

    python benchmarks/bench_fast3r.py                      # the full matrix (16 cases)
    python benchmarks/bench_fast3r.py --views 5 --sizes 512 --dtypes fp32 --models teacher

Every (model, dtype, resolution, view count) case runs in a fresh worker process, so its peak memory is
its own: the worker builds the model directly in the case's precision, runs one small warm-up forward
(2 views at 192x256: creates the kernels, pages in the weights), then times ``--repeats`` forwards under
``torch.inference_mode`` (the best is kept). Printed per case:

* time of the forward (network and output activations; no preprocessing or pose estimation);
* GFLOP counted by torch.utils.flop_counter on a meta-device copy (2 FLOPs per multiply-add of the linear
  layers, attention matmuls and convolutions) and the achieved GFLOP/s;
* floor = those FLOPs at this machine's matrix-multiply rate for the dtype (2048^3 ``torch.mm``), measured
  in the worker just before and after the timed forward (averaged, column "mm GF/s"; other processes on a
  shared machine move it), and time / floor;
* peak RSS of the worker (weights + activations + runtime) and its rise during the timed forward
  (ru_maxrss; on CUDA, max allocated instead).

bf16 is the fast reduced-precision path: ``set_compute_dtype(torch.bfloat16)`` (bf16 linear/conv weights,
fp32 LayerNorms, autocast inside), numerically identical to autocast over fp32 weights.
Weights are random (the 2.6 GB release cannot be downloaded here; ``--checkpoint`` uses a real one): the
speed of dense kernels does not depend on the values. Upstream's own code is not installed here, so no
comparison with it is made.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import resource
import subprocess
import sys
import time
from dataclasses import asdict, dataclass

import torch
from torch.utils.flop_counter import FlopCounterMode

from showroom_ros.models import Fast3R, Fast3RConfig, student_config
from showroom_ros.models.dtypes import TORCH_DTYPES
from showroom_ros.models.names import COMPUTE_DTYPES

SIZES = {512: (384, 512), 256: (192, 256)}  # long side -> (H, W) of a 4:3 photo
GIB = 2**30


@dataclass
class Result:
    model: str
    dtype: str
    height: int
    width: int
    views: int
    seconds: float
    gflop: float
    gflops_per_s: float
    floor_s: float
    ratio_to_floor: float
    matmul_gflops_during: float
    peak_memory_gb: float
    forward_memory_rise_gb: float


def model_config(name: str) -> Fast3RConfig:
    teacher = Fast3RConfig.vit_large_512()
    return teacher if name == "teacher" else student_config(teacher)


def matmul_rate(dtype: torch.dtype, device: torch.device, seconds: float = 3.0) -> float:
    """Sustained GFLOP/s of a large square matrix multiply (what the dense layers can reach at best)."""
    n = 2048
    a = torch.randn(n, n, device=device).to(dtype)
    b = torch.randn(n, n, device=device).to(dtype)
    torch.mm(a, b)
    count, start = 0, time.perf_counter()
    while time.perf_counter() - start < seconds:
        torch.mm(a, b)
        count += 1
    if device.type == "cuda":
        torch.cuda.synchronize()
    return 2 * n**3 * count / (time.perf_counter() - start) / 1e9


def build_model(name: str, dtype: torch.dtype, device: torch.device, checkpoint: str | None) -> Fast3R:
    config = model_config(name)
    if checkpoint:
        return Fast3R.from_pretrained(checkpoint, device=device, dtype=dtype, config=config)
    with torch.device("meta"):
        model = Fast3R(config)
    if dtype != torch.float32:
        model.set_compute_dtype(dtype)  # on meta: the weights are then allocated directly in bf16
    model.to_empty(device=device)
    generator = torch.Generator(device=device).manual_seed(0)
    with torch.no_grad():  # ViT-like magnitudes (no denormals), fast to fill
        for param_name, param in model.named_parameters():
            if param.ndim > 1:
                param.uniform_(-0.03, 0.03, generator=generator)
            elif param_name.endswith("weight"):
                param.fill_(1.0)
            else:
                param.zero_()
    model.decoder.reset_image_idx_embedding()
    return model.eval()


def count_flops(name: str, views: int, height: int, width: int) -> float:
    with torch.device("meta"):
        model = Fast3R(model_config(name)).eval()
    inputs = [{"img": torch.zeros(1, 3, height, width, device="meta")} for _ in range(views)]
    counter = FlopCounterMode(display=False)
    with counter, torch.inference_mode():
        model(inputs, sequential_image_ids=True)
    return float(counter.get_total_flops())


def current_rss() -> int:
    with open("/proc/self/statm") as handle:
        return int(handle.read().split()[1]) * os.sysconf("SC_PAGE_SIZE")


def worker(case: dict) -> dict:
    """One case in this (fresh) process: seconds, peak memory and its rise during the timed forward."""
    device = torch.device(case["device"])
    if case["threads"]:
        torch.set_num_threads(case["threads"])
    model = build_model(case["model"], TORCH_DTYPES[case["dtype"]], device, case["checkpoint"])

    def forward(views: int, height: int, width: int) -> float:
        inputs = [{"img": torch.rand(1, 3, height, width, device=device) * 2 - 1} for _ in range(views)]
        start = time.perf_counter()
        with torch.inference_mode():
            model(inputs, sequential_image_ids=True)
        if device.type == "cuda":
            torch.cuda.synchronize()
        return time.perf_counter() - start

    forward(2, 192, 256)  # warm-up
    if device.type == "cuda":
        torch.cuda.reset_peak_memory_stats()
        before = torch.cuda.memory_allocated()
    else:
        before = current_rss()
    # The matmul rate just before and after the forward: on a shared machine the floor moves with the load.
    rate_before = matmul_rate(TORCH_DTYPES[case["dtype"]], device, seconds=1.5)
    seconds = min(forward(case["views"], case["height"], case["width"]) for _ in range(case["repeats"]))
    if device.type == "cuda":
        peak = torch.cuda.max_memory_allocated()
    else:
        peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024
    rate_after = matmul_rate(TORCH_DTYPES[case["dtype"]], device, seconds=1.5)
    return {"seconds": seconds, "peak": peak, "before": before, "rate": (rate_before + rate_after) / 2}


def rate_worker(case: dict) -> dict:
    device = torch.device(case["device"])
    if case["threads"]:
        torch.set_num_threads(case["threads"])
    return {name: matmul_rate(TORCH_DTYPES[name], device) for name in case["dtypes"]}


def run_in_worker(case: dict) -> dict:
    completed = subprocess.run(
        [sys.executable, __file__, "--worker", json.dumps(case)], capture_output=True, text=True, check=False
    )
    if completed.returncode != 0:
        raise RuntimeError(f"worker failed for {case}:\n{completed.stderr[-3000:]}")
    return json.loads(completed.stdout.strip().splitlines()[-1])


def format_row(r: Result) -> str:
    return (
        f"{r.model:8} {r.dtype:5} {f'{r.height}x{r.width}':>8} {r.views:5d} {r.seconds:8.2f} {r.gflop:8.0f} "
        f"{r.gflops_per_s:8.1f} {r.floor_s:8.2f} {r.ratio_to_floor:7.2f} {r.peak_memory_gb:8.2f} "
        f"{r.forward_memory_rise_gb:8.2f} {r.matmul_gflops_during:8.0f}"
    )


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--models", nargs="+", default=["teacher", "student"], choices=["teacher", "student"])
    parser.add_argument("--dtypes", nargs="+", default=["fp32", "bf16"], choices=COMPUTE_DTYPES)
    parser.add_argument("--sizes", nargs="+", type=int, default=[512, 256], choices=sorted(SIZES))
    parser.add_argument("--views", nargs="+", type=int, default=[3, 5])
    parser.add_argument("--repeats", type=int, default=1, help="timed forwards per case (the best is kept)")
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--threads", type=int, default=0, help="torch threads (0: PyTorch's default)")
    parser.add_argument(
        "--checkpoint", default=None, help="a real teacher checkpoint instead of random weights"
    )
    parser.add_argument("--json", default=None, help="also write the results to this JSON file")
    parser.add_argument("--worker", default=None, help=argparse.SUPPRESS)
    args = parser.parse_args()

    if args.worker:
        case = json.loads(args.worker)
        print(json.dumps(rate_worker(case) if case.get("kind") == "rate" else worker(case)))
        return

    common = {"device": args.device, "threads": args.threads}
    print(
        f"torch {torch.__version__}, {platform.machine()}, device {args.device}, "
        f"{args.threads or torch.get_num_threads()} threads, load average {os.getloadavg()[0]:.2f}",
        flush=True,
    )
    rates = run_in_worker({**common, "kind": "rate", "dtypes": args.dtypes})
    print("matrix-multiply rate (2048^3): " + ", ".join(f"{k} {v:.0f} GFLOP/s" for k, v in rates.items()))
    print(
        f"{'model':8} {'dtype':5} {'HxW':>8} {'views':>5} {'time s':>8} {'GFLOP':>8} {'GFLOP/s':>8} "
        f"{'floor s':>8} {'x floor':>7} {'peak GB':>8} {'rise GB':>8} {'mm GF/s':>8}",
        flush=True,
    )
    results: list[Result] = []
    for model_name in args.models:
        for dtype_name in args.dtypes:
            for size in args.sizes:
                height, width = SIZES[size]
                for views in args.views:
                    flops = count_flops(model_name, views, height, width)
                    case = {
                        **common,
                        "model": model_name,
                        "dtype": dtype_name,
                        "height": height,
                        "width": width,
                        "views": views,
                        "repeats": args.repeats,
                        "checkpoint": args.checkpoint if model_name == "teacher" else None,
                    }
                    measured = run_in_worker(case)
                    seconds = measured["seconds"]
                    floor = flops / (measured["rate"] * 1e9)
                    result = Result(
                        model_name, dtype_name, height, width, views, seconds, flops / 1e9,
                        flops / seconds / 1e9, floor, seconds / floor, measured["rate"],
                        measured["peak"] / GIB, (measured["peak"] - measured["before"]) / GIB,
                    )  # fmt: skip
                    results.append(result)
                    print(format_row(result), flush=True)
    print(f"load average at the end: {os.getloadavg()[0]:.2f}")
    if args.json:
        with open(args.json, "w") as handle:
            json.dump({"matmul_gflops": rates, "results": [asdict(r) for r in results]}, handle, indent=2)


if __name__ == "__main__":
    main()
