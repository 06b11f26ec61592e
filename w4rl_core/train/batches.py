"""Where the world model's training batches come from: windows held in memory (the default) or
streamed from the episode stores, for data that does not fit in memory (w4rl_core/data/stream.py).

Either source is an endless iterator of batches in `FrameWindows.gather`'s format on the training
device, each this rank's part of the global batch, so `Training.step` reads both the same way.
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass

import torch

from w4rl_core.data.stream import StreamConfig, WindowStream, training_batches, window_loader
from w4rl_core.data.windows import FrameWindows
from w4rl_core.train.configs import _DEFAULT_STREAM, WorldModelDataConfig  # noqa: F401 (re-exported; torch-free home)

#: frames (B,L,3,H,W) float in [-1,1], actions (B,L,A), success (B,L).
Batch = tuple[torch.Tensor, torch.Tensor, torch.Tensor]


@dataclass(frozen=True)
class StreamedWindows:
    """Train windows to stream rather than load: the episodes `load_windows(urls, image_size,
    val_fraction, split_seed)` puts in its train split, read as `config` says."""

    urls: tuple[str, ...]
    image_size: int | None
    val_fraction: float
    split_seed: int
    config: StreamConfig = _DEFAULT_STREAM

    def stream(self, length: int, seed: int, rank: int, world_size: int, first_epoch: int = 0) -> WindowStream:
        """This rank's stream of windows of `length` frames, its order seeded by `seed`. Reads the
        stores' metadata only; frames are read as batches are drawn."""
        return WindowStream(self.urls, length, self.image_size, val_fraction=self.val_fraction, seed=seed,
                            split_seed=self.split_seed, rank=rank, world_size=world_size, config=self.config,
                            first_epoch=first_epoch)


def memory_batches(windows: FrameWindows, batch_size: int, length: int, generator: torch.Generator,
                   device: torch.device, shard: tuple[int, int]) -> Iterator[Batch]:
    """`batch_size` random windows of `windows` per batch, this rank's part of them, drawn with
    `generator` as each batch is taken: a checkpoint of the generator's state makes a resumed run
    draw the batches the uninterrupted run would have."""
    while True:
        yield windows.sample(batch_size, length, generator, device, shard=shard)


def streamed_batches(stream: WindowStream, rank_batch_size: int, device: torch.device) -> Iterator[Batch]:
    """`rank_batch_size` windows of `stream` (this rank's share of the data) per batch."""
    return training_batches(window_loader(stream, rank_batch_size), device)
