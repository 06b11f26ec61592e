"""Lineage from dvc.lock: which dataset versions and models a pipeline run's outputs came from."""

from __future__ import annotations

import subprocess
from pathlib import Path
from typing import Any

import yaml


def read_lock(path: str | Path = "dvc.lock") -> dict[str, Any]:
    path = Path(path)
    if not path.exists():
        raise FileNotFoundError(f"{path}: no dvc.lock; run `dvc repro` first")
    return yaml.safe_load(path.read_text()) or {}


def stage_outputs(lock: dict[str, Any]) -> dict[str, dict[str, str]]:
    """{stage: {out path: md5}} for every stage of the lock file."""
    result = {}
    for stage, body in (lock.get("stages") or {}).items():
        result[stage] = {o["path"]: o.get("md5", "") for o in body.get("outs", []) if "path" in o}
    return result


def task_lineage(lock: dict[str, Any], task: str) -> dict[str, Any]:
    """Dataset and model versions behind the refined policy of one task."""
    outs = stage_outputs(lock)

    def pick(prefix: str) -> dict[str, str]:
        return {p: h for s, o in outs.items() if s.startswith(prefix) for p, h in o.items()}

    # collect@*, import@* and collect_policy@*
    datasets = {p: h for p, h in (pick("collect") | pick("import@")).items() if "/episodes/" in p}
    # The recorded datasets the import stages read (their directory deps; the code deps are not data).
    recorded = {d["path"]: d.get("md5", "") for s, body in (lock.get("stages") or {}).items() if s.startswith("import@")
                for d in body.get("deps", []) if not d["path"].startswith(("w4rl_core/", "pipelines/"))}
    return {
        "datasets": datasets,
        "recorded": recorded,
        "world_model": pick("train_world_model"),
        "classifier": pick(f"train_reward@{task}"),
        "bc_policy": pick(f"train_bc@{task}"),
        "refined_policy": pick(f"refine@{task}"),
    }


def git_commit(cwd: str | Path = ".") -> dict[str, Any]:
    def git(*args: str) -> str:
        return subprocess.run(["git", *args], cwd=cwd, capture_output=True, text=True, check=True).stdout.strip()

    try:
        return {"commit": git("rev-parse", "HEAD"), "dirty": bool(git("status", "--porcelain", "--untracked-files=no"))}
    except (subprocess.CalledProcessError, FileNotFoundError):
        return {"commit": None, "dirty": None}


def flywheel_chain(task: str, commit: str | None, cwd: str | Path = ".") -> list[dict[str, Any]]:
    """The data flywheel's rounds behind a policy trained at `commit` (None: the working tree),
    newest first: for each earlier round, the evaluation episodes it fed back into the training data
    (how many, of which policies, the policy promoted then and the run commit they came from). Read
    from the params and manifests as committed then, so later rounds do not change the answer."""
    import json

    import yaml

    def show(path: str) -> str | None:
        if commit is None:
            p = Path(cwd) / path
            return p.read_text() if p.exists() else None
        out = subprocess.run(["git", "show", f"{commit}:{path}"], cwd=cwd, capture_output=True, text=True)
        return out.stdout if out.returncode == 0 else None

    params = yaml.safe_load(show("params.yaml") or "") or {}
    rounds = int((params.get("flywheel") or {}).get("round", 0))
    chain = []
    for k in reversed(range(rounds)):
        text = show(f"data/flywheel/manifests/round-{k}.json")
        entry = (json.loads(text).get("tasks", {}).get(task) if text else None) or {}
        chain.append({"round": k, "data_version": k + 1, "manifest_found": text is not None,
                      "episodes": sum(s.get("episodes", 0) for s in entry.get("stores", {}).values()),
                      "policies": entry.get("policies", {}), "promoted": entry.get("promoted"),
                      "run_commit": json.loads(text).get("run_commit") if text else None})
    return chain
