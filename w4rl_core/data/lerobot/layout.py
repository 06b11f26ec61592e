"""The layout of a LeRobot dataset on disk, and how bad input is reported.

Format constants and path templates (v3.0: src/lerobot/datasets/utils.py, DEFAULT_DATA_PATH,
DEFAULT_VIDEO_PATH, DEFAULT_EPISODES_PATH, DEFAULT_TASKS_PATH, STATS_PATH; v2.1: the legacy meta/*.jsonl
files), LeRobotFormatError with the collector that gathers every problem of a run, and the readers of
JSON and jsonl files and info.json's path templates, which report into it.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

V21, V30 = "v2.1", "v3.0"
TOLERANCE_S = 1e-4  # LeRobotDataset's tolerance_s: a data timestamp must have a video frame this close
INFO_PATH, STATS_PATH = "meta/info.json", "meta/stats.json"
V21_EPISODES, V21_TASKS, V21_EPISODES_STATS = "meta/episodes.jsonl", "meta/tasks.jsonl", "meta/episodes_stats.jsonl"
V30_EPISODES_DIR, V30_TASKS = "meta/episodes", "meta/tasks.parquet"
_CHUNK_FILE = "chunk-{chunk_index:03d}/file-{file_index:03d}"
V30_DATA_PATH = "data/" + _CHUNK_FILE + ".parquet"
V30_VIDEO_PATH = "videos/{video_key}/" + _CHUNK_FILE + ".mp4"
V30_EPISODES_PATH = V30_EPISODES_DIR + "/" + _CHUNK_FILE + ".parquet"
CHUNKS_SIZE, DATA_FILE_SIZE_MB, VIDEO_FILE_SIZE_MB = 1000, 100, 200  # LeRobot's defaults
FRAME_FEATURES = {  # LeRobot's DEFAULT_FEATURES, in every data file
    "timestamp": "float32", "frame_index": "int64", "episode_index": "int64", "index": "int64", "task_index": "int64",
}
SUCCESS_SOURCES = ("next.success", "next.reward", "labels", "demo_last_k")
FITS = ("crop", "pad")
QUANTILES = (0.01, 0.10, 0.50, 0.90, 0.99)  # compute_stats.DEFAULT_QUANTILES
#: Per-episode columns w4rl adds to meta/episodes (LeRobot keeps unknown episode columns).
KIND_COLUMN, SCENE_COLUMN = "w4rl/kind", "w4rl/scene"


class LeRobotFormatError(ValueError):
    """A LeRobot dataset w4rl cannot read as it is; ``problems`` has one line per bad input."""

    def __init__(self, root: Path, problems: list[str]) -> None:
        self.problems = problems
        shown = problems[:40] + ([f"... and {len(problems) - 40} more"] if len(problems) > 40 else [])
        super().__init__(f"LeRobot dataset {root}: {len(problems)} problem(s)\n  " + "\n  ".join(shown))


def _where(file: str | None, episode: int | None, field_: str | None) -> str:
    parts = [file or "<dataset>"]
    if episode is not None:
        parts.append(f"episode {episode}")
    if field_:
        parts.append(field_)
    return ": ".join(parts)


class _Problems:
    """Collects every bad input, so that one run reports all of them rather than the first."""

    def __init__(self, root: Path) -> None:
        self.root, self.lines = root, []

    def add(self, file: str | None, episode: int | None, field_: str | None, what: str) -> None:
        self.lines.append(f"{_where(file, episode, field_)}: {what}")

    def fail(self, file: str | None, episode: int | None, field_: str | None, what: str) -> LeRobotFormatError:
        self.add(file, episode, field_, what)
        return LeRobotFormatError(self.root, self.lines)

    def raise_if_any(self) -> None:
        if self.lines:
            raise LeRobotFormatError(self.root, self.lines)


def _read_json(root: Path, rel: str, problems: _Problems) -> Any:
    path = root / rel
    if not path.is_file():
        raise problems.fail(rel, None, None, "missing")
    try:
        return json.loads(path.read_text())
    except (json.JSONDecodeError, UnicodeDecodeError) as err:
        raise problems.fail(rel, None, None, f"not valid JSON: {err}") from err


def _read_jsonl(root: Path, rel: str, problems: _Problems) -> list[dict[str, Any]]:
    path = root / rel
    if not path.is_file():
        raise problems.fail(rel, None, None, "missing")
    rows = []
    for n, line in enumerate(path.read_text().splitlines(), 1):
        if line.strip():
            try:
                rows.append(json.loads(line))
            except json.JSONDecodeError as err:
                raise problems.fail(rel, None, f"line {n}", f"not valid JSON: {err}") from err
    return rows


def _format_path(info: dict[str, Any], key: str, problems: _Problems, **values: Any) -> str:
    try:
        return str(info[key]).format(**values)
    except (KeyError, IndexError, ValueError) as err:
        raise problems.fail(INFO_PATH, None, key,
                            f"template {info.get(key)!r} does not format with {sorted(values)}: {err}") from err
