"""DVC stage `collect@<task>-<kind>`: record one (task, kind) episode store from params.yaml."""

from __future__ import annotations

from typing import Any

from pipelines.params import Params
from w4rl_core.data.collect import PolicyFactory, collect


def run(
    params: Params,
    task: str,
    kind: str,
    out: str,
    *,
    episodes: int | None = None,
    policy_factory: PolicyFactory | None = None,
    progress: bool = True,
) -> dict[str, Any]:
    p = params.collect
    n = episodes if episodes is not None else p.episodes.get(kind, 0)
    if n < 1:
        raise ValueError(f"collect.episodes.{kind} is {n}: nothing to collect for {task}/{kind}")
    # Training scenes (w4rl_core/robots/scenes.py): each kind its own run of the training pool, so no
    # two training episodes of a task share a scene and none is an evaluation scene.
    if kind != "eval" and kind not in p.episodes:  # its training scenes would be another kind's
        raise ValueError(f"collect.episodes has no {kind!r} entry: give it one, so that {kind} episodes get "
                         "their own training scenes")
    if kind in p.episodes and n > p.episodes[kind]:
        # Each kind's training scenes follow the earlier kinds' counts in params: more episodes than
        # params.yaml gives this kind would run into the next kind's scenes.
        raise ValueError(f"--episodes {n} exceeds collect.episodes.{kind} = {p.episodes[kind]}: the extra "
                         f"episodes would take the next kind's training scenes; raise collect.episodes.{kind}")
    # An `eval` collection runs the evaluation scenes, as the evaluate stage does.
    scenes = params.scene_slice("evaluation") if kind == "eval" else params.scene_slice("training", kind)
    if kind in ("policy", "eval"):  # a policy acts: on params.robot (the simulator or a bridge robot)
        scenes |= params.robot.collect_fields(task, "evaluation" if kind == "eval" else "training")
    config = p.collect_config(task, kind, n, **scenes)
    summary = collect(config, out, policy_factory=policy_factory, progress=progress)
    return summary | {"profile": params.profile.name, "smoke_scale": params.profile.smoke_scale}
