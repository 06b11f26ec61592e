"""`dvc push` that a killed earlier push cannot make incomplete.

Measured with DVC 3.67.1 / dvc-data 3.18.3 (2026-12-03, a loopback S3 server, 12 directories of 30
files): of about 60 pushes killed at a moment drawn while push is still "Collecting", 4 left its
collection cache (<site_cache_dir>/index/data/db.db) half-filled, and it is
reused as if whole: the next `dvc push` uploads only what that half names, exits 0, and indexes each
directory it uploaded as complete (<site_cache_dir>/index/<remote>/: a directory's .dir present
means all its files are), so that `dvc status --cloud` and every later push say "up to date" while
objects are missing on the remote and a fresh clone's `dvc pull` fails. DVC has no option to
ignore its caches, so this module keeps a marker in .dvc/tmp (git-ignored) while a push runs: when
a push starts and finds one, the previous push did not finish (killed, timed out, failed), and DVC's
index caches of this repository are deleted first (they are caches: DVC rebuilds them, checking the
remote's objects one by one once instead of trusting what the killed push left).
"""

from __future__ import annotations

import shutil
import subprocess
from collections.abc import Callable
from pathlib import Path

MARKER = Path(".dvc/tmp/w4rl-push-unfinished")

Runner = Callable[[list[str]], object]


def _run(cmd: list[str], repo: Path) -> None:
    result = subprocess.run(cmd, cwd=repo)
    if result.returncode != 0:
        raise subprocess.CalledProcessError(result.returncode, cmd)


def forget_remote_state(repo: Path) -> Path:
    """Delete DVC's index caches of `repo` (the push collection and the per-remote indexes); returns
    the directory removed."""
    from dvc.repo import Repo

    with Repo(str(repo)) as dvc_repo:
        index = Path(dvc_repo.site_cache_dir) / "index"
    shutil.rmtree(index, ignore_errors=True)
    return index


def has_default_remote(repo: Path) -> bool:
    """Whether `dvc push` has somewhere to go (`dvc remote default` prints "No default remote set"
    and exits 1 when it has not: its output alone does not say)."""
    out = subprocess.run(["dvc", "remote", "default"], cwd=repo, capture_output=True, text=True)
    return out.returncode == 0 and bool(out.stdout.strip())


def push(repo: Path, remote: str | None = None, run_cache: bool = False, runner: Runner | None = None) -> bool:
    """`dvc push [-r remote] [--run-cache]` in `repo`, after forgetting DVC's caches if a previous
    push did not finish. `runner(cmd)` runs the command and raises on failure (default: a
    subprocess, its output passed through). Returns whether the caches were forgotten."""
    repo = Path(repo)
    marker = repo / MARKER
    recovered = marker.exists()
    if recovered:
        forget_remote_state(repo)
    marker.parent.mkdir(parents=True, exist_ok=True)
    marker.write_text("a `dvc push` started by w4rl has not finished\n")
    cmd = ["dvc", "push", *(["-r", remote] if remote else []), *(["--run-cache"] if run_cache else [])]
    (runner or (lambda c: _run(c, repo)))(cmd)
    marker.unlink()  # only after success: a failed or killed push leaves it for the next one
    return recovered
