"""The DAG with its policies acting on a robot behind the bridge protocol: `w4rl robot serve` (the
simulator, placing the scenes asked for) on 127.0.0.1 stands in for hardware, and `dvc repro` with
robot.kind bridge runs BC's rollouts and the evaluation through it. The stages never learn what is
behind the bridge; the gate reads that evaluation as it reads the simulator's."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import time
from pathlib import Path

import httpx
import numpy as np
import pytest
import yaml

from conftest import free_port
from pipelines.sandbox import tool_env
from w4rl_core.data.store import EpisodeStore

pytestmark = pytest.mark.slow

TASK = "door-lock-v3"
TOKEN = "bridge-pipeline-token-0123456789"


def _serve(repo: Path, port: int, env: dict[str, str]) -> subprocess.Popen:
    proc = subprocess.Popen(["w4rl", "robot", "serve", "--task", TASK, "--port", str(port)], cwd=repo, env=env,
                            stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True, start_new_session=True)
    deadline = time.monotonic() + 120
    while time.monotonic() < deadline:
        try:
            if httpx.get(f"http://127.0.0.1:{port}/info", headers={"Authorization": f"Bearer {TOKEN}"}).is_success:
                return proc
        except httpx.TransportError:
            pass
        assert proc.poll() is None, proc.stderr.read()
        time.sleep(0.5)
    raise AssertionError("the bridge did not come up")


@pytest.mark.timeout(900)
def test_from_imagination_alone_on_a_robot_behind_the_bridge_no_real_episode_runs_and_the_gate_reads_it(
        tiny_run, tmp_path):
    """The method's mode (select_by_real off) with the trust check refusing (no held-out BC rollout
    to check against, unchecked: stop), and the policies acting on the bridge robot: BC's rollouts
    through the bridge are the simulator's, refine returns BC's weights having run no
    real episode, the evaluation runs through the bridge, and the gate names why nothing improved."""
    from safetensors.torch import load_file

    repo = tiny_run.copy(tmp_path / "repo")
    reference = tiny_run.repo
    params = yaml.safe_load((repo / "params.yaml").read_text())
    port = free_port()
    params["robot"] = {"kind": "bridge", "urls": {TASK: f"http://127.0.0.1:{port}"}}
    params["refine"]["ppo"]["select_by_real"] = False  # refused with a bridge robot, and not the method
    params["refine"]["trust"] = {"unchecked": "stop"}
    (repo / "params.yaml").write_text(yaml.safe_dump(params, sort_keys=False))
    env = tool_env() | {"W4RL_ROBOT_TOKEN": TOKEN}
    server = _serve(repo, port, env)
    try:
        out = subprocess.run(["dvc", "repro"], cwd=repo, env=env, capture_output=True, text=True, timeout=800)
    finally:
        os.killpg(server.pid, signal.SIGTERM)
        server.wait(30)
    assert out.returncode == 0, out.stdout + out.stderr
    for stage in (f"collect_policy@{TASK}", f"refine@{TASK}", "evaluate", "gate"):
        assert f"Running stage '{stage}'" in out.stdout, stage
    # BC's rollouts through the bridge are the simulator's own, array for array and scene for scene.
    # The store records where it came from (collector bridge, the robot's URL), so DVC rightly
    # retrains what learns from it; the token is never recorded.
    rollouts = f"data/episodes/rollouts/{TASK}/policy.zarr"
    bridged, simulated = EpisodeStore.open(repo / rollouts), EpisodeStore.open(reference / rollouts)
    assert bridged.episode_scene == simulated.episode_scene
    for key in ("data/rgb", "data/action", "data/success", "data/state", "meta/episode_ends"):
        np.testing.assert_array_equal(bridged.array(key)[:], simulated.array(key)[:], err_msg=key)
    for store in (rollouts, f"data/eval/{TASK}/bc.zarr"):
        attrs = json.loads((repo / store / "zarr.json").read_text())["attributes"]
        assert attrs["source"]["collector"] == "bridge" and TOKEN not in json.dumps(attrs), store

    # Imagination alone: no real episode between BC and the evaluation; untrusted, so BC comes back.
    record = json.loads((repo / f"metrics/refine/{TASK}.json").read_text())
    assert record["selection_scenes"] == [] and record["trust"]["passed"] is False
    (seed,) = record["seeds"]
    assert seed["real_episodes_used"] == 0 and seed["selected_iteration"] == 0 and "fewer than" in seed["stopped"]
    assert "first seed" in record["candidate_rule"]
    bc = load_file(repo / f"data/models/bc/{TASK}/model.safetensors")
    kept = load_file(repo / f"data/models/refined/{TASK}/seeds/seed0/model.safetensors")
    assert bc.keys() == kept.keys() and all(bc[k].equal(kept[k]) for k in bc)

    # BC's evaluation through the bridge (its own weights, the same scenes asked for) equals the
    # in-process one, scene ids as the robot reported them, checked against the training scenes.
    task, ref_task = (json.loads((r / "metrics/policy.json").read_text())["per_task"][TASK] for r in (repo, reference))
    assert task["bc"] == ref_task["bc"] and task["scenes"] == ref_task["scenes"]
    assert task["scenes"]["overlap_training"] == 0
    assert task["real_episodes_used"] == 0 and task["uplift"] == 0.0 and task["trust"]["passed"] is False
    # The gate read that evaluation as it reads the simulator's.
    rules = json.loads((repo / "metrics/gate.json").read_text())["tasks"][TASK]["rules"]
    (gain,) = [r for r in rules if r["rule"] == "refinement_gave_something"]
    assert "refinement did not start" in gain["reason"]
