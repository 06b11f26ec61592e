"""Success rate of a policy on a robot: episodes recorded as an `eval` store (also the next dataset
version's raw material: the data flywheel), success per episode, Wilson confidence intervals, GIFs."""

from __future__ import annotations

import functools
import math
import os
from pathlib import Path
from typing import Any

import numpy as np

from w4rl_core.data.collect import CollectConfig, collect
from w4rl_core.data.store import EpisodeStore
from w4rl_core.models.policy import policy_factory


def wilson_interval(successes: int, n: int, z: float = 1.96) -> tuple[float, float]:
    """95% Wilson score interval: sane at 0/n and n/n, unlike the normal approximation."""
    if n == 0:
        return (0.0, 1.0)
    p = successes / n
    denom = 1 + z**2 / n
    centre = (p + z**2 / (2 * n)) / denom
    half = z * math.sqrt(p * (1 - p) / n + z**2 / (4 * n**2)) / denom
    return (max(0.0, centre - half), min(1.0, centre + half))


def success_summary(successes: list[bool]) -> dict[str, Any]:
    n, k = len(successes), int(sum(successes))
    lo, hi = wilson_interval(k, n)
    return {"episodes": n, "successes": k, "success_rate": k / n if n else None, "ci95": [lo, hi]}


def evaluate_policy(
    policy_dir: str | os.PathLike[str],
    base: CollectConfig,
    out_store: str | os.PathLike[str],
    deterministic: bool = True,
    progress: bool = True,
) -> dict[str, Any]:
    """Roll the policy saved in `policy_dir` for `base.episodes` episodes; returns the success summary.

    Seeds come from (base.seed, task, "eval", index) for index from base.first_episode: pass a
    different base.seed for the periodic evaluations during refinement than for the final
    evaluation, so the two never share episodes. The summary's `per_episode` lists success per
    episode in index order (for paired comparisons).
    """
    factory = functools.partial(policy_factory, path=str(policy_dir), deterministic=deterministic)
    collect(base, out_store, policy_factory=factory, progress=progress)
    store = EpisodeStore.open(out_store)
    success = store.array("data/success")[:]
    per_episode = [bool(success[s:e].any()) for s, e in zip(store.episode_starts, store.episode_ends)]
    return success_summary(per_episode) | {"per_episode": per_episode, "scenes": store.episode_scene}


def evaluate_on_robot(robot: Any, policy: Any, episodes: int, seed: int, episode_len: int,
                      labeler: Any = None) -> dict[str, Any]:
    """The same evaluation against any Robot (a RemoteRobot on hardware): success per episode.

    Episode seeds follow the simulator evaluation's (base seed, task, "eval", index), but the robot
    places its own scenes (`reset(seed)`): the pipeline's scene pools (w4rl_core/robots/scenes.py)
    are not sent over the bridge yet, so this is not the `evaluate` stage's protocol. A robot that
    reports no success needs `labeler` (w4rl_core/robots/labels.py).
    """
    from w4rl_core.data.collect import episode_seed, rollout

    from w4rl_core.progress import progress_bar

    results = []
    for i in progress_bar(range(episodes), desc=f"evaluate {robot.task}", unit="ep"):
        s = episode_seed(seed, robot.task, "eval", i)
        results.append(rollout(robot, policy, episode_len, s, robot.task, "eval", labeler=labeler, index=i).succeeded)
    return success_summary(results)


def write_videos(store_path: str | os.PathLike[str], out_dir: str | os.PathLike[str], prefix: str, n: int) -> list[str]:
    """GIFs of the first n episodes of a store, upscaled so a person can see them."""
    import imageio.v3 as iio

    store = EpisodeStore.open(store_path)
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    names = []
    for i in range(min(n, store.n_episodes)):
        ep = store.episode(i)
        scale = max(1, 128 // ep.rgb.shape[1])
        frames = ep.rgb.repeat(scale, 1).repeat(scale, 2)
        name = f"{prefix}_episode{i}_{'success' if ep.succeeded else 'fail'}.gif"
        iio.imwrite(out / name, np.asarray(frames), duration=60, loop=0)
        names.append(name)
    return names
