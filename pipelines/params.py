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
    crop: tuple[float, float, float] | None = None  # [top, left, size] of the camera view, fractions
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
        if self.crop is not None:
            object.__setattr__(self, "crop", tuple(self.crop))
        self.robot_config(self.tasks[0])  # camera, crop, sizes: fail now, not after collection

    def robot_config(self, task: str):
        """The simulated robot every stage observes through (collection, evaluation, the bridge)."""
        from w4rl_core.robots.metaworld_robot import MetaWorldConfig

        return MetaWorldConfig(task=task, image_size=self.image_size, camera=self.camera, crop=self.crop,
                               action_repeat=self.action_repeat)

    def collect_config(self, task: str, kind: str, episodes: int, **overrides):
        """A CollectConfig of these params (seed, workers, ... overridable: evaluation uses its own)."""
        from w4rl_core.data.collect import CollectConfig

        fields = dict(task=task, kind=kind, episodes=episodes, episode_len=self.episode_len,
                      image_size=self.image_size, camera=self.camera, crop=self.crop,
                      action_repeat=self.action_repeat, expert_noise=self.expert_noise, seed=self.seed,
                      workers=self.workers, frames_per_shard=self.frames_per_shard)
        return CollectConfig(**(fields | overrides))

@dataclass(frozen=True)
class ValidateParams:
    context_frames: int = 4
    action_tolerance: float = 1e-6


@dataclass(frozen=True)
class WorldModelParams:
    """The world model, its training and its data split (docs/params.md)."""

    image_size: int = 32  # frames are resized to this on load; stores keep collect.image_size
    context_frames: int = 4
    action_encoding: str = "two_hot"
    action_bins: int = 21
    channels: tuple[int, ...] = (32, 32, 64, 64)
    layers_per_block: int = 1
    norm_groups: int = 8
    val_fraction: float = 0.2
    split_seed: int = 0
    edm: dict[str, Any] = field(default_factory=dict)
    sampler: dict[str, Any] = field(default_factory=dict)
    train: dict[str, Any] = field(default_factory=dict)
    accel: dict[str, Any] = field(default_factory=dict)  # fast paths for training and imagination

    def __post_init__(self) -> None:
        object.__setattr__(self, "channels", tuple(self.channels))
        self.train_config()  # validate nested sections now, not at the end of collection
        self.model_config((-1.0,), (1.0,))
        self.accel_config()

    def accel_config(self):
        from w4rl_core.models.accel import AccelConfig

        return AccelConfig(**self.accel)

    def model_config(self, action_low, action_high):
        from w4rl_core.models.edm import EDMConfig
        from w4rl_core.models.sampler import SamplerConfig
        from w4rl_core.models.unet import UNetConfig
        from w4rl_core.models.world_model import WorldModelConfig

        return WorldModelConfig(
            action_low=tuple(action_low),
            action_high=tuple(action_high),
            unet=UNetConfig(
                image_size=self.image_size,
                context_frames=self.context_frames,
                channels=self.channels,
                layers_per_block=self.layers_per_block,
                norm_groups=self.norm_groups,
            ),
            edm=EDMConfig(**self.edm),
            sampler=SamplerConfig(**self.sampler),
            action_encoding=self.action_encoding,
            action_bins=self.action_bins,
        )

    def train_config(self):
        from w4rl_core.train.world_model import WorldModelTrainConfig

        return WorldModelTrainConfig(**self.train)


@dataclass(frozen=True)
class FidelityParams:
    horizon: int = 16
    episodes: int = 8
    strips: int = 2
    seed: int = 0

    def config(self):
        from w4rl_core.eval.fidelity import FidelityConfig

        return FidelityConfig(horizon=self.horizon, episodes=self.episodes, strips=self.strips, seed=self.seed)

    def __post_init__(self) -> None:
        self.config()


def _cnn(channels, hidden, image_size):
    from w4rl_core.models.policy import CNNConfig

    return CNNConfig(image_size=image_size, channels=tuple(channels), hidden=hidden)


def _supervised(d: dict[str, Any]):
    from w4rl_core.train.supervised import SupervisedConfig

    return SupervisedConfig(**d)


@dataclass(frozen=True)
class PolicyParams:
    """BC policy (per task). Acts on frames at world_model.image_size (what imagination produces)."""

    channels: tuple[int, ...] = (16, 32, 64)
    hidden: int = 256
    log_std_min: float = -5.0
    log_std_max: float = 0.0  # sigma <= e^0: World4RL's conservative exploration
    rollout_deterministic: bool = False  # BC rollouts for data coverage sample actions
    train: dict[str, Any] = field(default_factory=dict)

    def __post_init__(self) -> None:
        object.__setattr__(self, "channels", tuple(self.channels))
        _supervised(self.train)


@dataclass(frozen=True)
class RewardParams:
    """Success classifier (per task), trained on expert and BC-rollout frames."""

    channels: tuple[int, ...] = (16, 32, 64)
    hidden: int = 128
    train: dict[str, Any] = field(default_factory=dict)

    def __post_init__(self) -> None:
        object.__setattr__(self, "channels", tuple(self.channels))
        _supervised(self.train)


@dataclass(frozen=True)
class RefineParams:
    """PPO inside the frozen world model (per task); keys of w4rl_core.train.ppo.PPOConfig, plus
    the periodic real evaluation's size and seed."""

    eval_episodes: int = 4
    eval_seed: int = 777  # disjoint from evaluate.seed: periodic and final evaluations share no episode
    ppo: dict[str, Any] = field(default_factory=dict)

    def __post_init__(self) -> None:
        self.ppo_config()

    def ppo_config(self):
        from w4rl_core.train.ppo import PPOConfig

        return PPOConfig(**self.ppo)


@dataclass(frozen=True)
class EvaluateParams:
    episodes: int = 10  # per task and policy
    seed: int = 100
    deterministic: bool = True  # act with the policy mean
    videos: int = 2  # GIFs per task and policy
    workers: int = 0


@dataclass(frozen=True)
class RegistryParams:
    root: str = "registry"  # a local directory or s3://bucket/prefix


@dataclass(frozen=True)
class Params:
    profile: ProfileParams
    collect: CollectParams
    validate: ValidateParams
    world_model: WorldModelParams
    fidelity: FidelityParams
    policy: PolicyParams = field(default_factory=PolicyParams)
    reward: RewardParams = field(default_factory=RewardParams)
    refine: RefineParams = field(default_factory=RefineParams)
    evaluate: EvaluateParams = field(default_factory=EvaluateParams)
    gate: dict[str, Any] = field(default_factory=dict)
    registry: RegistryParams = field(default_factory=RegistryParams)

    def __post_init__(self) -> None:
        from w4rl_core.registry.gate import GateRules

        GateRules(**self.gate)  # unknown or invalid rule keys fail at load time

    def policy_cnn(self):
        return _cnn(self.policy.channels, self.policy.hidden, self.world_model.image_size)

    def reward_cnn(self):
        return _cnn(self.reward.channels, self.reward.hidden, self.world_model.image_size)


_SECTIONS = {
    "profile": ProfileParams,
    "collect": CollectParams,
    "validate": ValidateParams,
    "world_model": WorldModelParams,
    "fidelity": FidelityParams,
    "policy": PolicyParams,
    "reward": RewardParams,
    "refine": RefineParams,
    "evaluate": EvaluateParams,
    "registry": RegistryParams,
}


def load_params(path: str | Path = DEFAULT_PARAMS) -> Params:
    path = Path(path)
    if not path.exists():
        raise ParamsError(f"{path}: no such params file (run from the repository root)")
    raw = yaml.safe_load(path.read_text()) or {}
    unknown = set(raw) - set(_SECTIONS) - {"gate"}
    if unknown:
        raise ParamsError(f"{path}: unknown section(s) {sorted(unknown)}; known: {sorted(_SECTIONS) + ['gate']}")
    try:
        return Params(**{name: _build(cls, name, raw.get(name) or {}) for name, cls in _SECTIONS.items()},
                      gate=raw.get("gate") or {})
    except (TypeError, ValueError) as err:
        raise ParamsError(f"{path}: section 'gate': {err}") from err
