"""ShowRoom's distilled student: the teacher with halved DPT layer widths and the teacher's backbone."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
import torch

from showroom_ros.models import CheckpointError, Fast3R, Fast3RConfig, student_config


@pytest.fixture(scope="module")
def golden(shared_root: Path) -> dict[str, Any]:
    return torch.load(shared_root / "fixtures/fast3r/tiny_golden.pt", weights_only=True)


@pytest.fixture(scope="module")
def teacher(golden: dict[str, Any]) -> Fast3R:
    net = Fast3R(golden["config"]).eval()
    net.load_state_dict(golden["state_dict"])
    return net


def test_vitl_student_config_and_size(shared_root: Path) -> None:
    release = Fast3RConfig.from_json_file(shared_root / "fixtures/fast3r/vitl512_config.json")
    config = student_config(release)
    assert config.head.dpt_layer_dims == (48, 96, 192, 384)
    assert config.head.dpt_feature_dim == 256
    assert config.encoder == release.encoder and config.decoder == release.decoder
    assert release.head.dpt_layer_dims == (96, 192, 384, 768)  # the teacher's config is not modified
    assert Fast3RConfig.from_dict(config.to_dict()) == config
    assert config.to_dict()["head_args"]["dpt_layer_dims"] == [48, 96, 192, 384]
    with torch.device("meta"):
        student, full = Fast3R(config), Fast3R(release)
    assert list(student.state_dict()) == list(full.state_dict())  # same names, narrower heads
    head = student.downstream_head.dpt
    assert tuple(head.act_postprocess[3][0].weight.shape) == (384, 1024, 1, 1)
    assert tuple(head.scratch.layer_rn[0].weight.shape) == (256, 48, 3, 3)
    encoder_decoder = sum(
        p.numel() for name in ("encoder", "decoder") for p in getattr(full, name).parameters()
    )
    assert (
        sum(p.numel() for p in student.encoder.parameters())
        + sum(p.numel() for p in student.decoder.parameters())
        == encoder_decoder
    )
    assert student.num_parameters() < full.num_parameters()


def test_student_loads_teacher_backbone_and_runs(teacher: Fast3R, golden: dict[str, Any]) -> None:
    torch.manual_seed(0)
    student = Fast3R(student_config(teacher.config)).eval()
    assert student.config.head.dpt_layer_dims == (8, 16, 32, 64)
    student.load_backbone_from(teacher)
    for name in ("encoder", "decoder"):
        for key, tensor in getattr(teacher, name).state_dict().items():
            assert torch.equal(getattr(student, name).state_dict()[key], tensor), f"{name}.{key}"
    intermediates: dict[str, Any] = {}
    with torch.inference_mode():
        outputs = student(
            golden["views_input"], image_ids=golden["image_idx_used"], intermediates=intermediates
        )
    # Same backbone -> the decoder features the heads read are the teacher's.
    for got, want in zip(
        intermediates["decoder_layer_outputs"], golden["intermediates"]["decoder_layer_outputs"], strict=True
    ):
        torch.testing.assert_close(got, want, atol=1e-5, rtol=1e-5)
    assert [list(o) for o in outputs] == [list(o) for o in golden["outputs"]]
    for out in outputs:
        assert out["pts3d_in_other_view"].shape == (1, 48, 64, 3) and torch.isfinite(out["pts3d_local"]).all()
        assert (out["conf"] >= 1).all()


def test_student_subset_load_with_strict_false(teacher: Fast3R) -> None:
    student = Fast3R(student_config(teacher.config))
    subset = {k: v for k, v in teacher.state_dict().items() if k.startswith(("encoder.", "decoder."))}
    result = student.load_state_dict(subset, strict=False)
    assert not result.unexpected_keys
    assert result.missing_keys and all(k.startswith("downstream_head") for k in result.missing_keys)


def test_student_checkpoint_round_trip(teacher: Fast3R, tmp_path: Path) -> None:
    student = Fast3R(student_config(teacher.config))
    student.load_backbone_from(teacher)
    torch.save({"model_state_dict": student.state_dict()}, tmp_path / "student.pth")
    student.save_pretrained(tmp_path / "hf")
    for source in (tmp_path / "hf", tmp_path / "hf" / "model.safetensors"):
        loaded = Fast3R.from_pretrained(source)
        assert loaded.config == student.config
        for key, tensor in student.state_dict().items():
            assert torch.equal(loaded.state_dict()[key], tensor), key
    loaded = Fast3R.from_pretrained(tmp_path / "student.pth", config=student.config)
    assert torch.equal(loaded.downstream_head.dpt.head[4].weight, student.downstream_head.dpt.head[4].weight)
    # The teacher's heads do not fit the student.
    torch.save(teacher.state_dict(), tmp_path / "teacher.pth")
    with pytest.raises(CheckpointError, match="shape mismatches"):
        Fast3R.from_pretrained(tmp_path / "teacher.pth", config=student.config)


def test_backbone_from_a_different_teacher_is_refused(teacher: Fast3R, golden: dict[str, Any]) -> None:
    other = dict(golden["config"])
    other["decoder_args"] = {**other["decoder_args"], "embed_dim": 48, "num_heads": 4}
    student = Fast3R(student_config(Fast3RConfig.from_dict(other)))
    with pytest.raises(CheckpointError, match="teacher decoder does not fit"):
        student.load_backbone_from(teacher)
