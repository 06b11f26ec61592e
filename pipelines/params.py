"""params.yaml as typed, validated dataclasses: a wrong key or value fails before any work starts.

Every section and every nested config (world_model.train, refine.ppo, gate, ...) is built through
`typed`: pydantic checks each field against its annotation (the dataclasses stay plain, in
w4rl_core too), unknown keys are named with their full path and the keys that are accepted, and
range checks in the configs' own __post_init__ come back with the path of their section.
"""

from __future__ import annotations

import math
import re
from dataclasses import dataclass, field, fields, is_dataclass
from pathlib import Path
from typing import Any

import yaml
from pydantic import TypeAdapter, ValidationError

from w4rl_core.robots.labels import LABEL_SOURCES  # numpy-free, like this module

DEFAULT_PARAMS = Path("params.yaml")


class ParamsError(ValueError):
    pass


def typed(cls: type, raw: Any, path: str, **fixed: Any) -> Any:
    """`cls(**raw, **fixed)` with every field of `raw` type-checked; errors name `path.key`."""
    if raw is None:
        raw = {}
    if not isinstance(raw, dict):
        raise ParamsError(f"{path} must be a mapping of keys to values, got {type(raw).__name__} {raw!r}")
    known = {f.name for f in fields(cls)} - set(fixed)
    unknown = sorted(set(map(str, raw)) - known)
    if unknown:
        raise ParamsError(f"unknown key(s) {', '.join(f'{path}.{k}' for k in unknown)}; "
                          f"{path} accepts: {', '.join(sorted(known))}")
    try:
        value = TypeAdapter(cls).validate_python({**raw, **fixed})
    except ValidationError as err:
        raise ParamsError("; ".join(_explain(e, path) for e in err.errors(include_url=False))) from None
    refuse_non_finite(value, path)  # also what pydantic made of a string such as "nan" or "inf"
    return value


def refuse_non_finite(value: Any, path: str) -> None:
    """No NaN or infinity anywhere in params. pydantic accepts YAML's `.nan` and `.inf` (and the
    strings "nan", "inf") for a float field, and a NaN passes every range check written as a
    comparison (`lr <= 0` is false for NaN), so a NaN learning rate would train to NaN weights."""
    if isinstance(value, float):
        if not math.isfinite(value):
            raise ParamsError(f"{path}: must be a finite number (got {value!r})")
    elif is_dataclass(value) and not isinstance(value, type):
        for f in fields(value):
            refuse_non_finite(getattr(value, f.name), f"{path}.{f.name}")
    elif isinstance(value, dict):
        for key, item in value.items():
            refuse_non_finite(item, f"{path}.{key}")
    elif isinstance(value, (list, tuple)):
        for i, item in enumerate(value):
            refuse_non_finite(item, f"{path}[{i}]")


def _explain(error: dict[str, Any], path: str) -> str:
    cause = (error.get("ctx") or {}).get("error")
    if isinstance(cause, ParamsError):  # a nested config already named its own path
        return str(cause)
    where = ".".join([path, *map(str, error["loc"])])
    message = error["msg"].removeprefix("Value error, ")
    if error["type"] == "missing":  # the input is the whole mapping it is missing from
        return f"{where}: {message}"
    if error["loc"]:  # a field's type: say what was given
        return f"{where}: {message} (got {error['input']!r})"
    return f"{where}: {message}"


@dataclass(frozen=True)
class ProfileParams:
    name: str = "cpu-smoke"
    smoke_scale: bool = True

    @property
    def banner(self) -> str:
        scale = "SMOKE-SCALE (tiny data and models; not paper scale)" if self.smoke_scale else "full scale"
        return f"[w4rl profile {self.name}: {scale}]"


TASK_NAME = re.compile(r"[A-Za-z0-9][A-Za-z0-9._-]*")

#: The kinds of a task's training demos (data/episodes/demos/<task>/<kind>.zarr); BC rollouts
#: (policy) are recorded on params.robot by collect_policy.
DEMO_KINDS: tuple[str, ...] = ("expert", "random")


@dataclass(frozen=True)
class ImportedParams:
    """Demo kinds read from recorded LeRobot datasets instead of the simulator (docs/own-robot.md):
    the dataset of task T is the directory `<root>/<T>` (a DVC-tracked LeRobotDataset v2.1 or v3.0),
    read with `mapping` (LeRobotMapping's fields; the task name is T and the frame size
    collect.image_size). The stage `import@<task>-<kind>` takes the first collect.episodes.<kind>
    episodes of that kind."""

    kinds: tuple[str, ...] = ()
    root: str = "data/raw"
    mapping: dict[str, Any] = field(default_factory=dict)

    def __post_init__(self) -> None:
        object.__setattr__(self, "kinds", tuple(self.kinds))
        bad = set(self.kinds) - set(DEMO_KINDS)
        if bad or len(set(self.kinds)) != len(self.kinds):
            raise ValueError(f"collect.imported.kinds must be distinct kinds of {DEMO_KINDS}, got {list(self.kinds)}")
        if self.kinds and not self.root:
            raise ValueError("collect.imported.root must name the directory holding one LeRobot dataset per task")
        fixed = sorted({"task", "image_size"} & set(self.mapping))
        if fixed:
            raise ValueError(f"collect.imported.mapping sets {fixed}: the task name is the task's own and the "
                             "frame size collect.image_size")

    def lerobot_mapping(self, task: str, image_size: int):
        """The LeRobotMapping `import@<task>-<kind>` reads `<root>/<task>` with."""
        from w4rl_core.data.lerobot.mapping import LeRobotMapping  # no pyarrow or PyAV (the package loads lazily)

        return typed(LeRobotMapping, self.mapping, "collect.imported.mapping", task=task, image_size=image_size)

    def dataset(self, task: str) -> Path:
        return Path(self.root) / task


@dataclass(frozen=True)
class CollectParams:
    tasks: tuple[str, ...] = ("coffee-pull-v3",)
    episodes: dict[str, int] = field(default_factory=lambda: {"expert": 8, "random": 4})
    # Demo kinds recorded by the simulator's scripted policies (the stage collect@<task>-<kind>);
    # the others come from `imported`. Together they give every kind of DEMO_KINDS exactly once.
    simulate: tuple[str, ...] = DEMO_KINDS
    imported: ImportedParams = field(default_factory=ImportedParams)
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
        if self.imported.kinds:  # every key of the mapping type-checked now, not at the import stage
            self.imported.lerobot_mapping(self.tasks[0], self.image_size)
        object.__setattr__(self, "simulate", tuple(self.simulate))
        both = sorted(set(self.simulate) & set(self.imported.kinds))
        if both or sorted((*self.simulate, *self.imported.kinds)) != sorted(DEMO_KINDS):
            raise ValueError(f"collect.simulate {list(self.simulate)} and collect.imported.kinds "
                             f"{list(self.imported.kinds)} must give each of {list(DEMO_KINDS)} exactly once")
        for task in self.tasks:  # part of every stage name (collect@<task>-<kind>) and data path
            if not TASK_NAME.fullmatch(task):
                raise ValueError(f"collect.tasks: {task!r} is not a usable task name: one path segment of letters, "
                                 "digits, '.', '_' and '-', starting with a letter or digit")
        if self.simulate:  # every task name, camera, crop, sizes: fail now, not after collection
            for task in self.tasks:
                try:
                    self.robot_config(task)
                except ValueError as err:
                    if "Meta-World task" not in str(err):
                        raise
                    raise ValueError(f"{err}. A task of your own: collect.simulate [] with its demos in "
                                     "collect.imported and robot.kind bridge (docs/own-robot.md)") from None

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
    distinct_scenes: bool = True  # every episode records its scene, none repeats within a store


#: The order in which collection kinds take their scenes from the training pool.
TRAINING_KINDS: tuple[str, ...] = ("expert", "random", "policy")


@dataclass(frozen=True)
class ScenesParams:
    """Where each role's scenes come from (w4rl_core/robots/scenes.py): MT1 benchmark seeds, 50
    distinct scenes each. Roles never share a seed, and each draws its scenes without replacement:
    training collection (kinds in TRAINING_KINDS order, each after the previous kind's episodes),
    selection (real checks during refinement: the same scenes at every check), evaluation (the final
    evaluation: the same scenes for BC and every refined seed, once per policy)."""

    training: tuple[int, ...] = (0,)
    selection: tuple[int, ...] = (1,)
    evaluation: tuple[int, ...] = (2,)

    def __post_init__(self) -> None:
        from w4rl_core.robots.scenes import check_disjoint

        for role in ("training", "selection", "evaluation"):
            object.__setattr__(self, role, tuple(int(s) for s in getattr(self, role)))
        check_disjoint({role: self.pool(role) for role in ("training", "selection", "evaluation")})

    def pool(self, role: str):
        from w4rl_core.robots.scenes import ScenePool

        try:
            return ScenePool(getattr(self, role))
        except ValueError as err:
            raise ValueError(f"scenes.{role}: {err}") from None


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
    context_noise_embedding: bool = False  # tell the U-Net the context-noise level (0 at sampling)
    val_fraction: float = 0.2
    split_seed: int = 0
    edm: dict[str, Any] = field(default_factory=dict)
    sampler: dict[str, Any] = field(default_factory=dict)
    train: dict[str, Any] = field(default_factory=dict)
    accel: dict[str, Any] = field(default_factory=dict)  # fast paths for training and imagination
    data: dict[str, Any] = field(default_factory=dict)  # training windows from memory or streamed

    def __post_init__(self) -> None:
        object.__setattr__(self, "channels", tuple(self.channels))
        self.train_config()  # validate nested sections now, not at the end of collection
        self.model_config((-1.0,), (1.0,))
        self.accel_config()
        self.data_config()

    def data_config(self):
        from w4rl_core.train.configs import WorldModelDataConfig

        return typed(WorldModelDataConfig, self.data, "world_model.data")

    def accel_config(self):
        from w4rl_core.models.configs import AccelConfig

        return typed(AccelConfig, self.accel, "world_model.accel")

    def model_config(self, action_low, action_high):
        from w4rl_core.models.configs import EDMConfig, SamplerConfig, UNetConfig, WorldModelConfig

        try:
            unet = UNetConfig(image_size=self.image_size, context_frames=self.context_frames, channels=self.channels,
                              layers_per_block=self.layers_per_block, norm_groups=self.norm_groups,
                              context_noise_embedding=self.context_noise_embedding)
            return WorldModelConfig(
                action_low=tuple(action_low), action_high=tuple(action_high), unet=unet,
                edm=typed(EDMConfig, self.edm, "world_model.edm"),
                sampler=typed(SamplerConfig, self.sampler, "world_model.sampler"),
                action_encoding=self.action_encoding, action_bins=self.action_bins,
            )
        except ParamsError:
            raise
        except (TypeError, ValueError) as err:  # the U-Net's and the model's own checks
            raise ParamsError(f"world_model: {err}") from None

    def train_config(self):
        from w4rl_core.train.configs import WorldModelTrainConfig

        return typed(WorldModelTrainConfig, self.train, "world_model.train")


@dataclass(frozen=True)
class FidelityParams:
    """Open-loop imagined episodes from held-out episode starts; the horizon is the refinement's
    (Params.episode_horizon), so fidelity is measured where refinement runs."""

    episodes: int = 64  # held-out episodes rolled out (at most)
    strips: int = 2
    seed: int = 0

    def config(self, horizon: int):
        from w4rl_core.eval.fidelity_config import FidelityConfig

        return typed(FidelityConfig, {"episodes": self.episodes, "strips": self.strips, "seed": self.seed}, "fidelity",
                     horizon=horizon)

    def __post_init__(self) -> None:
        self.config(horizon=1)


def _cnn(channels, hidden, image_size):
    from w4rl_core.models.configs import CNNConfig

    return CNNConfig(image_size=image_size, channels=tuple(channels), hidden=hidden)


def _supervised(d: dict[str, Any], path: str):
    from w4rl_core.train.configs import SupervisedConfig

    return typed(SupervisedConfig, d, path)


@dataclass(frozen=True)
class PolicyParams:
    """BC policy (per task). Acts on frames at world_model.image_size (what imagination produces)."""

    channels: tuple[int, ...] = (16, 32, 64)
    hidden: int = 256
    log_std_min: float = -5.0
    log_std_max: float = 0.0  # sigma <= e^0: World4RL's conservative exploration
    rollout_deterministic: bool = False  # BC rollouts for data coverage sample actions
    successful_demos_only: bool = False  # clone only the expert episodes that succeeded
    train: dict[str, Any] = field(default_factory=dict)

    def __post_init__(self) -> None:
        object.__setattr__(self, "channels", tuple(self.channels))
        _supervised(self.train, "policy.train")


@dataclass(frozen=True)
class RewardParams:
    """Success classifier (per task), trained on the frames of `kinds`, its episode-level detector
    (threshold, persistence) calibrated on held-out episodes."""

    channels: tuple[int, ...] = (16, 32, 64)
    hidden: int = 128
    kinds: tuple[str, ...] = ("expert", "policy")
    balanced: bool = True  # class-balanced batches (half successes) or frames at their own rate
    # Episodes the detector (threshold, persistence) is calibrated on: the held-out episodes' real
    # frames, or their imagined twins (the world model's open-loop replays: what refinement scores).
    calibrate_on: str = "imagined"
    # Frames the classifier learns from: the training episodes' real frames, or those plus their
    # imagined twins labelled with what really happened (refinement only ever shows it imagined
    # frames, which the 32 px world model blurs: the reward has to read them, not only real ones).
    train_on: str = "real"
    train: dict[str, Any] = field(default_factory=dict)

    def __post_init__(self) -> None:
        object.__setattr__(self, "channels", tuple(self.channels))
        object.__setattr__(self, "kinds", tuple(self.kinds))
        if self.calibrate_on not in ("real", "imagined"):
            raise ValueError(f"reward.calibrate_on must be real or imagined, not {self.calibrate_on!r}")
        if self.train_on not in ("real", "real_and_imagined"):
            raise ValueError(f"reward.train_on must be real or real_and_imagined, not {self.train_on!r}")
        bad = set(self.kinds) - {"expert", "random", "policy"}
        if bad or not self.kinds:
            raise ValueError(f"reward.kinds must be a non-empty subset of expert, random, policy; got {self.kinds}")
        _supervised(self.train, "reward.train")


UNBOUNDED_HORIZON = 1_000_000


@dataclass(frozen=True)
class RefineParams:
    """PPO inside the frozen world model (per task and seed); keys of w4rl_core.train.ppo.PPOConfig
    except horizon (a real episode's: Params.episode_horizon) and seed (one run per `seeds` entry),
    the trust check that decides whether refinement starts (w4rl_core.train.trust.TrustConfig), plus
    the periodic real evaluation's size and seed (opt-in: only with ppo.select_by_real)."""

    seeds: tuple[int, ...] = (0,)  # one refinement per seed; all are evaluated and reported
    eval_episodes: int = 4
    eval_seed: int = 777  # disjoint from evaluate.seed: periodic and final evaluations share no episode
    ppo: dict[str, Any] = field(default_factory=dict)
    trust: dict[str, Any] = field(default_factory=dict)

    def __post_init__(self) -> None:
        object.__setattr__(self, "seeds", tuple(int(s) for s in self.seeds))
        if not self.seeds or len(set(self.seeds)) != len(self.seeds):
            raise ValueError(f"refine.seeds must be distinct and non-empty, got {list(self.seeds)}")
        for key in ("horizon", "seed"):
            if key in self.ppo:
                raise ValueError(f"refine.ppo.{key} is set by the pipeline (horizon: a real episode's length "
                                 "minus world_model.context_frames; seed: refine.seeds); remove it")
        self.trust_config()
        # The real horizon is known only with collect and world_model (Params checks the config at it);
        # here the keys and values alone, at a horizon no horizon-bound check can refuse.
        if self.checks_run(self.ppo_config(horizon=UNBOUNDED_HORIZON, seed=0)) and self.eval_episodes < 1:
            raise ValueError(f"refine.eval_episodes must be >= 1 while refine.ppo.select_by_real is on and "
                             f"refine.ppo.eval_every > 0 (real checks run), got {self.eval_episodes}")

    @staticmethod
    def checks_run(config) -> bool:
        """Real checks run during refinement only to select by them (select_by_real, the opt-in mode):
        from imagination alone (the method) no real episode runs between BC and the final evaluation;
        monitoring is measured after refinement, by the evaluation, not during it."""
        return bool(config.select_by_real and config.eval_every > 0)

    def real_episodes_per_check(self, params: Params) -> int:
        """Real episodes of one periodic check during refinement (0: refinement runs none)."""
        return self.eval_episodes if self.checks_run(self.ppo_config(horizon=params.episode_horizon, seed=0)) else 0

    def ppo_config(self, horizon: int, seed: int):
        from w4rl_core.train.configs import PPOConfig

        return typed(PPOConfig, self.ppo, "refine.ppo", horizon=horizon, seed=seed)

    def trust_config(self):
        from w4rl_core.train.trust import TrustConfig

        return typed(TrustConfig, self.trust, "refine.trust")


@dataclass(frozen=True)
class EvaluateParams:
    episodes: int = 10  # per task and refinement seed; BC runs the same episodes (paired)
    seed: int = 100
    deterministic: bool = True  # act with the policy mean
    videos: int = 2  # GIFs per task and policy
    workers: int = 0

    def __post_init__(self) -> None:
        if self.episodes < 1 or self.videos < 0 or self.workers < 0:
            raise ValueError(f"evaluate.episodes must be >= 1, evaluate.videos and evaluate.workers >= 0, got "
                             f"{self.episodes}, {self.videos}, {self.workers}")


@dataclass(frozen=True)
class FlywheelParams:
    """The data flywheel (docs/flywheel.md): `round` rounds of evaluation episodes have been fed back
    as training data (data/flywheel, written by `w4rl flywheel advance`, never by hand). Round k
    evaluates on the evaluation scenes after the k earlier rounds' (scenes.evaluation, evaluate.episodes
    each), so no evaluation scene is ever one now in training."""

    round: int = 0
    # round > 0: the world model and each classifier are fine-tuned from the previous round's
    # weights (data/flywheel/init) instead of trained from scratch; refinement starts from the policy
    # promoted in the previous round (refine_from: promoted) or from BC (refine_from: bc).
    warm_start: bool = True
    refine_from: str = "promoted"

    def __post_init__(self) -> None:
        if self.round < 0:
            raise ValueError(f"flywheel.round must be >= 0, got {self.round}")
        if self.refine_from not in ("promoted", "bc"):
            raise ValueError(f"flywheel.refine_from must be promoted or bc, got {self.refine_from!r}")


ROBOT_KINDS = ("simulator", "bridge")


@dataclass(frozen=True)
class RobotParams:
    """Where a policy acts on a robot: BC rollouts (collect_policy), refinement's opt-in real checks
    and the final evaluation (docs/own-robot.md). simulator: Meta-World in the stage's process.
    bridge: a robot behind the bridge protocol (w4rl_core/robots/bridge.py), one URL per task, the
    bearer token in the environment variable `token_env` (never in params). Expert and random
    episodes come from the simulator's scripted policies or a recorded dataset (collect.imported)."""

    kind: str = "simulator"
    urls: dict[str, str] = field(default_factory=dict)  # task -> http(s)://host:port of its robot
    token_env: str = "W4RL_ROBOT_TOKEN"
    # A bridge robot's episode outcomes: robot (it reports success on every step), or an operator's
    # label at the end of each episode it reports none for: prompt (this terminal) or queue (answered
    # with `w4rl robot label`; the stage waits at most label_timeout_s per episode).
    success: str = "robot"
    label_dir: str = ".w4rl/labels"
    label_timeout_s: float = 3600.0
    # false: no robot to evaluate on (yet). The evaluate stage records that the policies were not
    # evaluated, and the gate refuses every task: "not evaluated on a robot: not promotable".
    evaluation: bool = True

    def __post_init__(self) -> None:
        if self.kind not in ROBOT_KINDS:
            raise ValueError(f"robot.kind must be one of {ROBOT_KINDS}, got {self.kind!r}")
        if self.kind == "bridge" and not self.urls:
            raise ValueError("robot.kind bridge needs robot.urls: the bridge address of each task's robot")
        for task, url in self.urls.items():
            if not str(url).startswith(("http://", "https://")):
                raise ValueError(f"robot.urls.{task} must be an http(s) URL, got {url!r}")
        if not self.token_env:
            raise ValueError("robot.token_env must name an environment variable")
        if self.success not in LABEL_SOURCES:
            raise ValueError(f"robot.success must be one of {LABEL_SOURCES}, got {self.success!r}")
        if self.success != "robot" and self.kind != "bridge":
            raise ValueError(f"robot.success {self.success}: operator labels are for a robot behind the bridge "
                             "(robot.kind bridge); the simulator reports success")
        if not self.label_timeout_s > 0 or not self.label_dir:
            raise ValueError("robot.label_timeout_s must be > 0 and robot.label_dir a directory")

    def collect_fields(self, task: str, role: str) -> dict[str, Any]:
        """CollectConfig fields that put a policy's episodes of `role` on this robot."""
        if self.kind == "simulator":
            return {}
        return {"robot_url": self.urls[task], "scene_role": role, "token_env": self.token_env,
                "success_from": self.success, "label_dir": self.label_dir, "label_timeout_s": self.label_timeout_s}


@dataclass(frozen=True)
class RegistryParams:
    root: str = "registry"  # a local directory or s3://bucket/prefix
    retries: int = 3  # attempts per S3 request, with exponential backoff (botocore standard mode)
    timeout_s: float = 10.0  # connect and read timeout per attempt

    def __post_init__(self) -> None:
        if self.retries < 1 or self.timeout_s <= 0:
            raise ValueError(f"registry.retries must be >= 1 and registry.timeout_s > 0, "
                             f"got {self.retries} and {self.timeout_s}")

    def open(self):
        from w4rl_core.registry.registry import Registry

        return Registry(self.root, retries=self.retries, timeout_s=self.timeout_s)


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
    scenes: ScenesParams = field(default_factory=ScenesParams)
    robot: RobotParams = field(default_factory=RobotParams)
    flywheel: FlywheelParams = field(default_factory=FlywheelParams)

    def __post_init__(self) -> None:
        from w4rl_core.registry.gate import GateRules

        rules = typed(GateRules, self.gate, "gate")  # unknown or invalid rule keys fail at load time
        if rules.min_episodes > self.evaluate.episodes:  # the gate could never pass: say so at load time
            raise ValueError(f"gate.min_episodes ({rules.min_episodes}) exceeds evaluate.episodes "
                             f"({self.evaluate.episodes}): the candidate has one episode per evaluation scene, "
                             "so the gate could never pass")
        if not rules.require_refinement_gain and not self.profile.smoke_scale:
            raise ValueError("gate.require_refinement_gain: false would promote BC as a refined policy; it is "
                             "allowed only in smoke-scale profiles (profile.smoke_scale: true)")
        if self.episode_horizon < 1:
            raise ValueError(f"collect.episode_len ({self.collect.episode_len}) must exceed "
                             f"world_model.context_frames ({self.world_model.context_frames})")
        self.refine.ppo_config(horizon=self.episode_horizon, seed=0)  # keyframe_horizon <= a real episode's
        # Every role gets as many distinct scenes as it asks for, or nothing runs.
        training = sum(self.collect.episodes.get(k, 0) for k in TRAINING_KINDS)
        self._check_capacity("training", training, "collect.episodes (all kinds of a task together)")
        if self.refine.real_episodes_per_check(self):
            self._check_capacity("selection", self.refine.eval_episodes, "refine.eval_episodes")
        # Each flywheel round evaluates on fresh scenes, after the earlier rounds' (which are training now).
        self._check_capacity("evaluation", (self.flywheel.round + 1) * self.evaluate.episodes,
                             "evaluate.episodes" + (f" x (flywheel.round {self.flywheel.round} + 1)"
                                                    if self.flywheel.round else ""))
        if self.robot.kind == "simulator" and not self.collect.simulate:
            for task in self.collect.tasks:  # BC's rollouts and the evaluation run in the simulator
                try:
                    self.collect.robot_config(task)
                except ValueError as err:
                    raise ValueError(f"collect.tasks: {err}; with robot.kind simulator the policies act in "
                                     "Meta-World: a task of your own needs robot.kind bridge") from None
        if self.robot.kind == "bridge":
            missing = [t for t in self.collect.tasks if t not in self.robot.urls]
            if missing:
                raise ValueError(f"robot.urls has no bridge address for {missing}: every task of collect.tasks "
                                 "needs its robot")
            if self.refine.real_episodes_per_check(self):
                # Refinement lists its selection scenes from the simulator's pools (pool_scene_ids) to
                # prove the evaluation never ran them; a robot reports its own ids, so that proof would
                # compare the wrong lists.
                raise ValueError("refine.ppo.select_by_real with robot.kind bridge is not supported: the selection "
                                 "scenes are listed from the simulator's pools, not from the robot's reports")

    def _check_capacity(self, role: str, episodes: int, what: str) -> None:
        pool = self.scenes.pool(role)
        if episodes > pool.capacity:
            raise ValueError(f"{what} asks for {episodes} distinct scenes per task, but scenes.{role} "
                             f"(benchmark seeds {list(pool.benchmark_seeds)}) holds {pool.capacity}: add "
                             f"benchmark seeds to scenes.{role} (50 scenes each) or ask for fewer episodes")

    def scene_slice(self, role: str, kind: str | None = None) -> dict[str, Any]:
        """CollectConfig fields that give a collection of `role` its scenes: training kinds take
        consecutive runs of the training pool (expert, then random, then BC rollouts)."""
        first = 0
        if role == "evaluation":  # after the scenes of the flywheel's earlier rounds (training data now)
            first = self.flywheel.round * self.evaluate.episodes
        if role == "training":
            if kind not in TRAINING_KINDS:
                raise ValueError(f"training scenes are for kinds {TRAINING_KINDS}, not {kind!r}")
            first = sum(self.collect.episodes.get(k, 0) for k in TRAINING_KINDS[: TRAINING_KINDS.index(kind)])
        return {"scene_seeds": self.scenes.pool(role).benchmark_seeds, "first_scene": first}

    @property
    def episode_horizon(self) -> int:
        """Imagined steps of an episode: a real episode's frames after the T context frames it starts
        from (refinement and fidelity both use it)."""
        return self.collect.episode_len - self.world_model.context_frames

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
    "scenes": ScenesParams,
    "robot": RobotParams,
    "flywheel": FlywheelParams,
}


def load_params(path: str | Path = DEFAULT_PARAMS) -> Params:
    path = Path(path)
    if not path.exists():
        raise ParamsError(f"{path}: no such params file (run from the repository root)")
    try:
        raw = yaml.safe_load(path.read_text()) or {}
    except yaml.YAMLError as err:
        raise ParamsError(f"{path}: not valid YAML: {err}") from None
    if not isinstance(raw, dict):
        raise ParamsError(f"{path}: expected a mapping of sections, got {type(raw).__name__}")
    unknown = set(raw) - set(_SECTIONS) - {"gate"}
    if unknown:
        raise ParamsError(f"{path}: unknown section(s) {sorted(unknown)}; known: {sorted(_SECTIONS) + ['gate']}")
    try:
        for name, section in raw.items():  # before any config's own checks, which a NaN would pass
            refuse_non_finite(section, name)
        return Params(**{name: typed(cls, raw.get(name), name) for name, cls in _SECTIONS.items()},
                      gate=raw.get("gate") or {})
    except ParamsError as err:
        raise ParamsError(f"{path}: {err}") from None
    except (TypeError, ValueError) as err:  # Params' own cross-section checks
        raise ParamsError(f"{path}: {err}") from None
