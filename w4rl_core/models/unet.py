"""The network F of the denoiser: a diffusers U-Net conditioned on context frames and actions.

Context: the T past frames are stacked on channels with the noisy next frame (3(T+1) inputs).
Actions + noise level: the T encoded actions go through an MLP into diffusers' class-embedding path
(``class_embed_type="identity"``), which is added to the noise-level embedding and applied in every
residual block as FiLM (``resnet_time_scale_shift="scale_shift"``): the adaptive-GroupNorm
conditioning of DIAMOND, expressed with diffusers' own blocks. (``class_embed_type="projection"``
is accepted by the constructor but fails in forward in this diffusers version: DESIGN.md §3.)
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from diffusers import UNet2DModel
from torch import nn


@dataclass(frozen=True)
class UNetConfig:
    image_size: int = 32
    context_frames: int = 4  # T
    channels: tuple[int, ...] = (32, 32, 64, 64)  # per resolution level (conv-only blocks)
    layers_per_block: int = 1
    norm_groups: int = 8

    def __post_init__(self) -> None:
        object.__setattr__(self, "channels", tuple(int(c) for c in self.channels))
        if any(c % self.norm_groups for c in self.channels):
            raise ValueError(f"every channel count must be divisible by norm_groups={self.norm_groups}")
        if self.image_size % 2 ** (len(self.channels) - 1):
            raise ValueError(f"image_size {self.image_size} must be divisible by 2^(levels-1)")
        if self.context_frames < 1 or self.layers_per_block < 1:
            raise ValueError("context_frames and layers_per_block must be >= 1")


class FrameUNet(nn.Module):
    """F(c_in x; c_noise, context, actions) -> a frame-shaped output (3, H, W)."""

    #: c_noise = ln(sigma)/4 lies in about [-1.6, 0.8]; diffusers' sinusoidal timestep embedding
    #: is made for timesteps in the hundreds, so it is fed 1000 * c_noise.
    NOISE_SCALE = 1000.0

    def __init__(self, config: UNetConfig, action_features: int) -> None:
        super().__init__()
        self.config = config
        levels = len(config.channels)
        self.unet = UNet2DModel(
            sample_size=config.image_size,
            in_channels=3 * (config.context_frames + 1),
            out_channels=3,
            block_out_channels=config.channels,
            layers_per_block=config.layers_per_block,
            down_block_types=("DownBlock2D",) * levels,
            up_block_types=("UpBlock2D",) * levels,
            norm_num_groups=config.norm_groups,
            class_embed_type="identity",
            resnet_time_scale_shift="scale_shift",
        )
        embed = config.channels[0] * 4  # diffusers' time-embedding width
        self.action_mlp = nn.Sequential(
            nn.Linear(config.context_frames * action_features, embed), nn.SiLU(), nn.Linear(embed, embed)
        )

    def condition(self, actions: torch.Tensor) -> torch.Tensor:
        """Encoded actions (B,T,F) -> the class-embedding input (B, 4*channels[0]). It does not depend
        on the noise level: a sampler computes it once per frame, not once per denoising step."""
        return self.action_mlp(actions.flatten(1))

    def forward_stacked(self, inp: torch.Tensor, timestep: torch.Tensor, cond: torch.Tensor) -> torch.Tensor:
        """inp (B,3(T+1),H,W): context channels then c_in x; timestep (B,) = NOISE_SCALE * c_noise."""
        return self.unet(inp, timestep=timestep, class_labels=cond).sample

    def forward(
        self, x: torch.Tensor, c_noise: torch.Tensor, context: torch.Tensor, actions: torch.Tensor
    ) -> torch.Tensor:
        """x (B,3,H,W); c_noise (B,); context (B,T,3,H,W); actions (B,T,F) encoded."""
        inp = torch.cat([context.flatten(1, 2), x], dim=1)
        return self.forward_stacked(inp, c_noise * self.NOISE_SCALE, self.condition(actions))
