"""Prefect: the deployment and its schedule through the harness's API and the workspace lock. The
real retrain flow runs end to end, fanned out to workers, in tests/test_fanout.py."""

from __future__ import annotations

import pytest


pytestmark = pytest.mark.xdist_group("prefect")  # one harness for every Prefect test (conftest)


@pytest.fixture
def harness(prefect_api):
    return prefect_api


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
