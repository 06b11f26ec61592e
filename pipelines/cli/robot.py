"""`w4rl robot ...`: serve a robot over the bridge protocol (HTTP, bearer token), or evaluate on one."""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Annotated, Optional

import typer

from pipelines.cli.common import DEFAULT_PARAMS, ParamsOpt, TaskOpt, load

robot_app = typer.Typer(help="Serve a robot over the network, or evaluate on one.", no_args_is_help=True)
TOKEN_ENV = "W4RL_ROBOT_TOKEN"  # w4rl_core.robots.bridge.TOKEN_ENV (not imported: it would import numpy for --help)


def register(app: typer.Typer) -> None:
    app.add_typer(robot_app, name="robot")


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
    serve_as: Annotated[Optional[str], typer.Option(
        help="The task name it reports (default TASK): the simulator standing in for a robot of your own, "
             "whose task has another name.")] = None,
    report_success: Annotated[bool, typer.Option(
        help="Report the simulator's success; --no-report-success stands in for hardware that cannot tell "
             "(episodes then need operator labels: robot.success prompt | queue).")] = True,
    params: ParamsOpt = DEFAULT_PARAMS,
) -> None:
    """Expose the Meta-World robot of TASK over HTTP (bearer token required on every request).

    It sets up the scenes the pipeline asks for (role, index) from the params' scene pools, exactly
    as the in-process stages place them: a pipeline with robot.kind bridge pointed at it records the
    episodes the simulator would (the stand-in for hardware in the tests and docs/own-robot.md)."""
    from w4rl_core.robots.bridge import BridgeServer
    from w4rl_core.robots.labels import UnreportedSuccess
    from w4rl_core.robots.metaworld_robot import MetaWorldRobot
    from w4rl_core.robots.scenes import SCENE_ROLES, PoolPlacedRobot

    p = load(params)
    cfg = p.collect.robot_config(task)
    pools = {role: p.scenes.pool(role) for role in SCENE_ROLES}

    def robot():
        placed = PoolPlacedRobot(MetaWorldRobot(cfg), pools, task=serve_as)
        return placed if report_success else UnreportedSuccess(placed)

    server = BridgeServer(robot, _token(token_file, create=True), host, port)
    typer.echo(f"serving {cfg.task}{f' as {serve_as}' if serve_as else ''} on {server.url}", err=True)
    server.run()


@robot_app.command("evaluate")
def robot_evaluate(
    url: Annotated[str, typer.Option(help="Bridge address, e.g. http://127.0.0.1:8765")],
    policy: Annotated[Path, typer.Option(help="A saved policy directory, e.g. data/models/refined/<task>.")],
    episodes: Annotated[int, typer.Option()] = 10,
    token_file: Annotated[Optional[Path], typer.Option()] = None,
    success_from: Annotated[str, typer.Option(
        help="robot: the robot reports success; prompt: ask on this terminal; queue: `w4rl robot label`.")] = "robot",
    label_dir: Annotated[Path, typer.Option(help="queue: where requests wait for `w4rl robot label`.")] = Path(
        ".w4rl/labels"),
    params: ParamsOpt = DEFAULT_PARAMS,
) -> None:
    """Success rate of a saved policy on a remote robot (the same rollout code as `evaluate`)."""
    from w4rl_core.eval.policy_eval import evaluate_on_robot
    from w4rl_core.robots.labels import make_labeler
    from w4rl_core.models.policy import PolicyActor, load_policy
    from w4rl_core.robots.bridge import RemoteRobot

    p = load(params)
    try:
        labeler = make_labeler(success_from, str(label_dir), p.robot.label_timeout_s)
    except ValueError as err:
        raise typer.BadParameter(str(err), param_hint="--success-from") from None
    robot = RemoteRobot(url, _token(token_file, create=False))
    try:
        from w4rl_core.models.model_files import check_fits

        loaded, _ = load_policy(policy, task=robot.task)  # a policy trained for another task is refused
        check_fits(policy, "policy", action_dim=(loaded.action_dim, len(robot.action_low)))
        actor = PolicyActor(loaded, deterministic=p.evaluate.deterministic)
        summary = evaluate_on_robot(robot, actor, episodes, p.evaluate.seed, p.collect.episode_len, labeler)
    finally:
        robot.close()
    typer.echo(json.dumps({"task": robot.task, **summary}))


@robot_app.command("label")
def robot_label(
    label_dir: Annotated[Path, typer.Option("--dir", help="robot.label_dir of the waiting pipeline.")] = Path(
        ".w4rl/labels"),
    answer: Annotated[Optional[str], typer.Option(
        help="Answer the oldest pending episode without asking: 'n', 'y' or 'y STEP'.")] = None,
    operator: Annotated[str, typer.Option(help="Who answers (recorded with the label).")] = "",
    wait: Annotated[float, typer.Option(help="Seconds to wait for an episode to label before giving up.")] = 0.0,
) -> None:
    """Label the success of episodes a robot could not judge (robot.success queue): for each pending
    episode, say whether it succeeded ('n', 'y', or 'y STEP': succeeded from step STEP on). The
    waiting stage records the answer as the episode's success (docs/own-robot.md#success-labels)."""
    import time

    from w4rl_core.robots.labels import answer_request, parse_answer, pending_requests

    deadline = time.monotonic() + wait
    requests = pending_requests(label_dir)
    while not requests and time.monotonic() < deadline:
        time.sleep(0.2)
        requests = pending_requests(label_dir)
    if not requests:
        typer.echo(f"no episode waits for a label in {label_dir}", err=True)
        raise typer.Exit(1 if answer is not None else 0)
    for request in requests[:1] if answer is not None else requests:
        text = answer
        while text is None:
            text = typer.prompt(f"{request.describe()}: did it succeed? [n | y | y STEP]")
            try:
                parse_answer(text, request.steps)
            except ValueError as err:
                typer.echo(str(err), err=True)
                text = None
        try:
            answer_request(label_dir, request, text, operator)
        except ValueError as err:
            raise typer.BadParameter(str(err), param_hint="--answer") from None
        typer.echo(f"labelled {request.describe()}: {text.strip()}")
