"""LeRobotMapping: which LeRobot features become which w4rl arrays, validated at construction."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import asdict, dataclass, field
from typing import Any

from w4rl_core.data.episode import EPISODE_KINDS
from w4rl_core.data.lerobot.layout import FITS, SUCCESS_SOURCES, TOLERANCE_S


@dataclass(frozen=True)
class LeRobotMapping:
    """Which LeRobot features become which w4rl arrays. Validated at construction."""

    camera: str  # the video or image feature that becomes rgb, e.g. "observation.images.top"
    action: str = "action"
    state: str | None = "observation.state"  # None: no state (state_dim 0)
    # Action bounds of the store; None: the min/max of the dataset's stats (widened where equal).
    action_low: tuple[float, ...] | None = None
    action_high: tuple[float, ...] | None = None
    # next.success / next.reward (>= reward_threshold): per frame, shifted (package docstring);
    # labels: a JSON file {episode_index: bool}, the last `last_k` frames of a true episode succeed;
    # demo_last_k: every episode is a successful demonstration, its last `last_k` frames succeed.
    success: str = "next.success"
    reward_threshold: float | None = None
    labels_file: str | None = None
    last_k: int = 1
    kinds: Mapping[int, str] = field(default_factory=dict)  # episode_index -> kind
    default_kind: str = "expert"  # episodes not in `kinds` (nor recorded by w4rl's export)
    image_size: int = 64  # side of the square frames of the store
    fit: str = "crop"  # crop: centre square; pad: black bars to a square. Never squashed.
    task: str | None = None  # one task name for every episode; None: the dataset's task of each
    tolerance_s: float = TOLERANCE_S

    def __post_init__(self) -> None:
        object.__setattr__(self, "kinds", {int(k): str(v) for k, v in dict(self.kinds).items()})
        for name in ("action_low", "action_high"):
            if getattr(self, name) is not None:
                object.__setattr__(self, name, tuple(float(v) for v in getattr(self, name)))
        if not self.camera or not self.action:
            raise ValueError("camera and action must name LeRobot features")
        if (self.action_low is None) != (self.action_high is None):
            raise ValueError("give both action_low and action_high, or neither")
        if self.action_low is not None and (len(self.action_low) != len(self.action_high)
                                            or any(lo >= hi for lo, hi in zip(self.action_low, self.action_high))):
            raise ValueError(f"action_low must be < action_high per dimension: {self.action_low} / {self.action_high}")
        if self.success not in SUCCESS_SOURCES:
            raise ValueError(f"success must be one of {SUCCESS_SOURCES}, got {self.success!r}")
        if self.success == "next.reward" and self.reward_threshold is None:
            raise ValueError("success='next.reward' needs reward_threshold (success where next.reward >= it)")
        if self.success == "labels" and not self.labels_file:
            raise ValueError("success='labels' needs labels_file (JSON {episode_index: bool})")
        if self.last_k < 1:
            raise ValueError(f"last_k must be >= 1, got {self.last_k}")
        bad = {k: v for k, v in self.kinds.items() if v not in EPISODE_KINDS or k < 0}
        if bad or self.default_kind not in EPISODE_KINDS:
            raise ValueError(f"kinds must map episode indices >= 0 to one of {EPISODE_KINDS}: "
                             f"{bad or self.default_kind!r}")
        if self.image_size < 8:
            raise ValueError(f"image_size must be >= 8, got {self.image_size}")
        if self.fit not in FITS:
            raise ValueError(f"fit must be one of {FITS}, got {self.fit!r}")
        if self.tolerance_s <= 0:
            raise ValueError("tolerance_s must be > 0")

    def to_dict(self) -> dict[str, Any]:
        """JSON-able (the store's ``source`` metadata)."""
        out = asdict(self)
        out["kinds"] = {str(k): v for k, v in self.kinds.items()}
        for name in ("action_low", "action_high"):
            out[name] = None if out[name] is None else list(out[name])
        return out
