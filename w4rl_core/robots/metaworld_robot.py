"""The Meta-World (Sawyer arm, MuJoCo) simulated robot, with fast offscreen rendering on CPU.

Rendering notes measured on the 2-core CPU machine (docs/design.md#rendering): default quality costs ~110 ms per
64 px frame (4096² shadow map, 4x MSAA); with shadow map, MSAA, shadow casting and reflections off it
is ~12 ms. We switch these off on the *model* (not on the viewer's scene flags): touching the
gymnasium viewer before its first render left every later env in the same process rendering black
frames, which the model-level switches avoid.
"""

from __future__ import annotations

import functools
import os
import warnings
from dataclasses import dataclass
from typing import Any

import numpy as np

from w4rl_core.robots.protocol import Observation
from w4rl_core.robots.scenes import SCENES_PER_BENCHMARK, ScenePool, scene_id

# MuJoCo picks its GL backend at import time; EGL is the only headless one that works here
# (GLFW needs a display, OSMesa returned wrong images at 96/128 px).
os.environ.setdefault("MUJOCO_GL", "egl")

#: The six tasks of the paper (Meta-World v3 names).
PAPER_TASKS: tuple[str, ...] = (
    "coffee-pull-v3",
    "soccer-v3",
    "hammer-v3",
    "door-lock-v3",
    "lever-pull-v3",
    "handle-pull-v3",
)

#: Cameras whose image MuJoCo renders rotated by 180 degrees (a single flip would mirror it).
_ROTATED_CAMERAS = ("corner", "corner2", "corner3", "corner4")


def canonical_task(name: str) -> str:
    """Accept ``coffee-pull`` or ``coffee-pull-v3``; fail with the list of names if unknown."""
    from metaworld.env_dict import ALL_V3_ENVIRONMENTS

    full = name if name.endswith("-v3") else f"{name}-v3"
    if full not in ALL_V3_ENVIRONMENTS:
        known = ", ".join(sorted(ALL_V3_ENVIRONMENTS))
        raise ValueError(f"unknown Meta-World task {name!r}; v3 tasks are: {known}")
    return full


@dataclass(frozen=True)
class MetaWorldConfig:
    """How the simulated robot is built. Validated at construction."""

    task: str
    image_size: int = 64  # square frames, pixels (after the crop)
    camera: str = "corner2"  # fixed camera; one of the model's cameras
    # Square crop (top, left, size) as fractions of the camera's full view, or None for the whole
    # view. The camera renders at image_size / size pixels and the crop keeps image_size: the
    # pixels that matter (gripper, object, goal) fill more of the frame at the same resolution.
    crop: tuple[float, float, float] | None = None
    action_repeat: int = 2  # physics steps per recorded step (same action)
    fast_render: bool = True  # shadows, MSAA and reflections off (~9x faster on CPU)
    # Seed of Meta-World's MT1 benchmark: it fixes the task's 50 goal/object variations. Without
    # it every process draws its own variations and collection is not reproducible.
    benchmark_seed: int = 0

    def __post_init__(self) -> None:
        object.__setattr__(self, "task", canonical_task(self.task))
        if not 8 <= self.image_size <= 512:
            raise ValueError(f"image_size must be in [8, 512], got {self.image_size}")
        if self.action_repeat < 1:
            raise ValueError(f"action_repeat must be >= 1, got {self.action_repeat}")
        if self.crop is not None:
            crop = tuple(float(v) for v in self.crop)
            object.__setattr__(self, "crop", crop)
            if len(crop) != 3 or not (0 < crop[2] <= 1 and crop[0] >= 0 and crop[1] >= 0):
                raise ValueError(f"crop must be [top, left, size] fractions with 0 < size <= 1, got {self.crop}")
            if crop[0] + crop[2] > 1 + 1e-9 or crop[1] + crop[2] > 1 + 1e-9:
                raise ValueError(f"crop {list(crop)} leaves the camera's view (top + size and left + size <= 1)")

    @property
    def render_size(self) -> int:
        """Pixels the camera renders per side (image_size, or more when cropping)."""
        return self.image_size if self.crop is None else round(self.image_size / self.crop[2])

    def crop_box(self) -> tuple[int, int]:
        """(row, column) of the crop's top-left corner in the rendered frame."""
        if self.crop is None:
            return 0, 0
        r = self.render_size
        return min(round(self.crop[0] * r), r - self.image_size), min(round(self.crop[1] * r), r - self.image_size)


@functools.cache  # Task tuples are immutable; building one benchmark takes ~0.5 s
def mt1_variations(task: str, benchmark_seed: int) -> tuple[Any, ...]:
    """The variations of MT1(`task`) built with `benchmark_seed`: the scenes of that pool seed."""
    import metaworld

    tasks = tuple(metaworld.MT1(task, seed=benchmark_seed).train_tasks)
    if len(tasks) != SCENES_PER_BENCHMARK:  # scenes.py's pool arithmetic relies on it
        raise RuntimeError(f"MT1({task}) has {len(tasks)} variations, expected {SCENES_PER_BENCHMARK}")
    return tasks


def pool_scene_ids(task: str, pool: ScenePool, first: int, n: int) -> list[str]:
    """Ids of scenes first..first+n-1 of `pool`, without running an episode: what reset(scene=...)
    places and records. The Task payload is metaworld's own, built in this process (never read
    from storage), so unpickling it is safe."""
    import pickle

    ids = []
    for j in range(first, first + n):
        seed, variation = pool.locate(j)
        ids.append(scene_id(task, pickle.loads(mt1_variations(task, seed)[variation].data)["rand_vec"]))
    return ids


class MetaWorldRobot:
    """A Meta-World task behind the Robot protocol. Goal/object placement comes from the seed."""

    def __init__(self, config: MetaWorldConfig) -> None:
        import gymnasium as gym
        import metaworld  # noqa: F401  (registers the Meta-World/* gymnasium ids)

        self.config = config
        self.task = config.task
        self._env = gym.make(
            "Meta-World/MT1",
            env_name=config.task,
            seed=config.benchmark_seed,
            render_mode="rgb_array",
            camera_name=config.camera,
            width=config.render_size,
            height=config.render_size,
            disable_env_checker=True,
        )
        # We choose the goal variation ourselves (seeded) instead of the wrapper's unseeded draw.
        self._env.get_wrapper_attr("toggle_sample_tasks_on_reset")(False)
        self._variations = list(self._env.get_wrapper_attr("tasks"))
        sim = self._env.unwrapped
        cams = [sim.model.camera(i).name for i in range(sim.model.ncam)]
        if config.camera not in cams:
            raise ValueError(f"camera {config.camera!r} is not in the model; cameras: {cams}")
        if config.fast_render:  # must happen before the first render creates the GL context
            sim.model.vis.quality.shadowsize = 0
            sim.model.vis.quality.offsamples = 0
            sim.model.light_castshadow[:] = 0
            sim.model.mat_reflectance[:] = 0
        self._flip = config.camera in _ROTATED_CAMERAS
        self._crop = config.crop_box()
        self.action_low = np.asarray(self._env.action_space.low, dtype=np.float32)
        self.action_high = np.asarray(self._env.action_space.high, dtype=np.float32)
        self.state_dim = int(self._env.observation_space.shape[0])
        self.fps = 1.0 / (sim.dt * config.action_repeat)
        self._last_state: np.ndarray | None = None
        self.scene_id = ""  # identity of the scene of the last reset (scenes.scene_id)

    @property
    def n_variations(self) -> int:
        return len(self._variations)

    def _render(self) -> np.ndarray:
        frame = self._env.render()
        if self._flip:
            frame = frame[::-1, ::-1]
        if self.config.crop is not None:  # the crop is of the upright image
            (r, c), n = self._crop, self.config.image_size
            frame = frame[r : r + n, c : c + n]
        return np.ascontiguousarray(frame, dtype=np.uint8)

    def _obs(self, state: np.ndarray) -> Observation:
        self._last_state = np.asarray(state, dtype=np.float64)
        return Observation(rgb=self._render(), state=np.asarray(state, dtype=np.float32))

    @property
    def raw_state(self) -> np.ndarray:
        """The unrounded float64 observation (what Meta-World's scripted experts expect)."""
        assert self._last_state is not None, "reset() first"
        return self._last_state

    def reset(self, seed: int, scene: tuple[int, int] | None = None) -> Observation:
        """Start an episode. `scene` = (benchmark seed, variation) places objects and goal exactly
        (scenes.ScenePool); without it a variation of the robot's own benchmark is drawn from
        `seed`, with replacement (the simulator's default protocol, kept for ad-hoc use)."""
        if scene is None:
            rng = np.random.default_rng(seed)
            task = self._variations[int(rng.integers(len(self._variations)))]
        else:
            task = mt1_variations(self.task, int(scene[0]))[int(scene[1])]
        self._env.unwrapped.set_task(task)
        state, _ = self._env.reset(seed=int(seed))
        self.scene_id = scene_id(self.task, self._env.unwrapped._last_rand_vec)
        obs = self._obs(state)
        if obs.rgb.max() == 0:
            raise RuntimeError(
                f"{self.task}: the renderer returned an all-black frame (MUJOCO_GL={os.environ.get('MUJOCO_GL')}); "
                "check that EGL/Mesa is installed (`make setup`) and that only one env renders per process"
            )
        return obs

    def step(self, action: np.ndarray) -> tuple[Observation, dict[str, Any]]:
        action = np.clip(np.asarray(action, dtype=np.float32), self.action_low, self.action_high)
        total_reward, success = 0.0, False
        for _ in range(self.config.action_repeat):
            state, reward, _terminated, _truncated, info = self._env.step(action)
            total_reward += float(reward)
            success = success or bool(info.get("success", 0.0))
        return self._obs(state), {"success": success, "reward": total_reward}

    def close(self) -> None:
        self._env.close()


class ScriptedExpert:
    """Meta-World's scripted expert for a task, with Gaussian action noise (seeded)."""

    def __init__(self, robot: MetaWorldRobot, noise_std: float, seed: int) -> None:
        from metaworld.policies import ENV_POLICY_MAP

        if robot.task not in ENV_POLICY_MAP:
            raise ValueError(f"Meta-World ships no scripted expert for {robot.task!r}")
        self._policy = ENV_POLICY_MAP[robot.task]()
        self._robot = robot
        self._noise = float(noise_std)
        self._rng = np.random.default_rng(seed)

    def act(self, obs: Observation) -> np.ndarray:
        with warnings.catch_warnings():  # "Constant(s) may be too high": we clip below, as the env does
            warnings.simplefilter("ignore", UserWarning)
            action = np.asarray(self._policy.get_action(self._robot.raw_state), dtype=np.float32)
        if self._noise > 0:
            action = action + self._rng.normal(0.0, self._noise, size=action.shape).astype(np.float32)
        return np.clip(action, self._robot.action_low, self._robot.action_high)


class RandomPolicy:
    """Uniform random actions inside the bounds (the paper's random-coverage data)."""

    def __init__(self, low: np.ndarray, high: np.ndarray, seed: int) -> None:
        self._low, self._high = np.asarray(low, np.float32), np.asarray(high, np.float32)
        self._rng = np.random.default_rng(seed)

    def act(self, obs: Observation) -> np.ndarray:
        return self._rng.uniform(self._low, self._high).astype(np.float32)
