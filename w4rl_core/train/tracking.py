"""Training curves and run summaries, written by DVCLive.

One directory per training run, in DVCLive's layout, so `dvc plots show`, `dvc plots diff`,
`dvc metrics show` and `dvc exp show` read it as they read any DVCLive run:

    <dir>/metrics.json                 the summary: each curve's last value, `step`, and what the
                                       trainer adds (timings, sizes, final evaluation)
    <dir>/plots/metrics/<name>.tsv     one curve per metric: step, value

Two things this module adds to DVCLive, both because the pipeline promises them:
- Atomicity. DVCLive appends to its files as training runs; here it writes into `<dir>.partial/`
  (watch the curves there while a run trains) and the finished directory is renamed into place, so
  a killed run never leaves a curve beside no model, or a summary of a run that did not finish.
- Resume. A trainer resumed from its checkpoint replays the rows the checkpoint saved into a fresh
  log, so the resumed run's curve is the uninterrupted run's, row for row.

Timings (seconds, samples/s) belong here and not in a model's metadata: they differ between two
runs that produce identical weights, and in the metadata they would change the model's DVC hash.
"""

from __future__ import annotations

import math
import os
import shutil
from collections.abc import Iterable, Mapping
from pathlib import Path
from typing import Any

from w4rl_core.atomic import atomic_path

#: Summary keys that measure the run rather than describe the model: kept out of model metadata.
TIMING_KEYS = frozenset({"seconds", "train_samples_per_s", "resumed_from_step",
                         "imagined_frames_per_s", "update_s"})  # the last two: PPO's per-iteration curves


def without_timings(summary: Mapping[str, Any]) -> dict[str, Any]:
    return {k: v for k, v in summary.items() if k not in TIMING_KEYS}


def timings_of(summary: Mapping[str, Any]) -> dict[str, Any]:
    return {k: v for k, v in summary.items() if k in TIMING_KEYS}


def partial_dir(directory: str | os.PathLike[str]) -> Path:
    final = Path(directory)
    return final.with_name(f"{final.name}.partial")


def _live(directory: Path) -> Any:
    from dvclive import Live

    class PipelineLive(Live):
        """DVCLive without its repository integration. dvc.yaml declares these runs, the pipeline
        (dvc repro / dvc exp run / the flow) owns experiments and commits, so `_init_dvc` (open the
        repo, read HEAD, plan an experiment commit, Studio) has nothing to do here, and in a git
        repo without commits it raises SCMError("Empty git repo"), which its guard does not catch
        (dvclive 3.49.1; treeverse/dvclive#522). Overriding a private hook of a pinned version is
        the cost; tests/test_dvc_pipeline.py runs it in a fresh, commit-less repo."""

        def _init_dvc(self) -> None:
            return None

    return PipelineLive(str(directory), resume=False, save_dvc_exp=False, dvcyaml=None, report=None)


class CurveLog:
    """A DVCLive run written whole at `finish`: `log(row)` per logged step, `finish(summary)` once."""

    def __init__(self, directory: str | os.PathLike[str], step_key: str = "step",
                 replay: Iterable[Mapping[str, Any]] = ()) -> None:
        self.directory = Path(directory)
        self.step_key = step_key
        work = partial_dir(self.directory)
        shutil.rmtree(work, ignore_errors=True)  # a killed run's leftovers: the replay rebuilds them
        self._live = _live(work)
        for row in replay:
            self.log(row)

    def log(self, row: Mapping[str, Any], scope: str = "") -> None:
        self._live.step = int(row[self.step_key])
        for name, value in row.items():
            if name == self.step_key or value is None:
                continue  # a metric not measured at this step (e.g. validation loss between validations)
            self._live.log_metric(f"{scope}/{name}" if scope else name,
                                  float(value) if not isinstance(value, str) else value)
        self._live.make_summary()  # metrics.json follows the run, for `dvc exp show` while it trains

    def scope(self, name: str) -> ScopedLog:
        """Curves of one of several runs in this log (plots/metrics/<name>/..., summary[name]): the
        refinement seeds of a task share one DVCLive directory, the shape `dvc plots` overlays."""
        return ScopedLog(self, name)

    def finish(self, summary: Mapping[str, Any] | None = None) -> None:
        """Add `summary` to the metrics (non-finite floats as strings, as DVCLive stores them) and
        move the run into place."""
        self._live.summary.update(_json_safe(dict(summary or {})))
        self._live.make_summary()
        work = Path(self._live.dir)
        with atomic_path(self.directory) as tmp:
            os.replace(work, tmp)


class ScopedLog:
    def __init__(self, parent: CurveLog, name: str) -> None:
        self.parent, self.name = parent, name

    def log(self, row: Mapping[str, Any]) -> None:
        self.parent.log(row, self.name)


def _json_safe(value: Any) -> Any:
    if isinstance(value, float) and not math.isfinite(value):
        return str(value)
    if isinstance(value, Mapping):
        return {k: _json_safe(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_json_safe(v) for v in value]
    return value
