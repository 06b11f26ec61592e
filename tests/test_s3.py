"""Real S3 round trips against moto's standalone HTTP server on 127.0.0.1.

The code under test is the code users run: zarr/fsspec/s3fs for direct store access, dvc-s3 for
`dvc push` / `dvc pull`. Credentials come from the standard AWS environment variables only.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from conftest import make_episode, tiny_layout
from w4rl_core.data.store import EpisodeStore
from w4rl_core.data.validate import ValidationConfig, validate_store

pytestmark = pytest.mark.s3
BIN = Path(sys.executable).parent


def test_store_written_and_read_directly_on_s3(s3_env):
    url = f"s3://{s3_env['bucket']}/datasets/tiny.zarr"
    store = EpisodeStore.create(url, tiny_layout())
    episodes = [make_episode(9, seed=1), make_episode(11, task="door-lock-v3", seed=2)]
    store.append(episodes)
    reopened = EpisodeStore.open(url)
    assert reopened.n_episodes == 2 and reopened.tasks == ["coffee-pull-v3", "door-lock-v3"]
    np.testing.assert_array_equal(reopened.episode(1).rgb, episodes[1].rgb)
    window = reopened.read_window(int(reopened.window_starts(5)[-1]), 5)
    assert window["rgb"].shape == (5, 16, 16, 3)
    assert validate_store(url, ValidationConfig()).ok


def test_store_on_s3_with_explicit_endpoint(s3_env, monkeypatch):
    monkeypatch.delenv("W4RL_S3_ENDPOINT_URL")
    url = f"s3://{s3_env['bucket']}/explicit.zarr"
    EpisodeStore.create(url, tiny_layout(), endpoint_url=s3_env["endpoint"]).append([make_episode(6)])
    assert EpisodeStore.open(url, endpoint_url=s3_env["endpoint"]).n_frames == 6


def _run(cmd: list[str], cwd: Path) -> subprocess.CompletedProcess:
    env = os.environ | {"PATH": f"{BIN}:{os.environ['PATH']}", "DVC_NO_ANALYTICS": "1"}
    result = subprocess.run(cmd, cwd=cwd, env=env, capture_output=True, text=True, timeout=300)
    assert result.returncode == 0, f"{cmd}: {result.stdout}\n{result.stderr}"
    return result


def test_dvc_push_pull_of_a_sharded_store_through_s3_remote(s3_env, tmp_path):
    repo = tmp_path / "repo"
    repo.mkdir()
    _run(["git", "init", "-q"], repo)
    _run(["dvc", "init", "-q"], repo)
    store = EpisodeStore.create(repo / "data" / "episodes.zarr", tiny_layout(frames_per_shard=64))
    store.append([make_episode(40, seed=i) for i in range(5)])  # 200 frames -> 4 rgb shards
    _run(["dvc", "add", "data/episodes.zarr"], repo)
    remote = f"s3://{s3_env['bucket']}/dvc-store"
    _run(["dvc", "remote", "add", "-d", "s3", remote], repo)
    _run(["dvc", "remote", "modify", "s3", "endpointurl", s3_env["endpoint"]], repo)
    config = (repo / ".dvc" / "config").read_text()
    assert "testing" not in config  # credentials never land in files under git
    _run(["dvc", "push"], repo)

    import boto3

    objects = boto3.client("s3", endpoint_url=s3_env["endpoint"]).list_objects_v2(Bucket=s3_env["bucket"])
    n_files = sum(1 for p in (repo / "data" / "episodes.zarr").rglob("*") if p.is_file())
    # Content-addressed: at most one object per file of the store plus the directory manifest
    # (identical files are stored once), and few files thanks to sharding.
    assert 4 <= objects["KeyCount"] <= n_files + 1
    assert n_files <= 24

    before = EpisodeStore.open(repo / "data" / "episodes.zarr").array("data/rgb")[:]
    shutil.rmtree(repo / "data" / "episodes.zarr")
    shutil.rmtree(repo / ".dvc" / "cache")
    _run(["dvc", "pull"], repo)
    after = EpisodeStore.open(repo / "data" / "episodes.zarr")
    np.testing.assert_array_equal(after.array("data/rgb")[:], before)
    assert after.n_episodes == 5
