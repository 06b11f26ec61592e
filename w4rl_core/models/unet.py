"""The network F of the denoiser: a diffusers U-Net conditioned on context frames and actions.

Context: the T past frames are stacked on channels with the noisy next frame (3(T+1) inputs).
Conditioning vector: the T encoded actions go through an MLP into diffusers' class-embedding path
(``class_embed_type="identity"``), which is added to the noise-level embedding and applied in every
residual block as FiLM (``resnet_time_scale_shift="scale_shift"``): the adaptive-GroupNorm
conditioning of DIAMOND, expressed with diffusers' own blocks. (``class_embed_type="projection"``
is accepted by the constructor but fails in forward in this diffusers version: docs/design.md#diffusers.)

Three departures from diffusers' defaults, each for an EDM reason (docs/results.md has the ablation):
- noise level: EDM's c_noise = ln(sigma)/4 spans about [-1.6, 0.8]. diffusers' sinusoidal timestep
  embedding is made for integer timesteps in the hundreds; scaled up to that range, most of its
  frequencies wrap many times within one standard deviation of ln(sigma). We replace its projection
  by random Fourier features of c_noise with unit-scale frequencies (EDM/DIAMOND practice), smooth
  over the whole training range. (diffusers' own "fourier" embedding takes log(timestep) with scale
  16 and divides the output by the timestep: the NCSN++ convention, not EDM's.)
- the mid-block attention gets its GroupNorm: with the scale-shift time embedding diffusers leaves
  ``attn_norm_num_groups`` unset and runs that attention on unnormalised activations;
- the output convolution starts at zero, so the untrained network predicts F = 0, i.e. D(x) = c_skip x
  (EDM and DIAMOND initialise it so).
Optionally (``context_noise_embedding``) the context-noise level of the training augmentation is
embedded too, so the network knows how noisy its context is; it is 0 at sampling.
"""

from __future__ import annotations

import math
import torch
from torch import nn

from w4rl_core.models.configs import UNetConfig  # noqa: F401 (re-exported; torch-free home)

NOISE_EMBEDDINGS = ("fourier",)


class FourierFeatures(nn.Module):
    """A scalar -> [cos(2 pi f x), sin(2 pi f x)] with fixed frequencies f ~ N(0, 1).

    The frequencies are a buffer, saved with the weights, drawn from their own seeded generator so
    that building the module does not move the global random stream.
    """

    def __init__(self, dim: int, seed: int = 0) -> None:
        super().__init__()
        if dim % 2:
            raise ValueError(f"FourierFeatures needs an even width, got {dim}")
        freqs = torch.randn(dim // 2, generator=torch.Generator().manual_seed(seed))
        self.register_buffer("freqs", freqs)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        # In float32 (a bf16 phase would be off by whole radians), returned in the module's dtype.
        phase = 2 * math.pi * x.float()[:, None] * self.freqs.float()[None, :]
        return torch.cat([phase.cos(), phase.sin()], dim=-1).to(self.freqs.dtype)


class FrameUNet(nn.Module):
    """F(c_in x; c_noise, context, actions) -> a frame-shaped output (3, H, W)."""

    def __init__(self, config: UNetConfig, action_features: int) -> None:
        # Imported here, not at the top: importing diffusers costs ~2 s of every process, and most
        # processes that import this module only validate a UNetConfig (params of every stage).
        from diffusers import UNet2DModel

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
            attn_norm_num_groups=config.norm_groups,
            class_embed_type="identity",
            resnet_time_scale_shift="scale_shift",
        )
        # Same width as the sinusoidal projection it replaces (time_embedding's input).
        self.unet.time_proj = FourierFeatures(config.channels[0], seed=0)
        nn.init.zeros_(self.unet.conv_out.weight)
        nn.init.zeros_(self.unet.conv_out.bias)
        embed = config.channels[0] * 4  # diffusers' time-embedding width
        self.action_mlp = nn.Sequential(
            nn.Linear(config.context_frames * action_features, embed), nn.SiLU(), nn.Linear(embed, embed)
        )
        self.context_noise_mlp = None
        if config.context_noise_embedding:
            self.context_noise_mlp = nn.Sequential(
                FourierFeatures(config.channels[0], seed=1), nn.Linear(config.channels[0], embed), nn.SiLU(),
                nn.Linear(embed, embed),
            )

    def condition(self, actions: torch.Tensor, context_sigma: torch.Tensor | None = None) -> torch.Tensor:
        """Encoded actions (B,T,F) [and the context-noise level (B,), 0 if None] -> the class-embedding
        input (B, 4*channels[0]). Independent of the noise level: a sampler computes it once per frame."""
        cond = self.action_mlp(actions.flatten(1))
        if self.context_noise_mlp is not None:
            if context_sigma is None:
                context_sigma = torch.zeros(len(actions), device=actions.device)
            # x10: the levels used (<= ~0.1) spread over about one unit of the Fourier features.
            cond = cond + self.context_noise_mlp(10 * context_sigma).to(cond.dtype)
        return cond

    def forward_stacked(self, inp: torch.Tensor, c_noise: torch.Tensor, cond: torch.Tensor) -> torch.Tensor:
        """inp (B,3(T+1),H,W): context channels then c_in x; c_noise (B,) = ln(sigma)/4."""
        return self.unet(inp, timestep=c_noise, class_labels=cond).sample

    def forward(
        self, x: torch.Tensor, c_noise: torch.Tensor, context: torch.Tensor, actions: torch.Tensor,
        context_sigma: torch.Tensor | None = None,
    ) -> torch.Tensor:
        """x (B,3,H,W); c_noise (B,); context (B,T,3,H,W); actions (B,T,F) encoded; context_sigma (B,)."""
        inp = torch.cat([context.flatten(1, 2), x], dim=1)
        return self.forward_stacked(inp, c_noise, self.condition(actions, context_sigma))
