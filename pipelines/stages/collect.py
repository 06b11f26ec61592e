"""DVC stages `collect@<task>-<kind>` and `import@<task>-<kind>`: one (task, kind) episode store
from params.yaml, recorded in the simulator or read from the task's recorded LeRobot dataset."""

from __future__ import annotations

from typing import Any

from pipelines.params import Params
from w4rl_core.data.collect import BRIDGE_KINDS, PolicyFactory, collect


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
    if kind in p.imported.kinds:
        return _import(params, task, kind, n, out)
    # An `eval` collection runs the evaluation scenes, as the evaluate stage does.
    scenes = params.scene_slice("evaluation") if kind == "eval" else params.scene_slice("training", kind)
    if kind in BRIDGE_KINDS:  # a policy acts: on params.robot (the simulator or a bridge robot)
        scenes |= params.robot.collect_fields(task, "evaluation" if kind == "eval" else "training")
    config = p.collect_config(task, kind, n, **scenes)
    summary = collect(config, out, policy_factory=policy_factory, progress=progress)
    return summary | {"profile": params.profile.name, "smoke_scale": params.profile.smoke_scale}


def _import(params: Params, task: str, kind: str, n: int, out: str) -> dict[str, Any]:
    """The first n episodes of `kind` in the task's LeRobot dataset (collect.imported), as a store."""
    from w4rl_core.data.lerobot import import_lerobot

    imported = params.collect.imported
    root = imported.dataset(task)
    if not root.is_dir():
        raise ValueError(f"collect.imported: no LeRobot dataset for task {task} at {root} "
                         f"(collect.imported.root/<task>; docs/own-robot.md)")
    store = import_lerobot(root, out, imported.lerobot_mapping(task, params.collect.image_size), kind=kind,
                           episodes=n)
    info = store.info()
    return {"task": task, "kind": kind, "episodes": info["episodes"], "frames": info["frames"],
            "source": str(root), "profile": params.profile.name, "smoke_scale": params.profile.smoke_scale}
