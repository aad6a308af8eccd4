"""Where and in which precision the learned models run: the one rule for ``auto`` devices and dtypes,
used by the backends (inference) and the distillation (training)."""

from __future__ import annotations

from pathlib import Path

from showroom_ros.models.names import DEVICES, normalise_dtype


def resolve_device(device: str, local_rank: int | None = None) -> str:
    """``auto`` -> ``cuda`` when a GPU is usable, else ``cpu``; ``cuda:1`` etc. are passed through. With a
    ``local_rank`` (a ``torchrun`` process), ``auto`` and a bare ``cuda`` mean that process's GPU."""
    import torch

    name = str(device).strip().lower()
    if name == "auto":
        name = "cuda" if torch.cuda.is_available() else "cpu"
    if name == "cpu":
        return "cpu"
    if name.startswith("cuda"):
        if not torch.cuda.is_available():
            raise ValueError(f"device '{device}' requested but torch sees no CUDA GPU (use 'cpu' or 'auto')")
        return f"cuda:{local_rank}" if name == "cuda" and local_rank is not None else name
    raise ValueError(f"unknown device '{device}': use one of {', '.join(DEVICES)} (or cuda:N)")


def cpu_has_native_bf16(cpuinfo: Path = Path("/proc/cpuinfo")) -> bool:
    """Whether the CPU computes bf16 natively (x86 AVX512-BF16 / AMX, ARM BF16); False when unknown.

    Without it bf16 is emulated and slower than fp32; with it ViT-L at 512x384 ran 3x faster in bf16
    (docs/rgb_backends.md).
    """
    try:
        text = cpuinfo.read_text(errors="ignore")
    except OSError:
        return False
    flags: set[str] = set()
    for line in text.splitlines():
        key, _, value = line.partition(":")
        if key.strip().lower() in ("flags", "features"):
            flags.update(value.split())
    return bool(flags & {"avx512_bf16", "amx_bf16", "bf16"})


def resolve_compute_dtype(dtype: str, device: str) -> str:
    """``auto`` -> bf16 on a GPU that supports it (else fp16); on CPU bf16 where it is native, else fp32."""
    name = normalise_dtype(dtype)
    if name != "auto":
        if name == "fp16" and device == "cpu":
            raise ValueError("fp16 is not supported on CPU; use bf16 or fp32")
        return name
    if device.startswith("cuda"):
        import torch

        return "bf16" if torch.cuda.is_bf16_supported() else "fp16"
    return "bf16" if cpu_has_native_bf16() else "fp32"
