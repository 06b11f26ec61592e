"""Writing w4rl episodes as a LeRobot v3.0 dataset: the writer and export_lerobot.

The writer follows dataset_writer.py: the data/* and videos/<key>/* columns of each episode in its
meta/episodes row, one parquet row group per episode, data and video files rolled over by size; then
tasks, stats and info.json as DatasetInfo writes them. Success and reward are shifted back to
LeRobot's time convention (package docstring).
"""

from __future__ import annotations

import json
import os
from collections.abc import Iterable, Sequence
from fractions import Fraction
from pathlib import Path
from typing import Any

import av
import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq

from w4rl_core.atomic import atomic_path
from w4rl_core.data.episode import Episode
from w4rl_core.data.lerobot.layout import (
    CHUNKS_SIZE,
    DATA_FILE_SIZE_MB,
    FRAME_FEATURES,
    INFO_PATH,
    KIND_COLUMN,
    SCENE_COLUMN,
    STATS_PATH,
    V30,
    V30_DATA_PATH,
    V30_EPISODES_PATH,
    V30_TASKS,
    V30_VIDEO_PATH,
    VIDEO_FILE_SIZE_MB,
)
from w4rl_core.data.lerobot.stats import _aggregate_stats, _as_json, _feature_stats, _Stats
from w4rl_core.data.lerobot.video import _video_info, _VideoEncoding
from w4rl_core.data.store import EpisodeStore


def _next_file(chunk: int, file: int) -> tuple[int, int]:
    """utils.update_chunk_file_indices: chunks_size files per chunk directory."""
    return (chunk + 1, 0) if file == CHUNKS_SIZE - 1 else (chunk, file + 1)


class _V30Writer:
    """Writes episodes in LeRobot v3.0's layout as they come: data rows into size-capped parquet files
    (one row group per episode), frames into size-capped mp4 files (episodes back to back), and the
    metadata (episodes, tasks, stats, info) at `close`."""

    def __init__(self, root: Path, fps: int, video_key: str, size: tuple[int, int], action_dim: int,
                 state_dim: int, encoding: _VideoEncoding, data_mb: float, video_mb: float) -> None:
        self.root, self.fps, self.key, self.size = root, fps, video_key, size
        self.action_dim, self.state_dim, self.encoding = action_dim, state_dim, encoding
        self.data_mb, self.video_mb = data_mb, video_mb
        self.tasks: dict[str, int] = {}
        self.episodes: list[dict[str, Any]] = []
        self.stats: list[_Stats] = []
        self.n_frames = 0
        self.data_at, self.video_at = (0, 0), (0, 0)
        self._parquet: pq.ParquetWriter | None = None
        self._video: tuple[Any, Any] | None = None  # (container, stream)
        self._video_frames = 0
        fields = [pa.field("action", pa.list_(pa.float32(), action_dim))]
        if state_dim:
            fields.append(pa.field("observation.state", pa.list_(pa.float32(), state_dim)))
        fields += [pa.field("next.reward", pa.float32()), pa.field("next.success", pa.bool_())]
        fields += [pa.field(k, pa.float32() if dt == "float32" else pa.int64()) for k, dt in FRAME_FEATURES.items()]
        self.schema = pa.schema(fields)

    def _path(self, template: str, at: tuple[int, int], **kw: Any) -> Path:
        path = self.root / template.format(chunk_index=at[0], file_index=at[1], **kw)
        path.parent.mkdir(parents=True, exist_ok=True)
        return path

    def add(self, ep: Episode) -> None:
        e, n = len(self.episodes), len(ep)
        if n == 0:
            raise ValueError(f"episode {e} has no frames")
        if ep.rgb.shape[1:] != (*self.size, 3) or ep.rgb.dtype != np.uint8:
            raise ValueError(f"episode {e}: rgb is {ep.rgb.dtype} {ep.rgb.shape[1:]}, "
                             f"the export writes {(*self.size, 3)} uint8")
        if ep.action.shape[1:] != (self.action_dim,) or ep.state.shape[1:] != (self.state_dim,):
            raise ValueError(f"episode {e}: action/state of shape {ep.action.shape[1:]}/{ep.state.shape[1:]}, "
                             f"the first episode had {(self.action_dim,)}/{(self.state_dim,)}")
        task_index = self.tasks.setdefault(ep.task, len(self.tasks))
        # w4rl's reward/success describe their own frame; LeRobot's next.* the following one.
        success = ep.success.astype(bool)
        reward = ep.reward.astype(np.float32)
        columns: dict[str, Any] = {"action": ep.action.astype(np.float32)}
        if self.state_dim:
            columns["observation.state"] = ep.state.astype(np.float32)
        columns |= {
            "next.reward": np.concatenate([reward[1:], reward[-1:]]),
            "next.success": np.concatenate([success[1:], success[-1:]]),
            "timestamp": (np.arange(n) / self.fps).astype(np.float32),
            "frame_index": np.arange(n, dtype=np.int64),
            "episode_index": np.full(n, e, dtype=np.int64),
            "index": np.arange(self.n_frames, self.n_frames + n, dtype=np.int64),
            "task_index": np.full(n, task_index, dtype=np.int64),
        }
        row = {"episode_index": e, "tasks": [ep.task], "length": n}
        row |= self._write_data(columns)
        row |= self._write_video(ep.rgb)
        stats = {self.key: _feature_stats(ep.rgb, image=True)} | {k: _feature_stats(v) for k, v in columns.items()}
        row |= {f"stats/{k}/{s}": np.asarray(v).tolist() for k, d in stats.items() for s, v in d.items()}
        row |= {"meta/episodes/chunk_index": 0, "meta/episodes/file_index": 0,
                KIND_COLUMN: ep.kind, SCENE_COLUMN: ep.scene}
        self.episodes.append(row)
        self.stats.append(stats)
        self.n_frames += n

    def _write_data(self, columns: dict[str, np.ndarray]) -> dict[str, Any]:
        arrays = []
        for f in self.schema:
            values = columns[f.name]
            if pa.types.is_fixed_size_list(f.type):
                flat = pa.array(values.reshape(-1), pa.float32())
                arrays.append(pa.FixedSizeListArray.from_arrays(flat, f.type.list_size))
            else:
                arrays.append(pa.array(values, f.type))
        path = self._path(V30_DATA_PATH, self.data_at)
        if self._parquet is None:
            self._parquet = pq.ParquetWriter(path, self.schema, compression="snappy", use_dictionary=True)
        self._parquet.write_table(pa.Table.from_arrays(arrays, schema=self.schema))  # one row group per episode
        meta = {"data/chunk_index": self.data_at[0], "data/file_index": self.data_at[1],
                "dataset_from_index": self.n_frames, "dataset_to_index": self.n_frames + len(columns["index"])}
        if path.stat().st_size / 2**20 >= self.data_mb:  # full: the next episode starts a new file
            self._parquet.close()
            self._parquet, self.data_at = None, _next_file(*self.data_at)
        return meta

    def _write_video(self, rgb: np.ndarray) -> dict[str, Any]:
        path = self._path(V30_VIDEO_PATH, self.video_at, video_key=self.key)
        if self._video is None:
            container = av.open(str(path), "w")
            stream = container.add_stream(self.encoding.codec, rate=self.fps, options=self.encoding.options)
            stream.height, stream.width = self.size
            stream.pix_fmt = self.encoding.pix_fmt
            self._video, self._video_frames = (container, stream), 0
        container, stream = self._video
        start = self._video_frames
        for image in rgb:
            frame = av.VideoFrame.from_ndarray(np.ascontiguousarray(image), format="rgb24")
            frame.pts, frame.time_base = self._video_frames, Fraction(1, self.fps)
            for packet in stream.encode(frame):
                container.mux(packet)
            self._video_frames += 1
        k = f"videos/{self.key}"
        meta = {f"{k}/chunk_index": self.video_at[0], f"{k}/file_index": self.video_at[1],
                f"{k}/from_timestamp": start / self.fps, f"{k}/to_timestamp": self._video_frames / self.fps}
        # The encoder may still hold frames (and the muxer not have created the file yet): the size
        # is what has reached the disk, as LeRobot's get_file_size_in_mb sees it.
        if (path.stat().st_size if path.exists() else 0) / 2**20 >= self.video_mb:
            self._close_video()
            self.video_at = _next_file(*self.video_at)
        return meta

    def _close_video(self) -> None:
        if self._video is not None:
            container, stream = self._video
            for packet in stream.encode():  # flush the encoder's delayed frames
                container.mux(packet)
            container.close()
            self._video = None

    def abort(self) -> None:
        """Release open files after a failure (the temporary directory is removed by the caller)."""
        try:
            if self._parquet is not None:
                self._parquet.close()
            if self._video is not None:
                self._video[0].close()
        except Exception:  # noqa: BLE001 - cleaning up after the real error, which is re-raised
            pass

    def close(self) -> None:
        if not self.episodes:
            raise ValueError("nothing to export: no episodes")
        if self._parquet is not None:
            self._parquet.close()
        self._close_video()
        pq.write_table(pa.Table.from_pylist(self.episodes), self._path(V30_EPISODES_PATH, (0, 0)))
        tasks = pd.DataFrame({"task_index": list(self.tasks.values())},
                             index=pd.Index(list(self.tasks), name="task"))
        tasks.to_parquet(self.root / V30_TASKS)  # io_utils.write_tasks
        (self.root / STATS_PATH).write_text(json.dumps(_as_json(_aggregate_stats(self.stats)), indent=4))
        h, w = self.size
        first_video = self.root / V30_VIDEO_PATH.format(video_key=self.key, chunk_index=0, file_index=0)
        features = {
            self.key: {"dtype": "video", "shape": [h, w, 3], "names": ["height", "width", "channels"],
                       "info": _video_info(first_video, self.encoding)},
            "action": {"dtype": "float32", "shape": [self.action_dim],
                       "names": [f"action_{i}" for i in range(self.action_dim)]},
        }
        if self.state_dim:
            features["observation.state"] = {"dtype": "float32", "shape": [self.state_dim],
                                             "names": [f"state_{i}" for i in range(self.state_dim)]}
        features["next.reward"] = {"dtype": "float32", "shape": [1], "names": None}
        features["next.success"] = {"dtype": "bool", "shape": [1], "names": None}
        features |= {k: {"dtype": dt, "shape": [1], "names": None} for k, dt in FRAME_FEATURES.items()}
        info = {  # field order of DatasetInfo.to_dict
            "codebase_version": V30, "fps": self.fps, "features": features,
            "total_episodes": len(self.episodes), "total_frames": self.n_frames, "total_tasks": len(self.tasks),
            "chunks_size": CHUNKS_SIZE, "data_files_size_in_mb": self.data_mb,
            "video_files_size_in_mb": self.video_mb,
            "data_path": V30_DATA_PATH, "video_path": V30_VIDEO_PATH, "robot_type": None,
            "splits": {"train": f"0:{len(self.episodes)}"},
        }
        (self.root / INFO_PATH).write_text(json.dumps(info, indent=4, ensure_ascii=False))


def export_lerobot(
    source: str | os.PathLike[str] | Sequence[Episode],
    out_dir: str | os.PathLike[str],
    fps: float | None = None,
    codec: str = "libsvtav1",
    crf: int | float = 30,
    lossless: bool = False,
    *,
    camera: str | None = None,
    endpoint_url: str | None = None,
    data_file_size_in_mb: float = DATA_FILE_SIZE_MB,
    video_file_size_in_mb: float = VIDEO_FILE_SIZE_MB,
) -> Path:
    """Write a store (its URL) or a list of episodes as a LeRobot v3.0 dataset at ``out_dir``.

    The frames become the video feature ``observation.images.<camera>`` (the store's camera, else
    "main"); w4rl's episode kind and scene go in the episodes metadata as ``w4rl/kind`` and
    ``w4rl/scene``. ``observation.state`` is left out when the state has no dimensions. ``codec`` is a
    PyAV encoder (libsvtav1, LeRobot's default; h264), in yuv420p, which needs even frame sizes;
    ``lossless`` writes RGB H.264 at crf 0, so frames come back exactly. The dataset is written
    into a temporary sibling and renamed at the end; an existing ``out_dir`` is refused.
    """
    out = Path(out_dir)
    if out.exists():
        raise FileExistsError(f"{out} exists; export_lerobot writes a new dataset only")
    episodes: Iterable[Episode]
    if isinstance(source, (str, os.PathLike)):
        store = EpisodeStore.open(source, endpoint_url=endpoint_url)
        fps = store.layout.fps if fps is None else fps
        camera = camera or store.layout.camera
        size = store.layout.image_size
        action_dim, state_dim = store.layout.action_dim, store.layout.state_dim
        episodes = (store.episode(i) for i in range(store.n_episodes))
    else:
        if fps is None:
            raise ValueError("fps is needed to export a list of episodes (a store records its own)")
        listed = list(source)
        if not listed:
            raise ValueError("nothing to export: no episodes")
        size, action_dim, state_dim = listed[0].rgb.shape[1:3], listed[0].action.shape[1], listed[0].state.shape[1]
        episodes = listed
    if abs(fps - round(fps)) > 1e-9 or round(fps) < 1:
        raise ValueError(f"LeRobot's fps is a positive integer, got {fps}")
    encoding = _VideoEncoding.choose(codec, crf, lossless)
    if encoding.pix_fmt == "yuv420p" and (size[0] % 2 or size[1] % 2):
        raise ValueError(f"yuv420p needs even frame sizes, got {tuple(size)} (use lossless=True, which is RGB)")
    camera = camera or "main"
    key = camera if camera.startswith("observation.images.") else f"observation.images.{camera}"
    with atomic_path(out) as tmp:
        tmp.mkdir(parents=True)
        writer = _V30Writer(tmp, int(round(fps)), key, tuple(size), action_dim, state_dim, encoding,
                            data_file_size_in_mb, video_file_size_in_mb)
        try:
            for ep in episodes:
                writer.add(ep)
            writer.close()
        except BaseException:
            writer.abort()
            raise
    return out
