"""ST-RoomNet in PyTorch: room layout (front/left/right wall, floor, ceiling) from one photo.

ST-RoomNet (Ibrahem, Salem, Kang, CVPR-W 2023) regresses the 8 free entries of a homography with a
ConvNeXt-Tiny backbone and warps a fixed reference cuboid layout with it, which gives a 5-surface
label map. ShowRoom uses those maps to decide which photo to extend; here they also reject generated
views whose layout does not fit the room (see :mod:`showroom_ros.generation.layout`).

The backbone is transformers' ``ConvNextModel``: its block (depthwise 7x7, LayerNorm, MLP with exact
GELU, layer scale), stem, downsampling and pooled LayerNorm are exactly Keras' ConvNeXt with
``include_top=False, pooling='avg'``. What Keras keeps inside the model and transformers does not
(the ImageNet normalisation of raw 0..255 RGB) is done here. Upstream ships only Keras weights
(``.h5``), so :func:`load_keras_h5` reads them with h5py, matching layers by order and shape (as
Keras' own ``load_weights`` does), never by the session-dependent auto names.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import cv2
import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

INPUT_SIZE = 400
"""ST-RoomNet's input and output resolution (square); upstream hard-codes it."""

FULL_DEPTHS = (3, 3, 9, 3)
FULL_DIMS = (96, 192, 384, 768)
IDENTITY_THETA = (1.0, 0.0, 0.0, 0.0, 1.0, 0.0, 0.0, 0.0)
IMAGENET_MEAN_255 = (0.485 * 255.0, 0.456 * 255.0, 0.406 * 255.0)
IMAGENET_STD_255 = (0.229 * 255.0, 0.224 * 255.0, 0.225 * 255.0)
HOMOGRAPHY_EPSILON = 1e-7  # upstream adds it to w before dividing (no sign handling)

# Label ids of the layout map (same as the LSUN surface relabelling upstream trains on).
FRONT_WALL, LEFT_WALL, RIGHT_WALL, FLOOR, CEILING = 1, 2, 3, 4, 5
LABEL_NAMES = {
    FRONT_WALL: "front wall",
    LEFT_WALL: "left wall",
    RIGHT_WALL: "right wall",
    FLOOR: "floor",
    CEILING: "ceiling",
}


class STRoomNetError(ValueError):
    """An ST-RoomNet weights file that cannot be read or does not fit the model."""


@dataclass(frozen=True)
class STRoomNetConfig:
    """Backbone size: blocks per stage and channels per stage (ConvNeXt-Tiny by default)."""

    depths: tuple[int, ...] = FULL_DEPTHS
    dims: tuple[int, ...] = FULL_DIMS

    def __post_init__(self) -> None:
        if len(self.depths) != len(self.dims) or not self.depths:
            raise ValueError(
                f"depths {self.depths} and dims {self.dims} must be non-empty and of equal length"
            )
        if min(self.depths) < 1 or min(self.dims) < 1:
            raise ValueError(f"depths and dims must be positive, got {self.depths} and {self.dims}")


def reference_layout() -> np.ndarray:
    """The fixed 400x400 reference cuboid layout (labels 1..5) that the homography warps.

    Upstream loads it from ``ref_img2.png`` (values 51*label). It is a simple figure: a centre square
    (front wall, rows/cols 151..249) and four trapezoids bounded by the image diagonals, so it is
    drawn here instead of shipping the PNG; ``test_generation_st_roomnet`` checks it pixel for pixel.
    """
    rows, cols = np.mgrid[0:INPUT_SIZE, 0:INPUT_SIZE]
    last = INPUT_SIZE  # the diagonals in the PNG run through (r, 400 - r), not (r, 399 - r)
    labels = np.where(cols <= 150, LEFT_WALL, np.where(cols >= 250, RIGHT_WALL, FRONT_WALL))
    top, bottom = rows <= 150, rows >= 250
    labels = np.where(top & (cols < rows), LEFT_WALL, labels)
    labels = np.where(top & (cols > last - rows), RIGHT_WALL, labels)
    labels = np.where(top & (cols >= rows) & (cols <= last - rows), CEILING, labels)
    labels = np.where(bottom & (cols < last - rows), LEFT_WALL, labels)
    labels = np.where(bottom & (cols > rows), RIGHT_WALL, labels)
    labels = np.where(bottom & (cols >= last - rows) & (cols <= rows), FLOOR, labels)
    return labels.astype(np.uint8)


def homography_from_theta(theta: torch.Tensor) -> torch.Tensor:
    """(N, 8) -> (N, 3, 3): row-major with a constant 1 last, mapping output coords to reference coords."""
    ones = torch.ones(theta.shape[0], 1, dtype=theta.dtype, device=theta.device)
    return torch.cat([theta, ones], dim=1).reshape(-1, 3, 3)


def projective_warp(
    reference: torch.Tensor,
    theta: torch.Tensor,
    output_size: tuple[int, int] | None = None,
    mode: str = "bilinear",
) -> torch.Tensor:
    """Backward-warp ``reference`` (H, W) with each homography in ``theta`` (N, 8); returns (N, h, w).

    Coordinates are normalised to [-1, 1] with the corners on pixel centres (upstream's
    ``linspace(-1, 1)``); source coordinates are clamped to the border. ``bilinear`` is what
    upstream trains and tests with; ``nearest`` takes ``floor`` of the source pixel (not round),
    like upstream's inference-only option.
    """
    if mode not in ("bilinear", "nearest"):
        raise ValueError(f"mode must be 'bilinear' or 'nearest', got {mode!r}")
    if theta.ndim != 2 or theta.shape[1] != 8:
        raise ValueError(f"theta must be (N, 8), got {tuple(theta.shape)}")
    ref = reference.to(dtype=torch.float32)
    if ref.ndim != 2:
        raise ValueError(f"reference must be a single-channel (H, W) image, got {tuple(ref.shape)}")
    in_h, in_w = ref.shape
    out_h, out_w = output_size or (in_h, in_w)
    theta = theta.to(dtype=torch.float32, device=ref.device)
    y_t, x_t = torch.meshgrid(
        torch.linspace(-1.0, 1.0, out_h, device=ref.device),
        torch.linspace(-1.0, 1.0, out_w, device=ref.device),
        indexing="ij",
    )
    grid = torch.stack([x_t.reshape(-1), y_t.reshape(-1), torch.ones_like(x_t.reshape(-1))])  # (3, P)
    uvw = homography_from_theta(theta) @ grid  # (N, 3, P)
    w = uvw[:, 2] + HOMOGRAPHY_EPSILON
    x_s = (uvw[:, 0] / w).clamp(-1.0, 1.0).reshape(-1, out_h, out_w)
    y_s = (uvw[:, 1] / w).clamp(-1.0, 1.0).reshape(-1, out_h, out_w)
    batch = theta.shape[0]
    if mode == "bilinear":
        source = ref.expand(batch, 1, in_h, in_w)
        sampled = F.grid_sample(
            source,
            torch.stack([x_s, y_s], dim=-1),
            mode="bilinear",
            padding_mode="border",
            align_corners=True,
        )
        return sampled[:, 0]
    px = torch.floor((x_s + 1.0) * 0.5 * (in_w - 1)).long().clamp(0, in_w - 1)
    py = torch.floor((y_s + 1.0) * 0.5 * (in_h - 1)).long().clamp(0, in_h - 1)
    return ref[py, px]


def labels_from_warped(warped: torch.Tensor) -> torch.Tensor:
    """Round to the nearest label (half to even, like ``np.rint``), as uint8.

    Bilinear blending across a seam between non-adjacent labels (e.g. left wall 2 | ceiling 5) can
    round to an in-between label along a ~1 px line; upstream keeps that, and so do we.
    """
    return torch.round(warped).clamp(0, 255).to(torch.uint8)


@dataclass
class RoomLayout:
    """One image's layout: homography parameters and the 400x400 label map (1..5, see LABEL_NAMES)."""

    theta: np.ndarray  # (8,) float32
    labels: np.ndarray  # (400, 400) uint8

    def labels_at(self, width: int, height: int) -> np.ndarray:
        """The label map at an image's own size (nearest neighbour: labels are categories)."""
        return cv2.resize(self.labels, (int(width), int(height)), interpolation=cv2.INTER_NEAREST)


class STRoomNet(nn.Module):
    """ConvNeXt backbone + Dense(8) homography head + projective warp of :func:`reference_layout`."""

    def __init__(self, config: STRoomNetConfig | None = None) -> None:
        super().__init__()
        from transformers import ConvNextConfig, ConvNextModel  # heavy import, only when a model is built

        self.config = config or STRoomNetConfig()
        backbone_config = ConvNextConfig(
            num_channels=3,
            patch_size=4,
            num_stages=len(self.config.depths),
            hidden_sizes=list(self.config.dims),
            depths=list(self.config.depths),
            hidden_act="gelu",  # exact erf GELU, as Keras' ConvNeXt
            layer_norm_eps=1e-6,  # the pooled LayerNorm; the others are fixed at 1e-6 in transformers
            layer_scale_init_value=1e-6,  # > 0 so the layer-scale parameters exist
            drop_path_rate=0.0,
        )
        self.backbone = ConvNextModel(backbone_config)
        self.theta_head = nn.Linear(self.config.dims[-1], 8)
        with torch.no_grad():  # training started at the identity homography
            self.theta_head.weight.zero_()
            self.theta_head.bias.copy_(torch.tensor(IDENTITY_THETA))
        self.register_buffer(
            "pixel_mean", torch.tensor(IMAGENET_MEAN_255).reshape(1, 3, 1, 1), persistent=False
        )
        self.register_buffer(
            "pixel_std", torch.tensor(IMAGENET_STD_255).reshape(1, 3, 1, 1), persistent=False
        )
        self.register_buffer("reference", torch.from_numpy(reference_layout()).float(), persistent=False)

    def normalize(self, images: torch.Tensor) -> torch.Tensor:
        """Keras' in-model ``Normalization``: raw 0..255 RGB (N, 3, H, W) to ImageNet statistics."""
        return (images - self.pixel_mean) / torch.clamp(self.pixel_std, min=1e-7)

    def features(self, images: torch.Tensor, with_stages: bool = False):
        """Pooled, LayerNorm'd backbone features (N, C); with ``with_stages`` also each stage's output."""
        output = self.backbone(self.normalize(images), output_hidden_states=with_stages)
        if with_stages:
            return output.pooler_output, output.hidden_states
        return output.pooler_output

    def forward(self, images: torch.Tensor) -> torch.Tensor:
        """Homography parameters theta (N, 8) of raw RGB images (N, 3, 400, 400), values 0..255."""
        return self.theta_head(self.features(images))

    def warp(self, theta: torch.Tensor, mode: str = "bilinear") -> torch.Tensor:
        """The reference layout warped by each theta: (N, 400, 400) float, ~1..5."""
        return projective_warp(self.reference, theta, mode=mode)


def prepare_images(images: Sequence[np.ndarray]) -> torch.Tensor:
    """RGB uint8 images of any size -> (N, 3, 400, 400) float32 0..255, resized like upstream.

    Upstream reads with OpenCV and resizes the uint8 image with ``cv2.resize`` (bilinear) before any
    float conversion; doing the same keeps the inputs bit-identical to upstream's.
    """
    batch = []
    for index, image in enumerate(images):
        array = np.asarray(image)
        if array.ndim != 3 or array.shape[2] != 3 or array.dtype != np.uint8:
            raise ValueError(f"image {index} must be (H, W, 3) uint8 RGB, got {array.shape} {array.dtype}")
        if array.shape[:2] != (INPUT_SIZE, INPUT_SIZE):
            array = cv2.resize(array, (INPUT_SIZE, INPUT_SIZE), interpolation=cv2.INTER_LINEAR)
        batch.append(array)
    if not batch:
        raise ValueError("no images given")
    stacked = torch.from_numpy(np.stack(batch)).permute(0, 3, 1, 2)
    return stacked.to(torch.float32).contiguous()


class RoomLayoutEstimator:
    """ST-RoomNet ready to use: RGB images in, :class:`RoomLayout` out (no gradients, batched)."""

    def __init__(self, model: STRoomNet, device: str | torch.device = "cpu", batch_size: int = 4) -> None:
        self.device = torch.device(device)
        self.model = model.to(self.device).eval()
        self.batch_size = max(1, int(batch_size))

    @classmethod
    def from_h5(cls, path: str | Path, device: str | torch.device = "cpu") -> RoomLayoutEstimator:
        return cls(load_keras_h5(path), device)

    @torch.no_grad()
    def predict(self, images: Sequence[np.ndarray], mode: str = "bilinear") -> list[RoomLayout]:
        layouts: list[RoomLayout] = []
        for start in range(0, len(images), self.batch_size):
            batch = prepare_images(images[start : start + self.batch_size]).to(self.device)
            theta = self.model(batch)
            labels = labels_from_warped(self.model.warp(theta, mode=mode))
            layouts.extend(
                RoomLayout(t.cpu().numpy().astype(np.float32), lab.cpu().numpy())
                for t, lab in zip(theta, labels, strict=True)
            )
        return layouts


# --- Keras .h5 weights ----------------------------------------------------------------------------


@dataclass(frozen=True)
class H5Layer:
    """One Keras layer group that has weights: its name and (weight name, shape) in Keras order."""

    name: str
    weights: tuple[tuple[str, tuple[int, ...]], ...]


@dataclass(frozen=True)
class WeightAssignment:
    """Where one h5 dataset goes: torch parameter name and how to re-lay it out."""

    layer: str
    weight: str
    parameter: str
    layout: str  # "conv" (kh,kw,in,out)->(out,in,kh,kw), "dense" transpose, "vector" as is

    @property
    def h5_path(self) -> str:
        return f"/{self.layer}/{self.weight}"


def convert_keras_array(array: np.ndarray, layout: str) -> np.ndarray:
    """Keras (NHWC, (in, out)) array to the torch parameter layout."""
    if layout == "conv":
        return np.ascontiguousarray(np.transpose(array, (3, 2, 0, 1)))
    if layout == "dense":
        return np.ascontiguousarray(array.T)
    return np.ascontiguousarray(array)


def torch_shape(shape: tuple[int, ...], layout: str) -> tuple[int, ...]:
    if layout == "conv":
        return (shape[3], shape[2], shape[0], shape[1])
    if layout == "dense":
        return (shape[1], shape[0])
    return tuple(shape)


def _decode(value: object) -> str:
    return value.decode("utf-8") if isinstance(value, bytes) else str(value)


def _string_attr(group, name: str) -> list[str]:
    """A Keras string-list attribute, including the ``name0``, ``name1``... split for > 64 KB."""
    if name in group.attrs:
        return [_decode(v) for v in group.attrs[name]]
    values: list[str] = []
    chunk = 0
    while f"{name}{chunk}" in group.attrs:
        values.extend(_decode(v) for v in group.attrs[f"{name}{chunk}"])
        chunk += 1
    return values


def _weights_root(handle):
    """``save_weights`` files keep layers at the root; ``model.save`` files under ``/model_weights``."""
    if "layer_names" in handle.attrs or "layer_names0" in handle.attrs:
        return handle
    if "model_weights" in handle and (
        "layer_names" in handle["model_weights"].attrs or "layer_names0" in handle["model_weights"].attrs
    ):
        return handle["model_weights"]
    raise STRoomNetError(
        "not a Keras weights file: no 'layer_names' attribute at the root or under /model_weights"
    )


def read_h5_layers(handle) -> list[H5Layer]:
    """The layers with weights of an open h5py file, in the model order Keras loads them."""
    root = _weights_root(handle)
    layers = []
    for layer_name in _string_attr(root, "layer_names"):
        if layer_name not in root:
            raise STRoomNetError(f"layer '{layer_name}' is listed in layer_names but has no group")
        names = _string_attr(root[layer_name], "weight_names")
        if names:
            layers.append(H5Layer(layer_name, tuple((n, tuple(root[layer_name][n].shape)) for n in names)))
    return layers


class _LayerCursor:
    """Walks the weight-bearing layers in order, checking each one's structure by weight shapes."""

    def __init__(self, layers: Sequence[H5Layer]) -> None:
        self.layers = list(layers)
        self.position = 0

    def peek(self) -> H5Layer | None:
        return self.layers[self.position] if self.position < len(self.layers) else None

    def take(self, what: str, ranks: tuple[int, ...]) -> H5Layer:
        layer = self.peek()
        if layer is None:
            raise STRoomNetError(f"the weights file ends where the {what} was expected")
        found = tuple(len(shape) for _, shape in layer.weights)
        if found != ranks:
            shapes = ", ".join(f"{n} {list(s)}" for n, s in layer.weights)
            raise STRoomNetError(
                f"layer #{self.position} '{layer.name}' does not look like the {what} "
                f"(weights {shapes}); is this an ST-RoomNet ConvNeXt .h5?"
            )
        self.position += 1
        return layer


def _is_downsampling(layer: H5Layer) -> bool:
    return len(layer.weights) == 4 and [len(s) for _, s in layer.weights] == [1, 1, 4, 1]


def plan_keras_mapping(layers: Sequence[H5Layer]) -> tuple[STRoomNetConfig, list[WeightAssignment]]:
    """Infer the backbone size from the layers' shapes and map each h5 dataset onto a torch parameter.

    Layer order is Keras' model order: stem; for each stage a downsampling block (not before the
    first stage) and then per block depthwise conv, LayerNorm, Dense(4C), Dense(C), layer scale;
    finally the pooled LayerNorm and the Dense(8) head. Names are reported but never relied on.
    """
    cursor = _LayerCursor(layers)
    plan: list[WeightAssignment] = []

    def assign(layer: H5Layer, parameters: Sequence[tuple[str, str]]) -> None:
        for (weight, _), (parameter, layout) in zip(layer.weights, parameters, strict=True):
            plan.append(WeightAssignment(layer.name, weight, parameter, layout))

    stem = cursor.take("stem (conv 4x4 + LayerNorm)", (4, 1, 1, 1))
    assign(
        stem,
        [
            ("backbone.embeddings.patch_embeddings.weight", "conv"),
            ("backbone.embeddings.patch_embeddings.bias", "vector"),
            ("backbone.embeddings.layernorm.weight", "vector"),
            ("backbone.embeddings.layernorm.bias", "vector"),
        ],
    )
    depths: list[int] = []
    dims: list[int] = [stem.weights[0][1][3]]
    stage = 0
    depths.append(0)
    while True:
        layer = cursor.peek()
        if layer is None:
            raise STRoomNetError("the weights file ends before the final LayerNorm and Dense(8) head")
        if _is_downsampling(layer):
            cursor.take("downsampling block", (1, 1, 4, 1))
            stage += 1
            depths.append(0)
            dims.append(layer.weights[2][1][3])
            prefix = f"backbone.encoder.stages.{stage}.downsampling_layer"
            assign(
                layer,
                [
                    (f"{prefix}.0.weight", "vector"),
                    (f"{prefix}.0.bias", "vector"),
                    (f"{prefix}.1.weight", "conv"),
                    (f"{prefix}.1.bias", "vector"),
                ],
            )
            continue
        if [len(s) for _, s in layer.weights] == [4, 1]:
            block = depths[stage]
            prefix = f"backbone.encoder.stages.{stage}.layers.{block}"
            assign(
                cursor.take("depthwise conv", (4, 1)),
                [(f"{prefix}.dwconv.weight", "conv"), (f"{prefix}.dwconv.bias", "vector")],
            )
            assign(
                cursor.take("block LayerNorm", (1, 1)),
                [(f"{prefix}.layernorm.weight", "vector"), (f"{prefix}.layernorm.bias", "vector")],
            )
            assign(
                cursor.take("pointwise conv 1", (2, 1)),
                [(f"{prefix}.pwconv1.weight", "dense"), (f"{prefix}.pwconv1.bias", "vector")],
            )
            assign(
                cursor.take("pointwise conv 2", (2, 1)),
                [(f"{prefix}.pwconv2.weight", "dense"), (f"{prefix}.pwconv2.bias", "vector")],
            )
            assign(cursor.take("layer scale", (1,)), [(f"{prefix}.layer_scale_parameter", "vector")])
            depths[stage] += 1
            continue
        break
    if 0 in depths:
        raise STRoomNetError(f"a ConvNeXt stage has no blocks (blocks per stage {depths})")
    assign(
        cursor.take("pooled LayerNorm", (1, 1)),
        [("backbone.layernorm.weight", "vector"), ("backbone.layernorm.bias", "vector")],
    )
    head = cursor.take("Dense(8) homography head", (2, 1))
    if head.weights[0][1][1] != 8:
        raise STRoomNetError(f"the head '{head.name}' has {head.weights[0][1][1]} outputs, ST-RoomNet has 8")
    assign(head, [("theta_head.weight", "dense"), ("theta_head.bias", "vector")])
    if cursor.peek() is not None:
        extra = ", ".join(layer.name for layer in cursor.layers[cursor.position :])
        raise STRoomNetError(f"unexpected layers with weights after the head: {extra}")
    return STRoomNetConfig(tuple(depths), tuple(dims)), plan


def load_keras_h5(path: str | Path, device: str | torch.device = "cpu") -> STRoomNet:
    """ST-RoomNet with the weights of an upstream Keras ``.h5`` (``save_weights`` or ``model.save``).

    Works for both layer-scale namings (Keras 2.10-2.12 ``Variable:0``, >= 2.14 ``gamma:0``) and
    any head name (``dense``, ``theta_layer``) because datasets are matched by position and shape.
    """
    import h5py

    path = Path(path).expanduser()
    if not path.is_file():
        raise STRoomNetError(f"ST-RoomNet weights {path} not found (upstream: Weight_ST_RoomNet_ConvNext.h5)")
    try:
        handle = h5py.File(path, "r")
    except OSError as error:
        raise STRoomNetError(f"cannot open {path} as HDF5: {error}") from None
    with handle:
        layers = read_h5_layers(handle)
        config, plan = plan_keras_mapping(layers)
        model = STRoomNet(config)
        expected = model.state_dict()
        root = _weights_root(handle)
        state = {}
        for item in plan:
            array = np.asarray(root[item.layer][item.weight], dtype=np.float32)
            converted = convert_keras_array(array, item.layout)
            if item.parameter not in expected or tuple(expected[item.parameter].shape) != converted.shape:
                wanted = tuple(expected[item.parameter].shape) if item.parameter in expected else "missing"
                raise STRoomNetError(
                    f"{item.h5_path} {list(array.shape)} does not fit {item.parameter} ({wanted})"
                )
            state[item.parameter] = torch.from_numpy(converted)
    missing = sorted(set(expected) - set(state))
    if missing:
        raise STRoomNetError(f"{path} leaves parameters unset: {', '.join(missing[:5])}")
    model.load_state_dict(state, strict=True)
    return model.to(device).eval()
