"""`w4rl flywheel ...`: feed a finished round's evaluation episodes back as the next data version,
or run whole rounds (docs/flywheel.md)."""

from __future__ import annotations

import json
import subprocess
from pathlib import Path
from typing import Annotated

import typer

from pipelines.cli.common import DEFAULT_PARAMS, ParamsOpt, load

flywheel_app = typer.Typer(help="The data flywheel: rounds of train -> refine -> evaluate -> feed back.",
                           no_args_is_help=True)


def register(app: typer.Typer) -> None:
    app.add_typer(flywheel_app, name="flywheel")


def _fail(err: Exception) -> None:
    typer.secho(f"flywheel: {err}", fg="red", err=True)
    raise typer.Exit(1) from err


@flywheel_app.command("advance")
def advance(params: ParamsOpt = DEFAULT_PARAMS,
            commit: Annotated[bool, typer.Option(help="Commit the new data version (and params).")] = True,
            push: Annotated[bool, typer.Option(help="dvc push it, when a DVC remote is set.")] = True) -> None:
    """Feed round flywheel.round's evaluation episodes back as the next data version, with the
    weights and promoted policies the next round starts from; sets flywheel.round to the next round.
    Refuses unless the run is current (`dvc status` clean)."""
    from pipelines.stages import flywheel as stage
    from w4rl_core.data.flywheel import FlywheelError

    try:
        result = stage.advance(load(params), params, commit=commit, push=push)
    except (FlywheelError, RuntimeError) as err:
        _fail(err)
    typer.echo(json.dumps(result, indent=2))


@flywheel_app.command("run")
def run(rounds: Annotated[int, typer.Option(min=1, help="Rounds to run.")] = 1,
        params: ParamsOpt = DEFAULT_PARAMS) -> None:
    """Run whole rounds here: `dvc repro`, commit the run (dvc.lock, metrics), promote what the
    gate passed, `advance` (a second commit). Resumes a round that was killed: DVC skips the stages
    that finished, an interrupted advance is completed, the fed-back stores are written once."""
    from pipelines.stages import flywheel as stage
    from pipelines.stages import gate as gate_stage

    def sh(*cmd: str) -> None:
        if subprocess.run(cmd).returncode:
            _fail(RuntimeError(f"{' '.join(cmd)} failed"))

    for _ in range(rounds):
        if stage.finish_interrupted(params):  # the round killed after its last step but one: now done
            typer.echo("completed the commit of an interrupted advance")
            continue
        p = load(params)
        if stage.advance_plan(p.flywheel.round).exists():  # killed while feeding back: finish that
            typer.echo(f"flywheel round {p.flywheel.round}: resuming its interrupted advance", err=True)
            _advance(stage, p, params)
            continue
        dirty = subprocess.run(["git", "status", "--porcelain", "--untracked-files=no"], capture_output=True,
                               text=True).stdout.strip()
        if dirty:  # each round is its own commits: nothing of the user's may ride along
            _fail(RuntimeError(f"uncommitted changes ({dirty.splitlines()[0].strip()} ...): each round is a "
                               "commit; commit or stash them first"))
        typer.echo(f"flywheel round {p.flywheel.round}: dvc repro", err=True)
        sh("dvc", "repro")
        record = [p for p in ("dvc.lock", "metrics", "plots", "reports", "dvclive") if Path(p).exists()]
        sh("git", "add", *record)  # what git tracks of a run (DVC keeps the rest)
        if subprocess.run(["git", "diff", "--cached", "--quiet"]).returncode:
            sh("git", "commit", "-q", "-m", f"flywheel round {p.flywheel.round}: the run (dvc.lock, metrics)")
        try:
            records = gate_stage.promote(p, params)
        except gate_stage.PromotionRefused as err:
            typer.echo(f"round {p.flywheel.round}: nothing promoted ({err})", err=True)
            records = []
        for r in records:
            typer.echo(f"round {p.flywheel.round}: promoted {r['policy_id']}")
        typer.echo(f"round {p.flywheel.round}: run report {gate_stage.report(p)}")
        _advance(stage, p, params)


def _advance(stage, p, params) -> None:
    from w4rl_core.data.flywheel import FlywheelError

    try:
        result = stage.advance(p, params)
    except (FlywheelError, RuntimeError) as err:
        _fail(err)
    typer.echo(f"round {result['round']} fed back {result['episodes']} evaluation episodes: data version "
               f"{result['next_round']} ({result.get('commit', 'not committed')})")
