"""Rooms on disk -> batches of S views per room, in Fast3R's view-dict format.

A *room* is a folder of images that form one sequence (sorted by name, numbers compared as numbers):

* plain layout: ``ROOT/<room>/*.jpg|png|...`` (images directly in the room folder);
* ScanNet++ DSLR layout: ``ROOT/<scene_id>/dslr/<images>/*.JPG``, where ``<images>`` is the first of
  ``resized_undistorted_images``, ``undistorted_images``, ``resized_images``, ``original_images`` that exists
  (or ``data.scannetpp_image_dir``). Point ``ROOT`` at ScanNet++'s ``data/`` folder.

One *sample* is S views of one room taken every ``view_interval`` frames from a start frame; start frames
advance by ``sample_stride``, so a long ScanNet++ sequence yields many samples (ShowRoom trained on ~500k).
Everything random about a sample (view jitter, Fast3R's image-index ids) is a pure function of
(seed, epoch, sample index), so a sample is identical whichever worker or rank loads it, and a resumed run
sees exactly the data an uninterrupted run would have seen.

Batches are ``{"views": [S dicts], "rooms": [...], "frames": (B, S), "image_ids": (B, S)}`` where each view
dict holds ``img`` (B, 3, H, W) float32 in [-1, 1], ``true_shape`` (B, 2) int32, ``idx`` and ``instance``:
stacked, the images are the [S, B, C, H, W] tensor ShowRoom used.
"""

from __future__ import annotations

import logging
import math
import re
import warnings
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import cv2
import numpy as np
import torch
from PIL import Image, ImageOps
from torch.utils.data import DataLoader, Dataset, Sampler

LOG = logging.getLogger(__name__)

IMAGE_SUFFIXES = (".jpg", ".jpeg", ".png", ".bmp", ".webp", ".tif", ".tiff")
SCANNETPP_IMAGE_DIRS = (
    "resized_undistorted_images",
    "undistorted_images",
    "resized_images",
    "original_images",
)
#: Rows of Fast3R's image-index table: ids are drawn from 1..IMAGE_ID_TABLE-1.
IMAGE_ID_TABLE = 1000


class DataError(ValueError):
    """The room folders cannot provide the requested samples; the message names the room or file."""


class CorruptImageWarning(UserWarning):
    """An image could not be decoded and was replaced by a neighbouring frame of the same room."""


@dataclass(frozen=True)
class Room:
    """One room: its name and its images in sequence order."""

    name: str
    images: tuple[Path, ...]


# ---------------------------------------------------------------------- discovery


def natural_key(path: Path) -> list[Any]:
    """Sort key comparing digit runs as numbers, so frame-2 comes before frame-10."""
    return [int(part) if part.isdigit() else part.lower() for part in re.split(r"(\d+)", path.name)]


def list_images(folder: Path) -> list[Path]:
    files = (p for p in folder.iterdir() if p.is_file() and not p.name.startswith("."))
    return sorted((p for p in files if p.suffix.lower() in IMAGE_SUFFIXES), key=natural_key)


def room_images(folder: Path, layout: str = "auto", scannetpp_image_dir: str | None = None) -> list[Path]:
    """The image sequence of one room folder (see the module docstring for the layouts)."""
    is_scannetpp = (folder / "dslr").is_dir()
    if layout == "scannetpp" or (layout == "auto" and is_scannetpp):
        dslr = folder / "dslr"
        candidates = (scannetpp_image_dir,) if scannetpp_image_dir else SCANNETPP_IMAGE_DIRS
        for name in candidates:
            if name and (dslr / name).is_dir():
                return list_images(dslr / name)
        raise DataError(
            f"room {folder.name}: ScanNet++ layout expects images in {folder}/dslr/<dir> with <dir> one of "
            f"{list(candidates)}; none found"
        )
    if layout not in ("auto", "folders"):
        raise DataError(f"unknown layout {layout!r}; use auto, folders or scannetpp")
    return list_images(folder)


def read_room_list(path: str | Path) -> list[str]:
    """Room names from a text file, one per line (ScanNet++'s split files work); ``#`` starts a comment."""
    names = []
    for line in Path(path).expanduser().read_text(encoding="utf-8").splitlines():
        name = line.split("#", 1)[0].strip()
        if name:
            names.append(name)
    if not names:
        raise DataError(f"{path}: the room list is empty")
    return names


def discover_rooms(
    root: str | Path,
    layout: str = "auto",
    names: Sequence[str] | None = None,
    scannetpp_image_dir: str | None = None,
    min_images: int = 1,
    skip_small: bool = False,
) -> list[Room]:
    """All rooms under ``root`` (or the listed ``names``), sorted by name.

    A room with fewer than ``min_images`` images raises :class:`DataError` (S views need S images), unless
    ``skip_small``, which drops it with a warning.
    """
    root = Path(root).expanduser()
    if not root.is_dir():
        raise DataError(f"data folder not found: {root}")
    if names is None:
        folders = sorted(
            (p for p in root.iterdir() if p.is_dir() and not p.name.startswith(".")), key=natural_key
        )
    else:
        folders = []
        for name in names:
            folder = root / name
            if not folder.is_dir():
                raise DataError(f"room {name!r} is listed but {folder} is not a folder")
            folders.append(folder)
    rooms = []
    for folder in folders:
        images = room_images(folder, layout, scannetpp_image_dir)
        if len(images) < min_images:
            message = (
                f"room {folder.name} has {len(images)} images but {min_images} views per sample were "
                "requested (data.num_views); lower num_views, remove the room, or set "
                "data.skip_small_rooms: true"
            )
            if skip_small:
                warnings.warn(message + " - skipped", stacklevel=2)
                continue
            raise DataError(message)
        rooms.append(Room(folder.name, tuple(images)))
    if not rooms:
        raise DataError(
            f"no rooms found under {root}: expected one sub-folder per room holding images "
            f"({', '.join(IMAGE_SUFFIXES)}) or a ScanNet++ dslr/ folder"
        )
    return rooms


# ---------------------------------------------------------------------- images


def load_image(path: Path, size: tuple[int, int]) -> np.ndarray:
    """Decode, apply EXIF rotation, resize to cover ``size`` = (H, W), centre crop; uint8 (H, W, 3) RGB.

    Raises OSError/ValueError for files that cannot be decoded completely (truncated JPEGs included).
    """
    height, width = size
    with Image.open(path) as handle:
        # JPEG draft mode decodes straight at 1/2, 1/4 or 1/8 scale (never below the request): DSLR frames
        # are large and this is most of the loading time. Ask for the long side both ways because the EXIF
        # rotation is applied afterwards.
        side = max(height, width)
        handle.draft("RGB", (side, side))
        handle.load()
        image = np.asarray(ImageOps.exif_transpose(handle).convert("RGB"))
    src_h, src_w = image.shape[:2]
    if src_h == 0 or src_w == 0:
        raise ValueError(f"{path} is empty")
    scale = max(height / src_h, width / src_w)
    new_w = max(width, math.ceil(src_w * scale - 1e-6))
    new_h = max(height, math.ceil(src_h * scale - 1e-6))
    if (new_w, new_h) != (src_w, src_h):
        interpolation = cv2.INTER_AREA if scale < 1 else cv2.INTER_CUBIC
        image = cv2.resize(image, (new_w, new_h), interpolation=interpolation)
    top, left = (new_h - height) // 2, (new_w - width) // 2
    return np.ascontiguousarray(image[top : top + height, left : left + width])


def normalize_image(image: np.ndarray) -> torch.Tensor:
    """uint8 (H, W, 3) -> float32 (3, H, W) in [-1, 1], as ``(u8 / 255 - 0.5) / 0.5`` like Fast3R's loader."""
    tensor = torch.from_numpy(image).permute(2, 0, 1).float()
    return (tensor / 255.0 - 0.5) / 0.5


# ---------------------------------------------------------------------- sampling


def sample_seed(seed: int, epoch: int, index: int, stream: int) -> int:
    """A 63-bit seed mixing the run seed, epoch, sample index and a stream id (jitter, image ids, ...)."""
    value = (seed * 0x9E3779B97F4A7C15 + epoch * 0xBF58476D1CE4E5B9 + index * 0x94D049BB133111EB + stream) & (
        (1 << 64) - 1
    )
    value ^= value >> 31
    value = (value * 0xD6E8FEB86659FD93) & ((1 << 64) - 1)
    value ^= value >> 32
    return value & ((1 << 63) - 1)


def effective_interval(num_images: int, num_views: int, interval: int) -> int:
    """``interval``, shrunk when the room is too short for S views that far apart."""
    if num_views <= 1:
        return interval
    return max(1, min(interval, (num_images - 1) // (num_views - 1)))


def view_frames(
    num_images: int, num_views: int, interval: int, start: int, jitter: int, generator: torch.Generator | None
) -> list[int]:
    """Frame indices of one sample: ``start + i * interval``, each moved by up to ``jitter`` frames.

    Jittered frames stay inside the room, in increasing order and distinct (a jittered frame that would
    collide or overtake its neighbour is pulled back).
    """
    frames = [start + i * interval for i in range(num_views)]
    if jitter > 0 and generator is not None:
        offsets = torch.randint(-jitter, jitter + 1, (num_views,), generator=generator).tolist()
        moved = []
        for i, (frame, offset) in enumerate(zip(frames, offsets, strict=True)):
            low = moved[-1] + 1 if moved else 0
            high = num_images - (num_views - i)  # leave room for the views after this one
            moved.append(int(min(max(frame + offset, low), high)))
        frames = moved
    return frames


def random_image_ids(num_views: int, generator: torch.Generator) -> torch.Tensor:
    """Fast3R's training-time image ids for one sample: view 0 -> 0, others distinct in 1..999."""
    ids = torch.zeros(num_views, dtype=torch.int64)
    ids[1:] = torch.randperm(IMAGE_ID_TABLE - 1, generator=generator)[: num_views - 1] + 1
    return ids


class RoomViewsDataset(Dataset):
    """Samples of S views per room (see the module docstring); item keys are ``(epoch, index)`` pairs.

    The epoch travels with the index (rather than living in the dataset) so that jitter changes between
    epochs even inside persistent worker processes.
    """

    def __init__(
        self,
        rooms: Sequence[Room],
        num_views: int,
        image_size: tuple[int, int],
        view_interval: int = 10,
        sample_stride: int = 5,
        jitter: int = 0,
        seed: int = 0,
        max_samples_per_room: int | None = None,
        random_ids: bool = True,
    ) -> None:
        if num_views < 2:
            raise DataError(f"num_views must be >= 2, got {num_views}")
        self.rooms = list(rooms)
        self.num_views = num_views
        self.image_size = (int(image_size[0]), int(image_size[1]))
        self.jitter = int(jitter)
        self.seed = int(seed)
        self.random_ids = random_ids
        self._bad: set[Path] = set()
        self.samples: list[tuple[int, int, int]] = []  # (room index, start frame, interval)
        for room_index, room in enumerate(self.rooms):
            count = len(room.images)
            if count < num_views:
                raise DataError(
                    f"room {room.name} has {count} images but {num_views} views per sample were requested"
                )
            interval = effective_interval(count, num_views, view_interval)
            span = (num_views - 1) * interval
            starts = list(range(0, count - span, sample_stride))
            if max_samples_per_room is not None and len(starts) > max_samples_per_room:
                # Spread the kept starts over the whole sequence instead of taking its beginning.
                picks = np.linspace(0, len(starts) - 1, max_samples_per_room).round().astype(int)
                starts = [starts[i] for i in picks]
            self.samples.extend((room_index, start, interval) for start in starts)

    def __len__(self) -> int:
        return len(self.samples)

    def describe(self) -> str:
        return f"{len(self.rooms)} rooms, {len(self.samples)} samples of {self.num_views} views"

    def __getitem__(self, key: int | tuple[int, int]) -> dict[str, Any]:
        epoch, index = key if isinstance(key, tuple) else (0, int(key))
        room_index, start, interval = self.samples[index]
        room = self.rooms[room_index]
        jitter_gen = torch.Generator().manual_seed(sample_seed(self.seed, epoch, index, 1))
        frames = view_frames(len(room.images), self.num_views, interval, start, self.jitter, jitter_gen)
        images, frames = self._load_views(room, frames)
        if self.random_ids:
            id_gen = torch.Generator().manual_seed(sample_seed(self.seed, epoch, index, 2))
            ids = random_image_ids(self.num_views, id_gen)
        else:
            ids = torch.arange(self.num_views, dtype=torch.int64)
        return {
            "images": torch.stack([normalize_image(im) for im in images]),  # (S, 3, H, W)
            "room": room.name,
            "frames": torch.tensor(frames, dtype=torch.int64),
            "image_ids": ids,
            "index": index,
        }

    def _load_views(self, room: Room, frames: list[int]) -> tuple[list[np.ndarray], list[int]]:
        """Load the frames; an undecodable one is replaced by the nearest unused good frame of the room."""
        images: list[np.ndarray] = []
        used = set(frames)
        result_frames = []
        for frame in frames:
            candidate = frame
            while True:
                path = room.images[candidate]
                if path not in self._bad:
                    try:
                        images.append(load_image(path, self.image_size))
                        result_frames.append(candidate)
                        break
                    except (OSError, ValueError, SyntaxError) as exc:
                        self._bad.add(path)
                        warnings.warn(
                            f"skipping corrupt image {path} ({type(exc).__name__}: {exc})",
                            CorruptImageWarning,
                            stacklevel=2,
                        )
                replacement = self._nearest_free(room, frame, used)
                if replacement is None:
                    raise DataError(
                        f"room {room.name}: not enough readable images for {self.num_views} views "
                        f"({len(self._bad)} corrupt images seen so far)"
                    )
                used.add(replacement)
                candidate = replacement
        return images, result_frames

    def _nearest_free(self, room: Room, frame: int, used: set[int]) -> int | None:
        count = len(room.images)
        for distance in range(1, count):
            for candidate in (frame + distance, frame - distance):
                if (
                    0 <= candidate < count
                    and candidate not in used
                    and room.images[candidate] not in self._bad
                ):
                    return candidate
        return None


def collate_views(samples: Sequence[dict[str, Any]]) -> dict[str, Any]:
    """Stack B samples into S view dicts (upstream's format) plus per-sample metadata."""
    images = torch.stack([s["images"] for s in samples], dim=1)  # (S, B, 3, H, W)
    num_views, batch, _, height, width = images.shape
    true_shape = torch.tensor([[height, width]] * batch, dtype=torch.int32)
    views = [
        {"img": images[v], "true_shape": true_shape.clone(), "idx": [v] * batch, "instance": [str(v)] * batch}
        for v in range(num_views)
    ]
    return {
        "views": views,
        "rooms": [s["room"] for s in samples],
        "frames": torch.stack([s["frames"] for s in samples]),
        "image_ids": torch.stack([s["image_ids"] for s in samples]),
        "indices": [int(s["index"]) for s in samples],
    }


def stack_views(batch: dict[str, Any]) -> torch.Tensor:
    """The batch's images as one [S, B, C, H, W] tensor."""
    return torch.stack([view["img"] for view in batch["views"]])


def move_batch(batch: dict[str, Any], device: torch.device) -> dict[str, Any]:
    non_blocking = device.type == "cuda"
    views = [
        {**view, "img": view["img"].to(device, non_blocking=non_blocking), "true_shape": view["true_shape"]}
        for view in batch["views"]
    ]
    return {**batch, "views": views}


# ---------------------------------------------------------------------- batching


class ResumableBatchSampler(Sampler[list[tuple[int, int]]]):
    """Shuffled batches that every rank agrees on, startable at any (epoch, batch) position.

    Epoch ``e`` uses the permutation drawn from ``seed + e``; global batch ``j`` holds permutation entries
    ``[j * G, (j + 1) * G)`` (G = ``global_batch``) and rank ``r`` of ``W`` takes its contiguous share
    ``[j * G + r * G / W, ...)``. So W ranks with G / W rooms each see exactly the rooms one process with G
    rooms sees, and a restart at ``(epoch, batch)`` continues the same sequence. Incomplete last batches
    are dropped (relation losses need full batches).
    """

    def __init__(
        self,
        num_samples: int,
        global_batch: int,
        seed: int = 0,
        rank: int = 0,
        world_size: int = 1,
        shuffle: bool = True,
    ) -> None:
        if global_batch % world_size:
            raise DataError(f"batch size {global_batch} does not split evenly over {world_size} processes")
        if num_samples < global_batch:
            raise DataError(
                f"only {num_samples} samples but a batch needs {global_batch}: add rooms, lower "
                "data.sample_stride or data.view_interval, or lower train.batch_size"
            )
        self.num_samples = num_samples
        self.global_batch = global_batch
        self.local_batch = global_batch // world_size
        self.seed = seed
        self.rank = rank
        self.shuffle = shuffle
        self.epoch = 0
        self.start_batch = 0

    @property
    def batches_per_epoch(self) -> int:
        return self.num_samples // self.global_batch

    def set_position(self, epoch: int, batch: int = 0) -> None:
        self.epoch, self.start_batch = int(epoch), int(batch)

    def order(self, epoch: int) -> list[int]:
        if not self.shuffle:
            return list(range(self.num_samples))
        generator = torch.Generator().manual_seed(self.seed + 1_000_003 * epoch)
        return torch.randperm(self.num_samples, generator=generator).tolist()

    def __iter__(self) -> Iterator[list[tuple[int, int]]]:
        order = self.order(self.epoch)
        for j in range(self.start_batch, self.batches_per_epoch):
            first = j * self.global_batch + self.rank * self.local_batch
            yield [(self.epoch, order[i]) for i in range(first, first + self.local_batch)]

    def __len__(self) -> int:
        return max(0, self.batches_per_epoch - self.start_batch)


def make_loader(
    dataset: RoomViewsDataset,
    batch_sampler: Sampler,
    num_workers: int = 0,
    prefetch_factor: int = 2,
    pin_memory: bool = False,
) -> DataLoader:
    """A DataLoader with worker processes and prefetching (``num_workers`` 0 loads in the main process)."""
    extra: dict[str, Any] = {}
    if num_workers > 0:
        extra = {"prefetch_factor": prefetch_factor, "persistent_workers": True}
    return DataLoader(
        dataset,
        batch_sampler=batch_sampler,
        num_workers=num_workers,
        collate_fn=collate_views,
        pin_memory=pin_memory,
        **extra,
    )


def fixed_batches(
    dataset: RoomViewsDataset, batch_size: int, max_batches: int | None = None
) -> list[list[int]]:
    """Deterministic, unshuffled evaluation batches over a dataset (complete ones only)."""
    count = len(dataset) // batch_size
    if max_batches:
        count = min(count, max_batches)
    if count == 0:
        raise DataError(f"evaluation set has {len(dataset)} samples, fewer than one batch of {batch_size}")
    # Spread evaluation batches over all samples (rooms are contiguous in the sample list).
    stride = max(1, len(dataset) // (count * batch_size))
    picks = list(range(0, len(dataset), stride))[: count * batch_size]
    return [picks[i * batch_size : (i + 1) * batch_size] for i in range(count)]
