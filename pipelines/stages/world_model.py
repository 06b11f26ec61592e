"""DVC stages `train_world_model` and `eval_fidelity`."""

from __future__ import annotations

from typing import Any

from pipelines.params import Params
from pipelines.paths import (CHECKPOINT_DIR, EPISODES_DIR, FIDELITY_CURVE, FIDELITY_METRICS, FIDELITY_REPORT, MODEL_DIR,
                             TRAINING_RUN, expected_stores, reward_dir)
from w4rl_core.atomic import write_text_atomic
from w4rl_core.data.windows import FrameWindows, load_windows
from w4rl_core.train.batches import StreamedWindows


def load_fitting_world_model(params: Params, device: Any) -> tuple[Any, dict[str, Any]]:
    """The trained world model, refused (naming the mismatch) unless it was trained for the frames
    and context these params feed it."""
    from w4rl_core.models.model_files import check_fits
    from w4rl_core.models.world_model import load_world_model

    model, meta = load_world_model(MODEL_DIR, device)
    check_fits(MODEL_DIR, "world model", image_size=(model.config.unet.image_size, params.world_model.image_size),
               context_frames=(model.config.context_frames, params.world_model.context_frames))
    return model, meta


def training_stores(params: Params) -> list[str]:
    """Every store the world model learns from: the params' collections and the evaluation episodes
    earlier flywheel rounds fed back (pipelines/stages/flywheel.py)."""
    from pipelines.stages.flywheel import fed_back

    return expected_stores(params, EPISODES_DIR) + fed_back(params)


def load_split(params: Params, read_train: bool = True) -> tuple[FrameWindows, FrameWindows]:
    """(train, val) windows of the stores in memory; read_train=False: val alone (train empty)."""
    wm = params.world_model
    return load_windows(training_stores(params), wm.image_size, wm.val_fraction, wm.split_seed,
                        read_train=read_train)


def streamed_train(params: Params) -> StreamedWindows:
    """The train split of the same stores `load_split` reads, to stream (world_model.data.source: stream)."""
    wm = params.world_model
    return StreamedWindows(tuple(training_stores(params)), wm.image_size, wm.val_fraction,
                           wm.split_seed, wm.data_config().stream_config())


def train(params: Params, device: str | None = None, progress: bool = True) -> dict[str, Any]:
    from pipelines.stages.flywheel import warm_start
    from w4rl_core.train.world_model import train_world_model

    streaming = params.world_model.data_config().source == "stream"
    train_windows, val_windows = load_split(params, read_train=not streaming)  # val has the action bounds
    model_config = params.world_model.model_config(val_windows.action_low, val_windows.action_high)
    train_config = params.world_model.train_config()
    if device:
        train_config = type(train_config)(**{**train_config.__dict__, "device": device})
    init_from = warm_start(params, "world_model")  # round k > 0 of the flywheel: fine-tune round k-1's
    meta = {"profile": params.profile.name, "smoke_scale": params.profile.smoke_scale,
            "tasks": list(params.collect.tasks), "flywheel_round": params.flywheel.round, "init_from": init_from}
    train_data = streamed_train(params) if streaming else train_windows
    return train_world_model(model_config, train_config, train_data, val_windows, MODEL_DIR, CHECKPOINT_DIR,
                             TRAINING_RUN, meta=meta, progress=progress, accel=params.world_model.accel_config(),
                             init_from=init_from)


def fidelity(params: Params, device: str | None = None) -> dict[str, Any]:
    """Fidelity where refinement runs: its horizon, its sampling path, episodes from real starts; the
    success detector of each task (train_reward) compared on imagined vs real frames."""
    from w4rl_core.eval.fidelity import evaluate_fidelity
    from w4rl_core.models.accel import FastSampler
    from w4rl_core.models.success import load_success_detector
    from w4rl_core.train.world_model import resolve_device

    dev = resolve_device(device or params.world_model.train.get("device", "auto"))
    model, meta = load_fitting_world_model(params, dev)
    sampler = FastSampler(model, model.config.sampler, dev, params.world_model.accel_config())
    _, val_windows = load_split(params, read_train=False)  # held-out episodes only
    detectors = {task: load_success_detector(reward_dir(task), dev) for task in params.collect.tasks}
    extra = {"profile": params.profile.name, "smoke_scale": params.profile.smoke_scale,
             "imagination_path": sampler.label, "sampler": model.config.sampler.__dict__,
             "training": meta.get("training", {})}
    report = evaluate_fidelity(sampler, model.config.context_frames, val_windows,
                               params.fidelity.config(params.episode_horizon), FIDELITY_METRICS, FIDELITY_REPORT,
                               dev, detectors=detectors, extra=extra)
    write_per_step_curve(report, FIDELITY_CURVE)
    return report


def write_per_step_curve(report: dict[str, Any], path: str) -> None:
    """The per-step figures of metrics/fidelity.json as one table (step, then model_* and copy_last_*
    columns), the shape `dvc plots` draws and diffs across commits."""
    columns = {f"{who}_{metric}": report[key][f"{metric}_per_step"]
               for who, key in (("model", "model"), ("copy_last", "copy_last_frame"))
               for metric in ("psnr", "psnr_moving", "ssim")}
    rows = [",".join(["step", *columns])]
    for step, values in enumerate(zip(*columns.values()), start=1):
        rows.append(",".join([str(step), *(f"{v:.4f}" for v in values)]))
    write_text_atomic(path, "\n".join(rows) + "\n")
