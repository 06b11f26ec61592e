"""`w4rl report`, `w4rl gate`, `w4rl promote`, `w4rl registry ...`, `w4rl lineage`: from metrics to a
promoted policy and back to its data."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Annotated, Optional

import typer

from pipelines.cli.common import DEFAULT_PARAMS, ParamsOpt, load

registry_app = typer.Typer(help="Promoted policies: immutable records with lineage.", no_args_is_help=True)


def register(app: typer.Typer) -> None:
    app.command()(report)
    app.command()(gate)
    app.command()(promote)
    app.add_typer(registry_app, name="registry")
    app.command()(lineage)


def report(
    reference: Annotated[Optional[list[str]], typer.Option(help="Reference stores for drift (default: expert demos).")] = None,
    params: ParamsOpt = DEFAULT_PARAMS,
) -> None:
    """The run's HTML report: data drift, fidelity strips, BC vs refined success, gate decision."""
    from pipelines.stages import gate as stage

    typer.echo(f"report: {stage.report(load(params), reference)}")


def gate(params: ParamsOpt = DEFAULT_PARAMS) -> None:
    """The gate stage of dvc.yaml: apply the promotion rules to the metric files, write metrics/gate.json."""
    from pipelines.paths import GATE_RECORD
    from pipelines.stages import gate as stage

    p = load(params)
    typer.echo(p.profile.banner, err=True)
    decision = stage.gate(p)
    for task, verdict in decision["tasks"].items():
        typer.echo(f"{task}: {'PROMOTE' if verdict['promote'] else 'REFUSE'}: {verdict['decision']}")
        for rule in verdict["rules"]:
            typer.echo(f"  [{'pass' if rule['passed'] else 'FAIL'}] {rule['rule']}: {rule['reason']}")
    typer.echo(f"decision record: {GATE_RECORD}")


def promote(params: ParamsOpt = DEFAULT_PARAMS) -> None:
    """Register the policies the gate passed (immutable records: weights, data and model hashes, commit).
    Refuses without a passing metrics/gate.json that is current for this workspace's dvc.lock."""
    from pipelines.stages import gate as stage
    from w4rl_core.registry.registry import RegistryConflict, RegistryUnavailable

    p = load(params)
    try:
        records = stage.promote(p, params)
    except (stage.PromotionRefused, RegistryConflict, RegistryUnavailable) as err:
        what = "failed" if isinstance(err, RegistryUnavailable) else "refused"
        typer.secho(f"promotion {what}: {err}", fg="red", err=True)
        raise typer.Exit(1) from err
    for r in records:
        tag = f" (git tag {r['gto']})" if r.get("gto") else ""
        typer.echo(f"{'already promoted' if r.get('already_registered') else 'promoted'} {r['policy_id']}{tag}")


def _registry(params: Path):
    return load(params).registry.open()


@registry_app.command("list")
def registry_list(params: ParamsOpt = DEFAULT_PARAMS) -> None:
    """Every registered policy, oldest first; the promoted one of each task marked with its version."""
    from pipelines.stages.gate import promoted_success

    registry = _registry(params)
    promoted = {r["policy_id"]: r.get("promotion_version") for r in registry.promoted().values()}
    for r in registry.records():
        refined = promoted_success(r) or float("nan")
        mark = ""
        if r["policy_id"] in promoted:
            mark = f"  PROMOTED (v{promoted[r['policy_id']]})" if promoted[r["policy_id"]] else "  PROMOTED"
        typer.echo(f"{r['policy_id']:<32} {r['registered_at'][:19]}  refined success {refined:.2f}"
                   f"{'  (smoke-scale)' if r.get('smoke_scale') else ''}{mark}")


@registry_app.command("show")
def registry_show(policy_id: str, as_json: Annotated[bool, typer.Option("--json")] = False,
                  params: ParamsOpt = DEFAULT_PARAMS) -> None:
    """One record in full."""
    try:
        record = _registry(params).get(policy_id)
    except KeyError as err:
        typer.secho(str(err), fg="red", err=True)
        raise typer.Exit(1) from err
    typer.echo(json.dumps(record, indent=2, sort_keys=True) if as_json else yaml_dump(record))


def yaml_dump(obj) -> str:
    import yaml

    return yaml.safe_dump(obj, sort_keys=True)


def lineage(policy_id: str, params: ParamsOpt = DEFAULT_PARAMS) -> None:
    """The chain from a promoted policy back to its dataset versions and the commit."""
    try:
        r = _registry(params).get(policy_id)
    except KeyError as err:
        typer.secho(str(err), fg="red", err=True)
        raise typer.Exit(1) from err
    lin = r["lineage"]
    typer.echo(f"policy {r['policy_id']}  (weights sha256 {r['policy_sha256']})")
    for label, key in (("refined from", "refined_policy"), ("BC policy", "bc_policy"),
                       ("world model", "world_model"), ("success classifier", "classifier")):
        for path, md5 in lin.get(key, {}).items():
            typer.echo(f"  {label:<20} {path}  md5 {md5}")
    typer.echo("  trained on datasets:")
    for path, md5 in sorted(lin["datasets"].items()):
        typer.echo(f"    {path}  md5 {md5}")
    if lin.get("recorded"):  # records written before imports existed have no such key
        typer.echo("  imported from recorded datasets:")
        for path, md5 in sorted(lin["recorded"].items()):
            typer.echo(f"    {path}  md5 {md5}")
    git = r["git"]
    from w4rl_core.registry.lineage import flywheel_chain

    chain = flywheel_chain(r["task"], git["commit"])
    if chain:  # data version k = the collected data + the evaluation episodes of rounds 0..k-1
        typer.echo(f"  data flywheel: trained on data version {chain[0]['data_version']}")
    for link in chain:
        if not link["manifest_found"]:
            typer.echo(f"    data v{link['data_version']}: round {link['round']}'s manifest is missing at that commit")
            continue
        policies = ", ".join(f"{name} {pid}" for name, pid in sorted(link["policies"].items()))
        typer.echo(f"    data v{link['data_version']} = data v{link['round']} + round {link['round']}'s "
                   f"{link['episodes']} evaluation episodes of {policies or 'no registered policy'} "
                   f"(run commit {link['run_commit']})")
        typer.echo(f"      policy promoted in round {link['round']}: {link['promoted'] or 'none'}")
    typer.echo(f"  code: git commit {git['commit']}{' (with uncommitted changes)' if git['dirty'] else ''}")
    typer.echo(f"  gate: {'passed' if r['gate']['promote'] else 'FAILED'}; registered {r['registered_at']}")
