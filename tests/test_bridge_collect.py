"""BC rollouts and evaluation episodes through the bridge: the simulator served on 127.0.0.1 as a
stand-in for hardware, placing the scenes the pipeline asks for; the stages do not know what is
behind it."""

from __future__ import annotations

import functools
import json
import subprocess
import sys
import threading
import time

import numpy as np
import pytest

from conftest import free_port
from w4rl_core.data.collect import CollectConfig, collect
from w4rl_core.data.store import EpisodeStore
from w4rl_core.atomic import write_json_atomic
from w4rl_core.robots.bridge import BridgeServer
from w4rl_core.robots.labels import (LabelRequest, PromptLabeler, QueueLabeler, UnreportedSuccess, parse_answer,
                                    pending_requests)
from w4rl_core.robots.metaworld_robot import MetaWorldConfig, MetaWorldRobot
from w4rl_core.robots.scenes import SCENE_ROLES, PoolPlacedRobot, ScenePool

TOKEN = "test-token-0123456789abcdef"
TASK = "door-lock-v3"
POOLS = {"training": ScenePool((0,)), "selection": ScenePool((1,)), "evaluation": ScenePool((2,))}


class _SeededPolicy:
    """Actions from the episode seed alone: the same episode in and out of the bridge."""

    def __init__(self, seed: int) -> None:
        self.rng = np.random.default_rng(seed)

    def act(self, obs):
        return self.rng.uniform(-1, 1, 4).astype(np.float32)


def _seeded(robot, seed):
    return _SeededPolicy(seed)


@pytest.fixture(scope="module")
def served():
    cfg = MetaWorldConfig(task=TASK, image_size=16)
    server = BridgeServer(lambda: PoolPlacedRobot(MetaWorldRobot(cfg), POOLS), TOKEN, "127.0.0.1", free_port()).start()
    yield server
    server.stop()


def _config(**robot) -> CollectConfig:
    return CollectConfig(task=TASK, kind="eval", episodes=3, episode_len=6, image_size=16, workers=1, seed=5,
                         scene_seeds=(2,), first_scene=4, **robot)


def test_evaluation_through_the_bridge_records_the_episodes_the_simulator_does(served, tmp_path, monkeypatch):
    monkeypatch.setenv("W4RL_ROBOT_TOKEN", TOKEN)
    collect(_config(), tmp_path / "local.zarr", policy_factory=_seeded, progress=False)
    local = EpisodeStore.open(tmp_path / "local.zarr")
    remote_config = _config(robot_url=served.url, scene_role="evaluation")
    collect(remote_config, tmp_path / "remote.zarr", policy_factory=_seeded, progress=False)
    remote = EpisodeStore.open(tmp_path / "remote.zarr")
    # Scene identity comes from the robot's own report of each reset; it is the scene asked for.
    assert remote.episode_scene == local.episode_scene and len(set(remote.episode_scene)) == 3
    for key in ("data/rgb", "data/action", "data/success", "data/state"):
        np.testing.assert_array_equal(remote.array(key)[:], local.array(key)[:], err_msg=key)
    assert remote.attrs["source"]["collector"] == "bridge" and TOKEN not in str(remote.attrs)


def test_a_bridge_robot_of_another_task_or_without_a_token_is_refused(served, tmp_path, monkeypatch):
    monkeypatch.delenv("W4RL_ROBOT_TOKEN", raising=False)
    with pytest.raises(RuntimeError, match="no bridge token in \\$W4RL_ROBOT_TOKEN"):
        collect(_config(robot_url=served.url, scene_role="evaluation"), tmp_path / "a.zarr", policy_factory=_seeded,
                progress=False)
    monkeypatch.setenv("W4RL_ROBOT_TOKEN", TOKEN)
    other = CollectConfig(task="hammer-v3", kind="eval", episodes=1, episode_len=4, image_size=16, workers=1,
                          robot_url=served.url, scene_role="evaluation")
    with pytest.raises(RuntimeError, match="serves task 'door-lock-v3', not 'hammer-v3'"):
        collect(other, tmp_path / "b.zarr", policy_factory=_seeded, progress=False)
    with pytest.raises(ValueError, match="needs the simulator"):
        CollectConfig(task=TASK, kind="expert", episodes=1, robot_url=served.url, scene_role="training")
    with pytest.raises(ValueError, match="scene_role"):
        CollectConfig(task=TASK, kind="eval", episodes=1, robot_url=served.url)
    assert not list(tmp_path.iterdir())  # nothing written by any refused collection
    # Any task name is accepted with a bridge robot: it is the robot that says what it serves.
    CollectConfig(task="my-arm/stack-cups", kind="policy", episodes=1, robot_url=served.url, scene_role="training")


def test_served_simulator_places_every_role_from_its_own_pool():
    robot = PoolPlacedRobot(MetaWorldRobot(MetaWorldConfig(task=TASK, image_size=16)), POOLS)
    try:
        ids = {}
        for role in SCENE_ROLES:
            robot.reset(0, scene=(role, 3))
            ids[role] = robot.scene_id
        assert len(set(ids.values())) == 3
        with pytest.raises(ValueError, match="no scene pool for role 'nowhere'"):
            robot.reset(0, scene=("nowhere", 0))
    finally:
        robot.close()


def test_a_robot_that_cannot_tell_success_is_refused_or_labelled_by_the_operator(tmp_path, monkeypatch):
    """Without labels an unreported outcome is refused, never recorded as a failure; with
    robot.success queue, `w4rl robot label` (a real process, as an operator would run it) answers
    each episode and the answers become the stored per-frame success."""
    robot = MetaWorldConfig(task=TASK, image_size=16)
    server = BridgeServer(lambda: UnreportedSuccess(PoolPlacedRobot(MetaWorldRobot(robot), POOLS)), TOKEN,
                          "127.0.0.1", free_port()).start()
    monkeypatch.setenv("W4RL_ROBOT_TOKEN", TOKEN)
    labels = tmp_path / "labels"
    answers = ["y", "n", "y 3"]  # episode 0 on its last frame, 1 failed, 2 from step 3 on
    operator = subprocess.Popen(
        ["bash", "-c", " && ".join(f"{sys.executable} -m pipelines robot label --dir {labels} --answer '{a}' "
                                   f"--operator test --wait 120" for a in answers)],
        stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    try:
        with pytest.raises(RuntimeError, match="reported no success at step 1.*robot.success prompt or queue"):
            collect(_config(robot_url=server.url, scene_role="evaluation"), tmp_path / "u.zarr",
                    policy_factory=functools.partial(_seeded), progress=False)
        assert not (tmp_path / "u.zarr").exists()
        queued = _config(robot_url=server.url, scene_role="evaluation", success_from="queue", label_dir=str(labels),
                         label_timeout_s=120)
        summary = collect(queued, tmp_path / "q.zarr", policy_factory=_seeded, progress=False)
        out, _ = operator.communicate(timeout=60)
    finally:
        operator.kill()
        server.stop()
    assert operator.returncode == 0, out
    store = EpisodeStore.open(tmp_path / "q.zarr")
    success = store.array("data/success")[:]
    per_episode = [success[s:e].tolist() for s, e in zip(store.episode_starts, store.episode_ends)]
    assert per_episode == [[0, 0, 0, 0, 0, 1], [0] * 6, [0, 0, 0, 1, 1, 1]]
    assert summary["operator_labelled"] == 3 and store.attrs["source"]["config"]["success_from"] == "queue"
    done = sorted((labels / "done").glob("*.json"))
    assert len(done) == 3 and not list((labels / "pending").glob("*.json"))
    assert {json.loads(p.read_text())["operator"] for p in done} == {"test"}


def test_operator_answers_are_checked_and_an_old_answer_never_labels_a_new_recording(tmp_path):
    assert parse_answer("n", 6) is None and parse_answer(" Y ", 6) == 5 and parse_answer("y 1", 6) == 1
    for bad in ("", "maybe", "y 0", "y 6", "n 3", "y 2 3"):
        with pytest.raises(ValueError, match="give 'n'"):
            parse_answer(bad, 6)
    request = LabelRequest(TASK, "eval", 0, "", 6, 1)
    with pytest.raises(TimeoutError, match="no operator label within 0.3 s"):
        QueueLabeler(tmp_path, timeout_s=0.3, poll_s=0.05).label(request)
    assert not pending_requests(tmp_path)  # a request that timed out is withdrawn

    def stale_then_fresh():
        while not pending_requests(tmp_path):
            time.sleep(0.02)
        waiting = pending_requests(tmp_path)[0]
        stale = LabelRequest(**{**waiting.__dict__, "nonce": "0" * 12})
        write_json_atomic(tmp_path / "answers" / f"{waiting.id}.json", {"nonce": stale.nonce, "answer": "y"})

    thread = threading.Thread(target=stale_then_fresh)
    thread.start()
    with pytest.raises(RuntimeError, match="answer is for another recording"):
        QueueLabeler(tmp_path, timeout_s=30, poll_s=0.05).label(request)
    thread.join()


def test_the_prompt_asks_on_the_terminal_and_again_after_a_typo(tmp_path):
    import os

    master, slave = os.openpty()  # a real terminal pair: the labeler opens it as it opens /dev/tty
    try:
        os.write(master, b"maybe\ny 2\n")
        assert PromptLabeler(os.ttyname(slave)).label(LabelRequest(TASK, "eval", 0, "", 6, 1)) == 2
        asked = os.read(master, 4096).decode()
        assert asked.count("did it succeed?") == 2 and "give 'n'" in asked
    finally:
        os.close(master)
        os.close(slave)
    with pytest.raises(RuntimeError, match="no terminal to ask on"):
        PromptLabeler(tmp_path / "no-tty").label(LabelRequest(TASK, "eval", 0, "", 6, 1))
