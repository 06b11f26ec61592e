"""The fidelity evaluation's config (params.yaml `fidelity`), importable without torch or pandas
(see w4rl_core/models/configs.py for why); w4rl_core/eval/fidelity.py re-exports it."""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class FidelityConfig:
    horizon: int = 46  # H: predicted steps per rollout (the refinement horizon)
    episodes: int = 64  # held-out episodes rolled out (at most)
    strips: int = 2  # episodes shown as real | imagined strips and GIFs
    report_horizons: tuple[int, ...] = (1, 8, 16)
    batch: int = 64  # episodes imagined at once
    seed: int = 0

    def __post_init__(self) -> None:
        object.__setattr__(self, "report_horizons", tuple(h for h in self.report_horizons if h <= self.horizon))
        if self.horizon < 1 or self.episodes < 1 or self.strips < 0 or self.batch < 1:
            raise ValueError("horizon, episodes and batch must be >= 1, strips >= 0")
