"""Bad params are rejected before any work starts, naming the key path and what is accepted."""

from __future__ import annotations

from pathlib import Path

import pytest
import yaml
from typer.testing import CliRunner

from pipelines.cli import app
from pipelines.params import ParamsError, load_params

ROOT = Path(__file__).resolve().parents[1]


def _with(tmp_path: Path, path: str, value) -> Path:
    raw = yaml.safe_load((ROOT / "params.yaml").read_text())
    *parents, last = path.split(".")
    node = raw
    for key in parents:
        node = node.setdefault(key, {})
    node[last] = value
    out = tmp_path / "params.yaml"
    out.write_text(yaml.safe_dump(raw))
    return out


CASES = [
    # (key path, bad value, words the error must contain)
    ("world_model.train.stpes", 10, ["world_model.train.stpes", "accepts:", "steps"]),  # a typo
    ("collect.epsiode_len", 50, ["collect.epsiode_len", "collect accepts:", "episode_len"]),
    ("world_model.train.steps", "many", ["world_model.train.steps", "valid integer", "'many'"]),
    ("world_model.train.steps", -5, ["world_model.train", "steps"]),
    ("world_model.train.lr", "fast", ["world_model.train.lr", "valid number"]),
    ("collect.episode_len", 4, ["episode_len", "context_frames"]),  # horizon 0
    ("world_model.image_size", 30, ["world_model", "image_size 30", "divisible"]),
    ("collect.tasks", ["coffee-pull-v3", "teleport-v3"], ["unknown Meta-World task 'teleport-v3'", "door-lock-v3"]),
    ("world_model.action_bins", 1, ["world_model", "bins"]),
    ("world_model.channels", [32, "wide"], ["world_model.channels.1", "valid integer"]),
    ("refine.ppo.clip_coef", "tight", ["refine.ppo.clip_coef", "valid number"]),
    ("refine.ppo.horizon", 10, ["refine.ppo.horizon", "set by the pipeline"]),
    ("refine.seeds", [0, 0], ["refine.seeds", "distinct"]),
    ("reward.calibrate_on", "dreams", ["reward.calibrate_on", "real or imagined"]),
    ("policy.train.batch_size", 0, ["policy.train", "batch_size"]),
    ("gate.min_uplfit", 0.1, ["gate.min_uplfit", "gate accepts:", "min_uplift"]),
    ("gate.min_episodes", 0, ["gate", "min_episodes"]),
    ("evaluate.episodes", "ten", ["evaluate.episodes", "valid integer"]),
    ("collect.crop", [0.5, 0.5, 0.9], ["crop", "leaves the camera"]),
    ("fidelity.episodes", 2.5, ["fidelity.episodes", "fractional"]),
    ("world_model.sampler.method", 7, ["world_model.sampler.method"]),
    ("world_model.accel.precision", "float8", ["world_model.accel", "precision"]),
    ("world_model.data.source", "disk", ["world_model.data.source", "'memory' or 'stream'", "'disk'"]),
    ("world_model.data.shuffle_buffer", 0, ["world_model.data", "shuffle_buffer", ">= 1"]),
    ("world_model.data.shuffle_buffer", "big", ["world_model.data.shuffle_buffer", "valid integer"]),
    ("validate", [1, 2], ["validate must be a mapping"]),
    # No NaN or infinity passes anywhere: a NaN passes every `x <= 0` range check.
    ("world_model.train.lr", float("nan"), ["world_model.train.lr", "finite number", "nan"]),
    ("world_model.train.lr", "nan", ["world_model.train.lr", "finite number"]),  # pydantic parses the string
    ("policy.train.lr", float("-inf"), ["policy.train.lr", "finite number", "-inf"]),
    ("gate.min_uplift", float("inf"), ["gate.min_uplift", "finite number"]),
    ("collect.crop", [0.1, float("nan"), 0.5], ["collect.crop[1]", "finite number"]),
    # Scenes: roles that would share scenes, or ask for more distinct scenes than their pool holds.
    ("scenes.evaluation", [0], ["scenes.training and scenes.evaluation both use benchmark seed 0", "overlap"]),
    ("scenes.selection", [2, 7], ["scenes.selection and scenes.evaluation both use benchmark seed 2"]),
    ("scenes.evaluation", [3, 3], ["scenes.evaluation", "repeat"]),
    ("scenes.evaluation", [], ["scenes.evaluation", "at least one benchmark seed"]),
    ("evaluate.episodes", 51, ["evaluate.episodes asks for 51 distinct scenes", "scenes.evaluation", "holds 50"]),
    ("collect.episodes", {"expert": 40, "random": 5, "policy": 10},
     ["collect.episodes", "55 distinct scenes", "scenes.training", "holds 50"]),
    # The periodic real checks run only in the opt-in select_by_real mode.
    ("refine", {"eval_episodes": 60, "ppo": {"select_by_real": True, "eval_every": 5}},
     ["refine.eval_episodes asks for 60", "scenes.selection"]),
    ("refine", {"eval_episodes": 0, "ppo": {"select_by_real": True, "eval_every": 5}},
     ["refine.eval_episodes must be >= 1 while refine.ppo.select_by_real is on"]),
    ("refine.trust", {"tolerance": 1.5}, ["refine.trust", "tolerance must be in [0, 1]"]),
    ("refine.trust", {"unchecked": "maybe"}, ["refine.trust", "unchecked must be one of"]),
    ("refine.trust", {"tolerence": 0.1}, ["refine.trust.tolerence", "accepts:"]),
    ("evaluate.episodes", 0, ["evaluate.episodes must be >= 1"]),
    ("gate.min_episodes", 11, ["gate.min_episodes (11) exceeds evaluate.episodes (10)", "could never pass"]),
    # Demos from the simulator and from recorded datasets: each kind from exactly one of them.
    ("collect.simulate", ["expert"], ["collect.simulate ['expert']", "exactly once"]),
    ("collect.imported", {"kinds": ["random"], "mapping": {"camera": "observation.images.top"}},
     ["collect.simulate ['expert', 'random'] and collect.imported.kinds ['random']", "exactly once"]),
    ("collect.imported", {"kinds": ["policy"]}, ["collect.imported", "distinct kinds of ('expert', 'random')"]),
    ("collect.imported", {"kinds": ["expert"], "mapping": {}}, ["collect.imported.mapping", "camera"]),
    ("collect.imported", {"kinds": ["expert"], "mapping": {"camera": "c", "fit": "squash"}},
     ["collect.imported", "fit must be one of"]),
    ("collect.imported", {"kinds": ["expert"], "mapping": {"camera": "c", "task": "x"}},
     ["collect.imported.mapping sets ['task']", "the task's own"]),
    ("collect.imported", {"kinds": ["expert"], "mapping": {"camera": "c", "last_k": "all"}},
     ["collect.imported.mapping.last_k", "valid integer"]),
    ("collect.tasks", ["../up"], ["collect.tasks", "'../up'", "one path segment"]),
    ("collect.tasks", ["my arm"], ["collect.tasks", "'my arm'", "not a usable task name"]),
    # The data flywheel: each round takes fresh evaluation scenes, so the pool bounds the rounds.
    ("flywheel", {"round": 5}, ["evaluate.episodes x (flywheel.round 5 + 1) asks for 60 distinct scenes",
                                "scenes.evaluation", "holds 50"]),
    ("flywheel", {"refine_from": "latest"}, ["flywheel.refine_from must be promoted or bc"]),
    ("flywheel", {"round": -1}, ["flywheel.round must be >= 0"]),
    # Operator success labels: for a bridge robot only, from a known channel, with a bounded wait.
    ("robot", {"success": "queue"}, ["robot.success queue", "robot.kind bridge"]),
    ("robot", {"kind": "bridge", "urls": {"coffee-pull-v3": "http://127.0.0.1:1"}, "success": "guess"},
     ["robot.success must be one of ('robot', 'prompt', 'queue')"]),
    ("robot", {"kind": "bridge", "urls": {"coffee-pull-v3": "http://127.0.0.1:1"}, "success": "queue",
               "label_timeout_s": 0}, ["robot.label_timeout_s must be > 0"]),
]


@pytest.mark.parametrize("path, value, words", CASES, ids=[c[0] + "=" + repr(c[1]) for c in CASES])
def test_bad_params_are_named(tmp_path, path, value, words):
    with pytest.raises(ParamsError) as err:
        load_params(_with(tmp_path, path, value))
    message = str(err.value)
    assert message.startswith(str(tmp_path / "params.yaml")), message
    for word in words:
        assert word in message, (word, message)
    assert "Traceback" not in message


def test_the_committed_profiles_load():
    for path in [ROOT / "params.yaml", *sorted((ROOT / "profiles").glob("*.yaml"))]:
        load_params(path)


def test_not_yaml_and_unknown_sections(tmp_path):
    bad = tmp_path / "params.yaml"
    bad.write_text("collect: [unclosed\n")
    with pytest.raises(ParamsError, match="not valid YAML"):
        load_params(bad)
    bad.write_text("colect: {}\n")
    with pytest.raises(ParamsError, match=r"unknown section\(s\) \['colect'\]"):
        load_params(bad)


def test_a_stage_refuses_bad_params_before_any_work(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    _with(tmp_path, "world_model.train.stpes", 10)
    result = CliRunner().invoke(app, ["train", "world-model"])
    assert result.exit_code != 0
    assert "world_model.train.stpes" in result.output and not (tmp_path / "data").exists()


@pytest.mark.parametrize("args, words", [
    (["--task", "teleport-v3", "--kind", "expert"], ["unknown Meta-World task 'teleport-v3'"]),
    (["--task", "door-lock-v3", "--kind", "dreamt"], ["dreamt"]),
    (["--task", "door-lock-v3", "--kind", "expert", "--episodes", "0"], ["--episodes", "greater than or equal to 1"]),
    # more than params gives the kind: the extra episodes would take the next kind's training scenes
    (["--task", "door-lock-v3", "--kind", "expert", "--episodes", "21"], ["exceeds collect.episodes.expert"]),
])
def test_cli_overrides_are_checked_before_any_work(tmp_path, monkeypatch, args, words):
    monkeypatch.chdir(ROOT)
    out = tmp_path / "never.zarr"
    result = CliRunner().invoke(app, ["collect", *args, "--out", str(out)])
    assert result.exit_code == 2, result.output
    assert all(w in result.output for w in words), result.output
    assert not out.exists()


def test_collect_refuses_a_kind_params_gives_no_training_scenes(tmp_path):
    """A kind missing from collect.episodes has no run of the training pool of its own: collecting
    it would take another kind's scenes, so the stage refuses before the simulator starts."""
    from pipelines.stages.collect import run

    raw = yaml.safe_load((ROOT / "params.yaml").read_text())
    del raw["collect"]["episodes"]["random"]
    (tmp_path / "params.yaml").write_text(yaml.safe_dump(raw))
    params = load_params(tmp_path / "params.yaml")
    with pytest.raises(ValueError, match="collect.episodes has no 'random' entry"):
        run(params, "door-lock-v3", "random", str(tmp_path / "never.zarr"), episodes=2)
    assert not (tmp_path / "never.zarr").exists()


def _own_task(tmp_path: Path, robot: dict) -> Path:
    raw = yaml.safe_load((ROOT / "params.yaml").read_text())
    raw["collect"] |= {"tasks": ["arm-lock"], "simulate": [],
                       "imported": {"kinds": ["expert", "random"], "mapping": {"camera": "observation.images.top"}}}
    raw["robot"] = robot
    raw["refine"]["ppo"] = {**raw["refine"].get("ppo", {}), "select_by_real": False}
    out = tmp_path / "params.yaml"
    out.write_text(yaml.safe_dump(raw))
    return out


def test_a_task_of_your_own_needs_imported_demos_and_a_robot_behind_the_bridge(tmp_path):
    """Any task name once nothing runs it in the simulator; with the simulator as the robot, the
    policies would act in Meta-World, which does not know the task: refused, naming it."""
    with pytest.raises(ParamsError) as err:
        load_params(_own_task(tmp_path, {"kind": "simulator"}))
    assert "unknown Meta-World task 'arm-lock'" in str(err.value) and "robot.kind bridge" in str(err.value)
    p = load_params(_own_task(tmp_path, {"kind": "bridge", "urls": {"arm-lock": "http://127.0.0.1:8765"}}))
    assert p.collect.tasks == ("arm-lock",) and p.collect.imported.dataset("arm-lock") == Path("data/raw/arm-lock")
    mapping = p.collect.imported.lerobot_mapping("arm-lock", p.collect.image_size)
    assert (mapping.task, mapping.image_size, mapping.camera) == ("arm-lock", 64, "observation.images.top")
