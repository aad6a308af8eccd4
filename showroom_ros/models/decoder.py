"""Fast3R's fusion transformer: global attention over the tokens of all views at once.

Views are told apart only by a fixed sinusoidal image-index embedding added once after ``decoder_embed``.
The release was trained with *random* indices (view 0 always gets 0, the others distinct draws from
1..999), and upstream keeps drawing them at inference, so its output is stochastic unless seeded.
:func:`draw_random_image_ids` reproduces upstream's draw exactly; sequential ids (0..N-1) are the
deterministic alternative.
"""

from __future__ import annotations

import math
from collections.abc import Collection

import torch
from torch import nn

from showroom_ros.models.blocks import Block
from showroom_ros.models.config import IMAGE_INDEX_TABLE_SIZE, DecoderConfig

DECODER_BLOCK_NORM_EPS = 1e-5  # PyTorch's default, as upstream's decoder blocks use
DECODER_FINAL_NORM_EPS = 1e-6
# Upstream's optional eval-time attention temperature (off in the release).
_INFERENCE_ATTN_SCALE_FACTOR = math.sqrt(math.log(137) / math.log(20))


def image_index_table(num_rows: int, dim: int, device: torch.device | None = None) -> torch.Tensor:
    """Row p = [sin(p w_i)]_i ++ [cos(p w_i)]_i with w_i = 10000^(-i/(dim/2)); float64 math, float32 out."""
    half = dim // 2
    omega = 1.0 / (10000.0 ** (torch.arange(half, dtype=torch.float64, device=device) / half))
    angles = torch.outer(torch.arange(num_rows, dtype=torch.float64, device=device), omega)
    return torch.cat((angles.sin(), angles.cos()), dim=1).float()


def draw_random_image_ids(
    batch_size: int, num_views: int, generator: torch.Generator | None = None
) -> torch.Tensor:
    """Upstream's inference-time draw, (B, N) int64: view 0 -> 0, the others distinct ids in 1..999.

    Per batch element one ``randint(0, 2**32)`` comes from ``generator`` (the global RNG when None); it
    seeds a fresh CPU generator whose ``randperm(999)`` gives the ids. Passing
    ``torch.Generator().manual_seed(s)`` therefore reproduces upstream after ``torch.manual_seed(s)``.
    """
    if num_views > IMAGE_INDEX_TABLE_SIZE:
        raise ValueError(f"Fast3R supports at most {IMAGE_INDEX_TABLE_SIZE} views, got {num_views}")
    ids = torch.zeros(batch_size, num_views, dtype=torch.int64)
    for b in range(batch_size):
        seed = int(torch.randint(0, 2**32, (1,), generator=generator).item())
        local = torch.Generator().manual_seed(seed)
        ids[b, 1:] = torch.randperm(IMAGE_INDEX_TABLE_SIZE - 1, generator=local)[: num_views - 1] + 1
    return ids


def sequential_image_ids(batch_size: int, num_views: int) -> torch.Tensor:
    """The deterministic ids 0..N-1 for every batch element, (B, N) int64."""
    if num_views > IMAGE_INDEX_TABLE_SIZE:
        raise ValueError(f"Fast3R supports at most {IMAGE_INDEX_TABLE_SIZE} views, got {num_views}")
    return torch.arange(num_views, dtype=torch.int64).expand(batch_size, num_views).clone()


class FusionDecoder(nn.Module):
    """decoder_embed -> + image-index embedding -> blocks (no RoPE, eps 1e-5) -> dec_norm (eps 1e-6)."""

    def __init__(self, config: DecoderConfig) -> None:
        super().__init__()
        self.config = config
        self.random_image_idx_embedding = config.random_image_idx_embedding
        self.decoder_embed = nn.Linear(config.enc_embed_dim, config.embed_dim)
        self.dec_blocks = nn.ModuleList(
            Block(
                config.embed_dim,
                config.num_heads,
                config.mlp_ratio,
                norm_eps=DECODER_BLOCK_NORM_EPS,
                qkv_bias=config.qkv_bias,
            )
            for _ in range(config.depth)
        )
        self.dec_norm = nn.LayerNorm(config.embed_dim, eps=DECODER_FINAL_NORM_EPS)
        # Not in the checkpoint (non-persistent upstream too): always recomputed.
        self.register_buffer(
            "image_idx_emb", image_index_table(IMAGE_INDEX_TABLE_SIZE, config.embed_dim), persistent=False
        )

    def reset_image_idx_embedding(self) -> None:
        """Recompute the table in place of a meta/empty buffer (after loading with ``assign=True``)."""
        device = self.decoder_embed.weight.device
        self.image_idx_emb = image_index_table(IMAGE_INDEX_TABLE_SIZE, self.config.embed_dim, device)

    def forward(
        self,
        encoder_tokens: torch.Tensor,
        image_ids: torch.Tensor,
        keep_layers: Collection[int] | None = None,
        record: dict[str, torch.Tensor] | None = None,
    ) -> list[torch.Tensor | None]:
        """Fuse all views.

        ``encoder_tokens`` (B, N*P, E) holds the views' tokens concatenated in view order and ``image_ids``
        (B, N) their embedding rows. Returns upstream's list L of depth+1 entries (L[0] = the input tokens,
        L[i] = block i's output, the last one after dec_norm); entries not in ``keep_layers`` are None so that
        inference holds only the four tensors the DPT heads read. ``record`` (optional) receives the
        embedding that was added and the tokens entering block 0.
        """
        total_tokens = encoder_tokens.shape[1]
        num_views = image_ids.shape[1]
        if total_tokens % num_views:
            raise ValueError(f"{total_tokens} tokens cannot be split evenly into {num_views} views")
        depth = len(self.dec_blocks)
        keep = set(range(depth + 1)) if keep_layers is None else set(keep_layers)
        layers: list[torch.Tensor | None] = [None] * (depth + 1)
        if 0 in keep:
            layers[0] = encoder_tokens

        per_view = self.image_idx_emb[image_ids.to(self.image_idx_emb.device)]  # (B, N, D)
        # float32 even under autocast, so the residual stream stays float32 as in upstream's autocast.
        added = per_view.repeat_interleave(total_tokens // num_views, dim=1)
        x = self.decoder_embed(encoder_tokens) + added
        if record is not None:
            record["image_pos_added"] = added
            record["decoder_tokens_in"] = x

        scale = None
        if self.config.attn_bias_for_inference_enabled and not self.training:
            scale = (self.config.embed_dim // self.config.num_heads) ** -0.5 * _INFERENCE_ATTN_SCALE_FACTOR
        for index, block in enumerate(self.dec_blocks, start=1):
            x = block(x, None, scale)
            if index == depth:
                x = self.dec_norm(x)
            if index in keep:
                layers[index] = x
        return layers
