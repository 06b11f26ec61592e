"""The real DAG: `dvc repro` in a temporary git repo with the project's dvc.yaml and tiny params."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import time
from pathlib import Path

import pytest
import yaml

ROOT = Path(__file__).resolve().parents[1]
BIN = Path(sys.executable).parent

pytestmark = pytest.mark.slow

TINY = {
    "profile": {"name": "test-tiny", "smoke_scale": True},
    "collect": {
        "tasks": ["door-lock-v3"],
        "episodes": {"expert": 4, "random": 1, "policy": 1},
        "episode_len": 50,  # long enough for the expert to succeed: the classifier needs both classes
        "action_repeat": 2,
        "image_size": 16,
        "camera": "corner2",
        "expert_noise": 0.0,
        "seed": 0,
        "workers": 1,
        "frames_per_shard": 64,
    },
    "validate": {"context_frames": 4, "action_tolerance": 1e-6},
    "world_model": {
        "image_size": 16,
        "context_frames": 4,
        "channels": [16, 16],
        "norm_groups": 8,
        "val_fraction": 0.2,
        "split_seed": 0,
        "train": {"steps": 6, "batch_size": 4, "log_every": 2, "val_every": 3, "checkpoint_every": 3, "device": "cpu"},
    },
    "fidelity": {"horizon": 4, "episodes": 2, "strips": 1},
    "policy": {"channels": [8, 8], "hidden": 16, "rollout_deterministic": False,
               "train": {"steps": 5, "batch_size": 8, "log_every": 5, "device": "cpu"}},
    "reward": {"channels": [8, 8], "hidden": 16,
               "train": {"steps": 5, "batch_size": 8, "log_every": 5, "device": "cpu"}},
    "refine": {"eval_episodes": 1, "eval_seed": 7,
               "ppo": {"iterations": 2, "n_envs": 2, "horizon": 2, "epochs": 1, "minibatches": 1,
                       "eval_every": 2, "bc_batch": 4, "disagreement_envs": 1, "device": "cpu"}},
    "evaluate": {"episodes": 1, "seed": 3, "videos": 1, "workers": 1},
    # Permissive rules: the tiny models are not good; this exercises gate -> promote -> lineage.
    "gate": {"min_psnr_mean": 0.0, "min_ssim_mean": 0.0, "min_uplift": -1.0, "min_episodes": 1},
}


def dvc(repo: Path, *args: str, check: bool = True, tool: str = "dvc") -> subprocess.CompletedProcess:
    env = os.environ | {"PATH": f"{BIN}:{os.environ['PATH']}", "DVC_NO_ANALYTICS": "1"}
    result = subprocess.run([tool, *args], cwd=repo, env=env, capture_output=True, text=True, timeout=600)
    if check:
        assert result.returncode == 0, f"dvc {args}: {result.stdout}\n{result.stderr}"
    return result


def make_tiny_repo(tmp_path: Path) -> Path:
    """A git + DVC repository holding the project's code, dvc.yaml and the TINY params."""
    repo = tmp_path / "repo"
    repo.mkdir()
    for name in ("w4rl_core", "pipelines"):
        shutil.copytree(ROOT / name, repo / name, ignore=shutil.ignore_patterns("__pycache__"))
    shutil.copy(ROOT / "dvc.yaml", repo / "dvc.yaml")
    (repo / "params.yaml").write_text(yaml.safe_dump(TINY))
    subprocess.run(["git", "init", "-q"], cwd=repo, check=True)
    dvc(repo, "init", "-q")
    return repo


@pytest.fixture
def repo(tmp_path) -> Path:
    return make_tiny_repo(tmp_path)


def test_repro_collects_validates_and_second_run_is_a_fast_no_op(repo):
    first = dvc(repo, "repro")
    assert "SMOKE-SCALE" in first.stdout + first.stderr
    assert (repo / "data/episodes/demos/door-lock-v3/expert.zarr/zarr.json").exists()
    assert (repo / "data/episodes/demos/door-lock-v3/random.zarr/zarr.json").exists()
    assert (repo / "data/episodes/rollouts/door-lock-v3/policy.zarr/zarr.json").exists()
    metrics = json.loads((repo / "metrics/data.json").read_text())
    assert metrics["valid"] and metrics["episodes"] == 5 and metrics["frames"] == 250 and metrics["smoke_scale"]
    assert json.loads((repo / "reports/validation.json").read_text())["ok"]
    assert (repo / "data/models/world_model/model.safetensors").exists()
    assert (repo / "plots/world_model_loss.csv").read_text().count("\n") == 4  # header + 3 rows
    fidelity = json.loads((repo / "metrics/fidelity.json").read_text())
    assert fidelity["smoke_scale"] and len(fidelity["model"]["psnr_per_step"]) == 4
    assert (repo / "reports/fidelity/strip_0.png").exists()
    policy = json.loads((repo / "metrics/policy.json").read_text())
    task = policy["per_task"]["door-lock-v3"]
    assert policy["smoke_scale"] and {"bc", "refined", "imagined_success_end", "exploitation_gap"} <= set(task)
    assert task["bc"]["episodes"] == 1 and len(task["refined"]["ci95"]) == 2
    assert json.loads((repo / "metrics/refine/door-lock-v3.json").read_text())["real_episodes_used"] == 1
    assert set(json.loads((repo / "metrics/reward/door-lock-v3.json").read_text())["val"]) >= {"frames"}

    # gate -> promote -> lineage on the tiny policy: the chain names the dataset hashes of dvc.lock
    gate = dvc(repo, "gate", tool="w4rl")
    assert "door-lock-v3: PROMOTE" in gate.stdout and json.loads((repo / "metrics/gate.json").read_text())["promote_any"]
    promoted = dvc(repo, "promote", tool="w4rl").stdout
    policy_id = promoted.split("promoted ")[1].split()[0]
    lineage = dvc(repo, "lineage", policy_id, tool="w4rl").stdout
    lock = yaml.safe_load((repo / "dvc.lock").read_text())["stages"]
    for stage in ("collect@door-lock-v3-expert", "collect@door-lock-v3-random", "collect_policy@door-lock-v3"):
        out = lock[stage]["outs"][0]
        assert f"{out['path']}  md5 {out['md5']}" in lineage
    assert lock["train_world_model"]["outs"][0]["md5"] in lineage
    again = dvc(repo, "promote", tool="w4rl", check=False)
    assert again.returncode == 1 and "immutable" in again.stderr
    shown = json.loads(dvc(repo, "registry", "show", policy_id, "--json", tool="w4rl").stdout)
    assert shown["policy_id"] == policy_id and shown["params"]["collect"]["tasks"] == ["door-lock-v3"]

    start = time.perf_counter()
    second = dvc(repo, "repro")
    elapsed = time.perf_counter() - start
    assert "Data and pipelines are up to date" in second.stdout
    assert elapsed < 15, f"no-op repro took {elapsed:.1f}s"

    # A new task invalidates only that task's collection (and what trains on all data).
    params = yaml.safe_load((repo / "params.yaml").read_text())
    params["collect"]["tasks"].append("soccer-v3")
    (repo / "params.yaml").write_text(yaml.safe_dump(params))
    status = dvc(repo, "status").stdout
    assert "collect@soccer-v3-expert:" in status and "train_world_model:" in status
    assert "collect@door-lock-v3-expert:" not in status and "train_bc@door-lock-v3:" not in status


def test_invalid_data_fails_the_pipeline_with_field_and_episode(repo):
    params = yaml.safe_load((repo / "params.yaml").read_text())
    params["validate"]["context_frames"] = 60  # episodes of 50 steps are now too short
    (repo / "params.yaml").write_text(yaml.safe_dump(params))
    result = dvc(repo, "repro", check=False)
    assert result.returncode != 0
    assert "meta/episode_ends episode 0" in result.stdout and "shorter than T+1 = 61" in result.stdout
    report = json.loads((repo / "reports/validation.json").read_text())
    assert report["ok"] is False
    assert "train_bc" not in result.stdout  # nothing downstream of a failed validation ran
    assert not (repo / "data/models/world_model").exists()
    assert not (repo / "metrics/data.json").exists() or not json.loads((repo / "metrics/data.json").read_text())["valid"]
