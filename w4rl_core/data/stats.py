"""Per-key summary statistics (count, mean, std, min, max per feature) that merge across appends.

Stats live in the store's root attributes so that normalizers can be built without reading the
data. Appending episodes merges the new batch's moments into the stored ones (Chan et al.'s
parallel-variance formula), so an append never re-reads what is already stored.
"""

from __future__ import annotations

from typing import Any

import numpy as np


def batch_stats(x: np.ndarray) -> dict[str, Any]:
    """Stats over all axes but the last one (features); 1-D arrays count as one feature."""
    x = np.asarray(x, dtype=np.float64)
    x = x.reshape(-1, 1) if x.ndim == 1 else x.reshape(-1, x.shape[-1])
    if len(x) == 0:
        raise ValueError("cannot compute stats of an empty array")
    return {
        "count": int(len(x)),
        "mean": x.mean(axis=0).tolist(),
        "std": x.std(axis=0).tolist(),
        "min": x.min(axis=0).tolist(),
        "max": x.max(axis=0).tolist(),
    }


def merge_stats(a: dict[str, Any] | None, b: dict[str, Any]) -> dict[str, Any]:
    """Stats of the union of two disjoint samples, from their stats alone."""
    if a is None:
        return b
    na, nb = a["count"], b["count"]
    n = na + nb
    mean_a, mean_b = np.asarray(a["mean"]), np.asarray(b["mean"])
    delta = mean_b - mean_a
    m2 = np.square(a["std"]) * na + np.square(b["std"]) * nb + np.square(delta) * na * nb / n
    return {
        "count": int(n),
        "mean": (mean_a + delta * nb / n).tolist(),
        "std": np.sqrt(m2 / n).tolist(),
        "min": np.minimum(a["min"], b["min"]).tolist(),
        "max": np.maximum(a["max"], b["max"]).tolist(),
    }
