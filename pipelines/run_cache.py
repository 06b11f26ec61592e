"""Moving DVC's run-cache between machines, outputs marked `cache: false` included.

`dvc push --run-cache` sends each run's entry and the cached outputs, but not the outputs marked
`cache: false` (here: metrics, DVCLive summaries and curves, which git tracks), although the entry
names them and DVC keeps a copy in the local cache when it saves the run. Another checkout then
finds the run's entry, misses those files and recomputes the stage ("Some of the cache files do not
exist neither locally nor on remote"). These helpers move exactly those objects with DVC's own
transfer (`Repo.cloud.push/pull`); DVC has no command for it (treeverse/dvc#8738 discusses the
same gap: without the lock, nothing recovers a `cache: false` output of a run).
"""

from __future__ import annotations

from pathlib import Path

import yaml


def _uncached_paths(dvc_repo) -> set[str]:
    return {str(out.def_path) for stage in dvc_repo.index.stages for out in stage.outs if not out.use_cache}


def _files_of(dvc_repo, objs: set) -> set:
    """A directory output is a `.dir` object listing its files; a transfer of the `.dir` alone
    moves the listing, not the files (DVC expands trees only for the outputs it collects itself)."""
    from dvc_data.hashfile.tree import Tree

    files = {hi for hi in objs if not hi.isdir}
    for hi in objs:
        if hi.isdir:
            files |= {entry for _, _, entry in Tree.load(dvc_repo.cache.local, hi)}
    return files


def push_uncached_outputs(repo: Path) -> tuple[int, int]:
    """Push the `cache: false` outputs of every stage in dvc.lock to the default remote ->
    (objects pushed, objects not in the local cache). The latter are outputs of runs that did not
    happen here (checked out from git, or a stage DVC keeps no run entry for): not an error, the
    run-cache cannot restore them anywhere and DVC recomputes those stages, as without this."""
    from dvc.repo import Repo

    with Repo(str(repo)) as dvc_repo:
        objs = {out.hash_info for stage in dvc_repo.index.stages for out in stage.outs
                if not out.use_cache and out.hash_info}
        local = {hi for hi in objs if dvc_repo.cache.local.exists(hi.value)}
        result = dvc_repo.cloud.push(local | _files_of(dvc_repo, local))
        return len(result.transferred), len(objs - local)


def pull_runs(repo: Path) -> int:
    """The remote's run-cache entries, then the `cache: false` outputs they name (small files:
    metrics and curves), so `dvc repro` restores those runs instead of recomputing them. Objects the
    remote lacks (runs pushed by an older DVC) are skipped: DVC recomputes those stages as before.
    Returns how many objects were fetched."""
    from dvc.repo import Repo
    from dvc_data.hashfile.hash_info import HashInfo

    with Repo(str(repo)) as dvc_repo:
        dvc_repo.stage_cache.pull(None)
        uncached = _uncached_paths(dvc_repo)
        objs = set()
        for entry in Path(dvc_repo.stage_cache.cache_dir).rglob("*"):
            if entry.is_file():
                for out in (yaml.safe_load(entry.read_text()) or {}).get("outs", []):
                    if out.get("path") in uncached and out.get("md5"):
                        objs.add(HashInfo("md5", out["md5"]))
        fetched = dvc_repo.cloud.pull(objs).transferred  # the files and the directories' listings
        have = {hi for hi in objs if hi.isdir and dvc_repo.cache.local.exists(hi.value)}
        return len(fetched) + len(dvc_repo.cloud.pull(_files_of(dvc_repo, have)).transferred)
