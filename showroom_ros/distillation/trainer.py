"""The distillation loop: frozen Fast3R teacher -> ShowRoom student (half-width DPT heads).

One :class:`Distiller` owns the models, data, optimiser and logs of a run. Under ``torchrun`` every process
builds its own and DistributedDataParallel averages the gradients; the config is the same, and
``train.batch_size`` is the *global* number of rooms per micro-batch, split evenly over the processes, so a
run gives the same result on 1 or N processes (see docs/distillation.md).

Exact resume: checkpoints are written only at optimiser-step boundaries and hold the trainable weights,
the optimiser, the LR scheduler, the grad scaler, the RNG states and the data position (epoch, batch), and
every random choice about a sample is a pure function of (seed, epoch, index). A resumed run on CPU is
therefore bit-for-bit the uninterrupted one. With a frozen backbone only the heads are stored: the encoder
and decoder are re-copied from the teacher, which must be the same checkpoint.
"""

from __future__ import annotations

import contextlib
import logging
import time
import warnings
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import torch
import torch.distributed as dist
from torch import nn
from torch.nn.parallel import DistributedDataParallel

from showroom_ros.distillation.config import ConfigError, DistillConfig
from showroom_ros.distillation.data import (
    DataError,
    ResumableBatchSampler,
    Room,
    RoomViewsDataset,
    collate_views,
    discover_rooms,
    fixed_batches,
    make_loader,
    move_batch,
    read_room_list,
)
from showroom_ros.distillation.losses import (
    DistillationLoss,
    LossResult,
    pointmap_error,
    scale_aligned_error,
)
from showroom_ros.distillation.metrics_log import MetricsLog
from showroom_ros.distillation.runtime import DistEnv, init_distributed, lr_factor, resolve_dtype
from showroom_ros.distillation.students import build_student, configure_trainable, load_teacher, make_optimizer
from showroom_ros.io.console import progress_bar

LOG = logging.getLogger(__name__)

CHECKPOINT_FORMAT = 1
CHECKPOINT_DIR = "checkpoints"


# ---------------------------------------------------------------------- the trainer


def split_rooms(cfg: DistillConfig) -> tuple[list[Room], list[Room]]:
    d = cfg.data
    kwargs = {
        "layout": d.layout,
        "scannetpp_image_dir": d.scannetpp_image_dir,
        "min_images": d.num_views,
        "skip_small": d.skip_small_rooms,
    }
    names = read_room_list(d.rooms_file) if d.rooms_file else None
    train = discover_rooms(d.root, names=names, **kwargs)
    val: list[Room] = []
    if d.val_root or d.val_rooms_file:
        val_names = read_room_list(d.val_rooms_file) if d.val_rooms_file else None
        val = discover_rooms(d.val_root or d.root, names=val_names, **kwargs)
        if not d.val_root:
            held = {r.name for r in val}
            train = [r for r in train if r.name not in held]
    elif d.val_holdout:
        if d.val_holdout >= len(train):
            raise ConfigError(
                f"data.val_holdout: holding out {d.val_holdout} rooms leaves none of the {len(train)} for training"
            )
        train, val = train[: -d.val_holdout], train[-d.val_holdout :]
    if not train:
        raise DataError("no training rooms left after removing the validation rooms")
    return train, val


class Distiller:
    """Build everything from a :class:`DistillConfig`; :meth:`fit` trains, evaluates, checkpoints, exports."""

    def __init__(self, config: DistillConfig, resume: str | Path | None = None, env: DistEnv | None = None) -> None:
        self.cfg = config
        self.env = env or init_distributed(config.train.device)
        env, cfg = self.env, config
        self.device = env.device
        self.output_dir = Path(cfg.output_dir)
        if resume is None and any((self.output_dir / CHECKPOINT_DIR).glob("step_*.pt")):
            raise ConfigError(
                f"output_dir {self.output_dir} already holds checkpoints of an earlier run: continue it "
                "with --resume, or choose another output_dir (a fresh run would mix its checkpoints with "
                "the old ones)"
            )
        if cfg.train.batch_size % env.world_size:
            raise ConfigError(
                f"train.batch_size ({cfg.train.batch_size}) is the global number of rooms per micro-batch "
                f"and must split evenly over the {env.world_size} processes"
            )
        self.local_batch = cfg.train.batch_size // env.world_size
        self.amp_dtype = resolve_dtype(cfg.train.precision, self.device)
        if self.amp_dtype == torch.float16 and self.device.type != "cuda":
            raise ConfigError("train.precision: fp16 needs a CUDA device; use bf16 or fp32 on the CPU")

        # ---- data (before the models, so a bad data folder fails in seconds)
        train_rooms, val_rooms = split_rooms(cfg)
        d = cfg.data
        teacher_dtype = resolve_dtype(cfg.model.teacher_dtype, self.device)
        common = {
            "num_views": d.num_views,
            "image_size": d.image_size,
            "view_interval": d.view_interval,
            "seed": cfg.seed,
        }
        # ---- models: the teacher in fp32 first so the student copies full-precision backbone weights
        LOG.info("loading teacher %s", cfg.model.teacher)
        teacher = load_teacher(cfg.model.teacher, torch.device("cpu"), torch.float32)
        random_ids = cfg.model.image_ids == "random" and bool(teacher.config.decoder.random_image_idx_embedding)
        self.train_set = RoomViewsDataset(
            train_rooms,
            sample_stride=d.sample_stride,
            jitter=d.jitter,
            max_samples_per_room=d.max_samples_per_room,
            random_ids=random_ids,
            **common,
        )
        self.val_set = (
            RoomViewsDataset(val_rooms, sample_stride=d.sample_stride, random_ids=random_ids, **common)
            if val_rooms
            else None
        )
        self.sampler = ResumableBatchSampler(
            len(self.train_set), cfg.train.batch_size, seed=cfg.seed, rank=env.rank, world_size=env.world_size
        )
        pin = d.pin_memory if d.pin_memory is not None else self.device.type == "cuda"
        self.train_loader = make_loader(self.train_set, self.sampler, d.num_workers, d.prefetch_factor, pin)
        self.val_loader = None
        if self.val_set is not None and env.is_main:
            batches = fixed_batches(self.val_set, self.local_batch, cfg.train.eval_batches or None)
            val_keys = [[(0, i) for i in b] for b in batches]
            self.val_loader = make_loader(self.val_set, val_keys, min(d.num_workers, 2), d.prefetch_factor, pin)
        LOG.info(
            "training data: %s; validation: %s",
            self.train_set.describe(),
            self.val_set.describe() if self.val_set else "none",
        )

        torch.manual_seed(cfg.seed)  # the student heads' initialisation
        student = build_student(teacher, cfg.model.student_init)
        self.teacher_amp: torch.dtype | None = None
        if cfg.model.teacher_engine != "torch":
            # The frozen teacher's forward is inference only, so it may run on an engine (CPU); it keeps
            # fp32 weights (engines are built from them) and asks the engine for the teacher dtype.
            if self.device.type != "cpu":
                raise ConfigError(f"model.teacher_engine {cfg.model.teacher_engine!r} runs on CPU, not {self.device}")
            if teacher_dtype not in (torch.float32, torch.bfloat16):
                raise ConfigError("model.teacher_engine needs model.teacher_dtype fp32 or bf16")
            precision = "bf16" if teacher_dtype == torch.bfloat16 else "fp32"
            teacher.use_engine(cfg.model.teacher_engine, precision)
            self.teacher_amp, teacher_dtype = teacher_dtype, torch.float32
        self.teacher = teacher.to(self.device, teacher_dtype)
        self.student = student.to(self.device)
        self.loss_fn = DistillationLoss(
            cfg.loss.weights, cfg.loss.dense_heads, cfg.loss.feature_heads, cfg.loss.feature_pool
        )
        heads: set[str] = set()
        if {"dense", "confidence"} & set(self.loss_fn.weights):
            heads |= set(cfg.loss.dense_heads)
        if self.loss_fn.uses_features:
            heads |= set(cfg.loss.feature_heads)
        self.trainable = configure_trainable(self.student, cfg.model.freeze_backbone, heads)
        self.trainable = self._drop_unused(self.trainable)
        if not self.trainable:
            raise ConfigError("nothing to train: the backbone is frozen and no loss uses a head")
        self.model: nn.Module = self.student
        if env.distributed:
            with warnings.catch_warnings():
                # The only buffer (the image-index table) is constant: no need to re-broadcast it per
                # forward. Newer torch renames the flag; the old one still works and is in every version.
                warnings.simplefilter("ignore", FutureWarning)
                self.model = DistributedDataParallel(
                    self.student,
                    device_ids=[self.device.index] if self.device.type == "cuda" else None,
                    broadcast_buffers=False,
                )

        # ---- optimisation
        self.optimizer = make_optimizer(self.trainable, cfg)
        batches_per_step = cfg.train.grad_accum_steps
        if cfg.train.max_steps is not None:
            self.total_steps = cfg.train.max_steps
        else:
            assert cfg.train.epochs is not None
            self.total_steps = max(1, int(cfg.train.epochs * self.sampler.batches_per_epoch / batches_per_step))
        o = cfg.optim
        self.scheduler = torch.optim.lr_scheduler.LambdaLR(
            self.optimizer, lambda s: lr_factor(s, o.warmup_steps, self.total_steps, o.min_lr_ratio)
        )
        self.scaler = torch.amp.GradScaler("cuda") if self.amp_dtype == torch.float16 else None

        self.step = 0
        self.epoch = 0
        self.batch_in_epoch = 0
        self.last_eval: dict[str, float] = {}
        if resume is not None:
            path = find_checkpoint(resume, self.output_dir)
            if path is None:
                LOG.info("no checkpoint found for --resume %s: starting from scratch", resume)
            else:
                self.load_checkpoint(path)
        self.log = MetricsLog(self.output_dir, env.is_main, cfg.train.tensorboard, self.step)
        if env.is_main:
            self.output_dir.mkdir(parents=True, exist_ok=True)
            (self.output_dir / "config.yaml").write_text(cfg.to_yaml(), encoding="utf-8")
        LOG.info(
            "student: %.2fM parameters, %.2fM trainable; teacher %.2fM; %d optimiser steps of %d rooms x %d views",
            _count(self.student) / 1e6,
            sum(p.numel() for _, p in self.trainable) / 1e6,
            _count(self.teacher) / 1e6,
            self.total_steps,
            cfg.train.batch_size * cfg.train.grad_accum_steps,
            d.num_views,
        )

    def _drop_unused(self, named: list[tuple[str, nn.Parameter]]) -> list[tuple[str, nn.Parameter]]:
        """Freeze trainable parameters that no output depends on.

        Fast3R's DPT heads hold a fusion unit that upstream registers but never calls
        (``refinenet4.resConfUnit1``). DDP refuses parameters that get no gradient, and AdamW would carry
        them for nothing, so one probe forward/backward on one sample finds and freezes them.
        """
        sample = collate_views([self.train_set[(0, 0)]])
        batch = move_batch(sample, self.device)
        outputs = self.student_outputs(batch, model=self.student)
        probe = sum(value.float().mean() for out in outputs for value in out.values())
        assert isinstance(probe, torch.Tensor)
        probe.backward()
        kept = []
        for name, param in named:
            if param.grad is None:
                param.requires_grad_(False)
                LOG.debug("parameter %s is not used by the forward pass: frozen", name)
            else:
                param.grad = None
                kept.append((name, param))
        return kept

    # ------------------------------------------------------------------ one step
    def _gather(self, rows: torch.Tensor) -> torch.Tensor:
        """All ranks' (B, F) rows in rank order; only this rank's rows keep their gradient."""
        parts = [torch.empty_like(rows) for _ in range(self.env.world_size)]
        dist.all_gather(parts, rows.detach().contiguous())
        parts[self.env.rank] = rows
        return torch.cat(parts, dim=0)

    def teacher_outputs(self, batch: dict[str, Any]) -> list[dict[str, torch.Tensor]]:
        with torch.no_grad():
            return self.teacher(batch["views"], image_ids=batch["image_ids"], autocast_dtype=self.teacher_amp)

    def student_outputs(self, batch: dict[str, Any], model: nn.Module | None = None) -> list[dict[str, torch.Tensor]]:
        amp = None if self.amp_dtype == torch.float32 else self.amp_dtype
        return (model or self.model)(batch["views"], image_ids=batch["image_ids"], autocast_dtype=amp)

    def forward_backward(self, batch: dict[str, Any], loss_scale: float = 1.0, sync: bool = True) -> LossResult:
        """Teacher and student forward on one micro-batch, then backward of ``loss_scale`` x the objective.

        ``sync=False`` skips DDP's gradient all-reduce (all micro-batches of an accumulation but the last).
        """
        batch = move_batch(batch, self.device)
        teacher_out = self.teacher_outputs(batch)
        no_sync = self.model.no_sync() if (self.env.distributed and not sync) else contextlib.nullcontext()
        with no_sync:
            student_out = self.student_outputs(batch)
            result = self.loss_fn(
                student_out,
                teacher_out,
                gather=self._gather if self.env.distributed else None,
                relation_scale=float(self.env.world_size),
            )
            objective = result.objective * loss_scale
            if self.scaler is not None:
                objective = self.scaler.scale(objective)
            objective.backward()
        return result

    def optimizer_step(self) -> float:
        """Clip, step, zero the gradients, advance the schedule; returns the pre-clip gradient norm."""
        params = [p for _, p in self.trainable]
        if self.scaler is not None:
            self.scaler.unscale_(self.optimizer)
        max_norm = self.cfg.optim.max_grad_norm if self.cfg.optim.max_grad_norm > 0 else float("inf")
        grad_norm = float(torch.nn.utils.clip_grad_norm_(params, max_norm))
        if self.scaler is not None:
            self.scaler.step(self.optimizer)
            self.scaler.update()
        else:
            self.optimizer.step()
        self.optimizer.zero_grad(set_to_none=True)
        self.scheduler.step()
        return grad_norm

    # ------------------------------------------------------------------ loop
    def _batches(self) -> Iterator[dict[str, Any]]:
        """Training micro-batches from the current data position on, advancing epoch and batch counters."""
        while True:
            self.sampler.set_position(self.epoch, self.batch_in_epoch)
            for batch in self.train_loader:
                self.batch_in_epoch += 1
                yield batch
            self.epoch += 1
            self.batch_in_epoch = 0

    def fit(self, stop_after: int | None = None, export: bool = True) -> dict[str, Any]:
        """Train up to ``train.max_steps`` (or ``stop_after`` optimiser steps, to simulate an interruption).

        Returns a summary: final step, last logged losses, last evaluation and the export folder.
        """
        cfg, env = self.cfg, self.env
        target = self.total_steps if stop_after is None else min(self.total_steps, stop_after)
        k = cfg.train.grad_accum_steps
        self.student.train()
        if cfg.model.freeze_backbone:
            self.student.encoder.eval()
            self.student.decoder.eval()
        progress = _progress(target, self.step, env.is_main and cfg.train.progress)
        window: dict[str, float] = {}
        window_steps, window_start, micro = 0, time.perf_counter(), 0
        last_logged: dict[str, float] = {}
        batches = self._batches()
        try:
            while self.step < target:
                batch = next(batches)
                micro += 1
                result = self.forward_backward(batch, loss_scale=1.0 / k, sync=micro == k)
                for name, value in {"loss": result.total, **result.terms}.items():
                    window[name] = window.get(name, 0.0) + float(value.detach()) / k
                if micro < k:
                    continue
                micro = 0
                grad_norm = self.optimizer_step()
                self.step += 1
                window["grad_norm"] = window.get("grad_norm", 0.0) + grad_norm
                window_steps += 1
                progress.update(1)
                if cfg.train.log_every and (self.step % cfg.train.log_every == 0 or self.step == target):
                    last_logged = self._log_train(window, window_steps, time.perf_counter() - window_start)
                    progress.set_postfix_str(f"loss={last_logged['loss']:.4g}")
                    window, window_steps, window_start = {}, 0, time.perf_counter()
                if self.val_set is not None and cfg.train.eval_every and self.step % cfg.train.eval_every == 0:
                    self.evaluate()
                if cfg.train.checkpoint_every and self.step % cfg.train.checkpoint_every == 0:
                    self.save_checkpoint()
        finally:
            progress.close()
        finished = self.step >= self.total_steps
        if not cfg.train.checkpoint_every or self.step % cfg.train.checkpoint_every != 0:
            self.save_checkpoint()  # the final (or interrupted) state, unless the cadence just wrote it
        if (
            finished
            and self.val_set is not None
            and not (cfg.train.eval_every and self.step % cfg.train.eval_every == 0)
        ):
            self.evaluate()
        export_path = self.export() if finished and export else None
        return {
            "step": self.step,
            "epoch": self.epoch,
            "train": last_logged,
            "eval": self.last_eval,
            "export": export_path,
        }

    def _log_train(self, window: dict[str, float], steps: int, seconds: float) -> dict[str, float]:
        names = sorted(window)
        values = torch.tensor([window[n] / steps for n in names], dtype=torch.float64)
        if self.env.distributed:
            dist.all_reduce(values)
            values /= self.env.world_size
        means = dict(zip(names, values.tolist(), strict=True))
        rooms = self.cfg.train.batch_size * self.cfg.train.grad_accum_steps
        row: dict[str, Any] = {
            "step": self.step,
            "epoch": self.epoch,
            "samples": self.step * rooms,
            "lr": self.optimizer.param_groups[0]["lr"],
            "loss": means.pop("loss"),
        }
        grad_norm = means.pop("grad_norm")
        row.update({f"loss_{n}": means[n] for n in sorted(means)})
        seconds = max(seconds, 1e-9)
        row.update(grad_norm=grad_norm, steps_per_s=steps / seconds, rooms_per_s=steps * rooms / seconds)
        if self.env.is_main:
            self.log.write("metrics.csv", row, self.step, "train")
            LOG.info("step %d/%d loss %.5g lr %.3g", self.step, self.total_steps, row["loss"], row["lr"])
        return row

    # ------------------------------------------------------------------ evaluation
    @torch.no_grad()
    def evaluate(self) -> dict[str, float]:
        """Student vs teacher on the held-out rooms (rank 0; the others wait); errors are relative."""
        metrics: dict[str, float] = {}
        if self.env.is_main and self.val_loader is not None:
            was_training = self.student.training
            self.student.eval()
            sums: dict[str, float] = {}
            rooms = 0
            for batch in self.val_loader:
                batch = move_batch(batch, self.device)
                teacher_out = self.teacher_outputs(batch)
                student_out = self.student_outputs(batch, model=self.student)
                for head in self.cfg.loss.dense_heads:
                    weighted, plain, conf = pointmap_error(student_out, teacher_out, head)
                    aligned = scale_aligned_error(student_out, teacher_out, head)
                    for key, values in (
                        (f"pts_err_{head}", weighted),
                        (f"pts_err_{head}_unweighted", plain),
                        (f"pts_err_{head}_scale_aligned", aligned),
                        (f"log_conf_err_{head}", conf),
                    ):
                        sums[key] = sums.get(key, 0.0) + float(values.sum())
                rooms += len(batch["rooms"])
            metrics = {key: value / rooms for key, value in sums.items()}
            metrics["pts_err"] = sum(metrics[f"pts_err_{h}"] for h in self.cfg.loss.dense_heads) / len(
                self.cfg.loss.dense_heads
            )
            if was_training:
                self.student.train()
                if self.cfg.model.freeze_backbone:
                    self.student.encoder.eval()
                    self.student.decoder.eval()
            self.log.write("eval.csv", {"step": self.step, **metrics}, self.step, "eval")
            LOG.info("eval step %d: %s", self.step, ", ".join(f"{k} {v:.4g}" for k, v in metrics.items()))
        if self.env.distributed:
            dist.barrier()
        self.last_eval = metrics
        return metrics

    # ------------------------------------------------------------------ checkpoints and export
    def state_dict(self) -> dict[str, Any]:
        rng: dict[str, Any] = {"torch": torch.get_rng_state()}
        if torch.cuda.is_available():
            rng["cuda"] = torch.cuda.get_rng_state_all()
        return {
            "format": CHECKPOINT_FORMAT,
            "step": self.step,
            "epoch": self.epoch,
            "batch_in_epoch": self.batch_in_epoch,
            "total_steps": self.total_steps,
            "trainable": {name: p.detach().cpu().clone() for name, p in self.trainable},
            "optimizer": self.optimizer.state_dict(),
            "scheduler": self.scheduler.state_dict(),
            "scaler": self.scaler.state_dict() if self.scaler is not None else None,
            "rng": rng,
            "config": self.cfg.to_dict(),
            "world_size": self.env.world_size,
        }

    def save_checkpoint(self) -> Path | None:
        """Write ``checkpoints/step_XXXXXXXX.pt`` (rank 0) and prune to ``train.keep_checkpoints``."""
        if not self.env.is_main:
            return None
        directory = self.output_dir / CHECKPOINT_DIR
        directory.mkdir(parents=True, exist_ok=True)
        path = directory / f"step_{self.step:08d}.pt"
        tmp = path.with_suffix(".tmp")
        torch.save(self.state_dict(), tmp)
        tmp.replace(path)  # atomic: a crash mid-write never leaves a truncated "latest" checkpoint
        keep = self.cfg.train.keep_checkpoints
        if keep:
            for old in sorted(directory.glob("step_*.pt"))[:-keep]:
                old.unlink()
        LOG.info("checkpoint %s", path)
        return path

    def load_checkpoint(self, path: str | Path) -> None:
        """Restore weights, optimiser, scheduler, scaler, RNG and data position for an exact resume."""
        path = Path(path)
        try:
            state = torch.load(path, map_location="cpu", weights_only=True)
        except Exception as exc:
            raise ValueError(f"cannot read checkpoint {path}: {exc}") from exc
        if not isinstance(state, dict) or state.get("format") != CHECKPOINT_FORMAT:
            raise ValueError(f"{path} is not a showroom distill checkpoint (format {CHECKPOINT_FORMAT})")
        saved = state["trainable"]
        mine = dict(self.trainable)
        missing, unexpected = sorted(set(mine) - set(saved)), sorted(set(saved) - set(mine))
        if missing or unexpected:
            raise ValueError(
                f"{path} does not match this run's trainable parameters (missing {missing[:5]}, unexpected "
                f"{unexpected[:5]}); was model.freeze_backbone or loss.*_heads changed?"
            )
        with torch.no_grad():
            for name, param in mine.items():
                if saved[name].shape != param.shape:
                    raise ValueError(
                        f"{path}: {name} has shape {tuple(saved[name].shape)}, expected {tuple(param.shape)}"
                    )
                param.copy_(saved[name])
        self.optimizer.load_state_dict(state["optimizer"])
        self.scheduler.load_state_dict(state["scheduler"])
        if self.scaler is not None and state.get("scaler"):
            self.scaler.load_state_dict(state["scaler"])
        torch.set_rng_state(state["rng"]["torch"])
        if "cuda" in state["rng"] and torch.cuda.is_available():
            torch.cuda.set_rng_state_all(state["rng"]["cuda"])
        self.step, self.epoch, self.batch_in_epoch = state["step"], state["epoch"], state["batch_in_epoch"]
        old = state.get("config", {})
        for section, key in (
            ("train", "batch_size"),
            ("train", "grad_accum_steps"),
            ("seed", None),
            ("data", "num_views"),
            ("model", "teacher"),
        ):
            before = old.get(section) if key is None else old.get(section, {}).get(key)
            now = self.cfg.to_dict()[section] if key is None else self.cfg.to_dict()[section][key]
            if before != now:
                LOG.warning(
                    "resuming with %s%s = %r (checkpoint had %r): the run will not match an uninterrupted one",
                    section,
                    f".{key}" if key else "",
                    now,
                    before,
                )
        if state.get("total_steps") != self.total_steps:
            LOG.warning("the schedule length changed (%s -> %s steps)", state.get("total_steps"), self.total_steps)
        LOG.info(
            "resumed from %s at step %d (epoch %d, batch %d)",
            path,
            self.step,
            self.epoch,
            self.batch_in_epoch,
        )

    def export(self, directory: str | Path | None = None) -> Path | None:
        """``save_pretrained`` the student (config.json + model.safetensors) for the ``showroom`` backend."""
        if not self.env.is_main:
            return None
        target = Path(directory) if directory else self.cfg.export_path
        self.student.save_pretrained(target)
        (target / "distillation.yaml").write_text(
            f"# showroom distill run that produced this student (step {self.step})\n" + self.cfg.to_yaml(),
            encoding="utf-8",
        )
        LOG.info("exported the student to %s", target)
        return target

    def close(self) -> None:
        self.log.close()


def find_checkpoint(resume: str | Path, output_dir: Path) -> Path | None:
    """``auto`` -> the run's newest checkpoint (None if none); a folder -> its newest; a file -> itself."""
    if str(resume) == "auto":
        folder = output_dir / CHECKPOINT_DIR
    else:
        path = Path(resume)
        if path.is_file():
            return path
        if not path.is_dir():
            raise FileNotFoundError(f"--resume: no checkpoint file or folder {path}")
        folder = path / CHECKPOINT_DIR if (path / CHECKPOINT_DIR).is_dir() else path
    candidates = sorted(folder.glob("step_*.pt")) if folder.is_dir() else []
    if not candidates and str(resume) != "auto":
        raise FileNotFoundError(f"--resume: no step_*.pt checkpoint in {folder}")
    return candidates[-1] if candidates else None


def _count(model: nn.Module) -> int:
    return sum(p.numel() for p in model.parameters())


def _progress(total: int, initial: int, enabled: bool) -> Any:
    """The training bar on stderr (plain lines when piped): io.console's rule, as every showroom command's."""
    return progress_bar(total, "training", "step", quiet=not enabled, initial=initial)
