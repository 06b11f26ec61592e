"""Which Meta-World tasks does BC solve 20-70% of the time at the CPU profile's data scale?

For each task: collect `--experts` scripted-expert episodes, fit the BC policy with the given
steps, and evaluate it deterministically on `--episodes` simulator episodes (the `evaluate` seeds).
Prints one row per task; used to pick the CPU profile's tasks (docs/results.md). Not a test.
"""

from __future__ import annotations

import argparse
import json
import tempfile
import time
from pathlib import Path

import numpy as np

from w4rl_core.data.collect import CollectConfig, collect
from w4rl_core.data.windows import load_windows
from w4rl_core.eval.policy_eval import evaluate_policy
from w4rl_core.models.policy import CNNConfig, PolicyConfig, save_policy
from w4rl_core.train.bc import train_bc
from w4rl_core.train.supervised import SupervisedConfig


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--tasks", nargs="+", required=True)
    ap.add_argument("--experts", type=int, default=40)
    ap.add_argument("--episodes", type=int, default=30)
    ap.add_argument("--bc-steps", type=int, default=1500)
    ap.add_argument("--image-size", type=int, default=32)
    ap.add_argument("--crop", type=float, nargs=3, default=(0.14, 0.1, 0.75))
    ap.add_argument("--val-fraction", type=float, default=0.0, help="held out of BC's demos (the pipeline's split)")
    ap.add_argument("--successful-only", action="store_true", help="clone only the successful demos")
    ap.add_argument("--out", default="")
    args = ap.parse_args()
    rows = []
    for task in args.tasks:
        t0 = time.time()
        with tempfile.TemporaryDirectory() as tmp:
            base = dict(task=task, episode_len=50, image_size=64, camera="corner2", crop=tuple(args.crop),
                        action_repeat=2, workers=0)
            demo = collect(CollectConfig(kind="expert", episodes=args.experts, seed=0, **base),
                           Path(tmp) / "expert.zarr", progress=False)
            train, val = load_windows([str(Path(tmp) / "expert.zarr")], args.image_size, args.val_fraction, 0)
            if args.successful_only:
                train = train.episodes(np.flatnonzero(train.succeeded()))
            cfg = PolicyConfig(action_low=train.action_low, action_high=train.action_high,
                               cnn=CNNConfig(image_size=args.image_size, channels=(16, 32, 64), hidden=256))
            policy, _ = train_bc(cfg, SupervisedConfig(steps=args.bc_steps, batch_size=64, lr=3e-4), train, val)
            save_policy(Path(tmp) / "bc", policy)
            ev = evaluate_policy(Path(tmp) / "bc", CollectConfig(kind="eval", episodes=args.episodes,
                                                                         seed=100, **base),
                                        Path(tmp) / "eval.zarr")
        row = {"task": task, "demos_used": train.n_episodes, "expert_success": demo["success_rate"],
               "bc_success": ev["success_rate"],
               "bc_ci95": ev["ci95"], "seconds": round(time.time() - t0)}
        print(json.dumps(row), flush=True)
        rows.append(row)
    if args.out:
        Path(args.out).write_text(json.dumps(rows, indent=1))


if __name__ == "__main__":
    main()
