"""CLI discoverability, `data info`, params loading and the two profiles."""

from pathlib import Path

import pytest
from typer.testing import CliRunner

from pipelines.cli import app
from pipelines.params import ParamsError, load_params
from w4rl_core.robots.metaworld_robot import PAPER_TASKS

ROOT = Path(__file__).resolve().parents[1]
runner = CliRunner()


@pytest.mark.parametrize("args", [["--help"], ["data", "--help"], ["collect", "--help"], ["data", "validate", "--help"]])
def test_help_is_discoverable(args):
    result = runner.invoke(app, args)
    assert result.exit_code == 0 and "Usage" in result.output


def test_data_info_text_and_json(tiny_store):
    text = runner.invoke(app, ["data", "info", tiny_store.url])
    assert text.exit_code == 0
    assert "6 episodes, 63 frames" in text.output and "door-lock-v3/random" in text.output
    js = runner.invoke(app, ["data", "info", tiny_store.url, "--json"])
    assert '"episodes": 6' in js.output


def test_data_info_on_missing_store_fails_clearly(tmp_path):
    result = runner.invoke(app, ["data", "info", str(tmp_path / "nope.zarr")])
    assert result.exit_code == 1 and "no Zarr v3 group" in result.output


def test_default_params_are_the_cpu_smoke_profile():
    p = load_params(ROOT / "params.yaml")
    assert p.profile.smoke_scale and "SMOKE-SCALE" in p.profile.banner
    assert set(p.collect.tasks) <= set(PAPER_TASKS)


def test_gpu_profile_is_the_paper_recipe():
    p = load_params(ROOT / "profiles/gpu.yaml")
    assert not p.profile.smoke_scale
    assert p.collect.tasks == PAPER_TASKS
    assert p.collect.episodes["expert"] == 50 and p.collect.episodes["random"] == 30
    assert p.collect.episode_len == 50


def test_params_errors_name_the_key(tmp_path):
    bad = tmp_path / "p.yaml"
    bad.write_text("collect:\n  taks: [soccer-v3]\n")
    with pytest.raises(ParamsError, match=r"unknown key\(s\) collect.taks; collect accepts: .*tasks"):
        load_params(bad)
    bad.write_text("collect:\n  episodes: {human: 3}\n")
    with pytest.raises(ParamsError, match="unknown kinds"):
        load_params(bad)
    bad.write_text("colect: {}\n")
    with pytest.raises(ParamsError, match="unknown section"):
        load_params(bad)
    bad.write_text("reward: {train_on: imagined}\n")
    with pytest.raises(ParamsError, match="reward.train_on must be real or real_and_imagined"):
        load_params(bad)


def test_collect_cli_rejects_unknown_task(tmp_path):
    result = runner.invoke(app, ["collect", "--task", "nope", "--kind", "expert", "--out", str(tmp_path / "x.zarr"),
                                 "--params", str(ROOT / "params.yaml")])
    assert result.exit_code == 2 and "unknown Meta-World task 'nope'" in result.output


def test_validate_from_params_checks_exactly_the_pipeline_stores(tmp_path, tiny_store):
    import shutil

    root = tmp_path / "episodes"
    (root / "demos" / "coffee-pull-v3").mkdir(parents=True)
    shutil.copytree(tiny_store.url, root / "demos" / "coffee-pull-v3" / "expert.zarr")
    shutil.copytree(tiny_store.url, root / "old-task.zarr")  # a store no longer in params: ignored
    params = tmp_path / "params.yaml"
    params.write_text("collect:\n  tasks: [coffee-pull-v3, door-lock-v3]\n  episodes: {expert: 2, random: 0}\n")
    result = runner.invoke(app, ["data", "validate", "--from-params", str(root), "--params", str(params),
                                 "--report", str(tmp_path / "r.json")])
    assert result.exit_code == 1  # door-lock-v3/expert.zarr is expected but missing
    assert "ok: " + str(root / "demos" / "coffee-pull-v3" / "expert.zarr") in result.output
    assert "door-lock-v3/expert.zarr: store" in result.output and "old-task" not in result.output
