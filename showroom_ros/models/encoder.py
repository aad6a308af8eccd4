"""CroCo ViT encoder: 16x16 patch embedding, pre-norm blocks with 2D RoPE (base 100), final LayerNorm."""

from __future__ import annotations

import torch
from torch import nn

from showroom_ros.models.blocks import Block
from showroom_ros.models.config import EncoderConfig
from showroom_ros.models.rope import rope_tables

ENCODER_NORM_EPS = 1e-6


class PatchEmbed(nn.Module):
    """Conv patchify (``PatchEmbedDust3R``): tokens in row-major order, positions (row, col).

    It ignores ``true_shape`` and accepts portrait images as they are; only multiples of the patch size
    are allowed. The norm is an Identity upstream, so there is none here.
    """

    def __init__(self, patch_size: int, embed_dim: int) -> None:
        super().__init__()
        self.patch_size = patch_size
        self.proj = nn.Conv2d(3, embed_dim, kernel_size=patch_size, stride=patch_size)

    def forward(self, images: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        height, width = images.shape[-2:]
        if height % self.patch_size or width % self.patch_size:
            raise ValueError(
                f"image size {height}x{width} (HxW) is not a multiple of the patch size {self.patch_size}; "
                "use preprocess_images() to resize and crop"
            )
        tokens = self.proj(images).flatten(2).transpose(1, 2)
        positions = patch_positions(height // self.patch_size, width // self.patch_size, images.device)
        return tokens, positions


def patch_positions(rows: int, cols: int, device: torch.device | None = None) -> torch.Tensor:
    """(rows*cols, 2) int64 (row, col) of every token, row-major."""
    grid_rows, grid_cols = torch.meshgrid(
        torch.arange(rows, device=device), torch.arange(cols, device=device), indexing="ij"
    )
    return torch.stack((grid_rows.flatten(), grid_cols.flatten()), dim=-1)


class CroCoEncoder(nn.Module):
    """Encodes each view independently (shared weights); all views may go through as one batch."""

    def __init__(self, config: EncoderConfig) -> None:
        super().__init__()
        self.config = config
        self.patch_embed = PatchEmbed(config.patch_size, config.embed_dim)
        self.enc_blocks = nn.ModuleList(
            Block(config.embed_dim, config.num_heads, config.mlp_ratio, norm_eps=ENCODER_NORM_EPS)
            for _ in range(config.depth)
        )
        self.enc_norm = nn.LayerNorm(config.embed_dim, eps=ENCODER_NORM_EPS)

    def forward(self, images: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """images (B, 3, H, W) -> tokens (B, P, E) after enc_norm, positions (P, 2)."""
        tokens, positions = self.patch_embed(images)
        grid = max(images.shape[-2:]) // self.config.patch_size
        head_dim = self.config.embed_dim // self.config.num_heads
        rope = rope_tables(positions, head_dim, self.config.rope_base, torch.float32, max_position=grid)
        for block in self.enc_blocks:
            tokens = block(tokens, rope)
        return self.enc_norm(tokens), positions
