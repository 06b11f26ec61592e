"""PPO pieces on hand-computed examples, the sigma clip, and refinement leaving frozen models unchanged."""

from __future__ import annotations

import pytest
import torch

from test_world_model import _config, _smooth_episode  # noqa: F401  (shared tiny fixtures)
from conftest import tiny_layout
from w4rl_core.data.store import EpisodeStore
from w4rl_core.data.windows import load_windows
from w4rl_core.imagine.env import ImaginedEnv
from w4rl_core.models.policy import CNNConfig, GaussianPolicy, PolicyConfig, SuccessClassifier
from w4rl_core.models.world_model import WorldModel
from w4rl_core.train.ppo import PPOConfig, clipped_surrogate, compute_gae, parameter_fingerprint, refine


def test_gae_matches_a_hand_computation():
    # One env, 3 steps, gamma 0.9, lambda 0.8, episode ends after step 1 (dones[1] = 1).
    r = torch.tensor([[1.0], [0.0], [2.0]])
    v = torch.tensor([[0.5], [0.2], [1.0]])
    next_v = torch.tensor([3.0])
    d = torch.tensor([[0.0], [1.0], [0.0]])
    adv, ret = compute_gae(r, v, next_v, d, gamma=0.9, lam=0.8)
    d2 = 2.0 + 0.9 * 3.0 - 1.0  # 3.7
    d1 = 0.0 + 0.0 - 0.2  # episode ended: no bootstrap
    d0 = 1.0 + 0.9 * 0.2 - 0.5  # 0.68
    a2, a1 = d2, d1  # the done at step 1 also cuts the trace from step 2
    a0 = d0 + 0.9 * 0.8 * a1
    assert adv[:, 0].tolist() == pytest.approx([a0, a1, a2])
    assert ret[:, 0].tolist() == pytest.approx([a0 + 0.5, a1 + 0.2, a2 + 1.0])


def test_clipped_surrogate_clips_both_ways():
    old = torch.zeros(4)
    new = torch.log(torch.tensor([1.5, 0.5, 1.1, 0.9]))  # ratios
    adv = torch.tensor([1.0, -1.0, 1.0, -1.0])
    loss, diag = clipped_surrogate(new, old, adv, clip=0.2)
    # Per sample: max(-A r, -A clip(r)): A>0 uses min(r, 1.2) for r=1.5 -> -1.2; A<0, r=0.5 -> max(0.5, 0.8) = 0.8
    expected = torch.tensor([-1.2, 0.8, -1.1, 0.9]).mean()
    assert float(loss) == pytest.approx(float(expected))
    assert diag["clipfrac"] == pytest.approx(0.5)
    assert diag["approx_kl"] > 0


def test_sigma_is_clipped_at_e0():
    policy = GaussianPolicy(PolicyConfig((-1.0,) * 4, (1.0,) * 4, CNNConfig(image_size=16, channels=(8, 8)),
                                         log_std_max=0.0))
    with torch.no_grad():
        policy.net.mlp[-1].bias[4:] = 50.0  # the net asks for a huge std
    std = policy.distribution(torch.zeros(3, 3, 16, 16)).stddev
    assert torch.all(std <= 1.0 + 1e-6) and torch.allclose(std, torch.ones_like(std))


@pytest.fixture(scope="module")
def tiny_refinement(tmp_path_factory):
    path = tmp_path_factory.mktemp("ppo") / "s.zarr"
    EpisodeStore.create(path, tiny_layout()).append(_smooth_episode(i) for i in range(6))
    train, _ = load_windows([str(path)], image_size=16, val_fraction=0.0, seed=0)
    torch.manual_seed(0)
    world_model = WorldModel(_config())
    classifier = SuccessClassifier(CNNConfig(image_size=16, channels=(8, 8), hidden=16)).eval()
    for p in classifier.parameters():
        p.requires_grad_(False)
    policy = GaussianPolicy(PolicyConfig((-1.0,) * 4, (1.0,) * 4, CNNConfig(image_size=16, channels=(8, 8), hidden=32)))
    return train, world_model, classifier, policy


def test_refinement_changes_the_policy_but_never_the_frozen_models(tiny_refinement, tmp_path):
    train, world_model, classifier, policy = tiny_refinement
    env = ImaginedEnv(world_model, train, n_envs=4, reward_fn=classifier.prob)
    before = parameter_fingerprint(world_model, classifier)
    policy_before = parameter_fingerprint(policy)
    calls = []
    cfg = PPOConfig(iterations=3, n_envs=4, horizon=4, epochs=2, minibatches=2, eval_every=2,
                    disagreement_envs=2, bc_batch=8)
    refined, summary = refine(policy, env, train.rgb, train.action, cfg, tmp_path / "curve.csv",
                              real_eval=lambda p, it: calls.append(it) or 0.25, frozen=(world_model, classifier))
    assert parameter_fingerprint(world_model, classifier) == before
    assert all(p.grad is None for p in world_model.parameters())
    assert parameter_fingerprint(refined) != policy_before
    assert calls == [2, 3]  # every eval_every iterations, and at the end
    assert summary["real_success_periodic"] == [(2, 0.25), (3, 0.25)] and summary["real_evaluations"] == 2
    header = (tmp_path / "curve.csv").read_text().splitlines()[0].split(",")
    assert {"imagined_success", "real_success", "approx_kl", "clipfrac", "explained_variance",
            "wm_disagreement", "bc_nll"} <= set(header)


def test_refinement_detects_a_changed_frozen_model(tiny_refinement, tmp_path, monkeypatch):
    train, world_model, classifier, policy = tiny_refinement
    env = ImaginedEnv(world_model, train, n_envs=2, reward_fn=classifier.prob)
    real_step = env.step

    def tampering_step(action, spread_envs=0):
        with torch.no_grad():
            next(classifier.parameters()).add_(1.0)
        return real_step(action, spread_envs)

    monkeypatch.setattr(env, "step", tampering_step)
    cfg = PPOConfig(iterations=1, n_envs=2, horizon=2, epochs=1, minibatches=1, eval_every=0, bc_coef=0.0)
    with pytest.raises(RuntimeError, match="frozen model"):
        refine(policy, env, train.rgb, train.action, cfg, tmp_path / "c.csv", frozen=(world_model, classifier))


def test_select_by_real_keeps_the_best_checkpoint(tiny_refinement, tmp_path):
    train, world_model, classifier, policy = tiny_refinement
    env = ImaginedEnv(world_model, train, n_envs=2, reward_fn=classifier.prob)
    snapshots = {}

    def real_eval(p, it):
        snapshots[it] = parameter_fingerprint(p)
        return {1: 0.9, 2: 0.1, 3: 0.2}[it]

    cfg = PPOConfig(iterations=3, n_envs=2, horizon=2, epochs=1, minibatches=1, eval_every=1, select_by_real=True,
                    bc_coef=0.0, lr=1e-3)
    refined, summary = refine(policy, env, train.rgb, train.action, cfg, tmp_path / "c.csv", real_eval=real_eval)
    assert summary["selected_by_real"] and parameter_fingerprint(refined) == snapshots[1]
