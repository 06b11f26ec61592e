"""params.yaml as typed, validated dataclasses: a wrong key or value fails before any work starts."""

from __future__ import annotations

from dataclasses import dataclass, field, fields
from pathlib import Path
from typing import Any

import yaml

DEFAULT_PARAMS = Path("params.yaml")


class ParamsError(ValueError):
    pass


def _build(cls: type, section: str, raw: dict[str, Any]) -> Any:
    known = {f.name for f in fields(cls)}
    unknown = set(raw) - known
    if unknown:
        raise ParamsError(f"params: unknown key(s) in '{section}': {sorted(unknown)}; known: {sorted(known)}")
    try:
        return cls(**raw)
    except (TypeError, ValueError) as err:
        raise ParamsError(f"params: section '{section}': {err}") from err


@dataclass(frozen=True)
class ProfileParams:
    name: str = "cpu-smoke"
    smoke_scale: bool = True

    @property
    def banner(self) -> str:
        scale = "SMOKE-SCALE (tiny data and models; not paper scale)" if self.smoke_scale else "full scale"
        return f"[w4rl profile {self.name}: {scale}]"


@dataclass(frozen=True)
class CollectParams:
    tasks: tuple[str, ...] = ("coffee-pull-v3",)
    episodes: dict[str, int] = field(default_factory=lambda: {"expert": 8, "random": 4})
    episode_len: int = 50
    action_repeat: int = 2
    image_size: int = 64
    camera: str = "corner2"
    expert_noise: float = 0.1
    seed: int = 0
    workers: int = 0
    frames_per_shard: int = 1024

    def __post_init__(self) -> None:
        object.__setattr__(self, "tasks", tuple(self.tasks))
        if not self.tasks:
            raise ValueError("collect.tasks must name at least one task")
        bad = set(self.episodes) - {"expert", "random", "policy"}
        if bad:
            raise ValueError(f"collect.episodes has unknown kinds {sorted(bad)} (expert, random, policy)")
        if any(int(n) < 0 for n in self.episodes.values()):
            raise ValueError("collect.episodes counts must be >= 0")


@dataclass(frozen=True)
class ValidateParams:
    context_frames: int = 4
    action_tolerance: float = 1e-6


@dataclass(frozen=True)
class Params:
    profile: ProfileParams
    collect: CollectParams
    validate: ValidateParams


_SECTIONS = {"profile": ProfileParams, "collect": CollectParams, "validate": ValidateParams}


def load_params(path: str | Path = DEFAULT_PARAMS) -> Params:
    path = Path(path)
    if not path.exists():
        raise ParamsError(f"{path}: no such params file (run from the repository root)")
    raw = yaml.safe_load(path.read_text()) or {}
    unknown = set(raw) - set(_SECTIONS)
    if unknown:
        raise ParamsError(f"{path}: unknown section(s) {sorted(unknown)}; known: {sorted(_SECTIONS)}")
    return Params(**{name: _build(cls, name, raw.get(name) or {}) for name, cls in _SECTIONS.items()})
