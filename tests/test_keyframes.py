"""Keyframe-initialised short rollouts (issue 21, lever 2): where they may start, the real returns the
critic is fitted on, and PPO that starts at keyframes, ends at the first success, bootstraps the cut."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from test_ppo import tiny_refinement  # noqa: F401  (shared tiny fixture)
from w4rl_core.data.windows import FrameWindows
from w4rl_core.imagine.env import ImaginedEnv
from w4rl_core.imagine.keyframes import keyframes, monte_carlo_values
from w4rl_core.train.ppo import Learner, PPOConfig, collect_rollout, fit_critic_to_real, refine


def _windows(lengths, first_success, kinds) -> FrameWindows:
    """Episodes of the given lengths; success from frame first_success[i] on (None: never)."""
    success = []
    for n, first in zip(lengths, first_success):
        s = np.zeros(n, np.uint8)
        if first is not None:
            s[first:] = 1
        success.append(s)
    total = sum(lengths)
    rgb = torch.arange(total, dtype=torch.uint8)[:, None, None, None].expand(total, 3, 4, 4).contiguous()
    return FrameWindows(rgb=rgb, action=torch.zeros(total, 2), success=torch.from_numpy(np.concatenate(success)),
                        episode_ends=np.cumsum(lengths).astype(np.int64), episode_task=["t"] * len(lengths),
                        episode_kind=list(kinds), action_low=(-1.0, -1.0), action_high=(1.0, 1.0))


def test_keyframes_precede_the_first_success_and_fit_the_rollout_in_the_episode():
    w = _windows([12, 10, 5], [7, None, None], ["expert", "policy", "policy"])
    k = keyframes(w, t=4, horizon=3)
    # Episode 0: observation frame p + 3 < 7 and p + 4 + 3 <= 12 -> p in 0..3; episode 1: p <= 10 - 7 = 3;
    # episode 2 (5 frames) has no room for 3 steps after 4 context frames.
    assert k.positions.tolist() == [0, 1, 2, 3, 0, 1, 2, 3]
    assert k.window_starts.tolist() == [0, 1, 2, 3, 12, 13, 14, 15]
    obs_frames = k.window_starts + 3
    assert not w.success[torch.as_tensor(obs_frames)].any()  # no keyframe is already a success
    with pytest.raises(ValueError, match="no recorded episode"):
        keyframes(w, t=4, horizon=9)


def test_monte_carlo_values_are_the_discounted_first_success():
    w = _windows([12, 10, 9], [7, None, 4], ["policy", "policy", "expert"])
    mc = monte_carlo_values(w, t=4, gamma=0.5, kinds=("policy",))
    # Episode 0: step j from position p makes frame p + 4 + j; the first success is frame 7 -> j = 3 - p.
    # Episode 1 never succeeds: every state before its last step returns 0. The expert episode is not used.
    assert mc.positions.tolist() == [0, 1, 2, 3] + [0, 1, 2, 3, 4, 5]
    assert mc.returns.tolist() == pytest.approx([0.125, 0.25, 0.5, 1.0] + [0.0] * 6)
    assert mc.window_starts.tolist() == [0, 1, 2, 3] + [12, 13, 14, 15, 16, 17]
    with pytest.raises(ValueError, match="kinds"):
        monte_carlo_values(w, t=4, gamma=0.5, kinds=("random",))


class _FiresAtStep:
    """A constructed detector: every env's episode succeeds on its `k`-th step (1-based)."""

    def __init__(self, k: int) -> None:
        self.k, self.step = k, 0

    def reset(self, n: int, device: torch.device) -> None:
        self.n, self.step = n, 0

    def __call__(self, frames: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        self.step += 1
        hit = torch.full((len(frames),), self.step >= self.k)
        return hit, hit.float()


def test_a_keyframe_rollout_ends_at_the_first_success_and_learns_nothing_after_it(tiny_refinement):
    train, world_model, _, policy = tiny_refinement
    env = ImaginedEnv(world_model, train, n_envs=4, success_fn=_FiresAtStep(2))
    cfg = PPOConfig(iterations=1, n_envs=4, horizon=10, keyframe_horizon=4, minibatches=1)
    pool = keyframes(train, env.t, cfg.keyframe_horizon)
    roll = collect_rollout(Learner(policy, cfg, env.device), env, cfg, iteration=1, starts=pool)
    assert roll.obs.shape[0] == 4  # keyframe_horizon steps, not horizon
    assert roll.dones[:, 0].tolist() == [0.0, 1.0, 0.0, 0.0]  # ended after its first success (step 2)
    assert roll.alive[:, 0].tolist() == [1.0, 1.0, 0.0, 0.0]  # the steps after it are not learned from
    # The critic's clock is the real episode's: the keyframe's position plus the steps taken.
    step = roll.elapsed[1:] - roll.elapsed[:-1]
    assert torch.allclose(step, torch.full_like(step, 1 / cfg.horizon))


def test_an_episode_that_goes_on_past_the_cut_is_bootstrapped(tiny_refinement):
    train, world_model, _, policy = tiny_refinement
    env = ImaginedEnv(world_model, train, n_envs=4, success_fn=_FiresAtStep(99))  # never succeeds
    cfg = PPOConfig(iterations=1, n_envs=4, horizon=10, keyframe_horizon=3, minibatches=1)
    pool = keyframes(train, env.t, cfg.keyframe_horizon)
    roll = collect_rollout(Learner(policy, cfg, env.device), env, cfg, iteration=1, starts=pool)
    assert torch.all(roll.alive == 1) and torch.all(roll.dones[:-1] == 0)
    # 14-frame episodes: from position p the real episode's time (10 steps) is up at the cut iff p + 3 >= 10.
    position = (roll.elapsed[0, :, 0] * cfg.horizon).round()
    assert roll.dones[-1].tolist() == (position + 3 >= 10).float().tolist()
    assert torch.all(roll.next_value != 0)  # the critic's estimate at the cut


def test_the_critic_is_fitted_on_real_returns_before_refining(tiny_refinement):
    train, world_model, _, policy = tiny_refinement
    env = ImaginedEnv(world_model, train, n_envs=2)
    cfg = PPOConfig(iterations=1, n_envs=2, horizon=10, keyframe_horizon=3, critic_warmup=30, bc_batch=16, lr=1e-3)
    learner = Learner(policy, cfg, env.device)
    mc = monte_carlo_values(train, env.t, cfg.gamma, kinds=("expert",))
    frames, _, _ = train.gather(mc.window_starts, env.t)
    clock = torch.as_tensor(mc.positions, dtype=torch.float32)[:, None] / cfg.horizon
    target = torch.as_tensor(mc.returns)
    with torch.no_grad():
        before = float(((learner.value(frames[:, -1], clock) - target) ** 2).mean())
    fit = fit_critic_to_real(learner, env, cfg)
    with torch.no_grad():
        after = float(((learner.value(frames[:, -1], clock) - target) ** 2).mean())
    assert fit["states"] == len(mc) and fit["kinds"] == ["expert"]  # no BC rollouts here: every kind
    assert after < 0.5 * before


def test_refinement_from_keyframes_starts_mid_episode_and_records_the_critic_fit(tiny_refinement, monkeypatch):
    train, world_model, classifier, policy = tiny_refinement
    env = ImaginedEnv(world_model, train, n_envs=4, success_fn=_FiresAtStep(3))
    starts: list[np.ndarray] = []
    real_reset = env.reset_windows
    monkeypatch.setattr(env, "reset_windows", lambda seed, w: starts.append(np.asarray(w)) or real_reset(seed, w))
    cfg = PPOConfig(iterations=3, n_envs=4, horizon=10, keyframe_horizon=3, epochs=1, minibatches=2, bc_batch=8,
                    critic_warmup=1, imagined_eval_episodes=0)
    _, summary = refine(policy, env, train.rgb, train.action, cfg)
    pool = keyframes(train, env.t, 3)
    assert len(starts) == 3 and all(set(s.tolist()) <= set(pool.window_starts.tolist()) for s in starts)
    assert set(np.concatenate(starts).tolist()) - set(train.episode_starts.tolist())  # not only first frames
    assert summary["keyframe_horizon"] == 3 and summary["critic_fit"]["states"] > 0


def test_keyframe_horizon_is_bounded_by_the_episode_horizon():
    with pytest.raises(ValueError, match="keyframe_horizon"):
        PPOConfig(horizon=10, keyframe_horizon=11)
    assert PPOConfig(horizon=10, keyframe_horizon=4).rollout_steps == 4
    assert PPOConfig(horizon=10).rollout_steps == 10
