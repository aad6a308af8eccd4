"""Room datasets: layouts, view sampling, image preprocessing, batch format, corrupt images, sharding."""

from __future__ import annotations

import shutil
import warnings
from pathlib import Path

import numpy as np
import pytest
import torch
from test_distill_support import TINY_IMAGE_SIZE, make_rooms, tiny_rooms  # noqa: F401 (fixture)

from showroom_ros.distillation.data import (
    CorruptImageWarning,
    DataError,
    ResumableBatchSampler,
    RoomViewsDataset,
    collate_views,
    discover_rooms,
    load_image,
    make_loader,
    read_room_list,
    stack_views,
    view_frames,
)


def test_discover_plain_rooms_in_natural_order(tmp_path: Path) -> None:
    root = make_rooms(tmp_path / "rooms", num_rooms=2, frames=3)
    # frame-10 must sort after frame-2 (natural order), and non-images are ignored.
    shutil.copy(root / "room0" / "frame-2.jpg", root / "room0" / "frame-10.jpg")
    (root / "room0" / "notes.txt").write_text("not an image")
    rooms = discover_rooms(root)
    assert [r.name for r in rooms] == ["room0", "room1"]
    assert [p.name for p in rooms[0].images] == ["frame-0.jpg", "frame-1.jpg", "frame-2.jpg", "frame-10.jpg"]


def test_discover_scannetpp_dslr_layout(tmp_path: Path) -> None:
    source = make_rooms(tmp_path / "src", num_rooms=1, frames=4)
    scene = tmp_path / "data" / "0a5c013435"
    images = scene / "dslr" / "resized_images"
    images.mkdir(parents=True)
    for i, frame in enumerate(sorted((source / "room0").iterdir())):
        shutil.copy(frame, images / f"DSC{i + 1:05d}.JPG")
    (scene / "iphone").mkdir()  # other ScanNet++ folders are ignored
    rooms = discover_rooms(tmp_path / "data", min_images=3)
    assert len(rooms) == 1 and rooms[0].name == "0a5c013435"
    assert [p.name for p in rooms[0].images] == [f"DSC{i:05d}.JPG" for i in range(1, 5)]
    # The undistorted images win when both exist.
    undistorted = scene / "dslr" / "undistorted_images"
    shutil.copytree(images, undistorted)
    assert discover_rooms(tmp_path / "data")[0].images[0].parent == undistorted
    with pytest.raises(DataError, match="dslr"):
        discover_rooms(tmp_path / "data", layout="scannetpp", scannetpp_image_dir="missing_dir")


def test_room_lists_and_errors(tmp_path: Path, tiny_rooms: Path) -> None:  # noqa: F811
    listing = tmp_path / "train.txt"
    listing.write_text("# ScanNet++-style split\nroom3\nroom1\n")
    assert read_room_list(listing) == ["room3", "room1"]
    assert [r.name for r in discover_rooms(tiny_rooms, names=read_room_list(listing))] == ["room3", "room1"]
    with pytest.raises(DataError, match="room9"):
        discover_rooms(tiny_rooms, names=["room9"])
    with pytest.raises(DataError, match="not found"):
        discover_rooms(tmp_path / "nowhere")
    (tmp_path / "empty").mkdir()
    with pytest.raises(DataError, match="no rooms found"):
        discover_rooms(tmp_path / "empty")


def test_room_with_fewer_images_than_views_is_a_clear_error(tmp_path: Path) -> None:
    root = make_rooms(tmp_path / "rooms", num_rooms=2, frames=6)
    for extra in sorted((root / "room1").iterdir())[2:]:
        extra.unlink()
    with pytest.raises(DataError, match=r"room room1 has 2 images but 5 views"):
        discover_rooms(root, min_images=5)
    with pytest.warns(UserWarning, match="room1 has 2 images"):
        rooms = discover_rooms(root, min_images=5, skip_small=True)
    assert [r.name for r in rooms] == ["room0"]


def test_view_frames_interval_and_jitter() -> None:
    assert view_frames(30, 5, 6, 2, 0, None) == [2, 8, 14, 20, 26]
    for seed in range(50):
        frames = view_frames(30, 5, 6, 2, 3, torch.Generator().manual_seed(seed))
        assert frames == sorted(set(frames)) and frames[0] >= 0 and frames[-1] < 30
        assert all(abs(f - e) <= 3 for f, e in zip(frames, [2, 8, 14, 20, 26], strict=True))
    # Jitter 2 on consecutive frames at the room's end must still give 5 distinct frames.
    for seed in range(50):
        frames = view_frames(5, 5, 1, 0, 2, torch.Generator().manual_seed(seed))
        assert frames == [0, 1, 2, 3, 4]


def test_samples_fixed_interval_shrinks_for_short_rooms(tiny_rooms: Path) -> None:  # noqa: F811
    rooms = discover_rooms(tiny_rooms)  # 8 frames per room
    dataset = RoomViewsDataset(rooms, 3, TINY_IMAGE_SIZE, view_interval=2, sample_stride=1, jitter=0)
    assert len(dataset) == 5 * 4  # starts 0..3 per room
    item = dataset[(0, 1)]
    assert item["frames"].tolist() == [1, 3, 5]
    # An interval of 10 does not fit 3 views in 8 frames: it shrinks to (8 - 1) // 2 = 3.
    far = RoomViewsDataset(rooms, 3, TINY_IMAGE_SIZE, view_interval=10, sample_stride=1)
    assert far[(0, 0)]["frames"].tolist() == [0, 3, 6]
    capped = RoomViewsDataset(
        rooms, 3, TINY_IMAGE_SIZE, view_interval=1, sample_stride=1, max_samples_per_room=2
    )
    assert len(capped) == 10 and [capped.samples[i][1] for i in range(2)] == [0, 5]


def test_items_are_deterministic_per_epoch_and_index(tiny_rooms: Path) -> None:  # noqa: F811
    rooms = discover_rooms(tiny_rooms)
    a = RoomViewsDataset(rooms, 3, TINY_IMAGE_SIZE, view_interval=2, sample_stride=1, jitter=1, seed=7)
    b = RoomViewsDataset(rooms, 3, TINY_IMAGE_SIZE, view_interval=2, sample_stride=1, jitter=1, seed=7)
    for key in [(0, 3), (1, 3), (2, 11)]:
        x, y = a[key], b[key]
        assert torch.equal(x["images"], y["images"]) and torch.equal(x["frames"], y["frames"])
        assert torch.equal(x["image_ids"], y["image_ids"])
    ids = a[(0, 3)]["image_ids"]
    assert ids[0] == 0 and len(set(ids.tolist())) == 3 and int(ids.max()) < 1000
    # Jitter and ids change between epochs.
    frames = {tuple(a[(e, 3)]["frames"].tolist()) for e in range(10)}
    assert len(frames) > 1
    assert not torch.equal(a[(0, 3)]["image_ids"], a[(1, 3)]["image_ids"])
    sequential = RoomViewsDataset(rooms, 3, TINY_IMAGE_SIZE, random_ids=False)
    assert sequential[(0, 0)]["image_ids"].tolist() == [0, 1, 2]


def test_images_resized_cropped_and_normalised(tiny_rooms: Path) -> None:  # noqa: F811
    path = tiny_rooms / "room0" / "frame-0.jpg"  # 48x64 on disk
    image = load_image(path, TINY_IMAGE_SIZE)
    assert image.shape == (32, 48, 3) and image.dtype == np.uint8
    # 48x64 scaled by 0.75 -> 36x48, centre crop rows 2..34.
    from PIL import Image

    reference = np.asarray(Image.open(path).convert("RGB").resize((48, 36), Image.Resampling.BILINEAR))[2:34]
    assert np.abs(image.astype(int) - reference.astype(int)).mean() < 6  # same content and alignment
    rooms = discover_rooms(tiny_rooms)
    item = RoomViewsDataset(rooms, 3, TINY_IMAGE_SIZE, view_interval=2, jitter=0)[(0, 0)]
    images = item["images"]
    assert images.shape == (3, 3, 32, 48) and images.dtype == torch.float32
    assert images.min() >= -1.0 and images.max() <= 1.0
    first = torch.from_numpy(load_image(rooms[0].images[0], TINY_IMAGE_SIZE)).permute(2, 0, 1).float()
    torch.testing.assert_close(images[0], (first / 255 - 0.5) / 0.5)


def test_collate_gives_upstream_view_dicts(tiny_rooms: Path) -> None:  # noqa: F811
    dataset = RoomViewsDataset(
        discover_rooms(tiny_rooms), 3, TINY_IMAGE_SIZE, view_interval=2, sample_stride=1
    )
    batch = collate_views([dataset[(0, i)] for i in (0, 5, 9, 13)])
    views = batch["views"]
    assert len(views) == 3
    for v, view in enumerate(views):
        assert set(view) == {"img", "true_shape", "idx", "instance"}
        assert view["img"].shape == (4, 3, 32, 48)
        assert view["true_shape"].dtype == torch.int32 and view["true_shape"].tolist() == [[32, 48]] * 4
        assert view["idx"] == [v] * 4 and view["instance"] == [str(v)] * 4
    stacked = stack_views(batch)
    assert stacked.shape == (3, 4, 3, 32, 48)  # [S, B, C, H, W]
    torch.testing.assert_close(stacked[:, 1], dataset[(0, 5)]["images"])
    assert batch["rooms"] == ["room0", "room1", "room2", "room3"]
    assert batch["image_ids"].shape == (4, 3)


def test_corrupt_images_are_skipped_with_a_warning(tmp_path: Path) -> None:
    root = make_rooms(tmp_path / "rooms", num_rooms=1, frames=6)
    (root / "room0" / "frame-2.jpg").write_bytes(b"this is not a jpeg")
    good = (root / "room0" / "frame-4.jpg").read_bytes()
    (root / "room0" / "frame-4.jpg").write_bytes(good[: len(good) // 2])  # truncated download
    dataset = RoomViewsDataset(discover_rooms(root), 3, TINY_IMAGE_SIZE, view_interval=2, sample_stride=1)
    with pytest.warns(CorruptImageWarning) as caught:
        item = dataset[(0, 0)]  # wants frames 0, 2, 4
    names = " ".join(str(w.message) for w in caught)
    assert "frame-2.jpg" in names and "frame-4.jpg" in names
    frames = item["frames"].tolist()
    assert len(set(frames)) == 3 and 2 not in frames and 4 not in frames
    assert item["images"].shape == (3, 3, 32, 48)
    # Too many corrupt frames for the requested views: a clear error naming the room.
    for name in ("frame-0.jpg", "frame-1.jpg", "frame-3.jpg"):
        (root / "room0" / name).write_bytes(b"")
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", CorruptImageWarning)
        with pytest.raises(DataError, match="room room0: not enough readable images"):
            dataset[(0, 1)]


def test_batch_sampler_shards_ranks_and_resumes() -> None:
    one = ResumableBatchSampler(22, 4, seed=3)
    assert one.batches_per_epoch == 5 and len(one) == 5
    batches = list(one)
    assert all(len(b) == 4 for b in batches)
    flat = [i for b in batches for _, i in b]
    assert len(set(flat)) == 20 and all(e == 0 for b in batches for e, _ in b)
    # Two ranks with 2 rooms each cover exactly the single process's batches.
    ranks = [list(ResumableBatchSampler(22, 4, seed=3, rank=r, world_size=2)) for r in range(2)]
    for j, batch in enumerate(batches):
        assert ranks[0][j] + ranks[1][j] == batch
    # Resuming at (epoch 1, batch 2) continues epoch 1's sequence.
    one.set_position(1, 0)
    epoch1 = list(one)
    assert [i for b in epoch1 for _, i in b] != flat  # a new permutation per epoch
    one.set_position(1, 2)
    assert list(one) == epoch1[2:]
    with pytest.raises(DataError, match="only 3 samples"):
        ResumableBatchSampler(3, 4)
    with pytest.raises(DataError, match="does not split evenly"):
        ResumableBatchSampler(20, 4, world_size=3)


def test_worker_processes_give_the_same_batches(tiny_rooms: Path) -> None:  # noqa: F811
    rooms = discover_rooms(tiny_rooms)
    dataset = RoomViewsDataset(rooms, 3, TINY_IMAGE_SIZE, view_interval=2, sample_stride=1, jitter=1)
    serial = list(make_loader(dataset, ResumableBatchSampler(len(dataset), 4, seed=1), num_workers=0))
    parallel = list(make_loader(dataset, ResumableBatchSampler(len(dataset), 4, seed=1), num_workers=2))
    assert len(serial) == len(parallel) == 5
    for a, b in zip(serial, parallel, strict=True):
        assert torch.equal(stack_views(a), stack_views(b)) and a["rooms"] == b["rooms"]
        assert torch.equal(a["image_ids"], b["image_ids"])
