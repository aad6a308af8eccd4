"""predict_scene (what the ROS node and the CLI call) and the bad-input errors of the model.

The tiny golden model has random weights, so the geometry is meaningless: these tests check the plumbing
(shapes, colours, determinism, image indices, filtering) and the error messages, not reconstruction quality.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
import pytest
import torch
from PIL import Image

from showroom_ros.models import Fast3R, Fast3RPrediction, predict_scene, preprocess_images

DEMO = "data/showroom_demo"


@pytest.fixture(scope="module")
def golden(shared_root: Path) -> dict[str, Any]:
    return torch.load(shared_root / "fixtures/fast3r/tiny_golden.pt", weights_only=True)


@pytest.fixture(scope="module")
def model(golden: dict[str, Any]) -> Fast3R:
    net = Fast3R(golden["config"]).eval()
    net.load_state_dict(golden["state_dict"])
    return net


@pytest.fixture(scope="module")
def photos(shared_root: Path) -> list[Path]:
    return [shared_root / DEMO / f"image_{i}.jpg" for i in (1, 2, 3)]


@pytest.fixture(scope="module")
def prediction(model: Fast3R, photos: list[Path]) -> Fast3RPrediction:
    return predict_scene(model, photos, size=64, conf_percentile=50)


def test_prediction_layout(prediction: Fast3RPrediction, photos: list[Path]) -> None:
    assert prediction.num_views == 3 and prediction.image_size == (48, 64)
    assert prediction.pts3d.shape == (3, 48, 64, 3) and prediction.pts3d.dtype == np.float32
    assert prediction.conf.shape == (3, 48, 64) and (prediction.conf >= 1).all()
    assert prediction.pts3d_local is not None and prediction.pts3d_local.shape == (3, 48, 64, 3)
    assert prediction.pts3d_local_aligned is not None
    assert prediction.pts3d_local_aligned.shape == (3, 48, 64, 3)
    assert prediction.camera_to_world.shape == (3, 4, 4) and prediction.camera_to_world.dtype == np.float64
    assert prediction.image_ids.tolist() == [0, 1, 2]  # deterministic by default
    assert set(prediction.timings) >= {"preprocess", "network", "poses"}
    expected_rgb = np.stack(
        [np.asarray(Image.open(p).convert("RGB").resize((64, 48), Image.Resampling.LANCZOS)) for p in photos]
    )
    np.testing.assert_array_equal(prediction.colors, expected_rgb)


def test_random_weights_give_no_poses(prediction: Fast3RPrediction) -> None:
    """Upstream's failure path: focal clamps to 0, identity poses, no intrinsics."""
    assert prediction.focal is None and not prediction.pose_valid.any()
    assert np.isnan(prediction.focals).all()
    np.testing.assert_array_equal(prediction.camera_to_world, np.tile(np.eye(4), (3, 1, 1)))
    assert prediction.intrinsics() == [None, None, None]


def test_deterministic_and_equal_to_the_models_sequential_path(
    model: Fast3R, photos: list[Path], prediction: Fast3RPrediction
) -> None:
    again = predict_scene(model, [np.asarray(Image.open(p).convert("RGB")) for p in photos], size=64)
    np.testing.assert_array_equal(again.pts3d, prediction.pts3d)
    np.testing.assert_array_equal(again.conf_local, prediction.conf_local)
    with torch.inference_mode():
        direct = model(preprocess_images(photos, size=64), sequential_image_ids=True)
    np.testing.assert_array_equal(prediction.pts3d[2], direct[2]["pts3d_in_other_view"][0].numpy())


def test_seed_selects_upstreams_random_draw(
    model: Fast3R, photos: list[Path], prediction: Fast3RPrediction
) -> None:
    seeded = predict_scene(model, photos, size=64, image_idx_seed=42)
    assert seeded.image_ids.tolist() == [0, 498, 446]
    assert not np.array_equal(seeded.pts3d, prediction.pts3d)
    repeat = predict_scene(model, photos, size=64, image_idx_seed=42)
    np.testing.assert_array_equal(repeat.pts3d, seeded.pts3d)


def test_colored_points_filtering(prediction: Fast3RPrediction) -> None:
    cloud = prediction.colored_points()  # the prediction's own percentile, 50
    per_view = np.bincount(cloud.view_index, minlength=3)
    assert all(48 * 64 // 2 - 2 <= n <= 48 * 64 // 2 + 2 for n in per_view)
    assert cloud.points.shape == (len(cloud.colors), 3) and cloud.colors.dtype == np.uint8
    for view in range(3):
        kept = cloud.confidence[cloud.view_index == view]
        assert kept.min() >= np.percentile(prediction.conf[view], 50)
    everything = prediction.colored_points(conf_percentile=0)
    assert len(everything.points) == 3 * 48 * 64
    # Points and colours stay paired: pixel (row 5, col 7) of view 1.
    index = 1 * 48 * 64 + 5 * 64 + 7
    np.testing.assert_array_equal(everything.points[index], prediction.pts3d[1, 5, 7])
    np.testing.assert_array_equal(everything.colors[index], prediction.colors[1, 5, 7])
    strict = prediction.colored_points(conf_percentile=0, min_conf=float(np.median(prediction.conf)))
    assert 0 < len(strict.points) < len(everything.points)
    local = prediction.colored_points(source="local_aligned", views=[2])
    assert set(local.view_index.tolist()) == {2}
    with pytest.raises(ValueError, match="source must be"):
        prediction.colored_points(source="depth")


def test_bf16_prediction_runs(model: Fast3R, photos: list[Path], prediction: Fast3RPrediction) -> None:
    fast = predict_scene(model, photos, size=64, dtype="bf16")
    assert fast.pts3d.dtype == np.float32 and np.isfinite(fast.pts3d).all()
    assert np.abs(fast.conf - prediction.conf).max() < 0.2
    with pytest.raises(ValueError, match="unknown dtype"):
        predict_scene(model, photos, size=64, dtype="int8")


# ---------------------------------------------------------------- bad input to the model
def views_of(shape: tuple[int, ...], count: int = 3) -> list[dict[str, torch.Tensor]]:
    return [{"img": torch.zeros(shape)} for _ in range(count)]


def test_image_size_not_a_multiple_of_16(model: Fast3R) -> None:
    with pytest.raises(ValueError, match=r"50x64 \(HxW\) is not a multiple of 16"):
        model(views_of((1, 3, 50, 64)))


def test_mixed_shapes_across_views(model: Fast3R) -> None:
    views = views_of((1, 3, 48, 64), 2) + views_of((1, 3, 64, 48), 1)
    with pytest.raises(ValueError, match=r"same batch size and image size.*view 2: \(1, 3, 64, 48\)"):
        model(views)


def test_view_counts(model: Fast3R, photos: list[Path]) -> None:
    with pytest.raises(ValueError, match="got 1 view"):
        model(views_of((1, 3, 48, 64), 1))
    with pytest.raises(ValueError, match="got no views"):
        model([])
    with pytest.raises(ValueError, match="at least 2 images"):
        predict_scene(model, photos[:1], size=64)
    with pytest.raises(ValueError, match="at most 1000 views"):
        model.resolve_image_ids(1, 1001)


def test_malformed_view_dicts(model: Fast3R) -> None:
    with pytest.raises(ValueError, match="list of view dicts"):
        model({"img": torch.zeros(1, 3, 48, 64)})  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="must be a torch tensor"):
        model([{"img": np.zeros((1, 3, 48, 64))}] * 2)
    with pytest.raises(ValueError, match=r"shape \(B, 3, H, W\), got \(3, 48, 64\)"):
        model([{"img": torch.zeros(3, 48, 64)}] * 2)
    with pytest.raises(ValueError, match="must be a dict with an 'img'"):
        model([{"image": torch.zeros(1, 3, 48, 64)}] * 2)
    bad_shape = [{"img": torch.zeros(1, 3, 48, 64), "true_shape": torch.tensor([[64, 48]])}] * 2
    with pytest.raises(ValueError, match=r"true_shape \[\[64, 48\]\] does not match"):
        model(bad_shape)
    with pytest.raises(ValueError, match=r"image_ids must be \(B, N\) = \(1, 2\)"):
        model(views_of((1, 3, 48, 64), 2), image_ids=[0, 1, 2])
    with pytest.raises(ValueError, match=r"image_ids must lie in 0\.\.999"):
        model(views_of((1, 3, 48, 64), 2), image_ids=[0, 1000])


def test_model_without_local_head(golden: dict[str, Any], photos: list[Path]) -> None:
    config = {**golden["config"], "head_args": {**golden["config"]["head_args"], "with_local_head": False}}
    model = Fast3R(config).eval()
    state = {k: v for k, v in golden["state_dict"].items() if not k.startswith("downstream_head_local.")}
    model.load_state_dict(state, strict=True)
    with torch.inference_mode():
        outputs = model(golden["views_input"], sequential_image_ids=True)
    assert list(outputs[0]) == ["pts3d_in_other_view", "conf"]
    torch.testing.assert_close(
        outputs[2]["pts3d_in_other_view"],
        golden["outputs_sequential_image_ids"][2]["pts3d_in_other_view"],
        rtol=1e-4,
        atol=2e-4,
    )
    prediction = predict_scene(model, photos, size=64)
    assert prediction.pts3d_local is None and prediction.pts3d_local_aligned is None
    with pytest.raises(ValueError, match="no aligned local pointmaps"):
        prediction.colored_points(source="local_aligned")
