"""BC rollouts and evaluation episodes through the bridge: the simulator served on 127.0.0.1 as a
stand-in for hardware, placing the scenes the pipeline asks for; the stages do not know what is
behind it."""

from __future__ import annotations

import functools

import numpy as np
import pytest

from conftest import free_port
from w4rl_core.data.collect import CollectConfig, collect
from w4rl_core.data.store import EpisodeStore
from w4rl_core.robots.bridge import BridgeServer
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


def test_a_robot_that_cannot_tell_success_is_refused_not_recorded_as_failure(tmp_path, monkeypatch):
    class Unsure:
        def __init__(self, robot):
            self._robot = robot

        def __getattr__(self, name):
            return getattr(self._robot, name)

        def step(self, action):
            obs, info = self._robot.step(action)
            return obs, {"reward": info["reward"], "success": None}

    robot = MetaWorldConfig(task=TASK, image_size=16)
    server = BridgeServer(lambda: Unsure(PoolPlacedRobot(MetaWorldRobot(robot), POOLS)), TOKEN, "127.0.0.1",
                          free_port()).start()
    monkeypatch.setenv("W4RL_ROBOT_TOKEN", TOKEN)
    try:
        with pytest.raises(RuntimeError, match="reported no success at step 1"):
            collect(_config(robot_url=server.url, scene_role="evaluation"), tmp_path / "u.zarr",
                    policy_factory=functools.partial(_seeded), progress=False)
    finally:
        server.stop()
    assert not (tmp_path / "u.zarr").exists()
