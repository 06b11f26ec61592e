#!/usr/bin/env python
"""Dataset-spine throughput: collection env-steps/s, episode-store write/read frames/s, and the
training loop's feed (stores -> memory once, then random windows per batch, on the host or the GPU).

    .venv/bin/python benchmarks/bench_data.py                     # defaults below
    .venv/bin/python benchmarks/bench_data.py --episodes 8 --frames 10000 --no-append

Prints one table and appends it, with machine, date and command, to benchmarks/results.md.
Numbers are wall-clock on whatever machine runs it; they are measurements, not test thresholds.
"""

from __future__ import annotations

import argparse
import os
import platform
import shlex
import sys
import tempfile
import time
from datetime import datetime, timezone
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
os.environ.setdefault("MUJOCO_GL", "egl")

from w4rl_core.data.collect import CollectConfig, collect  # noqa: E402
from w4rl_core.data.episode import Episode  # noqa: E402
from w4rl_core.data.store import EpisodeStore  # noqa: E402

RESULTS = Path(__file__).with_name("results.md")


def machine() -> str:
    try:
        import torch

        gpu = torch.cuda.get_device_name(0) if torch.cuda.is_available() else "no GPU"
    except Exception:  # torch is optional for this benchmark
        gpu = "no GPU"
    return f"{platform.machine()}, {os.cpu_count()} cores, {gpu}, Python {platform.python_version()}"


def bench_collection(tmp: Path, episodes: int, workers: int, image_size: int) -> dict[str, float]:
    cfg = CollectConfig(task="coffee-pull-v3", kind="expert", episodes=episodes, episode_len=50,
                        image_size=image_size, workers=workers)
    start = time.perf_counter()
    summary = collect(cfg, tmp / f"collect-{workers}.zarr", progress=False)
    elapsed = time.perf_counter() - start
    steps = summary["frames"]
    return {"steps_per_s": steps / elapsed, "physics_steps_per_s": steps * cfg.action_repeat / elapsed,
            "seconds": elapsed, "episodes": episodes}


def bench_store(tmp: Path, source: Path, n_frames: int, window: int) -> dict[str, float]:
    """Write n_frames of real rendered frames (tiled from a collected store), then read them back."""
    src = EpisodeStore.open(source)
    base = src.episode(0)
    reps = max(1, n_frames // len(base))
    store = EpisodeStore.create(tmp / "bench.zarr", src.layout)
    episodes = [Episode(task=base.task, kind="expert", rgb=base.rgb, action=base.action, reward=base.reward,
                        success=base.success, state=base.state) for _ in range(reps)]
    start = time.perf_counter()
    for i in range(0, reps, 20):  # appends of 20 episodes (1,000 frames), as collection does
        store.append(episodes[i : i + 20])
    write_s = time.perf_counter() - start
    n = store.n_frames
    objects = sum(1 for p in (tmp / "bench.zarr").rglob("*") if p.is_file())

    reader = EpisodeStore.open(tmp / "bench.zarr")
    start = time.perf_counter()
    _ = reader.array("data/rgb")[:]
    seq_s = time.perf_counter() - start

    starts = reader.window_starts(window)
    rng = np.random.default_rng(0)
    picks = rng.choice(starts, size=min(2000, len(starts)), replace=False)
    start = time.perf_counter()
    for s in picks:
        reader.read_window(int(s), window, keys=("rgb", "action"))
    rand_s = time.perf_counter() - start
    return {"frames": n, "objects": objects, "write_fps": n / write_s, "seq_read_fps": n / seq_s,
            "window_read_fps": len(picks) * window / rand_s, "windows_per_s": len(picks) / rand_s}


def bench_feed(store: Path, image_size: int, batch: int, window: int, batches: int = 200) -> list[tuple[str, str]]:
    """What the world-model trainer does: load_windows (Zarr -> memory, resized), then sample batches."""
    import torch

    from w4rl_core.data.windows import load_windows

    start = time.perf_counter()
    train, _ = load_windows([str(store)], image_size=image_size)
    load_s = time.perf_counter() - start
    rows = [(f"feed: load_windows, {len(train.rgb)} frames, resized to {image_size}px",
             f"{len(train.rgb) / load_s:,.0f} frames/s ({load_s:.1f} s once per run)")]
    targets = [("host", "cpu", train)]
    if torch.cuda.is_available():
        targets += [("host -> GPU", "cuda", train), ("GPU-resident", "cuda", train.to("cuda"))]
    for name, device, windows in targets:
        g = torch.Generator().manual_seed(0)
        windows.sample(batch, window, g, device)
        if device == "cuda":
            torch.cuda.synchronize()
        start = time.perf_counter()
        for _ in range(batches):
            windows.sample(batch, window, g, device)
        if device == "cuda":
            torch.cuda.synchronize()
        per_s = batches / (time.perf_counter() - start)
        rows.append((f"feed: training batches of {batch} windows × {window} frames, {name}",
                     f"{per_s * batch:,.0f} samples/s ({per_s * batch * window:,.0f} frames/s)"))
    return rows


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--episodes", type=int, default=8, help="episodes per collection run")
    parser.add_argument("--frames", type=int, default=10_000, help="frames written in the store benchmark")
    parser.add_argument("--image-size", type=int, default=64)
    parser.add_argument("--window", type=int, default=5, help="T+1 frames per training window")
    parser.add_argument("--feed-size", type=int, default=32, help="model frame size for the feed benchmark")
    parser.add_argument("--feed-batch", type=int, default=32, help="training batch for the feed benchmark")
    parser.add_argument("--no-append", action="store_true", help="print only; do not touch results.md")
    args = parser.parse_args()

    with tempfile.TemporaryDirectory() as d:
        tmp = Path(d)
        rows = []
        for workers in sorted({1, os.cpu_count() or 1}):
            c = bench_collection(tmp, args.episodes, workers, args.image_size)
            rows.append((f"collect coffee-pull-v3 expert, {workers} worker(s), {args.image_size}px",
                         f"{c['steps_per_s']:.1f} recorded steps/s ({c['physics_steps_per_s']:.1f} physics steps/s)"))
        s = bench_store(tmp, tmp / f"collect-{workers}.zarr", args.frames, args.window)
        rows += [
            (f"store write, {s['frames']} frames ({s['objects']} objects)", f"{s['write_fps']:.0f} frames/s"),
            ("store sequential read (data/rgb)", f"{s['seq_read_fps']:.0f} frames/s"),
            (f"store random windows of {args.window} (rgb+action)",
             f"{s['window_read_fps']:.0f} frames/s ({s['windows_per_s']:.0f} windows/s)"),
        ]
        rows += bench_feed(tmp / "bench.zarr", args.feed_size, args.feed_batch, args.window)

    append_results("bench_data", rows, args.no_append)


def append_results(name: str, rows: list[tuple[str, ...]], print_only: bool = False,
                   header: tuple[str, ...] = ("benchmark", "result"), preamble: str = "") -> None:
    """Print a table; append it with machine, date and command (and a preamble) to results.md."""
    table = "\n".join("| " + " | ".join(r) + " |" for r in [header, ("---",) * len(header), *rows])
    print(table)
    if not print_only:
        stamp = datetime.now(timezone.utc).strftime("%Y-%m-%d %H:%M UTC")
        cmd = " ".join(shlex.quote(a) for a in [Path(sys.executable).name, *sys.argv])
        with RESULTS.open("a") as f:
            f.write(f"\n### {name} — {stamp}\n\nMachine: {machine()}  \nCommand: `{cmd}`\n\n{preamble}{table}\n")


if __name__ == "__main__":
    main()
