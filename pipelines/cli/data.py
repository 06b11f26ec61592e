"""`w4rl collect` and `w4rl data ...`: record, bring in, inspect, validate, compare, export and push
episode stores."""

from __future__ import annotations

import json
import sys
from pathlib import Path
from typing import Annotated, Optional

import typer

from pipelines.cli.common import DEFAULT_PARAMS, ParamsOpt, load, load_factory

data_app = typer.Typer(help="Bring in, inspect, validate, compare, export and push episode stores.", no_args_is_help=True)
import_app = typer.Typer(help="Recorded datasets in other formats -> a new episode store.", no_args_is_help=True)
export_app = typer.Typer(help="An episode store -> a dataset in another format.", no_args_is_help=True)
data_app.add_typer(import_app, name="import")
data_app.add_typer(export_app, name="export")


def register(app: typer.Typer) -> None:
    app.command()(collect)
    app.add_typer(data_app, name="data")


def collect(
    task: Annotated[str, typer.Option(help="A task: Meta-World v3 (e.g. coffee-pull-v3), or your own (docs/own-robot.md).")],
    kind: Annotated[str, typer.Option(help="expert | random | policy")],
    out: Annotated[str, typer.Option(help="Output store: a local path or s3://bucket/prefix.zarr")],
    episodes: Annotated[Optional[int], typer.Option(min=1, help="Override collect.episodes.<kind>.")] = None,
    policy: Annotated[Optional[str], typer.Option(help="For --kind policy/eval: a saved policy directory.")] = None,
    policy_factory: Annotated[
        Optional[str], typer.Option(help="For --kind policy/eval: 'module:function' building any policy.")
    ] = None,
    params: ParamsOpt = DEFAULT_PARAMS,
) -> None:
    """Record episodes of one task into a new episode store: in the Meta-World simulator, on the robot
    of params.robot (kinds policy, eval), or from the task's LeRobot dataset (collect.imported.kinds)."""
    from pipelines.stages import collect as stage

    p = load(params)
    typer.echo(p.profile.banner, err=True)
    factory = load_factory(policy_factory) if policy_factory else None
    if policy:
        import functools

        from w4rl_core.models.policy import policy_factory as saved_policy

        factory = functools.partial(saved_policy, path=policy, deterministic=p.policy.rollout_deterministic)
    from w4rl_core.data.storage import StorageUnavailable

    try:
        summary = stage.run(p, task, kind, out, episodes=episodes, policy_factory=factory, progress=True)
    except StorageUnavailable as err:  # already says "collect: writing <url> failed ..."
        typer.secho(str(err), fg="red", err=True)
        # zarr's other in-flight requests of the same outage are abandoned coroutines, which Python
        # reports with a traceback each when it collects them at exit: the line above says it all.
        sys.unraisablehook = lambda unraisable: None
        raise typer.Exit(1) from err
    except (ValueError, FileExistsError) as err:
        typer.secho(f"collect: {err}", fg="red", err=True)
        raise typer.Exit(2) from err
    typer.echo(json.dumps(summary))


@data_app.command("validate")
def data_validate(
    paths: Annotated[Optional[list[str]], typer.Argument(help="Stores or directories holding *.zarr stores.")] = None,
    from_params: Annotated[
        Optional[str],
        typer.Option(help="Validate the stores params.yaml says the pipeline writes under this directory."),
    ] = None,
    kinds: Annotated[Optional[str], typer.Option(help="With --from-params: only these kinds, e.g. expert,random.")] = None,
    report: Annotated[Optional[str], typer.Option(help="Write the JSON report here.")] = "reports/validation.json",
    metrics: Annotated[Optional[str], typer.Option(help="Write summary metrics (JSON) here.")] = None,
    params: ParamsOpt = DEFAULT_PARAMS,
) -> None:
    """Check stores against the schemas. Exit 0 if all are valid, 1 otherwise (report names each problem)."""
    from pipelines.paths import expected_stores
    from pipelines.stages import validate as stage

    p = load(params)
    typer.echo(p.profile.banner, err=True)
    only = tuple(kinds.split(",")) if kinds else None
    targets = list(paths or []) + (expected_stores(p, from_params, only) if from_params else [])
    if not targets:
        raise typer.BadParameter("give store paths or --from-params DIR")
    result = stage.run(p, targets, report, metrics)
    for store in result["stores"]:
        status = "ok" if store["ok"] else "INVALID"
        typer.echo(f"{status}: {store['url']}")
        for issue in store["issues"]:
            typer.echo(f"  {issue['text']}")
        hidden = sum(store["issue_counts"].values()) - len(store["issues"])
        if hidden > 0:
            typer.echo(f"  ... and {hidden} more (counts per check in {report})")
    if not result["ok"]:
        typer.secho(f"validation failed: {result['n_issues']} issue(s); report: {report}", fg="red", err=True)
        raise typer.Exit(1)


@data_app.command("info")
def data_info(
    path: Annotated[str, typer.Argument(help="A store (local path or s3:// URL).")],
    as_json: Annotated[bool, typer.Option("--json", help="Print JSON instead of text.")] = False,
) -> None:
    """Print a human summary of a store: episodes, frames, tasks, success rates, layout."""
    from w4rl_core.data.store import EpisodeStore, StoreFormatError

    try:
        info = EpisodeStore.open(path).info()
    except (StoreFormatError, FileNotFoundError) as err:
        typer.secho(str(err), fg="red", err=True)
        raise typer.Exit(1) from err
    if as_json:
        typer.echo(json.dumps(info, indent=2))
        return
    h, w = info["image_size"]
    lengths = info["episode_length"]
    typer.echo(f"{info['url']}  (format v{info['format_version']})")
    typer.echo(f"  {info['episodes']} episodes, {info['frames']} frames, {h}x{w} rgb from camera {info['camera']!r} at {info['fps']:g} fps")
    typer.echo(f"  action dim {info['action_dim']}, state dim {info['state_dim']}, episode length {lengths['min']}-{lengths['max']}")
    typer.echo(f"  {'task/kind':<32} {'episodes':>8} {'frames':>8} {'success':>8}")
    for key, e in sorted(info["by_task_kind"].items()):
        typer.echo(f"  {key:<32} {e['episodes']:>8} {e['frames']:>8} {e['success_rate']:>8.2f}")


@data_app.command("view")
def data_view(
    path: Annotated[str, typer.Argument(help="A store (local path or s3:// URL).")],
    out: Annotated[Path, typer.Option(help="Output directory: index.html, one GIF and frame grid per episode.")],
    episodes: Annotated[int, typer.Option(min=1, help="How many episodes, from the first.")] = 20,
) -> None:
    """An HTML page of a store's episodes: GIFs, frame grids, action and success plots."""
    from w4rl_core.data.store import StoreFormatError
    from w4rl_core.data.view import write_view

    try:
        summary = write_view(path, out, episodes)
    except (StoreFormatError, FileNotFoundError) as err:
        typer.secho(str(err), fg="red", err=True)
        raise typer.Exit(1) from err
    typer.echo(f"{summary['episodes_shown']} of {summary['episodes']} episodes "
               f"({summary['successful_shown']} successful shown): {summary['page']}")


@data_app.command("drift")
def data_drift(
    reference: Annotated[str, typer.Argument(help="Reference store or directory of stores.")],
    current: Annotated[str, typer.Argument(help="Current store or directory of stores.")],
    out: Annotated[Path, typer.Option(help="Output directory (drift.html, drift.json, summary.json).")],
) -> None:
    """Evidently drift report between two dataset versions, on per-episode features."""
    from w4rl_core.data.drift import drift_report

    summary = drift_report([reference], [current], out)
    typer.echo(
        f"{summary['drifted_columns']:.0f} of {len(summary['columns'])} features drifted "
        f"({summary['reference_episodes']} vs {summary['current_episodes']} episodes); dataset drift: "
        f"{'yes' if summary['dataset_drift'] else 'no'} (Evidently: {summary['dataset_test']}); "
        f"report: {out / 'drift.html'}"
    )


def _mapping(path: Optional[Path], camera: Optional[str]):
    """The LeRobotMapping of a YAML file (its keys are LeRobotMapping's fields), --camera overriding;
    every field type-checked, errors naming the file and the key."""
    import yaml

    from pipelines.params import ParamsError, typed
    from w4rl_core.data.lerobot import LeRobotMapping

    raw: dict = {}
    if path is not None:
        try:
            raw = yaml.safe_load(path.read_text()) or {}
        except (OSError, yaml.YAMLError) as err:
            typer.secho(f"{path}: cannot read the mapping: {err}", fg="red", err=True)
            raise typer.Exit(2) from err
    if camera and isinstance(raw, dict):  # not a mapping: typed() below says so, naming the file
        raw = {**raw, "camera": camera}
    if isinstance(raw, dict) and "camera" not in raw:
        typer.secho("give --camera (the video or image feature that becomes rgb) or a mapping file with camera:",
                    fg="red", err=True)
        raise typer.Exit(2)
    try:
        return typed(LeRobotMapping, raw, "mapping")
    except (ParamsError, ValueError) as err:
        typer.secho(f"{path or '--camera'}: {err}", fg="red", err=True)
        raise typer.Exit(2) from err


@data_app.command("push")
def data_push(
    remote: Annotated[Optional[str], typer.Option("--remote", "-r", help="DVC remote (default: the default remote).")] = None,
    run_cache: Annotated[bool, typer.Option(help="Push the run-cache too (another machine gets the stage runs).")] = False,
) -> None:
    """`dvc push` of this repository, safe to rerun after a killed push (pipelines/dvc_push.py)."""
    import subprocess

    from pipelines.dvc_push import push

    try:
        if push(Path("."), remote, run_cache):
            typer.echo("an earlier push did not finish: DVC's index caches were rebuilt first", err=True)
    except subprocess.CalledProcessError as err:
        raise typer.Exit(err.returncode or 1) from err


@import_app.command("lerobot")
def import_lerobot(
    root: Annotated[Path, typer.Argument(help="A local LeRobotDataset directory (codebase v2.1 or v3.0).")],
    out: Annotated[str, typer.Argument(help="The new store: a local path or s3://bucket/prefix.zarr")],
    mapping: Annotated[Optional[Path], typer.Option(
        help="YAML: camera, action, state, action_low/high, success (next.success | next.reward | labels | "
             "demo_last_k), reward_threshold, labels_file, last_k, kinds, default_kind, image_size, fit, task "
             "(docs/own-robot.md).")] = None,
    camera: Annotated[Optional[str], typer.Option(help="The feature that becomes rgb, e.g. "
                                                       "observation.images.top (overrides the mapping's).")] = None,
) -> None:
    """A LeRobot dataset -> a new episode store, everything checked before anything is written."""
    from w4rl_core.data import lerobot

    m = _mapping(mapping, camera)
    try:
        store = lerobot.import_lerobot(root.resolve(), out, m)
    except (lerobot.LeRobotFormatError, FileExistsError, ValueError) as err:
        typer.secho(f"import refused, nothing written: {err}", fg="red", err=True)
        raise typer.Exit(2) from err
    info = store.info()
    typer.echo(f"imported {info['episodes']} episodes ({info['frames']} frames) into {out}; "
               f"check it with: w4rl data validate {out}")


@export_app.command("lerobot")
def export_lerobot(
    store: Annotated[str, typer.Argument(help="An episode store (demos, evaluation or imagined episodes).")],
    out: Annotated[Path, typer.Argument(help="The new LeRobot v3.0 dataset directory (must not exist).")],
    codec: Annotated[str, typer.Option(help="libsvtav1 (LeRobot's default) or h264.")] = "libsvtav1",
    crf: Annotated[float, typer.Option(help="Encoder quality (lower: closer frames, larger files).")] = 30,
    lossless: Annotated[bool, typer.Option(help="RGB H.264 at crf 0: frames come back exactly.")] = False,
) -> None:
    """An episode store -> a LeRobot v3.0 dataset (LeRobot's loader and the Rerun viewer open it)."""
    from w4rl_core.data import lerobot
    from w4rl_core.data.store import StoreFormatError

    try:
        written = lerobot.export_lerobot(store, out, codec=codec, crf=crf, lossless=lossless)
    except (StoreFormatError, FileNotFoundError, FileExistsError, ValueError) as err:
        typer.secho(f"export refused, nothing written: {err}", fg="red", err=True)
        raise typer.Exit(2) from err
    typer.echo(f"exported {store} as a LeRobot v3.0 dataset: {written}")
