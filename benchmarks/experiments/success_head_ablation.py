#!/usr/bin/env python
"""Lever 1 of issue 21, measured before any PPO: a success head on the frozen world model's own
features against the pixel classifier the pipeline uses, on the quantities the trust check and
refinement depend on.

    cd RUN && PYTHONPATH=/path/to/w4rl /path/to/.venv/bin/python \\
        /path/to/w4rl/benchmarks/experiments/success_head_ablation.py --out head.json

RUN is a repository after `dvc repro` of a profile up to train_reward (its data, world model, BC
policies, classifiers). Per task:

- the head: the frozen U-Net evaluated on (T context frames, T actions, the next frame at the
  sampler's smallest noise level); its mid-block activations (the lowest resolution, all
  positions) go through a small MLP to the probability that the next frame is a success. Trained
  like the classifier: the same training episodes (reward.kinds, the world model's split), class-
  balanced batches, BCE, the same steps and learning rate; only the MLP learns.
- its detector (threshold, persistence) is calibrated exactly as the classifier's (same function,
  the same held-out calibration half, on its imagined twins when reward.calibrate_on: imagined);
- judged on what no model or calibration saw: (1) the real frames of the check half's BC
  rollouts (detected vs true episode success); (2) the trust check's quantity: BC rolled in
  imagination from the starts of every held-out BC rollout, samples_per_start imagined episodes
  each, the SAME imagined frames scored by both detectors (paired), against the recorded success;
  (3) episode AUROC of the max probability on the real and on the imagined episodes.
Nothing here chooses a hyperparameter; the head's settings are fixed below before any run.

The rule, written before the first run: the head replaces the classifier (as refinement's reward and
the trust check's detector) only if on BOTH proof tasks (profiles/cpu.yaml) its |imagined - real| on
the trust-check episodes is smaller than the classifier's and its episode accuracy on the real frames
of the check half is at least the classifier's. Other tasks are reported, never decide.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from sklearn.metrics import roc_auc_score

sys.path.insert(0, str(Path(__file__).resolve().parents[2]))

from pipelines.params import load_params  # noqa: E402
from pipelines.paths import bc_dir, reward_dir  # noqa: E402
from pipelines.stages.policy import _imagined_twins, _windows  # noqa: E402
from pipelines.stages.world_model import load_fitting_world_model  # noqa: E402
from w4rl_core.data.windows import FrameWindows  # noqa: E402
from w4rl_core.imagine.env import ImaginedEnv  # noqa: E402
from w4rl_core.models.policy import load_policy  # noqa: E402
from w4rl_core.models.success import calibrate, calibration_report, episode_success, load_success_detector  # noqa: E402
from w4rl_core.train.reward import frame_probs, split_for_check  # noqa: E402
from w4rl_core.train.trust import wilson  # noqa: E402
from w4rl_core.train.world_model import resolve_device  # noqa: E402

HIDDEN = 128  # the classifier's head width in the CPU profile
FEATURE_SIGMA = 0.002  # the sampler's smallest noise level: the frame as the model sees it when done


class UNetFeatures:
    """The frozen U-Net's mid-block output for (context, actions, next frame), flattened."""

    def __init__(self, model) -> None:
        self.model, self.denoiser = model, model.denoiser
        self._out: torch.Tensor | None = None
        self.denoiser.net.unet.mid_block.register_forward_hook(lambda _m, _i, out: setattr(self, "_out", out))

    @torch.no_grad()
    def __call__(self, context: torch.Tensor, actions: torch.Tensor, nxt: torch.Tensor) -> torch.Tensor:
        sigma = torch.full((len(nxt),), FEATURE_SIGMA, device=nxt.device)
        self.denoiser.denoise(nxt, sigma, context, self.model.encode_actions(actions))
        return self._out.float().flatten(1)


def windows_at(w: FrameWindows, t: int) -> np.ndarray:
    """Indices j (into w's frames) of every frame with T frames before it in its episode."""
    return np.concatenate([np.arange(s + t, e) for s, e in zip(w.episode_starts, w.episode_ends) if e - s > t]
                          or [np.zeros(0, np.int64)]).astype(np.int64)


def batch_of(w: FrameWindows, j: np.ndarray, t: int, device) -> tuple[torch.Tensor, ...]:
    frames, actions, success = w.gather(j - t, t + 1, device)
    return frames[:, :t], actions[:, :t], frames[:, t], success[:, t]


def train_head(feats: UNetFeatures, train: FrameWindows, t: int, steps: int, batch: int, lr: float, seed: int,
               device) -> torch.nn.Module:
    js = windows_at(train, t)
    labels = train.success[torch.as_tensor(js)].bool().numpy()
    pos, neg = js[labels], js[~labels]
    gen = np.random.default_rng(seed)
    torch.manual_seed(seed)
    dim = feats(*batch_of(train, js[:2], t, device)[:3]).shape[1]
    head = torch.nn.Sequential(torch.nn.Linear(dim, HIDDEN), torch.nn.SiLU(), torch.nn.Linear(HIDDEN, 1)).to(device)
    opt = torch.optim.AdamW(head.parameters(), lr=lr, weight_decay=1e-4)
    for _ in range(steps):
        pick = np.concatenate([gen.choice(pos, batch // 2), gen.choice(neg, batch - batch // 2)])
        ctx, act, nxt, y = batch_of(train, pick, t, device)
        loss = F.binary_cross_entropy_with_logits(head(feats(ctx, act, nxt)).squeeze(-1), y.float())
        opt.zero_grad()
        loss.backward()
        opt.step()
    return head.eval()


@torch.no_grad()
def head_probs(feats: UNetFeatures, head, w: FrameWindows, t: int, device) -> list[np.ndarray]:
    """Per episode of w, the head's probability for each frame (0 for the first T: no context)."""
    out = []
    for s, e in zip(w.episode_starts, w.episode_ends):
        p = np.zeros(e - s, np.float32)
        js = np.arange(s + t, e)
        for i in range(0, len(js), 256):
            ctx, act, nxt, _ = batch_of(w, js[i:i + 256], t, device)
            p[t + i:t + i + len(ctx)] = torch.sigmoid(head(feats(ctx, act, nxt)).squeeze(-1)).cpu().numpy()
        out.append(p)
    return out


def per_episode(w: FrameWindows, probs: torch.Tensor) -> list[np.ndarray]:
    return [probs[s:e].numpy() for s, e in zip(w.episode_starts, w.episode_ends)]


@torch.no_grad()
def imagine_bc(policy, env: ImaginedEnv, n: int, horizon: int, deterministic: bool, seed: int = 0):
    """BC in imagination from the env's starts in order (as the trust check rolls it), n episodes:
    per step the context, actions and generated frame, so that two detectors score the same frames."""
    policy.eval()
    gen = torch.Generator(device=env.device).manual_seed(seed)
    rows = []
    for b in range(int(np.ceil(n / env.n_envs))):
        starts = (np.arange(env.n_envs) + b * env.n_envs) % env.n_starts
        obs = env.reset(seed=seed + b, starts=starts)
        steps = []
        for _ in range(horizon):
            dist = policy.distribution(obs)
            u = dist.mean if deterministic else dist.mean + dist.stddev * torch.randn(
                dist.mean.shape, device=env.device, generator=gen)
            action = policy.denormalize(u)
            # What the model is conditioned on in this step (ImaginedEnv.step: the T-1 previous
            # actions and this one, clipped to the bounds), read before the env moves on.
            ctx = env._frames.clone()
            used = torch.cat([env._actions, torch.maximum(torch.minimum(action, env.action_high),
                                                          env.action_low)[:, None]], dim=1)
            obs, _ = env.step(action)
            steps.append((ctx, used, obs.clone()))
        rows.append((starts, steps))
    return rows


def auroc(scores: list[float], truth: list[bool]) -> float | None:
    return float(roc_auc_score(truth, scores)) if 0 < sum(truth) < len(truth) else None


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--out", required=True)
    ap.add_argument("--tasks", default=None, help="comma-separated; default: collect.tasks")
    ap.add_argument("--head-steps", type=int, default=None, help="default: reward.train.steps (fewer: a smoke check of this script)")
    args = ap.parse_args()
    params = load_params("params.yaml")
    tasks = args.tasks.split(",") if args.tasks else list(params.collect.tasks)
    t = params.world_model.context_frames
    horizon = params.episode_horizon
    trust = params.refine.trust_config()
    train_cfg = params.reward.train
    results = {"command": " ".join(sys.argv), "date": time.strftime("%Y-%m-%d"), "tasks": {}}
    device = resolve_device("auto")
    model, _ = load_fitting_world_model(params, device)
    imagine = _imagined_twins(params)
    feats = UNetFeatures(model)  # one forward hook on the shared model, for every task
    for task in tasks:
        started = time.time()
        train, val = _windows(params, task, params.reward.kinds)
        calibration, check = split_for_check(val)
        head = train_head(feats, train, t, args.head_steps or int(train_cfg.get("steps", 1500)), int(train_cfg.get("batch_size", 64)),
                          float(train_cfg.get("lr", 3e-4)), int(train_cfg.get("seed", 0)), device)
        cal = imagine(calibration) if params.reward.calibrate_on == "imagined" else calibration
        head_detector, _ = calibrate(head_probs(feats, head, cal, t, device), cal.succeeded())
        clf = load_success_detector(reward_dir(task), device)

        # (1) real frames of the check half's BC rollouts.
        bc_check = check.episodes([i for i, k in enumerate(check.episode_kind) if k == "policy"])
        truth_check = bc_check.succeeded()
        real_clf = per_episode(bc_check, frame_probs(clf.classifier, bc_check, device))
        real_head = head_probs(feats, head, bc_check, t, device)

        # (2) the trust check's quantity, both detectors on the same imagined frames.
        _, held = _windows(params, task, ("policy",))
        held = held.episodes([i for i, (s, e) in enumerate(zip(held.episode_starts, held.episode_ends)) if e - s >= t])
        real = [bool(x) for x in held.succeeded()]
        policy, _ = load_policy(bc_dir(task), task=task)
        policy = policy.to(device)
        n = len(real) * trust.samples_per_start
        env = ImaginedEnv(model, held, min(params.refine.ppo_config(horizon=horizon, seed=0).n_envs, n),
                          device=device, accel=params.world_model.accel_config())
        rows = imagine_bc(policy, env, n, horizon, params.policy.rollout_deterministic)
        im_clf, im_head, im_truth = [], [], []
        for starts, steps in rows:
            with torch.no_grad():
                p_clf = torch.stack([clf.classifier.prob(nxt) for _, _, nxt in steps], 1).cpu().numpy()
                p_head = torch.stack([torch.sigmoid(head(feats(ctx, act, nxt)).squeeze(-1))
                                      for ctx, act, nxt in steps], 1).cpu().numpy()
            im_clf += list(p_clf)
            im_head += list(p_head)
            im_truth += [real[s] for s in starts]
        im_clf, im_head, im_truth = im_clf[:n], im_head[:n], im_truth[:n]

        def verdict(probs, detector):
            hits = episode_success(np.stack(probs), detector)
            return {"imagined": float(hits.mean()), "real": float(np.mean(real)), "gap": float(hits.mean() - np.mean(real)),
                    "episode_accuracy_vs_recorded_start": float((hits == np.array(im_truth)).mean())}

        results["tasks"][task] = {
            "held_out_bc_rollouts": len(real), "imagined_episodes": n, "real_ci95": wilson(sum(real), len(real)),
            "detectors": {"classifier": {"threshold": clf.config.threshold, "persistence": clf.config.persistence},
                          "head": {"threshold": head_detector.threshold, "persistence": head_detector.persistence}},
            "real_frames_check_half_bc": {
                "classifier": calibration_report(real_clf, truth_check, clf.config),
                "head": calibration_report(real_head, truth_check, head_detector),
                "auroc_classifier": auroc([float(p.max()) for p in real_clf], list(truth_check)),
                "auroc_head": auroc([float(p.max()) for p in real_head], list(truth_check))},
            "trust_check_imagined": {
                "classifier": verdict(im_clf, clf.config), "head": verdict(im_head, head_detector),
                "auroc_classifier": auroc([float(p.max()) for p in im_clf], im_truth),
                "auroc_head": auroc([float(p.max()) for p in im_head], im_truth)},
            "seconds": round(time.time() - started, 1),
        }
        print(json.dumps({task: results["tasks"][task]}, indent=1), flush=True)
    Path(args.out).write_text(json.dumps(results, indent=1))


if __name__ == "__main__":
    main()
