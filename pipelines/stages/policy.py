"""DVC stages of the policy side: train_bc, train_reward, refine (per task, every seed) and evaluate."""

from __future__ import annotations

import copy
import json
import shutil
import tempfile
from collections.abc import Callable
from dataclasses import replace
from pathlib import Path
from typing import Any

import numpy as np

from pipelines.params import Params
from pipelines.paths import (EPISODES_DIR, EVAL_DIR, POLICY_METRICS, POLICY_REPORT, bc_dir, bc_run, checkpoint_dir,
                             refine_metrics_path, refine_run, refined_dir, reward_dir, reward_run, seed_dir, store_path)
from pipelines.stages.world_model import load_fitting_world_model
from w4rl_core.atomic import atomic_path, write_json_atomic
from w4rl_core.data.collect import CollectConfig
from w4rl_core.data.windows import FrameWindows, load_windows


def reward_metrics(task: str) -> dict[str, Any]:
    return json.loads(Path(reward_run(task), "metrics.json").read_text())


def _windows(params: Params, task: str, kinds: tuple[str, ...]) -> tuple[FrameWindows, FrameWindows]:
    wm = params.world_model
    stores = [store_path(EPISODES_DIR, task, k) for k in kinds if params.collect.episodes.get(k, 0) > 0]
    return load_windows(stores, wm.image_size, wm.val_fraction, wm.split_seed)


def _demonstrations(params: Params, task: str) -> tuple[FrameWindows, FrameWindows, int]:
    """The expert episodes BC clones and refinement's BC term anchors to (training split; only the
    successful ones with policy.successful_demos_only), the held-out ones, and how many there were."""
    train, val = _windows(params, task, ("expert",))
    demos = train.n_episodes
    if params.policy.successful_demos_only:  # a failed demonstration teaches failing
        train = train.episodes(np.flatnonzero(train.succeeded()))
        if train.n_episodes == 0:
            raise ValueError(f"{task}: none of the {demos} expert training episodes succeeded; collect more "
                             "(collect.episodes.expert) or set policy.successful_demos_only: false")
    return train, val, demos


def _meta(params: Params, task: str) -> dict[str, Any]:
    return {"task": task, "profile": params.profile.name, "smoke_scale": params.profile.smoke_scale}


def train_bc(params: Params, task: str, progress: bool = False) -> dict[str, Any]:
    from w4rl_core.models.policy import PolicyConfig, save_policy
    from w4rl_core.train.bc import train_bc as fit_bc
    from w4rl_core.train.supervised import SupervisedConfig
    from w4rl_core.train.tracking import CurveLog

    train, val, demos = _demonstrations(params, task)
    config = PolicyConfig(action_low=train.action_low, action_high=train.action_high, cnn=params.policy_cnn(),
                          log_std_min=params.policy.log_std_min, log_std_max=params.policy.log_std_max)
    log = CurveLog(bc_run(task))
    policy, report = fit_bc(config, SupervisedConfig(**params.policy.train), train, val, progress, log,
                            checkpoint_dir("bc", task))
    metrics = {**_meta(params, task), "train": report["train"], "val": report["val"],
               "train_frames": report["train_frames"], "val_frames": report["val_frames"],
               "demonstrations": demos, "demonstrations_used": train.n_episodes}
    save_policy(bc_dir(task), policy, meta=metrics)
    log.finish(metrics)
    shutil.rmtree(checkpoint_dir("bc", task), ignore_errors=True)
    return metrics


def train_reward(params: Params, task: str, progress: bool = False) -> dict[str, Any]:
    from w4rl_core.models.policy import save_classifier
    from w4rl_core.train.reward import train_classifier
    from w4rl_core.train.supervised import SupervisedConfig
    from w4rl_core.train.tracking import CurveLog

    train, val = _windows(params, task, params.reward.kinds)
    frames = {"real": len(train.rgb), "imagined": 0}
    uses_world_model = params.reward.train_on == "real_and_imagined" or params.reward.calibrate_on == "imagined"
    imagine = _imagined_twins(params) if uses_world_model else None  # the world model, loaded once
    if params.reward.train_on == "real_and_imagined":
        twins = imagine(train)
        train, frames["imagined"] = FrameWindows.concat([train, twins]), len(twins.rgb)
    calibrate_on = None
    if params.reward.calibrate_on == "imagined":
        calibrate_on = imagine(val)
    log = CurveLog(reward_run(task))
    clf, report = train_classifier(params.reward_cnn(), SupervisedConfig(**params.reward.train), train, val, progress,
                                   calibrate_on=calibrate_on, balanced=params.reward.balanced, log=log,
                                   checkpoint_dir=checkpoint_dir("reward", task))
    metrics = {**_meta(params, task), "kinds": list(params.reward.kinds), "calibrated_on": params.reward.calibrate_on,
               "trained_on": params.reward.train_on, "train_frames": frames,
               **{k: report[k] for k in ("train", "val", "detector", "reward_calibration", "episode_calibration_all",
                                         "calibration_grid")}}
    save_classifier(reward_dir(task), clf, meta=metrics)
    log.finish(metrics)
    shutil.rmtree(checkpoint_dir("reward", task), ignore_errors=True)
    return metrics


def _imagined_twins(params: Params) -> Callable[[FrameWindows], FrameWindows]:
    """episodes -> the world model's open-loop replays of them over the refinement horizon, sampled
    the way refinement samples (w4rl_core/imagine/replay.py)."""
    from w4rl_core.imagine.replay import imagined_twins
    from w4rl_core.models.accel import FastSampler
    from w4rl_core.train.world_model import resolve_device

    device = resolve_device(params.world_model.train.get("device", "auto"))
    model, _ = load_fitting_world_model(params, device)
    sample = FastSampler(model, model.config.sampler, device, params.world_model.accel_config())
    return lambda episodes: imagined_twins(sample, model.config.context_frames, episodes, params.episode_horizon,
                                           device)


def _eval_config(params: Params, task: str, episodes: int, seed: int, workers: int, first: int = 0) -> CollectConfig:
    return params.collect.collect_config(task, "eval", episodes, seed=seed, workers=workers, first_episode=first)


def refine(params: Params, task: str) -> dict[str, Any]:
    """PPO from the task's BC policy once per refine.seeds entry. Every seed's policy and metrics are
    kept; the promotion candidate is the seed with the best periodic real success (episodes disjoint
    from the final evaluation's), the first seed on ties or without periodic evaluation."""
    from w4rl_core.eval.policy_eval import evaluate_policy_in_sim
    from w4rl_core.imagine.env import ImaginedEnv
    from w4rl_core.models.model_files import check_fits
    from w4rl_core.models.policy import load_policy, save_policy
    from w4rl_core.models.success import load_success_detector
    from w4rl_core.train.ppo import refine as run_ppo
    from w4rl_core.train.tracking import CurveLog, timings_of, without_timings
    from w4rl_core.train.world_model import resolve_device

    contexts, _ = _windows(params, task, ("expert", "policy"))
    expert, _, _ = _demonstrations(params, task)
    runs: dict[int, tuple[Any, dict[str, Any]]] = {}
    log = CurveLog(refine_run(task), step_key="iteration")
    for seed in params.refine.seeds:
        config = params.refine.ppo_config(horizon=params.episode_horizon, seed=seed)
        device = resolve_device(config.device)
        world_model, _ = load_fitting_world_model(params, device)
        detector = load_success_detector(reward_dir(task), device)
        policy, _ = load_policy(bc_dir(task), task=task)
        check_fits(bc_dir(task), "BC policy", action_dim=(policy.action_dim, len(world_model.config.action_low)))
        env = ImaginedEnv(world_model, contexts, config.n_envs, success_fn=detector, device=device,
                          accel=params.world_model.accel_config())

        def real_eval(candidate, iteration: int) -> float:
            with tempfile.TemporaryDirectory() as tmp:
                save_policy(Path(tmp) / "policy", copy.deepcopy(candidate).cpu())
                summary = evaluate_policy_in_sim(
                    Path(tmp) / "policy",
                    _eval_config(params, task, params.refine.eval_episodes, params.refine.eval_seed, workers=1),
                    Path(tmp) / "eval.zarr", progress=False,  # a few episodes, often: the PPO bar covers it
                )
            return summary["success_rate"]

        # Every seed keeps its state until the stage's outputs are in place: a kill during seed k
        # resumes seed k, and the seeds before it return at once from their last iteration.
        refined, summary = run_ppo(policy, env, expert.rgb, expert.action, config, log.scope(f"seed{seed}"),
                                   real_eval=real_eval, frozen=(world_model, detector.classifier),
                                   checkpoint_dir=f"{checkpoint_dir('refine', task)}/seed{seed}")
        summary |= {"seed": seed, "imagination_path": env.accel_label, "detector": detector.config.__dict__,
                    "real_episodes_used": summary["real_evaluations"] * params.refine.eval_episodes}
        runs[seed] = (refined, summary)

    def validation_score(seed: int) -> float:
        score = runs[seed][1]["selected_real_success"]
        return float("-inf") if score is None else score

    candidate = max(params.refine.seeds, key=lambda s: (validation_score(s), -params.refine.seeds.index(s)))
    # Timings go to the DVCLive summary; the record and the policies' metadata hold what the run decided.
    timings = {f"seed{s}": timings_of(runs[s][1]) for s in params.refine.seeds}
    runs = {s: (refined, without_timings(summary)) for s, (refined, summary) in runs.items()}
    metrics = {**_meta(params, task), "seeds": [runs[s][1] for s in params.refine.seeds], "candidate_seed": candidate,
               "candidate_rule": "best periodic real success of the returned policy (refine.eval_seed episodes), "
                                 "first seed on ties",
               "reward_calibration": reward_metrics(task)["reward_calibration"]}
    with atomic_path(refined_dir(task)) as tmp:
        save_policy(tmp, runs[candidate][0], meta=metrics | {"seed": candidate})
        for seed in params.refine.seeds:
            save_policy(tmp / "seeds" / f"seed{seed}", runs[seed][0], meta=runs[seed][1])
    log.finish(timings)
    _warn_calibration(task, metrics)
    write_json_atomic(refine_metrics_path(task), metrics)
    shutil.rmtree(checkpoint_dir("refine", task), ignore_errors=True)
    return metrics


def _warn_calibration(task: str, metrics: dict[str, Any], tolerance: float = 0.15) -> None:
    """Refinement optimises the detector's success: say so when it is off from the real success."""
    import logging

    log = logging.getLogger("w4rl.refine")
    cal = metrics["reward_calibration"]
    if cal.get("gap") is not None and abs(cal["gap"]) > tolerance:
        log.warning("%s: the success detector calls %.2f of held-out BC episodes successful where %.2f are: "
                    "refinement optimises a miscalibrated reward", task, cal["classifier_success"], cal["true_success"])
    for run in metrics["seeds"]:
        ev = run["imagined_eval"]
        if ev["bc"] is not None and cal.get("true_success") is not None and abs(ev["bc"] - cal["true_success"]) > tolerance:
            log.warning("%s seed %s: BC's imagined success %.2f is off its real success on held-out episodes %.2f",
                        task, run["seed"], ev["bc"], cal["true_success"])


def evaluate(params: Params) -> dict[str, Any]:
    """BC and every refinement seed on paired simulator episodes; paired uplift with its 95% interval.

    Seed k of refine.seeds runs episodes [k*N, (k+1)*N) of the evaluation seed (N = evaluate.episodes);
    BC runs all of them, so every refined episode has a BC twin on the same scene and goal.
    """
    # data/eval and reports/policy are built in temporaries and moved into place whole: a killed
    # evaluation must not leave BC's store without the refined ones (DVC would see a half output).
    with atomic_path(EVAL_DIR) as eval_root, atomic_path(POLICY_REPORT) as video_root:
        metrics = _evaluate_into(params, eval_root, video_root)
    write_json_atomic(POLICY_METRICS, metrics)
    return metrics


def _evaluate_into(params: Params, eval_root: Path, video_root: Path) -> dict[str, Any]:
    from w4rl_core.eval.policy_eval import evaluate_policy_in_sim, paired_uplift, success_summary, write_videos
    from w4rl_core.models.success import load_success_detector

    e, seeds = params.evaluate, params.refine.seeds
    n = e.episodes
    video_root.mkdir(parents=True, exist_ok=True)  # an output even when evaluate.videos is 0
    per_task: dict[str, Any] = {}
    pooled_bc: list[bool] = []
    pooled_refined: list[bool] = []
    videos: list[str] = []
    for task in params.collect.tasks:
        refine_metrics = json.loads(Path(refine_metrics_path(task)).read_text())
        bc_store = str(eval_root / task / "bc.zarr")
        bc = evaluate_policy_in_sim(bc_dir(task), _eval_config(params, task, n * len(seeds), e.seed, e.workers),
                                    bc_store, deterministic=e.deterministic)
        videos += write_videos(bc_store, video_root / task, "bc", e.videos)
        seed_rows, refined_all = [], []
        for k, seed in enumerate(seeds):
            store = str(eval_root / task / f"refined_seed{seed}.zarr")
            res = evaluate_policy_in_sim(seed_dir(task, seed), _eval_config(params, task, n, e.seed, e.workers, k * n),
                                         store, deterministic=e.deterministic)
            if k == 0:
                videos += write_videos(store, video_root / task, "refined", e.videos)
            twins = bc["per_episode"][k * n : (k + 1) * n]
            run = next(r for r in refine_metrics["seeds"] if r["seed"] == seed)
            seed_rows.append({"seed": seed, **{key: res[key] for key in ("episodes", "successes", "success_rate", "ci95")},
                              "bc_success_rate": sum(twins) / n, **paired_uplift(twins, res["per_episode"]),
                              "imagined_eval_refined": run["imagined_eval"]["refined"],
                              "imagined_eval_bc": run["imagined_eval"]["bc"]})
            refined_all += res["per_episode"]
        detector = load_success_detector(reward_dir(task))
        entry = {
            "bc": {k: bc[k] for k in ("episodes", "successes", "success_rate", "ci95")},
            "refined": success_summary(refined_all),
            "seeds": seed_rows,
            "candidate": next(r for r in seed_rows if r["seed"] == refine_metrics["candidate_seed"]),
            **paired_uplift(bc["per_episode"], refined_all),
            # The reward refinement optimised, checked on these unseen real BC episodes.
            "reward_calibration": _calibration_on_store(detector, bc_store),
        }
        imagined_bc = [r["imagined_eval_bc"] for r in seed_rows if r["imagined_eval_bc"] is not None]
        imagined_refined = [r["imagined_eval_refined"] for r in seed_rows if r["imagined_eval_refined"] is not None]
        if imagined_bc:
            # Like for like (deterministic policy, real starts, success anywhere): imagined minus real.
            entry["imagined_success_bc"] = sum(imagined_bc) / len(imagined_bc)
            entry["calibration_gap"] = entry["imagined_success_bc"] - entry["bc"]["success_rate"]
        if imagined_refined:
            entry["imagined_success_refined"] = sum(imagined_refined) / len(imagined_refined)
            # Large and positive: the policy learned to fool the world model and the classifier.
            entry["exploitation_gap"] = entry["imagined_success_refined"] - entry["refined"]["success_rate"]
        entry["real_success_periodic"] = {r["seed"]: r["real_success_periodic"] for r in refine_metrics["seeds"]}
        per_task[task] = entry
        pooled_bc += bc["per_episode"]
        pooled_refined += refined_all
    overall = {"bc": success_summary(pooled_bc), "refined": success_summary(pooled_refined),
               **paired_uplift(pooled_bc, pooled_refined), "seeds": list(seeds), "episodes_per_seed_and_task": n}
    metrics = {"profile": params.profile.name, "smoke_scale": params.profile.smoke_scale,
               "episodes_per_task": n * len(seeds), "per_task": per_task, "overall": overall,
               "videos": sorted(videos)}
    return metrics


def _calibration_on_store(detector, store_path_: str) -> dict[str, Any]:
    """True vs detected episode success on the real episodes of a store (frames resized as the
    policy sees them)."""
    import torch

    from w4rl_core.data.store import EpisodeStore
    from w4rl_core.models.policy import frames_from_rgb
    from w4rl_core.models.success import calibration_report

    store = EpisodeStore.open(store_path_)
    size = detector.classifier.cnn_config.image_size
    probs, truth = [], []
    with torch.no_grad():
        for i in range(store.n_episodes):
            ep = store.episode(i)
            probs.append(detector.classifier.prob(frames_from_rgb(ep.rgb, size)).numpy())
            truth.append(ep.succeeded)
    return calibration_report(probs, truth, detector.config) | {"episodes_of": "BC evaluation episodes (unseen)"}


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
