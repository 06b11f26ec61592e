#!/usr/bin/env python
"""World-model throughput, every fast path against the eager path side by side, in one run:
imagined frames/s by batch size and sampler steps, and training samples/s.

    .venv/bin/python benchmarks/bench_world_model.py                       # CPU smoke sizes
    python benchmarks/bench_world_model.py --gpu                            # GPU sizes (64 px, 3.2M params)

Imagination variants (each an autoregressive rollout of `--frames` imagined frames per env):
  eager          model.predict, the reference sampler; on CUDA under bf16 autocast with
                 channels_last weights (the baseline in docs/design.md#h100: 1,835 frames/s on an H100)
  fast-fp32      FastSampler, float32: conditioning once per frame, constant EDM coefficients
  fast-nhwc      + channels_last
  fast-bf16      + bf16 weights
  compiled       + torch.compile of the whole sampling loop
  graphs         bf16 + channels_last + CUDA graph of the whole sampling loop (CUDA only)
  compiled+graphs
Each row also gives the max abs difference from the eager float32 frame for the same noise: the outputs agree.

Training variants (Training.step: batch sampling, loss, backward, clip, AdamW, EMA):
  eager (float32; on CUDA bf16 autocast), nhwc (float32), nhwc-bf16, +data-on-device, +compile;
  then the last variant at the other batch sizes.

Synthetic frames (throughput does not depend on content). Prints one table and appends it, with
machine, date and command, to benchmarks/results.md.
"""

from __future__ import annotations

import argparse
import copy
import sys
import time
from collections.abc import Callable
from pathlib import Path

import numpy as np
import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from benchmarks.bench_data import append_results  # noqa: E402
from w4rl_core.data.windows import FrameWindows  # noqa: E402
from w4rl_core.models.accel import AccelConfig, FastSampler  # noqa: E402
from w4rl_core.models.sampler import SamplerConfig  # noqa: E402
from w4rl_core.models.unet import UNetConfig  # noqa: E402
from w4rl_core.models.world_model import WorldModel, WorldModelConfig  # noqa: E402
from w4rl_core.train.world_model import Training, WorldModelTrainConfig, resolve_device  # noqa: E402

IMAGINE_VARIANTS = {
    "fast-fp32": AccelConfig(precision="float32", channels_last=False, cuda_graphs=False),
    "fast-nhwc": AccelConfig(precision="float32", channels_last=True, cuda_graphs=False),
    "fast-bf16": AccelConfig(precision="bfloat16", channels_last=True, cuda_graphs=False),
    "compiled": AccelConfig(precision="bfloat16", channels_last=True, cuda_graphs=False, compile=True),
    "graphs": AccelConfig(precision="bfloat16", channels_last=True, cuda_graphs=True),
    "compiled+graphs": AccelConfig(precision="bfloat16", channels_last=True, cuda_graphs=True, compile=True),
}
TRAIN_VARIANTS = {
    "eager": AccelConfig(precision="auto", channels_last=False, data_on_device=False),
    "nhwc": AccelConfig(precision="float32", channels_last=True, data_on_device=False),
    "nhwc-bf16": AccelConfig(precision="bfloat16", channels_last=True, data_on_device=False),
    "nhwc-bf16+data-on-device": AccelConfig(precision="bfloat16", channels_last=True, data_on_device=True),
    "compiled": AccelConfig(precision="bfloat16", channels_last=True, data_on_device=True, compile=True),
}
CUDA_ONLY = {"graphs", "compiled+graphs"}
# The GPU sizes: the U-Net closest to the eager baseline in docs/design.md#h100 (64 px, 2.9M params: 1,835
# imagined frames/s at batch 1024, 2,017 training samples/s at batch 256). profiles/gpu.yaml's own
# U-Net: add --channels 64,128,128,256 --layers-per-block 2 (17.9M params).
GPU_ARGS = dict(image_size=64, channels="32,64,64,128", layers_per_block=1, norm_groups=32,
                batches="256,1024,2048", sampler_steps="1,3", train_batches="256,512,1024", frames=8, iters=20,
                variants="all", train_variants="all")


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


def add_model_args(parser: argparse.ArgumentParser, image_size: int = 32, channels: str = "32,32,64,64",
                   layers_per_block: int = 1, norm_groups: int = 8) -> None:
    """The U-Net size flags every world-model benchmark takes (defaults: the CPU smoke U-Net)."""
    parser.add_argument("--image-size", type=int, default=image_size)
    parser.add_argument("--channels", default=channels, help="widths per level, comma-separated")
    parser.add_argument("--layers-per-block", type=int, default=layers_per_block)
    parser.add_argument("--norm-groups", type=int, default=norm_groups)


def model_config(args: argparse.Namespace) -> WorldModelConfig:
    """The world model those flags describe (4-D actions in [-1, 1], as Meta-World's)."""
    channels = tuple(int(c) for c in args.channels.split(","))
    return WorldModelConfig(
        action_low=(-1.0,) * 4, action_high=(1.0,) * 4,
        unet=UNetConfig(image_size=args.image_size, channels=channels, layers_per_block=args.layers_per_block,
                        norm_groups=args.norm_groups),
    )


def parse_args(parser: argparse.ArgumentParser, gpu_args: dict) -> tuple[argparse.Namespace, torch.device]:
    """Adds --device and --no-append, parses (with `gpu_args` as the defaults under --gpu: flags
    given explicitly still win) and resolves the device."""
    parser.add_argument("--device", default="auto", help="auto (CUDA if present) | cpu | cuda | cuda:N")
    parser.add_argument("--no-append", action="store_true", help="print only; do not touch results.md")
    if "--gpu" in sys.argv:
        parser.set_defaults(**gpu_args)
    args = parser.parse_args()
    return args, resolve_device(args.device)


def sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize()


def peak_gib(device: torch.device) -> str:
    return f"{torch.cuda.max_memory_allocated(device) / 2**30:.2f}" if device.type == "cuda" else "–"


def rollout_fps(sample: Callable, context: torch.Tensor, actions: torch.Tensor, frames: int, device) -> float:
    """Imagine `frames` frames per env autoregressively (as ImaginedEnv does); frames/s over the batch."""
    gen = torch.Generator(device=device).manual_seed(0)
    ctx = context.clone()
    sample(ctx, actions, gen)  # warm-up: compilation, graph capture, cuDNN autotuning
    sync(device)
    start = time.perf_counter()
    for _ in range(frames):
        nxt = sample(ctx, actions, gen)
        ctx = torch.cat([ctx[:, 1:], nxt[:, None]], dim=1)
    sync(device)
    return len(context) * frames / (time.perf_counter() - start)


def bench_imagination(model: WorldModel, args, device, variants: list[str]) -> list[tuple[str, ...]]:
    rows = []
    t, size = model.config.context_frames, model.config.unet.image_size
    eager_model = model
    if device.type == "cuda":  # the eager baseline as measured in docs/design.md#h100
        eager_model = copy.deepcopy(model).to(memory_format=torch.channels_last)
    for steps in (int(s) for s in args.sampler_steps.split(",")):
        sampler = SamplerConfig(steps=steps)
        for batch in (int(b) for b in args.batches.split(",")):
            g = torch.Generator().manual_seed(1)
            context = (torch.rand(batch, t, 3, size, size, generator=g) * 2 - 1).to(device)
            actions = (torch.rand(batch, t, 4, generator=g) * 2 - 1).to(device)
            reference = model.predict(context, actions, sampler, torch.Generator(device=device).manual_seed(5))

            def eager(ctx, act, gen, _m=eager_model, _s=sampler):
                with torch.autocast(device_type=device.type, dtype=torch.bfloat16, enabled=device.type == "cuda"):
                    return _m.predict(ctx, act, _s, gen)

            base = None
            for name in ["eager", *variants]:
                if device.type == "cuda":
                    torch.cuda.reset_peak_memory_stats(device)
                fn = eager if name == "eager" else FastSampler(model, sampler, device, IMAGINE_VARIANTS[name])
                delta = (fn(context, actions, torch.Generator(device=device).manual_seed(5)) - reference).abs().max()
                fps = rollout_fps(fn, context, actions, args.frames, device)
                base = base or fps
                rows.append((f"imagine {steps} step(s), batch {batch}", name, f"{fps:,.0f}", f"{fps / base:.2f}×",
                             f"{float(delta):.1e}", peak_gib(device)))
                print(" | ".join(rows[-1]), flush=True)
    return rows


def bench_training(model_config: WorldModelConfig, args, device, variants: list[str]) -> list[tuple[str, ...]]:
    windows = synthetic_windows(args.train_frames, model_config.unet.image_size)
    rows, base = [], None
    batches = [int(b) for b in args.train_batches.split(",")]
    runs = [(name, batches[0]) for name in variants] + [(variants[-1], b) for b in batches[1:]]
    for name, batch in runs:
        accel = TRAIN_VARIANTS[name]
        cfg = WorldModelTrainConfig(steps=args.iters + 2, batch_size=batch, device=str(device))
        run = Training(model_config, cfg, accel)
        batches = run.memory_batches(windows.to(device) if run.fast.data_on_device else windows)
        if device.type == "cuda":
            torch.cuda.reset_peak_memory_stats(device)
        for i in range(2):  # warm-up (compilation)
            run.step(batches, i)
        sync(device)
        start = time.perf_counter()
        for i in range(args.iters):
            loss, _ = run.step(batches, i + 2)
        sync(device)
        sps = batch * args.iters / (time.perf_counter() - start)
        base = base or sps
        rows.append((f"train, batch {batch}", name, f"{sps:,.0f}", f"{sps / base:.2f}×", f"loss {float(loss):.3f}",
                     peak_gib(device)))
        print(" | ".join(rows[-1]), flush=True)
    return rows


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--gpu", action="store_true", help="GPU sizes: " + ", ".join(f"{k}={v}" for k, v in GPU_ARGS.items()))
    add_model_args(parser)
    parser.add_argument("--batches", default="8,32", help="imagined envs per step, comma-separated")
    parser.add_argument("--sampler-steps", default="1,3", help="comma-separated")
    parser.add_argument("--frames", type=int, default=4, help="imagined frames per env per measurement")
    parser.add_argument("--train-batches", default="32", help="comma-separated; the first compares variants")
    parser.add_argument("--train-frames", type=int, default=2000)
    parser.add_argument("--iters", type=int, default=5, help="timed training steps")
    parser.add_argument("--variants", default="fast-fp32,fast-nhwc,fast-bf16",
                        help=f"imagination variants besides eager, of {list(IMAGINE_VARIANTS)} "
                             "(compile costs ~1 min per shape on 2 CPU cores; 'all' = every one the device can run)")
    parser.add_argument("--train-variants", default="eager,nhwc,nhwc-bf16,nhwc-bf16+data-on-device",
                        help=f"of {list(TRAIN_VARIANTS)} or 'all'")
    args, device = parse_args(parser, GPU_ARGS)
    variants = [v for v in IMAGINE_VARIANTS if v not in CUDA_ONLY or device.type == "cuda"] \
        if args.variants == "all" else args.variants.split(",")
    train_variants = list(TRAIN_VARIANTS) if args.train_variants == "all" else args.train_variants.split(",")
    cfg = model_config(args)
    channels = cfg.unet.channels
    torch.manual_seed(0)
    model = WorldModel(cfg).to(device).eval()
    params_m = sum(p.numel() for p in model.parameters()) / 1e6
    print(f"{args.image_size}px, channels {channels}, {params_m:.2f}M params, {device}", flush=True)
    rows = bench_imagination(model, args, device, variants)
    rows += bench_training(cfg, args, device, train_variants)
    head = (f"Model: {args.image_size} px, channels {channels}, layers/block {args.layers_per_block}, "
            f"{params_m:.2f}M params; device {device}. Imagination: frames/s over {args.frames} autoregressive "
            f"frames; training: samples/s over {args.iters} steps after 2 warm-up steps.\n\n")
    header = ("benchmark", "variant", "per s", "vs first", "max abs diff vs eager fp32 (or loss)", "peak GiB")
    append_results("bench_world_model", rows, args.no_append, header=header, preamble=head)


if __name__ == "__main__":
    main()
