"""The rows of LeRobot data files: parquet columns as arrays, and each episode's rows, checked.

The checks cover what a reader would otherwise get silently wrong: rows of other episodes, lengths and
global indices that disagree with the metadata, missing or unordered frames, shapes that disagree with
info.json, and NaN or inf values.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq

from w4rl_core.data.lerobot.layout import _Problems
from w4rl_core.data.lerobot.mapping import LeRobotMapping
from w4rl_core.data.lerobot.metadata import _EpisodeRef


def _to_numpy(column: pa.ChunkedArray) -> np.ndarray:
    """A parquet column as (N,) or (N, D): LeRobot writes shape-(1,) features as scalars and vectors
    as (fixed-size) lists. Missing float values become NaN so the finiteness check reports them."""
    col = column.combine_chunks()
    if pa.types.is_list(col.type) or pa.types.is_large_list(col.type) or pa.types.is_fixed_size_list(col.type):
        if col.null_count:
            raise ValueError(f"{col.null_count} rows are null")
        lengths = pc.list_value_length(col).to_numpy(zero_copy_only=False)
        if len(lengths) and (lengths != lengths[0]).any():
            raise ValueError(f"rows have different lengths ({sorted(set(lengths.tolist()))})")
        flat = col.flatten()
        if pa.types.is_floating(flat.type):
            flat = pc.fill_null(flat, float("nan"))
        elif flat.null_count:
            raise ValueError(f"{flat.null_count} values are null")
        width = int(lengths[0]) if len(lengths) else 0
        return flat.to_numpy(zero_copy_only=False).reshape(len(col), width)
    if pa.types.is_floating(col.type):
        col = pc.fill_null(col, float("nan"))
    elif col.null_count:
        raise ValueError(f"{col.null_count} rows are null")
    return col.to_numpy(zero_copy_only=False)

def _check_finite(values: np.ndarray, where: tuple[str, int, str], problems: _Problems) -> bool:
    bad = np.nonzero(~np.isfinite(values.reshape(len(values), -1)).all(axis=1))[0]
    if len(bad):
        problems.add(*where, f"NaN or inf in {len(bad)} frame(s), first at frame {int(bad[0])}")
    return not len(bad)


def _episode_rows(ref: _EpisodeRef, cols: dict[str, np.ndarray], info: dict[str, Any], mapping: LeRobotMapping,
                  problems: _Problems) -> dict[str, Any] | None:
    """This episode's rows of its data file, checked; None (with the problems recorded) if bad."""
    f, e = ref.data_file, ref.index
    all_rows = cols["episode_index"] == e
    rows = np.nonzero(all_rows)[0]
    n, ok = len(rows), True
    if n == 0:
        problems.add(f, e, None, "the episode has no frames")
        return None
    if ref.index_range is None and n != len(all_rows):  # v2.1: the file is the episode
        others = sorted(set(cols["episode_index"][~all_rows].tolist()))[:5]
        problems.add(f, e, "episode_index", f"rows of other episodes {others} in this episode's file")
        ok = False
    if ref.length is not None and ref.length != n:
        problems.add(ref.meta_file, e, "length", f"says {ref.length}, {f} has {n} rows")
        ok = False
    if ref.index_range is not None and "index" in cols:
        lo, hi = ref.index_range
        if not np.array_equal(cols["index"][rows], np.arange(lo, hi)):
            problems.add(f, e, "index",
                         f"rows are not dataset_from_index..dataset_to_index [{lo}, {hi}) of {ref.meta_file}")
            ok = False
    frame_index = cols["frame_index"][rows]
    steps = np.diff(frame_index)
    if (steps <= 0).any():
        k = int(np.nonzero(steps <= 0)[0][0]) + 1
        problems.add(f, e, "frame_index", f"not monotonic: {frame_index[k]} after {frame_index[k - 1]} at row {k}")
        ok = False
    elif frame_index[0] != 0 or (steps != 1).any():
        problems.add(f, e, "frame_index", f"not 0..{n - 1}: frames are missing ({frame_index[0]}..{frame_index[-1]})")
        ok = False
    out = {key: cols[key][rows] for key in cols}
    feats = info["features"]
    for key in [mapping.action] + ([mapping.state] if mapping.state else []):
        values = out[key]
        width = int(np.prod(feats[key].get("shape") or [1]))
        if values.ndim == 1:
            values = out[key] = values.reshape(n, 1)
        if values.shape[1] != width:
            problems.add(f, e, key, f"rows have {values.shape[1]} values, info.json's shape says {width}")
            ok = False
        ok &= _check_finite(values.astype(np.float64), (f, e, key), problems)
    ok &= _check_finite(out["timestamp"].astype(np.float64), (f, e, "timestamp"), problems)
    for key in ("next.reward", "next.success"):
        if key in out:
            out[key] = out[key].reshape(n, -1)[:, 0]
            ok &= _check_finite(out[key].astype(np.float64), (f, e, key), problems)
    return out if ok else None


def _read_data_file(root: Path, rel: str, refs: list[_EpisodeRef], wanted: list[str], optional: list[str],
                    raw: str | None, problems: _Problems) -> dict[str, Any] | None:
    """The wanted (and present optional) columns of one data file as arrays; ``raw`` (an image
    column) stays an arrow column, decoded per episode."""
    path = root / rel
    if not path.is_file():
        for ref in refs:
            problems.add(rel, ref.index, None, "data file missing")
        return None
    try:
        names = pq.read_schema(path).names
        missing = [c for c in wanted if c not in names]
        table = None if missing else pq.read_table(path, columns=wanted + [c for c in optional
                                                                        if c in names and c not in wanted])
    except (pa.ArrowException, OSError) as err:
        for ref in refs:
            problems.add(rel, ref.index, None, f"not a readable parquet file: {err}")
        return None
    for col in missing:
        for ref in refs:
            problems.add(rel, ref.index, col, "missing column")
    if table is None:
        return None
    cols = {}
    for name in table.column_names:
        try:
            cols[name] = table.column(name) if name == raw else _to_numpy(table.column(name))
        except ValueError as err:
            for ref in refs:
                problems.add(rel, ref.index, name, str(err))
            return None
    return cols
