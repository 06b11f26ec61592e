"""The trust check before refining: BC's imagined success on held-out rollouts against their real one."""

from __future__ import annotations

import pytest
import torch

from test_ppo import tiny_refinement  # noqa: F401  (shared tiny fixture)
from w4rl_core.imagine.env import ImaginedEnv
from w4rl_core.models.success import DetectorConfig, SuccessDetector
from w4rl_core.train.ppo import PPOConfig, returned_bc
from w4rl_core.train.trust import TrustConfig, check_trust, trust_verdict, wilson


def test_verdict_stops_beyond_the_tolerance_and_passes_within():
    config = TrustConfig(tolerance=0.15, min_episodes=4)
    real = [True, False, False, False]  # 0.25
    stop = trust_verdict([True] * 8, real, config)  # imagined 1.00
    assert not stop["passed"] and stop["checked"] and stop["gap"] == pytest.approx(0.75)
    assert "disagrees with the robot" in stop["reason"] and "BC returned" in stop["reason"]
    ok = trust_verdict([True, False, False, False, False, False, True, False], real, config)  # 0.25
    assert ok["passed"] and ok["gap"] == pytest.approx(0.0) and "within" in ok["reason"]
    low = trust_verdict([False] * 8, real, config)  # under-estimating fails too: |gap| counts
    assert not low["passed"] and low["gap"] == pytest.approx(-0.25)


def test_too_few_held_out_rollouts_stop_unless_told_to_refine():
    stop = trust_verdict([True], [True], TrustConfig(min_episodes=8))
    assert not stop["passed"] and not stop["checked"] and "fewer than trust.min_episodes = 8" in stop["reason"]
    go = trust_verdict([], [True], TrustConfig(min_episodes=8, unchecked="refine"))
    assert go["passed"] and not go["checked"] and "refining anyway" in go["reason"]


def test_config_refuses_nonsense():
    for bad in ({"tolerance": -0.1}, {"tolerance": float("nan")}, {"min_episodes": 0}, {"unchecked": "maybe"}):
        with pytest.raises(ValueError):
            TrustConfig(**bad)


def test_wilson_interval_brackets_the_rate():
    lo, hi = wilson(2, 10)
    assert 0.0 < lo < 0.2 < hi < 0.6 and wilson(0, 0) == [0.0, 1.0]


def test_check_in_imagination_stops_when_the_detector_fires_where_the_robot_failed(tiny_refinement):
    """A detector that fires on every imagined frame against rollouts that all failed on the robot:
    the check refuses; with the real outcomes all successes it passes. Same episodes, same starts."""
    train, world_model, classifier, policy = tiny_refinement
    det = SuccessDetector(classifier, DetectorConfig(threshold=0.5, persistence=1))
    env = ImaginedEnv(world_model, train, n_envs=4, success_fn=det)
    bias = classifier.net.mlp[-1].bias
    saved = bias.detach().clone()
    with torch.no_grad():
        bias.fill_(50.0)  # fires on every frame
    try:
        config = TrustConfig(tolerance=0.15, min_episodes=2, samples_per_start=2)
        failed = check_trust(policy, env, [False] * env.n_starts, 2, config, deterministic=False)
        assert failed["imagined_episodes"] == 2 * env.n_starts and failed["imagined"] == 1.0
        assert not failed["passed"] and failed["real"] == 0.0
        assert check_trust(policy, env, [True] * env.n_starts, 2, config, deterministic=True)["passed"]
        with pytest.raises(ValueError, match="same episodes"):
            check_trust(policy, env, [True], 2, config, deterministic=True)
    finally:
        with torch.no_grad():
            bias.copy_(saved)


def test_a_stopped_refinement_returns_bc_weights_and_says_why(tiny_refinement):
    train, world_model, classifier, policy = tiny_refinement
    env = ImaginedEnv(world_model, train, n_envs=2, success_fn=SuccessDetector(classifier, DetectorConfig()))
    before = {k: v.clone() for k, v in policy.state_dict().items()}
    kept, summary = returned_bc(policy, env, PPOConfig(n_envs=2, horizon=2, imagined_eval_episodes=2), "told so")
    assert all(torch.equal(before[k], v) for k, v in kept.state_dict().items())
    assert summary["selected_iteration"] == 0 and summary["real_evaluations"] == 0 and summary["stopped"] == "told so"
    assert summary["imagined_eval"]["bc"] == summary["imagined_eval"]["refined"] is not None
