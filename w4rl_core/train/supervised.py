"""What BC and the success classifier share: a seeded minibatch loop with random-shift augmentation."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import torch
import torch.nn.functional as F

from w4rl_core.progress import progress_bar
from w4rl_core.train.tracking import CurveLog


@dataclass(frozen=True)
class SupervisedConfig:
    steps: int = 500
    batch_size: int = 64
    lr: float = 3e-4
    weight_decay: float = 1e-4
    augment_shift: int = 2  # random-shift augmentation in pixels (DrQ); 0 = off
    log_every: int = 25
    seed: int = 0
    device: str = "auto"

    def __post_init__(self) -> None:
        if min(self.steps, self.batch_size, self.log_every) < 1 or self.lr <= 0 or self.augment_shift < 0:
            raise ValueError("steps, batch_size, log_every must be >= 1, lr > 0, augment_shift >= 0")


def random_shift(frames: torch.Tensor, pad: int, generator: torch.Generator) -> torch.Tensor:
    """Pad by replication and crop back at a random offset per sample: cheap, strong for tiny data."""
    if pad == 0:
        return frames
    b, _, h, w = frames.shape
    padded = F.pad(frames, (pad, pad, pad, pad), mode="replicate")
    dx = torch.randint(0, 2 * pad + 1, (b,), generator=generator).tolist()
    dy = torch.randint(0, 2 * pad + 1, (b,), generator=generator).tolist()
    return torch.stack([padded[i, :, y : y + h, x : x + w] for i, (x, y) in enumerate(zip(dx, dy))])


def fit(
    module: torch.nn.Module,
    loss_fn: Callable[[torch.Generator], torch.Tensor],
    config: SupervisedConfig,
    desc: str,
    progress: bool = False,
    log: CurveLog | None = None,
) -> list[dict[str, float]]:
    """Run `steps` AdamW steps of `loss_fn(generator)`; returns loss-curve rows (also logged to `log`,
    which the caller finishes with its summary)."""
    opt = torch.optim.AdamW(module.parameters(), lr=config.lr, weight_decay=config.weight_decay)
    gen = torch.Generator().manual_seed(config.seed)
    rows, running = [], []
    for step in progress_bar(range(1, config.steps + 1), desc=desc, unit="step", enabled=progress):
        loss = loss_fn(gen)
        opt.zero_grad(set_to_none=True)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(module.parameters(), 1.0)
        opt.step()
        running.append(float(loss.detach()))
        if step % config.log_every == 0 or step == config.steps:
            rows.append({"step": step, "loss": sum(running) / len(running)})
            if log is not None:
                log.log(rows[-1])
            running = []
    return rows
