#!/usr/bin/env python
"""Import speed of `w4rl data import lerobot`: frames/s from a LeRobot v3.0 dataset (AV1, LeRobot's
default codec, and H.264) into a new episode store, for 64 px and 256 px camera frames, split into
reading (parquet + decoding + fitting to the model's square) and the whole import (+ writing the
Zarr store).

    .venv/bin/python benchmarks/bench_lerobot_import.py              # appends to benchmarks/results.md
    .venv/bin/python benchmarks/bench_lerobot_import.py --no-append

The dataset is written by w4rl's own exporter (LeRobot's v3.0 layout) from synthetic episodes:
a textured background with a moving object and a little noise, so that the codec has real work
(flat frames decode faster than a camera's). The store is 64 px, as the profiles' world model.
"""

from __future__ import annotations

import argparse
import statistics
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from benchmarks.bench_data import append_results  # noqa: E402
from w4rl_core.data.episode import Episode  # noqa: E402
from w4rl_core.data.lerobot import LeRobotMapping, export_lerobot, import_lerobot, read_lerobot  # noqa: E402


def episodes(n: int, length: int, size: int, seed: int = 0) -> list[Episode]:
    rng = np.random.default_rng(seed)
    yy, xx = np.mgrid[0:size, 0:size]
    out = []
    for e in range(n):
        base = (np.stack([np.sin(xx / (5 + e)), np.cos(yy / 7), np.sin((xx + yy) / 11)], -1) * 60 + 120)
        rgb = np.empty((length, size, size, 3), np.uint8)
        for t in range(length):
            frame = base.copy()
            cy, cx = int(size * (0.2 + 0.6 * t / length)), int(size * (0.5 + 0.3 * np.sin(t / 9 + e)))
            r = max(2, size // 10)
            frame[max(0, cy - r):cy + r, max(0, cx - r):cx + r] = (230, 60, 40)
            rgb[t] = np.clip(frame + rng.normal(0, 3, frame.shape), 0, 255).astype(np.uint8)
        success = np.zeros(length, np.uint8)
        success[-10:] = 1
        reward = rng.uniform(0, 1, length).astype(np.float32)
        reward[0] = 0
        out.append(Episode(task="pick-place", kind="expert", rgb=rgb,
                           action=rng.uniform(-1, 1, (length, 4)).astype(np.float32), reward=reward,
                           success=success, state=rng.normal(size=(length, 8)).astype(np.float32)))
    return out


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--episodes", type=int, default=20)
    ap.add_argument("--length", type=int, default=100)
    ap.add_argument("--repeats", type=int, default=3)
    ap.add_argument("--no-append", action="store_true")
    args = ap.parse_args()
    rows = []
    frames = args.episodes * args.length
    with tempfile.TemporaryDirectory() as tmp:
        for size in (64, 256):
            eps = episodes(args.episodes, args.length, size)
            for codec in ("libsvtav1", "h264"):
                root = Path(tmp) / f"{codec}-{size}"
                export_lerobot(eps, root, fps=10, codec=codec, camera="top")
                mapping = LeRobotMapping(camera="observation.images.top", image_size=64)
                reads, imports = [], []
                for r in range(args.repeats):
                    t = time.perf_counter()
                    read_lerobot(root, mapping)
                    reads.append(time.perf_counter() - t)
                    t = time.perf_counter()
                    import_lerobot(root, Path(tmp) / f"store-{codec}-{size}-{r}.zarr", mapping)
                    imports.append(time.perf_counter() - t)
                mb = sum(p.stat().st_size for p in (root / "videos").rglob("*.mp4")) / 1e6
                rows.append((f"{'AV1' if codec == 'libsvtav1' else 'H.264'} {size} px -> 64 px store",
                             f"{frames:,}", f"{mb:.2f} MB", f"{frames / statistics.median(reads):,.0f}",
                             f"{frames / statistics.median(imports):,.0f}"))
    append_results("LeRobot import speed (bench_lerobot_import)", rows, print_only=args.no_append,
                   header=("dataset (v3.0)", "frames", "video", "read frames/s (median)",
                           "import frames/s (median)"),
                   preamble=f"{args.episodes} episodes of {args.length} frames, {args.repeats} repeats; "
                            "read = parquet + decode + fit to 64 px; import = read + checks + Zarr store written.\n\n")


if __name__ == "__main__":
    main()
