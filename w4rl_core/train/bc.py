"""Behaviour cloning: the Gaussian image policy fitted by NLL to a task's expert actions."""

from __future__ import annotations

import os
from typing import Any

import torch

from w4rl_core.data.windows import FrameWindows
from w4rl_core.models.policy import GaussianPolicy, PolicyConfig
from w4rl_core.train.supervised import SupervisedConfig, fit, random_shift, windows_fingerprint
from w4rl_core.train.tracking import CurveLog
from w4rl_core.train.world_model import resolve_device


def frames_of(w: FrameWindows, idx: torch.Tensor, device) -> torch.Tensor:
    return w.rgb[idx].to(device).float() / 127.5 - 1


def train_bc(
    policy_config: PolicyConfig, config: SupervisedConfig, train: FrameWindows, val: FrameWindows,
    progress: bool = False, log: CurveLog | None = None, checkpoint_dir: str | os.PathLike[str] | None = None,
) -> tuple[GaussianPolicy, dict[str, Any]]:
    """`checkpoint_dir`: resumable state (see `fit`); the caller removes it once the policy is saved."""
    if len(train.rgb) == 0:
        raise ValueError("BC needs expert frames; the training split is empty")
    device = resolve_device(config.device)
    torch.manual_seed(config.seed)
    policy = GaussianPolicy(policy_config).to(device)

    def loss_fn(gen: torch.Generator) -> torch.Tensor:
        idx = torch.randint(len(train.rgb), (config.batch_size,), generator=gen)
        frames = random_shift(frames_of(train, idx, device), config.augment_shift, gen)
        return policy.nll(frames, train.action[idx].to(device))

    curve = fit(policy, loss_fn, config, "train BC", progress, log, checkpoint_dir, windows_fingerprint(train))

    @torch.no_grad()
    def evaluate(w: FrameWindows) -> dict[str, float] | None:
        if len(w.rgb) == 0:
            return None
        idx = torch.arange(len(w.rgb))
        frames, actions = frames_of(w, idx, device), w.action.to(device)
        mean = policy.denormalize(policy.distribution(frames).mean)
        return {"nll": float(policy.nll(frames, actions)), "action_mse": float(((mean - actions) ** 2).mean())}

    policy.eval()
    report = {"curve": curve, "train": evaluate(train), "val": evaluate(val),
              "train_frames": len(train.rgb), "val_frames": len(val.rgb)}
    return policy.cpu(), report
