"""Preprocessing equals Fast3R's demo loader: EXIF, long side to 512 (LANCZOS when shrinking), 16-px crop."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from showroom_ros.models import preprocess_images, view_colors

DEMO = "data/showroom_demo"


def normalised(rgb: np.ndarray) -> torch.Tensor:
    return ((torch.from_numpy(rgb.copy()).permute(2, 0, 1).float() / 255 - 0.5) / 0.5).unsqueeze(0)


def pattern(width: int, height: int, seed: int = 0) -> np.ndarray:
    """A smooth-plus-noise test picture, so resampling filters give distinguishable results."""
    rng = np.random.default_rng(seed)
    y, x = np.mgrid[0:height, 0:width]
    base = np.stack(((x * 255 // max(width - 1, 1)), (y * 255 // max(height - 1, 1)), (x + y) % 256), axis=-1)
    return np.clip(base + rng.integers(-20, 20, size=base.shape), 0, 255).astype(np.uint8)


@pytest.mark.parametrize(("size", "expected_hw"), [(512, (384, 512)), (256, (192, 256))])
def test_demo_photos_shrink_with_lanczos(shared_root: Path, size: int, expected_hw: tuple[int, int]) -> None:
    path = shared_root / DEMO / "image_1.jpg"  # 720x540
    (view,) = preprocess_images([path], size=size)
    assert view["img"].shape == (1, 3, *expected_hw) and view["img"].dtype == torch.float32
    assert view["true_shape"].dtype == torch.int32 and view["true_shape"].tolist() == [list(expected_hw)]
    assert view["idx"] == [0] and view["instance"] == ["0"]
    with Image.open(path) as image:
        lanczos = np.asarray(image.convert("RGB").resize(expected_hw[::-1], Image.Resampling.LANCZOS))
        bicubic = np.asarray(image.convert("RGB").resize(expected_hw[::-1], Image.Resampling.BICUBIC))
    assert torch.equal(view["img"], normalised(lanczos))
    assert not torch.equal(view["img"], normalised(bicubic))
    assert float(view["img"].min()) >= -1.0 and float(view["img"].max()) <= 1.0


def test_upscaling_uses_bicubic_and_arrays_match_files(tmp_path: Path) -> None:
    small = pattern(320, 240)
    Image.fromarray(small).save(tmp_path / "small.png")
    from_file, from_array = preprocess_images([tmp_path / "small.png", small], size=512)
    expected = np.asarray(Image.fromarray(small).resize((512, 384), Image.Resampling.BICUBIC))
    assert torch.equal(from_file["img"], normalised(expected))
    assert torch.equal(from_array["img"], from_file["img"])
    assert from_array["idx"] == [1] and from_array["instance"] == ["1"]
    np.testing.assert_array_equal(view_colors(from_array)[0], expected)


def test_square_becomes_4_by_3_and_odd_sizes_crop_to_16(tmp_path: Path) -> None:
    square = pattern(500, 500, seed=1)
    odd = pattern(1000, 600, seed=2)
    sq_view, odd_view = preprocess_images([square, odd], size=512)
    resized_square = np.asarray(Image.fromarray(square).resize((512, 512), Image.Resampling.BICUBIC))
    assert sq_view["img"].shape[-2:] == (384, 512)
    assert torch.equal(sq_view["img"], normalised(resized_square[64:448]))
    # 1000x600 -> 512x307 (Python round) -> centre crop to 512x304 starting at row 1.
    resized_odd = np.asarray(Image.fromarray(odd).resize((512, 307), Image.Resampling.LANCZOS))
    assert odd_view["img"].shape[-2:] == (304, 512)
    assert torch.equal(odd_view["img"], normalised(resized_odd[1:305]))


def test_portrait_is_kept_portrait_and_exif_is_applied(tmp_path: Path) -> None:
    stored = pattern(720, 540, seed=3)  # stored landscape ...
    exif = Image.Exif()
    exif[0x0112] = 6  # ... displayed rotated 90 degrees clockwise
    Image.fromarray(stored).save(tmp_path / "rotated.jpg", exif=exif, quality=95)
    (view,) = preprocess_images([tmp_path / "rotated.jpg"], size=512)
    assert view["img"].shape[-2:] == (512, 384)
    (portrait,) = preprocess_images([pattern(540, 720)], size=256)
    assert portrait["img"].shape[-2:] == (256, 192)


def test_bad_images_are_explained(tmp_path: Path) -> None:
    with pytest.raises(ValueError, match="no images given"):
        preprocess_images([], size=512)
    with pytest.raises(ValueError, match="a list of images, not a single image"):
        preprocess_images(pattern(64, 48), size=512)  # type: ignore[arg-type]
    with pytest.raises(ValueError, match=r"\(H, W, 3\) uint8 RGB"):
        preprocess_images([pattern(64, 48).astype(np.float32)], size=512)
    with pytest.raises(ValueError, match=r"\(H, W, 3\) uint8 RGB"):
        preprocess_images([pattern(64, 48)[..., 0]], size=512)
    with pytest.raises(ValueError, match="multiple of 16"):
        preprocess_images([pattern(64, 48)], size=500)
    with pytest.raises(FileNotFoundError, match="no such file"):
        preprocess_images([tmp_path / "missing.jpg"], size=512)
    (tmp_path / "not_an_image.jpg").write_text("hello")
    with pytest.raises(ValueError, match="not a readable image"):
        preprocess_images([tmp_path / "not_an_image.jpg"], size=512)
    with pytest.raises(ValueError, match="too small"):
        preprocess_images([pattern(40, 4)], size=32)
