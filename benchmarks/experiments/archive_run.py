#!/usr/bin/env python
"""Archive a finished `dvc repro` run into the repository (results/<name>/), for docs/results.md.

    python benchmarks/experiments/archive_run.py RUN_DIR results/cpu \
        --command "make repro PROFILE=cpu" --wall "35 min 10 s"

Copies what the pipeline wrote (metrics/ as it is, dvc.lock, params.yaml, plots/, the DVCLive
training runs under dvclive/, the real | imagined strips) and writes machine.json (processor, cores, memory, date, commit,
command, wall time) and one PNG of the refinement curves per task (every seed: imagined success
per iteration, periodic real success as dots). `dvc plots show` renders the same curves interactively;
the PNG exists so a markdown page can show them (Pillow is already a dependency; matplotlib is not).
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import shutil
import subprocess
from datetime import datetime, timezone
from pathlib import Path

import yaml
from PIL import Image, ImageDraw

COLORS = [(31, 119, 180), (214, 39, 40), (44, 160, 44), (148, 103, 189), (255, 127, 14)]


def machine(run: Path, command: str, wall: str) -> dict:
    model = next((line.split(":", 1)[1].strip() for line in open("/proc/cpuinfo") if line.startswith("model name")),
                 platform.processor())
    flags = next((line for line in open("/proc/cpuinfo") if line.startswith("flags")), "")
    mem_kb = next(int(line.split()[1]) for line in open("/proc/meminfo") if line.startswith("MemTotal"))
    commit = subprocess.run(["git", "-C", str(run), "rev-parse", "HEAD"], capture_output=True, text=True).stdout.strip()
    return {
        "processor": model, "cores": os.cpu_count(), "avx512_bf16": "avx512_bf16" in flags,
        "memory_gib": round(mem_kb / 2**20, 1), "gpu": None, "python": platform.python_version(),
        "date": datetime.now(timezone.utc).strftime("%Y-%m-%d"), "commit": commit,
        "command": command, "wall_time": wall,
    }


def tsv(path: Path) -> list[tuple[int, float]]:
    """A DVCLive curve (step, value); missing when the metric was never logged."""
    if not path.exists():
        return []
    return [(int(a), float(b)) for a, b in (line.split("\t") for line in path.read_text().splitlines()[1:])]


def curve_png(seeds: list[Path], title: str, out: Path, size=(520, 300), pad=40) -> None:
    img = Image.new("RGB", size, "white")
    d = ImageDraw.Draw(img)
    w, h = size[0] - 2 * pad, size[1] - 2 * pad
    runs = [(tsv(p / "imagined_success.tsv"), tsv(p / "real_success.tsv")) for p in seeds]
    n_iter = max(imagined[-1][0] for imagined, _ in runs)

    def xy(it: float, y: float) -> tuple[float, float]:
        return pad + w * (it - 1) / max(n_iter - 1, 1), pad + h * (1 - y)

    d.rectangle([pad, pad, pad + w, pad + h], outline="black")
    for y in (0.25, 0.5, 0.75):
        d.line([xy(1, y), xy(n_iter, y)], fill=(225, 225, 225))
        d.text((4, xy(1, y)[1] - 6), f"{y:.2f}", fill="black")
    d.text((pad, 8), title, fill="black")
    d.text((pad, pad + h + 8), f"iteration 1..{n_iter}   line: imagined success   dots: real success",
           fill="black")
    for k, (path, (imagined, real)) in enumerate(zip(seeds, runs)):
        c = COLORS[k % len(COLORS)]
        d.line([xy(it, v) for it, v in imagined], fill=c, width=2)
        for it, v in real:
            x, y = xy(it, v)
            d.ellipse([x - 4, y - 4, x + 4, y + 4], fill=c)
        d.text((pad + w - 60, pad + 4 + 12 * k), path.name, fill=c)
    img.save(out)


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("run", type=Path)
    ap.add_argument("dest", type=Path)
    ap.add_argument("--command", required=True)
    ap.add_argument("--wall", required=True, help="wall time of the whole run, as measured")
    a = ap.parse_args()
    if a.dest.exists():
        shutil.rmtree(a.dest)
    shutil.copytree(a.run / "metrics", a.dest / "metrics")
    for name in ("dvc.lock", "params.yaml"):
        shutil.copy2(a.run / name, a.dest / name)
    shutil.copytree(a.run / "plots", a.dest / "plots", ignore=shutil.ignore_patterns("*.html"))
    shutil.copytree(a.run / "dvclive", a.dest / "dvclive")
    # A worktree also holds the committed default run's per-task outputs (other tasks): drop them.
    tasks = set(yaml.safe_load((a.run / "params.yaml").read_text())["collect"]["tasks"])
    for stale in [*a.dest.glob("dvclive/*/*-v3"), *a.dest.glob("metrics/refine/*.json")]:
        if stale.name.removesuffix(".json") not in tasks:
            shutil.rmtree(stale) if stale.is_dir() else stale.unlink()
    (a.dest / "strips").mkdir()
    for p in sorted((a.run / "reports" / "fidelity").rglob("strip_*.png")):
        shutil.copy2(p, a.dest / "strips" / p.name)
    for task_dir in sorted((a.dest / "dvclive" / "refine").iterdir()):
        seeds = sorted((task_dir / "plots" / "metrics").glob("seed*"))
        if seeds:
            curve_png(seeds, f"refinement, {task_dir.name}", a.dest / f"refine_{task_dir.name}.png")
    (a.dest / "machine.json").write_text(json.dumps(machine(a.run, a.command, a.wall), indent=1) + "\n")
    print(f"archived {a.run} -> {a.dest}")


if __name__ == "__main__":
    main()
