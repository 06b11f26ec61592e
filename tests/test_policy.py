"""BC, the success classifier, checkpoints, policy rollouts in the simulator, and evaluation."""

from __future__ import annotations

import functools
import json

import numpy as np
import pytest
import torch

from conftest import make_episode, tiny_layout
from w4rl_core.data.collect import CollectConfig, collect
from w4rl_core.data.store import EpisodeStore
from w4rl_core.data.windows import load_windows
from w4rl_core.eval.policy_eval import evaluate_policy, success_summary, wilson_interval, write_videos
from w4rl_core.models.policy import (
    CNNConfig,
    GaussianPolicy,
    PolicyActor,
    PolicyConfig,
    load_classifier,
    load_policy,
    policy_factory,
    save_classifier,
    save_policy,
)
from w4rl_core.robots.protocol import Observation
from w4rl_core.train.bc import train_bc
from w4rl_core.train.reward import train_classifier
from w4rl_core.train.supervised import SupervisedConfig

CNN = CNNConfig(image_size=16, channels=(8, 16), hidden=32)


def _episode(i: int):
    """Brightness tells the action (BC is learnable) and success (the classifier is learnable)."""
    ep = make_episode(12, seed=i)
    level = np.linspace(20, 235, 12)
    ep.rgb = np.broadcast_to(level[:, None, None, None], (12, 16, 16, 3)).astype(np.uint8).copy()
    ep.action = np.stack([np.linspace(-0.8, 0.8, 12)] * 4, axis=1).astype(np.float32)
    ep.success = (level > 160).astype(np.uint8)
    return ep


@pytest.fixture(scope="module")
def data(tmp_path_factory):
    path = tmp_path_factory.mktemp("pol") / "s.zarr"
    EpisodeStore.create(path, tiny_layout()).append(_episode(i) for i in range(6))
    return load_windows([str(path)], image_size=16, val_fraction=0.34, seed=0)


def test_bc_fits_expert_actions(data):
    train, val = data
    cfg = PolicyConfig((-1.0,) * 4, (1.0,) * 4, CNN)
    before = GaussianPolicy(cfg)
    frames = train.rgb.float() / 127.5 - 1
    nll_before = float(before.nll(frames, train.action))
    policy, report = train_bc(cfg, SupervisedConfig(steps=150, batch_size=32, lr=1e-3, augment_shift=0), train, val)
    assert report["train"]["nll"] < nll_before - 2
    assert report["val"]["action_mse"] < 0.05


def test_classifier_precision_recall_f1_on_held_out(data):
    train, val = data
    clf, report = train_classifier(CNN, SupervisedConfig(steps=100, batch_size=32, lr=1e-3), train, val)
    assert report["val"]["f1"] > 0.8 and report["val"]["positives"] > 0
    assert set(report["val"]) >= {"precision", "recall", "f1", "accuracy"}


def test_classifier_needs_both_classes(data):
    train, val = data
    train.success = torch.zeros_like(train.success)
    try:
        with pytest.raises(ValueError, match="success and failure frames"):
            train_classifier(CNN, SupervisedConfig(steps=1), train, val)
    finally:
        train.success = (train.rgb[:, 0, 0, 0] > 160).to(torch.uint8)


def _dies_on_call(n: int, real):
    """`real`, raising KeyboardInterrupt (as a kill would stop the run) on its n-th call."""
    calls = {"n": 0}

    def wrapper(*args, **kwargs):
        calls["n"] += 1
        if calls["n"] == n:
            raise KeyboardInterrupt
        return real(*args, **kwargs)

    return wrapper


def _same_weights(a: torch.nn.Module, b: torch.nn.Module) -> None:
    for (name, pa), pb in zip(a.state_dict().items(), b.state_dict().values(), strict=True):
        assert torch.equal(pa, pb), name


def test_bc_resumed_after_a_kill_is_bit_identical(data, tmp_path, monkeypatch):
    from w4rl_core.train.tracking import CurveLog

    train, val = data
    cfg_p = PolicyConfig((-1.0,) * 4, (1.0,) * 4, CNN)
    cfg = SupervisedConfig(steps=20, batch_size=8, log_every=4, checkpoint_every=5)
    ref_log = CurveLog(tmp_path / "ref-run")
    reference, ref_report = train_bc(cfg_p, cfg, train, val, log=ref_log)  # no checkpoints
    ref_log.finish()
    real_nll = GaussianPolicy.nll
    monkeypatch.setattr(GaussianPolicy, "nll", _dies_on_call(13, real_nll))  # killed in step 13; state of step 10
    with pytest.raises(KeyboardInterrupt):
        train_bc(cfg_p, cfg, train, val, log=CurveLog(tmp_path / "run"), checkpoint_dir=tmp_path / "ck")
    assert not (tmp_path / "run").exists()
    assert json.loads((tmp_path / "ck/state.json").read_text())["step"] == 10
    monkeypatch.setattr(GaussianPolicy, "nll", real_nll)
    log = CurveLog(tmp_path / "run")
    resumed, report = train_bc(cfg_p, cfg, train, val, log=log, checkpoint_dir=tmp_path / "ck")
    log.finish()
    _same_weights(reference, resumed)
    assert report["curve"] == ref_report["curve"] and report["val"] == ref_report["val"]
    curve = "plots/metrics/loss.tsv"  # the DVCLive curve too: replayed rows, then the resumed ones
    assert (tmp_path / "run" / curve).read_text() == (tmp_path / "ref-run" / curve).read_text()
    # A checkpoint of another run (different lr) is not resumed: training starts afresh.
    other = SupervisedConfig(steps=20, batch_size=8, log_every=4, checkpoint_every=5, lr=1e-3)
    fresh, _ = train_bc(cfg_p, other, train, val)
    from_stale, _ = train_bc(cfg_p, other, train, val, checkpoint_dir=tmp_path / "ck")
    _same_weights(fresh, from_stale)


def test_classifier_resumed_after_a_kill_is_bit_identical(data, tmp_path, monkeypatch):
    import w4rl_core.train.reward as reward

    train, val = data
    cfg = SupervisedConfig(steps=12, batch_size=8, log_every=3, checkpoint_every=4)
    reference, ref_report = train_classifier(CNN, cfg, train, val)
    real_bce = reward.F.binary_cross_entropy_with_logits
    monkeypatch.setattr(reward.F, "binary_cross_entropy_with_logits", _dies_on_call(10, real_bce))
    with pytest.raises(KeyboardInterrupt):
        train_classifier(CNN, cfg, train, val, checkpoint_dir=tmp_path / "ck")
    monkeypatch.setattr(reward.F, "binary_cross_entropy_with_logits", real_bce)
    resumed, report = train_classifier(CNN, cfg, train, val, checkpoint_dir=tmp_path / "ck")
    _same_weights(reference, resumed)
    assert report["curve"] == ref_report["curve"] and report["detector"] == ref_report["detector"]


def test_checkpoints_round_trip(tmp_path):
    from w4rl_core.models.policy import SuccessClassifier

    policy = GaussianPolicy(PolicyConfig((-1.0,) * 4, (1.0,) * 4, CNN))
    save_policy(tmp_path / "p", policy, meta={"task": "x"})
    loaded, meta = load_policy(tmp_path / "p")
    x = torch.rand(2, 3, 16, 16) * 2 - 1
    assert torch.equal(policy.distribution(x).mean, loaded.distribution(x).mean) and meta["task"] == "x"
    clf = SuccessClassifier(CNN)
    save_classifier(tmp_path / "c", clf)
    assert torch.equal(clf(x), load_classifier(tmp_path / "c")[0](x))
    with pytest.raises(ValueError, match="expected a 'policy'"):
        load_policy(tmp_path / "c")


def test_actor_resizes_and_respects_bounds():
    policy = GaussianPolicy(PolicyConfig((-1.0, 0.0), (1.0, 5.0), CNNConfig(image_size=16, channels=(8,))))
    actor = PolicyActor(policy, deterministic=False, seed=0)
    obs = Observation(rgb=np.random.default_rng(0).integers(0, 255, (64, 64, 3), dtype=np.uint8),
                      state=np.zeros(3, np.float32))
    a = actor.act(obs)
    assert a.shape == (2,) and -1 <= a[0] <= 1 and 0 <= a[1] <= 5


def test_saved_policy_rolls_out_in_the_simulator_and_is_evaluated(tmp_path):
    policy = GaussianPolicy(PolicyConfig((-1.0,) * 4, (1.0,) * 4, CNN))
    save_policy(tmp_path / "bc", policy)
    base = dict(task="door-lock-v3", episodes=2, episode_len=6, image_size=16, workers=1)
    collect(CollectConfig(kind="policy", **base), tmp_path / "policy.zarr",
            policy_factory=functools.partial(policy_factory, path=str(tmp_path / "bc")), progress=False)
    assert EpisodeStore.open(tmp_path / "policy.zarr").episode_kind == ["policy", "policy"]
    summary = evaluate_policy(tmp_path / "bc", CollectConfig(kind="eval", **base), tmp_path / "eval.zarr")
    assert summary["episodes"] == 2 and 0 <= summary["success_rate"] <= 1
    assert len(summary["ci95"]) == 2
    names = write_videos(tmp_path / "eval.zarr", tmp_path / "videos", "bc", 1)
    assert len(names) == 1 and (tmp_path / "videos" / names[0]).stat().st_size > 0


def test_wilson_interval():
    assert wilson_interval(0, 10)[0] == 0.0 and wilson_interval(10, 10)[1] == 1.0
    lo, hi = wilson_interval(5, 10)
    assert lo == pytest.approx(0.2366, abs=1e-3) and hi == pytest.approx(0.7634, abs=1e-3)
    s = success_summary([True, False, True, True])
    assert s["success_rate"] == 0.75 and s["episodes"] == 4
