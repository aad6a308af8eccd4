"""Image preprocessing identical to Fast3R's demo loader, for file paths and for in-memory arrays.

Steps (ARCHITECTURE.md §4): EXIF rotation (files only), RGB; resize so the long side is ``size``
(LANCZOS when shrinking, BICUBIC otherwise; new size uses Python's ``round``); centre crop to multiples of
16 (a square becomes 4:3); pixels to [-1, 1] as ``(u8 / 255 - 0.5) / 0.5`` in float32.
``size=512`` is the release's resolution (4:3 photos -> 512x384); ``size=256`` is ShowRoom's 256x192 mode.
A ROS node passes uint8 RGB arrays straight from its keyframes.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
import torch
from PIL import Image, ImageOps

ImageInput = str | Path | np.ndarray | Image.Image
PATCH = 16


def _open_image(image: ImageInput, index: int) -> Image.Image:
    if isinstance(image, (str, Path)):
        path = Path(image)
        if not path.is_file():
            raise FileNotFoundError(f"image {index}: no such file {path}")
        try:
            with Image.open(path) as handle:
                return ImageOps.exif_transpose(handle).convert("RGB")
        except OSError as exc:
            raise ValueError(f"image {index}: {path} is not a readable image ({exc})") from exc
    if isinstance(image, Image.Image):
        return image.convert("RGB")
    if isinstance(image, np.ndarray):
        if image.dtype != np.uint8 or image.ndim != 3 or image.shape[2] != 3:
            raise ValueError(
                f"image {index}: arrays must be (H, W, 3) uint8 RGB, got {image.shape} {image.dtype}"
            )
        if image.shape[0] == 0 or image.shape[1] == 0:
            raise ValueError(f"image {index}: the array is empty {image.shape}")
        return Image.fromarray(np.ascontiguousarray(image))
    raise ValueError(
        f"image {index}: expected a file path, a PIL image or an (H, W, 3) uint8 array, "
        f"got {type(image).__name__}"
    )


def resize_and_crop(image: Image.Image, size: int) -> Image.Image:
    """Long side to ``size`` then the demo's centre crop to multiples of 16 (square -> 4:3)."""
    long_side = max(image.size)
    interpolation = Image.Resampling.LANCZOS if long_side > size else Image.Resampling.BICUBIC
    new_size = tuple(round(side * size / long_side) for side in image.size)
    image = image.resize(new_size, interpolation)  # PIL returns a copy when the size is unchanged
    width, height = image.size
    cx, cy = width // 2, height // 2
    half_w, half_h = ((2 * cx) // PATCH) * 8, ((2 * cy) // PATCH) * 8
    if width == height:
        half_h = 3 * half_w // 4  # half_w is a multiple of 8, so this is exact
    if half_w == 0 or half_h == 0:
        raise ValueError(
            f"image is too small after resizing to {width}x{height}: nothing left after the 16-px crop"
        )
    return image.crop((cx - half_w, cy - half_h, cx + half_w, cy + half_h))


def to_model_tensor(rgb: np.ndarray) -> torch.Tensor:
    """(H, W, 3) uint8 -> (1, 3, H, W) float32 in [-1, 1], with upstream's exact float32 arithmetic."""
    tensor = torch.from_numpy(np.array(rgb, dtype=np.uint8)).permute(2, 0, 1).float().div(255)
    return ((tensor - 0.5) / 0.5).unsqueeze(0)


def view_colors(view: dict[str, Any]) -> np.ndarray:
    """The uint8 RGB (B, H, W, 3) a view's ``img`` was made from (exact inverse of the normalisation)."""
    image = view["img"].detach().float().cpu()
    rgb = ((image * 0.5 + 0.5) * 255).round().clamp(0, 255).to(torch.uint8)
    return rgb.permute(0, 2, 3, 1).numpy()


def preprocess_images(images: Sequence[ImageInput], size: int = 512) -> list[dict[str, Any]]:
    """Paths / PIL images / uint8 RGB arrays -> Fast3R view dicts, already collated with batch 1.

    Each dict has ``img`` (1, 3, H, W) float32 in [-1, 1], ``true_shape`` int32 tensor [[H, W]], ``idx``
    [i] and ``instance`` [str(i)], as upstream's ``inference()`` hands them to the model.
    """
    if isinstance(images, (str, Path, np.ndarray, Image.Image)):
        raise ValueError("preprocess_images takes a list of images, not a single image")
    if len(images) == 0:
        raise ValueError("no images given; Fast3R needs at least 2 views of the scene")
    if int(size) != size or size < 2 * PATCH or size % PATCH:
        raise ValueError(
            f"size must be a multiple of {PATCH} of at least {2 * PATCH} (512 or 256), got {size}"
        )
    views = []
    for index, image in enumerate(images):
        rgb = np.asarray(resize_and_crop(_open_image(image, index), int(size)))
        height, width = rgb.shape[:2]
        views.append(
            {
                "img": to_model_tensor(rgb),
                "true_shape": torch.tensor([[height, width]], dtype=torch.int32),
                "idx": [index],
                "instance": [str(index)],
            }
        )
    return views
