#!/usr/bin/env python
"""Storage requests and wall time to open an episode store (and read its episode index), with and
without Zarr consolidated metadata, on local disk and on the loopback S3 server (moto, 127.0.0.1).

    .venv/bin/python benchmarks/bench_store_open.py              # appends to benchmarks/results.md
    .venv/bin/python benchmarks/bench_store_open.py --no-append

Requests are counted by zarr's LoggingStore (every get the store makes, whatever the backend); the
S3 latency here is a loopback's, so on a real bucket (tens of ms per GET) the request count is
what matters.
"""

from __future__ import annotations

import argparse
import logging
import os
import socket
import statistics
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import zarr

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import w4rl_core.data.store as store_module  # noqa: E402
from benchmarks.bench_data import append_results  # noqa: E402
from w4rl_core.data.episode import Episode  # noqa: E402
from w4rl_core.data.store import EpisodeStore, StoreLayout  # noqa: E402


def episodes(n: int, length: int = 50, size: int = 64) -> list[Episode]:
    rng = np.random.default_rng(0)
    return [Episode(task="door-lock-v3", kind="expert", rgb=rng.integers(0, 255, (length, size, size, 3), np.uint8),
                    action=rng.uniform(-1, 1, (length, 4)).astype(np.float32), reward=np.zeros(length, np.float32),
                    success=np.zeros(length, np.uint8), state=np.zeros((length, 39), np.float32))
            for _ in range(n)]


class HTTPCounter(logging.Handler):
    """Counts the loopback S3 server's request log lines (werkzeug logs one per HTTP request):
    s3fs adds HEAD and LIST requests around zarr's gets, and those cost a round trip too."""

    def __init__(self) -> None:
        super().__init__()
        self.count = 0

    def emit(self, record: logging.LogRecord) -> None:
        self.count += 1


def measure(url: str, consolidated: bool, endpoint: str | None, repeats: int,
            http: HTTPCounter) -> tuple[int, float, float]:
    real, opened = store_module.open_zarr_store, []

    def counting(u, **kwargs):
        opened.append(zarr.storage.LoggingStore(real(u, **kwargs), log_level="CRITICAL"))
        return opened[-1]

    store_module.open_zarr_store = counting
    try:
        times, before = [], http.count
        for _ in range(repeats):
            t0 = time.perf_counter()
            EpisodeStore.open(url, endpoint_url=endpoint, consolidated=consolidated)
            times.append(time.perf_counter() - t0)
        return opened[-1].counter["get"], (http.count - before) / repeats, statistics.median(times)
    finally:
        store_module.open_zarr_store = real


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--episodes", type=int, default=40)
    ap.add_argument("--repeats", type=int, default=20)
    ap.add_argument("--no-append", action="store_true")
    args = ap.parse_args()

    from moto.server import ThreadedMotoServer
    import boto3

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    server = ThreadedMotoServer(ip_address="127.0.0.1", port=port, verbose=False)
    http = HTTPCounter()
    werkzeug = logging.getLogger("werkzeug")
    werkzeug.handlers[:] = [http]
    werkzeug.propagate = False
    werkzeug.setLevel(logging.INFO)
    server.start()
    endpoint = f"http://127.0.0.1:{port}"
    for k, v in (("AWS_ACCESS_KEY_ID", "bench"), ("AWS_SECRET_ACCESS_KEY", "bench"), ("AWS_DEFAULT_REGION", "us-east-1")):
        os.environ.setdefault(k, v)
    boto3.client("s3", endpoint_url=endpoint).create_bucket(Bucket="bench")
    layout = StoreLayout(image_size=(64, 64), action_low=(-1.0,) * 4, action_high=(1.0,) * 4, state_dim=39,
                         camera="corner2", fps=80.0, tasks=("door-lock-v3",))
    rows = []
    try:
        with tempfile.TemporaryDirectory() as tmp:
            for where, url, ep_endpoint in (("local disk", f"{tmp}/s.zarr", None), ("loopback S3", "s3://bench/s.zarr", endpoint)):
                store = EpisodeStore.create(url, layout, endpoint_url=ep_endpoint)
                store.append(episodes(args.episodes))
                for consolidated in (False, True):
                    gets, requests, seconds = measure(url, consolidated, ep_endpoint, args.repeats, http)
                    rows.append((f"open + episode index, {where}", "consolidated" if consolidated else "per-node metadata",
                                 str(gets), f"{requests:.0f}" if ep_endpoint else "-", f"{seconds * 1000:.1f} ms"))
    finally:
        server.stop()
    append_results("bench_store_open", rows, args.no_append, header=("what", "metadata", "zarr gets", "HTTP requests", "median wall"),
                   preamble=f"{args.episodes} episodes of 50 frames at 64 px; median of {args.repeats} opens.\n\n")


if __name__ == "__main__":
    main()
