"""`w4rl flows ...`: the Prefect retraining flow, served on its schedule or run once now."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Optional

import typer

flows_app = typer.Typer(help="Prefect flows: scheduled retraining.", no_args_is_help=True)


def register(app: typer.Typer) -> None:
    app.add_typer(flows_app, name="flows")


@flows_app.command("serve")
def flows_serve(name: Annotated[str, typer.Option(help="Deployment name in prefect.yaml.")] = "retrain-nightly") -> None:
    """Serve the retraining deployment (schedule from prefect.yaml) from this process."""
    from pipelines import flows

    flows.serve(name)


@flows_app.command("retrain")
def flows_retrain(
    repo: Annotated[Path, typer.Option(help="The checkout to retrain in.")] = Path("."),
    pull_data: Annotated[bool, typer.Option("--pull/--no-pull")] = True,
    push_data: Annotated[bool, typer.Option("--push/--no-push")] = True,
    branch: Annotated[Optional[str], typer.Option(help="Commit the run's dvc.lock and metrics on this "
                                                        "branch and push it (none: commit nothing).")] = None,
    branches_on: Annotated[Optional[str], typer.Option(
        help="Run each task's branch as a flow run of this deployment of the `branch` flow (e.g. branch/branch) "
             "on its work pool's workers; needs a DVC remote they share (docs/scaling.md).")] = None,
) -> None:
    """Run the retraining flow once, now."""
    from pipelines import flows

    result = flows.retrain(repo=str(repo), pull_data=pull_data, push_data=push_data, branch=branch,
                           branches_on=branches_on)
    typer.echo(result["promoted"])
