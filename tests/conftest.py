"""Shared fixtures: synthetic episodes (no simulator), a real collected store, a loopback S3 server."""

from __future__ import annotations

import os
import socket
from pathlib import Path

import numpy as np
import pytest

os.environ.setdefault("MUJOCO_GL", "egl")
os.environ.setdefault("DVC_NO_ANALYTICS", "1")
if os.environ.get("PYTEST_XDIST_WORKER"):
    # `make test` runs the suite in pytest-xdist workers, one per core: each test (and every stage
    # subprocess it starts, which inherits this) computes on one thread, so two workers fill two
    # cores instead of four threads fighting over them. Set before torch is imported.
    for var in ("OMP_NUM_THREADS", "MKL_NUM_THREADS"):
        os.environ.setdefault(var, "1")

from w4rl_core.data.episode import Episode  # noqa: E402
from w4rl_core.data.store import EpisodeStore, StoreLayout  # noqa: E402

IMAGE = 16
ACTION_DIM = 4
STATE_DIM = 5


from w4rl_core.robots.scenes import scene_id  # noqa: E402


def make_episode(length: int = 12, task: str = "coffee-pull-v3", kind: str = "expert", seed: int = 0) -> Episode:
    rng = np.random.default_rng(seed)
    success = np.zeros(length, np.uint8)
    success[length // 2 :] = kind == "expert"
    return Episode(
        task=task,
        kind=kind,
        rgb=rng.integers(0, 256, size=(length, IMAGE, IMAGE, 3), dtype=np.uint8),
        action=rng.uniform(-1, 1, size=(length, ACTION_DIM)).astype(np.float32),
        reward=rng.normal(size=length).astype(np.float32),
        success=success,
        state=rng.normal(size=(length, STATE_DIM)).astype(np.float32),
        scene=scene_id(task, np.array([float(seed)])),  # one scene per seed, as collection records it
    )


def tiny_layout(**overrides) -> StoreLayout:
    kwargs = dict(
        image_size=(IMAGE, IMAGE),
        action_low=(-1.0,) * ACTION_DIM,
        action_high=(1.0,) * ACTION_DIM,
        state_dim=STATE_DIM,
        frames_per_shard=64,
        tasks=("coffee-pull-v3",),
    )
    return StoreLayout(**(kwargs | overrides))


@pytest.fixture
def tiny_store(tmp_path: Path) -> EpisodeStore:
    """Six synthetic episodes of two tasks and two kinds, lengths 8..13."""
    store = EpisodeStore.create(tmp_path / "tiny.zarr", tiny_layout())
    store.append(
        make_episode(8 + i, task=("coffee-pull-v3", "door-lock-v3")[i % 2], kind=("expert", "random")[i // 3], seed=i)
        for i in range(6)
    )
    return store


@pytest.fixture(scope="session")
def collected_store(tmp_path_factory) -> Path:
    """A real Meta-World store: 3 expert episodes of 12 steps at 32 px (in-process)."""
    from w4rl_core.data.collect import CollectConfig, collect

    out = tmp_path_factory.mktemp("collected") / "coffee-pull-v3" / "expert.zarr"
    collect(
        CollectConfig(task="coffee-pull-v3", kind="expert", episodes=3, episode_len=12, image_size=32, workers=1),
        out,
        progress=False,
    )
    return out


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.fixture(scope="session")
def s3_server():
    """moto's standalone S3 HTTP server on 127.0.0.1 (a real server, spoken to over HTTP)."""
    from moto.server import ThreadedMotoServer

    port = free_port()
    server = ThreadedMotoServer(ip_address="127.0.0.1", port=port, verbose=False)
    server.start()
    yield f"http://127.0.0.1:{port}"
    server.stop()


@pytest.fixture
def s3_env(s3_server, monkeypatch):
    """Credentials through the standard AWS environment variables (never in files), a fresh bucket."""
    import uuid

    import boto3

    monkeypatch.setenv("AWS_ACCESS_KEY_ID", "testing")
    monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", "testing")
    monkeypatch.setenv("AWS_DEFAULT_REGION", "us-east-1")
    monkeypatch.setenv("W4RL_S3_ENDPOINT_URL", s3_server)
    bucket = f"w4rl-{uuid.uuid4().hex[:8]}"
    boto3.client("s3", endpoint_url=s3_server).create_bucket(Bucket=bucket)
    return {"endpoint": s3_server, "bucket": bucket}


class TinyRun:
    """One uninterrupted `dvc repro` of the tiny profile, committed: what the pipeline test and the
    kill harness start from (each on its own copy) and compare against."""

    def __init__(self, repo: Path, stdout: str, stage_seconds: dict[str, float]) -> None:
        self.repo, self.stdout, self.stage_seconds = repo, stdout, stage_seconds

    def copy(self, dest: Path) -> Path:
        import shutil

        shutil.copytree(self.repo, dest, symlinks=True)
        return dest


def run_timed(cmd: list[str], cwd: Path, env: dict[str, str], timeout: float = 900) -> tuple[int, str, dict[str, float]]:
    """Run `dvc repro`-like `cmd`, returning (exit code, output, seconds per stage from its
    "Running stage '<name>'" lines)."""
    import re
    import subprocess
    import time

    proc = subprocess.Popen(cmd, cwd=cwd, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    lines, starts = [], []
    deadline = time.monotonic() + timeout
    for line in proc.stdout:
        lines.append(line)
        m = re.match(r"Running stage '([^']+)'", line)
        if m:
            starts.append((m[1], time.monotonic()))
        assert time.monotonic() < deadline, "".join(lines)
    proc.wait()
    ends = [t for _, t in starts[1:]] + [time.monotonic()]
    return proc.returncode, "".join(lines), {name: end - t for (name, t), end in zip(starts, ends)}


@pytest.fixture(scope="session")
def tiny_run(tmp_path_factory) -> TinyRun:
    import subprocess

    from pipelines.sandbox import make_sandbox, tool_env

    repo = make_sandbox(tmp_path_factory.mktemp("tiny-run"), "tiny")
    code, out, seconds = run_timed(["dvc", "repro"], repo, tool_env())
    assert code == 0, out
    subprocess.run(["git", "add", "-A"], cwd=repo, check=True)
    subprocess.run(["git", "-c", "user.name=t", "-c", "user.email=t@t", "commit", "-qm", "tiny run"], cwd=repo,
                   check=True)
    return TinyRun(repo, out, seconds)
