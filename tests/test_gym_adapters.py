"""The imagined env as a gymnasium VectorEnv and a robot as a gymnasium Env: what other RL
libraries' evaluators check, on the real simulator and a tiny real world model."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from gymnasium.utils.env_checker import check_env

from test_world_model import _config, _smooth_episode  # noqa: F401  (shared tiny fixtures)
from conftest import tiny_layout
from w4rl_core.data.store import EpisodeStore
from w4rl_core.data.windows import load_windows
from w4rl_core.imagine.env import ImaginedEnv
from w4rl_core.imagine.vector_env import ImaginedVectorEnv
from w4rl_core.models.world_model import WorldModel
from w4rl_core.robots.gym_env import RobotEnv
from w4rl_core.robots.metaworld_robot import MetaWorldConfig, MetaWorldRobot


def test_robot_env_passes_gymnasiums_checker_and_seeds_like_collection():
    robot = MetaWorldRobot(MetaWorldConfig(task="door-lock-v3", image_size=16))
    env = RobotEnv(robot, image_size=16, state_dim=robot.state_dim, max_episode_steps=3)
    check_env(env, skip_render_check=True)
    first, info = env.reset(seed=7)
    assert info["episode_seed"] == 7 and env.observation_space.contains(first)
    again, _ = env.reset(seed=7)
    assert np.array_equal(first["rgb"], again["rgb"])  # same seed, same scene and goal
    for t in range(3):
        obs, reward, terminated, truncated, info = env.step(env.action_space.sample())
        assert isinstance(info["success"], bool) and not terminated and truncated == (t == 2)
    env.close()


def test_robot_env_names_a_frame_that_does_not_match_its_space():
    robot = MetaWorldRobot(MetaWorldConfig(task="door-lock-v3", image_size=16))
    env = RobotEnv(robot, image_size=32, state_dim=robot.state_dim, max_episode_steps=3)
    with pytest.raises(ValueError, match=r"door-lock-v3: the robot sent a frame of shape \(16, 16, 3\)"):
        env.reset(seed=0)
    env.close()


@pytest.fixture(scope="module")
def imagined(tmp_path_factory):
    path = tmp_path_factory.mktemp("vec") / "s.zarr"
    EpisodeStore.create(path, tiny_layout()).append(_smooth_episode(i) for i in range(4))
    train, _ = load_windows([str(path)], image_size=16, val_fraction=0.0, seed=0)
    torch.manual_seed(0)
    return ImaginedEnv(WorldModel(_config()), train, n_envs=3)


def test_imagined_vector_env_steps_truncates_and_autoresets(imagined):
    env = ImaginedVectorEnv(imagined, horizon=2)
    obs, _ = env.reset(seed=0)
    assert obs.shape == (3, 16, 16, 3) and obs.dtype == np.uint8 and env.observation_space.contains(obs)
    actions = env.action_space.sample()
    obs, reward, terminated, truncated, info = env.step(actions)
    assert env.observation_space.contains(obs) and reward.shape == (3,) and not truncated.any()
    assert set(info) == {"success", "success_prob", "uncertainty"} and info["uncertainty"].shape == (3,)
    _, _, _, truncated, _ = env.step(actions)
    assert truncated.all() and not terminated.any()  # the horizon ends every imagined episode
    obs, reward, _, truncated, info = env.step(actions)  # NEXT_STEP autoreset: new episodes
    assert not truncated.any() and not reward.any() and info == {} and env.observation_space.contains(obs)
    with pytest.raises(ValueError, match=r"actions have shape \(4,\)"):
        env.step(actions[0])


def test_imagined_vector_env_is_reproducible_from_its_seed(imagined):
    env = ImaginedVectorEnv(imagined, horizon=3)
    actions = np.zeros(env.action_space.shape, np.float32)
    runs = []
    for _ in range(2):
        obs, _ = env.reset(seed=5)
        runs.append([obs] + [env.step(actions)[0] for _ in range(2)])
    for a, b in zip(*runs):
        assert np.array_equal(a, b)
