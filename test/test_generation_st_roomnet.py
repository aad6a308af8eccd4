"""ST-RoomNet port against the tiny Keras model's goldens, both h5 namings, and the full-weights manifest."""

from __future__ import annotations

import csv
import shutil
from collections import defaultdict
from pathlib import Path

import cv2
import numpy as np
import pytest

torch = pytest.importorskip("torch")
h5py = pytest.importorskip("h5py")
pytest.importorskip("transformers")

from showroom_ros.generation.st_roomnet import (  # noqa: E402
    FULL_DEPTHS,
    FULL_DIMS,
    IDENTITY_THETA,
    H5Layer,
    RoomLayoutEstimator,
    STRoomNet,
    STRoomNetConfig,
    STRoomNetError,
    convert_keras_array,
    labels_from_warped,
    load_keras_h5,
    plan_keras_mapping,
    prepare_images,
    projective_warp,
    reference_layout,
    torch_shape,
)

H5_NAMES = ("tiny_stroomnet.h5", "tiny_stroomnet_keras215_gamma_names.h5")


@pytest.fixture(scope="module")
def fixtures(shared_root: Path) -> Path:
    folder = shared_root / "fixtures" / "st_roomnet"
    if not (folder / "tiny_golden.npz").is_file():
        pytest.skip(f"ST-RoomNet fixtures not found in {folder}")
    return folder


@pytest.fixture(scope="module")
def golden(fixtures: Path) -> dict[str, np.ndarray]:
    with np.load(fixtures / "tiny_golden.npz") as data:
        return {key: data[key] for key in data.files}


@pytest.fixture(scope="module", params=H5_NAMES)
def tiny_model(request, fixtures: Path) -> STRoomNet:
    return load_keras_h5(fixtures / request.param)


def test_reference_layout_is_the_upstream_png(fixtures: Path, golden) -> None:
    png = cv2.imread(str(fixtures / "ref_img2.png"), cv2.IMREAD_UNCHANGED)
    assert png.shape == (400, 400)
    np.testing.assert_array_equal(reference_layout(), png // 51)
    np.testing.assert_array_equal(reference_layout(), golden["ref_labels"].astype(np.uint8))


def test_identity_theta_reproduces_the_reference() -> None:
    reference = torch.from_numpy(reference_layout()).float()
    warped = projective_warp(reference, torch.tensor([IDENTITY_THETA]))
    np.testing.assert_allclose(warped[0].numpy(), reference_layout(), atol=1e-4)
    # Upstream's nearest mode floors float32 coordinates, so a few identity samples land one pixel off.
    nearest = projective_warp(reference, torch.tensor([IDENTITY_THETA]), mode="nearest")
    assert (nearest[0].numpy() == reference_layout()).mean() > 0.99


def test_tiny_config_is_inferred_from_the_file(tiny_model: STRoomNet) -> None:
    assert tiny_model.config == STRoomNetConfig((1, 1, 2, 1), (8, 16, 32, 64))


def test_golden_intermediates(tiny_model: STRoomNet, golden) -> None:
    images = prepare_images(list(golden["inputs"]))
    with torch.no_grad():
        normalized = tiny_model.normalize(images).permute(0, 2, 3, 1).numpy()
        features, stages = tiny_model.features(images, with_stages=True)
    np.testing.assert_allclose(normalized, golden["normalized"], atol=1e-5)
    # transformers' hidden states: the stem (embeddings) output, then each stage's output.
    for name, tensor in zip(("stem", "stage0", "stage1", "stage2", "stage3"), stages, strict=True):
        expected = golden[name]
        error = np.abs(tensor.permute(0, 2, 3, 1).numpy() - expected).max()
        assert error <= 1e-4 * max(1.0, float(np.abs(expected).max())), f"{name}: max error {error}"
    pooled = stages[-1].mean(dim=(2, 3)).numpy()
    np.testing.assert_allclose(pooled, golden["pooled"], atol=1e-5)
    np.testing.assert_allclose(features.numpy(), golden["features"], atol=1e-5)


def test_golden_theta_warp_and_labels(tiny_model: STRoomNet, golden) -> None:
    images = prepare_images(list(golden["inputs"]))
    with torch.no_grad():
        theta = tiny_model(images)
        warped = tiny_model.warp(theta)
    np.testing.assert_allclose(theta.numpy(), golden["theta"], atol=1e-5)
    np.testing.assert_allclose(warped.numpy(), golden["warped"], atol=1e-3)
    labels = labels_from_warped(warped).numpy()
    gold = golden["warped"]
    unambiguous = np.abs(gold - np.floor(gold) - 0.5) > 2e-3
    np.testing.assert_array_equal(labels[unambiguous], golden["labels"][unambiguous])
    assert (labels == golden["labels"]).mean() >= 0.9999
    for image_labels in labels:
        assert set(np.unique(image_labels)) == {1, 2, 3, 4, 5}


def test_golden_nearest_mode(golden) -> None:
    reference = torch.from_numpy(reference_layout()).float()
    warped = projective_warp(reference, torch.from_numpy(golden["theta"]), mode="nearest")
    np.testing.assert_array_equal(warped.numpy(), golden["warped_nearest"])
    np.testing.assert_array_equal(labels_from_warped(warped).numpy(), golden["labels_nearest"])


def test_estimator_on_the_original_photo(fixtures: Path, shared_root: Path, golden) -> None:
    """Upstream's preprocessing of a real 720x540 photo (cv2 decode, BGR->RGB, resize), exactly."""
    photo_path = shared_root / "data" / "showroom_demo" / "image_1.jpg"
    if not photo_path.is_file():
        pytest.skip("ShowRoom demo photo not available")
    photo = cv2.cvtColor(cv2.imread(str(photo_path)), cv2.COLOR_BGR2RGB)
    assert photo.shape == (540, 720, 3)
    prepared = prepare_images([photo])[0].permute(1, 2, 0).numpy()
    np.testing.assert_array_equal(prepared, golden["inputs"][2].astype(np.float32))
    estimator = RoomLayoutEstimator(load_keras_h5(fixtures / H5_NAMES[0]), batch_size=2)
    layouts = estimator.predict([golden["inputs"][0], golden["inputs"][1], photo])
    np.testing.assert_allclose(np.stack([lay.theta for lay in layouts]), golden["theta"], atol=1e-5)
    assert (layouts[2].labels == golden["labels"][2]).mean() >= 0.9999
    full_size = layouts[2].labels_at(720, 540)
    assert full_size.shape == (540, 720) and set(np.unique(full_size)) <= {1, 2, 3, 4, 5}


def _manifest_layers(fixtures: Path, path_column: str) -> list[H5Layer]:
    grouped: dict[int, list[tuple[int, str, str, tuple[int, ...]]]] = defaultdict(list)
    with (fixtures / "full_h5_manifest.tsv").open() as stream:
        for row in csv.DictReader(stream, delimiter="\t"):
            _, layer, weight = row[path_column].split("/", 2)
            shape = tuple(int(v) for v in row["shape"].strip("[]").split(","))
            grouped[int(row["keras_load_order"])].append(
                (int(row["weight_index_in_layer"]), layer, weight, shape)
            )
    layers = []
    for order in sorted(grouped):
        entries = sorted(grouped[order])
        layers.append(H5Layer(entries[0][1], tuple((weight, shape) for _, _, weight, shape in entries)))
    return layers


@pytest.mark.parametrize("path_column", ["h5_path", "h5_path_if_saved_with_keras>=2.14"])
def test_full_manifest_maps_onto_the_model(fixtures: Path, path_column: str) -> None:
    layers = _manifest_layers(fixtures, path_column)
    assert len(layers) == 96
    config, plan = plan_keras_mapping(layers)
    assert config == STRoomNetConfig(FULL_DEPTHS, FULL_DIMS)
    assert len(plan) == 182
    model_shapes = {name: tuple(p.shape) for name, p in STRoomNet(config).state_dict().items()}
    shapes = {(layer.name, weight): shape for layer in layers for weight, shape in layer.weights}
    targets = [item.parameter for item in plan]
    assert len(set(targets)) == len(targets), "two h5 datasets map onto one parameter"
    assert set(targets) == set(model_shapes), "the plan must set every model parameter"
    for item in plan:
        assert torch_shape(shapes[(item.layer, item.weight)], item.layout) == model_shapes[item.parameter], (
            item
        )
    assert sum(int(np.prod(s)) for s in shapes.values()) == 27_826_280
    layer_scale = [item for item in plan if item.parameter.endswith("layer_scale_parameter")]
    assert len(layer_scale) == sum(FULL_DEPTHS)
    suffix = "gamma:0" if ">=" in path_column else "Variable:0"
    assert all(item.weight.endswith(suffix) for item in layer_scale)


def test_conversion_layouts() -> None:
    kernel = np.arange(4 * 4 * 3 * 5, dtype=np.float32).reshape(4, 4, 3, 5)
    converted = convert_keras_array(kernel, "conv")
    assert converted.shape == (5, 3, 4, 4)
    assert converted[2, 1, 3, 0] == kernel[3, 0, 1, 2]
    dense = np.arange(6, dtype=np.float32).reshape(2, 3)
    np.testing.assert_array_equal(convert_keras_array(dense, "dense"), dense.T)


def _copy_without(source: Path, target: Path, drop_layer: str) -> None:
    """A copy of an h5 whose layer list no longer mentions ``drop_layer``."""
    shutil.copy(source, target)
    with h5py.File(target, "r+") as handle:
        names = [n.decode() if isinstance(n, bytes) else n for n in handle.attrs["layer_names"]]
        handle.attrs["layer_names"] = np.array([n.encode() for n in names if n != drop_layer])


def test_bad_files_are_rejected_clearly(fixtures: Path, tmp_path: Path) -> None:
    with pytest.raises(STRoomNetError, match="not found"):
        load_keras_h5(tmp_path / "missing.h5")
    not_h5 = tmp_path / "weights.h5"
    not_h5.write_bytes(b"definitely not hdf5")
    with pytest.raises(STRoomNetError, match="HDF5"):
        load_keras_h5(not_h5)
    no_head = tmp_path / "no_head.h5"
    _copy_without(fixtures / H5_NAMES[0], no_head, "dense")
    with pytest.raises(STRoomNetError, match="Dense"):
        load_keras_h5(no_head)
    no_layer_scale = tmp_path / "no_layer_scale.h5"
    _copy_without(fixtures / H5_NAMES[0], no_layer_scale, "convnext_tiny_stage_0_block_0_layer_scale")
    with pytest.raises(STRoomNetError, match="layer scale"):
        load_keras_h5(no_layer_scale)


def test_full_model_save_layout_is_accepted(fixtures: Path, golden, tmp_path: Path) -> None:
    """``model.save`` files keep the same groups under /model_weights."""
    nested = tmp_path / "full_save.h5"
    with h5py.File(fixtures / H5_NAMES[1], "r") as source, h5py.File(nested, "w") as target:
        group = target.create_group("model_weights")
        for key, value in source.attrs.items():
            group.attrs[key] = value
        for name in source:
            source.copy(source[name], group, name=name)
        target.create_group("optimizer_weights")
    model = load_keras_h5(nested)
    with torch.no_grad():
        theta = model(prepare_images(list(golden["inputs"][:1])))
    np.testing.assert_allclose(theta.numpy(), golden["theta"][:1], atol=1e-5)
