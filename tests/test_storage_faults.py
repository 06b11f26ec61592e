"""Storage faults against a real loopback S3 server that is stopped and restarted: a store write from
`w4rl collect --out s3://`, `dvc push` and `dvc pull` with the server gone halfway, a missing bucket
and missing credentials. Bounded retries, a clean failure naming operation and URL (never the
secret), nothing half-published, and a rerun that completes once the server is back.

(The registry's promotions under an outage: tests/test_gate_registry.py.)"""

from __future__ import annotations

import os
import random
import subprocess
import threading
import time
import uuid
from pathlib import Path

import numpy as np
import pytest

from conftest import free_port
from pipelines.sandbox import PROFILES, tool_env
from w4rl_core.data.store import EpisodeStore, IncompleteStoreError

pytestmark = pytest.mark.slow
SECRET = "s3cr3t-never-in-messages"
TASK = "door-lock-v3"


class Server:
    """moto's S3 server on a fixed port, stoppable and restartable with its data (moto keeps the
    buckets in this process)."""

    def __init__(self) -> None:
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self._server = None
        self.start()

    def start(self) -> None:
        from moto.server import ThreadedMotoServer

        self._server = ThreadedMotoServer(ip_address="127.0.0.1", port=self.port, verbose=False)
        self._server.start()

    def stop(self) -> None:
        if self._server is not None:
            self._server.stop()
            self._server = None

    def client(self):
        import boto3

        return boto3.client("s3", endpoint_url=self.url, aws_access_key_id="testing", aws_secret_access_key=SECRET,
                            region_name="us-east-1")


@pytest.fixture
def server():
    s = Server()
    yield s
    s.stop()


def s3_env(server: Server, **extra: str) -> dict[str, str]:
    """Credentials from the standard AWS environment variables; bounded retries for w4rl (its own
    settings) and for DVC (botocore's standard ones)."""
    return tool_env() | {"AWS_ACCESS_KEY_ID": "testing", "AWS_SECRET_ACCESS_KEY": SECRET,
                         "AWS_DEFAULT_REGION": "us-east-1", "W4RL_S3_ENDPOINT_URL": server.url,
                         "W4RL_S3_RETRIES": "2", "W4RL_S3_TIMEOUT_S": "2",
                         "AWS_MAX_ATTEMPTS": "2", "AWS_RETRY_MODE": "standard"} | extra


def collect_cmd(out: str) -> list[str]:
    return ["w4rl", "collect", "--task", TASK, "--kind", "expert", "--episodes", "3", "--out", out,
            "--params", str(PROFILES / "tiny.yaml")]


def test_collect_to_s3_with_the_server_stopped_mid_write_fails_cleanly_and_a_rerun_completes(server, tmp_path,
                                                                                           monkeypatch):
    for key in ("AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY", "AWS_DEFAULT_REGION"):  # for the reads here
        monkeypatch.setenv(key, s3_env(server)[key])
    server.client().create_bucket(Bucket="data")
    url = "s3://data/demos/expert.zarr"
    env = s3_env(server)
    proc = subprocess.Popen(collect_cmd(url), env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    deadline = time.monotonic() + 120
    s3 = server.client()
    while not s3.list_objects_v2(Bucket="data", Prefix="demos/expert.zarr/zarr.json").get("KeyCount"):
        assert proc.poll() is None and time.monotonic() < deadline, proc.communicate()
        time.sleep(0.05)
    server.stop()  # the store exists, the episodes are still being simulated
    started = time.monotonic()
    out, err = proc.communicate(timeout=300)
    assert proc.returncode == 1, (out, err)
    assert time.monotonic() - started < 120  # bounded: 2 attempts of 2 s per request
    assert f"collect: writing {url} failed (2 attempts per request" in err and SECRET not in out + err
    assert "Traceback" not in err, err

    server.start()
    storage = {"endpoint_url": server.url}
    with pytest.raises(IncompleteStoreError):  # nothing was published
        EpisodeStore.open(url, **storage)
    rerun = subprocess.run(collect_cmd(url), env=env, capture_output=True, text=True, timeout=300)
    assert rerun.returncode == 0, rerun.stderr
    assert "removing the unpublished store of a failed earlier write" in rerun.stderr
    remote = EpisodeStore.open(url, **storage)
    local = tmp_path / "expert.zarr"
    subprocess.run(collect_cmd(str(local)), env=env, check=True, capture_output=True, timeout=300)
    local_store = EpisodeStore.open(local)
    assert remote.n_episodes == local_store.n_episodes == 3
    for i in range(3):  # the rerun's store is the one an uninterrupted collection writes
        a, b = remote.episode(i), local_store.episode(i)
        assert np.array_equal(a.rgb, b.rgb) and np.array_equal(a.action, b.action)
    again = subprocess.run(collect_cmd(url), env=env, capture_output=True, text=True, timeout=300)
    assert again.returncode == 2 and "a complete episode store is already there" in again.stderr


def test_collect_to_a_missing_bucket_or_without_credentials_fails_naming_url_and_cause(server, tmp_path):
    missing = subprocess.run(collect_cmd("s3://no-such-bucket/x.zarr"), env=s3_env(server), capture_output=True,
                             text=True, timeout=300)
    assert missing.returncode == 1 and "collect: writing s3://no-such-bucket/x.zarr failed" in missing.stderr
    assert "bucket" in missing.stderr.lower() and "Traceback" not in missing.stderr
    server.client().create_bucket(Bucket="data")
    env = {k: v for k, v in s3_env(server).items() if not k.startswith("AWS_") or k == "AWS_DEFAULT_REGION"}
    env |= {"AWS_SHARED_CREDENTIALS_FILE": str(tmp_path / "none"), "AWS_CONFIG_FILE": str(tmp_path / "none"),
            "AWS_EC2_METADATA_DISABLED": "true"}  # no credentials anywhere in the chain
    nocreds = subprocess.run(collect_cmd("s3://data/x.zarr"), env=env, capture_output=True, text=True, timeout=300)
    assert nocreds.returncode == 1 and "collect: writing s3://data/x.zarr failed" in nocreds.stderr, nocreds.stderr
    assert "credentials" in nocreds.stderr.lower() and "Traceback" not in nocreds.stderr


def _objects(s3, bucket: str) -> list[str]:
    return [o["Key"] for page in s3.get_paginator("list_objects_v2").paginate(Bucket=bucket)
            for o in page.get("Contents", [])]


def _stop_after(server: Server, seconds: float) -> threading.Thread:
    t = threading.Thread(target=lambda: (time.sleep(seconds), server.stop()), daemon=True)
    t.start()
    return t


@pytest.mark.timeout(900)
def test_dvc_push_and_pull_with_the_server_stopped_halfway_then_rerun_complete(tiny_run, server, tmp_path):
    from test_kill_harness import digest, stage_outs

    seed = int(os.environ.get("W4RL_KILL_SEED", random.SystemRandom().randrange(2**31)))
    rng = random.Random(seed)
    repo = tiny_run.copy(tmp_path / "repo")
    env = s3_env(server)
    s3 = server.client()

    def dvc(*args: str, cwd: Path = repo, check: bool = True) -> subprocess.CompletedProcess:
        result = subprocess.run(["dvc", *args], cwd=cwd, env=env, capture_output=True, text=True, timeout=600)
        assert not check or result.returncode == 0, f"dvc {args}: {result.stdout}\n{result.stderr} (seed {seed})"
        return result

    buckets = {name: f"w4rl-{name}-{uuid.uuid4().hex[:6]}" for name in ("timed", "faulty")}
    for name, bucket in buckets.items():
        s3.create_bucket(Bucket=bucket)
        dvc("remote", "add", name, f"s3://{bucket}/dvc")
        dvc("remote", "modify", name, "endpointurl", server.url)
    started = time.monotonic()
    dvc("push", "-r", "timed")
    seconds = time.monotonic() - started

    # push: the server goes away at a random moment
    stopper = _stop_after(server, rng.uniform(0, seconds))
    started = time.monotonic()
    push = dvc("push", "-r", "faulty", check=False)
    stopper.join()
    if push.returncode != 0:  # (or it finished first)
        assert time.monotonic() - started < 300, "push retried without bound"
        assert SECRET not in push.stdout + push.stderr
    server.start()
    dvc("push", "-r", "faulty")
    assert set(_objects(s3, buckets["faulty"])) <= set(_objects(s3, buckets["timed"]))  # complete: the clone's pull

    # pull into a fresh clone: the server goes away at a random moment
    subprocess.run(["git", "-c", "user.name=t", "-c", "user.email=t@t", "commit", "-qam", "remotes"], cwd=repo,
                   check=True)
    clone = tmp_path / "clone"
    subprocess.run(["git", "clone", "-q", str(repo), str(clone)], check=True)
    stopper = _stop_after(server, rng.uniform(0, seconds))
    pull = dvc("pull", "-r", "faulty", cwd=clone, check=False)
    stopper.join()
    outs = [o for stage in ("train_world_model", f"train_bc@{TASK}", f"collect@{TASK}-expert")
            for o in stage_outs(repo, stage)]
    for out in outs:  # in the workspace whole or not at all
        assert digest(clone / out) in (None, digest(repo / out)), f"{out} half-pulled (seed {seed}): {pull.stderr}"
    if pull.returncode != 0:
        assert SECRET not in pull.stdout + pull.stderr
    server.start()
    dvc("pull", "-r", "faulty", cwd=clone)
    assert "Data and pipelines are up to date" in dvc("status", cwd=clone).stdout
    for out in outs:
        assert digest(clone / out) == digest(repo / out)
