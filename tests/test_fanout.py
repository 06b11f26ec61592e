"""Per-task branches on a pool of workers: a Prefect process work pool with 2 real workers on
127.0.0.1, each in its own checkout, sharing a DVC remote on the loopback S3 server; the retrain flow
as coordinator. Two tasks of the tiny profile, so two branches."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import yaml

from pipelines.sandbox import ROOT, make_sandbox, tool_env

pytestmark = [pytest.mark.slow, pytest.mark.s3, pytest.mark.xdist_group("prefect")]  # harness: conftest

POOL = "w4rl-test-branches"
TASKS = ["door-lock-v3", "drawer-close-v3"]


def git(repo: Path, *args: str) -> str:
    return subprocess.run(["git", *args], cwd=repo, check=True, capture_output=True, text=True).stdout.strip()


@pytest.fixture
def coordinator(tmp_path, s3_env) -> Path:
    """The tiny project with two tasks, committed and pushed to a bare origin, its DVC remote on S3."""
    repo = make_sandbox(tmp_path, "tiny")
    params = yaml.safe_load((repo / "params.yaml").read_text())
    params["collect"]["tasks"] = TASKS
    (repo / "params.yaml").write_text(yaml.safe_dump(params, sort_keys=False))
    env = tool_env()
    for args in (["remote", "add", "-d", "shared", f"s3://{s3_env['bucket']}/dvc"],
                 ["remote", "modify", "shared", "endpointurl", s3_env["endpoint"]]):
        subprocess.run(["dvc", *args], cwd=repo, env=env, check=True)
    origin = tmp_path / "origin.git"
    subprocess.run(["git", "init", "-q", "--bare", str(origin)], check=True)
    git(repo, "add", "-A")
    git(repo, "-c", "user.name=t", "-c", "user.email=t@t", "commit", "-qm", "two tasks")
    git(repo, "branch", "-M", "main")
    git(repo, "remote", "add", "origin", str(origin))
    git(repo, "push", "-q", "origin", "main")
    return repo


@pytest.fixture
def workers(prefect_api, tmp_path):
    """The branch flow deployed to a process work pool and 2 workers (one branch at a time each)."""
    from prefect import flow

    subprocess.run([sys.executable, "-m", "prefect", "work-pool", "create", POOL, "--type", "process",
                    "--overwrite"], env=tool_env() | {"PREFECT_API_URL": prefect_api}, check=True,
                   capture_output=True)
    branch = flow.from_source(source=str(ROOT), entrypoint="pipelines/flows.py:run_branch")
    branch.deploy(name="w4rl-branch", work_pool_name=POOL, build=False, push=False, print_next_steps=False)
    procs, checkouts = [], []
    for i in (1, 2):
        checkouts.append(tmp_path / f"worker-{i}" / "checkout")
        env = tool_env() | {"PREFECT_API_URL": prefect_api, "W4RL_CHECKOUT": str(checkouts[-1]),
                            "PYTHONPATH": "", "MUJOCO_GL": os.environ.get("MUJOCO_GL", "egl"),
                            "OMP_NUM_THREADS": "1"}  # two workers share 2 cores: one thread each
        log = open(tmp_path / f"worker-{i}.log", "w")  # noqa: SIM115 - closed with the process
        procs.append(subprocess.Popen([sys.executable, "-m", "prefect", "worker", "start", "--pool", POOL,
                                       "--type", "process", "--limit", "1", "--name", f"worker-{i}"],
                                      env=env, stdout=log, stderr=subprocess.STDOUT, start_new_session=True))
    yield checkouts
    for proc in procs:  # the worker and the flow runs it started (its process group)
        os.killpg(proc.pid, signal.SIGKILL)
        proc.wait(30)


@pytest.mark.timeout(1200)
def test_retrain_fans_the_task_branches_out_to_workers_end_to_end(coordinator, workers, monkeypatch):
    """The retrain flow, end to end, with each task's branch on the work pool: the branches run
    once on the workers, the coordinator restores them, commits, pushes, promotes and reports."""
    from prefect.artifacts import Artifact

    from pipelines.flows import branch_plan, flow_run_logs, retrain, stages_ran

    monkeypatch.setenv("PATH", tool_env()["PATH"])
    plan = branch_plan(coordinator)
    assert plan.branches == {t: [f"refine@{t}"] for t in TASKS}
    assert "train_world_model" in plan.before and not any("refine" in s or "reward" in s for s in plan.before)

    started = time.monotonic()
    state = retrain(repo=str(coordinator), pull_data=True, push_data=True, branch="retrain",
                    branches_on="branch/w4rl-branch", return_state=True)
    result = state.result()
    print(f"fan-out retrain: {time.monotonic() - started:.0f} s")

    # Each branch ran on a worker exactly once: its task's classifier and refinement, nothing else.
    ran = [stage for b in result["branches"].values() for stage in b["ran"]]
    for task in TASKS:
        assert result["branches"][task]["state"] == "Completed"
        assert result["branches"][task]["ran"] == [f"train_reward@{task}", f"refine@{task}"], result["branches"]
        assert ran.count(f"refine@{task}") == ran.count(f"train_reward@{task}") == 1
    # Each worker worked in its own checkout (one branch at a time each, so both took one).
    assert all((c / "dvc.lock").exists() for c in workers), workers

    # The coordinator restored the branches from the run-cache and ran none of them; its stages'
    # output reached the run log line by line.
    messages = flow_run_logs(state.state_details.flow_run_id)
    coordinator_ran = stages_ran(messages)
    assert "train_world_model" in coordinator_ran and "gate" in coordinator_ran
    assert not [s for s in coordinator_ran if s.split("@")[0] in ("train_reward", "refine")], coordinator_ran
    for task in TASKS:
        assert any(m.startswith(f"Stage 'refine@{task}' is cached - skipping run") for m in messages), task

    # The record is the one a single machine writes: the lock names the outputs the workers made,
    # and nothing is left to reproduce.
    lock = yaml.safe_load((coordinator / "dvc.lock").read_text())["stages"]
    worker_locks = [yaml.safe_load((c / "dvc.lock").read_text())["stages"] for c in workers]
    for task in TASKS:
        (made,) = [w[f"refine@{task}"] for w in worker_locks
                   if w.get(f"refine@{task}", {}).get("outs") == lock[f"refine@{task}"]["outs"]]
        assert made["deps"] == lock[f"refine@{task}"]["deps"]
    status = subprocess.run(["dvc", "status"], cwd=coordinator, env=tool_env(), capture_output=True, text=True)
    assert "Data and pipelines are up to date" in status.stdout, status.stdout

    # The gate decided for both tasks; the run's commit (dvc.lock and metrics) is on origin's
    # branch, and each promotion record points at it with a clean tree.
    assert result["stages"][-1] == "gate" and result["gate"]["tasks"].keys() == set(TASKS)
    origin = coordinator.parent / "origin.git"
    assert result["branch"].startswith("retrain/") and git(origin, "rev-parse", result["branch"]) == result["commit"]
    files = git(origin, "ls-tree", "-r", "--name-only", result["commit"]).split()
    assert {"dvc.lock", "metrics/gate.json", "metrics/policy.json", "plots/fidelity_per_step.csv"} <= set(files)
    promoted = [t for t, v in result["gate"]["tasks"].items() if v["promote"]]
    assert promoted, result["gate"]  # the tiny gate is loose: something is promoted
    records = sorted((coordinator / "registry/records").iterdir())
    assert len(records) == len(promoted) and all(f"promoted {t}@" in result["promoted"] for t in promoted)
    for path in records:
        assert json.loads(path.read_text())["git"] == {"commit": result["commit"], "dirty": False}
    # ... and Git-tag registries (GTO) see each promotion on that commit, in origin too.
    tags = git(origin, "tag", "--points-at", result["commit"]).split()
    for task in promoted:
        assert f"policy-{task}@v0.0.1" in tags and any(t.startswith(f"policy-{task}#prod") for t in tags)
    assert "Gate decision" in (coordinator / "reports/run/index.html").read_text()
    table = Artifact.get("gate-decision")
    assert table is not None and table.type == "table" and all(t in str(table.data) for t in TASKS)
    assert Artifact.get("retrain-report") is not None

    # The nightly case with nothing new, on one machine: every stage is a no-op and the same weights
    # come out. Promotion is idempotent (ids are content hashes); nothing new is registered. As a
    # flywheel round (flywheel=True), the run then feeds its evaluation episodes back (not committed:
    # branch None), and the next round would train on them.
    again = retrain(repo=str(coordinator), pull_data=False, push_data=False, branch=None, flywheel=True)
    assert again["stages"] == []  # dvc status said up to date: no per-stage repro ran
    assert all(f"already promoted {t}@" in again["promoted"] for t in promoted)
    assert sorted((coordinator / "registry/records").iterdir()) == records
    assert again["flywheel"]["round"] == 0 and again["flywheel"]["next_round"] == 1 and "commit" not in again["flywheel"]
    assert yaml.safe_load((coordinator / "params.yaml").read_text())["flywheel"]["round"] == 1
    manifest = json.loads((coordinator / "data/flywheel/manifests/round-0.json").read_text())
    assert set(manifest["tasks"]) == set(TASKS) and manifest["run_commit"] == result["commit"]
