"""Distillation config: the example parses, and every kind of mistake is a clear ConfigError or exit 2."""

from __future__ import annotations

from pathlib import Path

import pytest
import yaml
from hypothesis import given, settings
from hypothesis import strategies as st
from test_distill_support import make_rooms, tiny_config, tiny_rooms  # noqa: F401 (fixture)

from showroom_ros.distillation.cli import main
from showroom_ros.distillation.config import ConfigError, DistillConfig, apply_override
from showroom_ros.models.names import DTYPES, ENGINES, FAST3R_RELEASE_REPO

REPO_ROOT = Path(__file__).resolve().parents[1]
EXAMPLE = REPO_ROOT / "config" / "distill_example.yaml"


def test_example_config_parses_with_showroom_values() -> None:
    raw = yaml.safe_load(EXAMPLE.read_text())
    config = DistillConfig.from_dict(raw, check_paths=False)
    assert config.data.num_views == 5 and config.data.image_size == (192, 256)
    assert config.train.batch_size == 4
    assert config.optim.weight_decay == 0.05 and config.optim.betas == (0.9, 0.95)
    assert config.active_losses == {
        "dense": 1.0,
        "confidence": 0.1,
        "rkd_distance": 1.0,
        "rkd_angle": 2.0,
        "cosine": 1.0,
    }
    assert config.model.freeze_backbone is True
    assert config.export_path == Path("runs/showroom_student/student")
    # Round trip through plain data.
    again = DistillConfig.from_dict(yaml.safe_load(config.to_yaml()), check_paths=False)
    assert again == config


def _load(tmp_path: Path, raw: dict) -> DistillConfig:
    path = tmp_path / "c.yaml"
    path.write_text(yaml.safe_dump(raw))
    return DistillConfig.from_yaml(path)


@pytest.mark.parametrize(
    ("change", "message"),
    [
        (
            {"loss": {"weights": {"dense": 1.0, "rkd_dist": 1.0}}},
            r"unknown loss 'rkd_dist' \(did you mean 'rkd_distance'",
        ),
        ({"loss": {"weights": {"dense": 0.0}}}, "enable at least one loss"),
        ({"loss": {"weights": {"dense": -1.0}}}, "must be >= 0"),
        ({"loss": {"weights": {"rkd_angle": 1.0}}, "train": {"batch_size": 2}}, "batch_size must be >= 3"),
        ({"loss": {"dense_heads": ["middle"]}}, "unknown head"),
        ({"data": {"root": "/definitely/not/here"}}, "data.root: folder not found: /definitely/not/here"),
        ({"data": {"image_size": [190, 256]}}, "multiples of 16"),
        ({"data": {"num_views": 1}}, "at least 2 views"),
        ({"data": {"roots": "x"}}, r"data.roots: unknown key \(did you mean 'root'\?\)"),
        ({"trian": {}}, r"trian: unknown key \(did you mean 'train'\?\)"),
        ({"train": {"batch_size": "four"}}, "train.batch_size: expected an integer"),
        ({"train": {"max_steps": None, "epochs": None}}, "give max_steps"),
        ({"train": {"precision": "fp8"}}, "train.precision"),
        ({"optim": {"betas": [0.9]}}, "optim.betas: expected a list of 2"),
        ({"model": {"image_ids": "shuffled"}}, "model.image_ids"),
        ({"data": {"rooms_file": "/no/such/list.txt"}}, "data.rooms_file: file not found"),
    ],
)
def test_bad_configs_raise_clear_errors(tmp_path: Path, tiny_rooms: Path, change: dict, message: str) -> None:  # noqa: F811
    raw = tiny_config(tiny_rooms, tmp_path / "teacher", tmp_path / "out", **change)
    with pytest.raises(ConfigError, match=message):
        _load(tmp_path, raw)


def test_yaml_scientific_notation_and_overrides(tmp_path: Path, tiny_rooms: Path) -> None:  # noqa: F811
    path = tmp_path / "c.yaml"
    raw = tiny_config(tiny_rooms, tmp_path / "teacher", tmp_path / "out")
    text = yaml.safe_dump(raw).replace("lr: 0.001", "lr: 1e-4")  # YAML 1.1 reads 1e-4 as a string
    path.write_text(text)
    config = DistillConfig.from_yaml(path, overrides=["train.max_steps=17", "loss.weights.cosine=0.5"])
    assert config.optim.lr == pytest.approx(1e-4)
    assert config.train.max_steps == 17 and config.active_losses["cosine"] == 0.5
    with pytest.raises(ConfigError, match="expected key=value"):
        apply_override({}, "train.max_steps")


def test_cli_reports_config_and_data_errors(tmp_path: Path, tiny_rooms: Path, capsys) -> None:  # noqa: F811
    raw = tiny_config(
        tiny_rooms, tmp_path / "teacher", tmp_path / "out", data={"root": str(tmp_path / "nope")}
    )
    path = tmp_path / "bad.yaml"
    path.write_text(yaml.safe_dump(raw))
    assert main([str(path), "--quiet"]) == 2
    assert "data.root: folder not found" in capsys.readouterr().err
    # More views than a room has images: named room, counts, and how to fix it.
    rooms = make_rooms(tmp_path / "rooms", num_rooms=2, frames=4)
    raw = tiny_config(
        rooms, tmp_path / "teacher", tmp_path / "out", data={"root": str(rooms), "num_views": 6}
    )
    path.write_text(yaml.safe_dump(raw))
    assert main([str(path), "--quiet", "--validate"]) == 2
    err = capsys.readouterr().err
    assert "room room0 has 4 images but 6 views per sample were requested" in err
    assert main([str(path), "--quiet", "--validate", "--set", "data.num_views=3"]) == 0
    assert "config OK: 2 training rooms" in capsys.readouterr().out
    assert main([str(tmp_path / "missing.yaml")]) == 2
    assert "config file not found" in capsys.readouterr().err


@settings(max_examples=60, deadline=None)
@given(
    key=st.sampled_from([("model", "teacher_engine"), ("model", "teacher_dtype"), ("train", "precision")]),
    value=st.one_of(st.sampled_from([*ENGINES, *DTYPES, "int8", "float32", "BF16"]), st.text(max_size=12)),
)
def test_engine_and_dtype_names_are_the_models_own(key: tuple[str, str], value: str) -> None:
    """A name is accepted exactly when models/names.py lists it: distill keeps no list of its own."""
    raw = yaml.safe_load(EXAMPLE.read_text())
    raw[key[0]][key[1]] = value
    names = ENGINES if key[1] == "teacher_engine" else DTYPES
    if value in names:
        assert getattr(getattr(DistillConfig.from_dict(raw, check_paths=False), key[0]), key[1]) == value
    else:
        with pytest.raises(ConfigError, match=rf"{'.'.join(key)}: .* is not one of"):
            DistillConfig.from_dict(raw, check_paths=False)


def test_the_default_teacher_is_the_release() -> None:
    assert DistillConfig().model.teacher == FAST3R_RELEASE_REPO
