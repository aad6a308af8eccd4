"""Fast3R configuration in the release's own format (``encoder_args`` / ``decoder_args`` / ``head_args``).

The released ``config.json`` is what upstream's Hugging Face mixin writes: three dicts, sorted keys, and the
bare JSON tokens ``Infinity`` / ``-Infinity`` inside ``depth_mode`` / ``conf_mode``. We keep that format so a
downloaded checkpoint directory loads unchanged and ``save_pretrained`` writes something upstream can read.
Keys we do not use (``attn_implementation``, ``img_size``) are preserved so a round trip is lossless.
"""

from __future__ import annotations

import copy
import json
import math
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

DEFAULT_DPT_FEATURE_DIM = 256
DEFAULT_DPT_LAYER_DIMS = (96, 192, 384, 768)
#: Rows of the sinusoidal image-index table (upstream's fixed size): at most this many views.
IMAGE_INDEX_TABLE_SIZE = 1000


#: The release's config.json content (jedyang97/Fast3R_ViT_Large_512), for checkpoints shipped without one.
RELEASE_CONFIG_VIT_LARGE_512: dict[str, dict[str, Any]] = {
    "decoder_args": {
        "attn_bias_for_inference_enabled": False,
        "attn_drop": 0.0,
        "attn_implementation": "flash_attention",
        "decoder_type": "fast3r",
        "depth": 24,
        "drop": 0.0,
        "embed_dim": 1024,
        "enc_embed_dim": 1024,
        "mlp_ratio": 4.0,
        "num_heads": 16,
        "qkv_bias": True,
        "random_image_idx_embedding": True,
    },
    "encoder_args": {
        "attn_implementation": "flash_attention",
        "depth": 24,
        "embed_dim": 1024,
        "encoder_type": "croco",
        "img_size": 512,
        "mlp_ratio": 4,
        "num_heads": 16,
        "patch_embed_cls": "PatchEmbedDust3R",
        "patch_size": 16,
        "pos_embed": "RoPE100",
    },
    "head_args": {
        "conf_mode": ["exp", 1, math.inf],
        "depth_mode": ["exp", -math.inf, math.inf],
        "head_type": "dpt",
        "landscape_only": False,
        "output_mode": "pts3d",
        "patch_size": 16,
        "with_local_head": True,
    },
}


def _require(condition: bool, message: str) -> None:
    if not condition:
        raise ValueError(f"Fast3R config: {message}")


def _as_bound(value: Any) -> float:
    """Accept floats, ints and the strings 'inf'/'-inf' that some YAML dumps produce."""
    if isinstance(value, str):
        return float(value.replace("Infinity", "inf"))
    return float(value)


@dataclass
class EncoderConfig:
    """CroCo ViT encoder with 2D RoPE. Defaults are the ViT-L/512 release."""

    embed_dim: int = 1024
    depth: int = 24
    num_heads: int = 16
    mlp_ratio: float = 4.0
    patch_size: int = 16
    rope_base: float = 100.0
    extra: dict[str, Any] = field(default_factory=dict)

    @classmethod
    def from_dict(cls, args: dict[str, Any]) -> EncoderConfig:
        args = dict(args)
        encoder_type = args.pop("encoder_type", "croco")
        _require(encoder_type == "croco", f"encoder_type {encoder_type!r} is not supported (only 'croco')")
        patch_embed = args.pop("patch_embed_cls", "PatchEmbedDust3R")
        _require(
            patch_embed == "PatchEmbedDust3R",
            f"patch_embed_cls {patch_embed!r} is not supported; the release uses 'PatchEmbedDust3R'",
        )
        pos_embed = str(args.pop("pos_embed", "RoPE100"))
        match = re.fullmatch(r"RoPE(\d+(?:\.\d+)?)", pos_embed)
        _require(match is not None, f"pos_embed {pos_embed!r} is not supported (expected 'RoPE<base>')")
        assert match is not None
        cfg = cls(
            embed_dim=int(args.pop("embed_dim", 1024)),
            depth=int(args.pop("depth", 24)),
            num_heads=int(args.pop("num_heads", 16)),
            mlp_ratio=float(args.pop("mlp_ratio", 4.0)),
            patch_size=int(args.pop("patch_size", 16)),
            rope_base=float(match.group(1)),
            extra=args,
        )
        _require(cfg.embed_dim % cfg.num_heads == 0, "encoder embed_dim must be divisible by num_heads")
        _require(
            (cfg.embed_dim // cfg.num_heads) % 4 == 0, "encoder head dim must be divisible by 4 (2D RoPE)"
        )
        return cfg

    def to_dict(self) -> dict[str, Any]:
        out: dict[str, Any] = dict(self.extra)
        base = int(self.rope_base) if float(self.rope_base).is_integer() else self.rope_base
        out.update(
            encoder_type="croco",
            patch_embed_cls="PatchEmbedDust3R",
            pos_embed=f"RoPE{base}",
            embed_dim=self.embed_dim,
            depth=self.depth,
            num_heads=self.num_heads,
            mlp_ratio=_int_if_integral(self.mlp_ratio),
            patch_size=self.patch_size,
        )
        return out


@dataclass
class DecoderConfig:
    """Fast3R fusion transformer. Defaults are the ViT-L/512 release."""

    enc_embed_dim: int = 1024
    embed_dim: int = 1024
    depth: int = 24
    num_heads: int = 16
    mlp_ratio: float = 4.0
    qkv_bias: bool = True
    random_image_idx_embedding: bool = True
    attn_bias_for_inference_enabled: bool = False
    extra: dict[str, Any] = field(default_factory=dict)

    @classmethod
    def from_dict(cls, args: dict[str, Any]) -> DecoderConfig:
        args = dict(args)
        decoder_type = args.pop("decoder_type", "fast3r")
        _require(decoder_type == "fast3r", f"decoder_type {decoder_type!r} is not supported (only 'fast3r')")
        cfg = cls(
            enc_embed_dim=int(args.pop("enc_embed_dim", 1024)),
            embed_dim=int(args.pop("embed_dim", 1024)),
            depth=int(args.pop("depth", 24)),
            num_heads=int(args.pop("num_heads", 16)),
            mlp_ratio=float(args.pop("mlp_ratio", 4.0)),
            qkv_bias=bool(args.pop("qkv_bias", True)),
            random_image_idx_embedding=bool(args.pop("random_image_idx_embedding", True)),
            attn_bias_for_inference_enabled=bool(args.pop("attn_bias_for_inference_enabled", False)),
            extra=args,
        )
        _require(cfg.embed_dim % cfg.num_heads == 0, "decoder embed_dim must be divisible by num_heads")
        _require(cfg.embed_dim % 2 == 0, "decoder embed_dim must be even (sin/cos image-index embedding)")
        _require(cfg.depth > 9, f"decoder depth must be > 9 for the DPT hooks (got {cfg.depth})")
        return cfg

    def to_dict(self) -> dict[str, Any]:
        out: dict[str, Any] = dict(self.extra)
        out.update(
            decoder_type="fast3r",
            enc_embed_dim=self.enc_embed_dim,
            embed_dim=self.embed_dim,
            depth=self.depth,
            num_heads=self.num_heads,
            mlp_ratio=float(self.mlp_ratio),
            qkv_bias=self.qkv_bias,
            random_image_idx_embedding=self.random_image_idx_embedding,
            attn_bias_for_inference_enabled=self.attn_bias_for_inference_enabled,
        )
        # The release writes these two; keep them so our config.json matches it key for key.
        out.setdefault("drop", 0.0)
        out.setdefault("attn_drop", 0.0)
        return out


@dataclass
class HeadConfig:
    """The two DPT pointmap heads and their output activations."""

    patch_size: int = 16
    with_local_head: bool = True
    depth_mode: tuple[str, float, float] = ("exp", -math.inf, math.inf)
    conf_mode: tuple[str, float, float] = ("exp", 1.0, math.inf)
    dpt_feature_dim: int = DEFAULT_DPT_FEATURE_DIM
    dpt_layer_dims: tuple[int, int, int, int] = DEFAULT_DPT_LAYER_DIMS
    extra: dict[str, Any] = field(default_factory=dict)

    @classmethod
    def from_dict(cls, args: dict[str, Any]) -> HeadConfig:
        args = dict(args)
        head_type = args.pop("head_type", "dpt")
        _require(head_type == "dpt", f"head_type {head_type!r} is not supported (only 'dpt')")
        output_mode = args.pop("output_mode", "pts3d")
        _require(output_mode == "pts3d", f"output_mode {output_mode!r} is not supported (only 'pts3d')")
        landscape_only = bool(args.pop("landscape_only", False))
        _require(not landscape_only, "landscape_only=true is not supported; the release uses false")
        depth_mode = args.pop("depth_mode", ["exp", -math.inf, math.inf])
        conf_mode = args.pop("conf_mode", ["exp", 1, math.inf])
        _require(
            len(depth_mode) == 3 and depth_mode[0] == "exp",
            f"depth_mode {depth_mode!r} is not supported (expected ['exp', vmin, vmax])",
        )
        _require(
            len(conf_mode) == 3 and conf_mode[0] == "exp",
            f"conf_mode {conf_mode!r} is not supported (expected ['exp', vmin, vmax])",
        )
        layer_dims = tuple(int(d) for d in args.pop("dpt_layer_dims", DEFAULT_DPT_LAYER_DIMS))
        _require(len(layer_dims) == 4, f"dpt_layer_dims needs 4 entries, got {list(layer_dims)}")
        cfg = cls(
            patch_size=int(args.pop("patch_size", 16)),
            with_local_head=bool(args.pop("with_local_head", True)),
            depth_mode=("exp", _as_bound(depth_mode[1]), _as_bound(depth_mode[2])),
            conf_mode=("exp", _as_bound(conf_mode[1]), _as_bound(conf_mode[2])),
            dpt_feature_dim=int(args.pop("dpt_feature_dim", DEFAULT_DPT_FEATURE_DIM)),
            dpt_layer_dims=layer_dims,  # type: ignore[arg-type]
            extra=args,
        )
        _require(cfg.dpt_feature_dim % 2 == 0, "dpt_feature_dim must be even")
        return cfg

    def to_dict(self) -> dict[str, Any]:
        out: dict[str, Any] = dict(self.extra)
        out.update(
            head_type="dpt",
            output_mode="pts3d",
            landscape_only=False,
            patch_size=self.patch_size,
            with_local_head=self.with_local_head,
            depth_mode=[self.depth_mode[0], *(_int_if_integral(v) for v in self.depth_mode[1:])],
            conf_mode=[self.conf_mode[0], *(_int_if_integral(v) for v in self.conf_mode[1:])],
        )
        # Upstream has no such keys: write them only when they differ from its hardcoded values.
        if self.dpt_feature_dim != DEFAULT_DPT_FEATURE_DIM:
            out["dpt_feature_dim"] = self.dpt_feature_dim
        if tuple(self.dpt_layer_dims) != DEFAULT_DPT_LAYER_DIMS:
            out["dpt_layer_dims"] = list(self.dpt_layer_dims)
        return out


def _int_if_integral(value: float) -> float | int:
    """The release writes the encoder's mlp_ratio as ``4`` and conf vmin as ``1``; keep that spelling."""
    if math.isfinite(value) and float(value).is_integer():
        return int(value)
    return value


@dataclass
class Fast3RConfig:
    """The whole model configuration; ``from_dict`` takes the release's ``config.json`` content."""

    encoder: EncoderConfig = field(default_factory=EncoderConfig)
    decoder: DecoderConfig = field(default_factory=DecoderConfig)
    head: HeadConfig = field(default_factory=HeadConfig)

    def __post_init__(self) -> None:
        _require(
            self.decoder.enc_embed_dim == self.encoder.embed_dim,
            f"decoder enc_embed_dim ({self.decoder.enc_embed_dim}) must equal encoder embed_dim "
            f"({self.encoder.embed_dim})",
        )
        _require(
            self.head.patch_size == self.encoder.patch_size,
            f"head patch_size ({self.head.patch_size}) must equal encoder patch_size "
            f"({self.encoder.patch_size})",
        )

    @classmethod
    def from_dict(cls, config: dict[str, Any]) -> Fast3RConfig:
        if not isinstance(config, dict):
            raise ValueError(f"Fast3R config must be a dict, got {type(config).__name__}")
        unknown = set(config) - {"encoder_args", "decoder_args", "head_args"}
        _require(not unknown, f"unknown top-level keys {sorted(unknown)}")
        return cls(
            encoder=EncoderConfig.from_dict(config.get("encoder_args", {})),
            decoder=DecoderConfig.from_dict(config.get("decoder_args", {})),
            head=HeadConfig.from_dict(config.get("head_args", {})),
        )

    @classmethod
    def from_json_file(cls, path: str | Path) -> Fast3RConfig:
        """Read a release ``config.json``; Python's json accepts the bare ``Infinity`` tokens it contains."""
        path = Path(path)
        if not path.is_file():
            raise FileNotFoundError(f"Fast3R config file not found: {path}")
        try:
            data = json.loads(path.read_text(encoding="utf-8"))
        except json.JSONDecodeError as exc:
            raise ValueError(f"{path} is not valid JSON: {exc}") from exc
        return cls.from_dict(data)

    @classmethod
    def vit_large_512(cls) -> Fast3RConfig:
        """The configuration of ``jedyang97/Fast3R_ViT_Large_512``, including its unused keys."""
        return cls.from_dict(copy.deepcopy(RELEASE_CONFIG_VIT_LARGE_512))

    def to_dict(self) -> dict[str, Any]:
        return {
            "decoder_args": _sorted(self.decoder.to_dict()),
            "encoder_args": _sorted(self.encoder.to_dict()),
            "head_args": _sorted(self.head.to_dict()),
        }

    def to_json_string(self) -> str:
        return json.dumps(self.to_dict(), indent=2, sort_keys=True)

    def to_json_file(self, path: str | Path) -> None:
        Path(path).write_text(self.to_json_string() + "\n", encoding="utf-8")

    def copy(self) -> Fast3RConfig:
        return copy.deepcopy(self)


def _sorted(d: dict[str, Any]) -> dict[str, Any]:
    return {k: d[k] for k in sorted(d)}


def student_config(teacher: Fast3RConfig) -> Fast3RConfig:
    """ShowRoom's distilled student: the teacher with every DPT layer width halved.

    ShowRoom's ``student_args_v1`` kept the encoder and decoder (so their weights load from the teacher) and
    halved the four DPT reassemble widths, [96, 192, 384, 768] -> [48, 96, 192, 384]; the fusion width
    (``dpt_feature_dim``) is unchanged.
    """
    student = teacher.copy()
    dims = tuple(int(d) // 2 for d in teacher.head.dpt_layer_dims)
    _require(all(d > 0 for d in dims), f"cannot halve DPT layer dims {list(teacher.head.dpt_layer_dims)}")
    student.head.dpt_layer_dims = dims  # type: ignore[assignment]
    return student
