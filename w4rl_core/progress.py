"""Progress of long steps (collection, training, refinement, evaluation, fidelity), through tqdm.

On a terminal: tqdm's live bar. Anywhere else (`dvc repro` under Prefect, CI, a log file): tqdm
still runs, rate-limited to one plain line every W4RL_PROGRESS_INTERVAL seconds (default 30) plus
the final one, because carriage-return redraws turn a log into one unreadable line.
"""

from __future__ import annotations

import os
import sys
from collections.abc import Iterable
from typing import Any, TextIO

from tqdm import tqdm

DEFAULT_INTERVAL_S = 30.0


class _Lines:
    """A file for tqdm that turns each redraw ("\\r" + status) into one line."""

    def __init__(self, stream: TextIO) -> None:
        self.stream = stream

    def write(self, text: str) -> None:
        line = text.replace("\r", "").rstrip()
        if line:
            self.stream.write(line + "\n")

    def flush(self) -> None:
        self.stream.flush()


def interval_s() -> float:
    raw = os.environ.get("W4RL_PROGRESS_INTERVAL", str(DEFAULT_INTERVAL_S))
    try:
        value = float(raw)
    except ValueError:
        raise ValueError(f"W4RL_PROGRESS_INTERVAL must be a number of seconds, got {raw!r}") from None
    if value < 0:
        raise ValueError(f"W4RL_PROGRESS_INTERVAL must be >= 0, got {raw!r}")
    return value


def progress_bar(iterable: Iterable[Any] | None = None, *, desc: str, unit: str = "it", total: int | None = None,
                 initial: int = 0, enabled: bool = True, stream: TextIO | None = None) -> tqdm:
    stream = stream or sys.stderr
    common = dict(iterable=iterable, total=total, desc=desc, unit=unit, initial=initial, disable=not enabled)
    if stream.isatty():
        return tqdm(file=stream, **common)
    every = interval_s()
    # miniters=0 + mininterval: time alone decides when a line is written, however fast the loop.
    return tqdm(file=_Lines(stream), mininterval=every, maxinterval=max(every, 1.0), miniters=0, ascii=True,
                ncols=100, **common)
