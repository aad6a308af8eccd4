"""Pre-norm ViT blocks shared by the encoder and the fusion decoder.

Parameter names (``norm1``, ``attn.qkv``, ``attn.proj``, ``norm2``, ``mlp.fc1``, ``mlp.fc2``) and their
registration order match upstream's state_dict. Attention goes through
``torch.nn.functional.scaled_dot_product_attention`` so PyTorch picks its fastest kernel for the device and
dtype (flash / memory-efficient on CUDA, the fused flash kernel on CPU); no flash-attn package is needed.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from showroom_ros.models.rope import apply_rope_2d

RopeTables = tuple[torch.Tensor, torch.Tensor]


class Attention(nn.Module):
    """Multi-head self-attention; q, k, v are consecutive E-wide chunks of ``qkv``'s output."""

    def __init__(self, dim: int, num_heads: int, qkv_bias: bool = True, scale: float | None = None) -> None:
        super().__init__()
        self.num_heads = num_heads
        self.head_dim = dim // num_heads
        self.scale = scale if scale is not None else self.head_dim**-0.5
        self.qkv = nn.Linear(dim, dim * 3, bias=qkv_bias)
        self.proj = nn.Linear(dim, dim)

    def forward(
        self, x: torch.Tensor, rope: RopeTables | None = None, scale: float | None = None
    ) -> torch.Tensor:
        batch, tokens, dim = x.shape
        qkv = self.qkv(x).view(batch, tokens, 3, self.num_heads, self.head_dim).permute(2, 0, 3, 1, 4)
        if rope is not None:
            # q and k rotated in one pass over a (2, B, heads, tokens, head_dim) view.
            cos, sin = (t.to(qkv.dtype) for t in rope)
            q, k = apply_rope_2d(qkv[:2], cos, sin).unbind(0)
            v = qkv[2]
        else:
            q, k, v = qkv.unbind(0)
        out = F.scaled_dot_product_attention(q, k, v, scale=self.scale if scale is None else scale)
        return self.proj(out.transpose(1, 2).reshape(batch, tokens, dim))


class Mlp(nn.Module):
    """fc1 -> exact (erf) GELU -> fc2."""

    def __init__(self, dim: int, hidden_dim: int) -> None:
        super().__init__()
        self.fc1 = nn.Linear(dim, hidden_dim)
        self.act = nn.GELU()
        self.fc2 = nn.Linear(hidden_dim, dim)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.fc2(self.act(self.fc1(x)))


class Block(nn.Module):
    """x += attn(norm1(x)); x += mlp(norm2(x)). No layer-scale, no drop-path (inference model).

    ``norm_eps`` differs between the encoder (1e-6) and the decoder blocks (1e-5, PyTorch's default): using
    the wrong one costs only ~3e-4 on the outputs, which is why it is an explicit argument.
    """

    def __init__(
        self,
        dim: int,
        num_heads: int,
        mlp_ratio: float,
        norm_eps: float,
        qkv_bias: bool = True,
    ) -> None:
        super().__init__()
        self.norm1 = nn.LayerNorm(dim, eps=norm_eps)
        self.attn = Attention(dim, num_heads, qkv_bias=qkv_bias)
        self.norm2 = nn.LayerNorm(dim, eps=norm_eps)
        self.mlp = Mlp(dim, int(dim * mlp_ratio))

    def forward(
        self, x: torch.Tensor, rope: RopeTables | None = None, attn_scale: float | None = None
    ) -> torch.Tensor:
        x = x + self.attn(self.norm1(x), rope, attn_scale)
        return x + self.mlp(self.norm2(x))
