"""Scenes: which object and goal placement an episode starts from, as a first-class, checkable fact.

Meta-World's `reset(seed)` ignores the seed: a task's placement is one of the 50 fixed variations
of the MT1 benchmark it was built with, and a deterministic policy on a repeated variation repeats
its outcome. An evaluation that draws variations with replacement therefore counts one scene
several times (75 draws hit ~40 distinct scenes), and shares scenes with the episodes that trained
the models or chose a checkpoint.

So every role draws from its own **scene pool**, without replacement:

- a pool is the variations of MT1 built with each of its benchmark seeds, in order (50 per seed;
  another seed gives fresh, continuous-valued placements);
- roles (training collection, real checks during refinement, final evaluation) name disjoint
  benchmark seeds: a params file that gives two roles the same seed, or asks a role for more
  distinct scenes than its pool holds, is refused before anything runs;
- every recorded episode stores its scene's identity (`scene_id`: a hash of the task and its
  placement vector), so overlaps are measured on the data, not assumed from the seeds.
"""

from __future__ import annotations

import hashlib
from collections.abc import Mapping
from dataclasses import dataclass

import numpy as np

#: Variations in one MT1 benchmark (Meta-World's _N_GOALS; checked against the benchmark at use).
SCENES_PER_BENCHMARK = 50

#: Roles that draw scenes, in the order the pipeline uses them.
SCENE_ROLES: tuple[str, ...] = ("training", "selection", "evaluation")


@dataclass(frozen=True)
class ScenePool:
    """The scenes one role draws from: MT1's variations for each benchmark seed, seed by seed."""

    benchmark_seeds: tuple[int, ...]

    def __post_init__(self) -> None:
        seeds = tuple(int(s) for s in self.benchmark_seeds)
        object.__setattr__(self, "benchmark_seeds", seeds)
        if not seeds:
            raise ValueError("a scene pool needs at least one benchmark seed")
        if len(set(seeds)) != len(seeds):
            raise ValueError(f"benchmark seeds repeat in {list(seeds)}: the pool would repeat scenes")
        if any(s < 0 or s >= 2**32 for s in seeds):  # numpy's legacy seeding range (MT1 uses it)
            raise ValueError(f"benchmark seeds must be in [0, 2**32), got {list(seeds)}")

    @property
    def capacity(self) -> int:
        """Distinct scenes the pool holds."""
        return SCENES_PER_BENCHMARK * len(self.benchmark_seeds)

    def locate(self, index: int) -> tuple[int, int]:
        """Scene `index` of the pool as (benchmark seed, variation)."""
        if not 0 <= index < self.capacity:
            raise IndexError(f"scene {index} is outside the pool's {self.capacity} scenes "
                             f"(benchmark seeds {list(self.benchmark_seeds)})")
        return self.benchmark_seeds[index // SCENES_PER_BENCHMARK], index % SCENES_PER_BENCHMARK


@dataclass(frozen=True)
class SceneSlice:
    """A contiguous run of a pool's scenes: episode j of a collection gets scene `first + j`."""

    pool: ScenePool
    first: int = 0

    def __post_init__(self) -> None:
        if self.first < 0:
            raise ValueError(f"first scene must be >= 0, got {self.first}")

    def check_fits(self, episodes: int, what: str) -> None:
        if self.first + episodes > self.pool.capacity:
            raise ValueError(
                f"{what} asks for {episodes} distinct scenes from scene {self.first} on, but its pool "
                f"(benchmark seeds {list(self.pool.benchmark_seeds)}) holds {self.pool.capacity}: "
                f"add benchmark seeds ({SCENES_PER_BENCHMARK} scenes each) or ask for fewer episodes")

    def scene(self, episode: int) -> tuple[int, int]:
        return self.pool.locate(self.first + episode)


def check_disjoint(pools: Mapping[str, ScenePool]) -> None:
    """Refuse pools that share a benchmark seed (they would share every scene of it)."""
    owner: dict[int, str] = {}
    for role, pool in pools.items():
        for seed in pool.benchmark_seeds:
            if seed in owner:
                raise ValueError(f"scenes.{owner[seed]} and scenes.{role} both use benchmark seed {seed}: "
                                 "their scene sets would overlap; give each role its own seeds")
            owner[seed] = role


def scene_id(task: str, placement: np.ndarray) -> str:
    """Identity of a scene: a hash of the task and its placement vector (Meta-World's rand_vec),
    stable across processes and machines (float64 bytes, little-endian)."""
    vec = np.ascontiguousarray(np.asarray(placement, dtype="<f8"))
    return hashlib.sha256(task.encode() + b"\0" + vec.tobytes()).hexdigest()[:16]


def scene_overlap(a: list[str] | set[str], b: list[str] | set[str]) -> int:
    """Distinct known scenes in both (an empty id means 'not recorded' and never matches)."""
    return len((set(a) - {""}) & (set(b) - {""}))


class PoolPlacedRobot:
    """A robot that sets up scene `index` of `role`'s pool when the bridge asks for it: the
    simulator served over the bridge (`w4rl robot serve`) places exactly the scenes the in-process
    stages would, so a pipeline driving it through the bridge records the same episodes. A physical
    robot's adapter does the same with its own list of layouts (docs/own-robot.md)."""

    def __init__(self, robot, pools: Mapping[str, ScenePool], task: str | None = None) -> None:
        self._robot, self._pools = robot, dict(pools)
        self.task = task or robot.task  # the name it serves under (a stand-in for a robot of your own)

    def __getattr__(self, name: str):  # task, action bounds, state_dim, fps, scene_id, step, close
        return getattr(self._robot, name)

    def reset(self, seed: int, scene=None):
        """`scene`: a protocol.SceneRequest (role, index), or None for the robot's own choice."""
        if scene is None:
            return self._robot.reset(seed)
        role, index = scene
        if role not in self._pools:
            raise ValueError(f"no scene pool for role {role!r}; this robot has {sorted(self._pools)}")
        return self._robot.reset(seed, scene=self._pools[role].locate(int(index)))
