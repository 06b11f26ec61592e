"""Where each episode of a LeRobot dataset is, from the dataset's metadata.

info.json checked against the mapping; the episodes and tasks of v2.1 (meta/episodes.jsonl,
meta/tasks.jsonl, one data and video file per episode) or of v3.0 (meta/episodes/*.parquet rows as
dataset_metadata.py writes them, meta/tasks.parquet); one `_EpisodeRef` per episode.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq

from w4rl_core.data.lerobot.layout import (
    CHUNKS_SIZE,
    INFO_PATH,
    KIND_COLUMN,
    SCENE_COLUMN,
    V21,
    V21_EPISODES,
    V21_TASKS,
    V30,
    V30_EPISODES_DIR,
    V30_TASKS,
    _format_path,
    _Problems,
    _read_json,
    _read_jsonl,
)
from w4rl_core.data.lerobot.mapping import LeRobotMapping


@dataclass
class _EpisodeRef:
    """Where one episode's rows and frames are, from the dataset's metadata."""

    index: int
    meta_file: str
    data_file: str
    length: int | None
    video_file: str | None = None
    from_ts: float = 0.0
    to_ts: float | None = None  # None (v2.1): the whole video file is the episode
    index_range: tuple[int, int] | None = None  # v3.0 dataset_from_index, dataset_to_index
    kind: str | None = None
    scene: str | None = None  # w4rl/scene of a dataset w4rl exported; None: not recorded


@dataclass
class _Dataset:
    root: Path
    info: dict[str, Any]
    refs: list[_EpisodeRef]
    tasks: dict[int, str]
    tasks_file: str


def _load_info(root: Path, mapping: LeRobotMapping, problems: _Problems) -> dict[str, Any]:
    info = _read_json(root, INFO_PATH, problems)
    version = info.get("codebase_version") if isinstance(info, dict) else None
    if version not in (V21, V30):
        hint = ("upgrade it with LeRobot's converters (from v2.1: `python -m lerobot.scripts.convert_dataset_v21_to_v30"
                " --repo-id=<id> --root=<dataset>`)" if isinstance(version, str) and version < V21
                else "it is newer than this reader")
        raise problems.fail(INFO_PATH, None, "codebase_version", f"{version!r}: w4rl reads v2.1 and v3.0; {hint}")
    features = info.get("features")
    if not isinstance(features, dict) or not isinstance(info.get("fps"), (int, float)) or info["fps"] <= 0:
        raise problems.fail(INFO_PATH, None, "features, fps", "info.json needs a features dict and fps > 0")
    wanted = {mapping.camera: "camera", mapping.action: "action"}
    if mapping.state:
        wanted[mapping.state] = "state"
    if mapping.success in ("next.success", "next.reward"):
        wanted[mapping.success] = "success"
    for key, role in wanted.items():
        if key not in features:
            problems.add(INFO_PATH, None, f"features.{key}",
                         f"missing (the {role} feature); the dataset has {sorted(features)}")
    camera = features.get(mapping.camera, {})
    if camera and camera.get("dtype") not in ("video", "image"):
        problems.add(INFO_PATH, None, f"features.{mapping.camera}",
                     f"dtype {camera.get('dtype')!r}, the camera must be video or image")
    if camera.get("dtype") == "video" and not info.get("video_path"):
        problems.add(INFO_PATH, None, "video_path", "missing, but the camera is a video feature")
    problems.raise_if_any()
    return info


_Refs = tuple[list[_EpisodeRef], dict[int, str], str]  # episodes, tasks by index, the tasks file


def _v21_refs(root: Path, info: dict[str, Any], mapping: LeRobotMapping, problems: _Problems) -> _Refs:
    chunks_size = int(info.get("chunks_size") or CHUNKS_SIZE)
    is_video = info["features"][mapping.camera]["dtype"] == "video"
    refs = []
    for row in _read_jsonl(root, V21_EPISODES, problems):
        ep = row.get("episode_index")
        if not isinstance(ep, int) or ep < 0:
            problems.add(V21_EPISODES, None, "episode_index", f"{ep!r} is not an index")
            continue
        chunk = ep // chunks_size
        refs.append(_EpisodeRef(
            index=ep, meta_file=V21_EPISODES, length=row.get("length"),
            data_file=_format_path(info, "data_path", problems, episode_chunk=chunk, episode_index=ep),
            video_file=_format_path(info, "video_path", problems, episode_chunk=chunk, video_key=mapping.camera,
                                    episode_index=ep) if is_video else None,
        ))
    tasks = {int(r["task_index"]): str(r["task"]) for r in _read_jsonl(root, V21_TASKS, problems)
             if "task_index" in r and "task" in r}
    return refs, tasks, V21_TASKS


def _v30_refs(root: Path, info: dict[str, Any], mapping: LeRobotMapping, problems: _Problems) -> _Refs:
    files = sorted((root / V30_EPISODES_DIR).glob("*/*.parquet"))
    if not files:
        raise problems.fail(V30_EPISODES_DIR, None, None, "no episode metadata (meta/episodes/chunk-*/file-*.parquet)")
    cam = mapping.camera
    is_video = info["features"][cam]["dtype"] == "video"
    need = ["episode_index", "length", "data/chunk_index", "data/file_index", "dataset_from_index", "dataset_to_index"]
    if is_video:
        need += [f"videos/{cam}/{k}" for k in ("chunk_index", "file_index", "from_timestamp", "to_timestamp")]
    refs = []
    for path in files:
        rel = str(path.relative_to(root))
        try:
            names = pq.read_schema(path).names
            missing = [c for c in need if c not in names]
            keep = [c for c in names if not c.startswith("stats/")]  # stats are not needed to find data
            table = None if missing else pq.read_table(path, columns=keep)
        except (pa.ArrowException, OSError) as err:
            problems.add(rel, None, None, f"not a readable parquet file: {err}")
            continue
        for col in missing:
            problems.add(rel, None, col, "missing column")
        for row in table.to_pylist() if table is not None else []:
            if any(row[c] is None for c in need):
                problems.add(rel, row["episode_index"], ", ".join(c for c in need if row[c] is None), "null")
                continue
            ep = int(row["episode_index"])
            refs.append(_EpisodeRef(
                index=ep, meta_file=rel, length=row["length"],
                data_file=_format_path(info, "data_path", problems, chunk_index=row["data/chunk_index"],
                                       file_index=row["data/file_index"]),
                index_range=(int(row["dataset_from_index"]), int(row["dataset_to_index"])),
                video_file=_format_path(info, "video_path", problems, video_key=cam,
                                        chunk_index=row[f"videos/{cam}/chunk_index"],
                                        file_index=row[f"videos/{cam}/file_index"]) if is_video else None,
                from_ts=float(row[f"videos/{cam}/from_timestamp"]) if is_video else 0.0,
                to_ts=float(row[f"videos/{cam}/to_timestamp"]) if is_video else None,
                kind=row.get(KIND_COLUMN), scene=row.get(SCENE_COLUMN),
            ))
    if not (root / V30_TASKS).is_file():
        raise problems.fail(V30_TASKS, None, None, "missing")
    df = pd.read_parquet(root / V30_TASKS)  # written by pandas: the task strings are its index
    if "task_index" not in df.columns:
        raise problems.fail(V30_TASKS, None, "task_index", "missing column")
    names = df["task"] if "task" in df.columns else df.index
    tasks = {int(i): str(t) for t, i in zip(names, df["task_index"])}
    return refs, tasks, V30_TASKS


def _load_dataset(root: Path, mapping: LeRobotMapping, problems: _Problems) -> _Dataset:
    info = _load_info(root, mapping, problems)
    version = info["codebase_version"]
    refs, tasks, tasks_file = (_v21_refs if version == V21 else _v30_refs)(root, info, mapping, problems)
    seen: set[int] = set()
    for ref in refs:
        if ref.index in seen:
            problems.add(ref.meta_file, ref.index, "episode_index", "listed twice")
        seen.add(ref.index)
    if info.get("total_episodes") is not None and info["total_episodes"] != len(refs):
        problems.add(INFO_PATH, None, "total_episodes",
                     f"says {info['total_episodes']}, the episode metadata lists {len(refs)}")
    if not refs:
        problems.add(INFO_PATH, None, "total_episodes", "the dataset has no episodes")
    for ep in sorted(set(mapping.kinds) - seen):
        problems.add("LeRobotMapping.kinds", ep, None, "no such episode in the dataset")
    problems.raise_if_any()
    return _Dataset(root, info, sorted(refs, key=lambda r: r.index), tasks, tasks_file)
