"""Gate and promotion: decide from the metric files, then write immutable registry records."""

from __future__ import annotations

import json
import logging
from pathlib import Path
from typing import Any

import yaml

from pipelines.params import DEFAULT_PARAMS, Params
from pipelines.paths import (EPISODES_DIR, EVAL_DIR, FIDELITY_METRICS, FIDELITY_REPORT, GATE_RECORD, POLICY_METRICS,
                             RUN_DRIFT_REPORT, RUN_REPORT, expected_stores, flywheel_manifest, refined_dir)
from w4rl_core.atomic import write_json_atomic
from w4rl_core.registry.gate import GateRules, decide, regression_rule
from w4rl_core.registry.lineage import git_commit, read_lock, task_lineage
from w4rl_core.registry.registry import Registry, RegistryConflict

logger = logging.getLogger(__name__)

INPUTS = {"fidelity": FIDELITY_METRICS, "policy": POLICY_METRICS}


def _read_json(path: str) -> dict[str, Any] | None:
    """A metrics file, or None if it is missing or not a JSON object (the gate then refuses)."""
    try:
        data = json.loads(Path(path).read_text())
    except (FileNotFoundError, json.JSONDecodeError):
        return None
    return data if isinstance(data, dict) else None


def promoted_success(record: dict[str, Any]) -> float | None:
    """The promoted policy's own real success rate, as its record holds it."""
    metrics = record.get("metrics", {})
    entry = metrics.get("candidate") or metrics.get("refined") or {}
    return entry.get("success_rate")


def candidate_store(task: str, seed: int) -> Path:
    """The evaluation episodes of the task's candidate (written by evaluate)."""
    return Path(EVAL_DIR) / task / f"refined_seed{seed}.zarr"


def compare_with_promoted(params: Params, task: str, entry: dict[str, Any], record: dict[str, Any],
                          registry: Registry) -> dict[str, Any]:
    """The promoted policy run on the candidate's own evaluation scenes (same episode seeds), paired
    with the candidate's outcomes there: candidate - promoted, with its scene-bootstrap interval."""
    import tempfile

    from pipelines.stages.policy import eval_config
    from w4rl_core.data.store import EpisodeStore
    from w4rl_core.eval.intervals import paired_interval
    from w4rl_core.eval.policy_eval import evaluate_policy

    store = EpisodeStore.open(candidate_store(task, entry["candidate"]["seed"]))
    success = store.array("data/success")[:]
    candidate = [bool(success[s:e].any()) for s, e in zip(store.episode_starts, store.episode_ends)]
    e = params.evaluate
    with tempfile.TemporaryDirectory() as tmp:
        path = registry.fetch_policy(record["policy_id"], Path(tmp) / "promoted")
        config = eval_config(params, task, "evaluation", store.n_episodes, e.seed, e.workers)
        promoted = evaluate_policy(path, config, Path(tmp) / "eval.zarr", deterministic=e.deterministic)
    if promoted["scenes"] != store.episode_scene:
        raise PromotionRefused(f"{task}: the promoted policy's episodes ran other scenes than the candidate's "
                               f"({candidate_store(task, entry['candidate']['seed'])}); re-run evaluate")
    return paired_interval(promoted["per_episode"], candidate, store.episode_scene) | {
        "promoted_policy": record["policy_id"], "promoted_success": promoted["success_rate"]}


GATE_STAGE = "gate"


class PromotionRefused(RuntimeError):
    """Promotion needs a passing gate decision that belongs to the current workspace and dvc.lock."""


def fed_back_drift(params: Params) -> dict[str, Any] | None:
    """Per task, the drift summary of the episodes the previous flywheel round fed back (None in
    round 0; a task without one gets a failing rule: its summary is missing)."""
    if params.flywheel.round == 0:
        return None
    manifest = _read_json(flywheel_manifest(params.flywheel.round - 1)) or {}
    return {task: entry.get("drift") for task, entry in (manifest.get("tasks") or {}).items()}


def gate(params: Params) -> dict[str, Any]:
    """The gate stage: every rule's value, threshold and verdict per task, from the metric files and
    params alone (what the stage declares in dvc.yaml)."""
    inputs = {name: _read_json(path) for name, path in INPUTS.items()}
    drift = fed_back_drift(params)
    decision = decide(GateRules(**params.gate), inputs["fidelity"], inputs["policy"], list(params.collect.tasks),
                      drift=drift)
    decision["input_files"] = INPUTS | ({"drift": flywheel_manifest(params.flywheel.round - 1)} if drift else {})
    write_json_atomic(GATE_RECORD, decision)
    return decision


def stale_stages(repo: str | Path = ".") -> dict[str, Any]:
    """What `dvc status gate` reports for the gate stage and everything upstream of it: empty when
    metrics/gate.json is the decision for exactly these data, models, params and code."""
    from dvc.repo import Repo

    with Repo(str(repo)) as dvc_repo:
        return dvc_repo.status(targets=[GATE_STAGE], with_deps=True)


def promote(params: Params, params_path: str | Path = DEFAULT_PARAMS) -> list[dict[str, Any]]:
    """Register every task the gate passed that does not regress against the task's promoted policy.

    Refuses (PromotionRefused) when metrics/gate.json is missing, stale (the workspace differs from
    what dvc.lock records for the gate stage or anything upstream), or passes no task."""
    decision = _read_json(GATE_RECORD)
    if decision is None or not isinstance(decision.get("tasks"), dict):
        raise PromotionRefused(f"{GATE_RECORD} is missing or malformed: run `dvc repro` (its gate stage) first")
    stale = stale_stages()
    if stale:
        raise PromotionRefused(f"{GATE_RECORD} is stale: `dvc status {GATE_STAGE}` reports changes in "
                               f"{', '.join(sorted(stale))}; run `dvc repro` first")
    lock = read_lock()
    policy_metrics = _read_json(INPUTS["policy"]) or {}
    fidelity = _read_json(INPUTS["fidelity"]) or {}
    registry = params.registry.open()
    # What each candidate is checked against, and the promotion version it will replace: a
    # promotion that lands in between makes this one's conditional write fail (Registry.promote).
    current = registry.promoted()
    rules = GateRules(**params.gate)
    records, refused = [], {}
    for task, verdict in decision["tasks"].items():
        if not verdict["promote"]:
            refused[task] = verdict["failed_rules"]
            continue
        entry = policy_metrics["per_task"][task]
        policy_id = Registry.policy_id(task, refined_dir(task))
        if current.get(task, {}).get("policy_id") == policy_id:
            # These very weights are the promoted ones (a re-run that changed nothing, e.g. a
            # nightly retrain with no new data): promotion is idempotent, the record stays as it was.
            records.append({**current[task], "already_registered": True})
            continue
        try:
            comparison = compare_with_promoted(params, task, entry, current[task], registry) if task in current else None
        except (PromotionRefused, OSError, ValueError, RuntimeError) as err:  # this task only: others go on
            refused[task] = [f"could not compare with the promoted policy: {err}"]
            continue
        regression = regression_rule(rules, comparison)
        if not regression["passed"]:
            refused[task] = [regression["reason"]]
            continue
        record = {
            "task": task,
            "lineage": task_lineage(lock, task),
            "git": git_commit(),
            "params": yaml.safe_load(Path(params_path).read_text()),
            "metrics": entry,
            "fidelity": {k: fidelity.get(k) for k in ("model", "copy_last_frame", "horizon")},
            "gate": {**verdict, "rules": verdict["rules"] + [regression], "compared_with_promoted": comparison},
            "smoke_scale": params.profile.smoke_scale,
        }
        try:
            registered = registry.register(refined_dir(task), record)
        except RegistryConflict:  # registered before (ids are content hashes) but not promoted now
            registered = registry.get(policy_id)
        try:
            version = registry.promote(task, policy_id, after=current.get(task, {}).get("promotion_version", 0))
        except RegistryConflict as err:  # another promotion of this task won the race
            refused[task] = [str(err)]
            continue
        records.append(registered | {"promotion_version": version, "gto": gto_assign(task, policy_id)})
    reasons = "; ".join(f"{t}: {', '.join(r)}" for t, r in refused.items())
    if not records:
        raise PromotionRefused(f"nothing to promote: {reasons}")
    if refused:
        logger.warning("not promoted: %s", reasons)
    return records


def gto_assign(task: str, policy_id: str, repo: str | Path = ".") -> str | None:
    """The promotion as Git-tag registries see it (GTO, DVC Studio's model registry): a version of
    `policy-<task>` on the run's commit with stage `prod` assigned, as annotated git tags whose
    message names the registry id. The registry record stays the immutable source of truth; the
    tags are only made for a clean, committed tree (the retrain flow's case), since a tag on a
    commit that does not hold the run's dvc.lock would point at the wrong data. Returns the stage
    tag's name, or None when no tag was made."""
    from gto import api
    from gto.exceptions import GTOException

    commit = git_commit(repo)
    if commit["commit"] is None or commit["dirty"]:
        return None
    name = f"policy-{task}"
    try:
        api.assign(repo, name, "prod", ref="HEAD", message=f"w4rl promote {policy_id}",
                   author="w4rl", author_email="w4rl@localhost")
    except GTOException as err:  # e.g. this commit's version is already in prod: nothing new to say
        logger.warning("GTO: %s not assigned to prod: %s", name, err)
        return None
    return f"{name}#prod"


def report(params: Params, reference: list[str] | None = None, current: list[str] | None = None) -> str:
    """The run's HTML report. Drift compares `reference` (default: the expert demonstrations) with
    `current` (default: the refined policies' evaluation episodes): how far the refined behaviour
    moved from the demonstrations. Pass a previous dataset version as reference to compare versions."""
    from w4rl_core.data.drift import drift_report
    from w4rl_core.eval.run_report import build_run_report

    reference = reference or expected_stores(params, EPISODES_DIR, ("expert",))
    if current is None:  # each task's candidate's evaluation episodes (a path that had gone stale before)
        per_task = (_read_json(INPUTS["policy"]) or {}).get("per_task", {})
        stores = [candidate_store(t, per_task[t]["candidate"]["seed"]) for t in params.collect.tasks
                  if isinstance(per_task.get(t, {}).get("candidate", {}).get("seed"), int)]
        current = [str(p) for p in stores if p.exists()]
    drift = drift_report(reference, current, RUN_DRIFT_REPORT) if current else None
    build_run_report(
        RUN_REPORT,
        title=f"w4rl retraining run ({params.profile.name})",
        smoke_scale=params.profile.smoke_scale,
        drift=drift,
        fidelity=_read_json(INPUTS["fidelity"]),
        fidelity_dir=Path(FIDELITY_REPORT),
        policy=_read_json(INPUTS["policy"]),
        gate=_read_json(GATE_RECORD),
        fed_back=_read_json(flywheel_manifest(params.flywheel.round - 1)) if params.flywheel.round else None,
    )
    return RUN_REPORT
