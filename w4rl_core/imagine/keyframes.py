"""Keyframe starts and real Monte-Carlo values: short imagined rollouts that begin anywhere in a
recorded episode (issue 21, lever 2; WoVR reports 78.2 -> 81.5 from this alone).

Free-running imagination drifts with its length: over 46 steps from an episode's first frames the
detector on imagined frames fired on 92-100% of held-out episodes of which 56-60% truly succeeded,
while over windows of at most 8 steps started from real frames it agreed with the detector on the
real frames of the same windows in 84-100% of cases (measured on two Meta-World tasks outside the
project's four, docs/results.md). So PPO can roll a few steps from real frames taken throughout the
recorded episodes, where imagination still agrees with reality, and stand on a critic fitted to what
really happened afterwards (the real episodes' discounted success returns) at the cut.

Positions follow ImaginedEnv's clock: a window of T frames starting at episode frame p is an
imagined episode's state after p steps (its last frame is frame p + T - 1, the observation), and
step j from it generates frame p + T + j. A keyframe is a state before the episode's first
successful frame (a success already reached teaches nothing), from which a whole rollout of
`horizon` steps fits in the real episode's length.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np

from w4rl_core.data.windows import FrameWindows


@dataclass(frozen=True)
class Keyframes:
    """Where short imagined rollouts may start: window starts into the FrameWindows (the T context
    frames begin there) and each one's position, the steps a real episode has taken to get there."""

    window_starts: np.ndarray  # (K,) int64 indices into contexts' frame axis
    positions: np.ndarray  # (K,) int64 steps elapsed in the episode at that state

    def __len__(self) -> int:
        return len(self.window_starts)


def _first_success(success: np.ndarray) -> int | None:
    hits = np.flatnonzero(success)
    return int(hits[0]) if len(hits) else None


def keyframes(contexts: FrameWindows, t: int, horizon: int, tasks: Sequence[str] | None = None) -> Keyframes:
    """Every state of the recorded episodes (of `tasks`) from which `horizon` imagined steps fit in
    the episode and whose observation precedes the episode's first successful frame."""
    if t < 1 or horizon < 1:
        raise ValueError(f"need context frames t >= 1 and horizon >= 1, got {t}, {horizon}")
    success = contexts.success.cpu().numpy()
    starts, positions = [], []
    for s, e, task in zip(contexts.episode_starts, contexts.episode_ends, contexts.episode_task):
        if tasks is not None and task not in tasks:
            continue
        length = int(e - s)
        first = _first_success(success[s:e])
        last = length - t - horizon  # the last position from which `horizon` steps fit
        if first is not None:
            last = min(last, first - t)  # the observation (frame p + t - 1) precedes the first success
        if last < 0:
            continue
        p = np.arange(last + 1)
        starts.append(s + p)
        positions.append(p)
    if not starts:
        raise ValueError(f"no recorded episode (of tasks {tasks}) has a state before its first success from "
                         f"which {horizon} imagined steps fit after {t} context frames")
    return Keyframes(np.concatenate(starts).astype(np.int64), np.concatenate(positions).astype(np.int64))


@dataclass(frozen=True)
class MonteCarloValues:
    """Real discounted success returns of recorded states: the critic's targets before refinement."""

    window_starts: np.ndarray  # (M,) the state's T context frames start here
    positions: np.ndarray  # (M,) steps elapsed in the episode
    returns: np.ndarray  # (M,) float32: gamma^(steps to the first success), 0 if the episode never succeeds

    def __len__(self) -> int:
        return len(self.window_starts)


def monte_carlo_values(contexts: FrameWindows, t: int, gamma: float, kinds: Sequence[str] = ("policy",),
                       tasks: Sequence[str] | None = None) -> MonteCarloValues:
    """The return of every state before the first success of the recorded episodes of `kinds`, under
    the sparse reward refinement optimises: 1 on the step whose new frame is the first successful
    one, then the episode ends. The BC policy's own rollouts (`policy`) estimate the value of the
    policy refinement starts from; other kinds are a fallback where none was recorded."""
    if not 0 <= gamma <= 1:
        raise ValueError(f"gamma must be in [0, 1], got {gamma}")
    success = contexts.success.cpu().numpy()
    chosen = [i for i, (task, kind) in enumerate(zip(contexts.episode_task, contexts.episode_kind))
              if kind in kinds and (tasks is None or task in tasks)]
    if not chosen:
        raise ValueError(f"no recorded episode of kinds {list(kinds)} (tasks {tasks}) to fit the critic on")
    starts, positions, returns = [], [], []
    for i in chosen:
        s, e = int(contexts.episode_starts[i]), int(contexts.episode_ends[i])
        first = _first_success(success[s:e])
        last = (e - s) - t - 1 if first is None else first - t  # states whose observation precedes success
        if last < 0:
            continue
        p = np.arange(last + 1)
        starts.append(s + p)
        positions.append(p)
        # Step j from position p generates frame p + t + j; the first success is frame `first`.
        ret = np.zeros(len(p), np.float32) if first is None else (gamma ** (first - t - p)).astype(np.float32)
        returns.append(ret)
    if not starts:
        raise ValueError(f"no recorded episode of kinds {list(kinds)} has a state before its first success")
    return MonteCarloValues(np.concatenate(starts).astype(np.int64), np.concatenate(positions).astype(np.int64),
                            np.concatenate(returns))
