"""The real DAG: `dvc repro` in a temporary git repo with the project's dvc.yaml and tiny params."""

from __future__ import annotations

import json
import subprocess
import time
from pathlib import Path

import pytest
import yaml

from pipelines.sandbox import tool_env

pytestmark = pytest.mark.slow


def dvc(repo: Path, *args: str, check: bool = True, tool: str = "dvc") -> subprocess.CompletedProcess:
    result = subprocess.run([tool, *args], cwd=repo, env=tool_env(), capture_output=True, text=True, timeout=600)
    if check:
        assert result.returncode == 0, f"dvc {args}: {result.stdout}\n{result.stderr}"
    return result


@pytest.mark.timeout(1200)  # the whole life of a tiny project: repro, gate, promote, clone, experiment
def test_repro_collects_validates_and_second_run_is_a_fast_no_op(tiny_run, tmp_path):
    # The first `dvc repro` is the session's tiny run (shared with the kill harness); this test
    # goes on in its own copy.
    repo = tiny_run.copy(tmp_path / "repo")
    first_output = tiny_run.stdout
    assert "SMOKE-SCALE" in first_output
    assert (repo / "data/episodes/demos/door-lock-v3/expert.zarr/zarr.json").exists()
    assert (repo / "data/episodes/demos/door-lock-v3/random.zarr/zarr.json").exists()
    assert (repo / "data/episodes/rollouts/door-lock-v3/policy.zarr/zarr.json").exists()
    metrics = json.loads((repo / "metrics/data.json").read_text())
    assert metrics["valid"] and metrics["episodes"] == 5 and metrics["frames"] == 250 and metrics["smoke_scale"]
    assert json.loads((repo / "reports/validation.json").read_text())["ok"]
    assert (repo / "data/models/world_model/model.safetensors").exists()
    # DVCLive runs: the world model's curves (3 logged steps) and summary, per-task runs beside it
    assert (repo / "dvclive/world_model/plots/metrics/loss.tsv").read_text().count("\n") == 4  # header + 3
    assert json.loads((repo / "dvclive/world_model/metrics.json").read_text())["train_samples_per_s"] > 0
    assert (repo / "dvclive/bc/door-lock-v3/plots/metrics/loss.tsv").exists()
    assert (repo / "dvclive/refine/door-lock-v3/plots/metrics/seed0/imagined_success.tsv").exists()
    assert not list(repo.glob("dvclive/**/*.partial"))
    fidelity = json.loads((repo / "metrics/fidelity.json").read_text())
    # fidelity at the refinement horizon: a 50-step episode after its T = 4 context frames
    assert fidelity["smoke_scale"] and fidelity["horizon"] == 46 and len(fidelity["model"]["psnr_per_step"]) == 46
    assert {"psnr", "psnr_moving", "ssim"} <= set(fidelity["model"]) and "classifier_agreement" in fidelity
    assert (repo / "reports/fidelity/strips/strip_0.png").exists()
    policy = json.loads((repo / "metrics/policy.json").read_text())
    task = policy["per_task"]["door-lock-v3"]
    assert policy["smoke_scale"] and {"bc", "refined", "seeds", "candidate", "uplift", "uplift_ci95",
                                      "reward_calibration", "calibration_gap", "exploitation_gap"} <= set(task)
    assert task["bc"]["episodes"] == 1 and len(task["refined"]["ci95"]) == 2
    assert {"uplift", "uplift_ci95", "pairs"} <= set(policy["overall"])
    refine_metrics = json.loads((repo / "metrics/refine/door-lock-v3.json").read_text())
    # The opt-in select_by_real mode checks BC (iteration 0) and the last iteration: 2 checks of 1 episode.
    assert refine_metrics["seeds"][0]["real_episodes_used"] == 2 and refine_metrics["candidate_seed"] == 0
    # One BC rollout, none held out: trust cannot be checked and the tiny profile refines anyway.
    assert refine_metrics["trust"]["checked"] is False and refine_metrics["trust"]["passed"]
    # Honest evaluation end to end: distinct unseen scenes, none a selection or training scene.
    assert len(refine_metrics["selection_scenes"]) == 1
    assert task["scenes"] | {"protocol": None} == {"episodes_per_policy": 1, "distinct": 1, "overlap_selection": 0,
                                                   "overlap_training": 0, "protocol": None}
    assert "1 seed: seed variation not estimable" in task["interval"]["method"]  # the tiny profile: one seed
    assert "task-stratified" in policy["overall"]["interval"]["method"]
    assert (repo / "data/models/refined/door-lock-v3/seeds/seed0/model.safetensors").exists()
    reward = json.loads((repo / "dvclive/reward/door-lock-v3/metrics.json").read_text())
    assert set(reward["val"]) >= {"frames"} and {"threshold", "persistence"} == set(reward["detector"])
    assert {"true_success", "classifier_success", "episodes"} <= set(reward["reward_calibration"])

    assert reward["trained_on"] == "real_and_imagined" and reward["train_frames"]["imagined"] > 0

    # The gate is a stage of the DAG: repro wrote its decision, every rule with value and threshold.
    assert "door-lock-v3: PROMOTE" in first_output
    decision = json.loads((repo / "metrics/gate.json").read_text())
    assert decision["promote_any"] and all({"rule", "value", "threshold", "passed"} <= set(r)
                                           for r in decision["tasks"]["door-lock-v3"]["rules"])
    # Promotion refuses a stale decision (its inputs changed since the gate ran) and a missing one.
    policy_json = (repo / "metrics/policy.json").read_text()
    (repo / "metrics/policy.json").write_text(policy_json.replace('"uplift"', '"uplift_edited"', 1))
    refused = dvc(repo, "promote", tool="w4rl", check=False)
    assert refused.returncode == 1 and "stale" in refused.stderr and "gate" in refused.stderr
    (repo / "metrics/policy.json").write_text(policy_json)
    gate_json = (repo / "metrics/gate.json").read_text()
    (repo / "metrics/gate.json").unlink()
    refused = dvc(repo, "promote", tool="w4rl", check=False)
    assert refused.returncode == 1 and "missing" in refused.stderr
    (repo / "metrics/gate.json").write_text(gate_json)

    # promote -> lineage on the tiny policy: the chain names the dataset hashes of dvc.lock
    promoted = dvc(repo, "promote", tool="w4rl").stdout
    policy_id = promoted.split("promoted ")[1].split()[0]
    lineage = dvc(repo, "lineage", policy_id, tool="w4rl").stdout
    lock = yaml.safe_load((repo / "dvc.lock").read_text())["stages"]
    for stage in ("collect@door-lock-v3-expert", "collect@door-lock-v3-random", "collect_policy@door-lock-v3"):
        out = lock[stage]["outs"][0]
        assert f"{out['path']}  md5 {out['md5']}" in lineage
    assert lock["train_world_model"]["outs"][0]["md5"] in lineage
    shown = json.loads(dvc(repo, "registry", "show", policy_id, "--json", tool="w4rl").stdout)
    assert shown["policy_id"] == policy_id and shown["params"]["collect"]["tasks"] == ["door-lock-v3"]
    # Promoting the same weights again is a no-op: the immutable record is left exactly as it was.
    again = dvc(repo, "promote", tool="w4rl")
    assert f"already promoted {policy_id}" in again.stdout
    assert json.loads(dvc(repo, "registry", "show", policy_id, "--json", tool="w4rl").stdout) == shown

    start = time.perf_counter()
    second = dvc(repo, "repro")
    elapsed = time.perf_counter() - start
    assert "Data and pipelines are up to date" in second.stdout
    assert elapsed < 15, f"no-op repro took {elapsed:.1f}s"

    # Metrics, plots and small reports live in git, the data in the DVC remote: a clone lists the
    # metrics without running anything, and after `dvc pull` nothing is left to reproduce.
    storage = repo.parent / "dvc-storage"
    dvc(repo, "remote", "add", "-d", "local", str(storage))
    subprocess.run(["git", "add", "-A"], cwd=repo, check=True)
    subprocess.run(["git", "-c", "user.name=t", "-c", "user.email=t@t", "commit", "-qm", "run", "--allow-empty"], cwd=repo,
                   check=True)
    dvc(repo, "push")
    clone = repo.parent / "clone"
    subprocess.run(["git", "clone", "-q", str(repo), str(clone)], check=True)
    shown = json.loads(dvc(clone, "metrics", "show", "--json").stdout)
    files = {f for rev in shown.values() for f in rev["data"]}
    assert {"metrics/fidelity.json", "metrics/policy.json", "metrics/gate.json", "dvclive/world_model/metrics.json",
            "dvclive/bc/door-lock-v3/metrics.json", "dvclive/refine/door-lock-v3/metrics.json"} <= files
    dvc(clone, "pull")
    assert "Data and pipelines are up to date" in dvc(clone, "status").stdout
    plots = json.loads(dvc(clone, "plots", "show", "--json").stdout)
    assert not plots.get("errors"), plots.get("errors")
    assert "reports/fidelity/strips/strip_0.png" in plots["data"]
    assert any("fidelity PSNR" in name for name in plots["data"])
    assert "dvclive/refine/door-lock-v3/plots/metrics/seed0/imagined_success.tsv" in plots["data"]
    assert any("world model loss" in name for name in plots["data"])

    # An experiment with one evaluation param changed, in its own temporary workspace (as queued
    # experiments run): it reproduces evaluate and the gate (not the stages above them: the kill
    # harness re-runs those) and `dvc exp show` lists it.
    exp_run = dvc(repo, "exp", "run", "--temp", "-n", "no-videos", "-S", "evaluate.videos=0").stdout
    assert "Running stage 'evaluate'" in exp_run and "Running stage 'refine@door-lock-v3'" not in exp_run
    head = json.loads(dvc(repo, "exp", "show", "--json").stdout)[1]
    (exp,) = [rev for e in head["experiments"] for rev in e["revs"] if rev["name"] == "no-videos"]
    assert exp["error"] is None
    assert exp["data"]["params"]["params.yaml"]["data"]["evaluate"]["videos"] == 0
    assert "promote_any" in exp["data"]["metrics"]["metrics/gate.json"]["data"]  # the gate ran in the experiment

    # Queued experiments, run by DVC's workers two at a time: a gate threshold per experiment (only the
    # gate stage reruns; everything else is restored from the cache).
    for name, min_uplift in (("q-strict", 2.0), ("q-loose", -2.0)):
        dvc(repo, "exp", "run", "--queue", "-n", name, "-S", f"gate.min_uplift={min_uplift}")
    # Not through dvc(): the workers `queue start` spawns inherit its stdout/stderr, and capturing
    # them would wait for the workers to exit, not for `queue start` (a worker that lingers then
    # looks like a hang).
    subprocess.run(["dvc", "queue", "start", "-j", "2"], cwd=repo, env=tool_env(), stdout=subprocess.DEVNULL,
                   stderr=subprocess.DEVNULL, timeout=120, check=True)
    deadline = time.monotonic() + 300
    while any(word in dvc(repo, "queue", "status").stdout for word in ("Queued", "Running")):
        assert time.monotonic() < deadline, dvc(repo, "queue", "status").stdout
        time.sleep(2)
    subprocess.run(["dvc", "queue", "stop", "--kill"], cwd=repo, env=tool_env(), stdout=subprocess.DEVNULL,
                   stderr=subprocess.DEVNULL, timeout=120)
    head = json.loads(dvc(repo, "exp", "show", "--json").stdout)[1]
    queued = {rev["name"]: rev for e in head["experiments"] for rev in e["revs"] if rev["name"] in ("q-strict", "q-loose")}
    assert set(queued) == {"q-strict", "q-loose"}, dvc(repo, "queue", "status").stdout
    gate = {name: rev["data"]["metrics"]["metrics/gate.json"]["data"]["promote_any"] for name, rev in queued.items()}
    assert gate == {"q-strict": False, "q-loose": True}

    # A new task invalidates only that task's collection (and what trains on all data).
    params = yaml.safe_load((repo / "params.yaml").read_text())
    params["collect"]["tasks"].append("soccer-v3")
    (repo / "params.yaml").write_text(yaml.safe_dump(params))
    status = dvc(repo, "status").stdout
    assert "collect@soccer-v3-expert:" in status and "train_world_model:" in status
    assert "collect@door-lock-v3-expert:" not in status and "train_bc@door-lock-v3:" not in status


# The imagination-alone mode end to end (select_by_real off, trust refusing) runs with the policies on a
# robot behind the bridge: tests/test_bridge_pipeline.py.


def test_invalid_data_fails_the_pipeline_with_field_and_episode(tiny_run, tmp_path):
    # In a copy of the session's tiny run: only the validation reruns (the collections are its own).
    repo = tiny_run.copy(tmp_path / "repo")
    model_lock = yaml.safe_load((repo / "dvc.lock").read_text())["stages"]["train_world_model"]
    params = yaml.safe_load((repo / "params.yaml").read_text())
    params["validate"]["context_frames"] = 60  # episodes of 50 steps are now too short
    (repo / "params.yaml").write_text(yaml.safe_dump(params))
    result = dvc(repo, "repro", check=False)
    assert result.returncode != 0
    assert "meta/episode_ends episode 0" in result.stdout and "shorter than T+1 = 61" in result.stdout
    report = json.loads((repo / "reports/validation.json").read_text())
    assert report["ok"] is False
    # Nothing downstream of a failed validation ran, and the lock still names the last good model.
    assert "Running stage 'train_world_model'" not in result.stdout and "train_bc" not in result.stdout
    assert yaml.safe_load((repo / "dvc.lock").read_text())["stages"]["train_world_model"] == model_lock
    assert not (repo / "metrics/data.json").exists() or not json.loads((repo / "metrics/data.json").read_text())["valid"]
