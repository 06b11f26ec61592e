#!/usr/bin/env python
"""Is the reward right where refinement uses it? Success-classifier variants, each judged on
(1) real episodes of the deterministic BC policy that no model has seen (detected vs true episode
success) and (2) the like-for-like imagined success of that BC policy vs its real success.

    PYTHONPATH=. .venv/bin/python benchmarks/experiments/reward_calibration.py --root REPO \\
        --episodes 60 --out reward.jsonl

REPO is a repository after `dvc repro refine` of a profile (its data, world model, BC policies).
Variants: which frames train the classifier (real; real + imagined twins of the training episodes)
and which episodes calibrate its detector (real held-out; imagined twins of them). The fresh BC
episodes use evaluation seed 555 (neither the pipeline's evaluation, 100, nor its periodic one, 777).
"""

from __future__ import annotations

import argparse
import functools
import json
import sys
import tempfile
from pathlib import Path

import numpy as np
import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[2]))

from pipelines.params import load_params  # noqa: E402
from pipelines.paths import EPISODES_DIR, MODEL_DIR, bc_dir, store_path  # noqa: E402
from w4rl_core.data.collect import collect  # noqa: E402
from w4rl_core.data.store import EpisodeStore  # noqa: E402
from w4rl_core.data.windows import FrameWindows, load_windows  # noqa: E402
from w4rl_core.imagine.env import ImaginedEnv  # noqa: E402
from w4rl_core.imagine.replay import imagined_twins  # noqa: E402
from w4rl_core.models.accel import FastSampler  # noqa: E402
from w4rl_core.models.policy import frames_from_rgb, load_policy, policy_factory  # noqa: E402
from w4rl_core.models.success import DetectorConfig, SuccessDetector, calibration_report  # noqa: E402
from w4rl_core.models.world_model import load_world_model  # noqa: E402
from w4rl_core.train.ppo import imagined_success  # noqa: E402
from w4rl_core.train.reward import train_classifier  # noqa: E402
from w4rl_core.train.supervised import SupervisedConfig  # noqa: E402

EP = ("expert", "policy")
VARIANTS = {  # name: (train on imagined twins too, calibrate on imagined twins, kinds, class-balanced batches)
    "real/real": (False, False, EP, True),
    "real/imagined": (False, True, EP, True),
    "real+imagined/imagined": (True, True, EP, True),
    "real+imagined/real": (True, False, EP, True),
    "real+random/real": (False, False, ("expert", "policy", "random"), True),
    "real/real unbalanced": (False, False, EP, False),
    "real/imagined unbalanced": (False, True, EP, False),
    "real+imagined/imagined unbalanced": (True, True, EP, False),
}


def fresh_bc_episodes(params, root: Path, task: str, n: int, tmp: Path):
    cfg = params.collect.collect_config(task, "eval", n, seed=555, workers=0)
    factory = functools.partial(policy_factory, path=str(root / bc_dir(task)), deterministic=True)
    collect(cfg, tmp / f"{task}.zarr", policy_factory=factory, progress=False)
    store = EpisodeStore.open(tmp / f"{task}.zarr")
    return [store.episode(i) for i in range(store.n_episodes)]


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--root", required=True)
    ap.add_argument("--episodes", type=int, default=60)
    ap.add_argument("--imagined-episodes", type=int, default=64)
    ap.add_argument("--variants", nargs="+", default=list(VARIANTS))
    ap.add_argument("--tasks", nargs="+", default=None, help="default: the profile's")
    ap.add_argument("--out", required=True)
    args = ap.parse_args()
    root = Path(args.root)
    params = load_params(root / "params.yaml")
    wm_p = params.world_model
    model, _ = load_world_model(root / MODEL_DIR)
    sample = FastSampler(model, model.config.sampler, "cpu", wm_p.accel_config())
    t, horizon = model.config.context_frames, params.episode_horizon
    size = wm_p.image_size

    def windows(task, kinds):
        stores = [str(root / store_path(EPISODES_DIR, task, k)) for k in kinds]
        return load_windows(stores, size, wm_p.val_fraction, wm_p.split_seed)

    with open(args.out, "a") as out, tempfile.TemporaryDirectory() as tmp:
        for task in args.tasks or params.collect.tasks:
            episodes = fresh_bc_episodes(params, root, task, args.episodes, Path(tmp))
            truth = np.array([ep.succeeded for ep in episodes])
            frames = [frames_from_rgb(ep.rgb, size) for ep in episodes]
            bc, _ = load_policy(root / bc_dir(task))
            contexts, _ = windows(task, ("expert", "policy"))
            twins: dict[tuple, FrameWindows] = {}
            for name in args.variants:
                use_twins, calibrate_on_twins, kinds, balanced = VARIANTS[name]
                train, val = windows(task, kinds)
                if use_twins or calibrate_on_twins:
                    key = kinds
                    if key not in twins:
                        twins[key] = (imagined_twins(sample, t, train, horizon), imagined_twins(sample, t, val, horizon))
                    twin_train, twin_val = twins[key]
                if use_twins:
                    train = FrameWindows.concat([train, twin_train])
                clf, report = train_classifier(params.reward_cnn(), SupervisedConfig(**params.reward.train), train, val,
                                               calibrate_on=twin_val if calibrate_on_twins else None, balanced=balanced)
                det = SuccessDetector(clf, DetectorConfig(**report["detector"]))
                with torch.no_grad():
                    probs = [clf.prob(f).numpy() for f in frames]
                real = calibration_report(probs, truth, det.config)
                env = ImaginedEnv(model, contexts, 32, success_fn=det, accel=wm_p.accel_config())
                imagined = float(np.mean(imagined_success(bc, env, args.imagined_episodes, horizon)))
                row = {"task": task, "variant": name, "detector": report["detector"],
                       "real_true": real["true_success"], "real_detected": real["classifier_success"],
                       "real_fp": real["false_positive_episodes"], "real_fn": real["false_negative_episodes"],
                       "imagined_bc": imagined, "imagined_minus_real": imagined - real["true_success"],
                       "val_f1": report["val"]["f1"], "episodes": len(truth)}
                out.write(json.dumps(row) + "\n")
                out.flush()
                print(json.dumps(row), flush=True)


if __name__ == "__main__":
    main()
