"""The data flywheel around the DAG (docs/flywheel.md): what a round trains on and starts from
(read by the stages), and `advance`, which feeds a finished round's evaluation episodes back as
the next data version.

A round k is: `dvc repro` with flywheel.round k (training on the demos, BC's rollouts and rounds
0..k-1's evaluation episodes; the world model and classifiers fine-tuned from round k-1's weights;
refinement from round k-1's promoted policy; evaluation on scenes no earlier round used) -> commit
-> promote -> `advance`: round k's evaluation stores copied into data/flywheel/rounds, validated,
their drift against the policy episodes already in training reported, round k's weights and
promoted policy into data/flywheel/init, both `dvc add`ed, the manifest written, flywheel.round set
to k+1, committed (and pushed, with a DVC remote). Every step can be re-run after a kill: stores are
written once and checked by digest, the manifest and params last.
"""

from __future__ import annotations

import json
import logging
import re
import shutil
import subprocess
from pathlib import Path
from typing import Any

from pipelines.params import DEFAULT_PARAMS, Params
from pipelines.paths import (EPISODES_DIR, EVAL_DIR, FLYWHEEL_DIR, FLYWHEEL_INIT, FLYWHEEL_ROUNDS, GATE_RECORD,
                             MODEL_DIR, bc_dir, flywheel_init, flywheel_manifest, flywheel_round_dir, refined_dir,
                             reward_dir, store_path)
from w4rl_core.atomic import atomic_path, write_json_atomic
from w4rl_core.data.flywheel import (MANIFEST_VERSION, FlywheelError, feed_back_store, fed_back_stores, read_manifest,
                                     tree_digest)

logger = logging.getLogger("w4rl.flywheel")


# What a round reads (the stages) ------------------------------------------------------------------

def fed_back(params: Params, task: str | None = None) -> list[str]:
    """The evaluation stores of rounds 0..flywheel.round-1 (of `task`, or all): training data now."""
    return fed_back_stores([flywheel_manifest(k) for k in range(params.flywheel.round)], task)


def warm_start(params: Params, what: str, task: str | None = None) -> str | None:
    """Where round k's `what` (world_model, reward) starts from: round k-1's weights, or None (from
    scratch: round 0, or flywheel.warm_start false)."""
    if params.flywheel.round == 0 or not params.flywheel.warm_start:
        return None
    path = flywheel_init(what, task)
    if not Path(path).is_dir():
        raise FlywheelError(f"flywheel.round {params.flywheel.round} with warm_start: {path} is missing "
                            "(`w4rl flywheel advance` writes it; dvc pull data/flywheel/init.dvc)")
    return path


def refine_start(params: Params, task: str) -> str:
    """The policy refinement starts from: round k-1's promoted policy (flywheel.refine_from
    promoted, when one was promoted by then), else BC."""
    if params.flywheel.round and params.flywheel.refine_from == "promoted":
        path = flywheel_init("policy", task)
        if Path(path).is_dir():
            return path
    return bc_dir(task)


def previous_policy(params: Params, task: str) -> str | None:
    """Round k-1's promotion candidate, which round k's evaluation also runs on its fresh scenes
    (round k against round k-1; promoted or not, the manifest says): None in round 0."""
    if params.flywheel.round == 0:
        return None
    path = flywheel_init("candidate", task)
    if not Path(path).is_dir():
        raise FlywheelError(f"flywheel.round {params.flywheel.round}: {path} is missing (`w4rl flywheel advance` "
                            "writes it; dvc pull data/flywheel/init.dvc)")
    return path


# Feeding a round back ----------------------------------------------------------------------------

def _git(*args: str, check: bool = True) -> str:
    return subprocess.run(["git", *args], check=check, capture_output=True, text=True).stdout.strip()


def _dvc(*args: str) -> None:
    result = subprocess.run(["dvc", *args], capture_output=True, text=True)
    if result.returncode:
        raise RuntimeError(f"dvc {' '.join(args)} failed: {result.stdout[-2000:]}{result.stderr[-2000:]}")


def set_round(params_path: str | Path, round_: int) -> None:
    """flywheel.round in params.yaml, the file otherwise untouched (its comments are documentation)."""
    path = Path(params_path)
    text = path.read_text()
    block = re.search(r"^flywheel:[^\n]*\n((?:[ \t]+[^\n]*\n?)*)", text, flags=re.M)
    if block is None:
        new = text.rstrip("\n") + f"\n\nflywheel:\n  round: {round_}\n"
    elif re.search(r"^[ \t]+round:[ \t]*\d+", block.group(1), flags=re.M):
        body = re.sub(r"^([ \t]+round:[ \t]*)\d+", rf"\g<1>{round_}", block.group(1), count=1, flags=re.M)
        new = text[:block.start(1)] + body + text[block.end(1):]
    else:
        new = text[:block.start(1)] + f"  round: {round_}\n" + text[block.start(1):]
    with atomic_path(path) as tmp:
        tmp.write_text(new)


def _copy_dir(source: str | Path, dest: str | Path) -> None:
    with atomic_path(dest) as tmp:
        shutil.copytree(source, tmp)


def _policy_ids(task: str, names: list[str], previous: str | None) -> dict[str, str]:
    """The registry id (content hash) of every policy whose episodes round k feeds back."""
    from pipelines.paths import seed_dir
    from w4rl_core.registry.registry import Registry

    ids = {}
    for name in names:
        if name == "bc":
            ids[name] = Registry.policy_id(task, bc_dir(task))
        elif name.startswith("refined_seed"):
            ids[name] = Registry.policy_id(task, seed_dir(task, int(name.removeprefix("refined_seed"))))
        elif name == "previous" and previous:
            ids[name] = Registry.policy_id(task, previous)
    return ids


def advance(params: Params, params_path: str | Path = DEFAULT_PARAMS, commit: bool = True,
            push: bool = True) -> dict[str, Any]:
    """Feed round k (= flywheel.round) back as data version k+1; see the module docstring. Refuses
    unless the round's record is current (`dvc status` of the gate and everything upstream clean),
    so the fed-back episodes are exactly those the committed metrics describe."""
    from pipelines.stages.gate import stale_stages
    from w4rl_core.data.drift import drift_report
    from w4rl_core.data.validate import ValidationConfig, validate_stores

    k = params.flywheel.round
    plan_path = advance_plan(k)
    sources = {task: sorted(Path(EVAL_DIR, task).glob("*.zarr")) for task in params.collect.tasks}
    digests = {task: {src.stem: tree_digest(src) for src in found} for task, found in sources.items()}
    if plan_path.exists():  # resuming an advance that was killed: the run was current when it began
        plan = json.loads(plan_path.read_text())
        if plan["sources"] != digests:
            raise FlywheelError(f"flywheel advance of round {k}: the evaluation stores changed since the "
                                f"interrupted advance began ({plan_path}); restore them (git checkout, dvc checkout)")
    else:  # data/flywheel is untouched until the run is known current: then it may change as it likes
        stale = stale_stages()
        if stale:
            raise FlywheelError(f"flywheel advance of round {k}: the run is not current ({sorted(stale)} to "
                                "reproduce); run `dvc repro` first")
        plan = {"round": k, "run_commit": _git("rev-parse", "HEAD", check=False) or None, "sources": digests}
        write_json_atomic(plan_path, plan)
    decision = json.loads(Path(GATE_RECORD).read_text())
    registry = params.registry.open()
    promoted = registry.promoted()
    config = ValidationConfig(context_frames=params.validate.context_frames, known_tasks=params.collect.tasks,
                              action_tolerance=params.validate.action_tolerance, distinct_scenes=True)
    tasks: dict[str, Any] = {}
    for task in params.collect.tasks:
        previous = previous_policy(params, task)
        if not sources[task]:
            raise FlywheelError(f"flywheel advance of round {k}: no evaluation store under {EVAL_DIR}/{task}")
        report = validate_stores([str(src) for src in sources[task]], config)  # before anything is written
        if not report["ok"]:
            bad = [i["text"] for r in report["stores"] for i in r["issues"]][:5]
            raise FlywheelError(f"flywheel advance of round {k}: {task}'s evaluation episodes fail validation, "
                                f"nothing fed back: {bad}")
        stores: dict[str, Any] = {}
        first_with: dict[str, str] = {}  # digest -> the store that holds those episodes
        for src in sources[task]:
            digest = digests[task][src.stem]
            if digest in first_with:  # the same episodes (policies with the same weights, run
                # deterministically): fed back once, so no episode weighs twice in training
                stores[src.stem] = {"same_as": first_with[digest], "digest": digest}
                continue
            first_with[digest] = src.stem
            stores[src.stem] = feed_back_store(src, Path(flywheel_round_dir(task, k)) / src.name, digest)
        record = promoted.get(task) or {}
        tasks[task] = {"stores": stores, "policies": _policy_ids(task, list(stores), previous),
                       "promoted": record.get("policy_id"), "decision": decision["tasks"][task]["decision"],
                       "started_from": refine_start(params, task)}
    # Drift of what is fed back against the policy episodes already in training (BC's rollouts and
    # the earlier rounds'), per task: like for like, rollouts against rollouts of the same task, not
    # against scripted demos or another task's mix. Not on `kind` or `task` (different or constant
    # by construction).
    for task, entry in tasks.items():
        reference = ([store_path(EPISODES_DIR, task, "policy")] if params.collect.episodes.get("policy", 0) > 0
                     else []) + fed_back(params, task)
        current = [s["path"] for s in entry["stores"].values() if "path" in s]
        where = f"{FLYWHEEL_ROUNDS}/drift-round-{k}/{task}"
        summary = drift_report(reference, current, where, exclude=("kind", "task")) if reference else {}
        entry["drift"] = {key: summary.get(key) for key in ("reference_episodes", "current_episodes", "dataset_drift",
                                                             "dataset_test", "drifted_columns", "drifted_share")} | {
            "report": f"{where}/drift.html" if reference else None,
            "drifted": sorted(c for c, v in (summary.get("columns") or {}).items() if v.get("drift"))}
    # What round k+1 starts from: this round's weights, and each task's promoted policy.
    _copy_dir(MODEL_DIR, flywheel_init("world_model"))
    for task in params.collect.tasks:
        _copy_dir(reward_dir(task), flywheel_init("reward", task))
        with atomic_path(flywheel_init("candidate", task)) as tmp:  # the candidate alone, not every seed
            shutil.copytree(refined_dir(task), tmp, ignore=shutil.ignore_patterns("seeds"))
        if task in promoted:
            with atomic_path(flywheel_init("policy", task)) as tmp:
                registry.fetch_policy(promoted[task]["policy_id"], tmp)
    manifest = {"version": MANIFEST_VERSION, "round": k, "run_commit": plan["run_commit"],
                "profile": params.profile.name, "smoke_scale": params.profile.smoke_scale,
                "evaluation_scenes": params.scene_slice("evaluation")["first_scene"], "tasks": tasks}
    readme = Path(FLYWHEEL_DIR, "README.md")
    if not readme.exists():
        readme.write_text("Written by `w4rl flywheel advance` (docs/flywheel.md); do not edit by hand.\n")
    _dvc("add", "-q", FLYWHEEL_ROUNDS, FLYWHEEL_INIT)
    write_json_atomic(flywheel_manifest(k), manifest)
    set_round(params_path, k + 1)
    result = {"round": k, "next_round": k + 1, "episodes": sum(s.get("episodes", 0) for t in tasks.values()
                                                              for s in t["stores"].values()),
              "drift": {task: entry["drift"] for task, entry in tasks.items()}}
    if commit:
        _git("add", FLYWHEEL_DIR, str(params_path))
        if _git("diff", "--cached", "--name-only"):
            _git("commit", "-q", "-m", f"flywheel: round {k}'s evaluation episodes ({result['episodes']}) are data "
                 f"version {k + 1}; round {k + 1} starts from round {k}'s weights and promoted policies")
        result["commit"] = _git("rev-parse", "HEAD")
    plan_path.unlink(missing_ok=True)  # done: a later run starts the next round
    from pipelines.dvc_push import has_default_remote

    if push and has_default_remote(Path(".")):
        from pipelines.dvc_push import push as dvc_push

        dvc_push(Path("."))  # the new data version and the weights round k+1 starts from
        result["pushed"] = True
    return result


def advance_plan(round_: int) -> Path:
    """What an advance in progress feeds back (the evaluation stores' digests, the run commit):
    written once the run is known current, removed when the advance is committed."""
    return Path(".w4rl/flywheel") / f"advance-round-{round_}.json"


def finish_interrupted(params_path: str | Path = DEFAULT_PARAMS) -> bool:
    """Commit an advance that was killed after it set flywheel.round but before its commit (the
    round's manifest is written, params.yaml and data/flywheel differ from HEAD). True if it did."""
    from pipelines.params import load_params

    k = load_params(params_path).flywheel.round
    head_round = _head_round(params_path)
    for j in range(head_round or 0):  # plans of committed advances (killed just before their cleanup)
        advance_plan(j).unlink(missing_ok=True)
    if k == 0 or not Path(flywheel_manifest(k - 1)).exists():
        return False
    if not _git("status", "--porcelain", "--", FLYWHEEL_DIR, str(params_path)):
        return False
    if head_round != k - 1:
        return False
    _git("add", FLYWHEEL_DIR, str(params_path))
    _git("commit", "-q", "-m", f"flywheel: round {k - 1}'s evaluation episodes are data version {k} "
         "(the commit of an advance that was interrupted)")
    advance_plan(k - 1).unlink(missing_ok=True)
    return True


def _head_round(params_path: str | Path) -> int | None:
    import yaml

    text = _git("show", f"HEAD:{Path(params_path).as_posix()}", check=False)
    if not text:
        return None
    return int(((yaml.safe_load(text) or {}).get("flywheel") or {}).get("round", 0))


def check_fed_back(params: Params) -> None:
    """Every round before flywheel.round has its manifest (a params edit cannot skip a round)."""
    for k in range(params.flywheel.round):
        read_manifest(flywheel_manifest(k))
