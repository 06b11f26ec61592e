"""infra/local_s3.py: a loopback S3 server that refuses unsigned or wrongly signed requests."""

from __future__ import annotations

import json
import signal
import subprocess
import sys
import time
from pathlib import Path

import boto3
import botocore
import pytest

from conftest import free_port, make_episode, tiny_layout
from w4rl_core.data.store import EpisodeStore

ROOT = Path(__file__).resolve().parents[1]
pytestmark = pytest.mark.s3


@pytest.fixture
def local_s3(tmp_path):
    port = free_port()
    proc = subprocess.Popen(
        [sys.executable, str(ROOT / "infra/local_s3.py"), "--port", str(port), "--bucket", "w4rl-test",
         "--state-dir", str(tmp_path / "state")],
        stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
    )
    ready = tmp_path / "state/ready.json"
    deadline = time.monotonic() + 60
    while not ready.exists():
        assert proc.poll() is None, proc.stdout.read()
        assert time.monotonic() < deadline, "local S3 server did not start in 60 s"
        time.sleep(0.2)
    yield json.loads(ready.read_text()) | {"proc": proc}
    proc.send_signal(signal.SIGTERM)
    proc.wait(timeout=30)


def test_server_binds_loopback_and_requires_its_key(local_s3, monkeypatch):
    endpoint = local_s3["endpoint"]
    assert endpoint.startswith("http://127.0.0.1:")
    creds = Path(local_s3["credentials_file"])
    assert oct(creds.stat().st_mode & 0o777) == "0o600"

    anonymous = boto3.client("s3", endpoint_url=endpoint, region_name="us-east-1",
                             aws_access_key_id="x", aws_secret_access_key="y")
    with pytest.raises(botocore.exceptions.ClientError) as err:
        anonymous.list_objects_v2(Bucket="w4rl-test")
    assert err.value.response["Error"]["Code"] in ("InvalidAccessKeyId", "AccessDenied")

    # The standard AWS chain (shared credentials file + profile) is all a client needs.
    for var in ("AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY"):
        monkeypatch.delenv(var, raising=False)
    monkeypatch.setenv("AWS_SHARED_CREDENTIALS_FILE", str(creds))
    monkeypatch.setenv("AWS_PROFILE", local_s3["profile"])
    monkeypatch.setenv("AWS_DEFAULT_REGION", "us-east-1")
    monkeypatch.setenv("W4RL_S3_ENDPOINT_URL", endpoint)
    url = "s3://w4rl-test/episodes.zarr"
    EpisodeStore.create(url, tiny_layout()).append([make_episode(7)])
    assert EpisodeStore.open(url).n_frames == 7
    secret = [l for l in creds.read_text().splitlines() if "secret" in l][0].split("=")[1].strip()
    local_s3["proc"].send_signal(signal.SIGTERM)
    output = local_s3["proc"].communicate(timeout=30)[0]
    assert secret not in output  # the key is never printed
