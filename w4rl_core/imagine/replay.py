"""Imagined twins of recorded episodes: the reward's view of the world model.

For each recorded episode, the world model replays it open loop from its first T real frames with
the recorded actions. The twin has the real episode's length, task, kind and success labels, so a
success classifier can be trained and calibrated on what imagination shows it (refinement scores
imagined frames only), against outcomes that really happened: where the model draws a success that
did not happen, or blurs one that did, the classifier and its detector learn it.
"""

from __future__ import annotations

import numpy as np
import torch

from w4rl_core.data.windows import FrameWindows
from w4rl_core.eval.fidelity import Sampler, rollout


@torch.no_grad()
def imagined_twins(sample: Sampler, context_frames: int, episodes: FrameWindows, horizon: int,
                   device: str | torch.device = "cpu", batch: int = 64, seed: int = 0) -> FrameWindows:
    """FrameWindows of the imagined twins of every episode of `episodes` with T + horizon steps:
    T real context frames, then `horizon` imagined ones (uint8, as stored frames are), the recorded
    actions and the real success labels. Episodes shorter than T + horizon are left out."""
    t, length = context_frames, context_frames + horizon
    starts = episodes.first_windows(length)
    if len(starts) == 0:
        raise ValueError(f"no episode has T + horizon = {length} steps to imagine a twin of")
    gen = torch.Generator(device=device).manual_seed(seed)
    rgb, action, success = [], [], []
    for i in range(0, len(starts), batch):
        frames, actions, labels = episodes.gather(starts[i : i + batch], length, device)
        pred = rollout(sample, frames, actions, t, horizon, gen)
        twin = torch.cat([frames[:, :t], pred], dim=1)
        rgb.append(((twin.clamp(-1, 1) + 1) * 127.5).round().to(torch.uint8).flatten(0, 1).cpu())
        action.append(actions.flatten(0, 1).cpu())
        success.append(labels.flatten(0, 1).cpu())
    index = {int(s): i for i, s in enumerate(episodes.episode_starts)}
    picked = [index[int(s)] for s in starts]
    return FrameWindows(
        rgb=torch.cat(rgb), action=torch.cat(action), success=torch.cat(success).to(torch.uint8),
        episode_ends=np.arange(1, len(starts) + 1, dtype=np.int64) * length,
        episode_task=[episodes.episode_task[i] for i in picked],
        episode_kind=[episodes.episode_kind[i] for i in picked],
        action_low=episodes.action_low, action_high=episodes.action_high,
    )
