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

    import logging

    # werkzeug logs every request at INFO; in a test that runs a Prefect flow in this process (whose
    # logging setup forwards it) that was thousands of lines per DVC push or pull.
    logging.getLogger("werkzeug").setLevel(logging.WARNING)
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


@pytest.fixture(scope="session")
def prefect_api():
    """Prefect's test harness (a real API server on 127.0.0.1 and its database), started once per
    process for every Prefect test: they are grouped on one xdist worker (`xdist_group("prefect")`),
    so the ~20 s start-up is paid once, not once per module or worker."""
    os.environ.setdefault("PREFECT_SERVER_ANALYTICS_ENABLED", "false")
    os.environ.setdefault("PREFECT_SERVER_EPHEMERAL_STARTUP_TIMEOUT_SECONDS", "120")
    from prefect.settings import PREFECT_API_URL
    from prefect.testing.utilities import prefect_test_harness

    with prefect_test_harness(server_startup_timeout=120):
        yield PREFECT_API_URL.value()


class TinyRun:
    """One uninterrupted `dvc repro` of the tiny profile, committed: what the pipeline test and the
    kill harness start from (each on its own copy, never in place) and compare against."""

    def __init__(self, repo: Path, stdout: str, stage_seconds: dict[str, float]) -> None:
        self.repo, self.stdout, self.stage_seconds = repo, stdout, stage_seconds

    def copy(self, dest: Path) -> Path:
        import shutil

        shutil.copytree(self.repo, dest, symlinks=True)
        return dest


# The directory every process of the session shares (the xdist controller makes it; its workers
# inherit the variable): the tiny run is built there once, by tests/tiny_run_build.py.
SHARED_ENV = "W4RL_TEST_SHARED"
_builders: list = []  # the background build this process started (kept so it is not reaped early)
_OWNER = pytest.StashKey[bool]()  # set in the process that made the shared directory


def pytest_configure(config):
    if SHARED_ENV not in os.environ:
        import tempfile

        os.environ[SHARED_ENV] = tempfile.mkdtemp(prefix="w4rl-tests-")
        config.stash[_OWNER] = True


def pytest_unconfigure(config):
    if config.stash.get(_OWNER, False):
        import shutil
        import signal

        shared = Path(os.environ.pop(SHARED_ENV))
        started = shared / "tiny-run.started"
        if started.exists() and not (shared / "tiny-run" / "result.json").exists():
            pid = started.read_text().strip()
            if pid.isdigit() and int(pid) > 0:  # never killpg(0): that is this process's own group
                try:  # a run stopped early (a failure with -x, Ctrl-C): stop the build with it
                    os.killpg(int(pid), signal.SIGKILL)
                except (ProcessLookupError, PermissionError):
                    pass
        shutil.rmtree(shared, ignore_errors=True)


def _start_tiny_run(shared: Path) -> None:
    """Start the background build unless a process of this session already did (O_EXCL decides)."""
    import subprocess
    import sys

    try:
        fd = os.open(shared / "tiny-run.started", os.O_CREAT | os.O_EXCL | os.O_WRONLY)
    except FileExistsError:
        return
    proc = subprocess.Popen([sys.executable, str(Path(__file__).with_name("tiny_run_build.py")), str(shared / "tiny-run")],
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, start_new_session=True)
    _builders.append(proc)
    os.write(fd, str(proc.pid).encode())
    os.close(fd)


def pytest_collection_finish(session):
    # As soon as a worker knows a selected test needs the tiny run, the build starts beside the tests.
    if any("tiny_run" in getattr(item, "fixturenames", ()) for item in session.items):
        _start_tiny_run(Path(os.environ[SHARED_ENV]))


@pytest.fixture(scope="session")
def tiny_run() -> TinyRun:
    import json
    import time

    shared = Path(os.environ[SHARED_ENV])
    _start_tiny_run(shared)
    result = shared / "tiny-run" / "result.json"
    deadline = time.monotonic() + 900
    while not result.exists():
        assert time.monotonic() < deadline, "the shared tiny run (tests/tiny_run_build.py) did not finish in 15 min"
        time.sleep(0.5)
    built = json.loads(result.read_text())
    assert built["code"] == 0, built["output"]
    return TinyRun(Path(built["repo"]), built["output"], built["stage_seconds"])
