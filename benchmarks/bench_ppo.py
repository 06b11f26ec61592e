#!/usr/bin/env python
"""PPO in imagination: where an iteration's time goes — world model, success classifier,
policy/critic acting, and the PPO update.

    .venv/bin/python benchmarks/bench_ppo.py            # smoke sizes (params.yaml's models, 16 envs x 10 steps)
    python benchmarks/bench_ppo.py --gpu                 # GPU profile sizes (64 px, 256 envs x 40 steps)

Runs the real `w4rl_core.train.ppo.refine` on synthetic frames (timings do not depend on content)
with untrained models of the configured sizes. The world-model sampler and the classifier are
wrapped in timers (synchronizing the GPU around each call, so their split is exact and the total a
little pessimistic); the rest of the rollout is the policy and critic. Prints one table and appends
it, with machine, date and command, to benchmarks/results.md.
"""

from __future__ import annotations

import argparse
import sys
import tempfile
import time
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from benchmarks.bench_data import append_results  # noqa: E402
from benchmarks.bench_world_model import add_model_args, model_config, parse_args, sync, synthetic_windows  # noqa: E402
from w4rl_core.imagine.env import ImaginedEnv  # noqa: E402
from w4rl_core.models.accel import AccelConfig  # noqa: E402
from w4rl_core.models.policy import CNNConfig, GaussianPolicy, PolicyConfig, SuccessClassifier  # noqa: E402
from w4rl_core.models.success import DetectorConfig, SuccessDetector  # noqa: E402
from w4rl_core.models.world_model import WorldModel  # noqa: E402
from w4rl_core.train.ppo import PPOConfig, refine  # noqa: E402
from w4rl_core.train.tracking import CurveLog  # noqa: E402

# profiles/gpu.yaml's sizes (world model 64 px, 17.9M params; 256 envs x 40 steps).
GPU_ARGS = dict(image_size=64, channels="64,128,128,256", layers_per_block=2, norm_groups=32, n_envs=256,
                horizon=40, minibatches=8, bc_batch=256, compile=True)


class Timed:
    """Wraps a callable; accumulates its wall time, synchronizing the device around each call."""

    def __init__(self, fn, device: torch.device) -> None:
        self.fn, self.device, self.seconds = fn, device, 0.0

    def __call__(self, *args, **kwargs):
        sync(self.device)
        start = time.perf_counter()
        out = self.fn(*args, **kwargs)
        sync(self.device)
        self.seconds += time.perf_counter() - start
        return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--gpu", action="store_true", help="GPU sizes: " + ", ".join(f"{k}={v}" for k, v in GPU_ARGS.items()))
    add_model_args(parser)
    parser.add_argument("--n-envs", type=int, default=16)
    parser.add_argument("--horizon", type=int, default=10)
    parser.add_argument("--minibatches", type=int, default=4)
    parser.add_argument("--bc-batch", type=int, default=64)
    parser.add_argument("--iterations", type=int, default=3, help="timed iterations (after one warm-up)")
    parser.add_argument("--compile", action="store_true", help="accel.compile for the world model")
    args, device = parse_args(parser, GPU_ARGS)
    torch.manual_seed(0)
    wm = WorldModel(model_config(args))
    channels = wm.config.unet.channels
    cnn = CNNConfig(image_size=args.image_size, channels=(16, 32, 64), hidden=256)
    policy = GaussianPolicy(PolicyConfig((-1.0,) * 4, (1.0,) * 4, cnn))
    classifier = SuccessClassifier(CNNConfig(image_size=args.image_size, channels=(16, 32, 64), hidden=128)).to(device)
    classifier.eval().requires_grad_(False)
    windows = synthetic_windows(2000, args.image_size)
    classifier.prob = reward = Timed(classifier.prob, device)
    env = ImaginedEnv(wm, windows, args.n_envs, success_fn=SuccessDetector(classifier, DetectorConfig()),
                      device=device, accel=AccelConfig(compile=args.compile))
    path = env.accel_label
    env._sample.sample = sampler = Timed(env._sample.sample, device)
    cfg = PPOConfig(iterations=args.iterations + 1, n_envs=args.n_envs, horizon=args.horizon,
                    minibatches=args.minibatches, bc_batch=args.bc_batch, eval_every=0, target_kl=0.0,
                    imagined_eval_episodes=0, critic_warmup=0, device=str(device))

    with tempfile.TemporaryDirectory() as tmp:
        # One warm-up iteration (compilation, graph capture, cuDNN autotuning) is run and not counted.
        refine(policy, env, windows.rgb[:512], windows.action[:512], PPOConfig(**{**cfg.__dict__, "iterations": 1}))
        sampler.seconds = reward.seconds = 0.0
        refine(policy, env, windows.rgb[:512], windows.action[:512], cfg, log := CurveLog(Path(tmp) / "run", "iteration"))
        log.finish()
        curves = Path(tmp) / "run/plots/metrics"
        columns = {name: [line.split("\t")[1] for line in (curves / f"{name}.tsv").read_text().splitlines()[1:]]
                   for name in ("imagined_frames_per_s", "update_s")}
        rows = [dict(zip(columns, values)) for values in zip(*columns.values())]
    n = len(rows)
    frames = args.n_envs * args.horizon
    rollout = sum(frames / float(r["imagined_frames_per_s"]) for r in rows) / n
    update = sum(float(r["update_s"]) for r in rows) / n
    wm_s, clf_s = sampler.seconds / n, reward.seconds / n
    act_s = rollout - wm_s - clf_s
    total = rollout + update
    label = (f"{args.image_size}px U-Net {channels}, {args.n_envs} envs × {args.horizon} steps, "
             f"{wm.config.sampler.steps} Euler steps, {path}, {device}")
    table = [
        (f"PPO iteration, {label}", f"{total:.2f} s ({frames / total:,.0f} imagined frames/s overall)"),
        ("  rollout: world model (sample + its uncertainty)", f"{wm_s:.2f} s ({100 * wm_s / total:.0f}%)"),
        ("  rollout: success classifier", f"{clf_s:.3f} s ({100 * clf_s / total:.1f}%)"),
        ("  rollout: policy + critic + bookkeeping", f"{act_s:.3f} s ({100 * act_s / total:.1f}%)"),
        (f"  update: {cfg.epochs} epochs × {cfg.minibatches} minibatches (+ BC term)",
         f"{update:.2f} s ({100 * update / total:.0f}%)"),
    ]
    append_results("bench_ppo", table, args.no_append)


if __name__ == "__main__":
    main()
