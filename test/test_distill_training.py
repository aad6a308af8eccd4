"""End-to-end distillation on the tiny Fast3R config (CPU): learning, accumulation, resume, export, DDP."""

from __future__ import annotations

import csv
import itertools
import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch
import yaml
from test_distill_support import tiny_config, tiny_rooms, tiny_teacher  # noqa: F401 (fixtures)

pytest.importorskip("showroom_ros.models", reason="the Fast3R model package is needed")

from showroom_ros.distillation.config import ConfigError, DistillConfig
from showroom_ros.distillation.data import collate_views
from showroom_ros.distillation.runtime import lr_factor, resolve_device
from showroom_ros.distillation.trainer import Distiller
from showroom_ros.models import Fast3R

REPO_ROOT = Path(__file__).resolve().parents[1]
SHOWROOM_LOSSES = {"rkd_distance": 1.0, "rkd_angle": 2.0, "cosine": 1.0}


@pytest.fixture(autouse=True)
def _one_thread():
    """The tiny model's ops are too small for two threads: on a shared 2-core machine they only contend."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


def _distiller(rooms: Path, teacher: Path, output: Path, resume: str | None = None, **sections) -> Distiller:
    return Distiller(DistillConfig.from_dict(tiny_config(rooms, teacher, output, **sections)), resume=resume)


def _heads(distiller: Distiller) -> dict[str, torch.Tensor]:
    return {name: p.detach().clone() for name, p in distiller.trainable}


def _csv(path: Path) -> list[dict[str, str]]:
    with path.open(newline="") as handle:
        return list(csv.DictReader(handle))


def _assert_same_training(
    actual: dict[str, torch.Tensor], expected: dict[str, torch.Tensor], initial: dict[str, torch.Tensor]
) -> None:
    """Two runs trained the same weights, up to float summation order.

    Per-element comparison is the wrong test after AdamW: an update is g / (sqrt(v) + eps), so for a
    weight whose gradient is ~0 a 1e-7 relative difference in g (a different reduction order) can move
    it by a sizeable fraction of the LR. Compare how far the two runs are apart relative to how far
    training moved the weights.
    """
    names = sorted(expected)
    a = torch.cat([actual[n].flatten() for n in names])
    b = torch.cat([expected[n].flatten() for n in names])
    start = torch.cat([initial[n].flatten() for n in names])
    moved = float((b - start).norm())
    assert moved > 0
    assert float((a - b).norm()) < 1e-3 * moved, (float((a - b).norm()), moved)


def test_lr_schedule_warmup_then_cosine() -> None:
    factors = [lr_factor(s, 4, 20, 0.1) for s in range(20)]
    assert factors[:4] == [0.25, 0.5, 0.75, 1.0]
    assert factors[4] == pytest.approx(1.0) and factors[-1] > 0.1
    assert all(a >= b for a, b in itertools.pairwise(factors[4:]))
    assert lr_factor(20, 4, 20, 0.1) == pytest.approx(0.1)


def test_models_teacher_frozen_student_half_width_backbone_copied(
    tmp_path: Path,
    tiny_rooms: Path,  # noqa: F811
    tiny_teacher: Path,  # noqa: F811
) -> None:
    d = _distiller(tiny_rooms, tiny_teacher, tmp_path / "out")
    teacher, student = d.teacher, d.student
    assert not teacher.training and not any(p.requires_grad for p in teacher.parameters())
    assert list(student.config.head.dpt_layer_dims) == [8, 16, 32, 64]  # half of [16, 32, 64, 128]
    for name in ("encoder", "decoder"):
        mine, theirs = getattr(student, name).state_dict(), getattr(teacher, name).state_dict()
        assert all(torch.equal(mine[k], theirs[k]) for k in theirs)
    trainable = {n for n, _ in d.trainable}
    assert trainable and all(n.startswith("downstream_head") for n in trainable)
    assert sum(p.numel() for p in student.parameters()) < sum(p.numel() for p in teacher.parameters())
    unfrozen = _distiller(tiny_rooms, tiny_teacher, tmp_path / "o2", model={"freeze_backbone": False})
    assert any(n.startswith("encoder.") for n, _ in unfrozen.trainable)
    assert any(n.startswith("decoder.") for n, _ in unfrozen.trainable)


@pytest.mark.parametrize(
    "weights",
    [{"dense": 1.0, "confidence": 0.1}, SHOWROOM_LOSSES],
    ids=["dense", "showroom_rkd"],
)
def test_loss_decreases_on_a_fixed_batch(
    tmp_path: Path,
    tiny_rooms: Path,  # noqa: F811
    tiny_teacher: Path,  # noqa: F811
    weights: dict[str, float],
) -> None:
    d = _distiller(
        tiny_rooms,
        tiny_teacher,
        tmp_path / "out",
        loss={"weights": weights},
        optim={"lr": 2e-3, "warmup_steps": 0, "min_lr_ratio": 1.0},
        train={"max_steps": 100},
    )
    batch = collate_views([d.train_set[(0, i)] for i in (0, 4, 8, 12)])
    losses = []
    for _ in range(30):
        losses.append(float(d.forward_backward(batch).total.detach()))
        d.optimizer_step()
    assert losses[-1] < 0.5 * losses[0], losses


def test_gradient_accumulation_of_half_batches_equals_full_batch(
    tmp_path: Path,
    tiny_rooms: Path,  # noqa: F811
    tiny_teacher: Path,  # noqa: F811
) -> None:
    weights = {"dense": 1.0, "confidence": 0.1, "cosine": 1.0}  # per-room terms (see docs on RKD)
    d = _distiller(tiny_rooms, tiny_teacher, tmp_path / "out", loss={"weights": weights})
    samples = [d.train_set[(0, i)] for i in (1, 6, 11, 17)]
    d.forward_backward(collate_views(samples))
    full = {n: p.grad.clone() for n, p in d.trainable}
    d.optimizer.zero_grad(set_to_none=True)
    d.forward_backward(collate_views(samples[:2]), loss_scale=0.5)
    d.forward_backward(collate_views(samples[2:]), loss_scale=0.5)
    for name, param in d.trainable:
        torch.testing.assert_close(param.grad, full[name], rtol=1e-4, atol=1e-7)
    assert sum(float(g.abs().sum()) for g in full.values()) > 0

    # The whole loop: 3 optimiser steps of 4 rooms == 3 steps of 2 x 2 rooms accumulated.
    whole = _distiller(
        tiny_rooms, tiny_teacher, tmp_path / "a", loss={"weights": weights}, train={"max_steps": 3}
    )
    initial = _heads(whole)
    whole.fit(export=False)
    halves = _distiller(
        tiny_rooms,
        tiny_teacher,
        tmp_path / "b",
        loss={"weights": weights},
        train={"max_steps": 3, "batch_size": 2, "grad_accum_steps": 2},
    )
    halves.fit(export=False)
    _assert_same_training(_heads(halves), _heads(whole), initial)
    a, b = _csv(tmp_path / "a" / "metrics.csv"), _csv(tmp_path / "b" / "metrics.csv")
    assert [float(r["loss"]) for r in a] == pytest.approx([float(r["loss"]) for r in b], rel=1e-5)


def test_stop_and_resume_is_bit_exact(
    tmp_path: Path,
    tiny_rooms: Path,  # noqa: F811
    tiny_teacher: Path,  # noqa: F811
) -> None:
    # Jittered views, random image ids, accumulation, all losses, several epochs (5 batches each).
    sections = {
        "loss": {"weights": {"dense": 1.0, "confidence": 0.1, **SHOWROOM_LOSSES}},
        "train": {"max_steps": 6, "grad_accum_steps": 2, "checkpoint_every": 2, "keep_checkpoints": 0},
        "data": {"val_holdout": 1},
    }
    straight = _distiller(tiny_rooms, tiny_teacher, tmp_path / "straight", **sections)
    straight.fit(export=False)

    first = _distiller(tiny_rooms, tiny_teacher, tmp_path / "resumed", **sections)
    first.fit(stop_after=3, export=False)  # "crash" after step 3 (a checkpoint is written there)
    assert first.step == 3
    checkpoints = sorted(p.name for p in (tmp_path / "resumed" / "checkpoints").iterdir())
    assert checkpoints == ["step_00000002.pt", "step_00000003.pt"]
    del first
    with pytest.raises(ConfigError, match="already holds checkpoints"):
        _distiller(tiny_rooms, tiny_teacher, tmp_path / "resumed", **sections)  # forgot --resume
    torch.manual_seed(1234)  # the resumed process starts with other RNG state: the checkpoint restores it
    resumed = _distiller(tiny_rooms, tiny_teacher, tmp_path / "resumed", resume="auto", **sections)
    assert (resumed.step, resumed.epoch, resumed.batch_in_epoch) == (3, 1, 2)
    resumed.fit(export=False)

    for name, value in _heads(straight).items():
        assert torch.equal(dict(resumed.trainable)[name].detach(), value), name
    s_state, r_state = straight.optimizer.state_dict()["state"], resumed.optimizer.state_dict()["state"]
    for key in s_state:
        assert torch.equal(s_state[key]["exp_avg_sq"], r_state[key]["exp_avg_sq"])
    assert straight.scheduler.state_dict() == resumed.scheduler.state_dict()
    rows_s = _csv(tmp_path / "straight" / "metrics.csv")
    rows_r = _csv(tmp_path / "resumed" / "metrics.csv")
    assert [r["step"] for r in rows_r] == ["1", "2", "3", "4", "5", "6"]
    for a, b in zip(rows_s, rows_r, strict=True):
        assert {k: v for k, v in a.items() if "per_s" not in k} == {
            k: v for k, v in b.items() if "per_s" not in k
        }
    assert resumed.last_eval == straight.last_eval and "pts_err_global" in resumed.last_eval


def test_exported_student_loads_with_from_pretrained_and_runs(
    tmp_path: Path,
    tiny_rooms: Path,  # noqa: F811
    tiny_teacher: Path,  # noqa: F811
) -> None:
    d = _distiller(
        tiny_rooms, tiny_teacher, tmp_path / "out", train={"max_steps": 2}, data={"val_holdout": 1}
    )
    summary = d.fit()
    export = summary["export"]
    assert export == tmp_path / "out" / "student"
    assert (export / "config.json").is_file() and (export / "model.safetensors").is_file()
    assert summary["eval"]["pts_err"] > 0
    loaded = Fast3R.from_pretrained(export)
    assert list(loaded.config.head.dpt_layer_dims) == [8, 16, 32, 64]
    for name, value in d.student.state_dict().items():
        assert torch.equal(loaded.state_dict()[name], value), name
    batch = collate_views([d.train_set[(0, 0)], d.train_set[(0, 1)]])
    with torch.no_grad():
        out = loaded(batch["views"], image_idx_seed=0)
    assert len(out) == 3
    assert out[0]["pts3d_in_other_view"].shape == (2, 32, 48, 3) and out[0]["conf"].shape == (2, 32, 48)
    assert torch.isfinite(out[2]["pts3d_local"]).all()
    eval_rows = _csv(tmp_path / "out" / "eval.csv")
    assert [r["step"] for r in eval_rows] == ["2"]


def test_ddp_two_gloo_processes_match_one_process(
    tmp_path: Path,
    tiny_rooms: Path,  # noqa: F811
    tiny_teacher: Path,  # noqa: F811
) -> None:
    """torchrun with 2 CPU processes x 2 rooms == 1 process x 4 rooms (relation losses gathered globally)."""
    sections = {
        "loss": {"weights": {"dense": 1.0, "confidence": 0.1, **SHOWROOM_LOSSES}},
        "train": {"max_steps": 3},
    }
    single = _distiller(tiny_rooms, tiny_teacher, tmp_path / "single", **sections)
    initial = _heads(single)
    single.fit()
    config = tmp_path / "ddp.yaml"
    config.write_text(yaml.safe_dump(tiny_config(tiny_rooms, tiny_teacher, tmp_path / "ddp", **sections)))
    scratch = tmp_path / "tmp"  # torchrun leaves a torchelastic_* folder behind in the temporary folder
    scratch.mkdir()
    env = {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONPATH": str(REPO_ROOT), "TMPDIR": str(scratch)}
    command = [
        sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node", "2",
        "-m", "showroom_ros.distillation.cli", str(config), "--quiet",
    ]  # fmt: skip
    result = subprocess.run(command, capture_output=True, text=True, env=env, timeout=240, cwd=REPO_ROOT)
    assert result.returncode == 0, result.stdout[-2000:] + result.stderr[-6000:]
    distributed = Fast3R.from_pretrained(tmp_path / "ddp" / "student").state_dict()
    _assert_same_training({n: distributed[n] for n in initial}, _heads(single), initial)
    a, b = _csv(tmp_path / "single" / "metrics.csv"), _csv(tmp_path / "ddp" / "metrics.csv")
    for key in ("loss", "loss_rkd_distance", "loss_rkd_angle", "loss_dense"):
        assert [float(r[key]) for r in b] == pytest.approx([float(r[key]) for r in a], rel=1e-4)


def test_train_device_follows_the_models_device_rule() -> None:
    """One rule for devices (models.devices): training and inference accept and refuse the same names."""
    from showroom_ros.models.devices import resolve_device as model_device

    assert resolve_device("auto") == torch.device(model_device("auto"))
    assert resolve_device(" CPU ") == torch.device("cpu")
    for refused in ("tpu", "mps", ""):
        with pytest.raises(ConfigError, match=r"train\.device: unknown device"):
            resolve_device(refused)
    if not torch.cuda.is_available():
        with pytest.raises(ConfigError, match="no CUDA GPU"):
            resolve_device("cuda", local_rank=1)
    else:
        assert resolve_device("cuda", local_rank=0) == torch.device("cuda:0")
