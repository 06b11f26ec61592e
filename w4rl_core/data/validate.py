"""Validation of episode stores: structure, a per-episode table and a per-step table (pandera).

Every problem becomes an ``Issue`` that names the store, the array/field, the episode (and step)
and what is wrong, so a person can find the bad data without reading code. The per-episode and
per-step checks are pandera schemas validated lazily: one pass reports all failures, not the first.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import pandera.pandas as pa

from w4rl_core.data.episode import EPISODE_KINDS
from w4rl_core.data.storage import is_remote
from w4rl_core.data.store import EpisodeStore, IncompleteStoreError, StoreFormatError

EXPECTED_DTYPES = {
    "data/rgb": "uint8",
    "data/action": "float32",
    "data/reward": "float32",
    "data/success": "uint8",
    "data/state": "float32",
    "meta/episode_ends": "int64",
    "meta/episode_task": "int16",
    "meta/episode_kind": "int8",
    "meta/episode_scene": "uint64",
}


@dataclass(frozen=True)
class ValidationConfig:
    """What a valid store must satisfy beyond its own declared layout."""

    context_frames: int = 4  # T of the world model: every episode needs >= T+1 steps
    known_tasks: tuple[str, ...] | None = None  # None: any task the store declares
    action_tolerance: float = 1e-6  # slack on the action bounds (float32 round-off)
    max_reported_per_check: int = 20  # per (field, check); the count is always complete
    # Every episode records its scene, and no scene repeats within a store: collection draws scenes
    # without replacement (w4rl_core/robots/scenes.py). Off for stores of other tools.
    distinct_scenes: bool = False

    def __post_init__(self) -> None:
        if self.context_frames < 1:
            raise ValueError("context_frames must be >= 1")
        if self.known_tasks is not None:
            object.__setattr__(self, "known_tasks", tuple(self.known_tasks))


@dataclass
class Issue:
    store: str
    field: str  # array or attribute, e.g. "data/action" or "attrs.format_version"
    check: str
    message: str
    episode: int | None = None
    step: int | None = None  # step within the episode

    def __str__(self) -> str:
        where = "" if self.episode is None else f" episode {self.episode}" + (
            "" if self.step is None else f" step {self.step}"
        )
        return f"{self.store}: {self.field}{where}: {self.message}"


@dataclass
class StoreReport:
    url: str
    issues: list[Issue] = field(default_factory=list)
    issue_counts: dict[str, int] = field(default_factory=dict)  # "field: check" -> failures
    info: dict[str, Any] = field(default_factory=dict)

    @property
    def ok(self) -> bool:
        return not self.issue_counts

    def add(self, issue: Issue, limit: int) -> None:
        key = f"{issue.field}: {issue.check}"
        self.issue_counts[key] = self.issue_counts.get(key, 0) + 1
        if self.issue_counts[key] <= limit:
            self.issues.append(issue)

    def to_dict(self) -> dict[str, Any]:
        return {
            "url": self.url,
            "ok": self.ok,
            "issue_counts": self.issue_counts,
            "issues": [asdict(i) | {"text": str(i)} for i in self.issues],
            "info": self.info,
        }


def find_stores(paths: list[str]) -> list[str]:
    """Expand directories into the stores they hold (``*.zarr``), sorted; URLs pass through."""
    found: list[str] = []
    for p in paths:
        path = Path(p)
        if is_remote(p) or path.suffix == ".zarr" or (path / "zarr.json").exists():
            found.append(p)
        elif path.is_dir():
            found.extend(str(s) for s in sorted(path.rglob("*.zarr")) if (s / "zarr.json").exists())
        else:
            found.append(p)  # reported as missing by validate_store
    return found


# ---------------------------------------------------------------------- structure
def _check_structure(store: EpisodeStore, report: StoreReport, limit: int) -> bool:
    """Arrays present, dtypes and shapes as declared, lengths consistent. False: stop here."""
    url, attrs = report.url, store.attrs
    h, w = attrs["image_size"]
    tails = {
        "data/rgb": (h, w, 3),
        "data/action": (attrs["action_dim"],),
        "data/reward": (),
        "data/success": (),
        "data/state": (attrs["state_dim"],),
    }
    usable = True
    for key, dtype in EXPECTED_DTYPES.items():
        try:
            arr = store.array(key)
        except KeyError:
            report.add(Issue(url, key, "present", "array is missing"), limit)
            usable = False
            continue
        if str(arr.dtype) != dtype:
            scope = f"all {store.n_episodes} episodes" if key.startswith("data/") else "every episode entry"
            report.add(Issue(url, key, "dtype", f"dtype is {arr.dtype}, expected {dtype} (affects {scope})"), limit)
        if key in tails and tuple(arr.shape[1:]) != tails[key]:
            report.add(Issue(url, key, "shape", f"per-step shape {tuple(arr.shape[1:])}, expected {tails[key]}"), limit)
            usable = False
    if not usable:
        return False
    n_ep = store.n_episodes
    for key in ("meta/episode_task", "meta/episode_kind", "meta/episode_scene"):
        if store.array(key).shape[0] != n_ep:
            report.add(
                Issue(url, key, "length", f"{store.array(key).shape[0]} entries for {n_ep} episode ends"), limit
            )
            usable = False
    n_frames = store.n_frames
    for key in tails:
        got = store.array(key).shape[0]
        if got != n_frames:
            report.add(
                Issue(url, key, "length", f"{got} steps, but meta/episode_ends says {n_frames}",
                      episode=n_ep - 1 if n_ep else None),
                limit,
            )
            usable = False
    if n_ep == 0:
        report.add(Issue(url, "meta/episode_ends", "non_empty", "the store holds no episodes"), limit)
        usable = False
    return usable


# ---------------------------------------------------------------------- per-episode table
def _episode_table(store: EpisodeStore) -> pd.DataFrame:
    ends = store.episode_ends
    starts = np.concatenate([[0], ends[:-1]])
    tasks = store.attrs["tasks"]
    task_codes = store.array("meta/episode_task")[:].astype(np.int64)
    kind_codes = store.array("meta/episode_kind")[:].astype(np.int64)
    scenes = store.episode_scene
    rgb = store.array("data/rgb")
    rows = []
    for i, (s, e) in enumerate(zip(starts, ends)):
        frames = rgb[s:e] if e > s else np.zeros((1, 1, 1, 3), np.uint8)
        rows.append(
            {
                "episode": i,
                "start": int(s),
                "end": int(e),
                "length": int(e - s),
                "task_code": int(task_codes[i]),
                "task": tasks[task_codes[i]] if 0 <= task_codes[i] < len(tasks) else f"<code {task_codes[i]}>",
                "kind_code": int(kind_codes[i]),
                "scene": scenes[i],
                "rgb_min": float(frames.min()),
                "rgb_max": float(frames.max()),
                # Std of each frame, minimum over the episode: 0 means a constant (blank) frame.
                "rgb_frame_std_min": float(frames.reshape(len(frames), -1).std(axis=1).min()),
            }
        )
    return pd.DataFrame(rows)


def _episode_schema(n_tasks: int, known_tasks: tuple[str, ...] | None, min_len: int,
                    distinct_scenes: bool = False) -> pa.DataFrameSchema:
    scene_checks = [pa.Check(lambda s: s != "", element_wise=False, error="scene not recorded"),
                    pa.Check(lambda s: ~s.duplicated(keep="first"), error="scene repeats an earlier episode's")
                    ] if distinct_scenes else []
    task_checks = [pa.Check.isin(list(known_tasks), error="task is not in the allowed task list")] if known_tasks else []
    return pa.DataFrameSchema(
        {
            "end": pa.Column(
                int,
                pa.Check(lambda s: s.diff().fillna(s) > 0, error="episode_ends must be strictly increasing"),
            ),
            "length": pa.Column(int, pa.Check.ge(min_len, error=f"episode shorter than T+1 = {min_len} steps")),
            "task_code": pa.Column(int, pa.Check.in_range(0, n_tasks - 1, error="task code outside attrs.tasks")),
            "task": pa.Column(str, task_checks),
            "kind_code": pa.Column(
                int, pa.Check.in_range(0, len(EPISODE_KINDS) - 1, error=f"kind code outside {EPISODE_KINDS}")
            ),
            "scene": pa.Column(str, scene_checks),
            "rgb_min": pa.Column(float, pa.Check.ge(0, error="rgb values below 0")),
            "rgb_max": pa.Column(float, pa.Check.le(255, error="rgb values above 255")),
            "rgb_frame_std_min": pa.Column(
                float, pa.Check.gt(0, error="a frame is constant (blank render? check MUJOCO_GL / EGL)")
            ),
        },
        strict=False,
    )


_EPISODE_FIELDS = {
    "end": "meta/episode_ends",
    "length": "meta/episode_ends",
    "task_code": "meta/episode_task",
    "task": "meta/episode_task",
    "kind_code": "meta/episode_kind",
    "scene": "meta/episode_scene",
    "rgb_min": "data/rgb",
    "rgb_max": "data/rgb",
    "rgb_frame_std_min": "data/rgb",
}


# ---------------------------------------------------------------------- per-step table
def _step_table(store: EpisodeStore) -> pd.DataFrame:
    data = {k: store.array(f"data/{k}")[:] for k in ("action", "reward", "success", "state")}
    cols: dict[str, np.ndarray] = {}
    for i in range(data["action"].shape[1]):
        cols[f"action[{i}]"] = data["action"][:, i].astype(np.float64)
    cols["reward"] = data["reward"].astype(np.float64)
    cols["success"] = data["success"].astype(np.float64)
    for i in range(data["state"].shape[1]):
        cols[f"state[{i}]"] = data["state"][:, i].astype(np.float64)
    return pd.DataFrame(cols)


def _step_schema(store: EpisodeStore, tol: float) -> pa.DataFrameSchema:
    finite = pa.Check(np.isfinite, error="value is not finite")
    low, high = store.attrs["action_low"], store.attrs["action_high"]
    columns = {
        f"action[{i}]": pa.Column(
            float,
            [finite, pa.Check.in_range(lo - tol, hi + tol, error=f"action outside bounds [{lo}, {hi}]")],
            nullable=False,
        )
        for i, (lo, hi) in enumerate(zip(low, high))
    }
    columns["reward"] = pa.Column(float, finite, nullable=False)
    columns["success"] = pa.Column(float, pa.Check.isin([0.0, 1.0], error="success must be 0 or 1"), nullable=False)
    columns |= {
        f"state[{i}]": pa.Column(float, finite, nullable=False) for i in range(store.attrs["state_dim"])
    }
    return pa.DataFrameSchema(columns, strict=False)


def _step_field(column: str) -> str:
    name = column.split("[")[0]
    return f"data/{name}" + (f"[{column.split('[')[1]}" if "[" in column else "")


# ---------------------------------------------------------------------- driver
def _run_schema(
    schema: pa.DataFrameSchema,
    df: pd.DataFrame,
    report: StoreReport,
    limit: int,
    locate: Any,
    field_of: Any,
) -> None:
    try:
        schema.validate(df, lazy=True)
    except pa.errors.SchemaErrors as err:
        cases = err.failure_cases
        for row in cases.itertuples(index=False):
            column = row.column if isinstance(row.column, str) else "?"
            index = None if pd.isna(row.index) else int(row.index)
            episode, step = locate(index)
            check = str(row.check)
            value = row.failure_case
            report.add(
                Issue(report.url, field_of(column), check, f"{column}: {check} (value {value!r})", episode, step),
                limit,
            )


def validate_store(url: str, config: ValidationConfig, endpoint_url: str | None = None) -> StoreReport:
    report = StoreReport(url=str(url))
    limit = config.max_reported_per_check
    try:
        store = EpisodeStore.open(url, endpoint_url=endpoint_url, consolidated=False)
    except IncompleteStoreError as err:
        report.add(Issue(str(url), "attrs.complete", "complete", str(err)), limit)
        return report
    except StoreFormatError as err:
        report.add(Issue(str(url), "attrs.format_version", "format", str(err)), limit)
        return report
    except FileNotFoundError as err:
        report.add(Issue(str(url), "store", "exists", str(err)), limit)
        return report
    for path in store.stale_consolidated():
        report.add(Issue(str(url), path, "consolidated",
                         "the consolidated metadata in the root zarr.json disagrees with this node's own "
                         "(the store was changed without re-consolidating); readers would see the old "
                         "layout: re-run the stage that writes it, or zarr.consolidate_metadata(store)"), limit)
    if not _check_structure(store, report, limit):
        return report
    report.info = store.info()

    episodes = _episode_table(store)
    schema = _episode_schema(len(store.attrs["tasks"]), config.known_tasks, config.context_frames + 1,
                             config.distinct_scenes)
    _run_schema(schema, episodes, report, limit, lambda i: (i, None), lambda c: _EPISODE_FIELDS.get(c, c))

    ends = store.episode_ends
    starts = store.episode_starts

    def locate_step(index: int | None) -> tuple[int | None, int | None]:
        if index is None:
            return None, None
        ep = int(np.searchsorted(ends, index, side="right"))
        return ep, int(index - starts[ep]) if ep < len(starts) else None

    _run_schema(
        _step_schema(store, config.action_tolerance), _step_table(store), report, limit, locate_step, _step_field
    )
    return report


def validate_stores(
    paths: list[str], config: ValidationConfig, endpoint_url: str | None = None
) -> dict[str, Any]:
    """Validate every store under ``paths``; the returned report is JSON-able."""
    urls = find_stores(paths)
    reports = [validate_store(u, config, endpoint_url) for u in urls]
    if not urls:
        missing = StoreReport(url=", ".join(paths))
        missing.add(Issue(missing.url, "store", "exists", "no episode store (*.zarr) found"), 1)
        reports.append(missing)
    return {
        "ok": all(r.ok for r in reports),
        "config": asdict(config),
        "stores": [r.to_dict() for r in reports],
        "n_issues": sum(sum(r.issue_counts.values()) for r in reports),
    }
