"""Build the suite's shared tiny pipeline run (conftest's `tiny_run`): one uninterrupted, committed
`dvc repro` of the tiny profile, its result in DEST/result.json.

    python tests/tiny_run_build.py DEST

conftest starts this in the background as soon as collection shows a test that needs the run, so
that it is built once per session for every pytest-xdist worker, while the workers run other tests
(before: each worker built its own, ~2 min of a core each). It is a script, not a fixture, because
an xdist worker cannot hand a fixture's value to another worker: the workers share only files.
"""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
import time
import traceback
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from pipelines.sandbox import make_sandbox, tool_env  # noqa: E402


def run_timed(cmd: list[str], cwd: Path, env: dict[str, str], timeout: float = 900) -> tuple[int, str, dict[str, float]]:
    """Run `dvc repro`-like `cmd`, returning (exit code, output, seconds per stage from its
    "Running stage '<name>'" lines)."""
    proc = subprocess.Popen(cmd, cwd=cwd, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    lines, starts = [], []
    deadline = time.monotonic() + timeout
    for line in proc.stdout:
        lines.append(line)
        m = re.match(r"Running stage '([^']+)'", line)
        if m:
            starts.append((m[1], time.monotonic()))
        if time.monotonic() > deadline:
            proc.kill()
            lines.append(f"\n[killed: {cmd} ran past {timeout:.0f} s]\n")
            break
    proc.wait()
    ends = [t for _, t in starts[1:]] + [time.monotonic()]
    return proc.returncode, "".join(lines), {name: end - t for (name, t), end in zip(starts, ends)}


def build(dest: Path) -> dict:
    repo = make_sandbox(dest, "tiny")
    code, out, seconds = run_timed(["dvc", "repro"], repo, tool_env())
    if code == 0:
        subprocess.run(["git", "add", "-A"], cwd=repo, check=True)
        subprocess.run(["git", "-c", "user.name=t", "-c", "user.email=t@t", "commit", "-qm", "tiny run"], cwd=repo,
                       check=True)
    return {"code": code, "output": out, "stage_seconds": seconds, "repo": str(repo)}


def main() -> None:
    dest = Path(sys.argv[1])
    dest.mkdir(parents=True, exist_ok=True)
    try:
        result = build(dest)
    except BaseException:  # noqa: BLE001 - whatever happened, the waiting tests must hear of it
        result = {"code": -1, "output": traceback.format_exc(), "stage_seconds": {}, "repo": ""}
    tmp = dest / "result.json.partial"
    tmp.write_text(json.dumps(result))
    os.replace(tmp, dest / "result.json")  # the waiting fixtures never read half a result


if __name__ == "__main__":
    main()
