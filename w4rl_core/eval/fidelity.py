"""World-model fidelity where refinement runs: open-loop imagined episodes from real starts.

For each held-out episode: take its first T real frames (where an imagined episode starts), then
predict H frames autoregressively with the recorded actions, each from the model's own previous
predictions, through the same sampling path refinement imagines with (FastSampler with the run's
accel settings). H defaults to the refinement horizon (a real episode's length minus T).

Compared with the real frames per step and with the trivial baseline that copies the last context
frame: full-frame PSNR and SSIM, and PSNR on the pixels that move (where the real frames change
over the window: the robot and the object; copying the last frame is wrong there by construction,
while on a mostly static full frame it wins by default). Each figure comes with its standard error
over episodes. The success classifier's agreement on imagined vs real frames of the same episodes
says whether the reward refinement optimises means the same on the model's frames.
"""

from __future__ import annotations

import os
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import torch

from w4rl_core.atomic import atomic_path, write_json_atomic
from w4rl_core.data.windows import FrameWindows
from w4rl_core.eval.fidelity_config import FidelityConfig  # noqa: F401 (re-exported; torch-free home)
from w4rl_core.models.success import SuccessDetector, episode_success
from w4rl_core.progress import progress_bar

#: A real frame's pixel "moves" if any channel changes by more than this over the window (8 of 255
#: grey levels: above rendering noise, below any motion of the arm or an object).
MOVING_THRESHOLD = 2 * 8 / 255

#: context (B,T,3,H,W) in [-1,1], raw actions (B,T,A) -> next frame (B,3,H,W)
Sampler = Callable[[torch.Tensor, torch.Tensor, torch.Generator], torch.Tensor]


@torch.no_grad()
def rollout(sample: Sampler, frames: torch.Tensor, actions: torch.Tensor, context_frames: int, horizon: int,
            generator: torch.Generator | None = None) -> torch.Tensor:
    """frames (B,T+H,3,H,W), actions (B,T+H,A) -> predicted frames (B,H,3,H,W) for steps T..T+H-1."""
    t = context_frames
    context = frames[:, :t]
    preds = []
    for k in range(horizon):
        nxt = sample(context, actions[:, k : k + t], generator)
        preds.append(nxt)
        context = torch.cat([context[:, 1:], nxt[:, None]], dim=1)
    return torch.stack(preds, dim=1)


def psnr(pred: torch.Tensor, real: torch.Tensor, mask: torch.Tensor | None = None) -> np.ndarray:
    """PSNR (dB) per frame of (B,H,3,h,w) frames in [-1,1] (data range 1 after mapping to [0,1]).

    With a mask (B,1,1,h,w) of pixels to score, the mean squared error runs over those pixels only;
    a window without any masked pixel gets NaN.
    """
    err = ((pred.float() - real.float()) / 2) ** 2
    if mask is None:
        mse = err.mean(dim=(2, 3, 4))
    else:
        m = mask.float().expand_as(err)
        count = m.sum(dim=(2, 3, 4))
        mse = (err * m).sum(dim=(2, 3, 4)) / count.clamp(min=1)
        mse = torch.where(count > 0, mse, torch.full_like(mse, float("nan")))
    return (10 * torch.log10(1 / mse.clamp(min=1e-10))).cpu().numpy()


def moving_mask(context_last: torch.Tensor, real: torch.Tensor, threshold: float = MOVING_THRESHOLD) -> torch.Tensor:
    """(B,1,1,h,w): pixels whose real value departs from the last context frame at some step."""
    change = (real.float() - context_last.float()[:, None]).abs().amax(dim=(1, 2))  # (B,h,w)
    return (change > threshold)[:, None, None]


def _ssim(pred: torch.Tensor, real: torch.Tensor) -> np.ndarray:
    b, h = pred.shape[:2]
    p = ((pred + 1) / 2).flatten(0, 1).float().cpu()
    r = ((real + 1) / 2).flatten(0, 1).float().cpu()
    # Imported here: torchmetrics costs ~1.5 s to import, and every stage imports this module's config.
    from torchmetrics.functional.image import structural_similarity_index_measure

    return structural_similarity_index_measure(p, r, data_range=1.0, reduction="none").reshape(b, h).numpy()


def _summary(values: dict[str, np.ndarray], horizons: tuple[int, ...]) -> dict[str, Any]:
    """Per metric (B,H): mean at each horizon and over all steps, with standard errors over episodes."""
    out: dict[str, Any] = {}
    for name, v in values.items():
        per_episode_mean = np.nanmean(v, axis=1)
        cols = {f"h{h}": v[:, h - 1] for h in horizons} | {"mean": per_episode_mean}
        out[name] = {k: float(np.nanmean(c)) for k, c in cols.items()}
        out[f"{name}_se"] = {k: float(np.nanstd(c, ddof=1) / np.sqrt(max(1, np.isfinite(c).sum())))
                             if np.isfinite(c).sum() > 1 else None for k, c in cols.items()}
        out[f"{name}_per_step"] = np.nanmean(v, axis=0).round(3).tolist()
    return out


def _episode_stats(seq: torch.Tensor) -> pd.DataFrame:
    """Per-rollout statistics compared real vs imagined in the Evidently report."""
    x = (seq.float() + 1) * 127.5
    return pd.DataFrame({
        "brightness": x.mean(dim=(1, 2, 3, 4)).cpu().numpy(),
        "contrast": x.flatten(1).std(dim=1).cpu().numpy(),
        "motion": (x[:, 1:] - x[:, :-1]).abs().mean(dim=(1, 2, 3, 4)).cpu().numpy(),
        "final_brightness": x[:, -1].mean(dim=(1, 2, 3)).cpu().numpy(),
    })


def _to_uint8(x: torch.Tensor) -> np.ndarray:
    return ((x.float().clamp(-1, 1) + 1) * 127.5).round().byte().permute(0, 2, 3, 1).cpu().numpy()


def _write_visuals(real: torch.Tensor, pred: torch.Tensor, n: int, out: Path, every: int = 3) -> list[str]:
    """real | imagined strips (PNG, every `every`-th step, one row pair per episode) and GIFs."""
    import imageio.v3 as iio

    files = []
    (out / "strips").mkdir(exist_ok=True)  # images only: dvc.yaml declares this folder an image plot
    for i in range(min(n, len(real))):
        r, p = _to_uint8(real[i]), _to_uint8(pred[i])
        pick = list(range(0, len(r), every))
        strip = np.concatenate([np.concatenate([r[k] for k in pick], axis=1),
                                np.concatenate([p[k] for k in pick], axis=1)], axis=0)
        scale = max(1, 128 // r.shape[1])  # upscale tiny frames so a person can see them
        strip = strip.repeat(scale, 0).repeat(scale, 1)
        iio.imwrite(out / "strips" / f"strip_{i}.png", strip)
        frames = [np.concatenate([a, b], axis=1).repeat(scale, 0).repeat(scale, 1) for a, b in zip(r, p)]
        iio.imwrite(out / f"rollout_{i}.gif", np.stack(frames), duration=150, loop=0)
        files += [f"strips/strip_{i}.png", f"rollout_{i}.gif"]
    return files


@torch.no_grad()
def classifier_agreement(detectors: dict[str, SuccessDetector], tasks: list[str], pred: torch.Tensor,
                         real: torch.Tensor) -> dict[str, Any]:
    """How often the success detector says the same on imagined and real frames of the same steps
    (per frame, at its threshold), and on the whole rollout (success anywhere, with its persistence),
    per task and over all episodes."""
    per_task: dict[str, Any] = {}
    frames_agree, episodes_agree = [], []
    for task in sorted(set(tasks)):
        if task not in detectors:
            continue
        det = detectors[task]
        device = next(det.classifier.parameters()).device
        idx = [i for i, t in enumerate(tasks) if t == task]
        b, h = len(idx), pred.shape[1]
        p_pred = det.classifier.prob(pred[idx].flatten(0, 1).to(device)).reshape(b, h).cpu()
        p_real = det.classifier.prob(real[idx].flatten(0, 1).to(device)).reshape(b, h).cpu()
        s_pred, s_real = p_pred > det.config.threshold, p_real > det.config.threshold
        f = (s_pred == s_real).float()
        e = torch.from_numpy(episode_success(p_pred.numpy(), det.config) == episode_success(p_real.numpy(), det.config)).float()
        frames_agree.append(f.flatten())
        episodes_agree.append(e)
        per_task[task] = {"episodes": b, "frame": float(f.mean()), "episode": float(e.mean()),
                          "imagined_success_frames": float(s_pred.float().mean()),
                          "real_success_frames": float(s_real.float().mean())}
    if not per_task:
        return {"frame": None, "episode": None, "per_task": {}}
    return {"frame": float(torch.cat(frames_agree).mean()), "episode": float(torch.cat(episodes_agree).mean()),
            "per_task": per_task}


def fidelity_metrics(
    sample: Sampler,
    context_frames: int,
    val: FrameWindows,
    config: FidelityConfig,
    device: str | torch.device = "cpu",
    detectors: dict[str, SuccessDetector] | None = None,
) -> tuple[dict[str, Any], torch.Tensor, torch.Tensor]:
    """The metrics of `evaluate_fidelity` without its reports -> (metrics, imagined, real frames)."""
    t = context_frames
    length = t + config.horizon
    starts = val.first_windows(length)
    if len(starts) == 0:
        raise ValueError(f"no held-out episode has T+H = {length} steps; lower fidelity.horizon")
    rng = np.random.default_rng(config.seed)
    if len(starts) > config.episodes:
        starts = np.sort(rng.choice(starts, size=config.episodes, replace=False))
    task_of = dict(zip(val.episode_starts.tolist(), val.episode_task))
    tasks = [task_of[int(s)] for s in starts]
    gen = torch.Generator(device=device).manual_seed(config.seed)
    preds, reals, lasts = [], [], []
    for i in progress_bar(range(0, len(starts), config.batch), desc=f"fidelity ({len(starts)} episodes)", unit="batch"):
        frames, actions, _ = val.gather(starts[i : i + config.batch], length, device)
        preds.append(rollout(sample, frames, actions, t, config.horizon, gen).cpu())
        reals.append(frames[:, t:].cpu())
        lasts.append(frames[:, t - 1].cpu())
    pred, real, last = torch.cat(preds), torch.cat(reals), torch.cat(lasts)
    copy_last = last[:, None].expand_as(real)
    mask = moving_mask(last, real)
    horizons = tuple(dict.fromkeys(config.report_horizons + (config.horizon,)))
    model = _summary({"psnr": psnr(pred, real), "psnr_moving": psnr(pred, real, mask), "ssim": _ssim(pred, real)},
                     horizons)
    base = _summary({"psnr": psnr(copy_last, real), "psnr_moving": psnr(copy_last, real, mask),
                     "ssim": _ssim(copy_last, real)}, horizons)
    metrics: dict[str, Any] = {
        "episodes": len(starts),
        "horizon": config.horizon,
        "context_frames": t,
        "start": "episode start (first T frames of held-out episodes), recorded actions",
        "moving_pixels": float(mask.float().mean()),
        "model": model,
        "copy_last_frame": base,
    }
    metrics["beats_copy_last_frame"] = {
        f"{metric}_{k}": model[metric][k] > base[metric][k]
        for metric in ("psnr", "psnr_moving", "ssim") for k in model[metric]
    }
    metrics["classifier_agreement"] = classifier_agreement(detectors or {}, tasks, pred, real)
    return metrics, pred, real


def evaluate_fidelity(
    sample: Sampler,
    context_frames: int,
    val: FrameWindows,
    config: FidelityConfig,
    metrics_path: str | os.PathLike[str],
    report_dir: str | os.PathLike[str],
    device: str | torch.device = "cpu",
    detectors: dict[str, SuccessDetector] | None = None,
    extra: dict[str, Any] | None = None,
) -> dict[str, Any]:
    """fidelity_metrics, plus an Evidently report (imagined vs real per-rollout statistics) and
    real | imagined strips and GIFs; metrics and reports written atomically."""
    metrics, pred, real = fidelity_metrics(sample, context_frames, val, config, device, detectors)
    metrics |= extra or {}

    from evidently import DataDefinition, Dataset, Report
    from evidently.presets import DataDriftPreset

    real_stats, imagined_stats = _episode_stats(real), _episode_stats(pred)
    definition = DataDefinition(numerical_columns=list(real_stats.columns))
    snapshot = Report([DataDriftPreset()]).run(
        Dataset.from_pandas(imagined_stats, data_definition=definition),
        Dataset.from_pandas(real_stats, data_definition=definition),
    )
    with atomic_path(report_dir) as tmp:
        tmp.mkdir(parents=True)
        snapshot.save_html(str(tmp / "imagined_vs_real.html"))
        snapshot.save_json(str(tmp / "imagined_vs_real.json"))
        metrics["visuals"] = _write_visuals(real, pred, config.strips, tmp)
    write_json_atomic(metrics_path, metrics)
    return metrics
