"""The models of a distillation run: the frozen teacher, the student built from it (half-width DPT
heads), which parameters train, and their optimiser."""

from __future__ import annotations

import logging

import torch
from torch import nn

from showroom_ros.distillation.config import KNOWN_HEADS, DistillConfig

LOG = logging.getLogger(__name__)

BACKBONE_PREFIXES = ("encoder.", "decoder.")
HEAD_MODULES = {"global": "downstream_head", "local": "downstream_head_local"}


def load_teacher(source: str, device: torch.device, dtype: torch.dtype) -> nn.Module:
    """The frozen teacher: eval mode, no gradients, in ``dtype`` on ``device``."""
    from showroom_ros.models import Fast3R

    teacher = Fast3R.from_pretrained(source, device=device, dtype=dtype)
    teacher.eval()
    teacher.requires_grad_(False)
    return teacher


def build_student(teacher: nn.Module, student_init: str | None = None) -> nn.Module:
    """ShowRoom's student: half-width DPT heads, encoder and decoder copied from the (fp32) teacher."""
    from showroom_ros.models import Fast3R, student_config

    if student_init:
        student = Fast3R.from_pretrained(student_init, device="cpu", dtype=torch.float32)
    else:
        student = Fast3R(student_config(teacher.config))
        for name in ("encoder", "decoder"):
            source = {k: v.detach().to("cpu", torch.float32) for k, v in getattr(teacher, name).state_dict().items()}
            getattr(student, name).load_state_dict(source, strict=True)
    return student


def configure_trainable(student: nn.Module, freeze_backbone: bool, heads: set[str]) -> list[tuple[str, nn.Parameter]]:
    """Set ``requires_grad``: the heads some loss uses, plus the backbone when it is not frozen."""
    for name, param in student.named_parameters():
        if name.startswith(BACKBONE_PREFIXES):
            param.requires_grad_(not freeze_backbone)
        else:
            module = name.split(".", 1)[0]
            head = next((h for h, m in HEAD_MODULES.items() if m == module), None)
            param.requires_grad_(head is None or head in heads)
    unused = [h for h in KNOWN_HEADS if h not in heads and getattr(student, HEAD_MODULES[h], None) is not None]
    for head in unused:
        LOG.warning(
            "no loss uses the %s head: it stays at its random initialisation; add it to loss.dense_heads "
            "or loss.feature_heads to train it",
            head,
        )
    return [(n, p) for n, p in student.named_parameters() if p.requires_grad]


def make_optimizer(named: list[tuple[str, nn.Parameter]], cfg: DistillConfig) -> torch.optim.AdamW:
    """AdamW; weight decay on weight matrices and conv kernels only (not biases or LayerNorm gains)."""
    decay = [p for _, p in named if p.ndim >= 2]
    no_decay = [p for _, p in named if p.ndim < 2]
    groups = [{"params": decay, "weight_decay": cfg.optim.weight_decay}]
    if no_decay:
        groups.append({"params": no_decay, "weight_decay": 0.0})
    return torch.optim.AdamW(groups, lr=cfg.optim.lr, betas=cfg.optim.betas, eps=cfg.optim.eps)
