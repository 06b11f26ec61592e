"""Prefect: the deployment and its schedule through the harness's API, the workspace lock, and the
real retrain flow end to end on the tiny pipeline."""

from __future__ import annotations

import json
import os
import sys
from pathlib import Path

import pytest

from test_dvc_pipeline import dvc, make_tiny_repo

BIN = Path(sys.executable).parent


@pytest.fixture(scope="module")
def harness(tmp_path_factory):
    os.environ.setdefault("PREFECT_SERVER_ANALYTICS_ENABLED", "false")
    os.environ.setdefault("PREFECT_SERVER_EPHEMERAL_STARTUP_TIMEOUT_SECONDS", "120")
    from prefect.testing.utilities import prefect_test_harness

    with prefect_test_harness(server_startup_timeout=120):
        yield


def test_prefect_yaml_deploys_retrain_with_a_cron_schedule(harness):
    from prefect.client.orchestration import get_client
    from prefect.utilities.asyncutils import run_coro_as_sync

    from pipelines.flows import deployment_spec, to_deployment

    spec = deployment_spec()
    assert spec["entrypoint"] == "pipelines/flows.py:retrain" and spec["work_pool"]["name"] == "w4rl-gpu"
    deployment_id = to_deployment().apply()

    async def read():
        async with get_client() as client:
            return await client.read_deployment(deployment_id)

    deployment = run_coro_as_sync(read())
    assert deployment.name == "retrain-nightly"
    assert [s.schedule.cron for s in deployment.schedules] == ["0 3 * * *"]
    assert deployment.schedules[0].schedule.timezone == "UTC"
    assert deployment.parameters == spec["parameters"]


def test_a_second_run_of_the_deployment_is_cancelled_by_its_concurrency_limit(harness):
    """Two runs of the deployment: the first takes the deployment's one slot, the second is
    cancelled by the server's orchestration (collision_strategy CANCEL_NEW), not run alongside."""
    from prefect.client.orchestration import get_client
    from prefect.states import Pending, StateType
    from prefect.utilities.asyncutils import run_coro_as_sync

    from pipelines.flows import to_deployment

    deployment_id = to_deployment().apply()

    async def two_runs():
        async with get_client() as client:
            first = await client.create_flow_run_from_deployment(deployment_id)
            second = await client.create_flow_run_from_deployment(deployment_id)
            accepted = await client.set_flow_run_state(first.id, Pending())
            refused = await client.set_flow_run_state(second.id, Pending())
            return accepted, refused, await client.read_flow_run(second.id)

    accepted, refused, second = run_coro_as_sync(two_runs())
    assert accepted.state.type == StateType.PENDING
    assert second.state.type == StateType.CANCELLED, (refused, second.state)


@pytest.fixture
def tiny_repo(tmp_path):
    """The tiny project as a committed checkout whose `origin` is a local bare repository, with a
    local DVC remote: what a worker's checkout looks like."""
    import subprocess

    repo = make_tiny_repo(tmp_path)
    dvc(repo, "remote", "add", "-d", "local", str(tmp_path / "remote"))
    origin = tmp_path / "origin.git"
    subprocess.run(["git", "init", "-q", "--bare", str(origin)], check=True)
    for args in (["add", "-A"], ["-c", "user.name=t", "-c", "user.email=t@t", "commit", "-qm", "code"],
                 ["branch", "-M", "main"], ["remote", "add", "origin", str(origin)], ["push", "-q", "origin", "main"]):
        subprocess.run(["git", *args], cwd=repo, check=True)
    return repo


@pytest.mark.slow
def test_retrain_flow_end_to_end_on_the_tiny_profile(harness, tiny_repo, monkeypatch):
    import subprocess

    from prefect.artifacts import Artifact
    from prefect.client.orchestration import get_client
    from prefect.client.schemas.filters import LogFilter, LogFilterFlowRunId
    from prefect.utilities.asyncutils import run_coro_as_sync

    from pipelines.flows import retrain

    monkeypatch.setenv("PATH", f"{BIN}:{os.environ['PATH']}")
    state = retrain(repo=str(tiny_repo), pull_data=True, push_data=True, branch="retrain", return_state=True)
    result = state.result()
    assert result["stages"][-1] == "gate" and "validate" in result["stages"]  # the gate is a stage of the DAG
    assert result["gate"]["promote_any"] and "promoted door-lock-v3@" in result["promoted"]
    assert any((tiny_repo.parent / "remote").rglob("*"))  # dvc push reached the remote

    # The loop closes in git: the run's commit, holding dvc.lock and the metrics, is on origin's branch,
    # and the promotion record points at it with a clean tree.
    origin = tiny_repo.parent / "origin.git"
    assert result["branch"].startswith("retrain/")
    pushed = subprocess.run(["git", "rev-parse", result["branch"]], cwd=origin, capture_output=True,
                            text=True).stdout.strip()
    assert pushed == result["commit"]
    files = subprocess.run(["git", "ls-tree", "-r", "--name-only", pushed], cwd=origin, capture_output=True,
                           text=True).stdout.split()
    assert {"dvc.lock", "metrics/gate.json", "metrics/policy.json", "plots/fidelity_per_step.csv"} <= set(files)
    (record,) = [json.loads(p.read_text()) for p in (tiny_repo / "registry/records").iterdir()]
    assert record["git"] == {"commit": result["commit"], "dirty": False}
    # ... and Git-tag registries (GTO) see the promotion on that commit, in origin too.
    tags = subprocess.run(["git", "tag", "--points-at", result["commit"]], cwd=origin, capture_output=True,
                          text=True).stdout.split()
    assert "policy-door-lock-v3@v0.0.1" in tags and any(t.startswith("policy-door-lock-v3#prod") for t in tags)
    assert "Gate decision" in (tiny_repo / "reports/run/index.html").read_text()

    # Stage output reached the run log line by line, and the gate decision is a table artifact.
    async def logs():
        async with get_client() as client:
            flt = LogFilter(flow_run_id=LogFilterFlowRunId(any_=[state.state_details.flow_run_id]))
            messages: list[str] = []
            while page := await client.read_logs(log_filter=flt, limit=200, offset=len(messages)):
                messages += [log.message for log in page]
            return messages

    messages = run_coro_as_sync(logs())
    assert any(m.startswith("Running stage 'train_world_model'") for m in messages), messages[:20]
    table = Artifact.get("gate-decision")
    assert table is not None and table.type == "table" and "door-lock-v3" in str(table.data)
    assert Artifact.get("retrain-report") is not None

    # The nightly case with nothing new: every stage is a no-op and the same weights come out.
    # Promotion is idempotent (ids are content hashes); the run succeeds and registers nothing new.
    records = sorted((tiny_repo / "registry/records").iterdir())
    again = retrain(repo=str(tiny_repo), pull_data=False, push_data=False, branch=None)
    assert "already promoted door-lock-v3@" in again["promoted"]
    assert sorted((tiny_repo / "registry/records").iterdir()) == records
