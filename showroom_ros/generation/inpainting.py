"""Filling the holes of a novel view: Stable Diffusion 2 inpainting, or OpenCV (Telea) when no weights.

Both backends share :class:`Inpainter`: an RGB image, a boolean mask (True = generate) and
:class:`InpaintSettings` in, an RGB image of the same size out, with every pixel outside the mask
left exactly as it was (the diffusion VAE round trip would otherwise blur the known content).
:func:`load_inpainter` picks a backend and falls back to OpenCV with a clear status message when the
diffusion weights cannot be loaded, so generation always produces something.
"""

from __future__ import annotations

import logging
import math
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Protocol

import cv2
import numpy as np

LOG = logging.getLogger(__name__)

DEFAULT_MODEL = "stabilityai/stable-diffusion-2-inpainting"
DEFAULT_PROMPT = (
    "the same empty room continued: plain walls and floor with the same materials, colours and lighting, "
    "no new objects, photorealistic"
)
DEFAULT_NEGATIVE_PROMPT = (
    "furniture, objects, people, animals, text, watermark, frame, border, blurry, distorted, low quality"
)
BACKENDS = ("auto", "opencv", "diffusers")
SCHEDULERS = ("default", "ddim", "pndm", "dpm++", "euler", "euler_a", "unipc", "lms")
SIZE_MULTIPLE = 8
"""The VAE downsamples by 8, so diffusion sizes must be multiples of 8."""

StepCallback = Callable[[int, int], None]


@dataclass
class InpaintSettings:
    """What to generate and how hard to try; only the diffusion backend uses them (OpenCV ignores them)."""

    prompt: str = DEFAULT_PROMPT
    negative_prompt: str = DEFAULT_NEGATIVE_PROMPT
    steps: int = 30
    guidance_scale: float = 7.5
    seed: int | None = 0


class Inpainter(Protocol):
    """Anything that fills masked pixels of an RGB image."""

    name: str

    def inpaint(
        self,
        image: np.ndarray,
        mask: np.ndarray,
        settings: InpaintSettings,
        on_step: StepCallback | None = None,
    ) -> np.ndarray:
        """``image`` (H, W, 3) uint8 RGB, ``mask`` (H, W) bool True where to generate -> (H, W, 3) uint8."""


def check_image_and_mask(image: np.ndarray, mask: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    image = np.asarray(image)
    mask = np.asarray(mask)
    if image.ndim != 3 or image.shape[2] != 3 or image.dtype != np.uint8:
        raise ValueError(f"image must be (H, W, 3) uint8 RGB, got {image.shape} {image.dtype}")
    if mask.shape != image.shape[:2]:
        raise ValueError(f"mask must be {image.shape[:2]} to match the image, got {mask.shape}")
    return image, mask.astype(bool)


def composite(original: np.ndarray, generated: np.ndarray, mask: np.ndarray) -> np.ndarray:
    """Generated pixels inside the mask, the original ones outside."""
    result = original.copy()
    result[mask] = generated[mask]
    return result


class OpenCVInpainter:
    """Telea's fast-marching inpainting: instant, needs no weights, smears colours into large holes.

    Telea's cost grows with the hole area, so a large hole is filled on a downscaled copy (the hole
    then has at most ``max_hole_pixels`` pixels) and upscaled into place: a 50 % hole in a 640x480
    view costs ~0.1 s instead of ~0.7 s, and the fill is smooth anyway.
    """

    name = "opencv"

    def __init__(self, radius: int = 5, max_hole_pixels: int = 20_000) -> None:
        if radius < 1 or max_hole_pixels < 1:
            raise ValueError("radius and max_hole_pixels must be >= 1")
        self.radius = int(radius)
        self.max_hole_pixels = int(max_hole_pixels)

    def inpaint(
        self,
        image: np.ndarray,
        mask: np.ndarray,
        settings: InpaintSettings | None = None,
        on_step: StepCallback | None = None,
    ) -> np.ndarray:
        image, mask = check_image_and_mask(image, mask)
        hole_pixels = int(mask.sum())
        if hole_pixels == 0:
            return image.copy()
        if hole_pixels == mask.size:
            raise ValueError("the mask covers the whole image: OpenCV inpainting needs some known pixels")
        factor = max(1, math.ceil(math.sqrt(hole_pixels / self.max_hole_pixels)))
        height, width = mask.shape
        mask_u8 = mask.astype(np.uint8)
        if factor == 1:
            filled = cv2.inpaint(image, mask_u8, self.radius, cv2.INPAINT_TELEA)
        else:
            size = (max(1, width // factor), max(1, height // factor))
            small_image = cv2.resize(image, size, interpolation=cv2.INTER_AREA)
            # A pixel is known at low resolution only if all of it was known: no black hole colour leaks in.
            small_hole = cv2.resize(mask_u8, size, interpolation=cv2.INTER_AREA) > 0
            small_hole |= cv2.resize(mask_u8, size, interpolation=cv2.INTER_NEAREST) > 0
            if small_hole.all():
                raise ValueError("the mask leaves too few known pixels to inpaint from")
            small = cv2.inpaint(small_image, small_hole.astype(np.uint8), self.radius, cv2.INPAINT_TELEA)
            filled = cv2.resize(small, (width, height), interpolation=cv2.INTER_LINEAR)
        if on_step is not None:
            on_step(1, 1)
        return composite(image, filled, mask)


def snap_size(
    width: int, height: int, max_side: int | None = None, multiple: int = SIZE_MULTIPLE
) -> tuple[int, int]:
    """Diffusion working size: aspect kept, longest side <= ``max_side``, both rounded to multiples of 8."""
    scale = 1.0
    if max_side is not None and max(width, height) > max_side:
        scale = max_side / max(width, height)
    snapped_w = max(multiple, round(width * scale / multiple) * multiple)
    snapped_h = max(multiple, round(height * scale / multiple) * multiple)
    return snapped_w, snapped_h


def default_device() -> str:
    import torch

    return "cuda" if torch.cuda.is_available() else "cpu"


def default_dtype(device: str):
    """fp16 on CUDA (what SD2 was released for); bf16 on CPU (half the memory of fp32, fp16 is slow there)."""
    import torch

    return torch.float16 if str(device).startswith("cuda") else torch.bfloat16


def make_scheduler(name: str, config: Any):
    """A diffusers scheduler by short name, built from the pipeline's own scheduler config."""
    import diffusers

    classes = {
        "ddim": diffusers.DDIMScheduler,
        "pndm": diffusers.PNDMScheduler,
        "dpm++": diffusers.DPMSolverMultistepScheduler,
        "euler": diffusers.EulerDiscreteScheduler,
        "euler_a": diffusers.EulerAncestralDiscreteScheduler,
        "unipc": diffusers.UniPCMultistepScheduler,
        "lms": diffusers.LMSDiscreteScheduler,
    }
    if name not in classes:
        raise ValueError(f"unknown scheduler {name!r} (choose from {', '.join(SCHEDULERS)})")
    return classes[name].from_config(config)


class DiffusersInpainter:
    """Stable Diffusion inpainting through diffusers' ``StableDiffusionInpaintPipeline``.

    Images are resized to :func:`snap_size` (``max_side`` 768 by default: SD2 inpainting was trained
    at 512, a 640x480 keyframe stays at 640x480) and the result is resized back and composited
    into the original, so only masked pixels change. The seed drives a CPU generator, so a seed gives
    the same noise on any device.
    """

    name = "diffusers"

    def __init__(self, pipeline: Any, device: str, max_side: int | None = 768, model: str = "") -> None:
        self.pipeline = pipeline
        self.device = device
        self.max_side = max_side
        self.model = model

    @classmethod
    def from_pretrained(
        cls,
        model: str | Path = DEFAULT_MODEL,
        device: str | None = None,
        dtype: Any = None,
        scheduler: str = "default",
        max_side: int | None = 768,
        local_files_only: bool | None = None,
        **pipeline_kwargs: Any,
    ) -> DiffusersInpainter:
        """Load a hub id (from the local Hugging Face cache when offline) or a ``save_pretrained`` folder."""
        import torch
        from diffusers import StableDiffusionInpaintPipeline

        device = device or default_device()
        dtype = dtype or default_dtype(device)
        if isinstance(dtype, str):
            dtype = {"float32": torch.float32, "float16": torch.float16, "bfloat16": torch.bfloat16}[dtype]
        source = Path(model).expanduser()
        location = str(source) if source.exists() else str(model)
        kwargs: dict[str, Any] = {"dtype": dtype, "safety_checker": None, "requires_safety_checker": False}
        if local_files_only is not None:
            kwargs["local_files_only"] = local_files_only
        kwargs.update(pipeline_kwargs)
        pipeline = StableDiffusionInpaintPipeline.from_pretrained(location, **kwargs)
        if pipeline.unet.config.in_channels != 9:
            channels = pipeline.unet.config.in_channels
            raise ValueError(
                f"{model} is not an inpainting model: its UNet takes {channels} input channels, "
                "an inpainting UNet takes 9 (latents, mask, masked image)"
            )
        if scheduler != "default":
            pipeline.scheduler = make_scheduler(scheduler, pipeline.scheduler.config)
        pipeline = pipeline.to(device)
        pipeline.set_progress_bar_config(disable=True)
        return cls(pipeline, device, max_side, str(model))

    def inpaint(
        self,
        image: np.ndarray,
        mask: np.ndarray,
        settings: InpaintSettings,
        on_step: StepCallback | None = None,
    ) -> np.ndarray:
        import torch
        from PIL import Image

        image, mask = check_image_and_mask(image, mask)
        if not mask.any():
            return image.copy()
        height, width = mask.shape
        work_w, work_h = snap_size(width, height, self.max_side)
        work_image = cv2.resize(image, (work_w, work_h), interpolation=cv2.INTER_AREA)
        # A working pixel with any missing part is missing: no hole colour leaks into the conditioning image.
        work_mask = (
            cv2.resize(mask.astype(np.uint8) * 255, (work_w, work_h), interpolation=cv2.INTER_AREA) > 0
        )
        generator = None
        if settings.seed is not None and settings.seed >= 0:
            generator = torch.Generator(device="cpu").manual_seed(int(settings.seed))

        total = int(settings.steps)

        def step_end(pipeline: Any, step: int, timestep: Any, tensors: dict[str, Any]) -> dict[str, Any]:
            if on_step is not None:
                on_step(step + 1, total)
            return tensors

        with torch.inference_mode():
            output = self.pipeline(
                prompt=settings.prompt,
                negative_prompt=settings.negative_prompt or None,
                image=Image.fromarray(work_image),
                mask_image=Image.fromarray(work_mask.astype(np.uint8) * 255),
                height=work_h,
                width=work_w,
                num_inference_steps=total,
                guidance_scale=float(settings.guidance_scale),
                generator=generator,
                output_type="np",
                callback_on_step_end=step_end,
            )
        generated = np.clip(np.rint(np.asarray(output.images[0], dtype=np.float32) * 255.0), 0, 255).astype(
            np.uint8
        )
        if generated.shape[:2] != (height, width):
            generated = cv2.resize(generated, (width, height), interpolation=cv2.INTER_CUBIC)
        return composite(image, generated, mask)


def load_inpainter(
    backend: str = "auto",
    model: str | Path | None = None,
    device: str | None = None,
    **kwargs: Any,
) -> tuple[Inpainter, str]:
    """The inpainter to use and a one-line status saying which one and why.

    ``auto`` uses diffusion when a ``model`` is configured, else OpenCV. ``diffusers`` without a model
    tries :data:`DEFAULT_MODEL` (from the local Hugging Face cache when there is no network). Any
    failure to load diffusion weights falls back to OpenCV; the status then says what failed.
    Extra keyword arguments go to :meth:`DiffusersInpainter.from_pretrained`.
    """
    if backend not in BACKENDS:
        raise ValueError(f"unknown inpainting backend {backend!r} (choose from {', '.join(BACKENDS)})")
    if backend == "opencv" or (backend == "auto" and not model):
        why = "requested" if backend == "opencv" else "no diffusion model configured"
        return (
            OpenCVInpainter(),
            f"OpenCV Telea inpainting ({why}; instant, but only smears colours into holes)",
        )
    model = model or DEFAULT_MODEL
    try:
        inpainter = DiffusersInpainter.from_pretrained(model, device=device, **kwargs)
    except Exception as error:  # any loading failure must degrade, never break generation
        reason = str(error).strip().splitlines()[0] if str(error).strip() else type(error).__name__
        LOG.warning("could not load inpainting model %s: %s", model, reason)
        return OpenCVInpainter(), (
            f"could not load inpainting model {model} ({type(error).__name__}: {reason}); "
            "falling back to OpenCV Telea inpainting"
        )
    dtype = str(inpainter.pipeline.unet.dtype).replace("torch.", "")
    return inpainter, f"Stable Diffusion inpainting {model} on {inpainter.device} ({dtype})"
