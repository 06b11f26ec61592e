"""Streamed training windows (w4rl_core/data/stream.py) against the in-memory path they replace."""

from __future__ import annotations

import itertools
from collections import Counter
from pathlib import Path

import numpy as np
import pytest
import torch
import zarr

from conftest import make_episode, tiny_layout
from w4rl_core.data.store import EpisodeStore, split_episodes
from w4rl_core.data.stream import StreamConfig, WindowStream, to_device, window_loader
from w4rl_core.data.windows import load_windows

LENGTH, SIZE, VAL, SEED = 3, 8, 0.25, 3
TASKS, KINDS = ("coffee-pull-v3", "door-lock-v3"), ("expert", "random")
# 4 frames per chunk and 16 per shard: episodes of 9..15 frames start and end mid-chunk, and the
# low-dim arrays (16 x 8 = 128 rows per chunk) span several chunks.
LAYOUT = {"frames_per_chunk": 4, "frames_per_shard": 16}


def write_store(url: str | Path, seeds: range) -> str:
    store = EpisodeStore.create(url, tiny_layout(**LAYOUT))
    store.append(make_episode(9 + s % 7, task=TASKS[s % 2], kind=KINDS[s // 2 % 2], seed=s) for s in seeds)
    return str(url)


@pytest.fixture
def urls(tmp_path: Path) -> list[str]:
    return [write_store(tmp_path / "a.zarr", range(0, 8)), write_store(tmp_path / "b.zarr", range(8, 14))]


def stream(urls: list[str], shuffle_buffer: int = 8, **kwargs) -> WindowStream:
    kwargs = {"val_fraction": VAL, "seed": SEED} | kwargs
    return WindowStream(urls, LENGTH, SIZE, config=StreamConfig(shuffle_buffer=shuffle_buffer), **kwargs)


def key(rgb: torch.Tensor, action: torch.Tensor, success: torch.Tensor) -> bytes:
    return rgb.numpy().tobytes() + action.numpy().tobytes() + success.numpy().tobytes()


def in_memory_windows(urls: list[str]) -> tuple[dict[bytes, tuple[int, int, int]], object]:
    """Every train window of the in-memory path, by content -> (store, episode, global start in the
    FrameWindows), and the FrameWindows. Random frames make the content unique."""
    train, _ = load_windows(urls, SIZE, VAL, SEED)
    ids = [(s, int(i)) for s, url in enumerate(urls) for i in split_episodes(EpisodeStore.open(url), VAL, SEED)[0]]
    out = {}
    for (store, index), start, end in zip(ids, train.episode_starts, train.episode_ends):
        for o in range(start, end - LENGTH + 1):
            window = slice(o, o + LENGTH)
            out[key(train.rgb[window], train.action[window], train.success[window])] = (store, index, int(o))
    return out, train


def take(windows, n: int) -> list:
    return list(itertools.islice(windows, n))


def test_streamed_windows_are_the_in_memory_windows(urls):
    where, train = in_memory_windows(urls)
    s = stream(urls)
    assert (s.n_episodes, s.n_frames, s.n_windows) == (train.n_episodes, len(train.rgb), len(where))
    got = take(iter(s), 2 * s.n_windows)
    assert all(w[0].shape == (LENGTH, 3, SIZE, SIZE) and w[0].dtype == torch.uint8 for w in got)
    assert all(w[1].dtype == torch.float32 and w[2].dtype == torch.uint8 for w in got)
    # Found among the in-memory windows: same content after the same resize, inside one episode.
    places = [where.get(key(*w)) for w in got]
    assert None not in places
    assert {p[:2] for p in places} == {(e.store, e.index) for e in s.episodes}

    # A loader batch in training format is what FrameWindows.gather gives for the same places.
    batch = next(iter(window_loader(s, 4)))
    starts = np.array([where[key(*w)][2] for w in zip(*batch)])
    for ours, theirs in zip(to_device(batch), train.gather(starts, LENGTH)):
        assert torch.equal(ours, theirs)


def test_shares_are_disjoint_and_cover_each_epoch(urls):
    ranks = [stream(urls, rank=r, world_size=2) for r in range(2)]
    everything = {(e.store, e.index) for e in ranks[0].episodes}
    for epoch in range(3):
        shares = [[(e.store, e.index) for e in s.share(epoch, w, 2)] for s in ranks for w in range(2)]
        flat = [e for share in shares for e in share]
        assert len(flat) == len(set(flat)) and set(flat) == everything
        assert max(map(len, shares)) - min(map(len, shares)) <= 1
    assert ranks[0].share(0, 0, 2) != ranks[0].share(1, 0, 2)  # a new order each epoch


def test_loader_workers_read_their_own_shares(urls):
    where, _ = in_memory_windows(urls)
    s = WindowStream(urls, LENGTH, SIZE, val_fraction=VAL, seed=SEED, rank=1, world_size=2,
                     config=StreamConfig(shuffle_buffer=2, loader_workers=2))
    batches = take(iter(window_loader(s, 2)), 4)  # the DataLoader takes batches from workers in turn
    for b, batch in enumerate(batches):
        share = {(e.store, e.index) for e in s.share(0, b % 2, 2)}
        assert {where[key(*w)][:2] for w in zip(*batch)} <= share


def test_one_chunk_aligned_read_per_array_per_episode(urls, monkeypatch):
    calls: list[tuple[str, slice]] = []
    real = zarr.Array.__getitem__

    def spy(self, selection):
        if self.path.startswith("data/"):
            calls.append((self.path, selection))
        return real(self, selection)

    monkeypatch.setattr(zarr.Array, "__getitem__", spy)
    s = stream(urls, shuffle_buffer=4)
    windows = iter(s)
    take(windows, 10)  # a few episodes (and those read ahead) of the first epoch
    windows.close()  # waits for the reads in flight
    arrays = {key: EpisodeStore.open(urls[0]).array(f"data/{key}") for key in ("rgb", "action", "success")}
    n_frames = [EpisodeStore.open(u).n_frames for u in urls]
    expected = []
    for e in s.share(0):
        for name, array in arrays.items():
            rows = array.chunks[0]
            expected.append((f"data/{name}", slice(e.start // rows * rows, min(-(-e.end // rows) * rows,
                                                                               n_frames[e.store]))))
    # Episodes are read a few at a time on threads: their calls interleave, so compare as multisets.
    assert 0 < len(calls) < len(expected) and len(calls) % 3 == 0
    assert Counter(map(str, calls)) == Counter(map(str, expected[: len(calls)]))
    for path, sel in calls:
        rows = arrays[path.removeprefix("data/")].chunks[0]
        assert sel.start % rows == 0 and (sel.stop % rows == 0 or sel.stop in n_frames)


def test_same_seed_same_stream_and_ranks_differ(urls):
    first = [key(*w) for w in take(iter(stream(urls)), 40)]
    assert first == [key(*w) for w in take(iter(stream(urls)), 40)]
    assert first != [key(*w) for w in take(iter(stream(urls, seed=SEED + 1)), 40)]
    by_rank = [{key(*w) for w in take(iter(stream(urls, rank=r, world_size=2)), 20)} for r in range(2)]
    assert not by_rank[0] & by_rank[1]


def test_the_split_seed_picks_the_episodes_and_the_seed_their_order(urls):
    where, _ = in_memory_windows(urls)  # the train split of SEED
    s = stream(urls, seed=SEED + 1, split_seed=SEED)
    assert s.episodes == stream(urls).episodes
    windows = [key(*w) for w in take(iter(s), 20)]
    assert all(w in where for w in windows) and windows != [key(*w) for w in take(iter(stream(urls)), 20)]


def test_the_stream_starts_at_first_epoch(urls):
    where, _ = in_memory_windows(urls)
    assert stream(urls).share(0)[0] != stream(urls).share(3)[0]  # so that the check below tells them apart
    for epoch in (0, 3):
        s = stream(urls, shuffle_buffer=1, first_epoch=epoch)  # a buffer of 1 yields windows in read order
        first = s.share(epoch)[0]
        assert where[key(*next(iter(s)))][:2] == (first.store, first.index)


def test_val_alone_is_read_without_the_train_frames(urls, monkeypatch):
    _, val = load_windows(urls, SIZE, VAL, SEED)
    rows: list[int] = []
    real = EpisodeStore.read

    def spy(self, start, length, *args, **kwargs):
        rows.append(length)
        return real(self, start, length, *args, **kwargs)

    monkeypatch.setattr(EpisodeStore, "read", spy)
    train, alone = load_windows(urls, SIZE, VAL, SEED, read_train=False)
    assert sum(rows) == len(val.rgb)  # the val episodes' rows, nothing else
    assert train.n_episodes == 0 and (train.action_low, train.action_high) == (val.action_low, val.action_high)
    for ours, theirs in ((alone.rgb, val.rgb), (alone.action, val.action), (alone.success, val.success)):
        assert torch.equal(ours, theirs)
    assert (alone.episode_ends.tolist(), alone.episode_task, alone.episode_kind) == \
        (val.episode_ends.tolist(), val.episode_task, val.episode_kind)


@pytest.mark.s3
def test_stream_from_s3_equals_local(s3_env, tmp_path):
    local = [write_store(tmp_path / "a.zarr", range(6))]
    remote = [write_store(f"s3://{s3_env['bucket']}/a.zarr", range(6))]
    here, there = stream(local), stream(remote)
    assert (there.n_frames, there.episodes) == (here.n_frames, here.episodes)
    assert [key(*w) for w in take(iter(there), 30)] == [key(*w) for w in take(iter(here), 30)]


@pytest.mark.parametrize("field, make", [
    ("shuffle_buffer", lambda urls: StreamConfig(shuffle_buffer=0)),
    ("shuffle_buffer", lambda urls: StreamConfig(shuffle_buffer=2.5)),
    ("loader_workers", lambda urls: StreamConfig(loader_workers=-1)),
    ("length", lambda urls: WindowStream(urls, 0)),
    ("rank", lambda urls: WindowStream(urls, LENGTH, rank=2, world_size=2)),
    ("world_size", lambda urls: WindowStream(urls, LENGTH, world_size=0)),
    ("first_epoch", lambda urls: WindowStream(urls, LENGTH, first_epoch=-1)),
    ("image_size", lambda urls: WindowStream(urls, LENGTH, image_size=0)),
    ("batch_size", lambda urls: window_loader(WindowStream(urls, LENGTH), 0)),
    ("loader workers", lambda urls: WindowStream(urls, LENGTH, world_size=4).share(0, 0, 4)),
    ("action bounds", lambda urls: WindowStream(urls + [str(Path(urls[0]).with_name("other.zarr"))], LENGTH)),
])
def test_bad_values_raise_naming_the_field(urls, field, make):
    other = EpisodeStore.create(Path(urls[0]).with_name("other.zarr"), tiny_layout(action_high=(2.0,) * 4))
    other.append([make_episode(9)])
    with pytest.raises(ValueError, match=field):
        make(urls)
