"""Scenes are first-class: recorded per episode, drawn without replacement from per-role pools that
never share a benchmark seed, and checked on the data before an evaluation is reported."""

from __future__ import annotations

from dataclasses import replace
from pathlib import Path

import numpy as np
import pytest

from w4rl_core.data.collect import CollectConfig, collect
from w4rl_core.data.store import EpisodeStore
from w4rl_core.robots.scenes import SCENES_PER_BENCHMARK, ScenePool, SceneSlice, check_disjoint, scene_id

ROOT = Path(__file__).resolve().parents[1]


def test_pools_locate_scenes_without_replacement_and_refuse_overlap():
    pool = ScenePool((7, 3))
    assert pool.capacity == 2 * SCENES_PER_BENCHMARK
    located = [pool.locate(i) for i in range(pool.capacity)]
    assert len(set(located)) == pool.capacity and located[0] == (7, 0) and located[50] == (3, 0)
    with pytest.raises(IndexError, match="outside the pool's 100 scenes"):
        pool.locate(100)
    with pytest.raises(ValueError, match="asks for 60 distinct scenes from scene 45"):
        SceneSlice(ScenePool((1,)), first=45).check_fits(60, "evaluation")
    with pytest.raises(ValueError, match="scenes.a and scenes.b both use benchmark seed 3"):
        check_disjoint({"a": ScenePool((1, 3)), "b": ScenePool((3,))})
    assert scene_id("t", np.array([0.1, 0.2])) == scene_id("t", [0.1, 0.2]) and len(scene_id("t", [0.1])) == 16
    assert scene_id("t", np.array([0.1, 0.2])) != scene_id("u", np.array([0.1, 0.2]))


def test_collected_episodes_record_distinct_reproducible_scenes(tmp_path):
    """Real simulator: each episode's scene is recorded, none repeats, the same config gives the
    same scenes, and another pool gives none of them."""
    base = CollectConfig(task="door-lock-v3", kind="random", episodes=3, episode_len=6, image_size=16, workers=1,
                         scene_seeds=(11, 12), first_scene=49)  # crosses from one benchmark seed to the next
    scenes = []
    for name, config in (("a", base), ("b", base), ("c", replace(base, scene_seeds=(13,), first_scene=0))):
        collect(config, tmp_path / f"{name}.zarr", progress=False)
        scenes.append(EpisodeStore.open(tmp_path / f"{name}.zarr").episode_scene)
    assert len(set(scenes[0])) == 3 and all(len(s) == 16 for s in scenes[0])
    assert scenes[0] == scenes[1]
    assert not set(scenes[0]) & set(scenes[2])
    assert EpisodeStore.open(tmp_path / "a.zarr").info()["scenes"] == {"recorded": 3, "distinct": 3}


def test_the_pipeline_gives_each_kind_its_own_training_scenes_and_evaluation_others():
    from pipelines.params import load_params

    params = load_params(ROOT / "profiles" / "cpu.yaml")
    runs = []
    for kind in ("expert", "random", "policy"):
        s = params.scene_slice("training", kind)
        n = params.collect.episodes[kind]
        pool = ScenePool(s["scene_seeds"])
        runs.append({pool.locate(s["first_scene"] + j) for j in range(n)})
    assert sum(map(len, runs)) == len(set().union(*runs)) == sum(params.collect.episodes.values())
    evaluation = params.scene_slice("evaluation")
    assert not set(evaluation["scene_seeds"]) & set(params.scene_slice("training", "expert")["scene_seeds"])


def test_evaluation_refuses_repeated_or_seen_scenes():
    from pipelines.stages.policy import SceneLeak, scene_report

    ok = scene_report("t", ["a" * 16, "b" * 16], training={"c" * 16}, selection={"d" * 16})
    assert ok | {"protocol": None} == {"episodes_per_policy": 2, "distinct": 2, "overlap_selection": 0,
                                       "overlap_training": 0, "protocol": None}
    for scenes, training, selection, words in [
        (["a" * 16, "a" * 16], set(), set(), "1 episodes repeat a scene"),
        (["a" * 16, "b" * 16], {"b" * 16}, set(), "1 scenes are scenes of the task's training episodes"),
        (["a" * 16, "b" * 16], set(), {"a" * 16, "b" * 16}, "2 scenes are scenes refinement's real checks"),
        (["a" * 16, ""], set(), set(), "record none"),
    ]:
        with pytest.raises(SceneLeak, match=words):
            scene_report("t", scenes, training, selection)


def test_evaluation_refuses_training_stores_with_unrecorded_scenes(tmp_path, monkeypatch):
    """An episode without a scene could be any evaluation scene: evaluate refuses, naming the store,
    instead of reporting overlap_training 0."""
    import shutil
    from dataclasses import replace as copy_with

    from conftest import make_episode, tiny_layout
    from pipelines.params import load_params
    from pipelines.paths import EPISODES_DIR, store_path
    from pipelines.stages.policy import SceneLeak, training_scenes

    params = load_params(ROOT / "profiles" / "tiny.yaml")
    task = params.collect.tasks[0]
    monkeypatch.chdir(tmp_path)
    for kind, count in params.collect.episodes.items():
        if count > 0:
            store = EpisodeStore.create(store_path(EPISODES_DIR, task, kind), tiny_layout(tasks=(task,)))
            store.append([make_episode(6, task=task, kind=kind, seed=i) for i in range(2)])
    assert len(training_scenes(params, task)) == 2  # the same two seeds' scenes in every kind's store
    kind = next(k for k, c in params.collect.episodes.items() if c > 0)
    shutil.rmtree(store_path(EPISODES_DIR, task, kind))
    unknown = EpisodeStore.create(store_path(EPISODES_DIR, task, kind), tiny_layout(tasks=(task,)))
    unknown.append([copy_with(make_episode(6, task=task, kind=kind), scene="")])
    with pytest.raises(SceneLeak, match=rf"{kind}.zarr: 1 training episodes record no scene"):
        training_scenes(params, task)


def test_the_detector_is_checked_on_episodes_that_did_not_choose_it(tmp_path):
    from conftest import make_episode, tiny_layout
    from w4rl_core.data.windows import load_windows
    from w4rl_core.train.reward import split_for_check

    store = EpisodeStore.create(tmp_path / "s.zarr", tiny_layout())
    store.append([make_episode(6, kind=k, seed=i) for i, k in enumerate(["expert"] * 3 + ["policy"] * 4)])
    windows, _ = load_windows([store.url], 16)
    first, second = split_for_check(windows)
    assert first.n_episodes + second.n_episodes == 7
    assert sorted(first.episode_kind) == ["expert", "expert", "policy", "policy"]
    assert sorted(second.episode_kind) == ["expert", "policy", "policy"]


def test_promoting_bc_as_refined_is_allowed_only_at_smoke_scale(tmp_path):
    import yaml

    from pipelines.params import ParamsError, load_params

    raw = yaml.safe_load((ROOT / "profiles" / "gpu.yaml").read_text())  # not smoke scale
    raw["gate"]["require_refinement_gain"] = False
    (tmp_path / "p.yaml").write_text(yaml.safe_dump(raw))
    with pytest.raises(ParamsError, match="require_refinement_gain: false would promote BC"):
        load_params(tmp_path / "p.yaml")
    assert not load_params(ROOT / "profiles" / "tiny.yaml").gate["require_refinement_gain"]


def test_scene_ids_listed_from_params_are_the_ones_episodes_run(tmp_path):
    """refine lists the selection scenes from params (so a resumed run lists them too); the listing
    must be exactly what the simulator places."""
    from dataclasses import replace as rep

    from pipelines.params import load_params
    from pipelines.stages.policy import eval_config, scene_ids

    params = load_params(ROOT / "profiles" / "tiny.yaml")
    params = rep(params, collect=rep(params.collect, episode_len=6))
    task = params.collect.tasks[0]
    config = eval_config(params, task, "selection", 2, seed=0, workers=1)
    collect(config, tmp_path / "s.zarr", policy_factory=_random_policy, progress=False)
    assert EpisodeStore.open(tmp_path / "s.zarr").episode_scene == scene_ids(params, task, "selection", 2)


def _random_policy(robot, seed):
    from w4rl_core.robots.metaworld_robot import RandomPolicy

    return RandomPolicy(robot.action_low, robot.action_high, seed)
