"""Prefect flows: scheduled retraining over the DVC pipeline.

retrain = pull data -> `dvc repro` stage by stage (in DAG order; DVC's cache decides what actually
runs, Prefect adds retries, logs and state) -> gate -> promote -> run report -> push. A file lock keeps two
retraining runs out of one workspace. The deployment (cron schedule, work pool) is in prefect.yaml.
"""

from __future__ import annotations

import os
import subprocess
from pathlib import Path
from typing import Any

import yaml
from prefect import flow, get_run_logger, task

LOCK = ".w4rl/retrain.lock"
PREFECT_YAML = Path(__file__).resolve().parents[1] / "prefect.yaml"


class WorkspaceBusy(RuntimeError):
    pass


def _run(cmd: list[str], repo: Path) -> str:
    """Run a pipeline command; its output goes to the Prefect log, a failure fails the task."""
    logger = get_run_logger()
    logger.info("$ %s", " ".join(cmd))
    result = subprocess.run(cmd, cwd=repo, capture_output=True, text=True)
    if result.stdout.strip():
        logger.info(result.stdout.strip()[-4000:])
    if result.returncode != 0:
        raise RuntimeError(f"{' '.join(cmd)} failed ({result.returncode}):\n{result.stderr.strip()[-4000:]}")
    return result.stdout


def _has_remote(repo: Path) -> bool:
    return bool(subprocess.run(["dvc", "remote", "default"], cwd=repo, capture_output=True, text=True).stdout.strip())


def stage_order(repo: Path) -> list[str]:
    """Every stage of dvc.yaml in dependency order (DVC's own graph)."""
    import networkx as nx
    from dvc.repo import Repo

    with Repo(str(repo)) as dvc_repo:
        graph = dvc_repo.index.graph  # edges point from a stage to the stages it depends on
        # stage.name, not .addressing: the latter is relative to this process's cwd, not the repo
        return [stage.name for stage in reversed(list(nx.topological_sort(graph)))]


@task(retries=2, retry_delay_seconds=10)
def pull(repo: Path) -> None:
    if _has_remote(repo):
        # --allow-missing: a first run has nothing in the remote yet; repro recomputes what is absent.
        _run(["dvc", "pull", "--allow-missing"], repo)


@task(retries=1, retry_delay_seconds=5, task_run_name="dvc repro {stage}")
def repro(repo: Path, stage: str) -> None:
    _run(["dvc", "repro", "--single-item", stage], repo)


@task
def gate(repo: Path) -> str:
    return _run(["w4rl", "gate"], repo)


@task
def promote(repo: Path) -> str:
    return _run(["w4rl", "promote"], repo)


@task
def report(repo: Path) -> str:
    return _run(["w4rl", "report"], repo)


@task(retries=2, retry_delay_seconds=10)
def push(repo: Path) -> None:
    if _has_remote(repo):
        _run(["dvc", "push"], repo)


@flow(name="retrain", log_prints=True)
def retrain(repo: str = ".", pull_data: bool = True, push_data: bool = True) -> dict[str, Any]:
    """Reproduce the pipeline, gate, promote, push. Refuses to share a workspace with another run."""
    from filelock import FileLock, Timeout

    root = Path(repo).resolve()
    (root / LOCK).parent.mkdir(parents=True, exist_ok=True)
    lock = FileLock(str(root / LOCK))
    try:
        lock.acquire(timeout=0)
    except Timeout as err:
        raise WorkspaceBusy(f"another retraining run holds {root / LOCK}") from err
    try:
        if pull_data:
            pull(root)
        stages = stage_order(root)
        for stage in stages:
            repro(root, stage)
        gate_output = gate(root)
        promoted = promote(root)
        report(root)
        if push_data:
            push(root)
    finally:
        lock.release()
    return {"stages": stages, "gate": gate_output, "promoted": promoted}


def deployment_spec(path: Path = PREFECT_YAML, name: str = "retrain-nightly") -> dict[str, Any]:
    """The deployment entry of prefect.yaml: one source of truth for `prefect deploy` and `serve`."""
    spec = yaml.safe_load(path.read_text())
    for d in spec.get("deployments", []):
        if d["name"] == name:
            return d
    raise KeyError(f"{path}: no deployment named {name!r}")


def to_deployment(name: str = "retrain-nightly"):
    """A RunnerDeployment of `retrain` with prefect.yaml's schedule and parameters."""
    from prefect.schedules import Cron

    spec = deployment_spec(name=name)
    schedules = [Cron(s["cron"], timezone=s.get("timezone", "UTC")) for s in spec.get("schedules", [])]
    return retrain.to_deployment(name=name, schedules=schedules, parameters=spec.get("parameters", {}),
                                 description=spec.get("description"))


def serve(name: str = "retrain-nightly") -> None:  # pragma: no cover - long-running
    from prefect import serve as prefect_serve

    os.environ.setdefault("PREFECT_SERVER_ANALYTICS_ENABLED", "false")
    prefect_serve(to_deployment(name))
