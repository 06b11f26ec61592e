"""Validation: a good store passes; each kind of bad input is reported with its field and episode."""

from __future__ import annotations

import json
import shutil

import numpy as np
import pytest
import zarr
from typer.testing import CliRunner

from conftest import make_episode, tiny_layout
from pipelines.cli import app
from w4rl_core.data.store import EpisodeStore
from w4rl_core.data.validate import ValidationConfig, validate_store, validate_stores

CONFIG = ValidationConfig(context_frames=4, known_tasks=("coffee-pull-v3", "door-lock-v3"), distinct_scenes=True)


def _set(group, key, fn):
    arr = group[key]
    values = arr[:]
    fn(values)
    arr[:] = values


def nan_action(g, s):
    _set(g, "data/action", lambda a: a.__setitem__((int(s.episode_starts[1]) + 3, 2), np.nan))


def out_of_range_action(g, s):
    _set(g, "data/action", lambda a: a.__setitem__((int(s.episode_starts[2]) + 1, 0), 1.5))


def rgb_float_dtype(g, s):
    rgb = g["data/rgb"][:].astype(np.float32) / 255.0
    del g["data/rgb"]
    g["data"].create_array("rgb", data=rgb)


def rgb_wrong_size(g, s):
    g.attrs["image_size"] = [32, 32]


def success_not_binary(g, s):
    _set(g, "data/success", lambda a: a.__setitem__(int(s.episode_starts[4]) + 2, 3))


def ends_not_monotone(g, s):
    _set(g, "meta/episode_ends", lambda a: a.__setitem__(slice(2, 4), a[2:4][::-1].copy()))


def unknown_task_code(g, s):
    _set(g, "meta/episode_task", lambda a: a.__setitem__(2, 7))


def unknown_kind_code(g, s):
    _set(g, "meta/episode_kind", lambda a: a.__setitem__(4, 9))


def inf_state(g, s):
    _set(g, "data/state", lambda a: a.__setitem__((int(s.episode_starts[5]) + 1, 1), np.inf))


def nan_reward(g, s):
    _set(g, "data/reward", lambda a: a.__setitem__(int(s.episode_starts[3]), np.nan))


def truncated_actions(g, s):
    g["data/action"].resize((s.n_frames - 5, 4))


def blank_frame(g, s):
    _set(g, "data/rgb", lambda a: a.__setitem__(int(s.episode_starts[3]) + 2, 0))


def missing_state(g, s):
    del g["data/state"]


def unknown_version(g, s):
    g.attrs["format_version"] = 3


def repeated_scene(g, s):
    _set(g, "meta/episode_scene", lambda a: a.__setitem__(4, a[1]))


def scene_not_recorded(g, s):
    _set(g, "meta/episode_scene", lambda a: a.__setitem__(2, 0))


def incomplete_write(g, s):
    g.attrs["complete"] = False


# (corruption, field named, episode named or None, words in the message)
CASES = [
    (nan_action, "data/action[2]", 1, "not_nullable"),
    (out_of_range_action, "data/action[0]", 2, "outside bounds"),
    (rgb_float_dtype, "data/rgb", None, "dtype is float32, expected uint8 (affects all 6 episodes)"),
    (rgb_wrong_size, "data/rgb", None, "per-step shape (16, 16, 3), expected (32, 32, 3)"),
    (success_not_binary, "data/success", 4, "0 or 1"),
    (ends_not_monotone, "meta/episode_ends", 3, "strictly increasing"),
    (unknown_task_code, "meta/episode_task", 2, "task code outside"),
    (unknown_kind_code, "meta/episode_kind", 4, "kind code outside"),
    (inf_state, "data/state[1]", 5, "not finite"),
    (nan_reward, "data/reward", 3, "not_nullable"),
    (truncated_actions, "data/action", 5, "steps, but meta/episode_ends says"),
    (blank_frame, "data/rgb", 3, "constant"),
    (missing_state, "data/state", None, "missing"),
    (unknown_version, "attrs.format_version", None, "format_version is 3"),
    (repeated_scene, "meta/episode_scene", 4, "scene repeats an earlier episode's"),
    (scene_not_recorded, "meta/episode_scene", 2, "scene not recorded"),
    (incomplete_write, "attrs.complete", None, "did not finish"),
]


@pytest.fixture
def bad_copy(tiny_store, tmp_path):
    def make(corrupt):
        dst = tmp_path / "bad.zarr"
        shutil.rmtree(dst, ignore_errors=True)
        shutil.copytree(tiny_store.url, dst)
        corrupt(zarr.open_group(dst, mode="r+"), tiny_store)
        return str(dst)

    return make


def test_good_store_passes(tiny_store):
    report = validate_store(tiny_store.url, CONFIG)
    assert report.ok, [str(i) for i in report.issues]
    assert report.info["episodes"] == 6


@pytest.mark.parametrize("corrupt, field, episode, words", CASES, ids=[c[0].__name__ for c in CASES])
def test_bad_input_is_named(bad_copy, corrupt, field, episode, words):
    report = validate_store(bad_copy(corrupt), CONFIG)
    assert not report.ok
    matching = [i for i in report.issues if i.field == field and words in i.message]
    assert matching, [str(i) for i in report.issues]
    assert matching[0].episode == episode
    if episode is not None:
        assert f"episode {episode}" in str(matching[0])


def test_unknown_task_name_and_short_episode(tmp_path):
    store = EpisodeStore.create(tmp_path / "s.zarr", tiny_layout())
    store.append([make_episode(8), make_episode(3, seed=1), make_episode(8, task="hammer-v3", seed=2)])
    report = validate_store(store.url, CONFIG)
    texts = [str(i) for i in report.issues]
    assert any("meta/episode_ends episode 1" in t and "shorter than T+1 = 5" in t for t in texts), texts
    assert any("meta/episode_task episode 2" in t and "allowed task list" in t for t in texts), texts


def test_steps_located_within_episode(bad_copy):
    report = validate_store(bad_copy(nan_action), CONFIG)
    issue = next(i for i in report.issues if i.field == "data/action[2]")
    assert (issue.episode, issue.step) == (1, 3)


def test_many_failures_are_counted_but_reported_briefly(bad_copy):
    def all_actions_bad(g, s):
        _set(g, "data/action", lambda a: a.__setitem__(slice(None), 5.0))

    report = validate_store(bad_copy(all_actions_bad), ValidationConfig(max_reported_per_check=3))
    key = next(k for k in report.issue_counts if k.startswith("data/action[0]"))
    assert report.issue_counts[key] == 63
    assert sum(1 for i in report.issues if i.field == "data/action[0]") == 3


def test_directory_expansion_and_nothing_found(tiny_store, tmp_path):
    result = validate_stores([str(tmp_path)], CONFIG)
    assert result["ok"] and len(result["stores"]) == 1
    empty = tmp_path / "empty"
    empty.mkdir()
    assert not validate_stores([str(empty)], CONFIG)["ok"]


def test_cli_exit_codes_and_json_report(tiny_store, bad_copy, tmp_path):
    runner = CliRunner()
    params = tmp_path / "params.yaml"
    params.write_text("collect:\n  tasks: [coffee-pull-v3, door-lock-v3]\n")
    ok = runner.invoke(app, ["data", "validate", tiny_store.url, "--report", str(tmp_path / "ok.json"), "--params", str(params)])
    assert ok.exit_code == 0, ok.output
    bad = bad_copy(out_of_range_action)
    out = tmp_path / "bad.json"
    res = runner.invoke(app, ["data", "validate", bad, "--report", str(out), "--params", str(params)])
    assert res.exit_code == 1
    assert "data/action[0] episode 2 step 1" in res.output
    report = json.loads(out.read_text())
    assert report["ok"] is False and report["stores"][0]["issues"][0]["episode"] == 2


def test_stale_consolidated_metadata_is_named(bad_copy):
    def resize_without_reconsolidating(g, s):
        raw = zarr.open_group(g.store, mode="r+", use_consolidated=False)
        raw["data/state"].resize((raw["data/state"].shape[0] + 1, raw["data/state"].shape[1]))

    report = validate_store(bad_copy(resize_without_reconsolidating), CONFIG)
    stale = [i for i in report.issues if i.check == "consolidated"]
    assert [i.field for i in stale] == ["data/state"] and "re-consolidating" in stale[0].message
