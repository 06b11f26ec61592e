#!/usr/bin/env python
"""Orchestration costs: `dvc repro` when nothing changed, and the Prefect flow's overhead relative
to the stage compute it orchestrates.

    .venv/bin/python benchmarks/bench_pipeline.py                 # profiles/tiny.yaml (a few minutes)
    python benchmarks/bench_pipeline.py --profile gpu                  # any profiles/<name>.yaml

Two scratch repositories (pipelines/sandbox.py) with the same profile: in one, plain `dvc repro`
(cold, then no-op runs); in the other, the real retrain flow (`w4rl flows retrain --no-pull
--no-push`, an ephemeral Prefect server as a fresh machine has) cold, then again with everything
up to date. Flow overhead = flow time - repro time - promote/report time (those run in the flow
only and are timed on their own; the gate is a stage of the repro). The tiny profile makes stage compute small, so the overhead
share printed is the worst case; the smoke and GPU profiles' stages take minutes to hours.
Prints one table and appends it, with machine, date and command, to benchmarks/results.md.
"""

from __future__ import annotations

import argparse
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from benchmarks.bench_data import append_results  # noqa: E402
from pipelines.sandbox import make_sandbox, tool_env  # noqa: E402


def timed(cmd: list[str], repo: Path) -> float:
    start = time.perf_counter()
    result = subprocess.run(cmd, cwd=repo, env=tool_env() | {"PREFECT_SERVER_EPHEMERAL_STARTUP_TIMEOUT_SECONDS": "120"},
                            capture_output=True, text=True)
    elapsed = time.perf_counter() - start
    if result.returncode != 0:
        raise SystemExit(f"{' '.join(cmd)} failed in {repo}:\n{result.stdout[-2000:]}\n{result.stderr[-4000:]}")
    return elapsed


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--profile", default="tiny", help="a file in profiles/ (without .yaml)")
    parser.add_argument("--repeats", type=int, default=3, help="no-op runs (median reported)")
    parser.add_argument("--no-append", action="store_true")
    args = parser.parse_args()

    with tempfile.TemporaryDirectory() as d:
        plain = make_sandbox(Path(d) / "plain", args.profile)
        flowed = make_sandbox(Path(d) / "flow", args.profile)
        repro_cold = timed(["dvc", "repro"], plain)
        noop = statistics.median(timed(["dvc", "repro"], plain) for _ in range(args.repeats))
        status = statistics.median(timed(["dvc", "status"], plain) for _ in range(args.repeats))
        after = sum(timed(["w4rl", cmd], plain) for cmd in ("promote", "report"))
        stages = len(subprocess.run(["dvc", "stage", "list", "--name-only"], cwd=plain, env=tool_env(),
                                    capture_output=True, text=True, check=True).stdout.split())
        flow_cmd = ["w4rl", "flows", "retrain", "--repo", ".", "--no-pull", "--no-push"]
        flow_cold = timed(flow_cmd, flowed)
        flow_noop = statistics.median(timed(flow_cmd, flowed) for _ in range(args.repeats))

    overhead = flow_cold - repro_cold - after
    rows = [
        (f"`dvc repro`, cold ({stages} stages, profile {args.profile})", f"{repro_cold:.1f} s"),
        ("`dvc repro`, nothing changed (no-op)", f"{noop:.2f} s (median of {args.repeats})"),
        ("`dvc status`, nothing changed", f"{status:.2f} s"),
        ("`w4rl promote` + `report`", f"{after:.1f} s"),
        ("retrain flow, cold (ephemeral Prefect server)", f"{flow_cold:.1f} s"),
        ("retrain flow overhead, cold = flow - repro - promote/report",
         f"{overhead:.1f} s ({100 * overhead / flow_cold:.0f}% of the flow; {overhead / stages:.2f} s per stage)"),
        ("retrain flow, nothing changed", f"{flow_noop:.1f} s (vs {noop + after:.1f} s without Prefect)"),
    ]
    append_results("bench_pipeline", rows, args.no_append)


if __name__ == "__main__":
    main()
