"""Episodes held in memory as torch tensors, sampled as windows that never cross episodes.

Training reads random windows thousands of times per second; reading each from Zarr costs ~3 ms
per array call (benchmarks/results.md), so the loader reads each store once, in bulk, and samples
from memory. Frames are kept as uint8 (N,3,H,W): 12 KB per 64 px frame, 69,000 frames (the paper
recipe for 6 tasks) in < 1 GB.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, replace

import numpy as np
import torch
import torch.nn.functional as F

from w4rl_core.data.store import EpisodeStore, split_episodes


@dataclass
class FrameWindows:
    rgb: torch.Tensor  # (N,3,H,W) uint8
    action: torch.Tensor  # (N,A) float32
    success: torch.Tensor  # (N,) uint8
    episode_ends: np.ndarray  # (E,) exclusive ends into the N axis
    episode_task: list[str]
    episode_kind: list[str]
    action_low: tuple[float, ...]
    action_high: tuple[float, ...]

    @property
    def n_episodes(self) -> int:
        return len(self.episode_ends)

    @property
    def episode_starts(self) -> np.ndarray:
        return np.concatenate([[0], self.episode_ends[:-1]]).astype(np.int64)

    @property
    def image_size(self) -> int:
        return int(self.rgb.shape[-1])

    def starts(self, length: int, tasks: Sequence[str] | None = None) -> np.ndarray:
        """Start indices of every window of `length` steps inside one episode (optionally of some tasks)."""
        out = [
            np.arange(s, e - length + 1)
            for s, e, t in zip(self.episode_starts, self.episode_ends, self.episode_task)
            if e - s >= length and (tasks is None or t in tasks)
        ]
        return np.concatenate(out).astype(np.int64) if out else np.zeros(0, np.int64)

    def first_windows(self, length: int, tasks: Sequence[str] | None = None) -> np.ndarray:
        """The window of `length` steps at the start of every episode that has one: where a real
        episode starts (imagined episodes and fidelity rollouts begin there)."""
        keep = [
            s for s, e, t in zip(self.episode_starts, self.episode_ends, self.episode_task)
            if e - s >= length and (tasks is None or t in tasks)
        ]
        return np.asarray(keep, dtype=np.int64)

    def succeeded(self) -> np.ndarray:
        """(E,) bool: whether each episode reached success at some step (Meta-World's episode success)."""
        return np.array([bool(self.success[s:e].any()) for s, e in zip(self.episode_starts, self.episode_ends)],
                        dtype=bool)

    def episodes(self, keep: Sequence[int] | np.ndarray) -> FrameWindows:
        """The given episodes (indices, in order) as their own FrameWindows."""
        keep = [int(i) for i in keep]
        if not keep:
            return replace(self, rgb=self.rgb[:0], action=self.action[:0], success=self.success[:0],
                           episode_ends=np.zeros(0, np.int64), episode_task=[], episode_kind=[])
        starts, ends = self.episode_starts, self.episode_ends
        idx = torch.cat([torch.arange(int(starts[i]), int(ends[i])) for i in keep])
        return replace(self, rgb=self.rgb[idx], action=self.action[idx], success=self.success[idx],
                       episode_ends=np.cumsum([int(ends[i] - starts[i]) for i in keep]).astype(np.int64),
                       episode_task=[self.episode_task[i] for i in keep],
                       episode_kind=[self.episode_kind[i] for i in keep])

    @classmethod
    def concat(cls, parts: Sequence[FrameWindows]) -> FrameWindows:
        """Episodes of several FrameWindows (same action bounds) as one."""
        parts = [p for p in parts if p.n_episodes]
        if not parts:
            raise ValueError("nothing to concatenate")
        if any((p.action_low, p.action_high) != (parts[0].action_low, parts[0].action_high) for p in parts):
            raise ValueError("FrameWindows with different action bounds cannot be concatenated")
        offsets = np.cumsum([0] + [len(p.rgb) for p in parts[:-1]])
        return cls(
            rgb=torch.cat([p.rgb for p in parts]),
            action=torch.cat([p.action for p in parts]),
            success=torch.cat([p.success for p in parts]),
            episode_ends=np.concatenate([p.episode_ends + o for p, o in zip(parts, offsets)]).astype(np.int64),
            episode_task=[t for p in parts for t in p.episode_task],
            episode_kind=[k for p in parts for k in p.episode_kind],
            action_low=parts[0].action_low,
            action_high=parts[0].action_high,
        )

    def to(self, device: torch.device | str) -> FrameWindows:
        """The same windows with the tensors on `device`: gathers then run there (a GPU-resident
        dataset: ~12 KB per 64 px frame, the paper recipe's 69,000 frames in < 1 GB)."""
        return replace(self, rgb=self.rgb.to(device), action=self.action.to(device), success=self.success.to(device))

    def gather(self, starts: torch.Tensor | np.ndarray, length: int, device: torch.device | str = "cpu"):
        """Frames (B,L,3,H,W) float in [-1,1], actions (B,L,A), success (B,L) for the given starts."""
        idx = torch.as_tensor(np.asarray(starts), dtype=torch.long)[:, None] + torch.arange(length)[None, :]
        idx = idx.to(self.rgb.device)
        frames = self.rgb[idx].to(device, non_blocking=True).float().div_(127.5).sub_(1.0)
        return frames, self.action[idx].to(device), self.success[idx].to(device)

    def sample(self, batch: int, length: int, generator: torch.Generator, device="cpu", starts=None,
               shard: tuple[int, int] = (0, 1)):
        """`batch` random windows; with shard (i, n), part i of n equal parts of them (the global
        batch of data-parallel training: every rank draws the same picks, gathers only its own)."""
        pool = self.starts(length) if starts is None else starts
        if len(pool) == 0:
            raise ValueError(f"no episode has {length} steps: cannot sample windows")
        part, parts = shard
        if batch % parts:
            raise ValueError(f"a batch of {batch} windows does not split into {parts} equal parts")
        pick = torch.randint(len(pool), (batch,), generator=generator)
        size = batch // parts
        return self.gather(pool[pick[part * size : (part + 1) * size].numpy()], length, device)


def _resize(rgb: np.ndarray, size: int | None) -> torch.Tensor:
    t = torch.from_numpy(np.ascontiguousarray(rgb)).permute(0, 3, 1, 2).contiguous()
    if size is None or size == t.shape[-1]:
        return t
    out = []
    for i in range(0, len(t), 1024):  # bounded memory for the float copy
        x = F.interpolate(t[i : i + 1024].float(), size=(size, size), mode="bilinear", antialias=True)
        out.append(x.round().clamp(0, 255).to(torch.uint8))
    return torch.cat(out)


KEYS = ("rgb", "action", "success")


def same_action_bounds(store: EpisodeStore, url: str, bounds: tuple | None) -> tuple:
    """The store's (action_low, action_high), refused if they differ from `bounds` (those of the
    stores read before it; None for the first): one model cannot encode two action spaces."""
    b = (tuple(store.attrs["action_low"]), tuple(store.attrs["action_high"]))
    if bounds is not None and b != bounds:
        raise ValueError(f"{url}: action bounds {b} differ from the other stores' {bounds}")
    return b


def load_windows(
    urls: Sequence[str], image_size: int | None = None, val_fraction: float = 0.0, seed: int = 0, *,
    read_train: bool = True,
) -> tuple[FrameWindows, FrameWindows]:
    """Read stores into (train, val) FrameWindows, split by episode per (task, kind) of each store.

    read_train=False reads the val episodes alone and returns no train episode (action bounds
    kept): the val split of data whose train frames do not fit in memory and are streamed instead
    (w4rl_core/data/stream.py)."""
    parts: dict[str, list] = {"train": [], "val": []}
    bounds = None
    for url in urls:
        store = EpisodeStore.open(url)
        bounds = same_action_bounds(store, url, bounds)
        train_ids, val_ids = split_episodes(store, val_fraction, seed)
        # The whole store in one read when the train split is wanted (most of it, read fastest in
        # bulk); otherwise only the val episodes' rows.
        whole = store.read(0, store.n_frames, keys=KEYS) if read_train else None
        for name, ids in (("train", train_ids if read_train else []), ("val", val_ids)):
            for i in ids:
                s, e = int(store.episode_starts[i]), int(store.episode_ends[i])
                rows = {k: a[s:e] for k, a in whole.items()} if whole is not None else store.read(s, e - s, KEYS)
                parts[name].append(
                    (rows["rgb"], rows["action"], rows["success"], store.episode_task[i], store.episode_kind[i])
                )
    if bounds is None:
        raise ValueError("no stores given")

    def build(items) -> FrameWindows:
        if not items:
            h = image_size or 8
            return FrameWindows(torch.zeros(0, 3, h, h, dtype=torch.uint8), torch.zeros(0, len(bounds[0])),
                                torch.zeros(0, dtype=torch.uint8), np.zeros(0, np.int64), [], [], *bounds)
        return FrameWindows(
            rgb=_resize(np.concatenate([it[0] for it in items]), image_size),
            action=torch.from_numpy(np.concatenate([it[1] for it in items])).float(),
            success=torch.from_numpy(np.concatenate([it[2] for it in items])),
            episode_ends=np.cumsum([len(it[0]) for it in items]).astype(np.int64),
            episode_task=[it[3] for it in items],
            episode_kind=[it[4] for it in items],
            action_low=bounds[0],
            action_high=bounds[1],
        )

    return build(parts["train"]), build(parts["val"])
