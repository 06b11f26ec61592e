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


def _windows(params: Params, task: str, kinds: tuple[str, ...],
             fed_back: bool = False) -> tuple[FrameWindows, FrameWindows]:
    """The task's stores of `kinds`; with fed_back (and `policy` among the kinds), also the
    evaluation episodes earlier flywheel rounds fed back: policy rollouts too, of later policies."""
    from pipelines.stages.flywheel import fed_back as fed_back_stores

    wm = params.world_model
    stores = [store_path(EPISODES_DIR, task, k) for k in kinds if params.collect.episodes.get(k, 0) > 0]
    if fed_back and "policy" in kinds:
        stores += fed_back_stores(params, task)
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

    from w4rl_core.train.reward import split_for_check

    from pipelines.stages.flywheel import warm_start

    train, val = _windows(params, task, params.reward.kinds, fed_back=True)
    # Half the held-out episodes choose the detector, the other half check it (out of sample).
    calibration, check = split_for_check(val)
    frames = {"real": len(train.rgb), "imagined": 0}
    uses_world_model = params.reward.train_on == "real_and_imagined" or params.reward.calibrate_on == "imagined"
    imagine = _imagined_twins(params) if uses_world_model else None  # the world model, loaded once
    if params.reward.train_on == "real_and_imagined":
        twins = imagine(train)
        train, frames["imagined"] = FrameWindows.concat([train, twins]), len(twins.rgb)
    calibrate_on = imagine(calibration) if params.reward.calibrate_on == "imagined" else calibration
    log = CurveLog(reward_run(task))
    clf, report = train_classifier(params.reward_cnn(), SupervisedConfig(**params.reward.train), train, val, progress,
                                   calibrate_on=calibrate_on, balanced=params.reward.balanced, log=log,
                                   checkpoint_dir=checkpoint_dir("reward", task), check=check,
                                   init_from=warm_start(params, "reward", task))
    metrics = {**_meta(params, task), "kinds": list(params.reward.kinds), "calibrated_on": params.reward.calibrate_on,
               "flywheel_round": params.flywheel.round, "init_from": warm_start(params, "reward", task),
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


def eval_config(params: Params, task: str, role: str, episodes: int, seed: int, workers: int) -> CollectConfig:
    """Episodes on `role`'s scenes (selection or evaluation), scene j for episode j: every policy
    evaluated with the same config runs the same scenes with the same episode seeds (paired). On
    the robot of params.robot: the simulator, or a robot behind the bridge asked for those scenes."""
    return params.collect.collect_config(task, "eval", episodes, seed=seed, workers=workers,
                                         **params.scene_slice(role), **params.robot.collect_fields(task, role))


def scene_ids(params: Params, task: str, role: str, n: int) -> list[str]:
    """The ids of the first n scenes of `role` for `task`, without running an episode."""
    from w4rl_core.robots.metaworld_robot import pool_scene_ids
    from w4rl_core.robots.scenes import ScenePool

    where = params.scene_slice(role)
    return pool_scene_ids(task, ScenePool(where["scene_seeds"]), where["first_scene"], n)


def refine(params: Params, task: str) -> dict[str, Any]:
    """PPO from the task's BC policy once per refine.seeds entry, if the trust check lets it start
    (w4rl_core/train/trust.py: BC's imagined success on held-out recorded rollouts against their
    real success; beyond the tolerance every seed returns BC, with the reason). Every seed's policy
    and metrics are kept. From imagination alone (ppo.select_by_real false, the method) no real
    episode runs and the promotion candidate is the first seed, a rule fixed before any outcome;
    with select_by_real (opt-in) periodic real checks on the selection scenes, which the final
    evaluation refuses, choose each seed's checkpoint and the candidate seed, and are counted in
    real_episodes_used."""
    from w4rl_core.imagine.env import ImaginedEnv
    from w4rl_core.models.model_files import check_fits
    from w4rl_core.models.policy import load_policy, save_policy
    from w4rl_core.models.success import load_success_detector
    from w4rl_core.train.ppo import refine as run_ppo
    from w4rl_core.train.ppo import returned_bc
    from w4rl_core.train.tracking import CurveLog, timings_of, without_timings
    from w4rl_core.train.world_model import resolve_device

    from pipelines.stages.flywheel import refine_start

    contexts, _ = _windows(params, task, ("expert", "policy"), fed_back=True)
    expert, _, _ = _demonstrations(params, task)
    start = refine_start(params, task)  # BC, or the flywheel's previous round's promoted policy
    runs: dict[int, tuple[Any, dict[str, Any]]] = {}
    # The scenes the real checks run on (every check the same): listed from the params, not from the
    # episodes, so a run resumed after its last check lists them too. The final evaluation refuses them.
    n_checks = params.refine.real_episodes_per_check(params)
    selection_scenes = set(scene_ids(params, task, "selection", n_checks)) if n_checks else set()
    # A checkpoint whose best policy was chosen on other scenes (scenes.selection edited after a kill)
    # must not be resumed: what the checks run is part of the refinement checkpoint's identity.
    real_eval_id = json.dumps({"scenes": sorted(selection_scenes), "episodes": params.refine.eval_episodes,
                               "seed": params.refine.eval_seed})
    trust = _trust_check(params, task)
    if not trust["passed"]:
        import logging

        logging.getLogger("w4rl.refine").warning("%s: %s", task, trust["reason"])
    log = CurveLog(refine_run(task), step_key="iteration")
    # The check's measurement, at iteration 0 (before any update): also what the run's plots hold
    # when it refused (every declared output exists).
    log.scope("trust").log({"iteration": 0, "held_out_episodes": trust["episodes"],
                            "imagined_success": trust["imagined"], "real_success": trust["real"]})
    for seed in params.refine.seeds:
        config = params.refine.ppo_config(horizon=params.episode_horizon, seed=seed)
        policy, _ = load_policy(start, task=task)
        device = resolve_device(config.device)
        world_model, _ = load_fitting_world_model(params, device)
        detector = load_success_detector(reward_dir(task), device)
        check_fits(start, "the policy refinement starts from",
                   action_dim=(policy.action_dim, len(world_model.config.action_low)))
        env = ImaginedEnv(world_model, contexts, config.n_envs, success_fn=detector, device=device,
                          accel=params.world_model.accel_config())
        if not trust["passed"]:  # BC's weights, with BC's like-for-like imagined success measured all the same
            kept, summary = returned_bc(policy, env, config, trust["reason"])
            runs[seed] = (kept, summary | {"seed": seed, "real_episodes_used": 0})
            continue
        real_eval = _real_check(params, task, selection_scenes) if params.refine.checks_run(config) else None
        # Every seed keeps its state until the stage's outputs are in place: a kill during seed k
        # resumes seed k, and the seeds before it return at once from their last iteration.
        refined, summary = run_ppo(policy, env, expert.rgb, expert.action, config, log.scope(f"seed{seed}"),
                                   real_eval=real_eval, frozen=(world_model, detector.classifier),
                                   checkpoint_dir=f"{checkpoint_dir('refine', task)}/seed{seed}",
                                   real_eval_id=real_eval_id)
        summary |= {"seed": seed, "imagination_path": env.accel_label, "detector": detector.config.__dict__,
                    "real_episodes_used": summary["real_evaluations"] * params.refine.eval_episodes}
        runs[seed] = (refined, summary)

    by_real = params.refine.checks_run(params.refine.ppo_config(horizon=params.episode_horizon, seed=0))

    def validation_score(seed: int) -> float:
        score = runs[seed][1]["selected_real_success"]
        return float("-inf") if score is None or not by_real else score

    candidate = max(params.refine.seeds, key=lambda s: (validation_score(s), -params.refine.seeds.index(s)))
    # Timings go to the DVCLive summary; the record and the policies' metadata hold what the run decided.
    timings = {f"seed{s}": timings_of(runs[s][1]) for s in params.refine.seeds}
    runs = {s: (refined, without_timings(summary)) for s, (refined, summary) in runs.items()}
    metrics = {**_meta(params, task), "seeds": [runs[s][1] for s in params.refine.seeds], "candidate_seed": candidate,
               "candidate_rule": ("best periodic real success of the returned policy (scenes.selection), first seed "
                                  "on ties") if by_real else "the first seed of refine.seeds (no real episode chooses)",
               "trust": trust, "started_from": start, "flywheel_round": params.flywheel.round,
               "reward_calibration": reward_metrics(task)["reward_calibration"],
               # Scenes the real checks ran on (scenes.selection): the final evaluation refuses them.
               "selection_scenes": sorted(selection_scenes)}
    with atomic_path(refined_dir(task)) as tmp:
        save_policy(tmp, runs[candidate][0], meta=metrics | {"seed": candidate})
        for seed in params.refine.seeds:
            save_policy(tmp / "seeds" / f"seed{seed}", runs[seed][0], meta=runs[seed][1])
    log.finish(timings)
    _warn_calibration(task, metrics)
    write_json_atomic(refine_metrics_path(task), metrics)
    shutil.rmtree(checkpoint_dir("refine", task), ignore_errors=True)
    return metrics


def _trust_check(params: Params, task: str) -> dict[str, Any]:
    """BC's imagined success from the recorded starts of its held-out real rollouts (the `policy`
    episodes none of the models trained on), rolled as collection rolled them, against their
    recorded success (w4rl_core/train/trust.py). No new real episode."""
    from w4rl_core.imagine.env import ImaginedEnv
    from w4rl_core.models.policy import load_policy
    from w4rl_core.models.success import load_success_detector
    from w4rl_core.train.trust import check_trust, trust_verdict
    from w4rl_core.train.world_model import resolve_device

    config = params.refine.trust_config()
    if params.collect.episodes.get("policy", 0) == 0:
        return trust_verdict([], [], config) | {"held_out_of": "no BC rollouts collected (collect.episodes.policy: 0)"}
    _, held_out = _windows(params, task, ("policy",))
    t = params.world_model.context_frames
    held_out = held_out.episodes([i for i, (s, e) in enumerate(zip(held_out.episode_starts, held_out.episode_ends))
                                  if e - s >= t])
    real = [bool(x) for x in held_out.succeeded()]
    where = {"held_out_of": "collect.episodes.policy (world_model.val_fraction split; no model trained on them)"}
    if len(real) < config.min_episodes:
        return trust_verdict([], real, config) | where
    ppo = params.refine.ppo_config(horizon=params.episode_horizon, seed=0)
    device = resolve_device(ppo.device)
    world_model, _ = load_fitting_world_model(params, device)
    detector = load_success_detector(reward_dir(task), device)
    policy, _ = load_policy(bc_dir(task), task=task)
    env = ImaginedEnv(world_model, held_out, min(ppo.n_envs, len(real) * config.samples_per_start),
                      success_fn=detector, device=device, accel=params.world_model.accel_config())
    return check_trust(policy.to(device), env, real, params.episode_horizon, config,
                       deterministic=params.policy.rollout_deterministic) | where


def _real_check(params: Params, task: str, selection_scenes: set[str]) -> Callable[[Any, int], float]:
    """The periodic real check of the opt-in select_by_real mode: the candidate policy on the first
    refine.eval_episodes scenes of scenes.selection (the same at every check)."""
    from w4rl_core.eval.policy_eval import evaluate_policy
    from w4rl_core.models.policy import save_policy

    def real_eval(candidate, iteration: int) -> float:
        with tempfile.TemporaryDirectory() as tmp:
            save_policy(Path(tmp) / "policy", copy.deepcopy(candidate).cpu())
            summary = evaluate_policy(
                Path(tmp) / "policy",
                eval_config(params, task, "selection", params.refine.eval_episodes, params.refine.eval_seed,
                             workers=1),
                Path(tmp) / "eval.zarr", progress=False,  # a few episodes, often: the PPO bar covers it
            )
        if not set(summary["scenes"]) <= selection_scenes:  # the listing above must be what ran
            raise RuntimeError(f"{task}: a real check ran scenes outside scenes.selection's listing")
        return summary["success_rate"]

    return real_eval


def _warn_calibration(task: str, metrics: dict[str, Any], tolerance: float = 0.15) -> None:
    """Refinement optimises the detector's success: say so when it is off from the real success on
    episodes that did not choose it. (BC's imagined success against its real one is checked by
    evaluate, where both come from the same, deterministic policy.)"""
    import logging

    cal = metrics["reward_calibration"]
    if cal.get("gap") is not None and abs(cal["gap"]) > tolerance:
        logging.getLogger("w4rl.refine").warning(
            "%s: the success detector calls %.2f of held-out BC episodes successful where %.2f are: refinement "
            "optimises a miscalibrated reward", task, cal["classifier_success"], cal["true_success"])


def evaluate(params: Params) -> dict[str, Any]:
    """BC and every refinement seed on the same distinct, unseen evaluation scenes (scenes.evaluation),
    each scene once per policy with the same episode seed; uplifts with intervals that resample
    refinement seeds and scenes (w4rl_core/eval/intervals.py), per seed, per task and pooled.

    Refuses to report when an evaluation scene repeats, or is a scene of the task's training
    episodes or of refinement's real checks: nothing here may be chosen or learnt on test scenes.
    """
    # data/eval and reports/policy are built in temporaries and moved into place whole: a killed
    # evaluation must not leave BC's store without the refined ones (DVC would see a half output).
    with atomic_path(EVAL_DIR) as eval_root, atomic_path(POLICY_REPORT) as video_root:
        metrics = _evaluate_into(params, eval_root, video_root)
    write_json_atomic(POLICY_METRICS, metrics)
    return metrics


class SceneLeak(RuntimeError):
    """The evaluation's scenes repeat or overlap scenes that trained or chose the policy."""


def training_scenes(params: Params, task: str) -> set[str]:
    """Scenes of every episode the task's models were trained on (demos, BC rollouts, and the
    evaluation episodes earlier flywheel rounds fed back)."""
    from w4rl_core.data.store import EpisodeStore

    scenes: set[str] = set()
    for kind, count in params.collect.episodes.items():
        if count > 0:
            path = store_path(EPISODES_DIR, task, kind)
            recorded = EpisodeStore.open(path).episode_scene
            if "" in recorded:  # an unknown scene could be any evaluation scene: no overlap can be claimed
                raise SceneLeak(f"evaluation of {task}: {path}: {recorded.count('')} training episodes record "
                                "no scene (meta/episode_scene), so overlap with the evaluation scenes is unknown; "
                                "re-collect them with this version")
            scenes.update(recorded)
    from pipelines.stages.flywheel import fed_back  # earlier rounds' evaluation episodes train now

    for path in fed_back(params, task):
        scenes.update(EpisodeStore.open(path).episode_scene)
    return scenes


def scene_report(task: str, scenes: list[str], training: set[str], selection: set[str]) -> dict[str, Any]:
    from w4rl_core.robots.scenes import scene_overlap

    report = {"episodes_per_policy": len(scenes), "distinct": len(set(scenes) - {""}),
              "overlap_selection": scene_overlap(scenes, selection), "overlap_training": scene_overlap(scenes, training),
              "protocol": "unseen: scenes.evaluation, disjoint from training and selection scenes, each once per policy"}
    problems = []
    if report["distinct"] != report["episodes_per_policy"]:
        problems.append(f"{report['episodes_per_policy'] - report['distinct']} episodes repeat a scene or record none")
    if report["overlap_training"]:
        problems.append(f"{report['overlap_training']} scenes are scenes of the task's training episodes")
    if report["overlap_selection"]:
        problems.append(f"{report['overlap_selection']} scenes are scenes refinement's real checks ran on")
    if problems:
        raise SceneLeak(f"evaluation of {task}: {'; '.join(problems)}; give scenes.evaluation benchmark seeds "
                        "that no other role uses")
    return report


NOT_EVALUATED = "no evaluation robot configured (robot.evaluation: false)"


def _evaluate_into(params: Params, eval_root: Path, video_root: Path) -> dict[str, Any]:
    if not params.robot.evaluation:  # nothing measured: a record that says so, read by the gate
        eval_root.mkdir(parents=True)
        video_root.mkdir(parents=True)
        return {"profile": params.profile.name, "smoke_scale": params.profile.smoke_scale, "evaluated": False,
                "not_evaluated": NOT_EVALUATED, "per_task": {t: {"not_evaluated": NOT_EVALUATED}
                                                             for t in params.collect.tasks},
                "videos": []}
    from w4rl_core.eval.intervals import TaskOutcomes, paired_interval, pooled_interval, seed_interval, task_interval
    from w4rl_core.eval.policy_eval import evaluate_policy, success_summary, write_videos
    from w4rl_core.models.success import load_success_detector

    e, seeds = params.evaluate, params.refine.seeds
    n = e.episodes
    video_root.mkdir(parents=True, exist_ok=True)  # an output even when evaluate.videos is 0
    per_task: dict[str, Any] = {}
    outcomes: list[TaskOutcomes] = []
    videos: list[str] = []
    for task in params.collect.tasks:
        refine_metrics = json.loads(Path(refine_metrics_path(task)).read_text())
        if "selection_scenes" not in refine_metrics:  # a record from before scenes: overlap unknown
            raise SceneLeak(f"evaluation of {task}: {refine_metrics_path(task)} lists no selection_scenes "
                            "(written by an older version): re-run refine")
        selection, training = set(refine_metrics["selection_scenes"]), training_scenes(params, task)
        config = eval_config(params, task, "evaluation", n, e.seed, e.workers)
        bc_store = str(eval_root / task / "bc.zarr")
        bc = evaluate_policy(bc_dir(task), config, bc_store, deterministic=e.deterministic)
        videos += write_videos(bc_store, video_root / task, "bc", e.videos)
        scenes = scene_report(task, bc["scenes"], training, selection)
        refined: dict[int, dict[str, Any]] = {}
        for k, seed in enumerate(seeds):
            store = str(eval_root / task / f"refined_seed{seed}.zarr")
            refined[seed] = evaluate_policy(seed_dir(task, seed), config, store, deterministic=e.deterministic)
            if refined[seed]["scenes"] != bc["scenes"]:  # pairing is by scene: it must hold exactly
                raise SceneLeak(f"evaluation of {task}: seed {seed}'s episodes ran other scenes than BC's")
            if k == 0:
                videos += write_videos(store, video_root / task, "refined", e.videos)
        previous = _evaluate_previous(params, task, config, eval_root, bc["scenes"])
        task_outcomes = TaskOutcomes(task, tuple(bc["scenes"]), tuple(bc["per_episode"]),
                                     {s: tuple(refined[s]["per_episode"]) for s in seeds})
        outcomes.append(task_outcomes)
        seed_rows = []
        for seed in seeds:
            run = next(r for r in refine_metrics["seeds"] if r["seed"] == seed)
            res, interval = refined[seed], seed_interval(task_outcomes, seed)
            seed_rows.append({"seed": seed, **{key: res[key] for key in ("episodes", "successes", "success_rate", "ci95")},
                              "distinct_scenes": len(set(res["scenes"])), "bc_success_rate": bc["success_rate"],
                              **_uplift_fields(interval),
                              # 0: refinement returned BC's own weights (nothing was gained)
                              "selected_iteration": run.get("selected_iteration"),
                              "real_episodes_used": run.get("real_episodes_used", 0),
                              "imagined_eval_refined": run["imagined_eval"]["refined"],
                              "imagined_eval_bc": run["imagined_eval"]["bc"]})
        detector = load_success_detector(reward_dir(task))
        refined_all = [x for s in seeds for x in refined[s]["per_episode"]]
        entry = {
            "scenes": scenes,
            "bc": {k: bc[k] for k in ("episodes", "successes", "success_rate", "ci95")},
            "refined": success_summary(refined_all),
            "seeds": seed_rows,
            "candidate": next(r for r in seed_rows if r["seed"] == refine_metrics["candidate_seed"]),
            **_uplift_fields(task_interval(task_outcomes)),
            "real_episodes_used": sum(r["real_episodes_used"] for r in seed_rows),
            # Whether refinement started: BC's imagined vs real success on its held-out rollouts.
            "trust": refine_metrics.get("trust"),
            # The reward refinement optimised, checked on these unseen real BC episodes.
            "reward_calibration": _calibration_on_store(detector, bc_store),
        }
        if previous is not None:  # the flywheel's round k against round k-1 on the same fresh scenes
            candidate_seed = refine_metrics["candidate_seed"]
            entry["previous"] = previous | {
                "candidate_vs_previous": paired_interval(previous["per_episode"], refined[candidate_seed]["per_episode"],
                                                         bc["scenes"])}
            del entry["previous"]["per_episode"]
        entry |= _imagined_vs_real(task, seed_rows, entry, e.deterministic)
        entry["real_success_periodic"] = {r["seed"]: r["real_success_periodic"] for r in refine_metrics["seeds"]}
        per_task[task] = entry
    pooled_refined = [x for o in outcomes for s in seeds for x in o.refined[s]]
    overall = {"bc": success_summary([x for o in outcomes for x in o.bc]), "refined": success_summary(pooled_refined),
               **_uplift_fields(pooled_interval(outcomes)), "seeds": list(seeds), "scenes_per_task": n,
               "real_episodes_used": sum(per_task[t]["real_episodes_used"] for t in params.collect.tasks)}
    return {"profile": params.profile.name, "smoke_scale": params.profile.smoke_scale,
            "episodes_per_policy": n, "per_task": per_task, "overall": overall, "videos": sorted(videos)}


def _evaluate_previous(params: Params, task: str, config: CollectConfig, eval_root: Path,
                       scenes: list[str]) -> dict[str, Any] | None:
    """The flywheel's previous round's candidate on this round's evaluation scenes (its episodes
    are fed back with the others): None in round 0."""
    from pipelines.stages.flywheel import previous_policy
    from w4rl_core.eval.policy_eval import evaluate_policy
    from w4rl_core.registry.registry import Registry

    path = previous_policy(params, task)
    if path is None:
        return None
    result = evaluate_policy(path, config, str(eval_root / task / "previous.zarr"),
                             deterministic=params.evaluate.deterministic)
    if result["scenes"] != scenes:
        raise SceneLeak(f"evaluation of {task}: the previous round's policy ran other scenes than BC's")
    return {"policy_id": Registry.policy_id(task, path), "round": params.flywheel.round - 1, "path": path,
            **{k: result[k] for k in ("episodes", "successes", "success_rate", "ci95", "per_episode")}}


def _uplift_fields(interval: dict[str, Any]) -> dict[str, Any]:
    """An interval result (w4rl_core/eval/intervals.py) as the metric keys the gate and reports read."""
    return {"pairs": interval["pairs"], "uplift": interval["uplift"], "uplift_ci95": interval["ci95"],
            "pairs_refined_only": interval["pairs_refined_only"], "pairs_bc_only": interval["pairs_bc_only"],
            "interval": {k: interval[k] for k in ("method", "seeds", "scenes", "se", "seed_variation_estimable",
                                                  "warning", "note") if k in interval}}


def _imagined_vs_real(task: str, seed_rows: list[dict[str, Any]], entry: dict[str, Any],
                      deterministic: bool, tolerance: float = 0.15) -> dict[str, Any]:
    """BC's and the refined policies' imagined success next to their real success. Like for like
    only when the real evaluation is deterministic too (the imagined one always is)."""
    import logging

    out: dict[str, Any] = {}
    if not deterministic:
        return {"imagined_vs_real": "not compared: evaluate.deterministic is false, imagined evaluation is deterministic"}
    imagined_bc = [r["imagined_eval_bc"] for r in seed_rows if r["imagined_eval_bc"] is not None]
    imagined_refined = [r["imagined_eval_refined"] for r in seed_rows if r["imagined_eval_refined"] is not None]
    if imagined_bc:
        out["imagined_success_bc"] = sum(imagined_bc) / len(imagined_bc)
        out["calibration_gap"] = out["imagined_success_bc"] - entry["bc"]["success_rate"]
        if abs(out["calibration_gap"]) > tolerance:
            logging.getLogger("w4rl.evaluate").warning(
                "%s: BC's imagined success %.2f is off its real success %.2f (same deterministic policy): refinement "
                "optimised a reward the robot disagrees with", task, out["imagined_success_bc"], entry["bc"]["success_rate"])
    if imagined_refined:
        out["imagined_success_refined"] = sum(imagined_refined) / len(imagined_refined)
        # Large and positive: the policy learned to fool the world model and the classifier.
        out["exploitation_gap"] = out["imagined_success_refined"] - entry["refined"]["success_rate"]
    return out


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
