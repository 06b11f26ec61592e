"""World-model fidelity: open-loop rollouts from real context with the recorded actions.

For each held-out episode: take T real frames, then predict H frames autoregressively, each from the
model's own previous predictions and the actions that were actually recorded. Compare with the real
frames per step (PSNR, SSIM) and with the trivial baseline that copies the last context frame; a
world model worth refining a policy in must beat it.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import torch
from torchmetrics.functional.image import peak_signal_noise_ratio, structural_similarity_index_measure

from w4rl_core.atomic import atomic_path, write_json_atomic
from w4rl_core.data.windows import FrameWindows
from w4rl_core.models.sampler import SamplerConfig
from w4rl_core.models.world_model import WorldModel


@dataclass(frozen=True)
class FidelityConfig:
    horizon: int = 16  # H: predicted steps per rollout
    episodes: int = 8  # held-out episodes rolled out (at most)
    strips: int = 2  # episodes shown as real | imagined strips and GIFs
    report_horizons: tuple[int, ...] = (1, 8, 16)
    seed: int = 0

    def __post_init__(self) -> None:
        object.__setattr__(self, "report_horizons", tuple(h for h in self.report_horizons if h <= self.horizon))
        if self.horizon < 1 or self.episodes < 1 or self.strips < 0:
            raise ValueError("horizon and episodes must be >= 1, strips >= 0")


@torch.no_grad()
def rollout(model: WorldModel, frames: torch.Tensor, actions: torch.Tensor, horizon: int,
            sampler: SamplerConfig | None = None, generator: torch.Generator | None = None) -> torch.Tensor:
    """frames (B,T+H,3,H,W), actions (B,T+H,A) -> predicted frames (B,H,3,H,W) for steps T..T+H-1."""
    t = model.config.context_frames
    context = frames[:, :t]
    preds = []
    for k in range(horizon):
        nxt = model.predict(context, actions[:, k : k + t], sampler, generator)
        preds.append(nxt)
        context = torch.cat([context[:, 1:], nxt[:, None]], dim=1)
    return torch.stack(preds, dim=1)


def _per_step(pred: torch.Tensor, real: torch.Tensor) -> tuple[np.ndarray, np.ndarray]:
    """PSNR and SSIM (B,H) on images mapped to [0,1]."""
    b, h = pred.shape[:2]
    p = ((pred + 1) / 2).flatten(0, 1).float().cpu()
    r = ((real + 1) / 2).flatten(0, 1).float().cpu()
    psnr = peak_signal_noise_ratio(p, r, data_range=1.0, reduction="none", dim=(1, 2, 3))
    ssim = structural_similarity_index_measure(p, r, data_range=1.0, reduction="none")
    return psnr.reshape(b, h).numpy(), ssim.reshape(b, h).numpy()


def _summary(psnr: np.ndarray, ssim: np.ndarray, horizons: tuple[int, ...]) -> dict[str, Any]:
    return {
        "psnr": {f"h{h}": float(psnr[:, h - 1].mean()) for h in horizons} | {"mean": float(psnr.mean())},
        "ssim": {f"h{h}": float(ssim[:, h - 1].mean()) for h in horizons} | {"mean": float(ssim.mean())},
        "psnr_per_step": psnr.mean(0).round(3).tolist(),
        "ssim_per_step": ssim.mean(0).round(4).tolist(),
    }


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


def _write_visuals(real: torch.Tensor, pred: torch.Tensor, n: int, out: Path) -> list[str]:
    """real | imagined strips (PNG, one row pair per episode) and side-by-side GIFs."""
    import imageio.v3 as iio

    files = []
    for i in range(min(n, len(real))):
        r, p = _to_uint8(real[i]), _to_uint8(pred[i])
        strip = np.concatenate([np.concatenate(list(r), axis=1), np.concatenate(list(p), axis=1)], axis=0)
        scale = max(1, 128 // r.shape[1])  # upscale tiny frames so a person can see them
        strip = strip.repeat(scale, 0).repeat(scale, 1)
        iio.imwrite(out / f"strip_{i}.png", strip)
        frames = [np.concatenate([a, b], axis=1).repeat(scale, 0).repeat(scale, 1) for a, b in zip(r, p)]
        iio.imwrite(out / f"rollout_{i}.gif", np.stack(frames), duration=150, loop=0)
        files += [f"strip_{i}.png", f"rollout_{i}.gif"]
    return files


def evaluate_fidelity(
    model: WorldModel,
    val: FrameWindows,
    config: FidelityConfig,
    metrics_path: str | os.PathLike[str],
    report_dir: str | os.PathLike[str],
    device: str | torch.device = "cpu",
    extra: dict[str, Any] | None = None,
) -> dict[str, Any]:
    t = model.config.context_frames
    length = t + config.horizon
    eligible = [(int(s), int(e)) for s, e in zip(val.episode_starts, val.episode_ends) if e - s >= length]
    if not eligible:
        raise ValueError(f"no held-out episode has T+H = {length} steps; lower fidelity.horizon")
    rng = np.random.default_rng(config.seed)
    chosen = sorted(rng.choice(len(eligible), size=min(config.episodes, len(eligible)), replace=False))
    # One window per episode, at a random offset (the first steps of an episode barely move).
    starts = [int(rng.integers(s, e - length + 1)) for s, e in (eligible[i] for i in chosen)]
    frames, actions, _ = val.gather(np.asarray(starts), length, device)
    gen = torch.Generator(device=device).manual_seed(config.seed)
    pred = rollout(model.to(device), frames, actions, config.horizon, generator=gen)
    real = frames[:, t:]
    copy_last = frames[:, t - 1 : t].expand_as(real)
    psnr, ssim = _per_step(pred, real)
    b_psnr, b_ssim = _per_step(copy_last, real)
    metrics = {
        "episodes": len(starts),
        "horizon": config.horizon,
        "context_frames": t,
        "sampler": model.config.sampler.__dict__,
        "model": _summary(psnr, ssim, config.report_horizons),
        "copy_last_frame": _summary(b_psnr, b_ssim, config.report_horizons),
        **(extra or {}),
    }
    metrics["beats_copy_last_frame"] = {
        "psnr_mean": metrics["model"]["psnr"]["mean"] > metrics["copy_last_frame"]["psnr"]["mean"],
        "ssim_mean": metrics["model"]["ssim"]["mean"] > metrics["copy_last_frame"]["ssim"]["mean"],
    }

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
