"""Bad model files: truncated or corrupt weights, a config.json that does not match them, a model
for another image size, action space or task. One line naming the file and the mismatch; never a
stack trace from inside torch, never pickle."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from w4rl_core.models.model_files import ModelFileError
from w4rl_core.models.policy import (CNNConfig, GaussianPolicy, PolicyConfig, load_classifier, load_policy,
                                     policy_factory, save_policy)
from w4rl_core.models.unet import UNetConfig
from w4rl_core.models.world_model import WorldModel, WorldModelConfig, load_world_model, save_world_model

ROOT = Path(__file__).resolve().parents[1]


def _policy(path: Path, task: str = "door-lock-v3", action_dim: int = 4) -> Path:
    torch.manual_seed(0)
    cfg = PolicyConfig((-1.0,) * action_dim, (1.0,) * action_dim, CNNConfig(image_size=16, channels=(8,)))
    save_policy(path, GaussianPolicy(cfg), meta={"task": task})
    return path


def _world_model(path: Path, image_size: int = 16) -> Path:
    torch.manual_seed(0)
    cfg = WorldModelConfig(action_low=(-1.0,) * 4, action_high=(1.0,) * 4,
                           unet=UNetConfig(image_size=image_size, context_frames=2, channels=(16, 32)))
    save_world_model(path, WorldModel(cfg))
    return path


def _truncate(file: Path) -> None:
    file.write_bytes(file.read_bytes()[: file.stat().st_size // 2])


def _garble(file: Path) -> None:
    file.write_bytes(b"\x00" * 8 + file.read_bytes()[8:])  # the header length becomes 0


@pytest.mark.parametrize("damage, words", [
    (_truncate, "not a readable safetensors file"),
    (_garble, "not a readable safetensors file"),
    (lambda f: f.unlink(), "model.safetensors: missing"),
])
@pytest.mark.parametrize("kind", ["policy", "world_model"])
def test_damaged_weights_are_named(tmp_path, kind, damage, words):
    path = _policy(tmp_path / "m") if kind == "policy" else _world_model(tmp_path / "m")
    damage(path / "model.safetensors")
    with pytest.raises(ModelFileError) as err:
        (load_policy if kind == "policy" else load_world_model)(path)
    assert str(path / "model.safetensors") in str(err.value) and words in str(err.value)


def test_config_that_does_not_match_the_weights_is_named(tmp_path):
    path = _policy(tmp_path / "p")
    raw = json.loads((path / "config.json").read_text())
    raw["config"]["cnn"]["channels"] = [16]  # the weights are for 8 channels
    (path / "config.json").write_text(json.dumps(raw))
    with pytest.raises(ModelFileError, match=r"model.safetensors does not match .*config.json: shapes \(file vs config\)"):
        load_policy(path)
    raw["config"]["cnn"]["channels"] = "many"
    (path / "config.json").write_text(json.dumps(raw))
    with pytest.raises(ModelFileError, match=r"config.json: does not describe a valid policy"):
        load_policy(path)
    (path / "config.json").write_text("{not json")
    with pytest.raises(ModelFileError, match=r"config.json: not valid JSON"):
        load_policy(path)


def test_a_model_of_another_kind_or_format_is_named(tmp_path):
    path = _policy(tmp_path / "p")
    with pytest.raises(ModelFileError, match=r"holds a 'policy', expected a 'success_classifier'"):
        load_classifier(path)
    with pytest.raises(ModelFileError, match=r"world-model format"):
        load_world_model(path)  # a policy directory where a world model belongs
    with pytest.raises(ModelFileError, match=r"config.json: missing; is .* a world-model directory"):
        load_world_model(tmp_path / "nothing")


def test_a_policy_for_another_task_or_action_space_is_refused(tmp_path):
    path = _policy(tmp_path / "p", task="door-lock-v3")
    assert load_policy(path, task="door-lock")[1]["task"] == "door-lock-v3"  # the -v3 suffix is optional
    with pytest.raises(ModelFileError, match=r"task: the policy has 'door-lock-v3', used with 'coffee-pull-v3'"):
        load_policy(path, task="coffee-pull-v3")

    class Robot:  # what policy_factory needs of a robot
        task, action_low = "door-lock-v3", [-1.0] * 3

    with pytest.raises(ModelFileError, match=r"action_dim: the policy has 4, used with 3"):
        policy_factory(Robot(), seed=0, path=str(path))


def test_the_cli_says_it_in_one_line(tmp_path):
    """A stage given a world model trained for other frames: exit 1, the file and the mismatch."""
    repo = tmp_path / "repo"
    (repo / "data/models").mkdir(parents=True)
    _world_model(repo / "data/models/world_model", image_size=16)  # params.yaml asks for 32 px
    (repo / "params.yaml").write_text((ROOT / "params.yaml").read_text())
    result = subprocess.run([sys.executable, "-m", "pipelines", "eval", "fidelity"], cwd=repo, capture_output=True,
                            text=True, timeout=300, env={**__import__("os").environ, "PYTHONPATH": str(ROOT)})
    assert result.returncode == 1, result.stderr
    assert "data/models/world_model: world model does not fit (image_size: the world model has 16, used with 32;" \
        in result.stderr
    assert "Traceback" not in result.stderr
