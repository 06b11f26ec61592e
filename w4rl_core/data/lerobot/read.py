"""Reading a LeRobot dataset into w4rl episodes: read_lerobot, and import_lerobot into an EpisodeStore.

Each data file is read and each video file decoded once for all the episodes it holds; success and
reward are shifted to w4rl's time convention (package docstring); the store's action bounds come from
the mapping, the dataset's stats or the data. Everything is checked before anything is returned or
written, and every problem is reported at once.
"""

from __future__ import annotations

import hashlib
import json
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import av
import numpy as np
import pyarrow as pa

from w4rl_core.atomic import atomic_path
from w4rl_core.data.episode import EPISODE_KINDS, Episode
from w4rl_core.data.lerobot.layout import (
    FRAME_FEATURES,
    KIND_COLUMN,
    SCENE_COLUMN,
    STATS_PATH,
    V21,
    V21_EPISODES_STATS,
    V30,
    LeRobotFormatError,
    _Problems,
    _read_json,
    _read_jsonl,
)
from w4rl_core.data.lerobot.mapping import LeRobotMapping
from w4rl_core.data.lerobot.metadata import _Dataset, _EpisodeRef, _load_dataset
from w4rl_core.data.lerobot.rows import _episode_rows, _read_data_file
from w4rl_core.data.lerobot.video import _decode_images, _decode_video, _match_frames
from w4rl_core.data.storage import is_remote
from w4rl_core.data.store import EpisodeStore, StoreLayout, scene_code


def _success_and_reward(rows: dict[str, np.ndarray], ref: _EpisodeRef, mapping: LeRobotMapping,
                        labels: dict[int, bool] | None) -> tuple[np.ndarray, np.ndarray]:
    n = len(rows["frame_index"])

    def shifted(outcome: np.ndarray) -> np.ndarray:  # next.* of frame t describes frame t+1
        return np.concatenate([[0], outcome[:-1]]).astype(outcome.dtype)

    if mapping.success in ("next.success", "next.reward"):
        outcome = (rows["next.success"].astype(bool) if mapping.success == "next.success"
                   else rows["next.reward"] >= mapping.reward_threshold)
        success = shifted(outcome)
        success[-1] |= outcome[-1]  # the last action's outcome has no frame: keep it on the last one
    else:
        success = np.zeros(n, dtype=bool)
        if mapping.success == "demo_last_k" or (labels or {}).get(ref.index):
            success[-mapping.last_k:] = True
    reward = (shifted(rows["next.reward"].astype(np.float32)) if "next.reward" in rows
              else success.astype(np.float32))  # no reward recorded: the sparse success reward
    return success.astype(np.uint8), reward.astype(np.float32)


def _load_labels(mapping: LeRobotMapping, refs: list[_EpisodeRef], problems: _Problems) -> dict[int, bool] | None:
    if mapping.success != "labels":
        return None
    path = Path(str(mapping.labels_file))
    try:
        raw = json.loads(path.read_text())
        labels = {int(k): v for k, v in raw.items()}
    except (OSError, ValueError, AttributeError) as err:
        raise problems.fail(str(path), None, "labels_file",
                            f"cannot be read as JSON {{episode_index: bool}}: {err}") from err
    for ep, value in labels.items():
        if not isinstance(value, bool):
            problems.add(str(path), ep, "label", f"{value!r} is not true/false")
    known = {r.index for r in refs}
    for ref in refs:
        if ref.index not in labels:
            problems.add(str(path), ref.index, "label", "no label for this episode")
    for ep in sorted(set(labels) - known):
        problems.add(str(path), ep, "label", "no such episode in the dataset")
    return labels


def _action_bounds(ds: _Dataset, mapping: LeRobotMapping, actions: np.ndarray,
                   problems: _Problems) -> tuple[tuple[float, ...], tuple[float, ...], str]:
    """(low, high, where they came from), checked against the data: stale stats would silently clip."""
    key = mapping.action
    if mapping.action_low is not None:
        low, high = np.asarray(mapping.action_low), np.asarray(mapping.action_high)
        src = "LeRobotMapping.action_low/high"
    else:
        low = high = None
        if ds.info["codebase_version"] == V30 and (ds.root / STATS_PATH).is_file():
            stats, src = _read_json(ds.root, STATS_PATH, problems).get(key) or {}, STATS_PATH
            if "min" in stats and "max" in stats:
                low, high = np.asarray(stats["min"], float).ravel(), np.asarray(stats["max"], float).ravel()
        elif ds.info["codebase_version"] == V21 and (ds.root / V21_EPISODES_STATS).is_file():
            rows, src = _read_jsonl(ds.root, V21_EPISODES_STATS, problems), V21_EPISODES_STATS
            per = [r["stats"][key] for r in rows if "min" in r.get("stats", {}).get(key, {})]
            if per:  # aggregate_stats: the min of the minima, the max of the maxima
                low = np.min([np.asarray(s["min"], float).ravel() for s in per], axis=0)
                high = np.max([np.asarray(s["max"], float).ravel() for s in per], axis=0)
        if low is None:  # no stats for the action: the data's own range
            low, high, src = actions.min(axis=0).astype(float), actions.max(axis=0).astype(float), "data"
        # A constant dimension gets a non-degenerate range around its value.
        pad = np.where(high > low, 0.0, np.maximum(np.abs(low), 1.0) * 1e-2)
        low, high = low - pad, high + pad
    if low.shape != (actions.shape[1],):
        raise problems.fail(src, None, f"{key}.min/max", f"{low.size} bounds for {actions.shape[1]} action dimensions")
    slack = 1e-6 * np.maximum(1.0, np.abs(np.concatenate([low, high])).max())
    for d in np.nonzero((actions.min(axis=0) < low - slack) | (actions.max(axis=0) > high + slack))[0]:
        problems.add(src, None, f"{key}.min/max", f"dimension {d}: the data spans [{actions[:, d].min()}, "
                     f"{actions[:, d].max()}], the bounds are [{low[d]}, {high[d]}] "
                     "(stale stats? set action_low/high)")
    return tuple(float(v) for v in low), tuple(float(v) for v in high), src


@dataclass
class _Read:
    episodes: list[Episode]
    info: dict[str, Any]
    action_low: tuple[float, ...]
    action_high: tuple[float, ...]
    bounds_from: str


def _read_rows(ds: _Dataset, mapping: LeRobotMapping, problems: _Problems) -> dict[int, dict[str, Any]]:
    """Each episode's checked data rows (and frames, for an image camera), by episode index."""
    cam, is_video = mapping.camera, ds.info["features"][mapping.camera]["dtype"] == "video"
    wanted = [mapping.action, *([mapping.state] if mapping.state else []), *FRAME_FEATURES]
    if mapping.success in ("next.success", "next.reward"):
        wanted.append(mapping.success)
    if ds.info["codebase_version"] == V21:  # only v3.0 locates episodes by the global index
        wanted.remove("index")
    if not is_video:
        wanted.append(cam)
    by_file: dict[str, list[_EpisodeRef]] = {}
    for ref in ds.refs:
        by_file.setdefault(ref.data_file, []).append(ref)
    rows: dict[int, dict[str, Any]] = {}
    for rel, refs in by_file.items():  # each data file is read once, for all the episodes it holds
        cols = _read_data_file(ds.root, rel, refs, wanted, ["next.reward", "index"], None if is_video else cam,
                               problems)
        if cols is None:
            continue
        images = cols.pop(cam, None)
        for ref in refs:
            got = _episode_rows(ref, cols, ds.info, mapping, problems)
            if got is not None and images is not None:  # image features: the frames are in the data file
                cells = images.take(pa.array(np.nonzero(cols["episode_index"] == ref.index)[0])).to_pylist()
                try:
                    got["rgb"] = _decode_images(cells, ds.root, mapping.image_size, mapping.fit)
                except (OSError, ValueError, TypeError) as err:  # PIL's UnidentifiedImageError is an OSError
                    problems.add(rel, ref.index, cam, f"an image cannot be decoded: {err}")
                    got = None
            if got is not None:
                rows[ref.index] = got
    return rows


def _add_video_frames(ds: _Dataset, rows: dict[int, dict[str, Any]], mapping: LeRobotMapping,
                      problems: _Problems) -> None:
    """Each episode's frames from its video file, found by timestamp; episodes whose frames do not
    match are dropped from ``rows`` with their problems recorded."""
    cam, fps = mapping.camera, float(ds.info["fps"])
    by_video: dict[str, list[_EpisodeRef]] = {}
    for ref in ds.refs:
        if ref.index in rows:
            by_video.setdefault(str(ref.video_file), []).append(ref)
    for rel, refs in by_video.items():  # each video file is decoded once, for all the episodes it holds
        try:
            if not (ds.root / rel).is_file():
                raise FileNotFoundError("the video file is missing")
            times, frames = _decode_video(ds.root / rel, mapping.image_size, mapping.fit)
        except (av.error.FFmpegError, OSError, IndexError) as err:  # IndexError: no video stream
            for ref in refs:
                problems.add(rel, ref.index, cam, str(err) if isinstance(err, FileNotFoundError)
                             else f"cannot be decoded: {err}")
                rows.pop(ref.index)
            continue
        for ref in refs:
            nearest = _match_frames(ref, rows[ref.index]["timestamp"], times, fps, mapping.tolerance_s, problems, cam)
            if nearest is None:
                rows.pop(ref.index)
            else:
                rows[ref.index]["rgb"] = frames[nearest]


def _recorded_scene(rgb: np.ndarray, action: np.ndarray) -> str:
    """The scene id of an episode recorded by another tool: a hash of its first frame and actions.

    A recorded real episode is its own scene (a robot cannot be reset twice into the same one), and
    scenes are what keep evaluation apart from training (w4rl_core/robots/scenes.py): with one id per
    episode, "no evaluation scene is a training scene" means "no evaluation episode is a training
    episode", and an episode imported twice shows as a repeated scene in validation. 16 hex digits,
    never 0 (0 is "not recorded" in the store)."""
    digest = hashlib.sha256(rgb[0].tobytes() + np.ascontiguousarray(action).tobytes()).hexdigest()[:16]
    return digest if int(digest, 16) else "0" * 15 + "1"


def _episode(ref: _EpisodeRef, r: dict[str, Any], ds: _Dataset, mapping: LeRobotMapping,
             labels: dict[int, bool] | None, problems: _Problems) -> Episode | None:
    task = mapping.task
    if task is None:
        codes = sorted(set(r["task_index"].tolist()))
        if len(codes) != 1:
            problems.add(ref.data_file, ref.index, "task_index",
                         f"{len(codes)} tasks {codes}; a w4rl episode has one (set LeRobotMapping.task)")
            return None
        if codes[0] not in ds.tasks:
            problems.add(ds.tasks_file, ref.index, "task_index", f"task {codes[0]} is not in {ds.tasks_file}")
            return None
        task = ds.tasks[codes[0]]
    kind = mapping.kinds.get(ref.index) or ref.kind or mapping.default_kind
    if kind not in EPISODE_KINDS:
        problems.add(ref.meta_file, ref.index, KIND_COLUMN, f"{kind!r} is not one of {EPISODE_KINDS}")
        return None
    scene = ref.scene if ref.scene is not None else _recorded_scene(r["rgb"], r[mapping.action])
    try:
        scene_code(scene)
    except ValueError as err:
        problems.add(ref.meta_file, ref.index, SCENE_COLUMN, str(err))
        return None
    success, reward = _success_and_reward(r, ref, mapping, labels)
    n = len(success)
    state = r[mapping.state].astype(np.float32) if mapping.state else np.zeros((n, 0), np.float32)
    return Episode(task=task, kind=kind, rgb=r["rgb"], action=r[mapping.action].astype(np.float32),
                   reward=reward, success=success, state=state, scene=scene)


def _read(root: str | os.PathLike[str], mapping: LeRobotMapping) -> _Read:
    root = Path(root)
    problems = _Problems(root)
    ds = _load_dataset(root, mapping, problems)
    labels = _load_labels(mapping, ds.refs, problems)
    rows = _read_rows(ds, mapping, problems)
    if ds.info["features"][mapping.camera]["dtype"] == "video":
        _add_video_frames(ds, rows, mapping, problems)
    episodes = [ep for ref in ds.refs if ref.index in rows
                if (ep := _episode(ref, rows[ref.index], ds, mapping, labels, problems)) is not None]
    problems.raise_if_any()
    low, high, src = _action_bounds(ds, mapping, np.concatenate([ep.action for ep in episodes]), problems)
    problems.raise_if_any()
    return _Read(episodes, ds.info, low, high, src)


def read_lerobot(root: str | os.PathLike[str], mapping: LeRobotMapping) -> list[Episode]:
    """Every episode of a LeRobot v2.1 or v3.0 dataset at ``root``, in episode_index order, after
    checking all of it; raises LeRobotFormatError listing each bad input (file, episode, field)."""
    return _read(root, mapping).episodes


def import_lerobot(root: str | os.PathLike[str], store_url: str | os.PathLike[str], mapping: LeRobotMapping,
                   *, endpoint_url: str | None = None, kind: str | None = None,
                   episodes: int | None = None) -> EpisodeStore:
    """A new EpisodeStore at ``store_url`` holding the dataset at ``root``: every episode, or with
    `kind` only that kind's and with `episodes` the first that many of them (the pipeline's import
    stage: one store per kind, fewer episodes in the dataset than asked for is refused). Everything
    is read and checked before the store is created, so bad input writes nothing; an existing
    destination is refused. A local store appears whole (atomic rename); a remote one is published
    by its last write. Action bounds come from the whole dataset, so every kind's store shares them."""
    if not is_remote(store_url) and Path(str(store_url).removeprefix("file://")).exists():
        raise FileExistsError(f"{store_url} exists; import_lerobot writes a new store only")
    read = _read(root, mapping)
    if kind is not None:
        read.episodes = [ep for ep in read.episodes if ep.kind == kind]
    what = f"{kind} episodes" if kind else "episodes"
    if episodes is not None:
        if len(read.episodes) < episodes:
            raise LeRobotFormatError(Path(root), [f"{len(read.episodes)} {what}, fewer than the {episodes} asked for"])
        read.episodes = read.episodes[:episodes]
    if not read.episodes:
        raise LeRobotFormatError(Path(root), [f"no {what} to import"])
    layout = StoreLayout(
        image_size=(mapping.image_size, mapping.image_size), action_low=read.action_low,
        action_high=read.action_high, state_dim=read.episodes[0].state.shape[1], fps=float(read.info["fps"]),
        camera=mapping.camera,
    )
    # The path as given: the pipeline's stage gives one relative to the checkout, so the store (and
    # its DVC hash) is the same in every clone.
    source = {"format": "lerobot", "root": os.fspath(root),
              "codebase_version": read.info["codebase_version"], "mapping": mapping.to_dict(),
              "action_bounds_from": read.bounds_from}

    def write(url: str | os.PathLike[str]) -> None:
        store = EpisodeStore.create(url, layout, source=source, endpoint_url=endpoint_url, complete=False)
        batch: list[Episode] = []
        for ep in read.episodes:  # whole shards per append, as collect does
            batch.append(ep)
            if sum(map(len, batch)) >= layout.frames_per_shard:
                store.append(batch, complete=False)
                batch = []
        store.append(batch, complete=False)
        store.publish()

    if is_remote(store_url):
        write(store_url)
    else:
        with atomic_path(Path(str(store_url).removeprefix("file://"))) as tmp:
            write(tmp)
    return EpisodeStore.open(store_url, endpoint_url=endpoint_url)
