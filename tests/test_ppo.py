"""PPO pieces on hand-computed examples, the sigma clip, and refinement leaving frozen models unchanged."""

from __future__ import annotations

import json

import pytest
import torch

from test_world_model import _config, _smooth_episode  # noqa: F401  (shared tiny fixtures)
from conftest import tiny_layout
from w4rl_core.data.store import EpisodeStore
from w4rl_core.data.windows import load_windows
from w4rl_core.imagine.env import ImaginedEnv
from w4rl_core.models.policy import CNNConfig, GaussianPolicy, PolicyConfig, SuccessClassifier
from w4rl_core.models.success import DetectorConfig, SuccessDetector
from w4rl_core.models.world_model import WorldModel
from w4rl_core.train.ppo import (
    PPOConfig,
    action_log_prob,
    clipped_surrogate,
    compute_gae,
    imagined_success,
    parameter_fingerprint,
    refine,
)
from w4rl_core.train.tracking import CurveLog


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
    env = ImaginedEnv(world_model, train, n_envs=4, success_fn=SuccessDetector(classifier, DetectorConfig()))
    before = parameter_fingerprint(world_model, classifier)
    policy_before = parameter_fingerprint(policy)
    calls = []
    cfg = PPOConfig(iterations=3, n_envs=4, horizon=4, epochs=2, minibatches=2, eval_every=2, bc_batch=8,
                    critic_warmup=2, uncertainty_coef=1.0, imagined_eval_episodes=4)
    log = CurveLog(tmp_path / "curve", step_key="iteration")
    refined, summary = refine(policy, env, train.rgb, train.action, cfg, log,
                              real_eval=lambda p, it: calls.append(it) or 0.25, frozen=(world_model, classifier))
    log.finish(summary)
    assert parameter_fingerprint(world_model, classifier) == before
    assert all(p.grad is None for p in world_model.parameters())
    assert parameter_fingerprint(refined) != policy_before
    assert calls == [2, 3]  # every eval_every iterations, and at the end
    assert summary["real_success_periodic"] == [(2, 0.25), (3, 0.25)] and summary["real_evaluations"] == 2
    curves = {p.stem for p in (tmp_path / "curve/plots/metrics").glob("*.tsv")}
    assert {"imagined_success", "real_success", "approx_kl", "clipfrac", "explained_variance",
            "uncertainty", "uncertainty_penalty", "bc_nll"} <= curves
    assert _curve(tmp_path / "curve", "real_success") == [(2, 0.25), (3, 0.25)]  # logged where measured
    assert json.loads((tmp_path / "curve/metrics.json").read_text())["seconds"] > 0
    assert summary["uncertainty_reference"] > 0
    assert set(summary["imagined_eval"]) == {"episodes", "bc", "refined"} and summary["imagined_eval"]["episodes"] == 4


def test_refinement_detects_a_changed_frozen_model(tiny_refinement, tmp_path, monkeypatch):
    train, world_model, classifier, policy = tiny_refinement
    env = ImaginedEnv(world_model, train, n_envs=2, success_fn=SuccessDetector(classifier, DetectorConfig()))
    real_step = env.step

    def tampering_step(action):
        with torch.no_grad():
            next(classifier.parameters()).add_(1.0)
        return real_step(action)

    monkeypatch.setattr(env, "step", tampering_step)
    cfg = PPOConfig(iterations=1, n_envs=2, horizon=2, epochs=1, minibatches=1, eval_every=0, bc_coef=0.0)
    with pytest.raises(RuntimeError, match="frozen model"):
        refine(policy, env, train.rgb, train.action, cfg, frozen=(world_model, classifier))


def test_select_by_real_keeps_the_best_checkpoint(tiny_refinement, tmp_path):
    train, world_model, classifier, policy = tiny_refinement
    env = ImaginedEnv(world_model, train, n_envs=2, success_fn=SuccessDetector(classifier, DetectorConfig()))
    snapshots = {}

    def real_eval(p, it):
        snapshots[it] = parameter_fingerprint(p)
        return {0: 0.3, 1: 0.9, 2: 0.1, 3: 0.2}[it]

    cfg = PPOConfig(iterations=3, n_envs=2, horizon=2, epochs=1, minibatches=1, eval_every=1, select_by_real=True,
                    bc_coef=0.0, lr=1e-3)
    refined, summary = refine(policy, env, train.rgb, train.action, cfg, real_eval=real_eval)
    assert summary["selected_by_real"] and parameter_fingerprint(refined) == snapshots[1]
    assert summary["selected_iteration"] == 1 and summary["selected_real_success"] == 0.9


def test_select_by_real_returns_bc_when_refinement_never_beats_it(tiny_refinement, tmp_path):
    train, world_model, classifier, policy = tiny_refinement
    env = ImaginedEnv(world_model, train, n_envs=2, success_fn=SuccessDetector(classifier, DetectorConfig()))
    bc_fingerprint = parameter_fingerprint(policy)
    cfg = PPOConfig(iterations=2, n_envs=2, horizon=2, epochs=1, minibatches=1, eval_every=1, select_by_real=True,
                    bc_coef=0.0, lr=1e-3)
    # BC (iteration 0) scores 0.5; the refined checkpoints only tie or do worse: ties keep BC.
    refined, summary = refine(policy, env, train.rgb, train.action, cfg,
                              real_eval=lambda p, it: {0: 0.5, 1: 0.5, 2: 0.25}[it])
    assert parameter_fingerprint(refined) == bc_fingerprint
    assert summary["selected_iteration"] == 0 and summary["real_success_bc"] == 0.5
    assert summary["real_evaluations"] == 3


def test_clipped_log_prob_puts_the_tail_mass_at_the_bounds():
    from torch.distributions import Normal

    dist = Normal(torch.tensor([[0.5, -0.2]]), torch.tensor([[0.5, 0.3]]))
    u = torch.tensor([[1.0, 0.1]])  # first dim at the upper bound, second inside
    expected = torch.log(1 - Normal(0.5, 0.5).cdf(torch.tensor(1.0))) + dist.log_prob(u)[0, 1]
    assert float(action_log_prob(dist, u, "clipped")[0]) == pytest.approx(float(expected), rel=1e-5)
    assert float(action_log_prob(dist, u, "gaussian")[0]) == pytest.approx(float(dist.log_prob(u).sum()), rel=1e-6)
    # The clipped probabilities of a 1-D action integrate to one: interior density + the two tails.
    one = Normal(torch.tensor([[0.3]]), torch.tensor([[0.8]]))
    grid = torch.linspace(-1, 1, 4001)[1:-1, None]
    interior = torch.trapezoid(action_log_prob(one, grid, "clipped").exp(), grid[:, 0])
    tails = sum(float(action_log_prob(one, torch.tensor([[b]]), "clipped").exp()) for b in (-1.0, 1.0))
    assert float(interior) + tails == pytest.approx(1.0, abs=1e-3)


def test_success_detector_needs_persistent_frames():
    class Fixed(torch.nn.Module):
        def __init__(self):
            super().__init__()
            self.p = None

        def prob(self, frames):
            return self.p

    clf = Fixed()
    det = SuccessDetector(clf, DetectorConfig(threshold=0.5, persistence=2))
    det.reset(3, torch.device("cpu"))
    seen = []
    for probs in ([0.9, 0.9, 0.1], [0.9, 0.1, 0.9], [0.9, 0.9, 0.9]):
        clf.p = torch.tensor(probs)
        seen.append(det(torch.zeros(3, 3, 4, 4))[0].tolist())
    assert seen == [[False, False, False], [True, False, False], [True, False, True]]


def test_uncertainty_penalty_lowers_rewards_where_the_model_is_uncertain(tiny_refinement, tmp_path, monkeypatch):
    """The guard: on steps where the world model's uncertainty is above the BC reference, the reward
    PPO sees is lowered; where it is not, the reward is the detector's."""
    train, world_model, classifier, policy = tiny_refinement
    env = ImaginedEnv(world_model, train, n_envs=2, success_fn=SuccessDetector(classifier, DetectorConfig()))
    real_step = env.step
    levels = iter([0.1, 0.1, 0.1, 0.1] + [0.1, 0.4] * 100)  # first rollout: the reference; then one env far out

    def step(action):
        obs, info = real_step(action)
        info["uncertainty"] = torch.tensor([next(levels), next(levels)])
        return obs, info

    monkeypatch.setattr(env, "step", step)
    cfg = PPOConfig(iterations=2, n_envs=2, horizon=2, epochs=1, minibatches=1, eval_every=0, bc_coef=0.0,
                    uncertainty_coef=2.0, imagined_eval_episodes=0, critic_warmup=0)
    refine(policy, env, train.rgb, train.action, cfg, log := CurveLog(tmp_path / "c", step_key="iteration"))
    log.finish()
    penalty = [v for _, v in _curve(tmp_path / "c", "uncertainty_penalty")]
    # iteration 1 sits at the reference (no penalty); iteration 2: env 2 at 4x the reference on both
    # steps: 2.0 * (4 - 1) per step, summed over 2 steps, averaged over 2 envs = 6.0
    assert penalty[0] == pytest.approx(0.0) and penalty[1] == pytest.approx(6.0)


def test_imagined_success_is_measured_like_real_success(tiny_refinement):
    """Deterministic policy, episodes from the recorded starts in order, success anywhere."""
    train, world_model, classifier, policy = tiny_refinement
    det = SuccessDetector(classifier, DetectorConfig(threshold=0.5, persistence=1))
    env = ImaginedEnv(world_model, train, n_envs=3, success_fn=det)
    assert env.n_starts == train.n_episodes  # one start per recorded episode, its first T frames
    a = imagined_success(policy, env, episodes=5, horizon=3, seed=1)
    b = imagined_success(policy, env, episodes=5, horizon=3, seed=1)
    assert len(a) == 5 and a == b
    bias = classifier.net.mlp[-1].bias
    saved = bias.detach().clone()
    with torch.no_grad():
        bias.fill_(50.0)  # fires on every frame
    try:
        assert imagined_success(policy, env, episodes=4, horizon=2) == [True] * 4
    finally:
        with torch.no_grad():
            bias.copy_(saved)


def _curve(run, name: str) -> list[tuple[int, float]]:
    """A DVCLive curve as (step, value) rows."""
    lines = (run / "plots/metrics" / f"{name}.tsv").read_text().splitlines()[1:]
    return [(int(step), float(value)) for step, value in (line.split("\t") for line in lines)]


def test_refinement_resumed_after_a_kill_is_bit_identical(tiny_refinement, tmp_path, monkeypatch):
    """Killed in iteration 3 of 4: the rerun continues from iteration 2's checkpoint, repeats no real
    evaluation, and returns the uninterrupted run's policy, summary and curves."""
    import copy

    train, world_model, classifier, policy = tiny_refinement
    cfg = PPOConfig(iterations=4, n_envs=2, horizon=3, epochs=1, minibatches=1, eval_every=1, bc_batch=4,
                    critic_warmup=1, select_by_real=True, imagined_eval_episodes=2, lr=1e-3)
    scores = {0: 0.2, 1: 0.1, 2: 0.6, 3: 0.4, 4: 0.5}

    def run(name: str, checkpoint_dir=None, calls=None):
        env = ImaginedEnv(world_model, train, n_envs=2, success_fn=SuccessDetector(classifier, DetectorConfig()))
        log = CurveLog(tmp_path / name, step_key="iteration")

        def real_eval(candidate, iteration: int) -> float:
            if calls is not None:
                calls.append(iteration)
            return scores[iteration]

        refined, summary = refine(copy.deepcopy(policy), env, train.rgb, train.action, cfg, log, real_eval=real_eval,
                                  checkpoint_dir=checkpoint_dir)
        log.finish()
        return refined, summary

    reference, ref_summary = run("ref")
    real_step = ImaginedEnv.step
    steps = {"n": 0}

    # Die inside iteration 3: BC's imagined evaluation takes 3 steps, each iteration 3 more.
    kill_at = 3 + 3 * 2 + 2

    def dying_step(self, action):
        steps["n"] += 1
        if steps["n"] == kill_at:
            raise KeyboardInterrupt
        return real_step(self, action)

    monkeypatch.setattr(ImaginedEnv, "step", dying_step)
    calls: list[int] = []
    with pytest.raises(KeyboardInterrupt):
        run("resumed", tmp_path / "ck", calls)
    assert calls == [0, 1, 2] and json.loads((tmp_path / "ck/state.json").read_text())["iteration"] == 2
    monkeypatch.setattr(ImaginedEnv, "step", real_step)
    calls.clear()
    resumed, summary = run("resumed", tmp_path / "ck", calls)
    assert calls == [3, 4]  # no real episode is spent twice
    for (name, a), b in zip(reference.state_dict().items(), resumed.state_dict().values(), strict=True):
        assert torch.equal(a, b), name
    drop = ("seconds",)
    assert {k: v for k, v in summary.items() if k not in drop} == {k: v for k, v in ref_summary.items() if k not in drop}
    assert summary["selected_iteration"] == 2  # the best candidate survived the kill
    for curve in (tmp_path / "ref/plots/metrics").glob("*.tsv"):
        if curve.stem not in ("imagined_frames_per_s", "update_s"):  # timings
            assert curve.read_text() == (tmp_path / "resumed/plots/metrics" / curve.name).read_text(), curve.stem


def test_a_checkpoint_whose_real_checks_ran_other_scenes_is_not_resumed(tiny_refinement, tmp_path, monkeypatch):
    """Killed after iteration 1, then the real checks' scenes change (scenes.selection edited): the
    rerun starts afresh (every check again), so no best policy chosen on the old scenes comes back."""
    import copy

    train, world_model, classifier, policy = tiny_refinement
    cfg = PPOConfig(iterations=2, n_envs=2, horizon=3, epochs=1, minibatches=1, eval_every=1, bc_batch=4,
                    critic_warmup=1, select_by_real=True, imagined_eval_episodes=2, lr=1e-3)
    calls: list[int] = []

    def run(eval_id: str):
        env = ImaginedEnv(world_model, train, n_envs=2, success_fn=SuccessDetector(classifier, DetectorConfig()))
        return refine(copy.deepcopy(policy), env, train.rgb, train.action, cfg,
                      real_eval=lambda candidate, it: calls.append(it) or 0.5,
                      checkpoint_dir=tmp_path / "ck", real_eval_id=eval_id)

    real_step, steps = ImaginedEnv.step, {"n": 0}

    def dying_step(self, action):  # BC's imagined evaluation 3 steps, iteration 1 3 more, die in 2
        steps["n"] += 1
        if steps["n"] == 3 + 3 + 2:
            raise KeyboardInterrupt
        return real_step(self, action)

    monkeypatch.setattr(ImaginedEnv, "step", dying_step)
    with pytest.raises(KeyboardInterrupt):
        run('{"scenes": ["a", "b"]}')
    assert calls == [0, 1]
    monkeypatch.setattr(ImaginedEnv, "step", real_step)
    calls.clear()
    run('{"scenes": ["a", "b"]}')
    assert calls == [2]  # same checks: resumed
    calls.clear()
    run('{"scenes": ["c", "d"]}')
    assert calls == [0, 1, 2]  # other scenes: afresh
