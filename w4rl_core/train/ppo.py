"""PPO inside the frozen world model (World4RL stage 2), one readable loop in the style of cleanrl.

`refine` reads as the algorithm: collect_rollout -> rewards and GAE -> (first iteration)
warm_up_critic -> ppo_update -> log, optional real check, checkpoint. Resume, checkpointing and the
summary are their own functions (_resume, _save, _summary); the whole state is a Learner (networks,
optimizer, minibatch generator) and a RunState (curve, measurements, best candidate).

Rollouts are imagined episodes: each starts where a recorded episode of the task starts and runs the
rest of a real episode's length, a ~ pi(x), the world model generates the next frame, the frozen,
calibrated success detector gives the sparse reward. Neither model changes (checked).

With `keyframe_horizon` > 0 (issue 21, lever 2) rollouts are short instead: keyframe_horizon steps
from recorded states taken throughout the episodes (w4rl_core/imagine/keyframes.py), only as far as
imagination still agrees with reality, each ended at its first success and bootstrapped at the cut by
a critic fitted beforehand on the real Monte-Carlo success returns of BC's recorded rollouts.

Guards against exploiting the learned simulator (docs/design.md#exploitation-finding: plain PPO raised imagined success
0.57 -> 0.94 while real success fell 0.53 -> 0.34):
- sigma <= e^0 (the policy's log_std_max) and a BC term on expert data anchoring the policy;
- the world model's own uncertainty (sample vs its mean prediction, ImaginedEnv) above what the BC
  policy meets in imagination is penalised in the reward (MOPO-style; `uncertainty_coef`);
- the critic is fitted to the first rollout's returns before the first policy update, so the first
  updates do not follow advantages of an untrained critic (approx-KL 0.14, clip fraction 0.49 seen);
- the like-for-like imagined success (deterministic policy, real starts, success anywhere) of the
  BC policy and of the result (reported); periodic real evaluations only in the opt-in
  `select_by_real` mode, where the BC policy itself, evaluated on the same real episodes before the
  first update, is one of the candidates (a seed whose refinement never beats it returns BC);
- before any of this, the pipeline's trust check (w4rl_core/train/trust.py) decides whether
  refinement starts at all (`returned_bc` when it does not).
Actions are clipped to the bounds before the env sees them; with `action_logprob: clipped` the
log-probability is that of the clipped action under the Gaussian (the tails' mass at the bounds),
so the ratio PPO optimises is that of what was executed.
"""

from __future__ import annotations

import copy
import hashlib
import json
import math
import os
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from typing import Any

import numpy as np
import torch
from torch.distributions import Normal

from w4rl_core.imagine.env import ImaginedEnv
from w4rl_core.imagine.keyframes import Keyframes, keyframes, monte_carlo_values
from w4rl_core.models.policy import CNNHead, GaussianPolicy
from w4rl_core.progress import progress_bar
from w4rl_core.train.configs import PPOConfig  # noqa: F401 (re-exported; torch-free home)
from w4rl_core.train.checkpoint import (load_optimizer, load_state, optimizer_tensors, parameter_fingerprint,
                                        save_state)
from w4rl_core.train.tracking import CurveLog


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


def action_log_prob(dist: Normal, u: torch.Tensor, mode: str) -> torch.Tensor:
    """Log-probability (summed over action dims) of normalized actions u.

    clipped: u is the executed action, clipped to [-1, 1]; at a bound its probability is the
    Gaussian's mass beyond it (log Phi), inside the density. gaussian: the plain density.
    """
    if mode == "gaussian":
        return dist.log_prob(u).sum(-1)
    mean, std = dist.mean, dist.stddev
    low = torch.special.log_ndtr((-1 - mean) / std)
    high = torch.special.log_ndtr((mean - 1) / std)
    inside = dist.log_prob(u)
    return torch.where(u <= -1, low, torch.where(u >= 1, high, inside)).sum(-1)


def explained_variance(pred: torch.Tensor, target: torch.Tensor) -> float:
    var = target.var()
    return float("nan") if var == 0 else float(1 - (target - pred).var() / var)


def _sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


@torch.no_grad()
def imagined_success(policy: GaussianPolicy, env: ImaginedEnv, episodes: int, horizon: int, seed: int = 0,
                     deterministic: bool = True) -> list[bool]:
    """Success per imagined episode, measured as real success is: episodes from the recorded starts
    (walked through in order, the same ones for every policy), the policy's mean action (as the
    evaluation runs it), success anywhere in the episode."""
    policy.eval()
    out: list[bool] = []
    gen = torch.Generator(device=env.device).manual_seed(seed)
    for batch in range(math.ceil(episodes / env.n_envs)):
        starts = (np.arange(env.n_envs) + batch * env.n_envs) % env.n_starts
        obs = env.reset(seed=seed + batch, starts=starts)
        hit = torch.zeros(env.n_envs, dtype=torch.bool, device=env.device)
        for _ in range(horizon):
            dist = policy.distribution(obs)
            u = dist.mean if deterministic else dist.mean + dist.stddev * torch.randn(
                dist.mean.shape, device=env.device, generator=gen)
            obs, info = env.step(policy.denormalize(u))
            hit |= info["success"]
        out += hit.cpu().tolist()
    return out[:episodes]


def _prefixed(tensors: dict[str, torch.Tensor], prefix: str) -> dict[str, torch.Tensor]:
    return {k[len(prefix):]: v for k, v in tensors.items() if k.startswith(prefix)}


def _run_fingerprint(config: PPOConfig, policy: GaussianPolicy, frozen: str, env: ImaginedEnv,
                     expert_frames: torch.Tensor, expert_actions: torch.Tensor, real_eval_id: str) -> str:
    """What a refinement checkpoint belongs to: the config, the starting policy, the frozen models,
    the imagined starts, the expert data of the BC term and what the real checks run (their scenes,
    episodes and seed: a best checkpoint chosen on other scenes must not come back). Any change
    starts afresh."""
    h = hashlib.sha256(json.dumps(asdict(config), sort_keys=True).encode())
    h.update(real_eval_id.encode())
    h.update(parameter_fingerprint(policy).encode())
    h.update(frozen.encode())
    h.update(json.dumps([env.n_starts, env.n_envs, list(expert_frames.shape)]).encode())
    h.update(expert_actions.detach().cpu().contiguous().numpy().tobytes())
    return h.hexdigest()[:16]


@dataclass
class Rollout:
    """One imagined rollout: (steps, n_envs, ...) tensors, whole episodes from recorded starts or
    short ones from keyframes."""

    obs: torch.Tensor
    u: torch.Tensor  # normalized actions, as executed (clipped with action_logprob: clipped)
    logp: torch.Tensor
    success: torch.Tensor  # the detector's success per step (the sparse reward)
    uncertainty: torch.Tensor  # the world model's own, per step (ImaginedEnv)
    value: torch.Tensor
    elapsed: torch.Tensor  # (steps, n, 1) fraction of a real episode's horizon elapsed: the critic's clock
    dones: torch.Tensor  # 1 where the imagined episode ended after the step (no bootstrap past it)
    alive: torch.Tensor  # 1 on steps of episodes that had not ended before them: the steps PPO learns from
    next_value: torch.Tensor  # (n,) the critic at the cut, where the episode goes on past the rollout
    seconds: float


class Learner:
    """What PPO updates: the policy, its critic (frame + fraction of the episode elapsed), their
    optimizer and the generator of minibatches and BC batches."""

    def __init__(self, policy: GaussianPolicy, config: PPOConfig, device: torch.device) -> None:
        self.policy = policy.to(device)
        self.critic = CNNHead(policy.config.cnn, 1, extra=1).to(device)
        self.opt = torch.optim.Adam([*self.policy.parameters(), *self.critic.parameters()], lr=config.lr, eps=1e-5)
        self.gen = torch.Generator().manual_seed(config.seed)

    def value(self, obs: torch.Tensor, t: torch.Tensor) -> torch.Tensor:
        return self.critic(obs, t).squeeze(-1)

    def parameters(self) -> list[torch.nn.Parameter]:
        return [*self.policy.parameters(), *self.critic.parameters()]


@dataclass
class RunState:
    """What a refinement has decided and measured so far (checkpointed with the learner)."""

    iteration: int = 0
    rows: list[dict[str, Any]] = field(default_factory=list)
    imagined_bc: list[bool] = field(default_factory=list)
    real_episodes: int = 0  # real checks run (each refine.eval_episodes episodes)
    real_bc: float | None = None
    uncertainty_ref: float | None = None
    best: tuple[float, dict[str, torch.Tensor], int] | None = None  # (real success, weights, iteration)
    critic_fit: dict[str, Any] | None = None  # fit_critic_to_real's measurements (keyframe starts)


@torch.no_grad()
def collect_rollout(learner: Learner, env: ImaginedEnv, config: PPOConfig, iteration: int,
                    starts: Keyframes | None = None) -> Rollout:
    """n_envs imagined episodes with the current (sampling) policy: whole ones (`horizon` steps from
    the recorded starts) or, with `starts`, keyframe_horizon steps from keyframes drawn uniformly,
    each ended at its first success and bootstrapped at the cut unless a real episode ends there."""
    steps, n, device, policy = config.rollout_steps, config.n_envs, env.device, learner.policy
    obs_buf = torch.zeros(steps, n, *env.observation_shape, device=device)
    u_buf = torch.zeros(steps, n, policy.action_dim, device=device)
    logp_buf, succ_buf, unc_buf, val_buf = (torch.zeros(steps, n, device=device) for _ in range(4))
    seed = config.seed * 100_003 + iteration
    if starts is None:
        obs = env.reset(seed=seed)
        position = torch.zeros(n, device=device)
    else:
        pick = np.random.default_rng(seed).integers(len(starts), size=n)
        obs = env.reset_windows(seed, starts.window_starts[pick])
        position = torch.as_tensor(starts.positions[pick], dtype=torch.float32, device=device)
    clock = position[None, :] + torch.arange(steps, device=device, dtype=torch.float32)[:, None]
    elapsed = (clock / config.horizon)[..., None]  # (steps, n, 1)
    t0 = time.perf_counter()
    policy.eval()
    for t in range(steps):
        dist = policy.distribution(obs)
        u = dist.sample()
        if config.action_logprob == "clipped":
            u = u.clamp(-1, 1)
        obs_buf[t], u_buf[t] = obs, u
        logp_buf[t] = action_log_prob(dist, u, config.action_logprob)
        val_buf[t] = learner.value(obs, elapsed[t])
        obs, info = env.step(policy.denormalize(u))
        succ_buf[t] = info["success"].float()
        unc_buf[t] = info["uncertainty"]
    dones = torch.zeros(steps, n, device=device)
    if starts is None:  # the imagined episode ends where the real one does: terminal, no bootstrap
        dones[-1] = 1.0
        alive = torch.ones(steps, n, device=device)
        next_value = torch.zeros(n, device=device)
    else:  # ended at the first success, or where a real episode's time is up
        dones = succ_buf.clone()
        dones[-1] = torch.maximum(dones[-1], (position + steps >= config.horizon).float())
        alive = torch.cat([torch.ones(1, n, device=device), 1.0 - dones[:-1].cummax(0).values])
        dones = dones * alive  # each episode ends once
        next_value = learner.value(obs, ((position + steps) / config.horizon)[:, None])
    _sync(device)  # GPU work is asynchronous: time what ran, not what was queued
    return Rollout(obs_buf, u_buf, logp_buf, succ_buf, unc_buf, val_buf, elapsed, dones, alive, next_value,
                   time.perf_counter() - t0)


def warm_up_critic(learner: Learner, roll: Rollout, rewards: torch.Tensor, dones: torch.Tensor,
                   config: PPOConfig) -> tuple[torch.Tensor, torch.Tensor]:
    """Fit the critic alone to the first rollout's Monte-Carlo returns (lambda = 1: no bootstrap from
    an untrained critic), then recompute the rollout's values and GAE from it (roll.value updated).
    Whole episodes only: a keyframe rollout is cut before its end (fit_critic_to_real instead)."""
    n = config.n_envs
    zeros = torch.zeros(n, device=rewards.device)
    _, mc_ret = compute_gae(rewards, torch.zeros_like(roll.value), zeros, dones, config.gamma, 1.0)
    elapsed = roll.elapsed
    b_obs, b_time, b_mc = roll.obs.flatten(0, 1), elapsed.flatten(0, 1), mc_ret.flatten()
    for _ in range(config.critic_warmup):
        for idx in torch.randperm(len(b_obs), generator=learner.gen).to(b_obs.device).chunk(config.minibatches):
            v_loss = 0.5 * ((learner.value(b_obs[idx], b_time[idx]) - b_mc[idx]) ** 2).mean()
            learner.opt.zero_grad(set_to_none=True)
            v_loss.backward()
            torch.nn.utils.clip_grad_norm_(learner.critic.parameters(), config.max_grad_norm)
            learner.opt.step()
    with torch.no_grad():
        roll.value = torch.stack([learner.value(roll.obs[t], elapsed[t]) for t in range(config.horizon)])
        return compute_gae(rewards, roll.value, zeros, dones, config.gamma, config.gae_lambda)


def fit_critic_to_real(learner: Learner, env: ImaginedEnv, config: PPOConfig) -> dict[str, Any]:
    """Before the first rollout from keyframes: the critic alone, critic_warmup epochs on the real
    discounted success returns of the recorded rollouts in env.contexts (BC's own, `policy`, where
    recorded: the value of the policy refinement starts from; else every kind), in minibatches of
    bc_batch states. What the cut of a short rollout bootstraps from is what really happened after
    such states, not the detector's verdict on a long imagined future. Returns the fit's measurements."""
    kinds = ("policy",) if "policy" in env.contexts.episode_kind else tuple(sorted(set(env.contexts.episode_kind)))
    mc = monte_carlo_values(env.contexts, env.t, config.gamma, kinds)
    device = env.device
    target = torch.as_tensor(mc.returns, device=device)
    clock = torch.as_tensor(mc.positions, dtype=torch.float32, device=device)[:, None] / config.horizon

    def values(idx: torch.Tensor) -> torch.Tensor:
        frames, _, _ = env.contexts.gather(mc.window_starts[idx.cpu().numpy()], env.t, device)
        return learner.value(frames[:, -1], clock[idx])

    batches = max(1, math.ceil(len(mc) / config.bc_batch))
    learner.critic.train()
    for _ in range(config.critic_warmup):
        for idx in torch.randperm(len(mc), generator=learner.gen).to(device).chunk(batches):
            v_loss = 0.5 * ((values(idx) - target[idx]) ** 2).mean()
            learner.opt.zero_grad(set_to_none=True)
            v_loss.backward()
            torch.nn.utils.clip_grad_norm_(learner.critic.parameters(), config.max_grad_norm)
            learner.opt.step()
    with torch.no_grad():
        fitted = torch.cat([values(idx) for idx in torch.arange(len(mc), device=device).chunk(batches)])
    return {"states": len(mc), "episodes": sum(k in kinds for k in env.contexts.episode_kind), "kinds": list(kinds),
            "mean_return": float(target.mean()), "explained_variance": explained_variance(fitted, target)}


def ppo_update(learner: Learner, roll: Rollout, advantages: torch.Tensor, returns: torch.Tensor,
               expert_frames: torch.Tensor, expert_actions: torch.Tensor, config: PPOConfig) -> dict[str, float]:
    """`epochs` passes of clipped PPO over the rollout's live steps (all of them for whole episodes;
    none after a keyframe rollout's first success) in minibatches, plus the BC term on expert data;
    stops an epoch boundary early past target_kl. Returns the mean of each loss term."""
    policy, device = learner.policy, roll.obs.device
    policy.train()
    live = roll.alive.flatten() > 0
    b_obs, b_u, b_logp = roll.obs.flatten(0, 1)[live], roll.u.flatten(0, 1)[live], roll.logp.flatten(0, 1)[live]
    b_time, b_adv, b_ret = roll.elapsed.flatten(0, 1)[live], advantages.flatten()[live], returns.flatten()[live]
    stats: dict[str, list[float]] = {k: [] for k in ("pg_loss", "v_loss", "entropy", "bc_nll", "approx_kl", "clipfrac")}
    for _ in range(config.epochs):
        for idx in torch.randperm(len(b_obs), generator=learner.gen).to(device).chunk(config.minibatches):
            dist = policy.distribution(b_obs[idx])
            new_logp = action_log_prob(dist, b_u[idx], config.action_logprob)
            a = b_adv[idx]
            a = (a - a.mean()) / (a.std() + 1e-8) if len(a) > 1 else a
            pg_loss, diag = clipped_surrogate(new_logp, b_logp[idx], a, config.clip_coef)
            v_loss = 0.5 * ((learner.value(b_obs[idx], b_time[idx]) - b_ret[idx]) ** 2).mean()
            entropy = dist.entropy().sum(-1).mean()
            loss = pg_loss + config.vf_coef * v_loss - config.ent_coef * entropy
            bc = torch.zeros((), device=device)
            if config.bc_coef > 0 and len(expert_frames):
                j = torch.randint(len(expert_frames), (config.bc_batch,), generator=learner.gen)
                frames = expert_frames[j].to(device).float() / 127.5 - 1
                bc = policy.nll(frames, expert_actions[j].to(device))
                loss = loss + config.bc_coef * bc
            learner.opt.zero_grad(set_to_none=True)
            loss.backward()
            torch.nn.utils.clip_grad_norm_(learner.parameters(), config.max_grad_norm)
            learner.opt.step()
            for k, v in (("pg_loss", pg_loss), ("v_loss", v_loss), ("entropy", entropy), ("bc_nll", bc)):
                stats[k].append(float(v.detach()))
            stats["approx_kl"].append(diag["approx_kl"])
            stats["clipfrac"].append(diag["clipfrac"])
        if config.target_kl and np.mean(stats["approx_kl"][-config.minibatches:]) > config.target_kl:
            break
    _sync(device)
    return {k: float(np.mean(v)) for k, v in stats.items()}


def _save(checkpoint_dir: str | os.PathLike[str], run_id: str, learner: Learner, state: RunState) -> None:
    opt_tensors, opt_meta = optimizer_tensors(learner.opt)
    tensors = {f"policy/{k}": v for k, v in learner.policy.state_dict().items()}
    tensors |= {f"critic/{k}": v for k, v in learner.critic.state_dict().items()}
    tensors |= opt_tensors | {"rng/batch": learner.gen.get_state(), "rng/torch": torch.get_rng_state()}
    device = next(learner.critic.parameters()).device
    if device.type == "cuda":
        tensors["rng/cuda"] = torch.cuda.get_rng_state(device)
    if state.best is not None:
        tensors |= {f"best/{k}": v for k, v in state.best[1].items()}
    save_state(checkpoint_dir, tensors, {
        "fingerprint": run_id, "iteration": state.iteration, "rows": state.rows, "imagined_bc": state.imagined_bc,
        "real_episodes": state.real_episodes, "real_bc": state.real_bc, "uncertainty_ref": state.uncertainty_ref,
        "critic_fit": state.critic_fit,
        "best": None if state.best is None else {"score": state.best[0], "iteration": state.best[2]},
        "optimizer": opt_meta})


def _resume(checkpoint_dir: str | os.PathLike[str] | None, run_id: str, learner: Learner) -> RunState | None:
    """The state saved by the same run (same fingerprint), loaded into `learner`; None otherwise."""
    resumed = load_state(checkpoint_dir) if checkpoint_dir is not None else None
    if resumed is None or resumed[1].get("fingerprint") != run_id:
        return None
    tensors, meta = resumed
    learner.policy.load_state_dict(_prefixed(tensors, "policy/"))
    learner.critic.load_state_dict(_prefixed(tensors, "critic/"))
    load_optimizer(learner.opt, tensors, meta["optimizer"])
    learner.gen.set_state(tensors["rng/batch"])
    torch.set_rng_state(tensors["rng/torch"])
    device = next(learner.critic.parameters()).device
    if device.type == "cuda":
        torch.cuda.set_rng_state(tensors["rng/cuda"], device)
    best = None
    if meta["best"] is not None:
        best = (meta["best"]["score"], _prefixed(tensors, "best/"), meta["best"]["iteration"])
    return RunState(iteration=meta["iteration"], rows=meta["rows"], imagined_bc=meta["imagined_bc"],
                    real_episodes=meta["real_episodes"], real_bc=meta["real_bc"],
                    uncertainty_ref=meta["uncertainty_ref"], best=best, critic_fit=meta.get("critic_fit"))


def refine(
    policy: GaussianPolicy,
    env: ImaginedEnv,
    expert_frames: torch.Tensor,
    expert_actions: torch.Tensor,
    config: PPOConfig,
    log: CurveLog | None = None,
    real_eval: Callable[[GaussianPolicy, int], float] | None = None,
    frozen: tuple[torch.nn.Module, ...] = (),
    checkpoint_dir: str | os.PathLike[str] | None = None,
    real_eval_id: str = "",
) -> tuple[GaussianPolicy, dict[str, Any]]:
    """PPO on `env` from `policy` (BC). expert_* (uint8 frames (M,3,H,W), actions (M,A)) feed the BC term.

    `real_eval(policy, iteration)` returns the real success rate (run every `eval_every` iterations;
    the pipeline passes one only in the opt-in select_by_real mode); `real_eval_id` names what it
    runs (scenes, episodes, seed) and is part of the checkpoint's identity.
    `frozen` modules (world model, classifier) are checked to be unchanged at the end.
    Each iteration's row goes to `log` (DVCLive), which the caller finishes with the summary.
    With `checkpoint_dir` the whole state (policy, critic, optimizer, generators, curve, real
    evaluations, the best candidate) is saved after every iteration, and a rerun of the same run
    continues from the last one: bit-identical to an uninterrupted run, no real episode repeated.
    The caller removes the directory once its outputs are in place.
    """
    device = env.device
    torch.manual_seed(config.seed)
    frozen_before = parameter_fingerprint(*frozen)
    run_id = _run_fingerprint(config, policy, frozen_before, env, expert_frames, expert_actions, real_eval_id)
    starts = keyframes(env.contexts, env.t, config.keyframe_horizon) if config.keyframe_horizon else None
    if starts is not None:  # the pool of keyframes is part of what the run is
        run_id = hashlib.sha256(f"{run_id}/{len(starts)}".encode()).hexdigest()[:16]
    learner = Learner(policy, config, device)
    policy = learner.policy
    n, steps = config.n_envs, config.horizon
    eval_n = config.imagined_eval_episodes
    started = time.perf_counter()
    checks = real_eval is not None and config.eval_every > 0

    state = _resume(checkpoint_dir, run_id, learner)
    if state is not None:
        for row in state.rows:  # the resumed run's curve starts as the checkpoint saved it
            if log is not None:
                log.log(row)
    else:
        state = RunState(imagined_bc=imagined_success(policy, env, eval_n, steps, config.seed) if eval_n else [])
        if starts is not None and config.critic_warmup:
            state.critic_fit = fit_critic_to_real(learner, env, config)
        if config.select_by_real and checks:
            # BC is a candidate too; ties keep the earlier (less refined) policy.
            policy.eval()
            state.best = (real_eval(policy, 0), copy.deepcopy(policy.state_dict()), 0)
            state.real_episodes, state.real_bc = 1, state.best[0]

    bar = progress_bar(total=config.iterations, initial=state.iteration, desc="refine (PPO in imagination)", unit="it")
    for it in range(state.iteration + 1, config.iterations + 1):
        roll = collect_rollout(learner, env, config, it, starts)
        if state.uncertainty_ref is None:  # what the BC policy meets in imagination: the data's support
            state.uncertainty_ref = float(torch.quantile(roll.uncertainty.flatten().float(),
                                                         config.uncertainty_quantile))
        penalty = config.uncertainty_coef * torch.relu(roll.uncertainty / max(state.uncertainty_ref, 1e-8) - 1)
        rewards = roll.success - penalty
        adv, ret = compute_gae(rewards, roll.value, roll.next_value, roll.dones, config.gamma, config.gae_lambda)
        t1 = time.perf_counter()
        if it == 1 and config.critic_warmup and starts is None:
            adv, ret = warm_up_critic(learner, roll, rewards, roll.dones, config)
        stats = ppo_update(learner, roll, adv, ret, expert_frames, expert_actions, config)
        update_s = time.perf_counter() - t1
        live = roll.alive > 0

        row: dict[str, Any] = {
            "iteration": it,
            # per imagined episode (a keyframe rollout's: success within its keyframe_horizon steps)
            "imagined_success": float(((roll.success * roll.alive).sum(0) > 0).float().mean()),
            "imagined_reward": float((roll.success * roll.alive).sum(0).mean()),
            "uncertainty": float(roll.uncertainty.mean()),
            "uncertainty_penalty": float(penalty.sum(0).mean()),
            **stats,
            "explained_variance": explained_variance(roll.value[live], ret[live]),
            "policy_std": float(policy.distribution(roll.obs.flatten(0, 1)[:64]).stddev.mean().detach()),
            "imagined_frames_per_s": n * config.rollout_steps / roll.seconds,
            "update_s": update_s,
            "real_success": None,
        }
        if checks and (it % config.eval_every == 0 or it == config.iterations):
            policy.eval()
            row["real_success"] = real_eval(policy, it)
            state.real_episodes += 1
            if config.select_by_real and (state.best is None or row["real_success"] > state.best[0]):
                state.best = (row["real_success"], copy.deepcopy(policy.state_dict()), it)
        state.rows.append(row)
        state.iteration = it
        if log is not None:
            log.log(row)
        if checkpoint_dir is not None:
            _save(checkpoint_dir, run_id, learner, state)
        bar.update(1)
        bar.set_postfix(imagined_success=f"{row['imagined_success']:.2f}", refresh=False)
    bar.close()

    if state.best is not None:
        policy.load_state_dict(state.best[1])
    imagined_refined = imagined_success(policy, env, eval_n, steps, config.seed) if eval_n else []
    if parameter_fingerprint(*frozen) != frozen_before:
        raise RuntimeError("a frozen model (world model or classifier) changed during refinement")
    return policy.eval().cpu(), _summary(config, state, imagined_refined, time.perf_counter() - started)


def _summary(config: PPOConfig, state: RunState, imagined_refined: list[bool], seconds: float) -> dict[str, Any]:
    def rate(xs: list[bool]) -> float | None:
        return float(np.mean(xs)) if xs else None

    rows, best = state.rows, state.best
    return {
        "iterations": config.iterations,
        "horizon": config.horizon,
        "keyframe_horizon": config.keyframe_horizon,
        "critic_fit": state.critic_fit,
        "imagined_success_start": rows[0]["imagined_success"],
        "imagined_success_end": rows[-1]["imagined_success"],
        # Like for like with the real evaluation: deterministic policy, recorded starts, success anywhere.
        "imagined_eval": {"episodes": config.imagined_eval_episodes, "bc": rate(state.imagined_bc),
                          "refined": rate(imagined_refined)},
        "uncertainty_reference": state.uncertainty_ref,
        "real_success_periodic": [(r["iteration"], r["real_success"]) for r in rows if r["real_success"] is not None],
        "real_evaluations": state.real_episodes,
        "selected_by_real": best is not None,
        "selected_iteration": best[2] if best is not None else config.iterations,  # 0 = the BC policy
        "real_success_bc": state.real_bc,
        # The real success of the returned policy on the periodic episodes (None without real evaluations).
        "selected_real_success": best[0] if best is not None else next(
            (r["real_success"] for r in reversed(rows) if r["real_success"] is not None), None),
        "seconds": seconds,
    }


def returned_bc(policy: GaussianPolicy, env: ImaginedEnv, config: PPOConfig, reason: str) -> tuple[GaussianPolicy, dict[str, Any]]:
    """No refinement (the trust check refused it): BC's own weights, with the summary `refine` would
    give for a run that returned BC (selected_iteration 0) and BC's like-for-like imagined success."""
    started = time.perf_counter()
    policy = policy.to(env.device)
    eval_n = config.imagined_eval_episodes
    imagined_bc = float(np.mean(imagined_success(policy, env, eval_n, config.horizon, config.seed))) if eval_n else None
    return policy.eval().cpu(), {
        "iterations": 0, "horizon": config.horizon, "keyframe_horizon": config.keyframe_horizon, "critic_fit": None,
        "stopped": reason,
        "imagined_success_start": None, "imagined_success_end": None,
        "imagined_eval": {"episodes": eval_n, "bc": imagined_bc, "refined": imagined_bc},  # the same weights
        "uncertainty_reference": None, "real_success_periodic": [], "real_evaluations": 0, "selected_by_real": False,
        "selected_iteration": 0, "real_success_bc": None, "selected_real_success": None,
        "seconds": time.perf_counter() - started}
