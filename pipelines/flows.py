"""Prefect flows: scheduled retraining over the DVC pipeline.

retrain = pull data -> `dvc repro` stage by stage (DAG order, the gate stage last; DVC's cache decides
what actually runs; Prefect adds retries, timeouts, live logs and state) -> commit dvc.lock, metrics
and plots on a branch and push it, push the data with DVC's run cache -> promote when the gate passed
(so every registry record points at a clean, pushed commit) -> run report -> artifacts (the gate
decision as a table, the report as markdown).

The deployment (prefect.yaml) pulls the code it runs (git step), sets the worker's environment
(job_variables) and allows one run at a time (concurrency_limit: a new run is cancelled while one
is in progress, so two runs never share the worker's checkout).

Fanned out (`retrain(branches_on=...)`, docs/scaling.md): the shared stages run here, each task's
branch (`branch_plan`) runs as a flow run of the `branch` deployment on a work pool's workers, each
in its own checkout, and this run restores the branches from the shared DVC remote's run-cache.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from dataclasses import dataclass
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

import yaml
from prefect import flow, get_run_logger, task

from pipelines.paths import GATE_RECORD, RUN_REPORT  # written by the gate stage and `w4rl report`

PREFECT_YAML = Path(__file__).resolve().parents[1] / "prefect.yaml"
STAGE_TIMEOUT_S = 6 * 3600  # one DVC stage; the GPU profile's world model is the longest (~1 h)


def _run(cmd: list[str], repo: Path) -> str:
    """Run a command in the workspace with its output streamed, line by line as it comes, into the
    Prefect run log; a failure fails the task with the output's tail. Returns the output."""
    logger = get_run_logger()
    logger.info("$ %s", " ".join(cmd))
    lines: list[str] = []
    with subprocess.Popen(cmd, cwd=repo, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
                          bufsize=1) as proc:
        assert proc.stdout is not None
        for line in proc.stdout:
            line = line.rstrip()
            if line:
                logger.info(line)
                lines.append(line)
    if proc.returncode != 0:
        raise RuntimeError(f"{' '.join(cmd)} failed ({proc.returncode}):\n" + "\n".join(lines[-40:]))
    return "\n".join(lines)


def _git(repo: Path, *args: str) -> str:
    return subprocess.run(["git", *args], cwd=repo, capture_output=True, text=True, check=True).stdout.strip()


def _has_remote(repo: Path) -> bool:
    from pipelines.dvc_push import has_default_remote

    return has_default_remote(repo)


def stage_order(repo: Path) -> list[str]:
    """Every stage of dvc.yaml in dependency order (DVC's own graph)."""
    import networkx as nx
    from dvc.repo import Repo

    with Repo(str(repo)) as dvc_repo:
        graph = dvc_repo.index.graph  # edges point from a stage to the stages it depends on
        # stage.name, not .addressing: the latter is relative to this process's cwd, not the repo
        return [stage.name for stage in reversed(list(nx.topological_sort(graph)))]


@dataclass(frozen=True)
class BranchPlan:
    """The DAG cut for fanning out: `before` runs on the coordinator (shared stages: collection,
    BC and rollouts, which feed the one world model, and the world model), `branches[item]` names
    the last per-item stages (`refine@<task>`); a worker's `dvc repro <targets>` restores everything
    upstream of them from the run-cache and runs the rest of its branch."""

    before: list[str]
    branches: dict[str, list[str]]


def branch_plan(repo: Path, after: str = "train_world_model") -> BranchPlan:
    """Per-item (foreach) stages that depend on `after`, grouped by item, from DVC's own graph."""
    import networkx as nx
    from dvc.repo import Repo

    with Repo(str(repo)) as dvc_repo:
        graph = dvc_repo.index.graph  # edges point from a stage to the stages it depends on
        by_name = {stage.name: stage for stage in graph.nodes}
        if after not in by_name:
            raise ValueError(f"{repo}/dvc.yaml: no stage named {after!r} to fan out after")
        dependents = nx.ancestors(graph, by_name[after])
        branch = {st for st in dependents if "@" in st.name}
        groups: dict[str, set] = {}
        for st in branch:
            groups.setdefault(st.name.split("@", 1)[1], set()).add(st)
        branches = {item: sorted(st.name for st in group if not (nx.ancestors(graph, st) & group))
                    for item, group in sorted(groups.items())}
        upstream = set().union(*(nx.descendants(graph, st) for st in branch)) - branch if branch else set()
        order = [st for st in reversed(list(nx.topological_sort(graph))) if st in upstream]
        return BranchPlan(before=[st.name for st in order], branches=branches)


def _require_pushed_code(repo: Path) -> tuple[str, str]:
    """(origin URL, HEAD) after checking that workers can check out exactly what runs here: the
    stage definitions, params and code committed, and the commit on origin."""
    if _git(repo, "status", "--porcelain", "--untracked-files=no", "--", "dvc.yaml", "params.yaml",
            "pipelines", "w4rl_core"):
        raise RuntimeError(f"{repo}: uncommitted changes to dvc.yaml, params.yaml or code; workers run the "
                           "commit, so commit and push them first")
    origin = _git(repo, "remote", "get-url", "origin")
    commit = _git(repo, "rev-parse", "HEAD")
    _git(repo, "fetch", "-q", "origin")
    if not _git(repo, "branch", "-r", "--contains", commit):
        raise RuntimeError(f"{repo}: commit {commit[:12]} is not on origin ({origin}); push it first")
    return origin, commit


@task(retries=2, retry_delay_seconds=10, timeout_seconds=3600)
def pull(repo: Path) -> None:
    if _has_remote(repo):
        # --allow-missing: a first run has nothing in the remote yet; repro recomputes what is absent.
        _run(["dvc", "pull", "--allow-missing"], repo)


@task(retries=1, retry_delay_seconds=5, timeout_seconds=STAGE_TIMEOUT_S, task_run_name="dvc repro {stage}")
def repro(repo: Path, stage: str, pull: bool = False) -> str:
    """One stage. pull: restore it from the remote's run-cache when a worker already ran it
    (`--pull` fetches the outputs of a run-cache hit; the run entries come from `pull_run_cache`)."""
    return _run(["dvc", "repro", "--single-item", *(["--pull"] if pull else []), stage], repo)


@task(timeout_seconds=600)
def up_to_date(repo: Path) -> bool:
    """`dvc status` of the whole pipeline, in this process: nothing changed since the last run.
    A nightly run with nothing new then skips the per-stage tasks (one `dvc repro` process each,
    ~2.5 s apiece even when it has nothing to do)."""
    from dvc.repo import Repo

    with Repo(str(repo)) as dvc_repo:
        return not dvc_repo.status()


@task(retries=2, retry_delay_seconds=10, timeout_seconds=600)
def pull_run_cache(repo: Path) -> None:
    """The remote's run-cache entries and the uncached outputs they name (pipelines/run_cache.py),
    not what the committed dvc.lock names (`dvc fetch --run-cache` would fetch that too, which a
    worker does not need)."""
    from pipelines.run_cache import pull_runs

    get_run_logger().info("run-cache: %d uncached outputs fetched", pull_runs(repo))


def _cli(*args: str) -> list[str]:
    """The project CLI of the workspace being run (python -m pipelines), not an installed copy."""
    return [sys.executable, "-m", "pipelines", *args]


@task(retries=2, retry_delay_seconds=10, timeout_seconds=600)
def commit_run(repo: Path, branch: str) -> dict[str, str | None]:
    """Commit what the run changed (dvc.lock, metrics, plots, small reports: everything git tracks)
    on the local `branch` and push it to origin as `<branch>/<UTC time>`: one branch per run, so
    no push ever has to rewrite another run's commit and every registry record's commit stays
    reachable. Returns the commit and the pushed branch (None without an origin)."""
    _git(repo, "checkout", "-B", branch)
    _git(repo, "add", "-A")  # the worker's checkout is the run's own: all it changed belongs to the run
    stamp = datetime.now(timezone.utc)
    if _git(repo, "status", "--porcelain"):
        _git(repo, "-c", "user.name=w4rl retrain", "-c", "user.email=w4rl@localhost", "commit", "-q", "-m",
             f"retrain {stamp:%Y-%m-%d %H:%M} UTC: dvc.lock and metrics of the run")
    pushed = None
    if "origin" in _git(repo, "remote").split():
        pushed = f"{branch}/{stamp:%Y%m%d-%H%M%S}"
        _run(["git", "push", "-q", "origin", f"HEAD:refs/heads/{pushed}"], repo)
    return {"commit": _git(repo, "rev-parse", "HEAD"), "branch": pushed}


@task(retries=2, retry_delay_seconds=10, timeout_seconds=600)
def push_tags(repo: Path) -> None:
    """The GTO tags promotion made (policy-<task>@vX.Y.Z, policy-<task>#prod#N) to origin."""
    if "origin" in _git(repo, "remote").split():
        _run(["git", "push", "-q", "origin", "refs/tags/policy-*:refs/tags/policy-*"], repo)


@task(retries=2, retry_delay_seconds=10, timeout_seconds=3600)
def push(repo: Path) -> None:
    if _has_remote(repo):
        from pipelines.dvc_push import push as dvc_push
        from pipelines.run_cache import push_uncached_outputs

        # --run-cache: another machine that checks out the commit gets the stage runs, not only
        # outputs. Through dvc_push: a retry after a killed or timed-out try must not trust the
        # caches that try left (pipelines/dvc_push.py).
        if dvc_push(repo, run_cache=True, runner=lambda cmd: _run(cmd, repo)):
            get_run_logger().warning("an earlier dvc push did not finish: DVC's index caches were rebuilt")
        pushed, absent = push_uncached_outputs(repo)
        get_run_logger().info("run-cache: %d uncached outputs pushed (%d not in the local cache)", pushed, absent)


@task(timeout_seconds=600)
def promote(repo: Path) -> str:
    try:
        return _run(_cli("promote"), repo)
    except RuntimeError as err:
        # A refusal (e.g. the candidate regresses against the promoted policy) is an outcome of the
        # run, not a failure of it; anything else still fails the task.
        if "promotion refused" in str(err):
            return str(err).split("\n", 1)[-1]
        raise


@task(timeout_seconds=1800)
def report(repo: Path) -> str:
    return _run(_cli("report"), repo)


def publish_artifacts(decision: dict[str, Any], promoted: str, commit: str | None, repo: Path) -> None:
    """The gate decision as a table artifact (one row per task and rule), the run summary and report
    location as a markdown artifact, both on the flow run in the Prefect UI."""
    from prefect.artifacts import create_markdown_artifact, create_table_artifact

    rows = [{"task": t, "rule": r["rule"], "value": r["value"], "threshold": r["threshold"],
             "passed": r["passed"], "verdict": "PROMOTE" if v["promote"] else "REFUSE"}
            for t, v in decision["tasks"].items() for r in v["rules"]]
    create_table_artifact(key="gate-decision", table=rows, description=f"{GATE_RECORD} of this run")
    verdicts = "\n".join(f"- **{t}**: {'PROMOTE' if v['promote'] else 'REFUSE'}"
                          + (f" (failed: {', '.join(v['failed_rules'])})" if v["failed_rules"] else "")
                          for t, v in decision["tasks"].items())
    create_markdown_artifact(
        key="retrain-report",
        markdown=f"# Retraining run\n\ncommit `{commit}`\n\n{verdicts}\n\n{promoted}\n\n"
                 f"Report: `{repo / RUN_REPORT}`\n",
        description="gate verdicts, promotion and the HTML report of this run")


@task(retries=2, retry_delay_seconds=10, timeout_seconds=1800)
def checkout_commit(checkout: Path, origin: str, commit: str) -> None:
    """The worker's own clone of origin at `commit` (made once; its data and DVC cache stay between
    runs, so a later branch restores what this worker already holds without downloading it)."""
    if not (checkout / ".git").exists():
        checkout.parent.mkdir(parents=True, exist_ok=True)
        subprocess.run(["git", "clone", "-q", "--no-checkout", origin, str(checkout)], check=True,
                       capture_output=True, text=True)
    _git(checkout, "fetch", "-q", "origin")
    _git(checkout, "checkout", "-q", "--force", "--detach", commit)


@task(retries=1, retry_delay_seconds=5, timeout_seconds=4 * STAGE_TIMEOUT_S)
def repro_branch(checkout: Path, targets: list[str]) -> str:
    # --pull: upstream stages (collection, BC, the world model) are run-cache hits whose outputs
    # come from the remote; the branch's own stages run here.
    return _run(["dvc", "repro", "--pull", *targets], checkout)


@flow(name="branch", log_prints=True, retries=1, retry_delay_seconds=30)
def run_branch(origin: str, commit: str, targets: list[str]) -> dict[str, Any]:
    """One per-task branch (the classifier and refinement of a task; see `branch_plan`) on a worker of
    the branch work pool, in the worker's own checkout (`$W4RL_CHECKOUT`): check out the commit the
    coordinator runs, take upstream outputs from the shared DVC remote's run-cache, run the branch,
    push its outputs and run-cache for the coordinator to restore."""
    checkout = Path(os.environ.get("W4RL_CHECKOUT", "w4rl-checkout")).resolve()
    checkout_commit(checkout, origin, commit)
    pull_run_cache(checkout)
    out = repro_branch(checkout, targets)
    push(checkout)
    return {"targets": targets, "commit": commit, "checkout": str(checkout), "ran": stages_ran(out.splitlines())}


def fan_out(root: Path, deployment: str) -> tuple[dict[str, dict[str, Any]], list[str]]:
    """Run the shared stages here, each task's branch as a flow run of `deployment` (a work pool's
    workers pick them up, one per worker at a time), then fetch the run-cache they pushed. Returns,
    per task, the branch's flow run id, final state and the stages it ran (from its run log), and
    the shared stages it reproduced here."""
    from prefect.deployments import run_deployment
    from prefect.flow_runs import wait_for_flow_run
    from prefect.utilities.asyncutils import run_coro_as_sync

    if not _has_remote(root):
        raise RuntimeError(f"{root}: fanning out needs a DVC remote the workers share (dvc remote add -d)")
    origin, commit = _require_pushed_code(root)
    plan = branch_plan(root)
    for stage in plan.before:
        repro(root, stage)
    push(root)  # the shared stages' outputs and runs: what each worker restores instead of running
    runs = {item: run_deployment(deployment, parameters={"origin": origin, "commit": commit, "targets": targets},
                                 timeout=0, flow_run_name=f"branch {item}")
            for item, targets in plan.branches.items()}
    done = {item: run_coro_as_sync(wait_for_flow_run(run.id, timeout=4 * STAGE_TIMEOUT_S))
            for item, run in runs.items()}
    failed = {item: run.state.name for item, run in done.items() if not run.state.is_completed()}
    if failed:
        raise RuntimeError(f"branches did not complete: {failed}")
    pull_run_cache(root)
    return ({item: {"flow_run": str(run.id), "state": run.state.name, "ran": stages_ran(flow_run_logs(run.id))}
             for item, run in done.items()}, plan.before)


def flow_run_logs(flow_run_id) -> list[str]:
    """Every log message of a flow run, in order, from the Prefect server."""
    from prefect.client.orchestration import get_client
    from prefect.client.schemas.filters import LogFilter, LogFilterFlowRunId
    from prefect.utilities.asyncutils import run_coro_as_sync

    async def read() -> list[str]:
        async with get_client() as client:
            flt = LogFilter(flow_run_id=LogFilterFlowRunId(any_=[flow_run_id]))
            messages: list[str] = []
            while page := await client.read_logs(log_filter=flt, limit=200, offset=len(messages)):
                messages += [log.message for log in page]
            return messages

    return run_coro_as_sync(read())


def stages_ran(lines: list[str]) -> list[str]:
    """The stages DVC ran (not restored from its cache) according to its output lines."""
    return [line.split("'")[1] for line in lines if line.startswith("Running stage '")]


@flow(name="retrain", log_prints=True)
def retrain(repo: str = ".", pull_data: bool = True, push_data: bool = True,
            branch: str | None = None, branches_on: str | None = None, flywheel: bool = False) -> dict[str, Any]:
    """Reproduce the pipeline, commit and push its record, promote what the gate passed, report.
    With `branch` None (the default; the deployment sets `retrain`) nothing is committed: a run in
    a developer's checkout never switches its branch or commits its edits. With `branches_on` (a
    deployment of the `branch` flow, e.g. "branch/w4rl-branch") each task's branch runs on that
    deployment's work pool and this run restores it from the DVC remote's run-cache. With
    `flywheel` the run is one round of the data flywheel (docs/flywheel.md): after promotion its
    evaluation episodes are fed back as the next data version (`w4rl flywheel advance`, a second
    commit), and `branch` itself is pushed too, so that the next run starts from that commit."""
    root = Path(repo).resolve()
    if pull_data:
        pull(root)
    stages = stage_order(root)
    branches, shared = fan_out(root, branches_on) if branches_on else ({}, [])
    if not branches and up_to_date(root):
        get_run_logger().info("dvc status: data and pipelines are up to date; no stage to reproduce")
        stages = []
    for stage in stages:
        if stage not in shared:  # fan_out reproduced the shared stages: another `dvc repro` would only check them
            repro(root, stage, pull=bool(branches))
    decision = json.loads((root / GATE_RECORD).read_text())
    committed = commit_run(root, branch) if branch else {"commit": None, "branch": None}
    if push_data:
        push(root)
    promoted = promote(root) if decision["promote_any"] else "nothing promoted: the gate refused every task"
    if branch and decision["promote_any"]:
        push_tags(root)
    report(root)
    publish_artifacts(decision, promoted, committed["commit"], root)
    fed_back = feed_back(root, branch, push_data) if flywheel else None
    # stages: those reproduced, in order (none when nothing had changed)
    return {"stages": stages, "gate": decision, **committed, "promoted": promoted, "branches": branches,
            "flywheel": fed_back}


@task(retries=1, retry_delay_seconds=10, timeout_seconds=3600)
def feed_back(repo: Path, branch: str | None, push_data: bool) -> dict[str, Any]:
    """One flywheel round's end: the evaluation episodes become the next data version (committed by
    `w4rl flywheel advance` on the run's branch, pushed to the DVC remote), and the branch is pushed
    to origin as `branch` (the chain the next round checks out) and as the run's stamped branch."""
    out = _run(_cli("flywheel", "advance", *([] if push_data else ["--no-push"]),
                    *([] if branch else ["--no-commit"])), repo)
    lines = out.splitlines()  # advance prints its result last, as indented JSON
    result = json.loads("\n".join(lines[max(i for i, line in enumerate(lines) if line == "{"):]))
    if branch and "origin" in _git(repo, "remote").split():
        _run(["git", "push", "-q", "origin", f"HEAD:refs/heads/{branch}"], repo)
    return result


def deployment_spec(path: Path = PREFECT_YAML, name: str = "retrain-nightly") -> dict[str, Any]:
    """The deployment entry of prefect.yaml: one source of truth for `prefect deploy` and `serve`."""
    spec = yaml.safe_load(path.read_text())
    for d in spec.get("deployments", []):
        if d["name"] == name:
            return d
    raise KeyError(f"{path}: no deployment named {name!r}")


def to_deployment(name: str = "retrain-nightly"):
    """A RunnerDeployment of `retrain` with prefect.yaml's schedule, parameters and concurrency limit
    (job_variables and pull steps apply to work-pool workers, not to `serve`)."""
    from prefect.schedules import Cron

    from prefect.client.schemas.objects import ConcurrencyLimitConfig

    spec = deployment_spec(name=name)
    schedules = [Cron(s["cron"], timezone=s.get("timezone", "UTC")) for s in spec.get("schedules", [])]
    limit = spec.get("concurrency_limit")
    return retrain.to_deployment(name=name, schedules=schedules, parameters=spec.get("parameters", {}),
                                 description=spec.get("description"),
                                 concurrency_limit=ConcurrencyLimitConfig(**limit) if limit else None)


def serve(name: str = "retrain-nightly") -> None:  # pragma: no cover - long-running
    from prefect import serve as prefect_serve

    os.environ.setdefault("PREFECT_SERVER_ANALYTICS_ENABLED", "false")
    prefect_serve(to_deployment(name))
