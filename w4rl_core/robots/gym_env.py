"""Any `Robot` (the simulator, a bridged real robot) as a gymnasium `Env`, so other libraries'
evaluators and agents drive it.

Observations are a Dict of the camera frame (uint8 HWC) and the low-dimensional state; reward is
the robot's; success is in info and does not end the episode (Meta-World's convention); episodes
truncate after `max_episode_steps`. A seed passed to reset() is passed to `Robot.reset(seed)`: on
the simulator that draws a variation of its own benchmark from the seed (with replacement), not the
pipeline's scene pools (w4rl_core/robots/scenes.py), which collection and evaluation use.
"""

from __future__ import annotations

from typing import Any

import gymnasium as gym
import numpy as np
from gymnasium import spaces

from w4rl_core.robots.protocol import Observation, Robot


class RobotEnv(gym.Env):
    metadata = {"render_modes": []}

    def __init__(self, robot: Robot, image_size: int, state_dim: int, max_episode_steps: int) -> None:
        if min(image_size, state_dim, max_episode_steps) < 1:
            raise ValueError("image_size, state_dim and max_episode_steps must be >= 1")
        self.robot, self.max_episode_steps = robot, max_episode_steps
        self.observation_space = spaces.Dict({
            "rgb": spaces.Box(0, 255, (image_size, image_size, 3), np.uint8),
            "state": spaces.Box(-np.inf, np.inf, (state_dim,), np.float32),
        })
        self.action_space = spaces.Box(np.asarray(robot.action_low, np.float32),
                                       np.asarray(robot.action_high, np.float32), dtype=np.float32)
        self._t = 0

    def _obs(self, obs: Observation) -> dict[str, np.ndarray]:
        rgb = np.asarray(obs.rgb, dtype=np.uint8)
        if rgb.shape != self.observation_space["rgb"].shape:
            raise ValueError(f"{self.robot.task}: the robot sent a frame of shape {rgb.shape}; "
                             f"this env declares {self.observation_space['rgb'].shape}")
        return {"rgb": rgb, "state": np.asarray(obs.state, dtype=np.float32)}

    def reset(self, *, seed: int | None = None, options: dict[str, Any] | None = None) -> tuple[dict, dict]:
        super().reset(seed=seed)
        episode_seed = int(self.np_random.integers(2**31)) if seed is None else int(seed)
        self._t = 0
        return self._obs(self.robot.reset(episode_seed)), {"episode_seed": episode_seed}

    def step(self, action: np.ndarray) -> tuple[dict, float, bool, bool, dict]:
        obs, info = self.robot.step(np.asarray(action, dtype=np.float32))
        self._t += 1
        return (self._obs(obs), float(info["reward"]), False, self._t >= self.max_episode_steps,
                {"success": bool(info["success"])})

    def close(self) -> None:
        self.robot.close()
