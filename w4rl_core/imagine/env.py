"""ImaginedEnv: the frozen world model as a batched vector env on torch tensors.

Same shape of interface as a robot (reset(seed) -> obs; step(action) -> obs, info with "success"),
batched over n_envs. Initial states are real: each env starts from T consecutive frames (and the
T-1 actions between them) of a recorded episode. Observations are frames (n,3,H,W) in [-1,1].
Success comes from a reward function of the new frame (the success classifier of the policy
stage); without one it is all False.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence

import numpy as np
import torch

from w4rl_core.data.windows import FrameWindows
from w4rl_core.models.accel import AccelConfig, FastSampler
from w4rl_core.models.sampler import SamplerConfig
from w4rl_core.models.world_model import WorldModel

RewardFn = Callable[[torch.Tensor], torch.Tensor]  # frames (n,3,H,W) -> success probability (n,)


class ImaginedEnv:
    def __init__(
        self,
        model: WorldModel,
        contexts: FrameWindows,
        n_envs: int,
        sampler: SamplerConfig | None = None,
        reward_fn: RewardFn | None = None,
        tasks: Sequence[str] | None = None,
        device: str | torch.device = "cpu",
        accel: AccelConfig | None = None,
    ) -> None:
        self.model = model.to(device).eval()
        for p in self.model.parameters():  # frozen: refinement must never change the world model
            p.requires_grad_(False)
        self.contexts = contexts
        self.n_envs = n_envs
        self.sampler = sampler or model.config.sampler
        self.reward_fn = reward_fn
        self.device = torch.device(device)
        self.t = model.config.context_frames
        self._starts = contexts.starts(self.t, tasks)
        if len(self._starts) == 0:
            raise ValueError(f"no real episode (of tasks {tasks}) has T = {self.t} frames to start from")
        self.action_low = torch.tensor(model.config.action_low, device=self.device)
        self.action_high = torch.tensor(model.config.action_high, device=self.device)
        self._frames: torch.Tensor | None = None
        self._actions: torch.Tensor | None = None
        self._gen = torch.Generator(device=self.device)
        # The sampling fast path (bf16, channels_last, compile, CUDA graphs as configured); on CPU by
        # default it computes what model.predict computes, with fewer passes per step.
        self._sample = FastSampler(self.model, self.sampler, self.device, accel)

    @property
    def accel_label(self) -> str:
        """Which sampling path runs, e.g. 'bfloat16+channels_last+cuda_graphs' (goes into metrics)."""
        return self._sample.label

    @property
    def observation_shape(self) -> tuple[int, int, int]:
        size = self.model.config.unet.image_size
        return (3, size, size)

    def reset(self, seed: int) -> torch.Tensor:
        rng = np.random.default_rng(seed)
        self._gen.manual_seed(seed)
        starts = self._starts[rng.integers(len(self._starts), size=self.n_envs)]
        frames, actions, _ = self.contexts.gather(starts, self.t, self.device)
        self._frames = frames  # (n,T,3,H,W)
        self._actions = actions[:, : self.t - 1]  # the T-1 actions between the context frames
        return frames[:, -1]

    @torch.no_grad()
    def step(self, action: torch.Tensor, spread_envs: int = 0) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
        """One imagined step. With spread_envs = k > 0, the first k envs' next frame is sampled again
        with other noise and info["disagreement"] holds the mean absolute difference (in [0, 2]):
        the world model's own uncertainty, an early warning when the policy leaves its support."""
        if self._frames is None:
            raise RuntimeError("reset() first")
        action = torch.as_tensor(action, dtype=torch.float32, device=self.device)
        action = torch.maximum(torch.minimum(action, self.action_high), self.action_low)
        actions = torch.cat([self._actions, action[:, None]], dim=1)
        context = self._frames
        nxt = self._sample(context, actions, self._gen)
        info: dict[str, torch.Tensor] = {}
        if spread_envs > 0:
            k = min(spread_envs, self.n_envs)
            other = self._sample(context[:k], actions[:k], self._gen)
            info["disagreement"] = (other - nxt[:k]).abs().mean()
        self._frames = torch.cat([context[:, 1:], nxt[:, None]], dim=1)
        self._actions = actions[:, 1:]
        prob = self.reward_fn(nxt) if self.reward_fn is not None else torch.zeros(self.n_envs, device=self.device)
        info |= {"success": prob > 0.5, "reward": prob}
        return nxt, info
