"""Collect robot episodes into an EpisodeStore: scripted experts, random actions, or any policy.

Determinism: every episode has its own seed derived from (base seed, task, kind, episode index), and
episodes are written in index order, so a store's content does not depend on the number of worker
processes or on which worker ran which episode.

Parallelism: one process per core (``spawn``: MuJoCo's EGL context does not survive ``fork``); each
worker builds its simulator once and returns finished episodes to the parent, which alone writes.
"""

from __future__ import annotations

import logging
import os
import zlib
from collections.abc import Callable, Iterator
from concurrent.futures import ProcessPoolExecutor
from dataclasses import dataclass
from multiprocessing import get_context
from pathlib import Path
from typing import Any

import numpy as np

from w4rl_core.atomic import atomic_path
from w4rl_core.data.episode import EPISODE_KINDS, Episode
from w4rl_core.data.storage import is_remote, remove_tree, storage_errors
from w4rl_core.data.store import EpisodeStore, StoreLayout
from w4rl_core.progress import progress_bar
from w4rl_core.robots.metaworld_robot import (
    MetaWorldConfig,
    MetaWorldRobot,
    RandomPolicy,
    ScriptedExpert,
)
from w4rl_core.robots.labels import LABEL_SOURCES, Labeler, LabelRequest, make_labeler
from w4rl_core.robots.protocol import Policy, SceneRequest
from w4rl_core.robots.scenes import SCENE_ROLES, ScenePool, SceneSlice

BRIDGE_KINDS = ("policy", "eval")  # the kinds a robot behind the bridge can record: a policy acts

#: Builds the acting policy inside a worker: (robot, episode seed) -> Policy. Must be picklable
#: (a module-level function or functools.partial) to cross into worker processes.
PolicyFactory = Callable[[MetaWorldRobot, int], Policy]


@dataclass(frozen=True)
class CollectConfig:
    """One collection run: one task, one kind of episode. Validated at construction."""

    task: str
    kind: str  # expert | random | policy | eval (eval: a policy's evaluation rollouts)
    episodes: int  # number of episodes to record
    first_episode: int = 0  # index of the first episode (seeds come from the index): disjoint slices
    episode_len: int = 50  # recorded steps per episode (each is `action_repeat` physics steps)
    image_size: int = 64
    camera: str = "corner2"
    crop: tuple[float, float, float] | None = None  # see MetaWorldConfig.crop
    action_repeat: int = 2
    expert_noise: float = 0.1  # std of Gaussian noise added to the scripted expert's actions
    seed: int = 0
    workers: int = 0  # worker processes; 0 = one per core, 1 = in this process
    frames_per_shard: int = 1024
    # Scenes (w4rl_core/robots/scenes.py): episode j of this run starts from scene first_scene + j
    # of the pool of these MT1 benchmark seeds, so no scene repeats. Empty: the simulator draws a
    # variation of its own benchmark per episode, with replacement (ad-hoc use only).
    scene_seeds: tuple[int, ...] = ()
    first_scene: int = 0
    # A robot behind the bridge protocol (w4rl_core/robots/bridge.py) instead of the in-process
    # simulator, for the kinds a policy drives: episode j asks the robot for scene first_scene + j
    # of its list for `scene_role`, and records the scene identity the robot reports. The bearer
    # token is read from the environment variable `token_env` in the process that connects.
    robot_url: str | None = None
    scene_role: str = ""
    token_env: str = "W4RL_ROBOT_TOKEN"
    # Where an episode's success comes from when the bridge robot reports none (robots/labels.py):
    # robot (it must report), prompt (this terminal) or queue (files in label_dir, `w4rl robot label`).
    success_from: str = "robot"
    label_dir: str = ".w4rl/labels"
    label_timeout_s: float = 3600.0

    def __post_init__(self) -> None:
        object.__setattr__(self, "scene_seeds", tuple(int(s) for s in self.scene_seeds))
        if self.scene_seeds:
            self.scenes().check_fits(self.episodes, f"collection of {self.task}/{self.kind}")
        if self.kind not in ("expert", "random", "policy", "eval"):
            raise ValueError(f"collect kind must be expert, random, policy or eval, got {self.kind!r}")
        if self.episodes < 1 or self.episode_len < 2 or self.first_episode < 0:
            raise ValueError("episodes must be >= 1, episode_len >= 2 and first_episode >= 0")
        if self.expert_noise < 0 or self.workers < 0:
            raise ValueError("expert_noise and workers must be >= 0")
        if self.success_from not in LABEL_SOURCES or self.label_timeout_s <= 0:
            raise ValueError(f"success_from must be one of {LABEL_SOURCES} and label_timeout_s > 0")
        if self.success_from != "robot" and self.robot_url is None:
            raise ValueError("operator success labels (success_from prompt | queue) are for a robot behind the "
                             "bridge; the simulator reports success")
        if self.robot_url is not None:
            if self.kind not in BRIDGE_KINDS:
                raise ValueError(f"collect kind {self.kind!r} needs the simulator (a scripted expert or random "
                                 f"actions); a robot behind the bridge records kinds {BRIDGE_KINDS}")
            if self.scene_role not in SCENE_ROLES:
                raise ValueError(f"scene_role must be one of {SCENE_ROLES} with a bridge robot, got {self.scene_role!r}")
            if not self.robot_url.startswith(("http://", "https://")):
                raise ValueError(f"robot_url must be an http(s) URL, got {self.robot_url!r}")
            return  # any task name: the robot says which task it serves, checked when connecting
        # Validates task name, image size, crop and action repeat early, before any process starts.
        robot = self.robot_config()
        object.__setattr__(self, "task", robot.task)
        object.__setattr__(self, "crop", robot.crop)

    def scenes(self) -> SceneSlice | None:
        return SceneSlice(ScenePool(self.scene_seeds), self.first_scene) if self.scene_seeds else None

    def robot_config(self) -> MetaWorldConfig:
        return MetaWorldConfig(
            task=self.task, image_size=self.image_size, camera=self.camera, crop=self.crop,
            action_repeat=self.action_repeat,
        )


def episode_seed(base_seed: int, task: str, kind: str, index: int) -> int:
    """A stable 32-bit seed per episode (crc32, not hash(): str hashing is salted per process)."""
    seq = np.random.SeedSequence([base_seed, zlib.crc32(task.encode()), EPISODE_KINDS.index(kind), index])
    return int(seq.generate_state(1)[0])


def rollout(robot: MetaWorldRobot, policy: Policy, length: int, seed: int, task: str, kind: str,
            scene: tuple[int, int] | SceneRequest | None = None, labeler: Labeler | None = None,
            index: int = 0) -> Episode:
    """Record one episode of ``length`` steps (see episode.py for the time convention), from
    `scene` when given: a pool placement for the simulator, a SceneRequest for a robot behind the
    bridge (without one, a robot sets up a scene of its own choosing). A robot that reports no
    success (None) needs `labeler`: the operator labels the whole episode at its end (labels.py)."""
    obs = robot.reset(seed) if scene is None else robot.reset(seed, scene=scene)
    rgb, state, actions, rewards, success = [], [], [], [], []
    reward_t, success_t, unreported = 0.0, False, False
    for t in range(length):
        rgb.append(obs.rgb)
        state.append(obs.state)
        rewards.append(reward_t)
        success.append(success_t)
        action = np.asarray(policy.act(obs), dtype=np.float32)
        actions.append(action)
        if t < length - 1:  # the last action is recorded but its outcome is not part of the episode
            obs, info = robot.step(action)
            if info.get("success") is None:  # refuse rather than record an unknown outcome as failure
                if labeler is None:
                    raise RuntimeError(f"{task}/{kind} episode seed {seed}: the robot reported no success at step "
                                       f"{t + 1}; a robot that cannot tell needs operator labels: robot.success "
                                       "prompt or queue (docs/own-robot.md#success-labels)")
                unreported = True
            reward_t, success_t = float(info.get("reward") or 0.0), bool(info.get("success"))
    scene_id = str(getattr(robot, "scene_id", "") or "")
    labelled = unreported and labeler is not None
    if labelled:  # the operator's answer replaces every frame's success: the robot told nothing
        first = labeler.label(LabelRequest(task, kind, index, scene_id, length, seed))
        success = [first is not None and t >= first for t in range(length)]
    return Episode(
        task=task,
        kind=kind,
        rgb=np.stack(rgb),
        action=np.stack(actions),
        reward=np.asarray(rewards, dtype=np.float32),
        success=np.asarray(success, dtype=np.uint8),
        state=np.stack(state).astype(np.float32),
        scene=scene_id,
        labelled=labelled,
    )


# ---------------------------------------------------------------------- worker side
_worker: dict[str, Any] = {}


def _init_worker(config: CollectConfig, policy_factory: PolicyFactory | None, pooled: bool = False) -> None:
    if pooled:
        # One core per worker: Mesa's llvmpipe would otherwise start a render thread per core in
        # every worker and they would fight (+10% steps/s measured with 2 workers on 2 cores).
        os.environ.setdefault("LP_NUM_THREADS", "1")
    _worker["config"] = config
    _worker["robot"] = make_robot(config)
    _worker["factory"] = policy_factory
    _worker["labeler"] = make_labeler(config.success_from, config.label_dir, config.label_timeout_s)


def make_robot(config: CollectConfig):
    """The robot `config` records on: the simulator, or the robot behind the bridge at robot_url,
    which must serve config.task."""
    if config.robot_url is None:
        return MetaWorldRobot(config.robot_config())
    from w4rl_core.robots.bridge import RemoteRobot

    token = os.environ.get(config.token_env, "")
    if not token:
        raise RuntimeError(f"collection of {config.task}/{config.kind} on {config.robot_url}: no bridge token in "
                           f"${config.token_env}")
    robot = RemoteRobot(config.robot_url, token)
    if robot.task != config.task:
        robot.close()
        raise RuntimeError(f"the robot at {config.robot_url} serves task {robot.task!r}, not {config.task!r}")
    return robot


def _make_policy(robot: MetaWorldRobot, config: CollectConfig, factory: PolicyFactory | None, seed: int) -> Policy:
    if config.kind == "expert":
        return ScriptedExpert(robot, config.expert_noise, seed)
    if config.kind == "random":
        return RandomPolicy(robot.action_low, robot.action_high, seed)
    if factory is None:
        raise ValueError(f"collect kind {config.kind!r} needs a policy factory")
    return factory(robot, seed)


def _collect_one(index: int) -> Episode:
    config: CollectConfig = _worker["config"]
    robot: MetaWorldRobot = _worker["robot"]
    seed = episode_seed(config.seed, config.task, config.kind, index)
    policy = _make_policy(robot, config, _worker["factory"], seed)
    if config.robot_url is not None:
        scene: tuple[int, int] | SceneRequest | None = SceneRequest(
            config.scene_role, config.first_scene + index - config.first_episode)
    else:
        scenes = config.scenes()
        scene = None if scenes is None else scenes.scene(index - config.first_episode)
    return rollout(robot, policy, config.episode_len, seed, config.task, config.kind, scene,
                   labeler=_worker["labeler"], index=index)


def _indices(config: CollectConfig) -> range:
    return range(config.first_episode, config.first_episode + config.episodes)


def _episodes(config: CollectConfig, factory: PolicyFactory | None) -> Iterator[Episode]:
    # One process for a robot behind the bridge: it is one robot, and takes one command at a time.
    workers = 1 if config.robot_url else min(config.workers or (os.cpu_count() or 1), config.episodes)
    if workers == 1:
        _init_worker(config, factory)
        try:
            yield from map(_collect_one, _indices(config))
        finally:
            _worker.pop("robot").close()
        return
    with ProcessPoolExecutor(
        max_workers=workers, mp_context=get_context("spawn"), initializer=_init_worker, initargs=(config, factory, True)
    ) as pool:
        yield from pool.map(_collect_one, _indices(config))


# ---------------------------------------------------------------------- parent side
def replace_failed_write(url: str, endpoint_url: str | None = None) -> None:
    """Before writing a remote store: remove what a failed earlier write left at ``url`` (a store
    never published), refuse a complete one (stores are written once) and anything that is not a
    w4rl store. Assumes one writer per URL, as a DVC stage output has."""
    from w4rl_core.data.store import IncompleteStoreError

    try:
        EpisodeStore.open(url, endpoint_url=endpoint_url, consolidated=False)
    except FileNotFoundError:
        return
    except IncompleteStoreError:
        logging.getLogger("w4rl.collect").warning("%s: removing the unpublished store of a failed earlier write", url)
        remove_tree(url, endpoint_url)
        return
    raise FileExistsError(f"{url}: a complete episode store is already there; stores are written once "
                          "(choose another --out, or delete it first)")


def collect(
    config: CollectConfig,
    out: str | os.PathLike[str],
    *,
    policy_factory: PolicyFactory | None = None,
    progress: bool = True,
    endpoint_url: str | None = None,
) -> dict[str, Any]:
    """Record ``config.episodes`` episodes into a new store at ``out``; returns a summary.

    A local ``out`` is written to a temporary sibling and renamed into place when complete; an
    ``s3://`` one is marked complete only by its last write (see EpisodeStore).
    """
    if config.kind in ("policy", "eval") and policy_factory is None:
        raise ValueError(f"collect kind {config.kind!r} needs a policy factory")
    # Action bounds and state size come from the robot itself, not from our assumptions.
    robot_info = make_robot(config)
    layout = StoreLayout(
        image_size=(config.image_size, config.image_size),
        action_low=tuple(robot_info.action_low.tolist()),
        action_high=tuple(robot_info.action_high.tolist()),
        state_dim=robot_info.state_dim,
        fps=robot_info.fps,
        camera=config.camera if config.robot_url is None else "bridge",
        frames_per_shard=config.frames_per_shard,
        tasks=(config.task,),
    )
    robot_info.close()
    source = {"collector": "metaworld" if config.robot_url is None else "bridge",
              "config": {k: getattr(config, k) for k in config.__dataclass_fields__}}
    for key in ("workers", "label_dir", "label_timeout_s"):  # do not change the content
        source["config"].pop(key)

    def write(url: str | os.PathLike[str]) -> dict[str, Any]:
        # Unpublished until the last episode is in: on S3 (no rename) a run that dies halfway leaves
        # a store every reader refuses, never a smaller one that looks finished.
        store = EpisodeStore.create(url, layout, source=source, endpoint_url=endpoint_url, complete=False)
        buffer: list[Episode] = []
        successes = labelled = 0
        for ep in progress_bar(_episodes(config, policy_factory), total=config.episodes,
                               desc=f"collect {config.task}/{config.kind}", unit="ep", enabled=progress):
            buffer.append(ep)
            successes += int(ep.succeeded)
            labelled += int(ep.labelled)
            if sum(map(len, buffer)) >= config.frames_per_shard:  # write whole shards at a time
                store.append(buffer, complete=False)
                buffer = []
        store.append(buffer, complete=False)
        store.publish()
        return {
            "task": config.task,
            "kind": config.kind,
            "episodes": store.n_episodes,
            "frames": store.n_frames,
            "success_rate": successes / config.episodes,
            "operator_labelled": labelled,  # episodes whose success an operator gave (the robot reported none)
        }

    if is_remote(out):
        with storage_errors("collect: writing", out):
            replace_failed_write(out, endpoint_url)
            return write(out)
    with atomic_path(Path(out)) as tmp:
        return write(tmp)
