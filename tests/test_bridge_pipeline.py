"""The DAG as a team with its own robot runs it: the demos imported from a LeRobot dataset (`dvc add`ed,
stage `import@<task>-<kind>`, episodes of different lengths) under a task name Meta-World does not know, and the policies acting on
a robot behind the bridge protocol. `w4rl robot serve --serve-as` (the simulator, placing the scenes
asked for) on 127.0.0.1 stands in for hardware; no stage process can import Meta-World. The stages
never learn what is behind the bridge; the gate reads that evaluation as it reads the simulator's."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import httpx
import pytest
import yaml

from conftest import free_port
from pipelines.params import load_params
from pipelines.sandbox import make_sandbox, tool_env
from w4rl_core.data.store import EpisodeStore

pytestmark = pytest.mark.slow

SIMULATED = "door-lock-v3"  # what stands behind the bridge
TASK = "arm-lock"  # the name the team's robot and data go by
TOKEN = "bridge-pipeline-token-0123456789"


def _serve(repo: Path, port: int, env: dict[str, str]) -> subprocess.Popen:
    proc = subprocess.Popen(["w4rl", "robot", "serve", "--task", SIMULATED, "--serve-as", TASK, "--port", str(port)],
                            cwd=repo, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True,
                            start_new_session=True)
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


#: Recorded episodes end when the operator stops recording: the demos' lengths vary (the profile's
#: episode_len is 50; the BC rollouts and the evaluation on the robot keep it).
LENGTHS = (50, 41, 50, 33, 46)  # expert x4, random x1


def _recorded_dataset(repo: Path, out: Path) -> None:
    """The team's recordings: the tiny profile's demos of the simulated task (their own training
    scenes), cut to LENGTHS, both kinds in one LeRobot v3.0 dataset, frames kept exactly (lossless)."""
    from pipelines.stages import collect as stage
    from w4rl_core.data.episode import Episode
    from w4rl_core.data.lerobot import export_lerobot

    params = load_params(repo / "params.yaml")
    stores = []
    for kind in ("expert", "random"):
        stage.run(params, SIMULATED, kind, str(out.parent / f"{kind}.zarr"), progress=False)
        stores.append(EpisodeStore.open(out.parent / f"{kind}.zarr"))
    episodes = [s.episode(i) for s in stores for i in range(s.n_episodes)]
    both = EpisodeStore.create(out.parent / "both.zarr", stores[0].layout)
    both.append(Episode(task=e.task, kind=e.kind, rgb=e.rgb[:n], action=e.action[:n], reward=e.reward[:n],
                        success=e.success[:n], state=e.state[:n], scene=e.scene) for e, n in zip(episodes, LENGTHS))
    export_lerobot(out.parent / "both.zarr", out, lossless=True)


@pytest.mark.timeout(900)
def test_own_robot_imported_demos_and_bridge_no_metaworld_in_any_stage_and_the_gate_reads_it(tmp_path):
    """Imported demos under a task name of the team's own; BC's rollouts and the evaluation on the
    bridge robot; the method's mode (select_by_real off) with the trust check refusing (no held-out BC
    rollout to check against, unchecked: stop): refine returns BC having run no real episode, and the
    gate names why nothing improved."""
    from safetensors.torch import load_file

    repo = make_sandbox(tmp_path, "tiny")
    dataset = repo / "data/raw" / TASK
    _recorded_dataset(repo, tmp_path / "recorded" / "lerobot")
    dataset.parent.mkdir(parents=True)
    os.rename(tmp_path / "recorded" / "lerobot", dataset)
    subprocess.run(["dvc", "add", "-q", str(dataset.relative_to(repo))], cwd=repo, env=tool_env(), check=True)

    params = yaml.safe_load((repo / "params.yaml").read_text())
    port = free_port()
    params["collect"] |= {"tasks": [TASK], "simulate": [], "imported": {
        "kinds": ["expert", "random"], "root": "data/raw",
        "mapping": {"camera": "observation.images.corner2", "action_low": [-1.0] * 4, "action_high": [1.0] * 4}}}
    params["robot"] = {"kind": "bridge", "urls": {TASK: f"http://127.0.0.1:{port}"}}
    params["refine"]["ppo"]["select_by_real"] = False  # refused with a bridge robot, and not the method
    params["refine"]["trust"] = {"unchecked": "stop"}
    (repo / "params.yaml").write_text(yaml.safe_dump(params, sort_keys=False))

    # Meta-World cannot be imported by any stage: a package of that name first on the path refuses.
    blocker = tmp_path / "no-metaworld" / "metaworld"
    blocker.mkdir(parents=True)
    (blocker / "__init__.py").write_text("raise ImportError('a stage imported Meta-World')\n")
    stages_env = tool_env() | {"W4RL_ROBOT_TOKEN": TOKEN, "PYTHONPATH": str(blocker.parent)}
    probe = subprocess.run([sys.executable, "-c", "import metaworld"], env=stages_env, capture_output=True, text=True)
    assert "a stage imported Meta-World" in probe.stderr

    server = _serve(repo, port, tool_env() | {"W4RL_ROBOT_TOKEN": TOKEN})
    try:
        out = subprocess.run(["dvc", "repro"], cwd=repo, env=stages_env, capture_output=True, text=True, timeout=800)
    finally:
        os.killpg(server.pid, signal.SIGTERM)
        server.wait(30)
    assert out.returncode == 0, out.stdout[-6000:] + out.stderr[-3000:]
    for stage in (f"import@{TASK}-expert", f"import@{TASK}-random", f"collect_policy@{TASK}", "train_world_model",
                  f"refine@{TASK}", "evaluate", "gate"):
        assert f"Running stage '{stage}'" in out.stdout, stage
    assert "Running stage 'collect@" not in out.stdout

    # The demos are the recorded dataset's, under the team's task name; the lock ties them to it.
    experts = EpisodeStore.open(repo / f"data/episodes/demos/{TASK}/expert.zarr")
    assert experts.n_episodes == 4 and set(experts.episode_task) == {TASK} and set(experts.episode_kind) == {"expert"}
    assert experts.episode_lengths.tolist() == list(LENGTHS[:4])
    assert experts.attrs["source"]["format"] == "lerobot" and experts.attrs["source"]["root"] == f"data/raw/{TASK}"
    lock = yaml.safe_load((repo / "dvc.lock").read_text())["stages"]
    assert any(d["path"] == f"data/raw/{TASK}" for d in lock[f"import@{TASK}-expert"]["deps"])
    # BC's rollouts and the evaluation went through the bridge; the token is recorded nowhere.
    for store in (f"data/episodes/rollouts/{TASK}/policy.zarr", f"data/eval/{TASK}/bc.zarr"):
        attrs = json.loads((repo / store / "zarr.json").read_text())["attributes"]
        assert attrs["source"]["collector"] == "bridge" and TOKEN not in json.dumps(attrs), store
        assert set(EpisodeStore.open(repo / store).episode_task) == {TASK}

    # Imagination alone: no real episode between BC and the evaluation; untrusted, so BC comes back.
    record = json.loads((repo / f"metrics/refine/{TASK}.json").read_text())
    assert record["selection_scenes"] == [] and record["trust"]["passed"] is False
    (seed,) = record["seeds"]
    assert seed["real_episodes_used"] == 0 and seed["selected_iteration"] == 0 and "fewer than" in seed["stopped"]
    assert "first seed" in record["candidate_rule"]
    bc = load_file(repo / f"data/models/bc/{TASK}/model.safetensors")
    kept = load_file(repo / f"data/models/refined/{TASK}/seeds/seed0/model.safetensors")
    assert bc.keys() == kept.keys() and all(bc[k].equal(kept[k]) for k in bc)

    # The evaluation ran on the scenes the robot reported, checked against the training scenes
    # (the imported demos' and the bridged rollouts'); the gate read it as it reads the simulator's.
    task = json.loads((repo / "metrics/policy.json").read_text())["per_task"][TASK]
    assert task["bc"]["episodes"] == 1 and task["scenes"]["distinct"] == 1 and task["scenes"]["overlap_training"] == 0
    assert task["real_episodes_used"] == 0 and task["uplift"] == 0.0 and task["trust"]["passed"] is False
    rules = json.loads((repo / "metrics/gate.json").read_text())["tasks"][TASK]["rules"]
    (gain,) = [r for r in rules if r["rule"] == "refinement_gave_something"]
    assert "refinement did not start" in gain["reason"]
