#!/usr/bin/env python
"""World-model throughput on the current device: imagined frames/s (ImaginedEnv.step) by batch size
and sampler steps, and training samples/s.

    .venv/bin/python benchmarks/bench_world_model.py                       # CPU smoke sizes
    python benchmarks/bench_world_model.py --image-size 64 --channels 64,128,128,256 \
        --layers-per-block 2 --batches 256,1024 --train-batch 256            # GPU sizes

Synthetic frames (throughput does not depend on content). Prints one table and appends it, with
machine, date and command, to benchmarks/results.md.
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

import numpy as np
import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from benchmarks.bench_data import append_results  # noqa: E402
from w4rl_core.data.windows import FrameWindows  # noqa: E402
from w4rl_core.imagine.env import ImaginedEnv  # noqa: E402
from w4rl_core.models.sampler import SamplerConfig  # noqa: E402
from w4rl_core.models.unet import UNetConfig  # noqa: E402
from w4rl_core.models.world_model import WorldModel, WorldModelConfig  # noqa: E402
from w4rl_core.train.world_model import resolve_device  # noqa: E402


def synthetic_windows(n_frames: int, size: int) -> FrameWindows:
    g = torch.Generator().manual_seed(0)
    return FrameWindows(
        rgb=torch.randint(0, 256, (n_frames, 3, size, size), dtype=torch.uint8, generator=g),
        action=torch.rand(n_frames, 4, generator=g) * 2 - 1,
        success=torch.zeros(n_frames, dtype=torch.uint8),
        episode_ends=np.arange(50, n_frames + 1, 50),
        episode_task=["coffee-pull-v3"] * (n_frames // 50),
        episode_kind=["expert"] * (n_frames // 50),
        action_low=(-1.0,) * 4,
        action_high=(1.0,) * 4,
    )


def sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize()


def bench_imagination(model, windows, batch, steps, device, iters) -> float:
    env = ImaginedEnv(model, windows, n_envs=batch, sampler=SamplerConfig(steps=steps), device=device)
    env.reset(seed=0)
    action = torch.zeros(batch, 4, device=device)
    with torch.autocast(device_type=device.type, dtype=torch.bfloat16, enabled=device.type == "cuda"):
        env.step(action)  # warm-up
        sync(device)
        start = time.perf_counter()
        for _ in range(iters):
            env.step(action)
        sync(device)
    return batch * iters / (time.perf_counter() - start)


def bench_training(model, windows, batch, device, iters) -> float:
    opt = torch.optim.AdamW(model.parameters(), lr=1e-4)
    g = torch.Generator().manual_seed(0)
    t = model.config.context_frames

    def step():
        frames, actions, _ = windows.sample(batch, t + 1, g, device)
        with torch.autocast(device_type=device.type, dtype=torch.bfloat16, enabled=device.type == "cuda"):
            loss, _ = model.loss(frames, actions[:, :t])
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()

    step()
    sync(device)
    start = time.perf_counter()
    for _ in range(iters):
        step()
    sync(device)
    return batch * iters / (time.perf_counter() - start)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--image-size", type=int, default=32)
    parser.add_argument("--channels", default="32,32,64,64")
    parser.add_argument("--layers-per-block", type=int, default=1)
    parser.add_argument("--batches", default="8,32", help="imagined envs per step, comma-separated")
    parser.add_argument("--sampler-steps", default="1,3", help="comma-separated")
    parser.add_argument("--train-batch", type=int, default=32)
    parser.add_argument("--iters", type=int, default=5)
    parser.add_argument("--device", default="auto")
    parser.add_argument("--no-append", action="store_true")
    args = parser.parse_args()

    device = resolve_device(args.device)
    channels = tuple(int(c) for c in args.channels.split(","))
    cfg = WorldModelConfig(
        action_low=(-1.0,) * 4, action_high=(1.0,) * 4,
        unet=UNetConfig(image_size=args.image_size, channels=channels, layers_per_block=args.layers_per_block,
                        norm_groups=min(32, min(channels)) if min(channels) % 32 == 0 else 8),
    )
    torch.manual_seed(0)
    model = WorldModel(cfg).to(device)
    if device.type == "cuda":
        model = model.to(memory_format=torch.channels_last)
    params_m = sum(p.numel() for p in model.parameters()) / 1e6
    windows = synthetic_windows(2000, args.image_size)
    label = f"{args.image_size}px, channels {channels}, {params_m:.2f}M params, {device.type}"
    rows = []
    for steps in (int(s) for s in args.sampler_steps.split(",")):
        for batch in (int(b) for b in args.batches.split(",")):
            fps = bench_imagination(model, windows, batch, steps, device, args.iters)
            rows.append((f"imagined frames/s, batch {batch}, {steps} Euler step(s), {label}", f"{fps:,.0f}"))
    torch.manual_seed(0)  # a fresh model: ImaginedEnv froze the one above, as it must
    trainable = WorldModel(cfg).to(device)
    if device.type == "cuda":
        trainable = trainable.to(memory_format=torch.channels_last)
    sps = bench_training(trainable, windows, args.train_batch, device, args.iters)
    rows.append((f"world-model training samples/s, batch {args.train_batch}, {label}", f"{sps:,.0f}"))
    append_results("bench_world_model", rows, args.no_append)


if __name__ == "__main__":
    main()
