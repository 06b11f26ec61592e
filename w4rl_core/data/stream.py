"""Training windows streamed from episode stores (local or s3://), for data that does not fit in memory.

Why: `windows.load_windows` holds every train frame in host memory (12 KB per 64 px frame, so the
paper recipe's 69,000 frames take < 1 GB) and, under data parallelism, one copy per rank. That stays
the default for data that fits: it is simpler and its feed is far faster than training consumes.
A dataset of millions of frames does not fit; this module streams it instead, holding only a
bounded buffer of windows per loader process.

What is read when:

- construction: each store's metadata and episode index (a few requests per store, no frames), to
  split train/val exactly as `load_windows` does (`split_episodes`), check that the stores' action
  bounds agree, and count episodes, frames and windows.
- iteration, per episode: one range read per array (data/rgb, data/action, data/success), widened
  to that array's chunk boundaries and trimmed to the episode, `read_ahead` episodes at a time on
  threads (their storage requests overlap); frames are then resized with `windows._resize`, the
  in-memory path's resize, so both paths give the same pixels. Each iterating
  process (the trainer, or each DataLoader worker) opens the stores itself on first use; s3:// URLs
  get their endpoint and retries from storage.py and credentials from the standard AWS chain.

Sharding: epoch e shuffles the list of train episodes of all stores with the seed (seed, e), the
same on every rank. With W ranks of K loader workers each, worker w of rank r takes every (W*K)-th
episode of that order starting at r*K + w: the shares are disjoint and together cover the epoch.
Iteration starts at epoch `first_epoch`: 0, or past the epochs a resumed training run has read, so
that a run resumed again and again does not replay the start of epoch 0 each time.
Windows are cut inside one episode, so they never cross an episode boundary. The stream never ends
(epochs follow one another), so ranks whose shares hold different numbers of windows still draw the
same number of batches and none waits at a collective for one that ran out.

Shuffling: the windows of each episode read go into a buffer of `shuffle_buffer` windows; once it
is full, each new window replaces a random one, which is yielded. Everything random is seeded from
(seed, epoch) or (seed, rank, world size, worker, worker count), never from a global RNG, so the
stream is a function of those.
"""

from __future__ import annotations

import itertools
import threading
from collections import deque
from collections.abc import Iterator, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass

import numpy as np
import torch
import zarr
from torch.utils.data import DataLoader, IterableDataset, get_worker_info

from w4rl_core.data.store import EpisodeStore, split_episodes
from w4rl_core.data.stream_config import StreamConfig  # noqa: F401 (re-exported; torch-free home)
from w4rl_core.data.windows import _resize, same_action_bounds

#: The arrays a training window needs, in the order a window holds them.
KEYS = ("rgb", "action", "success")

#: One window: frames uint8 (L,3,H,W), actions float32 (L,A), success uint8 (L,).
Window = tuple[torch.Tensor, torch.Tensor, torch.Tensor]


@dataclass(frozen=True)
class StreamEpisode:
    """One train episode: the index of its store in the stream's URL list, its index in that store,
    and its frame range [start, end) in the store's time axis."""

    store: int
    index: int
    start: int
    end: int

    @property
    def length(self) -> int:
        return self.end - self.start


def read_aligned(array: zarr.Array, start: int, end: int) -> np.ndarray:
    """Rows [start, end) of `array` through one read of the enclosing chunk-aligned range.

    Zarr fetches and decodes whole chunks whatever the slice, so the widened range costs nothing
    extra and states what is really read; one call per array lets zarr fetch the range's chunks in
    one pass instead of one pass per frame or window."""
    rows = array.chunks[0]
    lo, hi = start // rows * rows, min(-(-end // rows) * rows, array.shape[0])
    return array[lo:hi][start - lo : end - lo]


class EpisodeReader:
    """Reads whole episodes of a list of stores, opening each store on first use (so that every
    process that iterates opens its own handles). Safe to call from several threads."""

    def __init__(self, urls: Sequence[str]) -> None:
        self._urls = list(urls)
        self._arrays: dict[int, list[zarr.Array]] = {}
        self._opening = threading.Lock()  # concurrent first reads of a store open it once

    def read(self, episode: StreamEpisode) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """(rgb (T,H,W,3) uint8, action (T,A) float32, success (T,) uint8) of one episode."""
        with self._opening:
            if episode.store not in self._arrays:
                store = EpisodeStore.open(self._urls[episode.store])
                self._arrays[episode.store] = [store.array(f"data/{key}") for key in KEYS]
        rgb, action, success = (read_aligned(a, episode.start, episode.end) for a in self._arrays[episode.store])
        return rgb, action, success


def prefetch(
    reader: EpisodeReader, episodes: Iterator[StreamEpisode], depth: int
) -> Iterator[tuple[np.ndarray, np.ndarray, np.ndarray]]:
    """The episodes' arrays in order, with up to `depth` reads in flight on threads (zarr runs them
    on its event loop, so their requests overlap). Closing the iterator waits for those in flight."""
    with ThreadPoolExecutor(depth) as pool:
        pending = deque(pool.submit(reader.read, e) for e in itertools.islice(episodes, depth))
        while pending:
            arrays = pending.popleft().result()
            pending.extend(pool.submit(reader.read, e) for e in itertools.islice(episodes, 1))
            yield arrays


def _worker() -> tuple[int, int]:
    """(this loader worker's id, the number of loader workers); (0, 1) outside a DataLoader worker."""
    info = get_worker_info()
    return (0, 1) if info is None else (info.id, info.num_workers)


class WindowStream(IterableDataset):
    """Endless random windows of `length` frames from the train episodes of `urls` (module doc).

    The train episodes are those `load_windows(urls, image_size, val_fraction, split_seed)` trains
    on (`split_seed` defaults to `seed`, the seed of the stream's order); episodes shorter than
    `length` hold no window and are left out."""

    def __init__(
        self, urls: Sequence[str], length: int, image_size: int | None = None, *, val_fraction: float = 0.0,
        seed: int = 0, rank: int = 0, world_size: int = 1, config: StreamConfig = StreamConfig(),
        split_seed: int | None = None, first_epoch: int = 0,
    ) -> None:
        super().__init__()
        for name, value, minimum in (("length", length, 1), ("world_size", world_size, 1), ("seed", seed, 0),
                                     ("first_epoch", first_epoch, 0)):
            if value < minimum:
                raise ValueError(f"{name} must be >= {minimum}, got {value}")
        if image_size is not None and image_size < 1:
            raise ValueError(f"image_size must be >= 1 or None, got {image_size}")
        if not 0 <= rank < world_size:
            raise ValueError(f"rank must be in [0, world_size={world_size}), got {rank}")
        if not urls:
            raise ValueError("urls: no stores given")
        self.urls = [str(u) for u in urls]
        self.length, self.image_size, self.seed, self.first_epoch = length, image_size, seed, first_epoch
        self.rank, self.world_size, self.config = rank, world_size, config
        self.episodes, self.action_low, self.action_high = self._index(val_fraction,
                                                                       seed if split_seed is None else split_seed)
        if not self.episodes:
            raise ValueError(f"no train episode of {self.urls} has {length} frames: nothing to stream")

    def _index(self, val_fraction: float, split_seed: int
               ) -> tuple[list[StreamEpisode], tuple[float, ...], tuple[float, ...]]:
        """Train episodes that hold a window, and the action bounds, from metadata only. The store
        handles are dropped: DataLoader workers must not share them (they open their own)."""
        episodes: list[StreamEpisode] = []
        bounds = None
        for s, url in enumerate(self.urls):
            store = EpisodeStore.open(url)
            bounds = same_action_bounds(store, url, bounds)
            train_ids, _ = split_episodes(store, val_fraction, split_seed)
            starts, ends = store.episode_starts, store.episode_ends
            episodes += [StreamEpisode(s, int(i), int(starts[i]), int(ends[i])) for i in train_ids
                         if ends[i] - starts[i] >= self.length]
        return episodes, *bounds

    @property
    def n_episodes(self) -> int:
        return len(self.episodes)

    @property
    def n_frames(self) -> int:
        return sum(e.length for e in self.episodes)

    @property
    def n_windows(self) -> int:
        """Windows per epoch, all ranks and workers together."""
        return sum(e.length - self.length + 1 for e in self.episodes)

    def share(self, epoch: int, worker: int = 0, workers: int = 1) -> list[StreamEpisode]:
        """The episodes loader worker `worker` of `workers` on this rank reads in `epoch`, in order."""
        shards = self.world_size * workers
        if shards > len(self.episodes):
            raise ValueError(f"{len(self.episodes)} episodes cannot be shared among {self.world_size} ranks x "
                             f"{workers} loader workers: use fewer workers or more data")
        order = np.random.default_rng((self.seed, epoch)).permutation(len(self.episodes))
        return [self.episodes[i] for i in order[self.rank * workers + worker :: shards]]

    def _windows(self, rgb: np.ndarray, action: np.ndarray, success: np.ndarray) -> Iterator[Window]:
        arrays = (_resize(rgb, self.image_size).numpy(), action, success)
        for o in range(len(rgb) - self.length + 1):
            # Copies, not views: a view would keep its whole episode alive while it sits in the buffer.
            # numpy copies these few KB on this thread; torch's clone would wake its thread pool for
            # each (17x slower per window on the busy 2-core dev machine).
            frames, actions, flags = (a[o : o + self.length].copy() for a in arrays)
            yield torch.from_numpy(frames), torch.from_numpy(actions), torch.from_numpy(flags)

    def __iter__(self) -> Iterator[Window]:
        worker, workers = _worker()
        episodes = (e for epoch in itertools.count(self.first_epoch) for e in self.share(epoch, worker, workers))
        rng = np.random.default_rng((self.seed, self.rank, self.world_size, worker, workers))
        buffer: list[Window] = []
        for arrays in prefetch(EpisodeReader(self.urls), episodes, self.config.read_ahead):
            for window in self._windows(*arrays):
                if len(buffer) < self.config.shuffle_buffer:
                    buffer.append(window)
                    continue
                slot = int(rng.integers(len(buffer)))
                yield buffer[slot]
                buffer[slot] = window


def window_loader(stream: WindowStream, batch_size: int) -> DataLoader:
    """Batches of `batch_size` windows (per rank) as uint8/float32 CPU tensors, read by the stream's
    `loader_workers` processes (kept alive across iterations), pinned for the copy when CUDA is used."""
    if batch_size < 1:
        raise ValueError(f"batch_size must be >= 1, got {batch_size}")
    workers = stream.config.loader_workers
    return DataLoader(stream, batch_size=batch_size, num_workers=workers, persistent_workers=workers > 0,
                      pin_memory=torch.cuda.is_available())


def to_device(batch: Sequence[torch.Tensor], device: torch.device | str = "cpu") -> Window:
    """A loader batch as `FrameWindows.gather` returns one: frames (B,L,3,H,W) float in [-1,1],
    actions (B,L,A), success (B,L), on `device` (same arithmetic, so the same values)."""
    rgb, action, success = batch
    frames = rgb.to(device, non_blocking=True).float().div_(127.5).sub_(1.0)
    return frames, action.to(device, non_blocking=True), success.to(device, non_blocking=True)


def training_batches(loader: DataLoader, device: torch.device | str = "cpu") -> Iterator[Window]:
    """Endless training batches from `window_loader`, in `FrameWindows.gather`'s format on `device`."""
    for batch in loader:
        yield to_device(batch, device)
