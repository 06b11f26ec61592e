"""`ImaginedEnv` as a gymnasium `VectorEnv`, so other RL libraries' trainers and evaluators run
inside the frozen world model unchanged.

Conventions are gymnasium's, not ours: observations are uint8 HWC frames (the frozen model's
[-1, 1] CHW tensors, converted), actions float32 in the robot's bounds, reward 1.0 on a step the
success detector calls successful (World4RL's sparse success reward), info carries "success",
"success_prob" and the model's "uncertainty" per env. An imagined episode lasts `horizon` steps and
then truncates; success does not terminate it (Meta-World's convention, and how our evaluation
counts success: anywhere in the episode). All envs start and end together (ImaginedEnv resets its
whole batch), so autoreset is NEXT_STEP for the whole batch: the step after a truncation resets
every env and ignores the actions.
"""

from __future__ import annotations

from typing import Any

import numpy as np
import torch
from gymnasium import spaces
from gymnasium.vector import AutoresetMode, VectorEnv
from gymnasium.vector.utils import batch_space

from w4rl_core.imagine.env import ImaginedEnv


def to_uint8_hwc(frames: torch.Tensor) -> np.ndarray:
    """(n,3,H,W) in [-1,1] -> (n,H,W,3) uint8."""
    return ((frames.float() + 1) * 127.5).round().clamp(0, 255).to(torch.uint8).permute(0, 2, 3, 1).cpu().numpy()


class ImaginedVectorEnv(VectorEnv):
    metadata = {"autoreset_mode": AutoresetMode.NEXT_STEP}

    def __init__(self, env: ImaginedEnv, horizon: int) -> None:
        if horizon < 1:
            raise ValueError(f"horizon must be >= 1, got {horizon}")
        self.env, self.horizon = env, horizon
        self.num_envs = env.n_envs
        _, h, w = env.observation_shape
        self.single_observation_space = spaces.Box(0, 255, (h, w, 3), np.uint8)
        self.single_action_space = spaces.Box(env.action_low.cpu().numpy(), env.action_high.cpu().numpy(),
                                              dtype=np.float32)
        self.observation_space = batch_space(self.single_observation_space, self.num_envs)
        self.action_space = batch_space(self.single_action_space, self.num_envs)
        self._t = 0
        self._needs_reset = True
        self._episode_seed = 0

    def reset(self, *, seed: int | None = None, options: dict[str, Any] | None = None) -> tuple[np.ndarray, dict]:
        super().reset(seed=seed)
        self._episode_seed = int(self.np_random.integers(2**31)) if seed is None else int(seed)
        starts = None if options is None else options.get("starts")
        obs = self.env.reset(self._episode_seed, starts=starts)
        self._t, self._needs_reset = 0, False
        return to_uint8_hwc(obs), {}

    def step(self, actions: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray, dict]:
        n = self.num_envs
        if self._needs_reset:  # NEXT_STEP autoreset: this step starts new episodes, actions unused
            self._episode_seed += 1
            obs = self.env.reset(self._episode_seed)
            self._t, self._needs_reset = 0, False
            return to_uint8_hwc(obs), np.zeros(n), np.zeros(n, bool), np.zeros(n, bool), {}
        actions = np.asarray(actions, dtype=np.float32)
        if actions.shape != self.action_space.shape:
            raise ValueError(f"actions have shape {actions.shape}; this env takes {self.action_space.shape}")
        obs, info = self.env.step(torch.from_numpy(actions))
        self._t += 1
        truncated = np.full(n, self._t >= self.horizon)
        self._needs_reset = bool(truncated[0])
        success = info["success"].cpu().numpy().astype(bool)
        out_info = {"success": success, "success_prob": info["reward"].float().cpu().numpy(),
                    "uncertainty": info["uncertainty"].float().cpu().numpy()}
        return to_uint8_hwc(obs), success.astype(np.float64), np.zeros(n, bool), truncated, out_info
