"""Benchmarks for ``showroom distill`` (numbers go to docs/distillation.md).

    python benchmarks/bench_distill.py                 # everything (~10 min on 2 CPU cores)
    python benchmarks/bench_distill.py --only speed    # tiny-config training speed and memory
    python benchmarks/bench_distill.py --only vitl     # ViT-L teacher vs student: parameters, forward time
    python benchmarks/bench_distill.py --only losses   # dense vs RKD: student-to-teacher error, same steps

Each measurement runs in its own subprocess so that peak memory (ru_maxrss) belongs to it alone.
Rooms are crops of the real 7-Scenes redkitchen frames (repo data/ and ../shared/data when present); the
teacher is a tiny random-weight Fast3R (the shared golden config), so the pointmaps are arbitrary but the
question "how well does the student reproduce its teacher" is well posed.
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import resource
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parents[1]
SHARED = REPO.parent / "shared"
TINY_CONFIG = SHARED / "fixtures" / "fast3r" / "tiny_golden_config.json"
VITL_CONFIG = SHARED / "fixtures" / "fast3r" / "vitl512_config.json"
sys.path.insert(0, str(REPO))


def source_frames() -> list[Path]:
    frames = sorted((REPO / "data" / "redkitchen").glob("*.color.jpg"))
    frames += sorted((SHARED / "data" / "7scenes_redkitchen").glob("*.color.jpg"))
    return frames


def make_rooms(root: Path, num_rooms: int, frames: int, size: tuple[int, int]) -> Path:
    """Room r = a camera sliding across real frame r (crops of 360x480, resized to ``size``)."""
    import cv2

    sources = source_frames()
    height, width = size
    for r in range(num_rooms):
        image = cv2.imread(str(sources[r % len(sources)]))
        room = root / f"room{r:02d}"
        room.mkdir(parents=True, exist_ok=True)
        for f in range(frames):
            x, y = 5 + (150 * f) // max(1, frames - 1), 5 + (100 * f) // max(1, frames - 1)
            crop = cv2.resize(image[y : y + 360, x : x + 480], (width, height), interpolation=cv2.INTER_AREA)
            cv2.imwrite(str(room / f"frame-{f:03d}.jpg"), crop)
    return root


def make_teacher(directory: Path) -> Path:
    import torch

    from showroom_ros.models import Fast3R, Fast3RConfig

    torch.manual_seed(0)
    Fast3R(Fast3RConfig.from_json_file(TINY_CONFIG)).save_pretrained(directory)
    return directory


def base_config(rooms: Path, teacher: Path, output: Path, **sections: dict[str, Any]) -> dict[str, Any]:
    raw: dict[str, Any] = {
        "output_dir": str(output),
        "data": {"root": str(rooms), "num_views": 5, "image_size": [32, 48], "view_interval": 2,
                 "sample_stride": 1, "jitter": 1, "num_workers": 0},
        "model": {"teacher": str(teacher)},
        "loss": {"weights": {"dense": 1.0, "confidence": 0.1}},
        "optim": {"lr": 1e-3, "warmup_steps": 10},
        "train": {"batch_size": 4, "max_steps": 100, "log_every": 50, "eval_every": 0, "checkpoint_every": 0,
                  "tensorboard": False, "progress": False},
    }  # fmt: skip
    for key, values in sections.items():
        raw[key] = {**raw.get(key, {}), **values}
    return raw


def peak_rss_mib() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024.0


# ---------------------------------------------------------------------- workers (run in subprocesses)


def work_speed(args: dict[str, Any]) -> dict[str, Any]:
    """Training steps per second (data loading included) and peak memory for one tiny setup."""
    import torch

    from showroom_ros.distillation.config import DistillConfig
    from showroom_ros.distillation.trainer import Distiller

    torch.set_num_threads(args["threads"])
    tmp = Path(args["tmp"])
    h, w = args["size"]
    rooms = make_rooms(tmp / "rooms", 6, 12, (h + h // 4, w + w // 4))
    teacher = make_teacher(tmp / "teacher")
    weights = args["weights"]
    raw = base_config(
        rooms,
        teacher,
        tmp / "run",
        data={"image_size": [h, w], "num_views": args["views"]},
        loss={"weights": weights},
        train={"batch_size": args["batch"], "max_steps": 1000},
    )
    distiller = Distiller(DistillConfig.from_dict(raw))
    distiller.fit(stop_after=2, export=False)  # warm-up: allocator, first-call overheads
    start = time.perf_counter()
    steps = args["steps"]
    distiller.fit(stop_after=2 + steps, export=False)
    seconds = time.perf_counter() - start
    return {"steps_per_s": steps / seconds, "s_per_step": seconds / steps, "peak_rss_mib": peak_rss_mib()}


def work_vitl(args: dict[str, Any]) -> dict[str, Any]:
    """One forward of the ViT-L teacher or student at 256x192 (5 views), random weights, fp32 CPU."""
    import torch

    from showroom_ros.models import Fast3R, Fast3RConfig, student_config

    torch.set_num_threads(args["threads"])
    config = Fast3RConfig.from_json_file(VITL_CONFIG)
    if args["model"] == "student":
        config = student_config(config)
    with torch.device("meta"):
        model = Fast3R(config)
    heads = sum(p.numel() for n, p in model.named_parameters() if n.startswith("downstream_head"))
    total = sum(p.numel() for p in model.parameters())
    model = model.to_empty(device="cpu")
    generator = torch.Generator().manual_seed(0)
    with torch.no_grad():
        for name, param in model.named_parameters():
            if "norm" in name and name.endswith("weight"):
                param.fill_(1.0)
            else:
                param.normal_(0.0, 0.02, generator=generator)
    model.decoder.reset_image_idx_embedding()
    model.eval()
    views = [
        {"img": torch.rand(1, 3, 192, 256, generator=generator) * 2 - 1,
         "true_shape": torch.tensor([[192, 256]], dtype=torch.int32)}
        for _ in range(5)
    ]  # fmt: skip
    with torch.no_grad():
        start = time.perf_counter()
        out = model(views, image_idx_seed=0)
        seconds = time.perf_counter() - start
    assert out[0]["pts3d_in_other_view"].shape == (1, 192, 256, 3)
    return {
        "parameters": total,
        "head_parameters": heads,
        "forward_s": seconds,
        "peak_rss_mib": peak_rss_mib(),
    }


def work_losses(args: dict[str, Any]) -> dict[str, Any]:
    """Train the tiny student with one loss recipe; student-to-teacher error on held-out rooms."""
    import torch

    from showroom_ros.distillation.config import DistillConfig
    from showroom_ros.distillation.trainer import Distiller

    torch.set_num_threads(1)
    tmp = Path(args["tmp"])
    rooms = make_rooms(tmp / "rooms", 16, 16, (40, 60))
    teacher = make_teacher(tmp / "teacher")
    raw = base_config(
        rooms,
        teacher,
        tmp / "run",
        data={"val_holdout": 4},
        loss=args["loss"],
        train={"max_steps": args["steps"], "eval_batches": 0},
    )
    distiller = Distiller(DistillConfig.from_dict(raw))
    before = distiller.evaluate()
    start = time.perf_counter()
    summary = distiller.fit(export=False)
    return {"before": before, "after": summary["eval"], "train_s": time.perf_counter() - start}


WORKERS = {"speed": work_speed, "vitl": work_vitl, "losses": work_losses}


def run_worker(kind: str, args: dict[str, Any]) -> dict[str, Any]:
    """Run one worker in a fresh interpreter; returns its JSON result."""
    with tempfile.TemporaryDirectory(prefix="bench_distill_") as tmp:
        payload = json.dumps({**args, "tmp": tmp})
        env = {**os.environ, "PYTHONPATH": str(REPO)}
        result = subprocess.run(
            [sys.executable, __file__, "--worker", kind, payload],
            capture_output=True,
            text=True,
            env=env,
            check=False,
        )
        if result.returncode != 0:
            raise RuntimeError(f"{kind} worker failed:\n{result.stderr[-4000:]}")
        return json.loads(result.stdout.strip().splitlines()[-1])


# ---------------------------------------------------------------------- reports


def bench_speed() -> None:
    print("## Tiny config: training speed (teacher + student forward, student backward, AdamW step)")
    print("setup | threads | s/step | steps/s | peak RSS MiB")
    dense = {"dense": 1.0, "confidence": 0.1}
    both = {**dense, "rkd_distance": 1.0, "rkd_angle": 2.0, "cosine": 1.0}
    small = {"size": [32, 48], "batch": 4, "steps": 40}
    setups = [
        ("4 rooms x 3 views, 32x48, dense", {**small, "views": 3, "weights": dense}),
        ("4 rooms x 5 views, 32x48, dense+RKD", {**small, "views": 5, "weights": both}),
        ("4 rooms x 5 views, 192x256, dense+RKD", {**small, "size": [192, 256], "views": 5, "weights": both,
                                                    "steps": 5}),
    ]  # fmt: skip
    for name, args in setups:
        for threads in (1, 2):
            r = run_worker("speed", {**args, "threads": threads})
            speed = f"{r['s_per_step']:.3f} | {r['steps_per_s']:.2f}"
            print(f"{name} | {threads} | {speed} | {r['peak_rss_mib']:.0f}")
            sys.stdout.flush()


def bench_vitl() -> None:
    print("## ViT-L (release config), random weights, fp32 CPU, 5 views at 256x192, one forward each")
    print("model | parameters | DPT head parameters (both heads) | forward s | peak RSS MiB")
    threads = os.cpu_count() or 1
    for model in ("teacher", "student"):
        r = run_worker("vitl", {"model": model, "threads": threads})
        print(f"{model} | {r['parameters']:,} | {r['head_parameters']:,} | {r['forward_s']:.2f} | "
              f"{r['peak_rss_mib']:.0f}")  # fmt: skip
        sys.stdout.flush()


def bench_losses(steps: int) -> None:
    print(f"## Dense vs RKD: {steps} optimiser steps each, same data/seed/LR; 4 held-out rooms")
    print("Student-to-teacher pointmap error (confidence-weighted, relative to the scene's mean depth),")
    print("before -> after training; 'aligned' = after the best per-room (global) / per-view (local) scale.")
    print("recipe | global | global aligned | local | local aligned | train s")
    rkd = {"rkd_distance": 1.0, "rkd_angle": 2.0, "cosine": 1.0}
    dense = {"dense": 1.0, "confidence": 0.1}
    recipes = {
        "dense + confidence": ({"weights": dense}),
        "ShowRoom RKD (dist 1, angle 2, cosine 1), global-head features": ({"weights": rkd}),
        "RKD, features from both heads": ({"weights": rkd, "feature_heads": ["global", "local"]}),
        "RKD, global features pooled 2x3 per view": ({"weights": rkd, "feature_pool": [2, 3]}),
        "dense + confidence + RKD": ({"weights": {**dense, **rkd}}),
    }
    for name, loss in recipes.items():
        r = run_worker("losses", {"loss": loss, "steps": steps})
        b, a = r["before"], r["after"]
        cells = [
            f"{b[key]:.4f} -> {a[key]:.4f}"
            for key in (
                "pts_err_global",
                "pts_err_global_scale_aligned",
                "pts_err_local",
                "pts_err_local_scale_aligned",
            )
        ]
        print(f"{name} | {' | '.join(cells)} | {r['train_s']:.0f}")
        sys.stdout.flush()


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--only", choices=["speed", "vitl", "losses"], action="append")
    parser.add_argument("--steps", type=int, default=300, help="optimiser steps per loss recipe")
    parser.add_argument("--worker", help=argparse.SUPPRESS)
    parser.add_argument("payload", nargs="?", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.worker:
        logging.basicConfig(level=logging.WARNING)
        print(json.dumps(WORKERS[args.worker](json.loads(args.payload))))
        return
    if not TINY_CONFIG.is_file():
        sys.exit(f"needs the shared fixtures at {SHARED}")
    import torch

    print(f"torch {torch.__version__}, {os.cpu_count()} CPU cores")
    chosen = args.only or ["speed", "vitl", "losses"]
    if "speed" in chosen:
        bench_speed()
    if "vitl" in chosen:
        bench_vitl()
    if "losses" in chosen:
        bench_losses(args.steps)


if __name__ == "__main__":
    main()
