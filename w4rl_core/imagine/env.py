"""ImaginedEnv: the frozen world model as a batched vector env on torch tensors.

Same shape of interface as a robot (reset(seed) -> obs; step(action) -> obs, info with "success"),
batched over n_envs. Imagined episodes start where real ones start: each env begins with the first
T frames (and the T-1 actions between them) of a recorded episode of the task, so that from there
on, an imagined episode of episode_len - T steps covers what a real episode covers and its success
can be compared with real success like for like. `reset_windows` starts them from any T recorded
frames instead (keyframe starts, mid-episode). Observations are frames (n,3,H,W) in [-1,1].

Success comes from a `SuccessDetector` on the new frames (the calibrated success classifier of the
reward stage); without one it is all False. Each step also reports the world model's own
uncertainty per env: the mean absolute distance between the sampled frame and the model's mean
prediction of it (the first denoised estimate; w4rl_core/models/accel.py), at no extra cost.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Protocol

import numpy as np
import torch

from w4rl_core.data.windows import FrameWindows
from w4rl_core.models.accel import AccelConfig, FastSampler
from w4rl_core.models.sampler import SamplerConfig
from w4rl_core.models.world_model import WorldModel


class SuccessFn(Protocol):
    """Frames of one step (n,3,H,W) -> (success (n,) bool, success probability (n,)). Stateful over an
    episode (persistence over frames); reset(n) starts new episodes."""

    def reset(self, n: int, device: torch.device) -> None: ...

    def __call__(self, frames: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]: ...


class ImaginedEnv:
    def __init__(
        self,
        model: WorldModel,
        contexts: FrameWindows,
        n_envs: int,
        sampler: SamplerConfig | None = None,
        success_fn: SuccessFn | None = None,
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
        self.success_fn = success_fn
        self.device = torch.device(device)
        self.t = model.config.context_frames
        self._starts = contexts.first_windows(self.t, tasks)
        if len(self._starts) == 0:
            raise ValueError(f"no real episode (of tasks {tasks}) has T = {self.t} frames to start from")
        self.action_low = torch.tensor(model.config.action_low, device=self.device)
        self.action_high = torch.tensor(model.config.action_high, device=self.device)
        self._frames: torch.Tensor | None = None
        self._actions: torch.Tensor | None = None
        self._gen = torch.Generator(device=self.device)
        # The sampling fast path (bf16, channels_last, compile, CUDA graphs as configured).
        self._sample = FastSampler(self.model, self.sampler, self.device, accel)

    @property
    def accel_label(self) -> str:
        """Which sampling path runs, e.g. 'bfloat16+channels_last+cuda_graphs' (goes into metrics)."""
        return self._sample.label

    @property
    def n_starts(self) -> int:
        return len(self._starts)

    @property
    def observation_shape(self) -> tuple[int, int, int]:
        size = self.model.config.unet.image_size
        return (3, size, size)

    def reset(self, seed: int, starts: np.ndarray | None = None) -> torch.Tensor:
        """New episodes from recorded episode starts: drawn with `seed`, or the given indices into
        them (`starts`, length n_envs; evaluation walks through them in order)."""
        rng = np.random.default_rng(seed)
        pick = rng.integers(len(self._starts), size=self.n_envs) if starts is None else np.asarray(starts)
        if len(pick) != self.n_envs:
            raise ValueError(f"reset got {len(pick)} starts for {self.n_envs} envs")
        return self.reset_windows(seed, self._starts[pick])

    def reset_windows(self, seed: int, window_starts: np.ndarray) -> torch.Tensor:
        """New episodes from any T-frame windows of the recorded episodes (indices into the contexts'
        frame axis, length n_envs): keyframe starts (w4rl_core/imagine/keyframes.py) begin mid-episode."""
        window_starts = np.asarray(window_starts)
        if len(window_starts) != self.n_envs:
            raise ValueError(f"reset got {len(window_starts)} windows for {self.n_envs} envs")
        self._gen.manual_seed(seed)
        frames, actions, _ = self.contexts.gather(window_starts, self.t, self.device)
        self._frames = frames  # (n,T,3,H,W)
        self._actions = actions[:, : self.t - 1]  # the T-1 actions between the context frames
        if self.success_fn is not None:
            self.success_fn.reset(self.n_envs, self.device)
        return frames[:, -1]

    @torch.no_grad()
    def step(self, action: torch.Tensor) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
        """One imagined step for every env: info holds "success" (bool), "reward" (the classifier's
        probability) and "uncertainty" (n,), the model's sample-vs-mean distance in [0, 2]."""
        if self._frames is None:
            raise RuntimeError("reset() first")
        action = torch.as_tensor(action, dtype=torch.float32, device=self.device)
        action = torch.maximum(torch.minimum(action, self.action_high), self.action_low)
        actions = torch.cat([self._actions, action[:, None]], dim=1)
        nxt, mean = self._sample.sample(self._frames, actions, self._gen)
        self._frames = torch.cat([self._frames[:, 1:], nxt[:, None]], dim=1)
        self._actions = actions[:, 1:]
        info = {"uncertainty": (nxt - mean).abs().mean(dim=(1, 2, 3))}
        if self.success_fn is not None:
            info["success"], info["reward"] = self.success_fn(nxt)
        else:
            info["success"] = torch.zeros(self.n_envs, dtype=torch.bool, device=self.device)
            info["reward"] = torch.zeros(self.n_envs, device=self.device)
        return nxt, info
