"""Our dtype names -> torch dtypes: the one table, used by prediction, the engines, the learned backend and
distillation (the names themselves live in :mod:`showroom_ros.models.names`, which needs no torch)."""

from __future__ import annotations

import torch

from showroom_ros.models.names import COMPUTE_DTYPES, normalise_dtype

#: Keyed by exactly :data:`~showroom_ros.models.names.COMPUTE_DTYPES` (a test checks it).
TORCH_DTYPES: dict[str, torch.dtype] = {"fp32": torch.float32, "bf16": torch.bfloat16, "fp16": torch.float16}


def resolve_dtype(dtype: torch.dtype | str | None) -> torch.dtype:
    """torch dtype of a compute dtype name (ours or torch's spelling) or of a torch dtype; None -> float32.

    ``auto`` is refused: it depends on the device, which the caller resolves first.
    """
    if dtype is None:
        return torch.float32
    if isinstance(dtype, torch.dtype):
        return dtype
    name = normalise_dtype(dtype)
    if name not in TORCH_DTYPES:
        raise ValueError(f"unknown dtype {dtype!r} here (resolve 'auto' first): use one of {', '.join(COMPUTE_DTYPES)}")
    return TORCH_DTYPES[name]


def dtype_name(dtype: torch.dtype) -> str | None:
    """Our name of a torch dtype (``torch.bfloat16`` -> ``bf16``); None for a dtype we do not compute in."""
    return next((name for name, value in TORCH_DTYPES.items() if value == dtype), None)
