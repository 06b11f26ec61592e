"""Feature statistics as LeRobot's compute_stats.py computes them: per episode (the stats/* columns
of meta/episodes) and aggregated over episodes (meta/stats.json)."""

from __future__ import annotations

from typing import Any

import numpy as np

from w4rl_core.data.lerobot.layout import QUANTILES


def _feature_stats(values: np.ndarray, image: bool = False) -> dict[str, np.ndarray]:
    """compute_stats.get_feature_stats: per dimension (vectors), per channel in [0, 1] with shape
    (3, 1, 1) (images; every frame, where LeRobot samples), shape (1,) for scalars."""
    if image:  # about 100 frames, evenly spaced, as compute_stats.sample_indices takes
        values = values[np.unique(np.linspace(0, len(values) - 1, min(len(values), 100)).round().astype(int))]
        x = values.reshape(-1, 3).astype(np.float64) / 255.0
    else:
        x = values.reshape(len(values), -1).astype(np.float64)
    stats = {"min": x.min(0), "max": x.max(0), "mean": x.mean(0), "std": x.std(0)}
    stats |= {f"q{int(q * 100):02d}": np.quantile(x, q, axis=0) for q in QUANTILES}
    shape = (3, 1, 1) if image else (-1,)
    return {k: v.reshape(shape) for k, v in stats.items()} | {"count": np.array([len(values)])}


_Stats = dict[str, dict[str, np.ndarray]]  # feature -> min/max/mean/std/count/q01.. -> values


def _aggregate_stats(per_episode: list[_Stats]) -> _Stats:
    """compute_stats.aggregate_stats: count-weighted mean and pooled variance; quantiles are the
    conservative envelope (min below the median, max above), as LeRobot keeps them."""
    out = {}
    for key in per_episode[0]:
        fs = [s[key] for s in per_episode]
        counts = np.array([s["count"][0] for s in fs], dtype=np.float64)
        total = counts.sum()
        w = counts.reshape(-1, *[1] * fs[0]["mean"].ndim)
        means = np.stack([s["mean"] for s in fs])
        mean = (means * w).sum(0) / total
        var = ((np.stack([s["std"] for s in fs]) ** 2 + (means - mean) ** 2) * w).sum(0) / total
        agg = {"min": np.min([s["min"] for s in fs], 0), "max": np.max([s["max"] for s in fs], 0), "mean": mean,
               "std": np.sqrt(var), "count": np.array([int(total)])}
        for q in QUANTILES:
            name = f"q{int(q * 100):02d}"
            agg[name] = (np.min if q <= 0.5 else np.max)([s[name] for s in fs], 0)
        out[key] = agg
    return out


def _as_json(stats: _Stats) -> dict[str, dict[str, Any]]:
    return {k: {s: np.asarray(v).tolist() for s, v in d.items()} for k, d in stats.items()}
