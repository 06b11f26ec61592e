"""LeRobot datasets (codebase v2.1 and v3.0) as w4rl episodes, and w4rl episodes as a LeRobot v3.0 dataset.

The layouts follow LeRobot's own code (huggingface/lerobot; the lerobot package is not a dependency:
it pins another torch), read at the snapshot of 2026-08-23:

- v3.0: src/lerobot/datasets/utils.py (DEFAULT_DATA_PATH, DEFAULT_VIDEO_PATH, DEFAULT_EPISODES_PATH,
  DEFAULT_TASKS_PATH, STATS_PATH, DatasetInfo), dataset_metadata.py (episode rows: tasks, length,
  dataset_from_index/to_index, meta/episodes/chunk_index), dataset_writer.py (data/* and videos/<key>/*
  columns of an episode, one parquet row group per episode, file roll-over by size), video_utils.py
  (get_video_info, decode_video_frames_pyav), compute_stats.py (per-episode and aggregated stats);
  lerobot_dataset.py (tolerance_s = 1e-4);
- v2.1: the legacy paths and jsonl files in src/lerobot/scripts/convert_dataset_v21_to_v30.py and in
  src/lerobot/datasets/utils.py + lerobot_dataset.py before "Dataset v3" (commit f55c6e89f):
  data/chunk-{episode_chunk:03d}/episode_{episode_index:06d}.parquet, one mp4 per episode, episode_chunk
  = episode_index // chunks_size.

Time convention. LeRobot's ``next.reward`` / ``next.success`` of frame t are the outcome of the frame's
action, so they describe frame t+1 (lerobot_eval.py records them that way); w4rl's describe the frame
itself (episode.py). Reading shifts them by one frame (frame 0, the reset state, gets 0); the outcome of
the last action has no frame of its own, so a success there is kept on the last frame, the nearest
recorded state, and a successful episode stays successful. Writing shifts them back and repeats the
last value as LeRobot's eval recorder pads its last frame. A round trip is exact when frame 0 has
reward 0 and no success, which is what `collect.rollout` records.

Modules, in the order the data flows:

- layout.py: format constants, path templates, LeRobotFormatError and the problem collector, JSON/jsonl reading;
- mapping.py: LeRobotMapping, which LeRobot features become which w4rl arrays;
- metadata.py: info.json and the episode metadata of v2.1 and v3.0, one reference per episode;
- rows.py: data-file columns as arrays and each episode's checked rows;
- video.py: decoding and fitting frames, matching timestamps to frames, encoding settings;
- read.py: success/reward, action bounds, read_lerobot, import_lerobot;
- stats.py: per-episode and aggregated feature statistics;
- write.py: the v3.0 writer and export_lerobot.
"""

import importlib
from typing import Any

__all__ = ["LeRobotFormatError", "LeRobotMapping", "export_lerobot", "import_lerobot", "read_lerobot"]

# Where each name lives. Loaded on first use (PEP 562), so that params validation can build a
# LeRobotMapping without importing pyarrow, pandas and PyAV (~2.7 s) in every stage of a project that
# imports its demos.
_HOMES = {"LeRobotFormatError": "layout", "LeRobotMapping": "mapping", "import_lerobot": "read",
          "read_lerobot": "read", "export_lerobot": "write"}


def __getattr__(name: str) -> Any:
    if name not in _HOMES:
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    return getattr(importlib.import_module(f"{__name__}.{_HOMES[name]}"), name)
