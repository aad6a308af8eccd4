"""Inpainting backends: a tiny random SD2-architecture pipeline end to end, OpenCV on real frames."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from showroom_ros.generation.inpainting import (
    DiffusersInpainter,
    InpaintSettings,
    OpenCVInpainter,
    load_inpainter,
    snap_size,
)
from showroom_ros.io.datasets import load_frame_folder


def tiny_sd2_inpainting_pipeline(in_channels: int = 9):
    """A randomly initialised Stable Diffusion 2 inpainting pipeline, small enough for a unit test.

    Same architecture family as SD2 inpainting: a UNet with 9 input channels (4 latent + 1 mask +
    4 masked-image latents), linear attention projections, an OpenCLIP-style text encoder (GELU), a
    4-level (x8) KL autoencoder and a DDIM scheduler. The CLIP tokenizer's vocabulary is built in
    memory (printable ASCII characters with and without the end-of-word marker, plus 2 merges).
    """
    import torch
    from diffusers import AutoencoderKL, DDIMScheduler, StableDiffusionInpaintPipeline, UNet2DConditionModel
    from transformers import CLIPTextConfig, CLIPTextModel, CLIPTokenizer

    vocab = {"<|startoftext|>": 0, "<|endoftext|>": 1}
    characters = [chr(code) for code in range(33, 127)]
    for suffix in ("", "</w>"):
        for character in characters:
            vocab[character + suffix] = len(vocab)
    for token in ("al", "wal", "wall</w>"):
        vocab[token] = len(vocab)
    tokenizer = CLIPTokenizer(
        vocab=vocab, merges=[("a", "l"), ("w", "al"), ("wal", "l</w>")], model_max_length=77
    )
    torch.manual_seed(0)
    text_encoder = CLIPTextModel(
        CLIPTextConfig(
            vocab_size=len(vocab),
            hidden_size=32,
            intermediate_size=37,
            num_attention_heads=4,
            num_hidden_layers=2,
            max_position_embeddings=77,
            hidden_act="gelu",
            projection_dim=32,
            bos_token_id=tokenizer.bos_token_id,
            eos_token_id=tokenizer.eos_token_id,
            pad_token_id=tokenizer.pad_token_id,
        )
    )
    unet = UNet2DConditionModel(
        sample_size=16,
        in_channels=in_channels,
        out_channels=4,
        layers_per_block=1,
        block_out_channels=(32, 64),
        down_block_types=("DownBlock2D", "CrossAttnDownBlock2D"),
        up_block_types=("CrossAttnUpBlock2D", "UpBlock2D"),
        cross_attention_dim=32,
        attention_head_dim=(2, 4),
        use_linear_projection=True,
        norm_num_groups=8,
    )
    vae = AutoencoderKL(
        in_channels=3,
        out_channels=3,
        down_block_types=["DownEncoderBlock2D"] * 4,
        up_block_types=["UpDecoderBlock2D"] * 4,
        block_out_channels=(8, 16, 16, 16),
        latent_channels=4,
        norm_num_groups=8,
        sample_size=128,
    )
    scheduler = DDIMScheduler(
        beta_start=0.00085,
        beta_end=0.012,
        beta_schedule="scaled_linear",
        clip_sample=False,
        set_alpha_to_one=False,
        steps_offset=1,
    )
    return StableDiffusionInpaintPipeline(
        vae=vae,
        text_encoder=text_encoder,
        tokenizer=tokenizer,
        unet=unet,
        scheduler=scheduler,
        safety_checker=None,
        feature_extractor=None,
        requires_safety_checker=False,
    )


@pytest.fixture(scope="module")
def tiny_pipeline_dir(tmp_path_factory) -> Path:
    pytest.importorskip("diffusers")
    folder = tmp_path_factory.mktemp("tiny_sd2_inpainting")
    tiny_sd2_inpainting_pipeline().save_pretrained(folder)
    return folder


@pytest.fixture(scope="module")
def kitchen(repo_root: Path) -> np.ndarray:
    return load_frame_folder(repo_root / "data" / "redkitchen", with_depth=False, names=["frame-000250"])[
        0
    ].image


def scene(height: int = 70, width: int = 100) -> tuple[np.ndarray, np.ndarray]:
    rng = np.random.default_rng(3)
    image = rng.integers(0, 256, (height, width, 3), dtype=np.uint8)
    mask = np.zeros((height, width), bool)
    mask[:, : width // 3] = True
    image[mask] = 0
    return image, mask


def test_snap_size() -> None:
    assert snap_size(640, 480) == (640, 480)
    assert snap_size(100, 70) == (96, 72)
    assert snap_size(1280, 960, max_side=768) == (768, 576)
    assert snap_size(3, 3) == (8, 8)


def test_tiny_diffusers_pipeline_end_to_end(tiny_pipeline_dir: Path) -> None:
    import torch

    inpainter = DiffusersInpainter.from_pretrained(tiny_pipeline_dir, device="cpu", dtype=torch.float32)
    assert inpainter.pipeline.unet.config.in_channels == 9
    image, mask = scene()  # 100x70: not a multiple of 8
    settings = InpaintSettings(
        prompt="a plain wall", negative_prompt="objects", steps=3, guidance_scale=7.5, seed=5
    )
    steps: list[tuple[int, int]] = []
    result = inpainter.inpaint(image, mask, settings, on_step=lambda step, total: steps.append((step, total)))
    assert result.shape == image.shape and result.dtype == np.uint8
    np.testing.assert_array_equal(result[~mask], image[~mask])
    assert result[mask].std() > 0, "the hole was painted"
    assert steps == [(1, 3), (2, 3), (3, 3)]
    again = inpainter.inpaint(image, mask, settings)
    np.testing.assert_array_equal(again, result)
    other_seed = inpainter.inpaint(image, mask, InpaintSettings("a plain wall", "objects", 3, 7.5, seed=6))
    assert np.any(other_seed[mask] != result[mask])
    nothing = inpainter.inpaint(image, np.zeros_like(mask), settings)
    np.testing.assert_array_equal(nothing, image)


def test_load_inpainter_diffusers_default_dtype_and_scheduler(tiny_pipeline_dir: Path) -> None:
    inpainter, status = load_inpainter("diffusers", str(tiny_pipeline_dir), "cpu", scheduler="dpm++")
    assert isinstance(inpainter, DiffusersInpainter), status
    assert "bfloat16" in status and "cpu" in status  # bf16 is the CPU default
    assert type(inpainter.pipeline.scheduler).__name__ == "DPMSolverMultistepScheduler"
    image, mask = scene(64, 64)
    result = inpainter.inpaint(image, mask, InpaintSettings(steps=2, seed=1))
    np.testing.assert_array_equal(result[~mask], image[~mask])
    auto, status = load_inpainter("auto", str(tiny_pipeline_dir), "cpu")
    assert isinstance(auto, DiffusersInpainter), status


def test_fallbacks_and_errors(tmp_path: Path) -> None:
    pytest.importorskip("diffusers")
    inpainter, status = load_inpainter("auto")
    assert isinstance(inpainter, OpenCVInpainter) and "no diffusion model configured" in status
    inpainter, status = load_inpainter("diffusers", tmp_path / "no_such_model", "cpu")
    assert isinstance(inpainter, OpenCVInpainter)
    assert "could not load" in status and "falling back to OpenCV" in status
    # A text-to-image UNet (4 input channels) is not an inpainting model.
    plain = tmp_path / "not_inpainting"
    tiny_sd2_inpainting_pipeline(in_channels=4).save_pretrained(plain)
    inpainter, status = load_inpainter("diffusers", plain, "cpu")
    assert isinstance(inpainter, OpenCVInpainter) and "9" in status and "inpainting" in status
    with pytest.raises(ValueError, match="unknown inpainting backend"):
        load_inpainter("dall-e")


def test_opencv_on_the_sample_kitchen(kitchen: np.ndarray) -> None:
    inpainter, _ = load_inpainter("opencv")
    height, width = kitchen.shape[:2]
    for name, mask in (("large", np.s_[:, : width * 2 // 5]), ("small", np.s_[200:230, 300:340])):
        hole = np.zeros((height, width), bool)
        hole[mask] = True
        damaged = kitchen.copy()
        damaged[hole] = 0
        filled = inpainter.inpaint(damaged, hole, InpaintSettings())
        np.testing.assert_array_equal(filled[~hole], kitchen[~hole])
        error_filled = np.abs(filled[hole].astype(int) - kitchen[hole]).mean()
        error_black = np.abs(damaged[hole].astype(int) - kitchen[hole]).mean()
        assert error_filled < 0.5 * error_black, f"{name} hole: {error_filled:.1f} vs {error_black:.1f}"
        assert not np.any(np.all(filled[hole] == 0, axis=1)), f"{name} hole: black pixels left"
    with pytest.raises(ValueError, match="whole image"):
        inpainter.inpaint(kitchen, np.ones((height, width), bool), InpaintSettings())
    with pytest.raises(ValueError, match="mask"):
        inpainter.inpaint(kitchen, np.ones((10, 10), bool), InpaintSettings())
