"""The one interface for everything that acts: simulator, imagined env, remote robot.

Evaluation and collection code drive a ``Robot`` without knowing which backend it is.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, NamedTuple, Protocol, runtime_checkable

import numpy as np


@dataclass
class Observation:
    """What a policy sees at one step."""

    rgb: np.ndarray  # (H, W, 3) uint8, upright
    state: np.ndarray  # (S,) float32 proprioception / low-dim observation


class SceneRequest(NamedTuple):
    """Which scene a robot that places its own scenes should set up: scene `index` of its list for
    `role` (training | selection | evaluation). The pipeline asks for the same (role, index) for every
    policy it evaluates, so the episodes pair by scene; the robot reports the identity of the scene
    it actually set up (its `scene_id` after reset), and the pipeline checks those ids, never trusts
    the indices (docs/own-robot.md#the-bridge-protocol)."""

    role: str
    index: int


@runtime_checkable
class Robot(Protocol):
    task: str
    action_low: np.ndarray
    action_high: np.ndarray

    def reset(self, seed: int) -> Observation: ...

    def step(self, action: np.ndarray) -> tuple[Observation, dict[str, Any]]:
        """Apply one action; ``info`` holds at least ``success`` (bool) and ``reward`` (float)."""
        ...

    def close(self) -> None: ...


@runtime_checkable
class Policy(Protocol):
    """Anything that maps an observation to an action; collection kind ``policy`` takes one."""

    def act(self, obs: Observation) -> np.ndarray: ...
