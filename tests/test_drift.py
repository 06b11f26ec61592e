"""Evidently drift report between dataset versions, on per-episode features."""

import json

from typer.testing import CliRunner

from conftest import make_episode, tiny_layout
from pipelines.cli import app
from w4rl_core.data.drift import drift_report, episode_features
from w4rl_core.data.store import EpisodeStore


def _store(path, kind, n=12, scale=1.0):
    store = EpisodeStore.create(path, tiny_layout())
    eps = []
    for i in range(n):
        ep = make_episode(10, kind=kind, seed=i + (100 if kind == "random" else 0))
        ep.action = ep.action * scale
        eps.append(ep)
    store.append(eps)
    return store


def test_features_one_row_per_episode(tiny_store):
    df = episode_features(tiny_store)
    assert len(df) == 6
    assert {"length", "return", "success", "action_mean[0]", "image_mean_r", "frame_motion"} <= set(df.columns)


def test_drift_detected_between_different_versions_and_not_within_one(tmp_path):
    ref = _store(tmp_path / "ref.zarr", "expert")
    same = _store(tmp_path / "same.zarr", "expert")
    shifted = _store(tmp_path / "cur.zarr", "random", scale=0.2)

    summary = drift_report([ref.url], [shifted.url], tmp_path / "out")
    assert summary["columns"]["action_abs_mean"]["drift"] is True
    assert summary["columns"]["kind"]["drift"] is True
    # Verdicts are Evidently's test results, named in the summary.
    assert summary["columns"]["kind"]["test"].startswith("FAIL")
    assert summary["dataset_drift"] is (summary["drifted_share"] >= 0.5) and summary["dataset_test"]
    assert (tmp_path / "out/drift.html").stat().st_size > 10_000
    assert json.loads((tmp_path / "out/summary.json").read_text())["current_episodes"] == 12

    # The flywheel compares evaluation episodes with BC's rollouts: kinds that differ by design are left out.
    without_kind = drift_report([ref.url], [shifted.url], tmp_path / "out3", exclude=("kind",))
    assert "kind" not in without_kind["columns"] and without_kind["columns"]["action_abs_mean"]["drift"] is True

    no_drift = drift_report([ref.url], [same.url], tmp_path / "out2")
    assert no_drift["drifted_columns"] == 0 and no_drift["dataset_drift"] is False
    assert all(v["test"].startswith("SUCCESS") for v in no_drift["columns"].values())


def test_cli_drift(tmp_path):
    ref = _store(tmp_path / "ref.zarr", "expert", n=6)
    cur = _store(tmp_path / "cur.zarr", "random", n=6, scale=0.2)
    result = CliRunner().invoke(app, ["data", "drift", ref.url, cur.url, "--out", str(tmp_path / "d")])
    assert result.exit_code == 0, result.output
    assert "features drifted" in result.output and (tmp_path / "d/drift.json").exists()
