"""DVC stage `collect@<task>-<kind>`: record one (task, kind) episode store from params.yaml."""

from __future__ import annotations

from typing import Any

from pipelines.params import Params
from w4rl_core.data.collect import PolicyFactory, collect


def store_path(root: str, task: str, kind: str) -> str:
    """Where the pipeline keeps the store of one (task, kind); dvc.yaml uses the same pattern.

    Demonstrations (expert, random) and policy rollouts live in sibling trees so that validating
    the demonstrations does not depend on the rollouts, which are made by a policy trained on them.
    """
    tree = "rollouts" if kind in ("policy", "eval") else "demos"
    return f"{root}/{tree}/{task}/{kind}.zarr"


def expected_stores(params: Params, root: str, kinds: tuple[str, ...] | None = None) -> list[str]:
    """The stores the current params.yaml produces (kinds with a positive episode count)."""
    return [
        store_path(root, task, kind)
        for task in params.collect.tasks
        for kind, n in params.collect.episodes.items()
        if n > 0 and (kinds is None or kind in kinds)
    ]


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
    config = p.collect_config(task, kind, n)
    summary = collect(config, out, policy_factory=policy_factory, progress=progress)
    return summary | {"profile": params.profile.name, "smoke_scale": params.profile.smoke_scale}
