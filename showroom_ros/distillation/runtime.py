"""Where a distillation process runs: its rank under ``torchrun``, its device and dtype, and the LR
schedule (pure functions of the config, so every process agrees)."""

from __future__ import annotations

import math
import os
from dataclasses import dataclass, field

import torch
import torch.distributed as dist

from showroom_ros.distillation.config import ConfigError
from showroom_ros.models.devices import resolve_device as resolve_model_device
from showroom_ros.models.dtypes import TORCH_DTYPES


@dataclass
class DistEnv:
    """Where this process sits in a (possibly single-process) run."""

    rank: int = 0
    world_size: int = 1
    local_rank: int = 0
    device: torch.device = field(default_factory=lambda: torch.device("cpu"))

    @property
    def is_main(self) -> bool:
        return self.rank == 0

    @property
    def distributed(self) -> bool:
        return self.world_size > 1


def resolve_device(preference: str, local_rank: int = 0) -> torch.device:
    """``auto`` = this process's GPU when there is one, else the CPU (models.devices' rule)."""
    try:
        return torch.device(resolve_model_device(preference, local_rank))
    except ValueError as error:
        raise ConfigError(f"train.device: {error}") from None


def init_distributed(device_preference: str = "auto") -> DistEnv:
    """Join the process group when launched by torchrun (WORLD_SIZE > 1), else a single-process env."""
    world_size = int(os.environ.get("WORLD_SIZE", "1"))
    rank = int(os.environ.get("RANK", "0"))
    local_rank = int(os.environ.get("LOCAL_RANK", "0"))
    device = resolve_device(device_preference, local_rank)
    if world_size > 1 and not dist.is_initialized():
        if device.type == "cuda":
            torch.cuda.set_device(device)
        dist.init_process_group(backend="nccl" if device.type == "cuda" else "gloo")
    return DistEnv(rank=rank, world_size=world_size, local_rank=local_rank, device=device)


def resolve_dtype(name: str, device: torch.device) -> torch.dtype:
    """``auto`` = bf16 on a GPU, fp32 on the CPU (bf16 matmuls are slow on most CPUs)."""
    if name == "auto":
        return torch.bfloat16 if device.type == "cuda" else torch.float32
    return TORCH_DTYPES[name]


def lr_factor(step: int, warmup_steps: int, total_steps: int, min_ratio: float) -> float:
    """Multiplier of the base LR at optimiser step ``step`` (0-based): linear warm-up then cosine decay."""
    if warmup_steps > 0 and step < warmup_steps:
        return (step + 1) / warmup_steps
    decay_steps = max(1, total_steps - warmup_steps)
    progress = min(1.0, (step - warmup_steps) / decay_steps)
    return min_ratio + (1.0 - min_ratio) * 0.5 * (1.0 + math.cos(math.pi * progress))
