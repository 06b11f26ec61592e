"""PPO inside the frozen world model (World4RL stage 2), one readable loop in the style of cleanrl.

Rollouts are imagined: a ~ pi(x), the world model generates the next frame, the frozen success
classifier gives the sparse reward. Neither model changes (checked). Guards against exploiting the
learned simulator (DESIGN.md §3: plain PPO raised imagined success 0.57 -> 0.94 while real success
fell 0.53 -> 0.34): sigma <= e^0 (the policy's log_std_max), a BC term on expert data anchoring the
policy to its start, periodic evaluation on the real robot (reported, not used for selection unless
asked), and world-model disagreement between two sampler seeds logged along the rollouts.
"""

from __future__ import annotations

import copy
import csv
import hashlib
import os
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch

from w4rl_core.atomic import atomic_path
from w4rl_core.imagine.env import ImaginedEnv
from w4rl_core.models.policy import CNNHead, GaussianPolicy


@dataclass(frozen=True)
class PPOConfig:
    iterations: int = 10  # rollout + update cycles
    n_envs: int = 16  # imagined envs per rollout
    horizon: int = 10  # imagined steps per rollout (each env restarts from a real context)
    epochs: int = 4  # passes over each rollout
    minibatches: int = 4
    lr: float = 1e-4
    gamma: float = 0.99
    gae_lambda: float = 0.95
    clip_coef: float = 0.2
    vf_coef: float = 0.5
    ent_coef: float = 0.0
    bc_coef: float = 0.05  # weight of the expert NLL term that anchors the policy to BC
    bc_batch: int = 64
    max_grad_norm: float = 0.5
    target_kl: float = 0.05  # stop an update early past this approx-KL (0 = never)
    eval_every: int = 5  # real-robot evaluation every N iterations (0 = never)
    select_by_real: bool = False  # keep the checkpoint with the best periodic real success
    disagreement_envs: int = 4  # envs whose next frame is also sampled with a second seed
    seed: int = 0
    device: str = "auto"

    def __post_init__(self) -> None:
        if min(self.iterations, self.n_envs, self.horizon, self.epochs, self.minibatches) < 1:
            raise ValueError("iterations, n_envs, horizon, epochs, minibatches must be >= 1")
        if (self.n_envs * self.horizon) % self.minibatches:
            raise ValueError("n_envs * horizon must be divisible by minibatches")
        if not 0 <= self.gamma <= 1 or not 0 <= self.gae_lambda <= 1 or self.clip_coef <= 0:
            raise ValueError("need gamma, gae_lambda in [0, 1] and clip_coef > 0")
        if self.bc_coef < 0 or self.eval_every < 0 or self.disagreement_envs < 0:
            raise ValueError("bc_coef, eval_every, disagreement_envs must be >= 0")


def compute_gae(
    rewards: torch.Tensor, values: torch.Tensor, next_value: torch.Tensor, dones: torch.Tensor,
    gamma: float, lam: float,
) -> tuple[torch.Tensor, torch.Tensor]:
    """GAE(lambda) over (T, N) tensors. dones[t] = 1 if the episode terminated after step t."""
    steps = rewards.shape[0]
    advantages = torch.zeros_like(rewards)
    last = torch.zeros_like(next_value)
    for t in reversed(range(steps)):
        nxt = next_value if t == steps - 1 else values[t + 1]
        not_done = 1.0 - dones[t]
        delta = rewards[t] + gamma * nxt * not_done - values[t]
        last = delta + gamma * lam * not_done * last
        advantages[t] = last
    return advantages, advantages + values


def clipped_surrogate(
    new_logprob: torch.Tensor, old_logprob: torch.Tensor, advantages: torch.Tensor, clip: float
) -> tuple[torch.Tensor, dict[str, float]]:
    """PPO's clipped policy loss and its diagnostics (approx-KL as in cleanrl: (r-1) - log r)."""
    log_ratio = new_logprob - old_logprob
    ratio = log_ratio.exp()
    loss = torch.max(-advantages * ratio, -advantages * ratio.clamp(1 - clip, 1 + clip)).mean()
    with torch.no_grad():
        approx_kl = float(((ratio - 1) - log_ratio).mean())
        clipfrac = float(((ratio - 1).abs() > clip).float().mean())
    return loss, {"approx_kl": approx_kl, "clipfrac": clipfrac}


def explained_variance(pred: torch.Tensor, target: torch.Tensor) -> float:
    var = target.var()
    return float("nan") if var == 0 else float(1 - (target - pred).var() / var)


def _sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def parameter_fingerprint(*modules: torch.nn.Module) -> str:
    h = hashlib.sha256()
    for m in modules:
        for name, p in sorted(m.state_dict().items()):
            h.update(name.encode())
            h.update(p.detach().cpu().contiguous().numpy().tobytes())
    return h.hexdigest()


def refine(
    policy: GaussianPolicy,
    env: ImaginedEnv,
    expert_frames: torch.Tensor,
    expert_actions: torch.Tensor,
    config: PPOConfig,
    curve_path: str | os.PathLike[str],
    real_eval: Callable[[GaussianPolicy, int], float] | None = None,
    frozen: tuple[torch.nn.Module, ...] = (),
) -> tuple[GaussianPolicy, dict[str, Any]]:
    """PPO on `env` from `policy` (BC). expert_* (uint8 frames (M,3,H,W), actions (M,A)) feed the BC term.

    `real_eval(policy, iteration)` returns the real success rate (run every `eval_every` iterations).
    `frozen` modules (world model, classifier) are checked to be unchanged at the end.
    """
    device = env.device
    torch.manual_seed(config.seed)
    frozen_before = parameter_fingerprint(*frozen)
    policy = policy.to(device).train()
    critic = CNNHead(policy.config.cnn, 1).to(device)
    opt = torch.optim.Adam([*policy.parameters(), *critic.parameters()], lr=config.lr, eps=1e-5)
    gen = torch.Generator().manual_seed(config.seed)
    n, steps, a_dim = config.n_envs, config.horizon, policy.action_dim
    rows: list[dict[str, Any]] = []
    best: tuple[float, dict] | None = None
    real_episodes = 0
    started = time.perf_counter()

    for it in range(1, config.iterations + 1):
        # ---------------- imagined rollout
        obs_buf = torch.zeros(steps, n, *env.observation_shape, device=device)
        u_buf = torch.zeros(steps, n, a_dim, device=device)
        logp_buf, rew_buf, val_buf = (torch.zeros(steps, n, device=device) for _ in range(3))
        disagreement = []
        obs = env.reset(seed=config.seed * 100_003 + it)
        t0 = time.perf_counter()
        policy.eval()
        with torch.no_grad():
            for t in range(steps):
                dist = policy.distribution(obs)
                u = dist.sample()
                obs_buf[t], u_buf[t] = obs, u
                logp_buf[t] = dist.log_prob(u).sum(-1)
                val_buf[t] = critic(obs).squeeze(-1)
                obs, info = env.step(policy.denormalize(u), spread_envs=config.disagreement_envs)
                rew_buf[t] = info["success"].float()
                if "disagreement" in info:  # kept on the device: no host sync inside the rollout
                    disagreement.append(info["disagreement"])
            next_value = critic(obs).squeeze(-1)
        _sync(device)  # GPU work is asynchronous: time what ran, not what was queued
        imagine_s = time.perf_counter() - t0
        # Fixed-horizon rollouts end by truncation, not termination: bootstrap from V(last frame).
        adv, ret = compute_gae(rew_buf, val_buf, next_value, torch.zeros_like(rew_buf), config.gamma,
                               config.gae_lambda)

        # ---------------- update
        policy.train()
        b_obs, b_u, b_logp = obs_buf.flatten(0, 1), u_buf.flatten(0, 1), logp_buf.flatten(0, 1)
        b_adv, b_ret, b_val = adv.flatten(), ret.flatten(), val_buf.flatten()
        size = len(b_obs)
        mb = size // config.minibatches
        stats: dict[str, list[float]] = {k: [] for k in ("pg_loss", "v_loss", "entropy", "bc_nll", "approx_kl",
                                                         "clipfrac")}
        t1 = time.perf_counter()
        for _ in range(config.epochs):
            perm = torch.randperm(size, generator=gen)
            for start in range(0, size, mb):
                idx = perm[start : start + mb].to(device)
                dist = policy.distribution(b_obs[idx])
                new_logp = dist.log_prob(b_u[idx]).sum(-1)
                a = b_adv[idx]
                a = (a - a.mean()) / (a.std() + 1e-8) if len(a) > 1 else a
                pg_loss, diag = clipped_surrogate(new_logp, b_logp[idx], a, config.clip_coef)
                v_loss = 0.5 * ((critic(b_obs[idx]).squeeze(-1) - b_ret[idx]) ** 2).mean()
                entropy = dist.entropy().sum(-1).mean()
                loss = pg_loss + config.vf_coef * v_loss - config.ent_coef * entropy
                bc = torch.zeros((), device=device)
                if config.bc_coef > 0 and len(expert_frames):
                    j = torch.randint(len(expert_frames), (config.bc_batch,), generator=gen)
                    frames = expert_frames[j].to(device).float() / 127.5 - 1
                    bc = policy.nll(frames, expert_actions[j].to(device))
                    loss = loss + config.bc_coef * bc
                opt.zero_grad(set_to_none=True)
                loss.backward()
                torch.nn.utils.clip_grad_norm_([*policy.parameters(), *critic.parameters()], config.max_grad_norm)
                opt.step()
                for k, v in (("pg_loss", pg_loss), ("v_loss", v_loss), ("entropy", entropy), ("bc_nll", bc)):
                    stats[k].append(float(v.detach()))
                stats["approx_kl"].append(diag["approx_kl"])
                stats["clipfrac"].append(diag["clipfrac"])
            if config.target_kl and np.mean(stats["approx_kl"][-config.minibatches:]) > config.target_kl:
                break
        _sync(device)
        update_s = time.perf_counter() - t1

        row: dict[str, Any] = {
            "iteration": it,
            "imagined_success": float((rew_buf.sum(0) > 0).float().mean()),  # per imagined episode
            "imagined_reward": float(rew_buf.sum(0).mean()),
            **{k: float(np.mean(v)) for k, v in stats.items()},
            "explained_variance": explained_variance(b_val, b_ret),
            "policy_std": float(policy.distribution(b_obs[:64]).stddev.mean().detach()),
            "wm_disagreement": float(torch.stack(disagreement).mean()) if disagreement else None,
            "imagined_frames_per_s": n * steps / imagine_s,
            "update_s": update_s,
            "real_success": None,
        }
        if real_eval is not None and config.eval_every and (it % config.eval_every == 0 or it == config.iterations):
            policy.eval()
            row["real_success"] = real_eval(policy, it)
            real_episodes += 1
            if config.select_by_real and (best is None or row["real_success"] > best[0]):
                best = (row["real_success"], copy.deepcopy(policy.state_dict()))
        rows.append(row)

    if best is not None:
        policy.load_state_dict(best[1])
    if parameter_fingerprint(*frozen) != frozen_before:
        raise RuntimeError("a frozen model (world model or classifier) changed during refinement")
    with atomic_path(curve_path) as tmp:
        with open(tmp, "w", newline="") as f:
            writer = csv.DictWriter(f, fieldnames=list(rows[0]))
            writer.writeheader()
            writer.writerows(rows)
    summary = {
        "iterations": config.iterations,
        "imagined_success_start": rows[0]["imagined_success"],
        "imagined_success_end": rows[-1]["imagined_success"],
        "real_success_periodic": [(r["iteration"], r["real_success"]) for r in rows if r["real_success"] is not None],
        "real_evaluations": real_episodes,
        "selected_by_real": best is not None,
        "seconds": time.perf_counter() - started,
    }
    return policy.eval().cpu(), summary
