"""Gate and promotion: decide from the metric files, then write immutable registry records."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import yaml

from pipelines.params import DEFAULT_PARAMS, Params
from pipelines.stages.policy import refined_dir
from w4rl_core.atomic import write_json_atomic
from w4rl_core.registry.gate import GateRules, decide
from w4rl_core.registry.lineage import git_commit, read_lock, task_lineage
from w4rl_core.registry.registry import Registry, RegistryConflict

GATE_RECORD = "metrics/gate.json"
INPUTS = {"fidelity": "metrics/fidelity.json", "policy": "metrics/policy.json"}


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


def gate(params: Params) -> dict[str, Any]:
    registry = Registry(params.registry.root)
    promoted = {t: promoted_success(r) for t, r in registry.promoted().items()}
    inputs = {name: _read_json(path) for name, path in INPUTS.items()}
    decision = decide(GateRules(**params.gate), inputs["fidelity"], inputs["policy"], list(params.collect.tasks),
                      promoted)
    decision["input_files"] = INPUTS
    write_json_atomic(GATE_RECORD, decision)
    return decision


def promote(params: Params, params_path: str | Path = DEFAULT_PARAMS) -> list[dict[str, Any]]:
    """Register every task the gate passed. Never promotes without a passing gate record."""
    decision = _read_json(GATE_RECORD)
    if decision is None:
        raise FileNotFoundError(f"{GATE_RECORD} is missing or malformed: run `w4rl gate` first")
    lock = read_lock()
    policy_metrics = _read_json(INPUTS["policy"]) or {}
    fidelity = _read_json(INPUTS["fidelity"]) or {}
    registry = Registry(params.registry.root)
    records = []
    for task, verdict in decision["tasks"].items():
        if not verdict["promote"]:
            continue
        record = {
            "task": task,
            "lineage": task_lineage(lock, task),
            "git": git_commit(),
            "params": yaml.safe_load(Path(params_path).read_text()),
            "metrics": policy_metrics["per_task"][task],
            "fidelity": {k: fidelity.get(k) for k in ("model", "copy_last_frame", "horizon")},
            "gate": verdict,
            "smoke_scale": params.profile.smoke_scale,
        }
        try:
            records.append(registry.register(refined_dir(task), record))
        except RegistryConflict:
            # Ids are content hashes: these very weights are registered already (a re-run that
            # changed nothing, e.g. a nightly retrain with no new data). Promotion is idempotent;
            # the existing record stays as it was.
            existing = registry.get(Registry.policy_id(task, refined_dir(task)))
            records.append({**existing, "already_registered": True})
    return records


RUN_REPORT = "reports/run/index.html"


def report(params: Params, reference: list[str] | None = None, current: list[str] | None = None) -> str:
    """The run's HTML report. Drift compares `reference` (default: the expert demonstrations) with
    `current` (default: the refined policies' evaluation episodes): how far the refined behaviour
    moved from the demonstrations. Pass a previous dataset version as reference to compare versions."""
    from w4rl_core.data.drift import drift_report
    from w4rl_core.eval.run_report import build_run_report
    from pipelines.stages.collect import expected_stores
    from pipelines.stages.world_model import EPISODES_DIR, FIDELITY_REPORT

    reference = reference or expected_stores(params, EPISODES_DIR, ("expert",))
    current = current or [f"data/eval/{t}/refined.zarr" for t in params.collect.tasks
                          if Path(f"data/eval/{t}/refined.zarr").exists()]
    drift = drift_report(reference, current, "reports/run/drift") if current else None
    build_run_report(
        RUN_REPORT,
        title=f"w4rl retraining run ({params.profile.name})",
        smoke_scale=params.profile.smoke_scale,
        drift=drift,
        fidelity=_read_json(INPUTS["fidelity"]),
        fidelity_dir=Path(FIDELITY_REPORT),
        policy=_read_json(INPUTS["policy"]),
        gate=_read_json(GATE_RECORD),
    )
    return RUN_REPORT
