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


@pytest.fixture
def tiny_repo(tmp_path):
    repo = make_tiny_repo(tmp_path)
    dvc(repo, "remote", "add", "-d", "local", str(tmp_path / "remote"))
    return repo


def test_a_second_run_cannot_share_the_workspace(harness, tiny_repo):
    from filelock import FileLock

    from pipelines.flows import LOCK, WorkspaceBusy, retrain

    (tiny_repo / LOCK).parent.mkdir(parents=True, exist_ok=True)
    with FileLock(str(tiny_repo / LOCK)):
        with pytest.raises(WorkspaceBusy, match="another retraining run"):
            retrain(repo=str(tiny_repo), pull_data=False, push_data=False)


@pytest.mark.slow
def test_retrain_flow_end_to_end_on_the_tiny_profile(harness, tiny_repo, monkeypatch):
    from pipelines.flows import retrain

    monkeypatch.setenv("PATH", f"{BIN}:{os.environ['PATH']}")
    result = retrain(repo=str(tiny_repo), pull_data=True, push_data=True)
    assert result["stages"][-1] in ("evaluate", "eval_fidelity") and "validate" in result["stages"]
    assert "promoted door-lock-v3@" in result["promoted"]
    assert json.loads((tiny_repo / "metrics/gate.json").read_text())["tasks"]["door-lock-v3"]["promote"]
    assert any((tiny_repo.parent / "remote").rglob("*"))  # dvc push reached the remote
    assert (tiny_repo / "registry/records").is_dir()
    assert "Gate decision" in (tiny_repo / "reports/run/index.html").read_text()
    # The nightly case with nothing new: every stage is a no-op and the same weights come out.
    # Promotion is idempotent (ids are content hashes); the run succeeds and registers nothing new.
    records = sorted((tiny_repo / "registry/records").iterdir())
    again = retrain(repo=str(tiny_repo), pull_data=False, push_data=False)
    assert "already promoted door-lock-v3@" in again["promoted"]
    assert sorted((tiny_repo / "registry/records").iterdir()) == records
