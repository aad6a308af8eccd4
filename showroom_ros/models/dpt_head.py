"""DPT pointmap head (the DUSt3R/Fast3R ``PixelwiseTaskWithDPT``) and its output activations.

Module names follow upstream's state_dict: ``dpt.scratch`` (reassemble convs and fusion blocks),
``dpt.head`` and ``dpt.act_postprocess``. The four reassemble convs are registered twice upstream, as
``scratch.layer{1..4}_rn`` and ``scratch.layer_rn.{0..3}``; we do the same, so the state_dict has both
alias keys while the parameters exist once.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from showroom_ros.models.config import HeadConfig


class ResidualConvUnit(nn.Module):
    """x + conv2(relu(conv1(relu(x)))), 3x3 convs with bias, ReLU not in place."""

    def __init__(self, channels: int) -> None:
        super().__init__()
        self.conv1 = nn.Conv2d(channels, channels, 3, padding=1)
        self.conv2 = nn.Conv2d(channels, channels, 3, padding=1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x + self.conv2(F.relu(self.conv1(F.relu(x))))


class FusionBlock(nn.Module):
    """y = x (+ resConfUnit1(skip)); y = resConfUnit2(y); bilinear x2 (align_corners); 1x1 out_conv."""

    def __init__(self, channels: int) -> None:
        super().__init__()
        # Registration order mirrors upstream's state_dict: out_conv, resConfUnit1, resConfUnit2.
        self.out_conv = nn.Conv2d(channels, channels, 1)
        self.resConfUnit1 = ResidualConvUnit(channels)
        self.resConfUnit2 = ResidualConvUnit(channels)

    def forward(self, x: torch.Tensor, skip: torch.Tensor | None = None) -> torch.Tensor:
        if skip is not None:
            x = x + self.resConfUnit1(skip)
        x = self.resConfUnit2(x)
        x = F.interpolate(x, scale_factor=2, mode="bilinear", align_corners=True)
        return self.out_conv(x)


class Scratch(nn.Module):
    """Reassemble convs to the common width and the four fusion blocks."""

    def __init__(self, layer_dims: tuple[int, ...], feature_dim: int) -> None:
        super().__init__()
        convs = [nn.Conv2d(dim, feature_dim, 3, padding=1, bias=False) for dim in layer_dims]
        self.layer1_rn, self.layer2_rn, self.layer3_rn, self.layer4_rn = convs
        self.layer_rn = nn.ModuleList(convs)  # the same modules: upstream's second name for them
        self.refinenet1 = FusionBlock(feature_dim)
        self.refinenet2 = FusionBlock(feature_dim)
        self.refinenet3 = FusionBlock(feature_dim)
        self.refinenet4 = FusionBlock(feature_dim)  # its resConfUnit1 is never used, but is in the checkpoint


class Interpolate(nn.Module):
    """Parameter-free bilinear upsampling (keeps ``dpt.head``'s Sequential indices 0..4 as upstream's)."""

    def __init__(self, scale_factor: float) -> None:
        super().__init__()
        self.scale_factor = scale_factor

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return F.interpolate(x, scale_factor=self.scale_factor, mode="bilinear", align_corners=True)


class DPTAdapter(nn.Module):
    """Token maps from four decoder depths -> a 4-channel map at full resolution."""

    def __init__(
        self,
        hook_dims: tuple[int, int, int, int],
        layer_dims: tuple[int, ...],
        feature_dim: int,
        patch_size: int,
        num_channels: int = 4,
    ) -> None:
        super().__init__()
        self.patch_size = patch_size
        self.scratch = Scratch(layer_dims, feature_dim)
        middle = feature_dim // 2
        self.head = nn.Sequential(
            nn.Conv2d(feature_dim, middle, 3, padding=1),
            Interpolate(patch_size / 8),
            nn.Conv2d(middle, middle, 3, padding=1),
            nn.ReLU(),
            nn.Conv2d(middle, num_channels, 1),
        )
        d1, d2, d3, d4 = layer_dims
        self.act_postprocess = nn.ModuleList(
            [
                nn.Sequential(nn.Conv2d(hook_dims[0], d1, 1), nn.ConvTranspose2d(d1, d1, 4, stride=4)),
                nn.Sequential(nn.Conv2d(hook_dims[1], d2, 1), nn.ConvTranspose2d(d2, d2, 2, stride=2)),
                nn.Sequential(nn.Conv2d(hook_dims[2], d3, 1)),
                nn.Sequential(nn.Conv2d(hook_dims[3], d4, 1), nn.Conv2d(d4, d4, 3, stride=2, padding=1)),
            ]
        )

    def forward(self, hooked_tokens: list[torch.Tensor], image_size: tuple[int, int]) -> torch.Tensor:
        """hooked_tokens: four (V, P, C_i) tensors (V = views x batch); returns (V, 4, H, W)."""
        rows, cols = image_size[0] // self.patch_size, image_size[1] // self.patch_size
        maps = []
        for index, tokens in enumerate(hooked_tokens):
            grid = tokens.transpose(1, 2).reshape(tokens.shape[0], tokens.shape[2], rows, cols)
            maps.append(self.scratch.layer_rn[index](self.act_postprocess[index](grid)))
        l1, l2, l3, l4 = maps
        path = self.scratch.refinenet4(l4)[:, :, : l3.shape[2], : l3.shape[3]]
        path = self.scratch.refinenet3(path, l3)
        path = self.scratch.refinenet2(path, l2)
        path = self.scratch.refinenet1(path, l1)
        return self.head(path)


class PointmapHead(nn.Module):
    """One DPT head (``downstream_head`` or ``downstream_head_local``); its only child is ``dpt``."""

    def __init__(self, config: HeadConfig, encoder_dim: int, decoder_dim: int, decoder_depth: int) -> None:
        super().__init__()
        self.config = config
        self.hooks = (0, decoder_depth * 2 // 4, decoder_depth * 3 // 4, decoder_depth)
        self.dpt = DPTAdapter(
            (encoder_dim, decoder_dim, decoder_dim, decoder_dim),
            tuple(config.dpt_layer_dims),
            config.dpt_feature_dim,
            config.patch_size,
        )

    def forward(self, hooked_tokens: list[torch.Tensor], image_size: tuple[int, int]) -> torch.Tensor:
        """Raw 4-channel output (V, 4, H, W), before :func:`pointmap_activation`."""
        return self.dpt(hooked_tokens, image_size)


def pointmap_activation(
    raw: torch.Tensor, depth_mode: tuple[str, float, float], conf_mode: tuple[str, float, float]
) -> tuple[torch.Tensor, torch.Tensor]:
    """(V, 4, H, W) -> points (V, H, W, 3) and confidence (V, H, W), computed in float32.

    depth 'exp': xyz / max(|xyz|, 1e-8) * expm1(|xyz|) (clamped to [vmin, vmax] when those are finite);
    conf 'exp': vmin + exp(c), capped at vmax - vmin above vmin.
    """
    channels_last = raw.float().permute(0, 2, 3, 1)
    xyz = channels_last[..., :3]
    distance = xyz.norm(dim=-1, keepdim=True)
    points = xyz / distance.clip(min=1e-8)
    _, depth_min, depth_max = depth_mode
    if depth_min != float("-inf") or depth_max != float("inf"):
        points = points * torch.expm1(distance).clip(min=depth_min, max=depth_max)
    else:
        points = points * torch.expm1(distance)
    _, conf_min, conf_max = conf_mode
    conf = conf_min + channels_last[..., 3].exp().clip(max=conf_max - conf_min)
    return points, conf
