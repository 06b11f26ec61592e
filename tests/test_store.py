"""EpisodeStore: round trips, episode-safe windows, splits, format/crash protection, sharding."""

from __future__ import annotations

import numpy as np
import pytest
import zarr

from conftest import make_episode, tiny_layout
from w4rl_core.data.store import (
    EpisodeStore,
    IncompleteStoreError,
    StoreFormatError,
    StoreLayout,
    split_episodes,
)


def test_append_and_read_round_trip(tmp_path):
    store = EpisodeStore.create(tmp_path / "s.zarr", tiny_layout())
    eps = [make_episode(10, seed=1), make_episode(7, task="door-lock-v3", kind="random", seed=2)]
    store.append(eps[:1])
    store.append(eps[1:])  # second append: partial shard rewritten, tasks vocabulary extended
    reopened = EpisodeStore.open(tmp_path / "s.zarr")
    assert reopened.n_episodes == 2 and reopened.n_frames == 17
    assert reopened.episode_ends.tolist() == [10, 17]
    assert reopened.tasks == ["coffee-pull-v3", "door-lock-v3"]
    assert reopened.episode_task == ["coffee-pull-v3", "door-lock-v3"]
    assert reopened.episode_kind == ["expert", "random"]
    for i, ep in enumerate(eps):
        got = reopened.episode(i)
        for key in ("rgb", "action", "reward", "success", "state"):
            np.testing.assert_array_equal(getattr(got, key), getattr(ep, key))


def test_stats_after_appends_equal_stats_of_everything(tmp_path):
    store = EpisodeStore.create(tmp_path / "s.zarr", tiny_layout())
    eps = [make_episode(5 + i, seed=i) for i in range(4)]
    for ep in eps:
        store.append([ep])
    actions = np.concatenate([e.action for e in eps]).astype(np.float64)
    stats = EpisodeStore.open(tmp_path / "s.zarr").stats["action"]
    assert stats["count"] == len(actions)
    np.testing.assert_allclose(stats["mean"], actions.mean(0), rtol=1e-6)
    np.testing.assert_allclose(stats["std"], actions.std(0), rtol=1e-6)
    np.testing.assert_allclose(stats["min"], actions.min(0))
    np.testing.assert_allclose(stats["max"], actions.max(0))
    assert len(store.stats["rgb"]["mean"]) == 3  # per channel


def test_windows_never_cross_episode_boundaries(tiny_store):
    length = 5  # T + 1 with T = 4
    starts = tiny_store.window_starts(length)
    ends = tiny_store.episode_ends
    assert len(starts) == sum(int(n) - length + 1 for n in tiny_store.episode_lengths)
    for s in starts:
        ep = np.searchsorted(ends, s, side="right")
        assert s + length <= ends[ep]
    w = tiny_store.read_window(int(starts[0]), length)
    assert w["rgb"].shape == (length, 16, 16, 3) and w["action"].shape == (length, 4)
    with pytest.raises(IndexError, match="crosses the end of episode 0"):
        tiny_store.read_window(int(ends[0]) - 2, length)


def test_windows_restricted_to_episodes_and_too_short_episodes(tiny_store):
    starts = tiny_store.window_starts(9, episodes=[0, 1])  # lengths 8 and 9
    assert starts.tolist() == [int(tiny_store.episode_starts[1])]
    assert tiny_store.window_starts(100).size == 0


def test_split_is_by_episode_deterministic_and_covers_every_task(tiny_store):
    train, val = split_episodes(tiny_store, val_fraction=0.34, seed=3)
    assert set(train).isdisjoint(val) and sorted([*train, *val]) == list(range(6))
    again = split_episodes(tiny_store, val_fraction=0.34, seed=3)
    assert train.tolist() == again[0].tolist()
    tasks = np.asarray(tiny_store.episode_task)
    assert set(tasks[val]) == set(tasks[train]) == {"coffee-pull-v3", "door-lock-v3"}
    with pytest.raises(ValueError):
        split_episodes(tiny_store, val_fraction=1.0, seed=0)


def test_unknown_format_version_says_what_to_do(tiny_store):
    zarr.open_group(tiny_store.url, mode="r+").attrs["format_version"] = 99
    with pytest.raises(StoreFormatError, match="format_version is 99.*Upgrade w4rl"):
        EpisodeStore.open(tiny_store.url)
    zarr.open_group(tiny_store.url, mode="r+").attrs["format_version"] = 0
    with pytest.raises(StoreFormatError, match="Re-create the store"):
        EpisodeStore.open(tiny_store.url)


def test_interrupted_append_leaves_a_store_that_refuses_to_open(tiny_store, monkeypatch):
    n_before = tiny_store.n_episodes
    real_resize = zarr.Array.resize
    calls = {"n": 0}

    def dying_resize(self, *args, **kwargs):
        calls["n"] += 1
        if calls["n"] == 3:  # die after rgb and action grew, as a killed process would
            raise KeyboardInterrupt
        return real_resize(self, *args, **kwargs)

    monkeypatch.setattr(zarr.Array, "resize", dying_resize)
    with pytest.raises(KeyboardInterrupt):
        tiny_store.append([make_episode(9)])
    monkeypatch.undo()
    with pytest.raises(IncompleteStoreError, match="did not finish"):
        EpisodeStore.open(tiny_store.url)
    assert n_before == 6


def test_not_a_store_and_missing_store(tmp_path):
    zarr.open_group(tmp_path / "plain.zarr", mode="w", zarr_format=3)
    with pytest.raises(StoreFormatError, match="not a w4rl episode store"):
        EpisodeStore.open(tmp_path / "plain.zarr")
    with pytest.raises(FileNotFoundError, match="no Zarr v3 group"):
        EpisodeStore.open(tmp_path / "nothing.zarr")
    with pytest.raises(FileExistsError):
        EpisodeStore.create(tmp_path / "plain.zarr", tiny_layout())


def test_ten_thousand_frames_are_a_few_dozen_objects(tmp_path):
    layout = StoreLayout(
        image_size=(64, 64), action_low=(-1.0,) * 4, action_high=(1.0,) * 4, state_dim=39, frames_per_shard=1024
    )
    store = EpisodeStore.create(tmp_path / "big.zarr", layout)
    ep = make_episode(50)
    ep.rgb = np.broadcast_to(np.arange(64, dtype=np.uint8)[None, :, None, None], (50, 64, 64, 3)).copy()
    ep.state = np.zeros((50, 39), np.float32)
    store.append([ep] * 200)  # 10,000 frames
    files = [p for p in (tmp_path / "big.zarr").rglob("*") if p.is_file()]
    assert store.n_frames == 10_000
    assert len(files) <= 36, len(files)


@pytest.mark.parametrize(
    "kwargs, message",
    [
        ({"image_size": (4, 4)}, "image_size"),
        ({"action_low": (1.0,) * 4}, "action_low must be < action_high"),
        ({"frames_per_shard": 10, "frames_per_chunk": 3}, "multiple"),
    ],
)
def test_layout_is_validated_at_construction(kwargs, message):
    with pytest.raises(ValueError, match=message):
        tiny_layout(**kwargs)


def test_append_rejects_episode_of_wrong_shape(tiny_store):
    bad = make_episode(9)
    bad.action = np.zeros((9, 3), np.float32)
    with pytest.raises(ValueError, match="action has per-step shape"):
        tiny_store.append([bad])


def _counting_open(monkeypatch):
    """EpisodeStore.open through zarr's LoggingStore: every storage request is counted."""
    import w4rl_core.data.store as store_module

    opened = []
    real = store_module.open_zarr_store

    def counting(url, **kwargs):
        opened.append(zarr.storage.LoggingStore(real(url, **kwargs), log_level="CRITICAL"))
        return opened[-1]

    monkeypatch.setattr(store_module, "open_zarr_store", counting)
    return opened


def test_readers_open_from_consolidated_metadata_kept_fresh_by_appends(tmp_path, monkeypatch):
    store = EpisodeStore.create(tmp_path / "s.zarr", tiny_layout())
    store.append([make_episode(seed=i) for i in range(3)])
    store.append([make_episode(seed=9, length=7)])  # the consolidated copy follows every append
    assert store.stale_consolidated() == []
    opened = _counting_open(monkeypatch)
    fast = EpisodeStore.open(store.url)
    fast_gets = opened[-1].counter["get"]
    slow = EpisodeStore.open(store.url, consolidated=False)
    slow_gets = opened[-1].counter["get"]
    # the root (with every node's metadata) + the 4 index chunks (ends, task, kind, scene), instead of
    # + 5 more metadata objects
    assert fast_gets == 5 and slow_gets == 10, (fast_gets, slow_gets)
    assert fast.n_episodes == slow.n_episodes == 4 and fast.n_frames == 3 * 12 + 7
    np.testing.assert_array_equal(fast.episode(3).rgb, make_episode(seed=9, length=7).rgb)


def test_a_store_changed_without_reconsolidating_is_caught(tmp_path):
    store = EpisodeStore.create(tmp_path / "s.zarr", tiny_layout())
    store.append([make_episode(seed=i) for i in range(2)])
    # Another tool appends a reward value through the arrays' own metadata and does not re-consolidate.
    raw = zarr.open_group(store.url, mode="r+", use_consolidated=False)
    raw["data/reward"].resize((25,))
    assert EpisodeStore.open(store.url, consolidated=False).stale_consolidated() == ["data/reward"]
