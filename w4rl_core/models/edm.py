"""EDM preconditioning and training loss (Karras et al. 2022), DIAMOND-style.

D(x; sigma, c) = c_skip x + c_out F(c_in x; c_noise, c). Training draws ln(sigma) ~ N(p_mean, p_std),
adds offset noise (a per-channel constant, helps brightness shifts), and regresses F onto
(x_clean - c_skip x_noisy) / c_out. Context frames can get their own random noise, sigma_ctx ~
U(0, context_noise_max) (augmentation against autoregressive drift: at rollout time the context is
the model's own imperfect output). Unless the network is told that level (UNetConfig.
context_noise_embedding), noise larger than a frame-to-frame change teaches it to redraw the context
instead of copying what did not move; docs/results.md measures the choices.
"""

from __future__ import annotations

import torch
from torch import nn

from w4rl_core.models.configs import EDMConfig  # noqa: F401 (re-exported; torch-free home)
from w4rl_core.models.unet import FrameUNet


class Denoiser(nn.Module):
    def __init__(self, net: FrameUNet, config: EDMConfig) -> None:
        super().__init__()
        self.net = net
        self.config = config

    def precondition(self, sigma: torch.Tensor) -> tuple[torch.Tensor, ...]:
        """(c_in, c_out, c_skip, c_noise) for sigma of shape (B,); the first three are (B,1,1,1)."""
        sd = self.config.sigma_data
        s = sigma.reshape(-1, 1, 1, 1)
        c_in = 1 / torch.sqrt(s**2 + sd**2)
        c_skip = sd**2 / (s**2 + sd**2)
        c_out = s * sd / torch.sqrt(s**2 + sd**2)
        c_noise = torch.log(sigma) / 4
        return c_in, c_out, c_skip, c_noise

    def denoise(
        self, x_noisy: torch.Tensor, sigma: torch.Tensor, context: torch.Tensor, actions: torch.Tensor
    ) -> torch.Tensor:
        c_in, c_out, c_skip, c_noise = self.precondition(sigma)
        out = self.net(c_in * x_noisy, c_noise, context, actions)
        return c_skip * x_noisy + c_out * out.float()

    def forward(
        self, frames: torch.Tensor, actions: torch.Tensor, generator: torch.Generator | None = None,
        shard: tuple[int, int] = (0, 1),
    ) -> tuple[torch.Tensor, dict[str, float]]:
        """frames (B,T+1,3,H,W) in [-1,1], actions (B,T,F) encoded -> (loss, logs).

        shard (i, n): this batch is part i of a global batch of n*B split across data-parallel ranks.
        Every rank draws the noise of the whole global batch from the same generator and keeps its
        part, so n ranks see exactly the noise one process would (the draws are a few frames' worth,
        small next to the U-Net).
        """
        cfg = self.config
        b, dev = frames.shape[0], frames.device
        part, parts = shard
        keep = slice(part * b, (part + 1) * b)

        def randn(*shape):
            return torch.randn(shape[0] * parts, *shape[1:], device=dev, generator=generator)[keep]

        context, target = frames[:, :-1], frames[:, -1]
        ctx_sigma = torch.rand(b * parts, device=dev, generator=generator)[keep] * cfg.context_noise_max
        if cfg.context_noise_max > 0:
            context = context + ctx_sigma.reshape(-1, 1, 1, 1, 1) * randn(*context.shape)
        sigma = torch.exp(cfg.p_mean + cfg.p_std * randn(b)).clamp(cfg.sigma_min, cfg.sigma_max)
        noise = randn(*target.shape) + cfg.offset_noise * randn(b, target.shape[1], 1, 1)
        x_noisy = target + sigma.reshape(-1, 1, 1, 1) * noise
        c_in, c_out, c_skip, c_noise = self.precondition(sigma)
        pred = self.net(c_in * x_noisy, c_noise, context, actions, ctx_sigma).float()
        goal = (target - c_skip * x_noisy) / c_out
        loss = torch.mean((pred - goal) ** 2)
        return loss, {"loss": float(loss.detach())}
