"""`w4rl data import lerobot` and `w4rl data export lerobot`: the verbs over w4rl_core/data/lerobot/
(whose reading and writing tests/test_lerobot.py covers): the mapping file is type-checked with errors
naming its key, bad input exits 2 with nothing written, and store -> LeRobot -> store holds."""

from __future__ import annotations

import json

import numpy as np
from typer.testing import CliRunner

from pipelines.cli import app
from test_lerobot import CAM, _raw_episode, _same_but_frames, _store, _w4rl_episodes, write_v21
from w4rl_core.data.store import EpisodeStore

runner = CliRunner()


def _v21(tmp_path):
    return write_v21(tmp_path / "v21", [_raw_episode(e, n, succeed=e != 1) for e, n in enumerate((10, 15, 12))])


def test_import_with_a_mapping_file_then_validate(tmp_path):
    root = _v21(tmp_path)
    mapping = tmp_path / "mapping.yaml"
    mapping.write_text(f"camera: {CAM}\nimage_size: 32\nkinds: {{1: policy}}\ntask: my-arm-pick\n")
    out = tmp_path / "store.zarr"
    result = runner.invoke(app, ["data", "import", "lerobot", str(root), str(out), "--mapping", str(mapping)])
    assert result.exit_code == 0, result.output
    assert "imported 3 episodes (37 frames)" in result.output
    store = EpisodeStore.open(out)
    assert store.episode_lengths.tolist() == [10, 15, 12]
    assert [store.episode(i).kind for i in range(3)] == ["expert", "policy", "expert"]
    assert {store.episode(i).task for i in range(3)} == {"my-arm-pick"}  # any task name, no simulator
    scenes = [store.episode(i).scene for i in range(3)]  # a recorded episode is its own scene
    assert len(set(scenes)) == 3 and all(len(s) == 16 for s in scenes)
    again = tmp_path / "again.zarr"
    assert runner.invoke(app, ["data", "import", "lerobot", str(root), str(again), "--mapping", str(mapping)]
                         ).exit_code == 0
    assert [EpisodeStore.open(again).episode(i).scene for i in range(3)] == scenes  # stable: an id, not a draw
    info = runner.invoke(app, ["data", "info", str(out)])
    assert info.exit_code == 0 and "my-arm-pick/policy" in info.output, info.output


def test_camera_option_alone_is_a_mapping(tmp_path):
    root = _v21(tmp_path)
    result = runner.invoke(app, ["data", "import", "lerobot", str(root), str(tmp_path / "s.zarr"), "--camera", CAM])
    assert result.exit_code == 0, result.output
    assert EpisodeStore.open(tmp_path / "s.zarr").layout.image_size == (64, 64)  # the mapping's default side


def test_a_bad_mapping_names_the_key_and_writes_nothing(tmp_path):
    root = _v21(tmp_path)
    out = tmp_path / "store.zarr"
    for text, needle in ((f"camera: {CAM}\nimage_sise: 32\n", "mapping.image_sise"),
                         (f"camera: {CAM}\nlast_k: .nan\n", "mapping.last_k"),
                         (f"camera: {CAM}\nsuccess: next.reward\n", "reward_threshold"),
                         ("action: action\n", "--camera")):
        (tmp_path / "m.yaml").write_text(text)
        result = runner.invoke(app, ["data", "import", "lerobot", str(root), str(out), "--mapping",
                                     str(tmp_path / "m.yaml")])
        assert result.exit_code == 2 and needle in result.output, (text, result.output)
        assert not out.exists()


def test_bad_input_exits_2_naming_file_episode_and_field_with_nothing_written(tmp_path):
    root = _v21(tmp_path)
    info = json.loads((root / "meta/info.json").read_text())
    info["codebase_version"] = "v9.9"
    (root / "meta/info.json").write_text(json.dumps(info))
    out = tmp_path / "store.zarr"
    result = runner.invoke(app, ["data", "import", "lerobot", str(root), str(out), "--camera", CAM])
    assert result.exit_code == 2, result.output
    assert "nothing written" in result.output and "meta/info.json" in result.output and "v9.9" in result.output
    assert not out.exists()


def test_export_then_import_round_trip_and_export_refuses_an_existing_directory(tmp_path):
    episodes = _w4rl_episodes()
    _store(tmp_path / "a.zarr", episodes)
    out = tmp_path / "lerobot"
    result = runner.invoke(app, ["data", "export", "lerobot", str(tmp_path / "a.zarr"), str(out), "--lossless"])
    assert result.exit_code == 0, result.output
    assert json.loads((out / "meta/info.json").read_text())["codebase_version"] == "v3.0"
    again = runner.invoke(app, ["data", "export", "lerobot", str(tmp_path / "a.zarr"), str(out)])
    assert again.exit_code == 2 and "exists" in again.output
    mapping = tmp_path / "m.yaml"
    mapping.write_text("camera: observation.images.corner\nimage_size: 16\naction_low: [-1, -1, -1, -1]\n"
                       "action_high: [1, 1, 1, 1]\n")
    result = runner.invoke(app, ["data", "import", "lerobot", str(out), str(tmp_path / "b.zarr"),
                                 "--mapping", str(mapping)])
    assert result.exit_code == 0, result.output
    back = EpisodeStore.open(tmp_path / "b.zarr")
    for i, ep in enumerate(episodes):
        got = back.episode(i)
        _same_but_frames(got, ep)
        np.testing.assert_array_equal(got.rgb, ep.rgb)
    missing = runner.invoke(app, ["data", "export", "lerobot", str(tmp_path / "nope.zarr"), str(tmp_path / "x")])
    assert missing.exit_code == 2 and not (tmp_path / "x").exists()
