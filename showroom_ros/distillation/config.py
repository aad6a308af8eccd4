"""Configuration of ``showroom distill``: one YAML file, parsed into dataclasses and validated up front.

Every mistake a user can make in the YAML (a misspelt key, an unknown loss, a data folder that does not
exist, an image size the ViT cannot tile) is reported as a :class:`ConfigError` naming the offending key,
before any model is loaded, so a long run never dies an hour in on a typo.
See ``config/distill_example.yaml`` for a documented example.
"""

from __future__ import annotations

import dataclasses
import difflib
import types
import typing
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Union

import yaml

from showroom_ros.models.names import DEFAULT_ENGINE, DTYPES, ENGINES, FAST3R_RELEASE_REPO

#: Loss terms the trainer knows (``loss.weights`` keys). The first two are the dense pointmap distillation,
#: the last three ShowRoom's relation-based terms (RKD distance and angle over the batch, cosine).
KNOWN_LOSSES = ("dense", "confidence", "rkd_distance", "rkd_angle", "cosine")
RELATION_LOSSES = ("rkd_distance", "rkd_angle")
#: Pointmap heads of Fast3R: ``global`` = pts3d_in_other_view/conf, ``local`` = pts3d_local/conf_local.
KNOWN_HEADS = ("global", "local")
KNOWN_LAYOUTS = ("auto", "folders", "scannetpp")
KNOWN_IMAGE_IDS = ("random", "sequential")
PATCH_SIZE = 16


class ConfigError(ValueError):
    """The distillation config is invalid; the message names the key and what would be valid."""


@dataclass
class DataConfig:
    """Where the rooms are and how one training sample (S views of one room) is drawn from them."""

    root: str = ""
    layout: str = "auto"
    rooms_file: str | None = None
    val_root: str | None = None
    val_rooms_file: str | None = None
    val_holdout: int = 0
    num_views: int = 5
    image_size: tuple[int, int] = (192, 256)
    view_interval: int = 10
    sample_stride: int = 5
    jitter: int = 0
    max_samples_per_room: int | None = None
    skip_small_rooms: bool = False
    scannetpp_image_dir: str | None = None
    num_workers: int = 4
    prefetch_factor: int = 2
    pin_memory: bool | None = None


@dataclass
class ModelConfig:
    """Teacher checkpoint and how the student is built from it."""

    teacher: str = FAST3R_RELEASE_REPO
    teacher_dtype: str = "auto"
    teacher_engine: str = DEFAULT_ENGINE  # one of models.names.ENGINES (CPU); int8 is never used for targets
    student_init: str | None = None
    freeze_backbone: bool = True
    image_ids: str = "random"


@dataclass
class LossConfig:
    """Weights of the loss terms (0 disables a term) and how the relation features are built."""

    weights: dict[str, float] = field(default_factory=lambda: {"dense": 1.0, "confidence": 0.1})
    dense_heads: list[str] = field(default_factory=lambda: ["global", "local"])
    feature_heads: list[str] = field(default_factory=lambda: ["global"])
    feature_pool: tuple[int, int] = (1, 1)


@dataclass
class OptimConfig:
    """AdamW with linear warm-up then cosine decay (per optimiser step)."""

    lr: float = 1e-4
    weight_decay: float = 0.05
    betas: tuple[float, float] = (0.9, 0.95)
    eps: float = 1e-8
    warmup_steps: int = 500
    min_lr_ratio: float = 0.01
    max_grad_norm: float = 1.0


@dataclass
class TrainConfig:
    """Batching, length, precision and the cadence of logs, evaluations and checkpoints."""

    batch_size: int = 4
    grad_accum_steps: int = 1
    max_steps: int | None = None
    epochs: float | None = 1.0
    precision: str = "auto"
    device: str = "auto"
    log_every: int = 10
    eval_every: int = 500
    eval_batches: int = 8
    checkpoint_every: int = 1000
    keep_checkpoints: int = 3
    tensorboard: bool = True
    progress: bool = True


@dataclass
class DistillConfig:
    """The whole ``showroom distill`` configuration (see ``config/distill_example.yaml``)."""

    output_dir: str = "runs/showroom_student"
    export_dir: str | None = None
    seed: int = 0
    data: DataConfig = field(default_factory=DataConfig)
    model: ModelConfig = field(default_factory=ModelConfig)
    loss: LossConfig = field(default_factory=LossConfig)
    optim: OptimConfig = field(default_factory=OptimConfig)
    train: TrainConfig = field(default_factory=TrainConfig)

    # ------------------------------------------------------------------ construction
    @classmethod
    def from_dict(cls, raw: Mapping[str, Any], *, check_paths: bool = True) -> DistillConfig:
        """Build and validate; ``check_paths`` also checks that the data folders exist."""
        config = _build(cls, raw, "")
        config.validate(check_paths=check_paths)
        return config

    @classmethod
    def from_yaml(cls, path: str | Path, *, overrides: list[str] | None = None) -> DistillConfig:
        """Read a YAML file; ``overrides`` are ``dotted.key=value`` strings (value parsed as YAML)."""
        path = Path(path)
        if not path.is_file():
            raise ConfigError(f"config file not found: {path}")
        try:
            raw = yaml.safe_load(path.read_text(encoding="utf-8"))
        except yaml.YAMLError as exc:
            raise ConfigError(f"{path} is not valid YAML: {exc}") from exc
        if raw is None:
            raw = {}
        if not isinstance(raw, dict):
            raise ConfigError(
                f"{path}: the top level must be a mapping of sections, got {type(raw).__name__}"
            )
        for item in overrides or []:
            apply_override(raw, item)
        return cls.from_dict(raw)

    def to_dict(self) -> dict[str, Any]:
        """Plain data (tuples as lists) for YAML/JSON dumps and for checkpoints."""
        return _plain(dataclasses.asdict(self))

    def to_yaml(self) -> str:
        return yaml.safe_dump(self.to_dict(), sort_keys=False)

    # ------------------------------------------------------------------ derived values
    @property
    def export_path(self) -> Path:
        """Where the final student is written with ``save_pretrained``."""
        return Path(self.export_dir) if self.export_dir else Path(self.output_dir) / "student"

    @property
    def active_losses(self) -> dict[str, float]:
        return {name: float(w) for name, w in self.loss.weights.items() if float(w) != 0.0}

    # ------------------------------------------------------------------ validation
    def validate(self, *, check_paths: bool = True) -> None:
        """Raise :class:`ConfigError` for the first problem found, naming the key."""
        d, m, lo, o, t = self.data, self.model, self.loss, self.optim, self.train
        _check(bool(d.root), "data.root: give the folder that holds one sub-folder per room")
        _check(d.layout in KNOWN_LAYOUTS, f"data.layout: {d.layout!r} is not one of {list(KNOWN_LAYOUTS)}")
        _check(d.num_views >= 2, f"data.num_views: Fast3R needs at least 2 views per room, got {d.num_views}")
        _check(d.num_views <= 1000, f"data.num_views: Fast3R supports at most 1000 views, got {d.num_views}")
        height, width = d.image_size
        _check(
            height > 0 and width > 0 and height % PATCH_SIZE == 0 and width % PATCH_SIZE == 0,
            f"data.image_size: [H, W] must be positive multiples of {PATCH_SIZE} (the ViT patch), "
            f"got {list(d.image_size)}; ShowRoom uses [192, 256]",
        )
        _check(d.view_interval >= 1, f"data.view_interval: must be >= 1 frame, got {d.view_interval}")
        _check(d.sample_stride >= 1, f"data.sample_stride: must be >= 1 frame, got {d.sample_stride}")
        _check(d.jitter >= 0, f"data.jitter: must be >= 0 frames, got {d.jitter}")
        _check(
            d.max_samples_per_room is None or d.max_samples_per_room >= 1,
            f"data.max_samples_per_room: must be >= 1 or null, got {d.max_samples_per_room}",
        )
        _check(d.val_holdout >= 0, f"data.val_holdout: must be >= 0 rooms, got {d.val_holdout}")
        _check(d.num_workers >= 0, f"data.num_workers: must be >= 0, got {d.num_workers}")
        _check(d.prefetch_factor >= 1, f"data.prefetch_factor: must be >= 1, got {d.prefetch_factor}")
        if check_paths:
            _check_dir(d.root, "data.root")
            if d.val_root:
                _check_dir(d.val_root, "data.val_root")
            for key, value in (("data.rooms_file", d.rooms_file), ("data.val_rooms_file", d.val_rooms_file)):
                if value and not Path(value).expanduser().is_file():
                    raise ConfigError(f"{key}: file not found: {value}")

        _check(
            m.teacher_dtype in DTYPES,
            f"model.teacher_dtype: {m.teacher_dtype!r} is not one of {list(DTYPES)}",
        )
        _check(
            m.teacher_engine in ENGINES,
            f"model.teacher_engine: {m.teacher_engine!r} is not one of {list(ENGINES)}",
        )
        _check(
            m.image_ids in KNOWN_IMAGE_IDS,
            f"model.image_ids: {m.image_ids!r} is not one of {list(KNOWN_IMAGE_IDS)}",
        )
        _check(bool(m.teacher), "model.teacher: give a Fast3R checkpoint (folder, file or Hugging Face id)")

        unknown = [name for name in lo.weights if name not in KNOWN_LOSSES]
        if unknown:
            hints = [f"{n!r}{_did_you_mean(n, KNOWN_LOSSES)}" for n in unknown]
            raise ConfigError(
                f"loss.weights: unknown loss {', '.join(hints)}; known losses: {list(KNOWN_LOSSES)}"
            )
        for name, weight in lo.weights.items():
            _check(float(weight) >= 0.0, f"loss.weights.{name}: weights must be >= 0, got {weight}")
        _check(bool(self.active_losses), "loss.weights: every weight is 0; enable at least one loss")
        for key, heads in (("loss.dense_heads", lo.dense_heads), ("loss.feature_heads", lo.feature_heads)):
            bad = [h for h in heads if h not in KNOWN_HEADS]
            _check(not bad, f"{key}: unknown head {bad}; known heads: {list(KNOWN_HEADS)}")
            _check(bool(heads), f"{key}: list at least one head of {list(KNOWN_HEADS)}")
        _check(
            all(p >= 1 for p in lo.feature_pool),
            f"loss.feature_pool: [rows, cols] must be >= 1, got {list(lo.feature_pool)}",
        )
        needs = {"rkd_distance": 2, "rkd_angle": 3}
        for name, minimum in needs.items():
            if name in self.active_losses:
                _check(
                    t.batch_size >= minimum,
                    f"loss.weights.{name}: relations are taken between the rooms of a batch, so "
                    f"train.batch_size must be >= {minimum} (got {t.batch_size})",
                )

        _check(o.lr > 0, f"optim.lr: must be > 0, got {o.lr}")
        _check(o.weight_decay >= 0, f"optim.weight_decay: must be >= 0, got {o.weight_decay}")
        _check(all(0 <= b < 1 for b in o.betas), f"optim.betas: each must be in [0, 1), got {list(o.betas)}")
        _check(o.eps > 0, f"optim.eps: must be > 0, got {o.eps}")
        _check(o.warmup_steps >= 0, f"optim.warmup_steps: must be >= 0, got {o.warmup_steps}")
        _check(0 <= o.min_lr_ratio <= 1, f"optim.min_lr_ratio: must be in [0, 1], got {o.min_lr_ratio}")
        _check(
            o.max_grad_norm >= 0,
            f"optim.max_grad_norm: must be >= 0 (0 = no clipping), got {o.max_grad_norm}",
        )

        _check(t.batch_size >= 1, f"train.batch_size: must be >= 1 room, got {t.batch_size}")
        _check(t.grad_accum_steps >= 1, f"train.grad_accum_steps: must be >= 1, got {t.grad_accum_steps}")
        _check(
            t.max_steps is not None or t.epochs is not None,
            "train: give max_steps (optimiser steps) or epochs (passes over the training samples)",
        )
        _check(t.max_steps is None or t.max_steps >= 1, f"train.max_steps: must be >= 1, got {t.max_steps}")
        _check(t.epochs is None or t.epochs > 0, f"train.epochs: must be > 0, got {t.epochs}")
        _check(
            t.precision in DTYPES,
            f"train.precision: {t.precision!r} is not one of {list(DTYPES)}",
        )
        for key in ("log_every", "eval_every", "checkpoint_every", "eval_batches", "keep_checkpoints"):
            value = getattr(t, key)
            _check(value >= 0, f"train.{key}: must be >= 0 (0 = never/unlimited), got {value}")


# ---------------------------------------------------------------------- overrides


def apply_override(raw: dict[str, Any], item: str) -> None:
    """Apply ``a.b.c=value`` to the raw YAML dict; the value is parsed as YAML (``1e-4``, ``[1, 2]``)."""
    if "=" not in item:
        raise ConfigError(f"override {item!r}: expected key=value, e.g. train.max_steps=100")
    key, text = item.split("=", 1)
    parts = [p for p in key.strip().split(".") if p]
    if not parts:
        raise ConfigError(f"override {item!r}: empty key")
    try:
        value = yaml.safe_load(text)
    except yaml.YAMLError as exc:
        raise ConfigError(f"override {item!r}: value is not valid YAML ({exc})") from exc
    node = raw
    for part in parts[:-1]:
        child = node.setdefault(part, {})
        if not isinstance(child, dict):
            raise ConfigError(f"override {item!r}: {part!r} is not a section")
        node = child
    node[parts[-1]] = value


# ---------------------------------------------------------------------- typed parsing


def _check(condition: bool, message: str) -> None:
    if not condition:
        raise ConfigError(message)


def _check_dir(value: str, key: str) -> None:
    path = Path(value).expanduser()
    if not path.exists():
        raise ConfigError(f"{key}: folder not found: {value} (resolved to {path.resolve()})")
    if not path.is_dir():
        raise ConfigError(f"{key}: {value} is a file, expected a folder of rooms")


def _did_you_mean(name: str, options: typing.Iterable[str]) -> str:
    close = difflib.get_close_matches(name, list(options), n=1)
    return f" (did you mean {close[0]!r}?)" if close else ""


def _build(cls: type, raw: Any, where: str) -> Any:
    """Instantiate dataclass ``cls`` from a mapping, converting and checking every field's type."""
    if raw is None:
        raw = {}
    if not isinstance(raw, Mapping):
        raise ConfigError(
            f"{where or 'config'}: expected a mapping of keys, got {type(raw).__name__}: {raw!r}"
        )
    hints = typing.get_type_hints(cls)
    fields = {f.name: f for f in dataclasses.fields(cls)}
    unknown = [k for k in raw if k not in fields]
    if unknown:
        key = unknown[0]
        prefix = f"{where}." if where else ""
        raise ConfigError(
            f"{prefix}{key}: unknown key{_did_you_mean(str(key), fields)}; valid keys here: {sorted(fields)}"
        )
    values = {}
    for name, value in raw.items():
        key = f"{where}.{name}" if where else name
        values[name] = _coerce(value, hints[name], key)
    return cls(**values)


def _coerce(value: Any, hint: Any, key: str) -> Any:
    origin = typing.get_origin(hint)
    args = typing.get_args(hint)
    if dataclasses.is_dataclass(hint):
        return _build(hint, value, key)
    if origin in (Union, types.UnionType):
        if value is None and type(None) in args:
            return None
        inner = [a for a in args if a is not type(None)]
        if len(inner) == 1:
            return _coerce(value, inner[0], key)
        raise ConfigError(f"{key}: unsupported type {hint}")  # pragma: no cover - not used by the dataclasses
    if value is None:
        raise ConfigError(f"{key}: a value is required (got null)")
    if hint is bool:
        if isinstance(value, bool):
            return value
        raise ConfigError(f"{key}: expected true or false, got {value!r}")
    if hint is int:
        if isinstance(value, bool) or not isinstance(value, int):
            if isinstance(value, float) and value.is_integer():
                return int(value)
            raise ConfigError(f"{key}: expected an integer, got {value!r}")
        return value
    if hint is float:
        if isinstance(value, bool):
            raise ConfigError(f"{key}: expected a number, got {value!r}")
        if isinstance(value, str):  # YAML 1.1 reads 1e-4 as a string
            try:
                return float(value)
            except ValueError:
                raise ConfigError(f"{key}: expected a number, got {value!r}") from None
        if not isinstance(value, (int, float)):
            raise ConfigError(f"{key}: expected a number, got {value!r}")
        return float(value)
    if hint is str:
        if isinstance(value, (str, Path)):
            return str(value)
        raise ConfigError(f"{key}: expected a string, got {value!r}")
    if origin is tuple:
        if not isinstance(value, (list, tuple)) or len(value) != len(args):
            raise ConfigError(f"{key}: expected a list of {len(args)} values, got {value!r}")
        return tuple(_coerce(v, a, f"{key}[{i}]") for i, (v, a) in enumerate(zip(value, args, strict=True)))
    if origin is list:
        if isinstance(value, str):
            value = [value]
        if not isinstance(value, (list, tuple)):
            raise ConfigError(f"{key}: expected a list, got {value!r}")
        return [_coerce(v, args[0], f"{key}[{i}]") for i, v in enumerate(value)]
    if origin is dict:
        if not isinstance(value, Mapping):
            raise ConfigError(f"{key}: expected a mapping, got {value!r}")
        return {_coerce(k, args[0], key): _coerce(v, args[1], f"{key}.{k}") for k, v in value.items()}
    raise ConfigError(f"{key}: unsupported type {hint}")  # pragma: no cover


def _plain(value: Any) -> Any:
    if isinstance(value, dict):
        return {k: _plain(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_plain(v) for v in value]
    return value
