#!/usr/bin/env python
"""World-model ablations on a fixed budget: same data, same optimizer steps (same CPU time for
variants of equal cost), same held-out episodes, fidelity measured as the pipeline measures it
(imagined episodes from held-out episode starts, the refinement horizon, FastSampler).

    PYTHONPATH=. .venv/bin/python benchmarks/experiments/ablate_world_model.py \\
        --params profiles/cpu.yaml --root /path/to/a/repo/with/collected/data --steps 1500 \\
        --variants new ctx_noise_0.1 old --out ablation.jsonl

Variants switch one choice of docs/results.md's Part 1 back to what it was before (or to an
alternative); `old` switches all of them back at once. Changes that exist only as monkeypatches
here (the earlier noise embedding, attention without GroupNorm, ...) are not in the library any
more: they lost. One JSON line per variant (and per eval-only variant) goes to --out.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import sys
import time
from dataclasses import replace
from pathlib import Path

import torch
from torch import nn

sys.path.insert(0, str(Path(__file__).resolve().parents[2]))

from pipelines.params import load_params  # noqa: E402
from pipelines.paths import EPISODES_DIR, expected_stores  # noqa: E402
from w4rl_core.data.windows import load_windows  # noqa: E402
from w4rl_core.eval.fidelity import FidelityConfig, fidelity_metrics  # noqa: E402
from w4rl_core.models import accel as accel_mod  # noqa: E402
from w4rl_core.models.accel import FastSampler  # noqa: E402
from w4rl_core.train import world_model as trainer  # noqa: E402


class _ScaledPositional(nn.Module):
    """The earlier noise embedding: diffusers' sinusoidal projection of 1000 * c_noise."""

    def __init__(self, dim: int) -> None:
        super().__init__()
        from diffusers.models.embeddings import Timesteps

        self.inner = Timesteps(dim, flip_sin_to_cos=True, downscale_freq_shift=0)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.inner(x * 1000.0)


def positional_x1000(model) -> None:
    net = model.denoiser.net
    net.unet.time_proj = _ScaledPositional(net.config.channels[0])


def no_attn_norm(model) -> None:
    for attn in model.denoiser.net.unet.mid_block.attentions:
        attn.group_norm = None


def no_zero_init(model) -> None:
    model.denoiser.net.unet.conv_out.reset_parameters()


def _all_decay(model, weight_decay):
    return [{"params": list(model.parameters()), "weight_decay": weight_decay}]


@contextlib.contextmanager
def no_clamp():
    """The sampler without clamping the denoised estimate to the pixel range."""
    original = FastSampler._denoised

    def unclamped(self, x, e, ctx, cond):
        inp = torch.cat([ctx, (e.c_in * x).to(ctx.dtype)], dim=1)
        t = torch.full((x.shape[0],), e.c_noise, device=x.device)
        out = self.net.forward_stacked(inp, t, cond).float()
        return e.c_skip * x + e.c_out * out

    FastSampler._denoised = unclamped
    try:
        yield
    finally:
        FastSampler._denoised = original


# name: (world_model param overrides (dotted), model patches, weight decay on everything)
VARIANTS = {
    "new": ({}, [], False),
    "ctx_noise_0.1": ({"edm.context_noise_max": 0.1}, [], False),
    "ctx_noise_0.1_cond": ({"edm.context_noise_max": 0.1, "context_noise_embedding": True}, [], False),
    "ctx_noise_0.02": ({"edm.context_noise_max": 0.02}, [], False),
    "positional_x1000": ({}, [positional_x1000], False),
    "no_attn_norm": ({}, [no_attn_norm], False),
    "no_zero_init": ({}, [no_zero_init], False),
    "no_warmup_wd_all": ({"train.warmup_steps": 0}, [], True),
    "old": ({"edm.context_noise_max": 0.1, "train.warmup_steps": 0},
            [positional_x1000, no_attn_norm, no_zero_init], True),
    "wide": ({"channels": [64, 64, 128, 128]}, [], False),
    "deep": ({"layers_per_block": 2}, [], False),
}
EVAL_ONLY = {"no_clamp": "new", "steps_1": "new", "steps_2": "new", "heun_2": "new"}


def _override(wm, overrides: dict):
    raw = {k: getattr(wm, k) for k in wm.__dataclass_fields__}
    for key, value in overrides.items():
        head, _, tail = key.partition(".")
        if tail:
            raw[head] = {**raw[head], tail: value}
        else:
            raw[head] = value
    return type(wm)(**raw)


def _row(name: str, metrics: dict, extra: dict) -> dict:
    out = {"variant": name, **extra, "episodes": metrics["episodes"], "horizon": metrics["horizon"]}
    for who in ("model", "copy_last_frame"):
        for metric in ("psnr", "psnr_moving", "ssim"):
            out[f"{who}.{metric}"] = {k: round(v, 3) for k, v in metrics[who][metric].items()}
            out[f"{who}.{metric}_se"] = {k: None if v is None else round(v, 3)
                                        for k, v in metrics[who][f"{metric}_se"].items()}
    return out


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--params", default="profiles/cpu.yaml")
    ap.add_argument("--root", default=".", help="repository whose data/episodes holds the profile's stores")
    ap.add_argument("--steps", type=int, default=1500)
    ap.add_argument("--variants", nargs="+", default=list(VARIANTS) + list(EVAL_ONLY))
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--out", required=True)
    args = ap.parse_args()
    params = load_params(args.params)
    wm = params.world_model
    stores = [f"{args.root}/{s}" for s in expected_stores(params, EPISODES_DIR)]
    train, val = load_windows(stores, wm.image_size, wm.val_fraction, wm.split_seed)
    fid = FidelityConfig(horizon=params.episode_horizon, episodes=params.fidelity.episodes, seed=params.fidelity.seed)
    trained: dict[str, object] = {}

    def train_variant(name: str):
        overrides, patches, decay_all = VARIANTS[name]
        p = _override(wm, overrides | {"train.steps": args.steps, "train.seed": args.seed})
        model_config = p.model_config(train.action_low, train.action_high)
        train_config = p.train_config()
        original_groups = trainer.parameter_groups
        if decay_all:
            trainer.parameter_groups = _all_decay
        try:
            torch.manual_seed(train_config.seed)
            run = trainer.Training(model_config, train_config, p.accel_config())
        finally:
            trainer.parameter_groups = original_groups
        for patch in patches:  # applied to the network and its EMA copy alike
            patch(run.model)
            patch(run.ema.module)
        if patches:  # re-create the optimizer over the patched parameters
            groups = _all_decay(run.model, train_config.weight_decay) if decay_all else \
                trainer.parameter_groups(run.model, train_config.weight_decay)
            run.opt = torch.optim.AdamW(groups, lr=train_config.lr)
            run.ema = torch.optim.swa_utils.AveragedModel(run.model, use_buffers=True)
        started = time.perf_counter()
        batches = run.memory_batches(train)
        for step in range(train_config.steps):
            run.step(batches, updates_before=step)
        seconds = time.perf_counter() - started
        return run.ema.module.eval(), p, seconds

    with open(args.out, "a") as out:
        for name in args.variants:
            base = EVAL_ONLY.get(name, name)
            if base not in trained:
                trained[base] = train_variant(base)
            model, p, seconds = trained[base]
            sampler = model.config.sampler
            if name == "steps_1":
                sampler = replace(sampler, steps=1)
            elif name == "steps_2":
                sampler = replace(sampler, steps=2)
            elif name == "heun_2":
                sampler = replace(sampler, steps=2, method="heun")
            sample = FastSampler(model, sampler, "cpu", p.accel_config())
            started = time.perf_counter()
            with no_clamp() if name == "no_clamp" else contextlib.nullcontext():
                metrics, _, _ = fidelity_metrics(sample, model.config.context_frames, val, fid)
            row = _row(name, metrics, {"steps": args.steps, "seed": args.seed, "train_s": round(seconds),
                                       "eval_s": round(time.perf_counter() - started), "sampler_steps": sampler.steps,
                                       "precision": str(sample.opts.dtype), "params": sum(
                                           q.numel() for q in model.parameters())})
            out.write(json.dumps(row) + "\n")
            out.flush()
            print(json.dumps({k: row[k] for k in ("variant", "train_s", "model.psnr", "copy_last_frame.psnr",
                                                    "model.psnr_moving", "copy_last_frame.psnr_moving")}),
                  flush=True)


if __name__ == "__main__":
    accel_mod.log.setLevel("WARNING")
    main()
