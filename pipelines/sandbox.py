"""A scratch copy of the project as its own git + DVC repository, for tests and benchmarks that run
the real `dvc repro` or the real flow without touching the working tree's data, locks or registry."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
PROFILES = ROOT / "profiles"


def tool_env() -> dict[str, str]:
    """The environment for `dvc`/`w4rl` subprocesses: this interpreter's bin first, no telemetry."""
    bin_dir = Path(sys.executable).parent
    return os.environ | {"PATH": f"{bin_dir}{os.pathsep}{os.environ['PATH']}", "DVC_NO_ANALYTICS": "1",
                         "PREFECT_SERVER_ANALYTICS_ENABLED": "false", "DO_NOT_TRACK": "1"}


def make_sandbox(dest: Path, profile: str = "tiny") -> Path:
    """dest/repo: the code, dvc.yaml and profiles/<profile>.yaml as params.yaml; git and DVC initialised."""
    repo = Path(dest) / "repo"
    repo.mkdir(parents=True)
    for name in ("w4rl_core", "pipelines"):
        shutil.copytree(ROOT / name, repo / name, ignore=shutil.ignore_patterns("__pycache__"))
    shutil.copy(ROOT / "dvc.yaml", repo / "dvc.yaml")
    shutil.copy(ROOT / ".gitignore", repo / ".gitignore")  # what the project commits and what it does not
    shutil.copy(PROFILES / f"{profile}.yaml", repo / "params.yaml")
    (repo / "data/flywheel").mkdir(parents=True)  # a dependency of the training stages (docs/flywheel.md)
    shutil.copy(ROOT / "data/flywheel/README.md", repo / "data/flywheel/README.md")
    subprocess.run(["git", "init", "-q"], cwd=repo, check=True)
    subprocess.run(["dvc", "init", "-q"], cwd=repo, check=True, env=tool_env())
    return repo
