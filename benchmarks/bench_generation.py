"""View generation timings on this machine (CPU) and the FLOP count of real Stable Diffusion 2 inpainting.

    python benchmarks/bench_generation.py                   # everything but the slow SD2 CPU step
    python benchmarks/bench_generation.py --sd2-cpu-step    # + one guided SD2 UNet step (bf16, ~1 min)

Sections:
1. OpenCV backend per view on the bundled redkitchen keyframes (RGB-D fusion, every keyframe turned
   +-30 deg): render (photo + cloud), inpaint, total.
2. The tiny random SD2-architecture pipeline of the tests, per 640x480 view (the pipeline code path;
   its speed says nothing about the real model).
3. ST-RoomNet per image: the tiny fixture model and the full ConvNeXt-Tiny size (random weights:
   the time does not depend on the values).
4. FLOPs of the real SD2 inpainting UNet / VAE at 512x512 (counted on the meta device, no weights),
   and what that means for one view.
"""

from __future__ import annotations

import argparse
import statistics
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import torch

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))
sys.path.insert(0, str(REPO / "test"))

from showroom_ros.generation.generate import GenerationRequest, generate_views  # noqa: E402
from showroom_ros.generation.inpainting import (  # noqa: E402
    DiffusersInpainter,
    InpaintSettings,
    OpenCVInpainter,
)
from showroom_ros.generation.st_roomnet import (  # noqa: E402
    STRoomNet,
    STRoomNetConfig,
    load_keras_h5,
    prepare_images,
)
from showroom_ros.io.datasets import load_frame_folder  # noqa: E402
from showroom_ros.reconstruction.rgbd import fuse_rgbd  # noqa: E402
from showroom_ros.reconstruction.surface import attach_mesh  # noqa: E402

SD2_UNET = dict(
    sample_size=64,
    in_channels=9,
    out_channels=4,
    layers_per_block=2,
    block_out_channels=(320, 640, 1280, 1280),
    down_block_types=("CrossAttnDownBlock2D", "CrossAttnDownBlock2D", "CrossAttnDownBlock2D", "DownBlock2D"),
    up_block_types=("UpBlock2D", "CrossAttnUpBlock2D", "CrossAttnUpBlock2D", "CrossAttnUpBlock2D"),
    cross_attention_dim=1024,
    attention_head_dim=(5, 10, 20, 20),
    use_linear_projection=True,
)
SD2_VAE = dict(
    in_channels=3,
    out_channels=3,
    down_block_types=["DownEncoderBlock2D"] * 4,
    up_block_types=["UpDecoderBlock2D"] * 4,
    block_out_channels=(128, 256, 512, 512),
    layers_per_block=2,
    latent_channels=4,
    sample_size=512,
)


def median(values: list[float]) -> float:
    return statistics.median(values) if values else float("nan")


def bench_opencv() -> None:
    keyframes = load_frame_folder(REPO / "data" / "redkitchen")
    reconstruction = fuse_rgbd(keyframes)
    images = [k.image for k in keyframes]
    started = time.perf_counter()
    meshed = attach_mesh(reconstruction)
    mesh_seconds = time.perf_counter() - started
    for name, source in (("cloud", reconstruction), ("mesh", meshed)):
        render, inpaint, total, holes = [], [], [], []
        for index in range(len(keyframes)):
            request = GenerationRequest(keyframe_index=index, yaw_angles_deg=[30.0, -30.0])
            started = time.perf_counter()
            views = generate_views(source, images, request, OpenCVInpainter())
            total.append((time.perf_counter() - started) / len(views))
            render += [v.timings["render"] for v in views]
            inpaint += [v.timings.get("inpaint", 0.0) for v in views]
            holes += [v.hole_fraction for v in views]
        detail = (
            f"{source.num_points} points"
            if name == "cloud"
            else (f"{meshed.mesh.num_triangles} triangles, meshing took {mesh_seconds:.1f} s")
        )
        print(
            f"[opencv/{name}] redkitchen ({detail}), 640x480, {len(render)} views at +-30 deg, "
            f"holes {min(holes):.0%}..{max(holes):.0%}"
        )
        print(
            f"[opencv/{name}] per view median: render {median(render):.3f} s, "
            f"inpaint {median(inpaint):.3f} s, "
            f"total {median(total):.3f} s"
        )


def bench_tiny_diffusers() -> None:
    from test_generation_inpainting import tiny_sd2_inpainting_pipeline

    with tempfile.TemporaryDirectory() as folder:
        tiny_sd2_inpainting_pipeline().save_pretrained(folder)
        for dtype in (torch.float32, torch.bfloat16):
            inpainter = DiffusersInpainter.from_pretrained(folder, device="cpu", dtype=dtype)
            rng = np.random.default_rng(0)
            image = rng.integers(0, 256, (480, 640, 3), dtype=np.uint8)
            mask = np.zeros((480, 640), bool)
            mask[:, :256] = True
            settings = InpaintSettings(steps=20, guidance_scale=7.5, seed=0)
            inpainter.inpaint(image, mask, InpaintSettings(steps=1))  # warm-up
            times = []
            for _ in range(3):
                started = time.perf_counter()
                inpainter.inpaint(image, mask, settings)
                times.append(time.perf_counter() - started)
            print(
                f"[tiny diffusers] {str(dtype).replace('torch.', '')}: 640x480, 20 guided steps: "
                f"{median(times):.2f} s per view (median of 3)"
            )


def bench_st_roomnet(shared: Path) -> None:
    torch.manual_seed(0)
    image = np.random.default_rng(0).integers(0, 256, (480, 640, 3), dtype=np.uint8)
    tiny_weights = shared / "fixtures" / "st_roomnet" / "tiny_stroomnet.h5"
    models = {"full ConvNeXt-Tiny (random weights)": STRoomNet(STRoomNetConfig()).eval()}
    if tiny_weights.is_file():
        models = {"tiny fixture": load_keras_h5(tiny_weights), **models}
    for name, model in models.items():
        batch = prepare_images([image])
        with torch.no_grad():
            model.warp(model(batch))
            times = []
            for _ in range(5):
                started = time.perf_counter()
                model.warp(model(prepare_images([image])))
                times.append(time.perf_counter() - started)
        parameters = sum(p.numel() for p in model.parameters())
        print(
            f"[st-roomnet] {name} ({parameters / 1e6:.2f} M parameters): "
            f"{median(times) * 1000:.0f} ms per image "
            "(resize + backbone + warp, float32, median of 5)"
        )


def sd2_flops() -> tuple[float, float, float]:
    """GFLOPs of one guided UNet step (batch 2), one VAE encode and one VAE decode at 512x512."""
    from diffusers import AutoencoderKL, UNet2DConditionModel
    from torch.utils.flop_counter import FlopCounterMode

    with torch.device("meta"):
        unet = UNet2DConditionModel(**SD2_UNET)
        vae = AutoencoderKL(**SD2_VAE)
    print(
        f"[sd2] UNet {sum(p.numel() for p in unet.parameters()) / 1e6:.1f} M parameters, "
        f"VAE {sum(p.numel() for p in vae.parameters()) / 1e6:.1f} M"
    )
    with FlopCounterMode(display=False) as counter:
        unet(
            torch.empty(2, 9, 64, 64, device="meta"),
            torch.tensor([500, 500], device="meta"),
            encoder_hidden_states=torch.empty(2, 77, 1024, device="meta"),
        )
    unet_step = counter.get_total_flops() / 1e9
    with FlopCounterMode(display=False) as counter:
        vae.encode(torch.empty(1, 3, 512, 512, device="meta"))
    encode = counter.get_total_flops() / 1e9
    with FlopCounterMode(display=False) as counter:
        vae.decode(torch.empty(1, 4, 64, 64, device="meta"))
    decode = counter.get_total_flops() / 1e9
    return unet_step, encode, decode


def bench_sd2_cpu_step() -> float:
    """Seconds of one guided SD2 UNet step (batch 2, 64x64 latents) in bf16 on this CPU, random weights."""
    from diffusers import UNet2DConditionModel

    unet = UNet2DConditionModel(**SD2_UNET).to(torch.bfloat16).eval()
    latents = torch.randn(2, 9, 64, 64, dtype=torch.bfloat16)
    text = torch.randn(2, 77, 1024, dtype=torch.bfloat16)
    timestep = torch.tensor([500, 500])
    times = []
    with torch.inference_mode():
        for _ in range(2):
            started = time.perf_counter()
            unet(latents, timestep, encoder_hidden_states=text)
            times.append(time.perf_counter() - started)
    return min(times)


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument(
        "--sd2-cpu-step", action="store_true", help="time one guided SD2 UNet step on this CPU"
    )
    parser.add_argument("--steps", type=int, default=30, help="denoising steps assumed for the SD2 estimate")
    args = parser.parse_args()
    print(f"torch {torch.__version__}, {torch.get_num_threads()} threads")
    bench_opencv()
    bench_tiny_diffusers()
    bench_st_roomnet(REPO.parent / "shared")
    unet_step, encode, decode = sd2_flops()
    per_view = args.steps * unet_step + encode + decode
    print(
        f"[sd2] 512x512: guided UNet step (batch 2) {unet_step:.0f} GFLOP, VAE encode {encode:.0f} GFLOP, "
        f"decode {decode:.0f} GFLOP; {args.steps} steps + VAE = {per_view / 1000:.1f} TFLOP per view"
    )
    if args.sd2_cpu_step:
        seconds = bench_sd2_cpu_step()
        rate = unet_step / seconds
        print(
            f"[sd2] measured guided UNet step on this CPU (bf16): {seconds:.1f} s = {rate:.0f} GFLOP/s; "
            f"a {args.steps}-step view at that rate: {per_view / rate / 60:.1f} min"
        )


if __name__ == "__main__":
    main()
