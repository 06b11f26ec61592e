"""DVC stages of the policy side: train_bc, train_reward, refine (per task) and evaluate."""

from __future__ import annotations

import copy
import tempfile
from dataclasses import replace
from pathlib import Path
from typing import Any

from pipelines.params import Params
from pipelines.stages.collect import store_path
from pipelines.stages.world_model import EPISODES_DIR, MODEL_DIR
from w4rl_core.atomic import write_json_atomic
from w4rl_core.data.collect import CollectConfig
from w4rl_core.data.windows import FrameWindows, load_windows


def bc_dir(task: str) -> str:
    return f"data/models/bc/{task}"


def reward_dir(task: str) -> str:
    return f"data/models/reward/{task}"


def refined_dir(task: str) -> str:
    return f"data/models/refined/{task}"


def _windows(params: Params, task: str, kinds: tuple[str, ...]) -> tuple[FrameWindows, FrameWindows]:
    wm = params.world_model
    stores = [store_path(EPISODES_DIR, task, k) for k in kinds if params.collect.episodes.get(k, 0) > 0]
    return load_windows(stores, wm.image_size, wm.val_fraction, wm.split_seed)


def _meta(params: Params, task: str) -> dict[str, Any]:
    return {"task": task, "profile": params.profile.name, "smoke_scale": params.profile.smoke_scale}


def train_bc(params: Params, task: str, progress: bool = False) -> dict[str, Any]:
    from w4rl_core.models.policy import PolicyConfig, save_policy
    from w4rl_core.train.bc import train_bc as fit_bc
    from w4rl_core.train.supervised import SupervisedConfig

    train, val = _windows(params, task, ("expert",))
    config = PolicyConfig(action_low=train.action_low, action_high=train.action_high, cnn=params.policy_cnn(),
                          log_std_min=params.policy.log_std_min, log_std_max=params.policy.log_std_max)
    policy, report = fit_bc(config, SupervisedConfig(**params.policy.train), train, val, progress)
    metrics = {**_meta(params, task), "train": report["train"], "val": report["val"],
               "train_frames": report["train_frames"], "val_frames": report["val_frames"]}
    save_policy(bc_dir(task), policy, meta=metrics)
    write_json_atomic(f"metrics/bc/{task}.json", metrics)
    return metrics


def train_reward(params: Params, task: str, progress: bool = False) -> dict[str, Any]:
    from w4rl_core.models.policy import save_classifier
    from w4rl_core.train.reward import train_classifier
    from w4rl_core.train.supervised import SupervisedConfig

    train, val = _windows(params, task, ("expert", "policy"))
    clf, report = train_classifier(params.reward_cnn(), SupervisedConfig(**params.reward.train), train, val, progress)
    metrics = {**_meta(params, task), "train": report["train"], "val": report["val"]}
    save_classifier(reward_dir(task), clf, meta=metrics)
    write_json_atomic(f"metrics/reward/{task}.json", metrics)
    return metrics


def _eval_config(params: Params, task: str, episodes: int, seed: int, workers: int) -> CollectConfig:
    return params.collect.collect_config(task, "eval", episodes, seed=seed, workers=workers)


def refine(params: Params, task: str) -> dict[str, Any]:
    from w4rl_core.eval.policy_eval import evaluate_policy_in_sim
    from w4rl_core.imagine.env import ImaginedEnv
    from w4rl_core.models.policy import load_classifier, load_policy, save_policy
    from w4rl_core.models.world_model import load_world_model
    from w4rl_core.train.ppo import refine as run_ppo
    from w4rl_core.train.world_model import resolve_device

    config = params.refine.ppo_config()
    device = resolve_device(config.device)
    world_model, _ = load_world_model(MODEL_DIR, device)
    classifier, _ = load_classifier(reward_dir(task))
    classifier = classifier.to(device)
    for p in classifier.parameters():
        p.requires_grad_(False)
    policy, _ = load_policy(bc_dir(task))
    contexts, _ = _windows(params, task, ("expert", "policy"))
    expert, _ = _windows(params, task, ("expert",))
    env = ImaginedEnv(world_model, contexts, config.n_envs, reward_fn=classifier.prob, device=device,
                      accel=params.world_model.accel_config())

    def real_eval(candidate, iteration: int) -> float:
        with tempfile.TemporaryDirectory() as tmp:
            save_policy(Path(tmp) / "policy", copy.deepcopy(candidate).cpu())
            summary = evaluate_policy_in_sim(
                Path(tmp) / "policy",
                _eval_config(params, task, params.refine.eval_episodes, params.refine.eval_seed, workers=1),
                Path(tmp) / "eval.zarr",
            )
        return summary["success_rate"]

    refined, summary = run_ppo(policy, env, expert.rgb, expert.action, config, f"plots/refine/{task}.csv",
                               real_eval=real_eval, frozen=(world_model, classifier))
    metrics = {**_meta(params, task), **summary, "imagination_path": env.accel_label,
               "real_episodes_used": summary["real_evaluations"] * params.refine.eval_episodes}
    save_policy(refined_dir(task), refined, meta=metrics)
    write_json_atomic(f"metrics/refine/{task}.json", metrics)
    return metrics


def evaluate(params: Params) -> dict[str, Any]:
    import json

    from w4rl_core.eval.policy_eval import evaluate_policy_in_sim, success_summary, write_videos

    e = params.evaluate
    per_task: dict[str, Any] = {}
    pooled: dict[str, list[bool]] = {"bc": [], "refined": []}
    videos: list[str] = []
    for task in params.collect.tasks:
        entry: dict[str, Any] = {}
        for name, path in (("bc", bc_dir(task)), ("refined", refined_dir(task))):
            store = f"data/eval/{task}/{name}.zarr"
            # Same base seed for both policies: paired episodes (same goals), a fairer comparison.
            entry[name] = evaluate_policy_in_sim(path, _eval_config(params, task, e.episodes, e.seed, e.workers),
                                                 store, deterministic=e.deterministic)
            pooled[name] += [True] * entry[name]["successes"] + [False] * (entry[name]["episodes"] - entry[name]["successes"])
            videos += write_videos(store, f"reports/policy/{task}", name, e.videos)
        refine_metrics = json.loads(Path(f"metrics/refine/{task}.json").read_text())
        entry["imagined_success_start"] = refine_metrics["imagined_success_start"]
        entry["imagined_success_end"] = refine_metrics["imagined_success_end"]
        entry["real_success_periodic"] = refine_metrics["real_success_periodic"]
        # Imagined minus real success of the refined policy: large and positive = the policy learned
        # to fool the world model and the classifier.
        entry["exploitation_gap"] = entry["imagined_success_end"] - entry["refined"]["success_rate"]
        entry["uplift"] = entry["refined"]["success_rate"] - entry["bc"]["success_rate"]
        per_task[task] = entry
    overall = {name: success_summary(v) for name, v in pooled.items()}
    overall["uplift"] = overall["refined"]["success_rate"] - overall["bc"]["success_rate"]
    metrics = {"profile": params.profile.name, "smoke_scale": params.profile.smoke_scale,
               "episodes_per_task": e.episodes, "per_task": per_task, "overall": overall,
               "videos": sorted(videos)}
    write_json_atomic("metrics/policy.json", metrics)
    return metrics


def with_device(params: Params, device: str | None) -> Params:
    """params with every stage's device overridden (the CLI's --device)."""
    if not device:
        return params
    return replace(
        params,
        policy=replace(params.policy, train={**params.policy.train, "device": device}),
        reward=replace(params.reward, train={**params.reward.train, "device": device}),
        refine=replace(params.refine, ppo={**params.refine.ppo, "device": device}),
    )
