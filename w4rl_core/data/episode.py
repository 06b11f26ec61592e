"""One recorded episode, and the vocabularies stored with every dataset.

Time convention (the same for every kind of episode): ``rgb[t]`` and ``state[t]`` are the observation
at step t, ``action[t]`` is the action chosen at that observation, and ``reward[t]`` / ``success[t]``
describe the state shown in ``rgb[t]`` (so ``success[0]`` is the reset state). A world-model window
of T context frames plus the next frame is therefore ``rgb[t:t+T+1]`` with ``action[t:t+T]``.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

#: Kinds of episode, in the order of their integer codes in ``meta/episode_kind``.
#: expert: scripted demonstrations; policy: rollouts of a learned policy (BC);
#: random: uniform random actions; eval: evaluation rollouts appended back (the data flywheel).
EPISODE_KINDS: tuple[str, ...] = ("expert", "policy", "random", "eval")


@dataclass
class Episode:
    """Arrays of one episode, all of length L along the first axis."""

    task: str
    kind: str
    rgb: np.ndarray  # (L, H, W, 3) uint8
    action: np.ndarray  # (L, A) float32
    reward: np.ndarray  # (L,) float32
    success: np.ndarray  # (L,) uint8 in {0, 1}
    state: np.ndarray  # (L, S) float32 proprioception / low-dim observation
    scene: str = ""  # the scene's identity (w4rl_core/robots/scenes.py); "" = not recorded
    labelled: bool = False  # success came from an operator's label (robots/labels.py); not stored per episode

    def __post_init__(self) -> None:
        if self.kind not in EPISODE_KINDS:
            raise ValueError(f"episode kind {self.kind!r} is not one of {EPISODE_KINDS}")
        n = len(self.rgb)
        for name in ("action", "reward", "success", "state"):
            if len(getattr(self, name)) != n:
                raise ValueError(
                    f"episode of task {self.task!r}: {name} has {len(getattr(self, name))} steps, rgb has {n}"
                )

    def __len__(self) -> int:
        return len(self.rgb)

    @property
    def succeeded(self) -> bool:
        """Meta-World counts an episode as a success if the task was solved at any step."""
        return bool(np.any(self.success))
