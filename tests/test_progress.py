"""Progress on a pipe or log file: plain lines, rate-limited, the final state always written."""

from __future__ import annotations

import io

import pytest

from w4rl_core.progress import progress_bar


def test_not_a_terminal_gives_rate_limited_plain_lines(monkeypatch):
    monkeypatch.setenv("W4RL_PROGRESS_INTERVAL", "3600")
    out = io.StringIO()  # isatty() is False, like a pipe to Prefect or a CI log
    for _ in progress_bar(range(5000), desc="train world model", unit="step", stream=out):
        pass
    lines = out.getvalue().splitlines()
    assert "\r" not in out.getvalue()
    assert len(lines) <= 2, lines  # the first redraw and the final one, nothing in between
    assert lines[-1].startswith("train world model: 100%") and "5000/5000" in lines[-1]


def test_interval_zero_writes_every_update_and_bad_values_are_named(monkeypatch):
    monkeypatch.setenv("W4RL_PROGRESS_INTERVAL", "0")
    out = io.StringIO()
    bar = progress_bar(total=3, desc="refine", stream=out)
    for _ in range(3):
        bar.update(1)
    bar.close()
    assert [line.split("|")[0].strip() for line in out.getvalue().splitlines()][-1] == "refine: 100%"
    assert len(out.getvalue().splitlines()) >= 3
    monkeypatch.setenv("W4RL_PROGRESS_INTERVAL", "soon")
    with pytest.raises(ValueError, match="W4RL_PROGRESS_INTERVAL"):
        progress_bar(range(1), desc="x", stream=io.StringIO())


def test_disabled_writes_nothing():
    out = io.StringIO()
    for _ in progress_bar(range(10), desc="x", enabled=False, stream=out):
        pass
    assert out.getvalue() == ""
