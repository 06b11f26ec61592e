"""EpisodeStore: robot episodes in one Zarr v3 group, on a local path or S3.

Layout (docs/design.md#data-layout)::

    data/rgb      uint8   (N, H, W, 3)  frames_per_chunk frames per chunk, many chunks per shard object
    data/action   float32 (N, A)
    data/reward   float32 (N,)
    data/success  uint8   (N,)
    data/state    float32 (N, S)
    meta/episode_ends  int64 (E,)  exclusive end index of each episode in the time axis
    meta/episode_task  int16 (E,)  index into attrs["tasks"]
    meta/episode_kind  int8  (E,)  index into attrs["kinds"] (EPISODE_KINDS)
    meta/episode_scene uint64 (E,) the scene's identity (w4rl_core/robots/scenes.py), 0 = not recorded

Episodes are concatenated along time. Images are sharded so that a 10,000-frame store is a few dozen
objects rather than one per frame: DVC and S3 pay ~10 ms per object (docs/design.md#storage).

Crash safety: ``attrs["complete"]`` is false while an append is in flight and set true, together
with the new episode index and stats, in the last write. A store left incomplete by a killed run
refuses to open, so nothing downstream (nor DVC's cache) consumes half-written data.
"""

from __future__ import annotations

import os
import warnings
from collections.abc import Iterable, Sequence
from dataclasses import asdict, dataclass, field
from typing import Any

import numpy as np
import zarr
from zarr.codecs import BloscCodec

from w4rl_core.data.episode import EPISODE_KINDS, Episode
from w4rl_core.data.stats import batch_stats, merge_stats
from w4rl_core.data.storage import open_zarr_store

FORMAT_VERSION = 2  # 2: meta/episode_scene
STATS_KEYS = ("rgb", "action", "reward", "success", "state")


def scene_code(scene: str) -> int:
    """A scene id (16 hex digits, scenes.scene_id) as the uint64 stored per episode; "" -> 0."""
    if not scene:
        return 0
    try:
        code = int(scene, 16)
    except ValueError:
        code = -1
    if not 0 < code < 2**64 or len(scene) != 16:
        raise ValueError(f"scene id must be 16 hex digits (scenes.scene_id), got {scene!r}")
    return code


def scene_from_code(code: int) -> str:
    return "" if int(code) == 0 else f"{int(code):016x}"


class StoreFormatError(RuntimeError):
    """The store cannot be read by this version of w4rl, or it is not a w4rl store."""


class IncompleteStoreError(StoreFormatError):
    """A write into the store did not finish (the writer was killed or failed)."""


@dataclass(frozen=True)
class StoreLayout:
    """What every episode of a store shares. Validated at construction."""

    image_size: tuple[int, int]  # (H, W)
    action_low: tuple[float, ...]
    action_high: tuple[float, ...]
    state_dim: int
    fps: float = 80.0
    camera: str = ""
    frames_per_shard: int = 1024  # frames per storage object of data/rgb
    # Frames per compressed chunk inside a shard: the unit of random access. 8 measured best on
    # the CPU machine (vs 1: 4x smaller, 7x faster sequential reads; see benchmarks/results.md).
    frames_per_chunk: int = 8
    tasks: tuple[str, ...] = field(default_factory=tuple)

    def __post_init__(self) -> None:
        object.__setattr__(self, "image_size", tuple(int(v) for v in self.image_size))
        object.__setattr__(self, "action_low", tuple(float(v) for v in self.action_low))
        object.__setattr__(self, "action_high", tuple(float(v) for v in self.action_high))
        object.__setattr__(self, "tasks", tuple(self.tasks))
        if len(self.image_size) != 2 or min(self.image_size) < 8:
            raise ValueError(f"image_size must be (H, W) with both >= 8, got {self.image_size}")
        if len(self.action_low) != len(self.action_high) or not self.action_low:
            raise ValueError("action_low and action_high must be non-empty and of equal length")
        if any(lo >= hi for lo, hi in zip(self.action_low, self.action_high)):
            raise ValueError(f"action_low must be < action_high per dimension: {self.action_low} / {self.action_high}")
        if self.state_dim < 0 or self.fps <= 0:
            raise ValueError("state_dim must be >= 0 and fps > 0")
        if self.frames_per_chunk < 1 or self.frames_per_shard % self.frames_per_chunk:
            raise ValueError("frames_per_shard must be a positive multiple of frames_per_chunk")

    @property
    def action_dim(self) -> int:
        return len(self.action_low)


def _blosc(shuffle: str = "shuffle") -> BloscCodec:
    # zstd inside blosc: the best ratio/speed trade-off we measured for 64 px frames. Byte shuffle
    # regroups the bytes of multi-byte values (float32, int64); on uint8 frames it has nothing to
    # regroup, so they use noshuffle.
    return BloscCodec(cname="zstd", clevel=3, shuffle=shuffle)


class EpisodeStore:
    """Append-only episode storage with episode-aware reads. Use ``create`` or ``open``."""

    def __init__(self, group: zarr.Group, url: str, store: Any = None) -> None:
        self._root = group
        self.url = url
        self._store = store
        self._load_index()

    def stale_consolidated(self) -> list[str]:
        """Nodes whose copy in the root's consolidated metadata differs from their own metadata (a
        tool changed the store and did not re-consolidate); [] when fresh or not consolidated."""
        with warnings.catch_warnings():
            warnings.filterwarnings("ignore", message=".*[Cc]onsolidated metadata.*")
            consolidated = zarr.open_group(self._store, mode="r", zarr_format=3, use_consolidated=None)
            copies = consolidated.metadata.consolidated_metadata
        if copies is None:
            return []
        own = zarr.open_group(self._store, mode="r", zarr_format=3, use_consolidated=False)
        def comparable(meta: Any) -> dict[str, Any]:  # a group's copy carries its own (empty) consolidation
            return {k: v for k, v in meta.to_dict().items() if k != "consolidated_metadata"}

        actual = {path: comparable(node.metadata) for path, node in own.members(max_depth=None)}
        copied = {path: comparable(meta) for path, meta in copies.flattened_metadata.items()}
        return sorted(p for p in actual.keys() | copied.keys() if actual.get(p) != copied.get(p))

    def _consolidate(self) -> None:
        """Copy every array's metadata into the root zarr.json, so that a reader opens the store with
        one GET instead of one per group and array (benchmarks/results.md, "store open"). Writers
        never read it (they open with use_consolidated=False), and each append drops it with its
        first attribute write and rebuilds it last, so a reader never sees stale array shapes."""
        if self._store is None or self._store.read_only:
            return
        with warnings.catch_warnings():
            # zarr 3 warns that consolidated metadata is not yet in the v3 spec; zarr-python reads
            # and writes it, which is all this store needs.
            warnings.filterwarnings("ignore", message=".*[Cc]onsolidated metadata.*")
            zarr.consolidate_metadata(self._store)

    # ------------------------------------------------------------------ construction
    @classmethod
    def create(
        cls,
        url: str | os.PathLike[str],
        layout: StoreLayout,
        *,
        source: dict[str, Any] | None = None,
        endpoint_url: str | None = None,
        complete: bool = True,
    ) -> EpisodeStore:
        """A new empty store at ``url``; fails if something is already there.

        ``complete=False`` creates it unpublished: readers refuse it until `publish` (a writer that
        fills it in several appends, on storage without an atomic rename, publishes only the end)."""
        store = open_zarr_store(url, read_only=False, endpoint_url=endpoint_url)
        # Ours and unfinished from the first write on: a create that dies halfway (on S3, where
        # there is no rename) leaves a store that readers refuse and a rerun may replace.
        root = zarr.open_group(store, mode="w-", zarr_format=3, use_consolidated=False,
                               attributes={"format_version": FORMAT_VERSION, "w4rl_store": True, "complete": False})
        h, w = layout.image_size
        data, meta = root.create_group("data"), root.create_group("meta")
        n_shard = layout.frames_per_shard
        data.create_array(
            "rgb",
            shape=(0, h, w, 3),
            chunks=(layout.frames_per_chunk, h, w, 3),
            shards=(n_shard, h, w, 3),
            dtype="uint8",
            compressors=_blosc("noshuffle"),
        )
        # Low-dim arrays are small: one chunk of a shard's worth of frames each.
        for name, dtype, tail in (
            ("action", "float32", (layout.action_dim,)),
            ("reward", "float32", ()),
            ("success", "uint8", ()),
            ("state", "float32", (layout.state_dim,)),
        ):
            data.create_array(name, shape=(0, *tail), chunks=(n_shard * 8, *tail), dtype=dtype, compressors=_blosc())
        for name, dtype in (("episode_ends", "int64"), ("episode_task", "int16"), ("episode_kind", "int8"),
                            ("episode_scene", "uint64")):
            meta.create_array(name, shape=(0,), chunks=(65536,), dtype=dtype, compressors=_blosc())
        layout_attrs = asdict(layout)
        root.attrs.update(
            {
                "format_version": FORMAT_VERSION,
                "w4rl_store": True,
                "complete": complete,
                "kinds": list(EPISODE_KINDS),
                "action_dim": layout.action_dim,
                **{k: list(v) if isinstance(v, tuple) else v for k, v in layout_attrs.items()},
                "stats": {},
                "source": source or {},
            }
        )
        created = cls(root, str(url), store)
        created._consolidate()
        return created

    @classmethod
    def open(
        cls, url: str | os.PathLike[str], *, mode: str = "r", endpoint_url: str | None = None,
        consolidated: bool = True,
    ) -> EpisodeStore:
        """Open an existing store for reading (``mode="r"``) or appending (``mode="a"``).

        Readers use the consolidated metadata when the store has it; ``consolidated=False`` reads
        each node's own metadata (validation does, since it must see the truth, not a copy)."""
        if mode not in ("r", "a"):
            raise ValueError(f"mode must be 'r' or 'a', got {mode!r}")
        store = open_zarr_store(url, read_only=mode == "r", endpoint_url=endpoint_url)
        try:
            # Readers use the consolidated metadata when it is there; appenders read each node's own.
            root = zarr.open_group(store, mode="r" if mode == "r" else "r+", zarr_format=3,
                                   use_consolidated=None if mode == "r" and consolidated else False)
        except (FileNotFoundError, zarr.errors.GroupNotFoundError) as err:
            raise FileNotFoundError(f"{url}: no Zarr v3 group here (is the path right, or was it `dvc pull`ed?)") from err
        attrs = root.attrs.asdict()
        if not attrs.get("w4rl_store"):
            raise StoreFormatError(f"{url}: this Zarr group is not a w4rl episode store (no 'w4rl_store' attribute)")
        version = attrs.get("format_version")
        if version != FORMAT_VERSION:
            raise StoreFormatError(
                f"{url}: store format_version is {version!r}, this w4rl reads version {FORMAT_VERSION}. "
                + (
                    "Upgrade w4rl (`git pull && make setup`) to read newer stores."
                    if isinstance(version, int) and version > FORMAT_VERSION
                    else "Re-create the store with `w4rl collect` (or `dvc repro collect`) from this version."
                )
            )
        if not attrs.get("complete", False):
            raise IncompleteStoreError(
                f"{url}: a write into this store did not finish (attrs.complete is false); "
                "delete it and re-run the stage that writes it"
            )
        return cls(root, str(url), store)

    # ------------------------------------------------------------------ index and metadata
    def _load_index(self) -> None:
        meta = self._root["meta"]
        self.episode_ends = np.asarray(meta["episode_ends"][:], dtype=np.int64)
        self._task_codes = np.asarray(meta["episode_task"][:], dtype=np.int64)
        self._kind_codes = np.asarray(meta["episode_kind"][:], dtype=np.int64)
        self._scene_codes = np.asarray(meta["episode_scene"][:], dtype=np.uint64)
        self.attrs: dict[str, Any] = self._root.attrs.asdict()

    @property
    def layout(self) -> StoreLayout:
        a = self.attrs
        return StoreLayout(
            image_size=tuple(a["image_size"]),
            action_low=tuple(a["action_low"]),
            action_high=tuple(a["action_high"]),
            state_dim=a["state_dim"],
            fps=a["fps"],
            camera=a["camera"],
            frames_per_shard=a["frames_per_shard"],
            frames_per_chunk=a["frames_per_chunk"],
            tasks=tuple(a["tasks"]),
        )

    @property
    def tasks(self) -> list[str]:
        return list(self.attrs["tasks"])

    @property
    def stats(self) -> dict[str, Any]:
        return dict(self.attrs["stats"])

    @property
    def n_episodes(self) -> int:
        return len(self.episode_ends)

    @property
    def n_frames(self) -> int:
        return int(self.episode_ends[-1]) if self.n_episodes else 0

    @property
    def episode_starts(self) -> np.ndarray:
        return np.concatenate([[0], self.episode_ends[:-1]]).astype(np.int64)

    @property
    def episode_lengths(self) -> np.ndarray:
        return np.diff(np.concatenate([[0], self.episode_ends])).astype(np.int64)

    @staticmethod
    def _names(codes: np.ndarray, vocab: list[str]) -> list[str]:
        # Out-of-range codes only exist in corrupted stores; name them so validation can report them.
        return [vocab[c] if 0 <= c < len(vocab) else f"<unknown code {c}>" for c in codes]

    @property
    def episode_task(self) -> list[str]:
        return self._names(self._task_codes, self.attrs["tasks"])

    @property
    def episode_scene(self) -> list[str]:
        """Scene identity per episode ("" where none was recorded)."""
        return [scene_from_code(c) for c in self._scene_codes]

    @property
    def episode_kind(self) -> list[str]:
        return self._names(self._kind_codes, self.attrs["kinds"])

    def array(self, key: str) -> zarr.Array:
        """A raw array, e.g. ``array("data/rgb")`` or ``array("meta/episode_ends")``."""
        return self._root[key]

    # ------------------------------------------------------------------ writing
    def publish(self) -> None:
        """Mark the store complete: the one write after which readers accept it."""
        self._root.attrs["complete"] = True
        self._consolidate()
        self._load_index()

    def append(self, episodes: Iterable[Episode], complete: bool = True) -> None:
        """Append episodes in one batch (one read-modify-write of the last shard per batch).

        ``complete=False`` leaves the store unpublished after the append (see `create`)."""
        episodes = list(episodes)
        if not episodes:
            return
        lay = self.layout
        tasks = list(lay.tasks)
        for ep in episodes:
            self._check_episode(ep, lay)
            if ep.task not in tasks:
                tasks.append(ep.task)
        batch = {
            "rgb": np.concatenate([ep.rgb for ep in episodes]),
            "action": np.concatenate([ep.action for ep in episodes]).astype(np.float32),
            "reward": np.concatenate([ep.reward for ep in episodes]).astype(np.float32),
            "success": np.concatenate([ep.success for ep in episodes]).astype(np.uint8),
            "state": np.concatenate([ep.state for ep in episodes]).astype(np.float32),
        }
        n0, n_new = self.n_frames, len(batch["rgb"])
        ends = n0 + np.cumsum([len(ep) for ep in episodes])

        # Mark in-flight first: if we die below, open() refuses the store instead of reading garbage.
        self._root.attrs["complete"] = False
        data = self._root["data"]
        for key, values in batch.items():
            arr = data[key]
            arr.resize((n0 + n_new, *arr.shape[1:]))
            arr[n0:] = values
        meta = self._root["meta"]
        e0 = self.n_episodes
        for key, values in (
            ("episode_ends", ends),
            ("episode_task", [tasks.index(ep.task) for ep in episodes]),
            ("episode_kind", [EPISODE_KINDS.index(ep.kind) for ep in episodes]),
            ("episode_scene", [scene_code(ep.scene) for ep in episodes]),
        ):
            meta[key].resize((e0 + len(episodes),))
            meta[key][e0:] = np.asarray(values, dtype=meta[key].dtype)
        stats = dict(self.attrs.get("stats") or {})
        for key in STATS_KEYS:
            values = batch[key]
            if key == "rgb":  # per-channel stats in [0, 255]; subsample pixels to bound the cost
                values = values[:, ::2, ::2, :]
            if values.size:
                stats[key] = merge_stats(stats.get(key), batch_stats(values))
        # The one write that publishes the new episodes.
        self._root.attrs.update({"tasks": tasks, "stats": stats, "complete": complete})
        self._consolidate()
        self._load_index()

    @staticmethod
    def _check_episode(ep: Episode, lay: StoreLayout) -> None:
        h, w = lay.image_size
        expected = {
            "rgb": (h, w, 3),
            "action": (lay.action_dim,),
            "reward": (),
            "success": (),
            "state": (lay.state_dim,),
        }
        for key, tail in expected.items():
            got = getattr(ep, key).shape[1:]
            if got != tail:
                raise ValueError(f"episode of task {ep.task!r}: {key} has per-step shape {got}, store expects {tail}")
        if ep.rgb.dtype != np.uint8:
            raise ValueError(f"episode of task {ep.task!r}: rgb must be uint8, got {ep.rgb.dtype}")

    # ------------------------------------------------------------------ reading
    def episode(self, index: int) -> Episode:
        if not 0 <= index < self.n_episodes:
            raise IndexError(f"episode {index} out of range (store has {self.n_episodes})")
        start, end = int(self.episode_starts[index]), int(self.episode_ends[index])
        arrays = self.read(start, end - start)
        return Episode(task=self.episode_task[index], kind=self.episode_kind[index],
                       scene=scene_from_code(self._scene_codes[index]), **arrays)

    def read(self, start: int, length: int, keys: Sequence[str] = STATS_KEYS) -> dict[str, np.ndarray]:
        """Rows [start, start+length) of the given data arrays (no episode check; see windows)."""
        data = self._root["data"]
        return {key: data[key][start : start + length] for key in keys}

    def window_starts(self, length: int, episodes: Sequence[int] | np.ndarray | None = None) -> np.ndarray:
        """Global start indices of every window of ``length`` steps that stays inside one episode.

        For a world model with T context frames use ``length = T + 1``. ``episodes`` restricts the
        windows to those episodes (e.g. a train split).
        """
        if length < 1:
            raise ValueError("window length must be >= 1")
        ids = np.arange(self.n_episodes) if episodes is None else np.asarray(episodes, dtype=np.int64)
        starts, ends = self.episode_starts[ids], self.episode_ends[ids]
        chunks = [np.arange(s, e - length + 1) for s, e in zip(starts, ends) if e - s >= length]
        return np.concatenate(chunks).astype(np.int64) if chunks else np.zeros(0, dtype=np.int64)

    def read_window(self, start: int, length: int, keys: Sequence[str] = STATS_KEYS) -> dict[str, np.ndarray]:
        """A window that must not cross an episode boundary (raises if it would)."""
        episode = int(np.searchsorted(self.episode_ends, start, side="right"))
        if episode >= self.n_episodes or start + length > self.episode_ends[episode]:
            raise IndexError(f"window [{start}, {start + length}) crosses the end of episode {episode}")
        return self.read(start, length, keys)

    def info(self) -> dict[str, Any]:
        """A JSON-able summary (used by `w4rl data info` and the validation report)."""
        lengths = self.episode_lengths
        per: dict[str, dict[str, Any]] = {}
        success = self._root["data"]["success"][:] if self.n_frames else np.zeros(0)
        for i, (task, kind) in enumerate(zip(self.episode_task, self.episode_kind)):
            entry = per.setdefault(f"{task}/{kind}", {"episodes": 0, "frames": 0, "successes": 0})
            entry["episodes"] += 1
            entry["frames"] += int(lengths[i])
            entry["successes"] += int(success[self.episode_starts[i] : self.episode_ends[i]].any())
        for entry in per.values():
            entry["success_rate"] = entry["successes"] / entry["episodes"]
        scenes = [s for s in self.episode_scene if s]
        return {
            "url": self.url,
            "format_version": self.attrs["format_version"],
            "episodes": self.n_episodes,
            "frames": self.n_frames,
            "image_size": list(self.attrs["image_size"]),
            "action_dim": self.attrs["action_dim"],
            "state_dim": self.attrs["state_dim"],
            "camera": self.attrs["camera"],
            "fps": self.attrs["fps"],
            "tasks": self.tasks,
            "episode_length": {
                "min": int(lengths.min()) if len(lengths) else 0,
                "max": int(lengths.max()) if len(lengths) else 0,
                "mean": float(lengths.mean()) if len(lengths) else 0.0,
            },
            "by_task_kind": per,
            "scenes": {"recorded": len(scenes), "distinct": len(set(scenes))},
            "source": self.attrs.get("source", {}),
        }


def split_episodes(
    store: EpisodeStore, val_fraction: float, seed: int
) -> tuple[np.ndarray, np.ndarray]:
    """Train/val episode ids, split per (task, kind) so both sides see every task; never by step."""
    if not 0.0 <= val_fraction < 1.0:
        raise ValueError(f"val_fraction must be in [0, 1), got {val_fraction}")
    rng = np.random.default_rng(seed)
    groups: dict[tuple[str, str], list[int]] = {}
    for i, key in enumerate(zip(store.episode_task, store.episode_kind)):
        groups.setdefault(key, []).append(i)
    train, val = [], []
    for key in sorted(groups):
        ids = rng.permutation(groups[key])
        n_val = int(round(len(ids) * val_fraction))
        if val_fraction > 0 and len(ids) > 1:
            n_val = max(1, n_val)
        val.extend(ids[:n_val])
        train.extend(ids[n_val:])
    return np.sort(np.asarray(train, dtype=np.int64)), np.sort(np.asarray(val, dtype=np.int64))
