#!/usr/bin/env python
"""Training-batch feed: the in-memory path (load_windows, then FrameWindows.sample) against windows
streamed from a store (w4rl_core/data/stream.py) on local disk and on a loopback S3 server (moto on
127.0.0.1), with 0 and 2 loader workers, and on that server with a round trip added per request.

    .venv/bin/python benchmarks/bench_stream.py                   # appends to benchmarks/results.md
    .venv/bin/python benchmarks/bench_stream.py --episodes 8 --batches 10 --no-append
    .venv/bin/python benchmarks/bench_stream.py --torch-threads 1  # on a machine shared with other jobs

The store holds synthetic episodes (no simulator) written by EpisodeStore at the real layout: a
gradient and a moving square under +-2 noise per pixel, which leaves them nearly incompressible, so
the bytes moved per frame are an upper bound on rendered frames'. Frames/s counts frames delivered
as float training batches on the host after the first batch, whose wait (worker start and
shuffle-buffer fill included) is its own column. S3 requests are the server's HTTP request log
lines; a loopback's latency is far below a real bucket's, hence the delayed rows.
"""

from __future__ import annotations

import argparse
import logging
import os
import socket
import sys
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import torch
from moto.moto_server.threaded_moto_server import ThreadedMotoServer
from moto.moto_server.werkzeug_app import DomainDispatcherApplication, MotoRequestHandler, create_backend_app
from werkzeug.serving import make_server

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from benchmarks.bench_data import append_results  # noqa: E402
from benchmarks.bench_store_open import HTTPCounter  # noqa: E402
from w4rl_core.data.episode import Episode  # noqa: E402
from w4rl_core.data.store import EpisodeStore, StoreLayout  # noqa: E402
from w4rl_core.data.stream import (  # noqa: E402
    EpisodeReader,
    StreamConfig,
    WindowStream,
    training_batches,
    window_loader,
)
from w4rl_core.data.windows import load_windows  # noqa: E402


def synthetic_episodes(n: int, length: int, size: int) -> list[Episode]:
    rng = np.random.default_rng(0)
    y, x = np.mgrid[:size, :size]
    episodes = []
    for _ in range(n):
        color = rng.integers(0, 256, 3)
        background = (x[..., None] * color / size + y[..., None] * (255 - color) / size) / 2
        frames = np.repeat(background[None], length, axis=0)
        side = size // 4
        for t, left in enumerate(np.linspace(0, size - side, length).astype(int)):
            frames[t, side : 2 * side, left : left + side] = rng.integers(0, 256, 3)
        frames += rng.integers(-2, 3, frames.shape)
        episodes.append(Episode(
            task="door-lock-v3", kind="expert", rgb=frames.clip(0, 255).astype(np.uint8),
            action=rng.uniform(-1, 1, (length, 4)).astype(np.float32), reward=np.zeros(length, np.float32),
            success=(np.arange(length) >= length // 2).astype(np.uint8), state=np.zeros((length, 39), np.float32)))
    return episodes


def write_store(url: str, episodes: list[Episode], size: int) -> None:
    layout = StoreLayout(image_size=(size, size), action_low=(-1.0,) * 4, action_high=(1.0,) * 4, state_dim=39,
                         camera="corner2", tasks=("door-lock-v3",))
    store = EpisodeStore.create(url, layout)
    for i in range(0, len(episodes), 10):  # appends of ~1,000 frames, as collection writes
        store.append(episodes[i : i + 10])


class DelayedMotoServer(ThreadedMotoServer):
    """moto's S3 server with `latency_s` of sleep before each request: a bucket's round trip on the
    loopback. Requests are served on threads, so concurrent requests wait concurrently, as they
    would on S3. (Overrides moto's server entry, moto 5.2: a benchmark aid, not library code.)"""

    latency_s = 0.0

    def _server_entry(self) -> None:
        app = DomainDispatcherApplication(create_backend_app)

        def delayed(environ, start_response):
            time.sleep(self.latency_s)
            return app(environ, start_response)

        self._server = make_server(self._ip_address, self._port, delayed, True, request_handler=MotoRequestHandler)
        self._server_ready_event.set()
        self._server.serve_forever()


def start_s3() -> tuple[DelayedMotoServer, str, HTTPCounter]:
    """The S3 server on a free loopback port, credentials through the AWS environment variables, and
    a counter of the HTTP requests it serves."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    http = HTTPCounter()
    werkzeug = logging.getLogger("werkzeug")
    werkzeug.handlers[:] = [http]
    werkzeug.propagate = False
    werkzeug.setLevel(logging.INFO)
    server = DelayedMotoServer(ip_address="127.0.0.1", port=port, verbose=False)
    server.start()
    endpoint = f"http://127.0.0.1:{port}"
    for k, v in (("AWS_ACCESS_KEY_ID", "testing"), ("AWS_SECRET_ACCESS_KEY", "testing"),
                 ("AWS_DEFAULT_REGION", "us-east-1"), ("W4RL_S3_ENDPOINT_URL", endpoint)):
        os.environ[k] = v
    return server, endpoint, http


def rate(batches: Iterator, n: int, frames_per_batch: int) -> tuple[float, float]:
    """(seconds to the first batch, frames/s over the next n batches)."""
    start = time.perf_counter()
    next(batches)
    first = time.perf_counter() - start
    start = time.perf_counter()
    for _ in range(n):
        next(batches)
    return first, n * frames_per_batch / (time.perf_counter() - start)


def bench_in_memory(url: str, args: argparse.Namespace) -> tuple[str, ...]:
    start = time.perf_counter()
    train, _ = load_windows([url], args.image_size)
    load_s = time.perf_counter() - start
    g = torch.Generator().manual_seed(0)

    def batches() -> Iterator:
        while True:
            yield train.sample(args.batch, args.length, g)

    _, fps = rate(batches(), args.batches, args.batch * args.length)
    return ("in memory: load_windows + FrameWindows.sample", "-", "-", f"{fps:,.0f}",
            f"{load_s:.2f} s (load_windows, once per run)")


def bench_stream(where: str, url: str, config: StreamConfig, args: argparse.Namespace,
                 batches_timed: int) -> tuple[str, ...]:
    stream = WindowStream([url], args.length, args.image_size, config=config)
    loader = window_loader(stream, args.batch)
    batches = training_batches(loader)
    first, fps = rate(batches, batches_timed, args.batch * args.length)
    del batches, loader  # the last references: the workers and read threads end here, before the next row
    return (f"streamed, {where}", str(config.loader_workers), str(config.read_ahead), f"{fps:,.0f}", f"{first:.2f} s")


def requests_per_epoch(url: str, args: argparse.Namespace, http: HTTPCounter) -> tuple[int, int]:
    """(HTTP requests, episodes) to read every train episode once, store open included."""
    stream = WindowStream([url], args.length, args.image_size)
    reader, before = EpisodeReader([url]), http.count
    for episode in stream.episodes:
        reader.read(episode)
    return http.count - before, stream.n_episodes


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--episodes", type=int, default=40)
    ap.add_argument("--episode-len", type=int, default=100)
    ap.add_argument("--image-size", type=int, default=64)
    ap.add_argument("--length", type=int, default=5, help="frames per window (context 4 + 1)")
    ap.add_argument("--batch", type=int, default=32)
    ap.add_argument("--batches", type=int, default=100, help="batches timed after the first")
    ap.add_argument("--s3-latency-ms", type=float, default=20.0, help="added per request in the delayed-S3 rows")
    ap.add_argument("--latency-batches", type=int, default=20, help="batches timed in the delayed-S3 rows")
    ap.add_argument("--torch-threads", type=int, default=None,
                    help="torch threads of this process (default: torch's); loader workers always use 1")
    ap.add_argument("--loader-workers", default="0,2",
                    help="comma-separated loader worker counts of the streamed rows (each worker is a process "
                         "that imports torch: the suite's tiny run passes 0)")
    ap.add_argument("--no-append", action="store_true")
    args = ap.parse_args()
    loader_workers = [int(w) for w in args.loader_workers.split(",")]
    if args.torch_threads:
        torch.set_num_threads(args.torch_threads)

    import boto3

    episodes = synthetic_episodes(args.episodes, args.episode_len, args.image_size)
    n_frames = args.episodes * args.episode_len
    server, endpoint, http = start_s3()
    try:
        boto3.client("s3", endpoint_url=endpoint).create_bucket(Bucket="bench")
        with tempfile.TemporaryDirectory() as tmp:
            local, remote = f"{tmp}/bench.zarr", "s3://bench/bench.zarr"
            write_store(local, episodes, args.image_size)
            write_store(remote, episodes, args.image_size)
            files = [p for p in Path(local).rglob("*") if p.is_file()]
            store_bytes = sum(p.stat().st_size for p in files)
            rgb_bytes = sum(p.stat().st_size for p in files if "rgb" in p.parts)
            s3_objects = boto3.client("s3", endpoint_url=endpoint).list_objects_v2(Bucket="bench")["KeyCount"]
            requests, n_train = requests_per_epoch(remote, args, http)

            rows = [bench_in_memory(local, args)]
            for where, url in (("local disk", local), ("loopback S3", remote)):
                for workers in loader_workers:
                    rows.append(bench_stream(where, url, StreamConfig(loader_workers=workers), args, args.batches))
            # With a round trip per request, latency bounds a reader: read-ahead and workers overlap it.
            server.latency_s = args.s3_latency_ms / 1000
            delayed = f"loopback S3 + {args.s3_latency_ms:g} ms per request"
            configs = [StreamConfig(read_ahead=1), StreamConfig()] + [
                StreamConfig(loader_workers=w) for w in loader_workers if w > 0]
            for config in configs:
                rows.append(bench_stream(delayed, remote, config, args, args.latency_batches))
    finally:
        server.stop()
    preamble = (
        f"{args.episodes} synthetic episodes × {args.episode_len} frames at {args.image_size} px "
        f"({n_frames:,} frames); batches of {args.batch} windows × {args.length} frames, float on the host; "
        f"{args.batches} batches timed after the first ({args.latency_batches} in the delayed-S3 rows); "
        f"shuffle_buffer {StreamConfig().shuffle_buffer}; torch threads {torch.get_num_threads()}.  \n"
        f"On disk: {store_bytes / n_frames:,.0f} bytes per frame "
        f"({rgb_bytes / n_frames:,.0f} of them frames), {len(files)} files locally, {s3_objects} S3 objects.  \n"
        f"S3 requests per epoch ({n_train} episodes, store open included): {requests:,} "
        f"({requests / n_train:.1f} per episode).\n\n"
    )
    print(preamble, end="")
    append_results("bench_stream", rows, args.no_append, preamble=preamble,
                   header=("what", "loader workers", "read ahead", "frames/s", "first batch"))


if __name__ == "__main__":
    main()
