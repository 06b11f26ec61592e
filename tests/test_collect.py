"""Collection in the real Meta-World simulator (MuJoCo, EGL rendering on the CPU)."""

from __future__ import annotations

import functools

import numpy as np
import pytest

from w4rl_core.data.collect import CollectConfig, collect, episode_seed
from w4rl_core.data.store import EpisodeStore
from w4rl_core.data.validate import ValidationConfig, validate_store
from w4rl_core.robots.metaworld_robot import MetaWorldConfig, MetaWorldRobot, RandomPolicy, canonical_task


def test_collected_expert_store_is_valid_and_successful(collected_store):
    store = EpisodeStore.open(collected_store)
    assert store.n_episodes == 3 and store.n_frames == 36
    assert store.attrs["image_size"] == [32, 32] and store.attrs["camera"] == "corner2"
    assert store.attrs["action_low"] == [-1.0] * 4 and store.attrs["state_dim"] == 39
    assert store.episode_kind == ["expert"] * 3
    ep = store.episode(0)
    assert ep.rgb.dtype == np.uint8 and ep.rgb.std() > 5  # a real image, not a blank render
    assert np.abs(np.diff(ep.rgb.astype(np.float32), axis=0)).mean() > 0  # the arm moves
    assert ep.success[0] == 0  # the reset state is not solved
    report = validate_store(str(collected_store), ValidationConfig(context_frames=4))
    assert report.ok, [str(i) for i in report.issues]


def test_collection_is_deterministic_across_worker_counts(tmp_path):
    base = dict(task="door-lock", kind="random", episodes=3, episode_len=6, image_size=24)
    a = collect(CollectConfig(**base, workers=1), tmp_path / "a.zarr", progress=False)
    b = collect(CollectConfig(**base, workers=2), tmp_path / "b.zarr", progress=False)
    assert a == b
    sa, sb = EpisodeStore.open(tmp_path / "a.zarr"), EpisodeStore.open(tmp_path / "b.zarr")
    for key in ("data/rgb", "data/action", "data/state", "data/success"):
        np.testing.assert_array_equal(sa.array(key)[:], sb.array(key)[:])
    c = collect(CollectConfig(**base, workers=1, seed=1), tmp_path / "c.zarr", progress=False)
    assert c["frames"] == a["frames"]
    assert not np.array_equal(EpisodeStore.open(tmp_path / "c.zarr").array("data/action")[:], sa.array("data/action")[:])


def test_expert_solves_the_task_over_a_full_episode(tmp_path):
    cfg = CollectConfig(
        task="coffee-pull-v3", kind="expert", episodes=3, episode_len=50, image_size=16, expert_noise=0.0, workers=1
    )
    summary = collect(cfg, tmp_path / "e.zarr", progress=False)
    # Meta-World's scripted expert: 9-10/10 with 500 steps; we give it 100 physics steps.
    assert summary["success_rate"] >= 2 / 3


class _ConstantPolicy:
    def __init__(self, value: float) -> None:
        self.value = value

    def act(self, obs):
        assert obs.rgb.shape == (16, 16, 3) and obs.state.shape == (39,)
        return np.full(4, self.value, np.float32)


def _constant_factory(robot, seed, value=0.25):
    return _ConstantPolicy(value)


def test_policy_kind_uses_any_object_with_act(tmp_path):
    cfg = CollectConfig(task="hammer-v3", kind="policy", episodes=1, episode_len=5, image_size=16, workers=1)
    collect(cfg, tmp_path / "p.zarr", policy_factory=functools.partial(_constant_factory, value=0.25), progress=False)
    store = EpisodeStore.open(tmp_path / "p.zarr")
    assert store.episode_kind == ["policy"]
    np.testing.assert_allclose(store.array("data/action")[:], 0.25)
    with pytest.raises(ValueError, match="needs a policy factory"):
        collect(cfg, tmp_path / "q.zarr", progress=False)
    assert not (tmp_path / "q.zarr").exists()


def test_failed_collection_leaves_no_output(tmp_path, monkeypatch):
    import w4rl_core.data.collect as mod

    def boom(index):
        raise RuntimeError("simulated crash")

    monkeypatch.setattr(mod, "_collect_one", boom)
    with pytest.raises(RuntimeError, match="simulated crash"):
        collect(CollectConfig(task="soccer", kind="random", episodes=1, workers=1), tmp_path / "x.zarr", progress=False)
    assert list(tmp_path.iterdir()) == []


def test_robot_protocol_and_action_clipping():
    robot = MetaWorldRobot(MetaWorldConfig(task="lever-pull", image_size=16, action_repeat=1))
    try:
        obs = robot.reset(seed=3)
        again = robot.reset(seed=3)
        np.testing.assert_array_equal(obs.state, again.state)  # same seed, same scene
        obs2, info = robot.step(np.array([5.0, -5.0, 0.0, 0.0]))  # clipped to the bounds
        assert set(info) >= {"success", "reward"} and obs2.rgb.shape == (16, 16, 3)
        act = RandomPolicy(robot.action_low, robot.action_high, seed=0).act(obs)
        assert np.all(act >= -1) and np.all(act <= 1)
    finally:
        robot.close()


def test_unknown_task_and_bad_config_are_rejected():
    with pytest.raises(ValueError, match="unknown Meta-World task 'coffe-pull'"):
        canonical_task("coffe-pull")
    with pytest.raises(ValueError, match="kind"):
        CollectConfig(task="coffee-pull", kind="human", episodes=1)
    assert canonical_task("soccer") == "soccer-v3"


def test_episode_seeds_are_stable_and_distinct():
    assert episode_seed(0, "soccer-v3", "expert", 1) == episode_seed(0, "soccer-v3", "expert", 1)
    seeds = {episode_seed(0, t, k, i) for t in ("a", "b") for k in ("expert", "random") for i in range(10)}
    assert len(seeds) == 40


def test_crop_keeps_the_requested_part_of_the_camera_view():
    cropped_cfg = MetaWorldConfig(task="door-lock", image_size=24, crop=(0.25, 0.125, 0.75))
    assert cropped_cfg.render_size == 32 and cropped_cfg.crop_box() == (8, 4)
    robot = MetaWorldRobot(cropped_cfg)
    try:
        cropped = robot.reset(seed=5).rgb
    finally:
        robot.close()
    robot = MetaWorldRobot(MetaWorldConfig(task="door-lock", image_size=32))
    try:
        full = robot.reset(seed=5).rgb
    finally:
        robot.close()
    assert cropped.shape == (24, 24, 3)
    np.testing.assert_array_equal(cropped, full[8:32, 4:28])  # the crop of the upright full view
    with pytest.raises(ValueError, match="leaves the camera's view"):
        MetaWorldConfig(task="door-lock", crop=(0.5, 0.0, 0.75))
    with pytest.raises(ValueError, match="fractions"):
        CollectConfig(task="door-lock", kind="expert", episodes=1, crop=(0.0, 0.0, 0.0))
