"""What BC and the success classifier share: a seeded minibatch loop with random-shift augmentation,
resumable from periodic checkpoints (safetensors + JSON, w4rl_core/train/checkpoint.py)."""

from __future__ import annotations

import hashlib
import json
import os
from collections.abc import Callable, Mapping
from dataclasses import asdict
from typing import Any

import torch
import torch.nn.functional as F

from w4rl_core.progress import progress_bar
from w4rl_core.train.configs import SupervisedConfig  # noqa: F401 (re-exported; torch-free home)
from w4rl_core.train.checkpoint import (load_optimizer, load_state, optimizer_tensors, parameter_fingerprint,
                                        save_state)
from w4rl_core.train.tracking import CurveLog


def random_shift(frames: torch.Tensor, pad: int, generator: torch.Generator) -> torch.Tensor:
    """Pad by replication and crop back at a random offset per sample: cheap, strong for tiny data."""
    if pad == 0:
        return frames
    b, _, h, w = frames.shape
    padded = F.pad(frames, (pad, pad, pad, pad), mode="replicate")
    dx = torch.randint(0, 2 * pad + 1, (b,), generator=generator).tolist()
    dy = torch.randint(0, 2 * pad + 1, (b,), generator=generator).tolist()
    return torch.stack([padded[i, :, y : y + h, x : x + w] for i, (x, y) in enumerate(zip(dx, dy))])


def run_fingerprint(module: torch.nn.Module, config: Any, data: Mapping[str, Any]) -> str:
    """What a checkpoint was trained for: the config, the module's initial weights (its architecture
    and seed) and a description of the data. A checkpoint resumes only into the same run; one left by
    a run with other params or data is ignored and overwritten."""
    h = hashlib.sha256(json.dumps([asdict(config), dict(data)], sort_keys=True, default=str).encode())
    h.update(parameter_fingerprint(module).encode())
    return h.hexdigest()[:16]


def fit(
    module: torch.nn.Module,
    loss_fn: Callable[[torch.Generator], torch.Tensor],
    config: SupervisedConfig,
    desc: str,
    progress: bool = False,
    log: CurveLog | None = None,
    checkpoint_dir: str | os.PathLike[str] | None = None,
    data: Mapping[str, Any] | None = None,
) -> list[dict[str, float]]:
    """Run `steps` AdamW steps of `loss_fn(generator)`; returns loss-curve rows (also logged to `log`,
    which the caller finishes with its summary).

    With `checkpoint_dir`, the module, optimizer, generator and curve are saved every
    `checkpoint_every` steps and a rerun with the same config, initial weights and `data` (a
    description of the training data) continues from there: its result is bit-identical to an
    uninterrupted run. The caller removes the directory once its outputs are in place.
    """
    opt = torch.optim.AdamW(module.parameters(), lr=config.lr, weight_decay=config.weight_decay)
    gen = torch.Generator().manual_seed(config.seed)
    rows: list[dict[str, float]] = []
    running: list[float] = []
    start = 0
    fingerprint = run_fingerprint(module, config, data or {}) if checkpoint_dir is not None else ""
    resumed = load_state(checkpoint_dir) if checkpoint_dir is not None else None
    if resumed is not None and resumed[1].get("fingerprint") == fingerprint:
        tensors, meta = resumed
        module.load_state_dict({k[7:]: v for k, v in tensors.items() if k.startswith("module/")})
        load_optimizer(opt, tensors, meta["optimizer"])
        gen.set_state(tensors["rng/batch"])
        torch.set_rng_state(tensors["rng/torch"])
        start, rows, running = meta["step"], meta["rows"], meta["running"]
        for row in rows:  # the resumed run's curve starts as the checkpoint saved it
            if log is not None:
                log.log(row)

    def checkpoint(step: int) -> None:
        opt_tensors, opt_meta = optimizer_tensors(opt)
        tensors = {f"module/{k}": v for k, v in module.state_dict().items()}
        tensors |= opt_tensors | {"rng/batch": gen.get_state(), "rng/torch": torch.get_rng_state()}
        # JSON keeps every float exactly (repr round-trips), so the resumed curve is the same rows.
        save_state(checkpoint_dir, tensors, {"fingerprint": fingerprint, "step": step, "rows": rows,
                                             "running": running, "optimizer": opt_meta})

    for step in progress_bar(range(start + 1, config.steps + 1), desc=desc, unit="step", total=config.steps,
                             initial=start, enabled=progress):
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
        if checkpoint_dir is not None and step % config.checkpoint_every == 0 and step < config.steps:
            checkpoint(step)
    return rows


def windows_fingerprint(*windows: Any) -> dict[str, Any]:
    """A cheap description of training data for `fit`'s checkpoint identity: sizes, episode
    boundaries and a digest of the actions and success labels (not of every pixel: the frames of the
    same stores are the same, and hashing them would cost as much as an epoch)."""
    h = hashlib.sha256()
    sizes = []
    for w in windows:
        sizes.append([len(w.rgb), list(w.rgb.shape[1:]), len(w.episode_starts)])
        for t in (w.action, w.success):
            h.update(t.detach().cpu().contiguous().numpy().tobytes())
        h.update(json.dumps([list(map(int, w.episode_starts)), list(map(int, w.episode_ends))]).encode())
    return {"sizes": sizes, "digest": h.hexdigest()[:16]}
