"""Shared helpers for the distillation tests: tiny rooms cut from real frames, a tiny teacher, configs.

Imported by the other ``test_distill_*`` files (pytest puts ``test/`` on sys.path). The rooms are crops of
the bundled 7-Scenes redkitchen frames (``data/redkitchen``), shrunk to 48x64 so that the loader's resize
and centre crop to 32x48 are exercised and every test stays fast on a 2-core CPU.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import cv2
import pytest

REPO_ROOT = Path(__file__).resolve().parents[1]
SOURCE_FRAMES = sorted((REPO_ROOT / "data" / "redkitchen").glob("*.color.jpg"))
TINY_IMAGE_SIZE = (32, 48)


def make_rooms(root: Path, num_rooms: int = 5, frames: int = 8, size: tuple[int, int] = (48, 64)) -> Path:
    """``root/room<i>/frame-<j>.jpg``: a camera sliding across one real frame per room."""
    assert SOURCE_FRAMES, "data/redkitchen/*.color.jpg is missing from the repository"
    height, width = size
    for r in range(num_rooms):
        image = cv2.imread(str(SOURCE_FRAMES[r % len(SOURCE_FRAMES)]))
        room = root / f"room{r}"
        room.mkdir(parents=True, exist_ok=True)
        for f in range(frames):
            x, y = 10 + 20 * f + 7 * (r // len(SOURCE_FRAMES)), 10 + 8 * f
            crop = image[y : y + 360, x : x + 480]
            cv2.imwrite(
                str(room / f"frame-{f}.jpg"), cv2.resize(crop, (width, height), interpolation=cv2.INTER_AREA)
            )
    return root


def make_teacher(directory: Path, tiny_config: Path, seed: int = 0) -> Path:
    """A tiny random-weight Fast3R (the shared golden config) saved with save_pretrained."""
    import torch

    from showroom_ros.models import Fast3R, Fast3RConfig

    torch.manual_seed(seed)
    Fast3R(Fast3RConfig.from_json_file(tiny_config)).save_pretrained(directory)
    return directory


def tiny_config(rooms: Path, teacher: Path, output: Path, **sections: dict[str, Any]) -> dict[str, Any]:
    """A raw config dict for the tiny setup; ``sections`` update individual sections."""
    raw: dict[str, Any] = {
        "output_dir": str(output),
        "seed": 0,
        "data": {
            "root": str(rooms),
            "num_views": 3,
            "image_size": list(TINY_IMAGE_SIZE),
            "view_interval": 2,
            "sample_stride": 1,
            "jitter": 1,
            "num_workers": 0,
        },
        "model": {"teacher": str(teacher)},
        "loss": {"weights": {"dense": 1.0, "confidence": 0.1}},
        "optim": {"lr": 1e-3, "warmup_steps": 2},
        "train": {
            "batch_size": 4,
            "max_steps": 6,
            "log_every": 1,
            "eval_every": 0,
            "checkpoint_every": 0,
            "tensorboard": False,
            "progress": False,
        },
    }
    for section, values in sections.items():
        if isinstance(values, dict) and isinstance(raw.get(section), dict):
            raw[section] = {**raw[section], **values}
        else:
            raw[section] = values
    return raw


@pytest.fixture(scope="session")
def tiny_rooms(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return make_rooms(tmp_path_factory.mktemp("distill_rooms"))


@pytest.fixture(scope="session")
def tiny_teacher(tmp_path_factory: pytest.TempPathFactory, shared_root: Path) -> Path:
    pytest.importorskip("showroom_ros.models", reason="the Fast3R model package is needed")
    config = shared_root / "fixtures" / "fast3r" / "tiny_golden_config.json"
    return make_teacher(tmp_path_factory.mktemp("distill_teacher"), config)


def test_support_rooms_are_real_images(tmp_path: Path) -> None:
    """The helper itself: 5 rooms of 8 decodable 48x64 frames."""
    root = make_rooms(tmp_path)
    rooms = sorted(p.name for p in root.iterdir())
    assert rooms == [f"room{i}" for i in range(5)]
    image = cv2.imread(str(root / "room0" / "frame-7.jpg"))
    assert image is not None and image.shape == (48, 64, 3)
    assert image.std() > 5  # real content, not a flat fill
