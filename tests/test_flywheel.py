"""Two rounds of the data flywheel on the tiny profile, with real processes: round 0 is the
session's tiny run; its promotion and its feeding back (`w4rl flywheel advance`), killed at a random
moment, then resumed by `w4rl flywheel run`; then round 1, whole. Checked: round 1 trains on round
0's evaluation episodes (exactly once each), evaluates on scenes no training episode has, fine-tunes
round 0's world model; lineage names both rounds."""

from __future__ import annotations

import json
import os
import random
import signal
import subprocess
import time
from pathlib import Path

import pytest
import yaml

from pipelines.sandbox import tool_env
from w4rl_core.data.flywheel import tree_digest
from w4rl_core.data.store import EpisodeStore

pytestmark = pytest.mark.slow

TASK = "door-lock-v3"
SEED = int(os.environ.get("W4RL_KILL_SEED") or time.time_ns() % 2**31)


def _env() -> dict[str, str]:
    return tool_env() | {"GIT_AUTHOR_NAME": "t", "GIT_AUTHOR_EMAIL": "t@t", "GIT_COMMITTER_NAME": "t",
                         "GIT_COMMITTER_EMAIL": "t@t"}


def _w4rl(repo: Path, *args: str, check: bool = True) -> subprocess.CompletedProcess:
    result = subprocess.run(["w4rl", *args], cwd=repo, env=_env(), capture_output=True, text=True, timeout=600)
    assert not check or result.returncode == 0, f"w4rl {' '.join(args)}:\n{result.stdout[-4000:]}\n{result.stderr[-4000:]}"
    return result


def _git(repo: Path, *args: str) -> str:
    return subprocess.run(["git", *args], cwd=repo, env=_env(), check=True, capture_output=True, text=True).stdout


def _scenes(paths) -> set[str]:
    return {s for p in paths for s in EpisodeStore.open(p).episode_scene}


@pytest.mark.timeout(900)
def test_two_rounds_feed_evaluation_back_fine_tune_and_resume_a_killed_advance(tiny_run, tmp_path):
    repo = tiny_run.copy(tmp_path / "repo")
    # Refinement from imagination alone (the method), so that each round's policy is new weights (the
    # tiny run's real checks, one episode each, keep the start policy on a tie): round 0 re-refined.
    params = yaml.safe_load((repo / "params.yaml").read_text())
    params["refine"]["ppo"]["select_by_real"] = False
    (repo / "params.yaml").write_text(yaml.safe_dump(params, sort_keys=False))
    repro = subprocess.run(["dvc", "repro"], cwd=repo, env=_env(), capture_output=True, text=True, timeout=600)
    assert repro.returncode == 0, repro.stdout[-3000:] + repro.stderr[-2000:]
    _git(repo, "commit", "-qam", "round 0 from imagination alone")
    evaluated = sorted((repo / "data/eval" / TASK).glob("*.zarr"))
    digests = {p.stem: tree_digest(p) for p in evaluated}
    collected = sorted((repo / "data/episodes").glob(f"*/{TASK}/*.zarr"))
    _w4rl(repo, "promote")

    # Round 0 fed back, killed at a random moment of `w4rl flywheel advance`, then resumed.
    rng = random.Random(SEED)
    delay = rng.uniform(0.5, 8.0)
    proc = subprocess.Popen(["w4rl", "flywheel", "advance"], cwd=repo, env=_env(), stdout=subprocess.DEVNULL,
                            stderr=subprocess.DEVNULL, start_new_session=True)
    try:
        proc.wait(delay)
        how = f"finished (exit {proc.returncode}) before the kill at {delay:.1f} s"
    except subprocess.TimeoutExpired:
        os.killpg(proc.pid, signal.SIGKILL)
        proc.wait(30)
        how = f"killed at {delay:.1f} s"
    if (repo / ".git/index.lock").exists():  # killed inside `git add`/`git commit`: git's own lock,
        (repo / ".git/index.lock").unlink()   # which git documents removing by hand after a crash
        how += " (inside git: its index.lock removed)"
    committed = yaml.safe_load(_git(repo, "show", "HEAD:params.yaml"))["flywheel"]["round"] == 1
    print(f"W4RL_KILL_SEED={SEED}: advance {how}{'; it had committed' if committed else ''}")
    if not committed:  # finish round 0's feeding back (and nothing else: that is the round)
        _w4rl(repo, "flywheel", "run", "--rounds", "1")
    params = yaml.safe_load((repo / "params.yaml").read_text())
    assert params["flywheel"]["round"] == 1, how
    assert not _git(repo, "status", "--porcelain", "--untracked-files=no"), how
    fed = repo / "data/flywheel/rounds" / TASK / "round-0"
    manifest = json.loads((repo / "data/flywheel/manifests/round-0.json").read_text())
    entry = manifest["tasks"][TASK]
    # Each distinct store once, unchanged; one holding the same episodes as another is named, not copied.
    unique = {name: d for name, d in digests.items() if name not in {n for n, s in entry["stores"].items()
                                                                      if "same_as" in s}}
    assert {p.stem: tree_digest(p) for p in fed.glob("*.zarr")} == unique and len(set(unique.values())) == len(unique)
    assert {s["digest"] for s in entry["stores"].values()} == set(digests.values()), how
    assert sum(s.get("episodes", 0) for s in entry["stores"].values()) == sum(
        EpisodeStore.open(fed / f"{name}.zarr").n_episodes for name in unique)
    promoted_0 = entry["promoted"]
    assert promoted_0 and manifest["run_commit"] == _git(repo, "rev-parse", "HEAD~1").strip()
    # What round 1 starts from: round 0's world model, byte for byte.
    assert tree_digest(repo / "data/flywheel/init/world_model") == tree_digest(tiny_run.repo / "data/models/world_model")

    # Round 1, whole.
    out = _w4rl(repo, "flywheel", "run", "--rounds", "1")
    assert "Running stage 'train_world_model'" in out.stdout + out.stderr
    meta = json.loads((repo / "data/models/world_model/config.json").read_text())["meta"]
    assert meta["init_from"] == "data/flywheel/init/world_model" and meta["flywheel_round"] == 1
    training = meta["training"]
    assert training["train_episodes"] + training["val_episodes"] == \
        sum(EpisodeStore.open(p).n_episodes for p in collected) + sum(s.get("episodes", 0) for s in entry["stores"].values())
    reward = json.loads((repo / f"dvclive/reward/{TASK}/metrics.json").read_text())
    assert reward["init_from"] == f"data/flywheel/init/reward/{TASK}"
    refine = json.loads((repo / f"metrics/refine/{TASK}.json").read_text())
    assert refine["started_from"] == f"data/flywheel/init/policy/{TASK}"
    # Round 1's evaluation: fresh scenes, none of them a training scene (demos, rollouts, round 0's).
    second = json.loads((repo / "data/flywheel/manifests/round-1.json").read_text())["tasks"][TASK]
    round_1_scenes = {s for store in second["stores"].values() for s in store.get("scenes", [])}
    assert round_1_scenes and not round_1_scenes & (_scenes(collected) | _scenes(fed.glob("*.zarr")))
    assert "previous" in second["stores"] and second["policies"]["previous"] == promoted_0
    policy = json.loads((repo / "metrics/policy.json").read_text())["per_task"][TASK]
    assert policy["scenes"]["overlap_training"] == 0 and policy["previous"]["policy_id"] == promoted_0
    gate = json.loads((repo / "metrics/gate.json").read_text())["tasks"][TASK]
    assert any(r["rule"] == "data_drift" and "fed-back episodes" in r["reason"] for r in gate["rules"])
    log = _git(repo, "log", "--format=%s")
    assert log.count("flywheel round") == 1 and log.count("flywheel: round") == 2  # round 1's run; 2 advances

    # Lineage: the round-1 policy <- data v1 (round 0's evaluation episodes) <- round 0's policy.
    promoted_1 = second["promoted"]
    assert promoted_1 != promoted_0  # a new policy (refined from round 0's), promoted by the tiny gate
    lineage = _w4rl(repo, "lineage", promoted_1).stdout
    assert "trained on data version 1" in lineage and f"policy promoted in round 0: {promoted_0}" in lineage
    fed_episodes = sum(s.get("episodes", 0) for s in entry["stores"].values())
    assert f"data v1 = data v0 + round 0's {fed_episodes} evaluation episodes" in lineage, lineage
