"""The data flywheel's episode side: a round's evaluation episodes become training data.

Round k's evaluation stores (every policy evaluated: BC, each refined seed, the previous round's
promoted policy) are copied whole into `rounds/<task>/round-<k>/<policy>.zarr` and listed in the
round's manifest. Stores are written once, each to a temporary sibling and renamed into place,
and a store already there is kept only if it is byte-for-byte the one being fed back: a round
killed halfway and run again never holds an episode twice, and never a different recording under
an old name. Which stores later rounds train on comes from the manifests (git-tracked), never from
listing directories, so a stray store cannot slip into training.

No git, DVC or params here (pipelines/stages/flywheel.py does those).
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
from pathlib import Path
from typing import Any

from w4rl_core.atomic import atomic_path
from w4rl_core.data.store import EpisodeStore

MANIFEST_VERSION = 1


class FlywheelError(RuntimeError):
    """The flywheel's files disagree with each other or with params (a manifest missing, a store
    replaced): nothing is fed back or trained on until it is put right."""


def tree_digest(path: str | os.PathLike[str]) -> str:
    """sha256 over a directory's relative file names and contents (a store's identity)."""
    root, h = Path(path), hashlib.sha256()
    for file in sorted(p for p in root.rglob("*") if p.is_file()):
        h.update(str(file.relative_to(root)).encode() + b"\0")
        with open(file, "rb") as f:
            for block in iter(lambda: f.read(1 << 20), b""):
                h.update(block)
    return h.hexdigest()


def feed_back_store(source: str | os.PathLike[str], dest: str | os.PathLike[str],
                    digest: str | None = None) -> dict[str, Any]:
    """Copy one evaluation store to `dest` (whole or not at all); a store already at `dest` must be
    this one. `digest`: the source's tree_digest when the caller has it. Returns what the
    manifest records of it."""
    digest = digest or tree_digest(source)
    dest = Path(dest)
    if dest.exists():
        if tree_digest(dest) != digest:
            raise FlywheelError(f"{dest}: a different store is already fed back under this name; a round's "
                                f"episodes are written once (its source now: {source})")
    else:
        with atomic_path(dest) as tmp:
            shutil.copytree(source, tmp)
    store = EpisodeStore.open(dest)
    success = store.array("data/success")[:]
    return {"path": str(dest), "digest": digest, "episodes": store.n_episodes, "frames": store.n_frames,
            "scenes": store.episode_scene,
            "successes": int(sum(bool(success[s:e].any()) for s, e in zip(store.episode_starts, store.episode_ends)))}


def read_manifest(path: str | os.PathLike[str]) -> dict[str, Any]:
    try:
        manifest = json.loads(Path(path).read_text())
    except FileNotFoundError:
        raise FlywheelError(f"{path}: no such flywheel manifest") from None
    except json.JSONDecodeError as err:
        raise FlywheelError(f"{path}: not valid JSON: {err}") from None
    if manifest.get("version") != MANIFEST_VERSION:
        raise FlywheelError(f"{path}: manifest version {manifest.get('version')}, this w4rl reads {MANIFEST_VERSION}")
    return manifest


def fed_back_stores(manifest_paths: list[str], task: str | None = None) -> list[str]:
    """The stores the given rounds fed back (of `task`, or of every task), in round order; each must
    exist (its content is DVC's to guard: data/flywheel/rounds.dvc)."""
    stores = []
    for path in manifest_paths:
        manifest = read_manifest(path)
        for name, entry in sorted(manifest["tasks"].items()):
            if task is not None and name != task:
                continue
            for store in entry["stores"].values():
                if "same_as" in store:  # episodes identical to another store of the round: held once
                    continue
                if not Path(store["path"]).is_dir():
                    raise FlywheelError(f"{path}: fed-back store {store['path']} is missing (dvc pull "
                                        "data/flywheel/rounds.dvc)")
                stores.append(store["path"])
    return stores
