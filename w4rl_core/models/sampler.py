"""Sampling the next frame: Karras rho-schedule, Euler or Heun steps (EDM), a few steps suffice.

The denoised estimate D(x; sigma) is clamped to the pixel range [-1, 1] at every step (as DIAMOND
does): the clean frame is known to lie there, and with 1-3 steps an out-of-range estimate at a high
noise level would otherwise carry straight into the result.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any

import torch

from w4rl_core.models.configs import SamplerConfig  # noqa: F401 (re-exported; torch-free home)
from w4rl_core.models.edm import Denoiser


def karras_sigmas(config: SamplerConfig, device: torch.device | str = "cpu") -> torch.Tensor:
    """steps+1 noise levels from sigma_max down to sigma_min, then a final 0."""
    ramp = torch.linspace(0, 1, config.steps, device=device, dtype=torch.float64)
    lo, hi = config.sigma_min ** (1 / config.rho), config.sigma_max ** (1 / config.rho)
    sigmas = (hi + ramp * (lo - hi)) ** config.rho
    return torch.cat([sigmas, sigmas.new_zeros(1)]).float()


def edm_integrate(
    x: torch.Tensor, schedule: Sequence[tuple[Any, Any, Any, Any]], denoised: Callable[[torch.Tensor, Any], torch.Tensor],
) -> tuple[torch.Tensor, torch.Tensor]:
    """The Euler/Heun loop of EDM (Karras et al. 2022, Alg. 1), the one copy both samplers run.

    `schedule` holds per step (sigma, next sigma, a, b): `denoised(x, a)` is the clamped estimate
    D(x; sigma), `denoised(x, b)` D(x; next sigma) for Heun's correction (b None: an Euler step).
    How a and the sigmas are represented (tensors here, precomputed constants in the fast path)
    is the caller's. Returns the sample, clamped, and the first denoised estimate (the model's mean
    prediction of the frame, used as its uncertainty reference).
    """
    mean = None
    for sigma, nxt, first, second in schedule:
        estimate = denoised(x, first)
        mean = estimate if mean is None else mean
        d = (x - estimate) / sigma
        x_next = x + d * (nxt - sigma)
        if second is not None:
            d2 = (x_next - denoised(x_next, second)) / nxt
            x_next = x + (d + d2) / 2 * (nxt - sigma)
        x = x_next
    return x.clamp(-1, 1), mean


@torch.no_grad()
def sample_next_frame(
    denoiser: Denoiser,
    context: torch.Tensor,
    actions: torch.Tensor,
    config: SamplerConfig,
    generator: torch.Generator | None = None,
) -> torch.Tensor:
    """context (B,T,3,H,W) in [-1,1], actions (B,T,F) encoded -> next frame (B,3,H,W) in [-1,1]."""
    b, _, c, h, w = context.shape
    sigmas = karras_sigmas(config, context.device)
    x = torch.randn(b, c, h, w, device=context.device, generator=generator) * sigmas[0]
    schedule = [(sigma, nxt, sigma.expand(b), nxt.expand(b) if config.method == "heun" and nxt > 0 else None)
                for sigma, nxt in zip(sigmas[:-1], sigmas[1:])]
    return edm_integrate(x, schedule, lambda x, s: denoiser.denoise(x, s, context, actions).clamp(-1, 1))[0]
