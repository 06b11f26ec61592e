"""The `w4rl` command. Thin: parse arguments, call a stage or w4rl_core, print, set the exit code."""

from __future__ import annotations

import importlib
import json
import os
import sys
from pathlib import Path
from typing import Annotated, Optional

import typer

from pipelines.params import DEFAULT_PARAMS, ParamsError, load_params

app = typer.Typer(
    help="w4rl: robot episodes -> world model -> policy refinement in imagination -> gated policy.",
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_enable=False,
)
data_app = typer.Typer(help="Inspect, validate and compare episode stores.", no_args_is_help=True)
app.add_typer(data_app, name="data")
train_app = typer.Typer(help="Train models (world model; policy and classifier arrive with their stages).",
                        no_args_is_help=True)
app.add_typer(train_app, name="train")
eval_app = typer.Typer(help="Evaluate models.", no_args_is_help=True)
app.add_typer(eval_app, name="eval")

ParamsOpt = Annotated[Path, typer.Option("--params", help="Parameters file.")]


def _params(path: Path):
    try:
        return load_params(path)
    except ParamsError as err:
        typer.secho(str(err), fg="red", err=True)
        raise typer.Exit(2) from err


def _load_factory(spec: str):
    """`package.module:function` -> the function (a PolicyFactory)."""
    module, _, name = spec.partition(":")
    if not name:
        raise typer.BadParameter(f"--policy-factory must look like 'package.module:function', got {spec!r}")
    return getattr(importlib.import_module(module), name)


@app.command()
def collect(
    task: Annotated[str, typer.Option(help="Meta-World task, e.g. coffee-pull-v3 (or any v3 task).")],
    kind: Annotated[str, typer.Option(help="expert | random | policy")],
    out: Annotated[str, typer.Option(help="Output store: a local path or s3://bucket/prefix.zarr")],
    episodes: Annotated[Optional[int], typer.Option(min=1, help="Override collect.episodes.<kind>.")] = None,
    policy: Annotated[Optional[str], typer.Option(help="For --kind policy/eval: a saved policy directory.")] = None,
    policy_factory: Annotated[
        Optional[str], typer.Option(help="For --kind policy/eval: 'module:function' building any policy.")
    ] = None,
    params: ParamsOpt = DEFAULT_PARAMS,
) -> None:
    """Record episodes of one task in the Meta-World simulator into a new episode store."""
    from pipelines.stages import collect as stage

    p = _params(params)
    typer.echo(p.profile.banner, err=True)
    factory = _load_factory(policy_factory) if policy_factory else None
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

    p = _params(params)
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


DeviceOpt = Annotated[Optional[str], typer.Option(help="cpu | cuda | cuda:N (default: params, auto = CUDA if present).")]


@train_app.command("world-model")
def train_world_model(params: ParamsOpt = DEFAULT_PARAMS, device: DeviceOpt = None) -> None:
    """Train the EDM world model on all validated stores; resumes from data/checkpoints after a kill.
    Data-parallel under `torchrun --nproc-per-node N -m pipelines train world-model` (docs/scaling.md)."""
    from pipelines.stages import world_model as stage

    from w4rl_core.train.distributed import launched_ranks

    p = _params(params)
    main = launched_ranks().main  # under torchrun: rank 0 speaks for the run
    if main:
        typer.echo(p.profile.banner, err=True)
    summary = stage.train(p, device, progress=True)
    if main:
        typer.echo(json.dumps(summary))


@eval_app.command("fidelity")
def eval_fidelity(params: ParamsOpt = DEFAULT_PARAMS, device: DeviceOpt = None) -> None:
    """Imagined episodes from held-out episode starts with the recorded actions: PSNR (full frame and
    moving pixels) and SSIM per horizon vs copying the last frame, detector agreement."""
    from pipelines.paths import FIDELITY_METRICS, FIDELITY_REPORT
    from pipelines.stages import world_model as stage

    p = _params(params)
    typer.echo(p.profile.banner, err=True)
    m = stage.fidelity(p, device)
    for metric in ("psnr", "psnr_moving", "ssim"):
        for name in ("model", "copy_last_frame"):
            v, se = m[name][metric], m[name][f"{metric}_se"]
            cells = "  ".join(f"{h}: {v[h]:.3f}±{se[h] or 0:.3f}" for h in v)
            typer.echo(f"{metric:<12} {name:<16} {cells}")
    agree = m["classifier_agreement"]
    typer.echo(f"detector agreement imagined vs real: frames {agree['frame']}, episodes {agree['episode']}")
    typer.echo(f"metrics: {FIDELITY_METRICS}; report, strips and GIFs: {FIDELITY_REPORT}/")


TaskOpt = Annotated[str, typer.Option(help="Meta-World v3 task, one of collect.tasks.")]


def _policy_params(params: Path, device: Optional[str]):
    from pipelines.stages.policy import with_device

    p = _params(params)
    typer.echo(p.profile.banner, err=True)
    return with_device(p, device)


@train_app.command("bc")
def train_bc(task: TaskOpt, params: ParamsOpt = DEFAULT_PARAMS, device: DeviceOpt = None) -> None:
    """Behaviour cloning: Gaussian image policy fitted to the task's expert episodes."""
    from pipelines.stages import policy as stage

    typer.echo(json.dumps(stage.train_bc(_policy_params(params, device), task, progress=True)))


@train_app.command("reward")
def train_reward(task: TaskOpt, params: ParamsOpt = DEFAULT_PARAMS, device: DeviceOpt = None) -> None:
    """Success classifier on the task's expert and BC-rollout frames; precision/recall/F1 held out."""
    from pipelines.stages import policy as stage

    typer.echo(json.dumps(stage.train_reward(_policy_params(params, device), task, progress=True)))


@app.command()
def refine(task: TaskOpt, params: ParamsOpt = DEFAULT_PARAMS, device: DeviceOpt = None) -> None:
    """PPO inside the frozen world model from the BC policy, once per refine.seeds entry, rewarded by
    the frozen, calibrated success detector."""
    from pipelines.stages import policy as stage

    typer.echo(json.dumps(stage.refine(_policy_params(params, device), task)))


@app.command()
def evaluate(params: ParamsOpt = DEFAULT_PARAMS) -> None:
    """Success rate of BC and refined policies in the simulator, per task and overall (metrics/policy.json)."""
    from pipelines.stages import policy as stage

    m = stage.evaluate(_policy_params(params, None))
    typer.echo(f"{m['episodes_per_policy']} distinct unseen scenes per task, each once per policy; intervals "
               "resample refinement seeds and scenes")
    typer.echo(f"{'task':<20} {'BC':>14} {'refined':>14} {'uplift [95% CI]':>24}")
    for task, e in [*m["per_task"].items(), ("overall", m["overall"])]:
        lo, hi = e["uplift_ci95"]
        typer.echo(f"{task:<20} {e['bc']['success_rate']:>6.2f} (n={e['bc']['episodes']:>3}) "
                   f"{e['refined']['success_rate']:>6.2f} (n={e['refined']['episodes']:>3}) "
                   f"{e['uplift']:>+7.2f} [{lo:+.2f}, {hi:+.2f}]")
        for row in e["seeds"] if task in m["per_task"] else []:  # overall["seeds"] lists the seed numbers
            lo, hi = row["uplift_ci95"]
            typer.echo(f"  seed {row['seed']:<13} {'':>14} {row['success_rate']:>6.2f} (n={row['episodes']:>3}) "
                       f"{row['uplift']:>+7.2f} [{lo:+.2f}, {hi:+.2f}]")


robot_app = typer.Typer(help="Serve a robot over the network, or evaluate on one.", no_args_is_help=True)
app.add_typer(robot_app, name="robot")
TOKEN_ENV = "W4RL_ROBOT_TOKEN"


def _token(token_file: Optional[Path], create: bool) -> str:
    """The bridge token: $W4RL_ROBOT_TOKEN, else the token file (created 0600 when serving)."""
    import secrets

    if os.environ.get(TOKEN_ENV):
        return os.environ[TOKEN_ENV]
    path = token_file or Path(".w4rl/robot-token")
    if path.exists():
        return path.read_text().strip()
    if not create:
        raise typer.BadParameter(f"no token: set {TOKEN_ENV} or pass --token-file (the server writes one)")
    path.parent.mkdir(parents=True, exist_ok=True)
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    with os.fdopen(fd, "w") as f:
        f.write(secrets.token_urlsafe(32))
    typer.echo(f"generated a bridge token in {path} (mode 0600); clients read it from there or ${TOKEN_ENV}",
               err=True)
    return path.read_text().strip()


@robot_app.command("serve")
def robot_serve(
    task: TaskOpt,
    host: Annotated[str, typer.Option(help="Address to bind; loopback unless you mean otherwise.")] = "127.0.0.1",
    port: Annotated[int, typer.Option()] = 8765,
    token_file: Annotated[Optional[Path], typer.Option(help="Token file (default .w4rl/robot-token).")] = None,
    params: ParamsOpt = DEFAULT_PARAMS,
) -> None:
    """Expose the Meta-World robot of TASK over HTTP (bearer token required on every request)."""
    from w4rl_core.robots.bridge import BridgeServer
    from w4rl_core.robots.metaworld_robot import MetaWorldRobot

    cfg = _params(params).collect.robot_config(task)
    server = BridgeServer(lambda: MetaWorldRobot(cfg), _token(token_file, create=True), host, port)
    typer.echo(f"serving {cfg.task} on {server.url}", err=True)
    server.run()


@robot_app.command("evaluate")
def robot_evaluate(
    url: Annotated[str, typer.Option(help="Bridge address, e.g. http://127.0.0.1:8765")],
    policy: Annotated[Path, typer.Option(help="A saved policy directory, e.g. data/models/refined/<task>.")],
    episodes: Annotated[int, typer.Option()] = 10,
    token_file: Annotated[Optional[Path], typer.Option()] = None,
    params: ParamsOpt = DEFAULT_PARAMS,
) -> None:
    """Success rate of a saved policy on a remote robot (the same rollout code as `evaluate`)."""
    from w4rl_core.eval.policy_eval import evaluate_on_robot
    from w4rl_core.models.policy import PolicyActor, load_policy
    from w4rl_core.robots.bridge import RemoteRobot

    p = _params(params)
    robot = RemoteRobot(url, _token(token_file, create=False))
    try:
        from w4rl_core.models.model_files import check_fits

        loaded, _ = load_policy(policy, task=robot.task)  # a policy trained for another task is refused
        check_fits(policy, "policy", action_dim=(loaded.action_dim, len(robot.action_low)))
        actor = PolicyActor(loaded, deterministic=p.evaluate.deterministic)
        summary = evaluate_on_robot(robot, actor, episodes, p.evaluate.seed, p.collect.episode_len)
    finally:
        robot.close()
    typer.echo(json.dumps({"task": robot.task, **summary}))


@app.command()
def report(
    reference: Annotated[Optional[list[str]], typer.Option(help="Reference stores for drift (default: expert demos).")] = None,
    params: ParamsOpt = DEFAULT_PARAMS,
) -> None:
    """The run's HTML report: data drift, fidelity strips, BC vs refined success, gate decision."""
    from pipelines.stages import gate as stage

    typer.echo(f"report: {stage.report(_params(params), reference)}")


registry_app = typer.Typer(help="Promoted policies: immutable records with lineage.", no_args_is_help=True)
app.add_typer(registry_app, name="registry")


@app.command()
def gate(params: ParamsOpt = DEFAULT_PARAMS) -> None:
    """The gate stage of dvc.yaml: apply the promotion rules to the metric files, write metrics/gate.json."""
    from pipelines.paths import GATE_RECORD
    from pipelines.stages import gate as stage

    p = _params(params)
    typer.echo(p.profile.banner, err=True)
    decision = stage.gate(p)
    for task, verdict in decision["tasks"].items():
        typer.echo(f"{task}: {'PROMOTE' if verdict['promote'] else 'REFUSE'}: {verdict['decision']}")
        for rule in verdict["rules"]:
            typer.echo(f"  [{'pass' if rule['passed'] else 'FAIL'}] {rule['rule']}: {rule['reason']}")
    typer.echo(f"decision record: {GATE_RECORD}")


@app.command()
def promote(params: ParamsOpt = DEFAULT_PARAMS) -> None:
    """Register the policies the gate passed (immutable records: weights, data and model hashes, commit).
    Refuses without a passing metrics/gate.json that is current for this workspace's dvc.lock."""
    from pipelines.stages import gate as stage
    from w4rl_core.registry.registry import RegistryConflict, RegistryUnavailable

    p = _params(params)
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
    return _params(params).registry.open()


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


@app.command()
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
    git = r["git"]
    typer.echo(f"  code: git commit {git['commit']}{' (with uncommitted changes)' if git['dirty'] else ''}")
    typer.echo(f"  gate: {'passed' if r['gate']['promote'] else 'FAILED'}; registered {r['registered_at']}")


flows_app = typer.Typer(help="Prefect flows: scheduled retraining.", no_args_is_help=True)
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


def main() -> None:  # pragma: no cover - console entry point
    from w4rl_core.models.model_files import ModelFileError

    os.environ.setdefault("MUJOCO_GL", "egl")
    try:
        app()
    except ModelFileError as err:  # a saved model that cannot be used: one line, not a torch traceback
        typer.secho(f"error: {err}", fg="red", err=True)
        raise SystemExit(1) from None


if __name__ == "__main__":  # pragma: no cover
    main()
