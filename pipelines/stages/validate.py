"""DVC stage `validate`: check every collected store; downstream stages run only if all pass."""

from __future__ import annotations

from typing import Any

from pipelines.params import Params
from w4rl_core.atomic import write_json_atomic
from w4rl_core.data.validate import ValidationConfig, validate_stores


def run(params: Params, paths: list[str], report_path: str | None, metrics_path: str | None) -> dict[str, Any]:
    config = ValidationConfig(
        context_frames=params.validate.context_frames,
        known_tasks=params.collect.tasks,
        action_tolerance=params.validate.action_tolerance,
        distinct_scenes=params.validate.distinct_scenes,
    )
    report = validate_stores(paths, config)
    report["profile"] = {"name": params.profile.name, "smoke_scale": params.profile.smoke_scale}
    if report_path:
        write_json_atomic(report_path, report)
    if metrics_path:
        write_json_atomic(metrics_path, data_metrics(report))
    return report


def data_metrics(report: dict[str, Any]) -> dict[str, Any]:
    """Small numbers worth tracking across dataset versions (`dvc metrics diff`)."""
    per_store = {}
    for s in report["stores"]:
        info = s.get("info") or {}
        for key, entry in (info.get("by_task_kind") or {}).items():
            per_store[key] = {k: entry[k] for k in ("episodes", "frames", "success_rate")}
            per_store[key]["distinct_scenes"] = (info.get("scenes") or {}).get("distinct")
    return {
        "valid": report["ok"],
        "issues": report["n_issues"],
        "stores": len(report["stores"]),
        "episodes": sum(v["episodes"] for v in per_store.values()),
        "frames": sum(v["frames"] for v in per_store.values()),
        "by_task_kind": per_store,
        "smoke_scale": report["profile"]["smoke_scale"],
    }
