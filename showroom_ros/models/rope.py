"""2D rotary position embedding (CroCo's RoPE2D), in plain PyTorch.

Upstream's compiled cuRoPE2D kernel gives wrong Fast3R predictions (fast3r issue #21) and its pure-PyTorch
fallback is the reference, so this follows the fallback's arithmetic: angles and cos/sin in float32, then
``x * cos + rotate_half(x) * sin`` in the activations' dtype. The row rotates the first half of every head
vector and the column the second half; inside a half, element j pairs with element j + d/2.

For speed the per-token tables are gathered once per forward (all blocks share the patch grid) and the two
halves are handled in one fused expression instead of one call per axis.
"""

from __future__ import annotations

import torch


def rope_frequencies(half_dim: int, base: float, device: torch.device | None = None) -> torch.Tensor:
    """Inverse frequencies ``base ** (-2j / half_dim)`` for ``j < half_dim / 2``, float32."""
    exponents = torch.arange(0, half_dim, 2, device=device).float() / half_dim
    return 1.0 / (base**exponents)


def rope_tables(
    positions: torch.Tensor, head_dim: int, base: float, dtype: torch.dtype, max_position: int | None = None
) -> tuple[torch.Tensor, torch.Tensor]:
    """cos/sin tables (..., tokens, head_dim) for integer (row, col) ``positions`` (..., tokens, 2).

    Row angles fill the first half of the head vector and column angles the second, each half being
    ``[freqs, freqs]`` so that element j and j + d/2 share an angle. The sin table carries rotate_half's
    sign (negative on the first quarter of each half).
    """
    if head_dim % 4 != 0:
        raise ValueError(f"2D RoPE needs a head dimension divisible by 4, got {head_dim}")
    half_dim = head_dim // 2
    inv_freq = rope_frequencies(half_dim, base, positions.device)
    # Passing max_position avoids a device sync (and works on the meta device).
    if max_position is None:
        max_position = int(positions.max().item()) + 1 if positions.numel() else 1
    steps = torch.arange(max_position, device=positions.device, dtype=inv_freq.dtype)
    angles = torch.outer(steps, inv_freq)
    angles = torch.cat((angles, angles), dim=-1)  # (max_pos, half_dim)
    cos_axis, sin_axis = angles.cos(), angles.sin()
    # rotate_half negates the first quarter's partner: fold that sign into sin (exact in IEEE arithmetic)
    # so applying RoPE is a swap of quarters plus two multiplies, with no negation pass.
    quarter = half_dim // 2
    sin_axis = torch.cat((-sin_axis[:, :quarter], sin_axis[:, quarter:]), dim=-1)
    rows, cols = positions[..., 0], positions[..., 1]
    cos = torch.cat((cos_axis[rows], cos_axis[cols]), dim=-1).to(dtype)
    sin = torch.cat((sin_axis[rows], sin_axis[cols]), dim=-1).to(dtype)
    return cos, sin


def apply_rope_2d(x: torch.Tensor, cos: torch.Tensor, signed_sin: torch.Tensor) -> torch.Tensor:
    """Rotate ``x`` (..., tokens, head_dim) by tables from :func:`rope_tables` (broadcastable).

    Equals ``x * cos + rotate_half(x) * sin`` per axis half, rotate_half(u1, u2) = (-u2, u1), bit for bit.
    """
    swapped = x.unflatten(-1, (2, 2, x.shape[-1] // 4)).flip(-2).flatten(-3)
    return x * cos + swapped * signed_sin
