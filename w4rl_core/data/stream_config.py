"""How training windows are streamed from the stores (w4rl_core/data/stream.py): the config alone,
importable without torch (see w4rl_core/models/configs.py for why)."""

from __future__ import annotations

from dataclasses import dataclass, fields


@dataclass(frozen=True)
class StreamConfig:
    """How windows are streamed. Validated at construction."""

    # Windows held for shuffling, per loader process. The buffer holds copies, so its memory is
    # shuffle_buffer x length frames whatever the episode lengths (2048 x 5 x 12 KB = 126 MB at 64 px),
    # plus the read_ahead + 1 episodes being read and cut. It mixes windows of about
    # shuffle_buffer / (windows per episode) episodes, and fills before the first window is yielded.
    shuffle_buffer: int = 2048
    # DataLoader worker processes per rank (0: read in the training process). Each reads its own
    # share of episodes and holds its own buffer.
    loader_workers: int = 0
    # Episodes read concurrently ahead of use, per loader process. An episode is ~20 sequential S3
    # requests (zarr fetches a partial shard one chunk at a time), so on a bucket with tens of ms per
    # request, latency, not bandwidth, bounds one reader; concurrent reads overlap it.
    read_ahead: int = 4

    def __post_init__(self) -> None:
        minimum = {"shuffle_buffer": 1, "loader_workers": 0, "read_ahead": 1}
        for f in fields(self):
            value = getattr(self, f.name)
            if not isinstance(value, int) or isinstance(value, bool) or value < minimum[f.name]:
                raise ValueError(f"StreamConfig.{f.name} must be an integer >= {minimum[f.name]}, got {value!r}")
