"""Drift between two dataset versions, on per-episode features, reported with Evidently.

Per-episode rather than per-step features: steps within an episode are strongly correlated, so a
per-step test would call every small change significant. An episode is the unit that is sampled.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from w4rl_core.atomic import atomic_path, write_json_atomic
from w4rl_core.data.store import EpisodeStore
from w4rl_core.data.validate import find_stores

CATEGORICAL = ("task", "kind")


def episode_features(store: EpisodeStore) -> pd.DataFrame:
    """One row per episode: length, return, success, action and image statistics."""
    rows = []
    for i in range(store.n_episodes):
        ep = store.episode(i)
        rgb = ep.rgb.astype(np.float32)
        row: dict[str, Any] = {
            "task": ep.task,
            "kind": ep.kind,
            "length": len(ep),
            "return": float(ep.reward.sum()),
            "success": float(ep.succeeded),
            "success_step_fraction": float(ep.success.mean()),
            "action_abs_mean": float(np.abs(ep.action).mean()),
            # Mean absolute change between consecutive frames: how much the scene moves.
            "frame_motion": float(np.abs(np.diff(rgb, axis=0)).mean()) if len(ep) > 1 else 0.0,
            "image_std": float(rgb.std()),
        }
        for d in range(ep.action.shape[1]):
            row[f"action_mean[{d}]"] = float(ep.action[:, d].mean())
            row[f"action_std[{d}]"] = float(ep.action[:, d].std())
        for c, name in enumerate("rgb"):
            row[f"image_mean_{name}"] = float(rgb[..., c].mean())
        rows.append(row)
    return pd.DataFrame(rows)


def features_of(paths: list[str], endpoint_url: str | None = None) -> pd.DataFrame:
    urls = find_stores(paths)
    if not urls:
        raise FileNotFoundError(f"no episode store (*.zarr) under {paths}")
    return pd.concat([episode_features(EpisodeStore.open(u, endpoint_url=endpoint_url)) for u in urls], ignore_index=True)


def _summarize(snapshot_dict: dict[str, Any]) -> dict[str, Any]:
    """Scores from Evidently's metrics, verdicts from its own tests (`include_tests=True`): a
    column drifted when its ValueDrift test did not pass, the dataset when its drifted-share test
    did not; nothing is re-derived from thresholds here."""
    per_column: dict[str, Any] = {}
    count = share = None
    for metric in snapshot_dict["metrics"]:
        cfg, value = metric["config"], metric["value"]
        if cfg["type"].endswith("DriftedColumnsCount"):
            count, share = float(value["count"]), float(value["share"])
        elif cfg["type"].endswith("ValueDrift"):
            per_column[cfg["column"]] = {"method": str(cfg["method"]), "value": float(value),
                                         "threshold": float(cfg["threshold"]), "drift": None, "test": None}
    dataset: dict[str, Any] = {"drift": None, "test": None}
    for test in snapshot_dict.get("tests", []):
        params = test["metric_config"]["params"]
        status = str(getattr(test["status"], "value", test["status"]))  # an enum in memory, a string in JSON
        verdict = {"drift": status != "SUCCESS", "test": f"{status}: {test['description']}"}
        if params["type"].endswith("ValueDrift") and params["column"] in per_column:
            per_column[params["column"]].update(verdict)
        elif params["type"].endswith("DriftedColumnsCount"):
            dataset = verdict
    missing = sorted(c for c, v in per_column.items() if v["drift"] is None)
    if missing or dataset["drift"] is None:
        raise RuntimeError(f"Evidently returned no drift test for {missing or 'the dataset'}")
    return {"dataset_drift": dataset["drift"], "dataset_test": dataset["test"], "drifted_columns": count,
            "drifted_share": share, "columns": per_column}


def drift_report(
    reference: list[str], current: list[str], out_dir: str | os.PathLike[str], endpoint_url: str | None = None,
    exclude: tuple[str, ...] = (),
) -> dict[str, Any]:
    """Write ``drift.html`` (for people), ``drift.json`` (Evidently snapshot) and ``summary.json``.
    `exclude`: feature columns left out, e.g. `kind` when the two sides differ in kind by design."""
    from evidently import DataDefinition, Dataset, Report
    from evidently.presets import DataDriftPreset

    ref, cur = features_of(reference, endpoint_url), features_of(current, endpoint_url)
    ref, cur = ref.drop(columns=list(exclude)), cur.drop(columns=list(exclude))
    categorical = [c for c in CATEGORICAL if c not in exclude]
    numerical = [c for c in ref.columns if c not in CATEGORICAL]
    definition = DataDefinition(numerical_columns=numerical, categorical_columns=categorical)
    snapshot = Report([DataDriftPreset()], include_tests=True).run(
        Dataset.from_pandas(cur, data_definition=definition), Dataset.from_pandas(ref, data_definition=definition)
    )
    summary = {
        "reference": reference,
        "current": current,
        "reference_episodes": len(ref),
        "current_episodes": len(cur),
        **_summarize(snapshot.dict()),
    }
    out = Path(out_dir)
    with atomic_path(out) as tmp:
        tmp.mkdir(parents=True)
        snapshot.save_html(str(tmp / "drift.html"))
        snapshot.save_json(str(tmp / "drift.json"))
        write_json_atomic(tmp / "summary.json", summary)
    return summary
