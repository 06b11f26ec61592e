"""pipelines/dvc_push.py: a push after an unfinished one forgets DVC's index caches first; a push that
finishes leaves no marker, one that fails leaves it. (The killed-push case, end to end against the
loopback S3 server, is tests/test_kill_harness.py.)"""

from __future__ import annotations

import subprocess
from pathlib import Path

import pytest

from pipelines.dvc_push import MARKER, push
from pipelines.sandbox import tool_env


def _repo(tmp_path: Path) -> Path:
    repo = tmp_path / "repo"
    repo.mkdir()
    env = tool_env()
    for cmd in (["git", "init", "-q"], ["dvc", "init", "-q"], ["dvc", "remote", "add", "-d", "local", str(tmp_path / "remote")]):
        subprocess.run(cmd, cwd=repo, env=env, check=True)
    (repo / "data").mkdir()
    for i in range(3):
        (repo / "data" / f"{i}.txt").write_text(f"file {i}\n")
    subprocess.run(["dvc", "add", "-q", "data"], cwd=repo, env=env, check=True)
    return repo


def _site_index(repo: Path) -> Path:
    from dvc.repo import Repo

    with Repo(str(repo)) as r:
        return Path(r.site_cache_dir) / "index"


def test_a_push_after_an_unfinished_one_forgets_dvc_caches_and_a_failed_one_leaves_its_marker(tmp_path):
    repo = _repo(tmp_path)
    ran: list[list[str]] = []
    assert push(repo, runner=ran.append) is False  # first push: nothing to forget
    assert ran == [["dvc", "push"]] and not (repo / MARKER).exists()
    subprocess.run(["dvc", "push", "-q"], cwd=repo, env=tool_env(), check=True)  # DVC builds its index caches
    index = _site_index(repo)
    assert index.is_dir()

    def fails(cmd):
        raise subprocess.CalledProcessError(1, cmd)

    with pytest.raises(subprocess.CalledProcessError):
        push(repo, "local", run_cache=True, runner=fails)
    assert (repo / MARKER).exists() and index.is_dir()  # a failed push: the next one will not trust them
    assert push(repo, "local", run_cache=True, runner=ran.append) is True
    assert ran[-1] == ["dvc", "push", "-r", "local", "--run-cache"]
    assert not index.exists() and not (repo / MARKER).exists()
    subprocess.run(["dvc", "push", "-q"], cwd=repo, env=tool_env(), check=True)  # DVC rebuilds what it needs
    assert subprocess.run(["dvc", "status", "-c"], cwd=repo, env=tool_env(), capture_output=True, text=True,
                          check=True).stdout.strip().endswith("are in sync.")
