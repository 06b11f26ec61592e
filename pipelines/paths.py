"""The one place for the pipeline's filesystem paths (relative to the repository root): the stages,
the flows, the CLI and the benchmarks read them from here. dvc.yaml spells the same paths in its
cmds, deps and outs; keep the two in step.

Imports nothing heavy (Params only for type checking), so any module can depend on it.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from pipelines.params import Params

# Episodes (collect, validate) ------------------------------------------------------------------

EPISODES_DIR = "data/episodes"


def store_path(root: str, task: str, kind: str) -> str:
    """Where the pipeline keeps the store of one (task, kind); dvc.yaml uses the same pattern.

    Demonstrations (expert, random) and policy rollouts live in sibling trees so that validating
    the demonstrations does not depend on the rollouts, which are made by a policy trained on them.
    """
    tree = "rollouts" if kind in ("policy", "eval") else "demos"
    return f"{root}/{tree}/{task}/{kind}.zarr"


def expected_stores(params: Params, root: str, kinds: tuple[str, ...] | None = None) -> list[str]:
    """The stores the current params.yaml produces (kinds with a positive episode count)."""
    return [
        store_path(root, task, kind)
        for task in params.collect.tasks
        for kind, n in params.collect.episodes.items()
        if n > 0 and (kinds is None or kind in kinds)
    ]


# World model (train_world_model, eval_fidelity) ------------------------------------------------

MODEL_DIR = "data/models/world_model"
CHECKPOINT_DIR = "data/checkpoints/world_model"  # resumable state; not a DVC output
TRAINING_RUN = "dvclive/world_model"  # DVCLive: loss curves and the run summary (timings included)
FIDELITY_METRICS = "metrics/fidelity.json"
FIDELITY_REPORT = "reports/fidelity"
FIDELITY_CURVE = "plots/fidelity_per_step.csv"  # per imagined step: model vs copy-last (dvc plots)


# Policy side (train_bc, train_reward, refine, evaluate) ----------------------------------------

def bc_dir(task: str) -> str:
    return f"data/models/bc/{task}"


def reward_dir(task: str) -> str:
    return f"data/models/reward/{task}"


def refined_dir(task: str) -> str:
    """The task's promotion candidate (a policy directory); every seed's policy is in seeds/."""
    return f"data/models/refined/{task}"


def seed_dir(task: str, seed: int) -> str:
    return f"{refined_dir(task)}/seeds/seed{seed}"


def checkpoint_dir(stage: str, task: str) -> str:
    """Resumable training state of a stage (not a DVC output: DVC clears outputs before a rerun, and
    this must survive a kill). A finished stage removes it once its outputs are in place."""
    return f"data/checkpoints/{stage}/{task}"


# Training runs (curves + summary in DVCLive's layout; their metrics.json is the stage's metric).
def bc_run(task: str) -> str:
    return f"dvclive/bc/{task}"


def reward_run(task: str) -> str:
    return f"dvclive/reward/{task}"


def refine_run(task: str) -> str:
    """One DVCLive directory per task; each seed's curves under plots/metrics/seed<k>/."""
    return f"dvclive/refine/{task}"


def refine_metrics_path(task: str) -> str:
    """The refine stage's record of a task (every seed, the candidate); evaluate reads it."""
    return f"metrics/refine/{task}.json"


EVAL_DIR = "data/eval"  # evaluate: the evaluation episodes' stores, <task>/bc.zarr, <task>/refined_seed<k>.zarr
POLICY_REPORT = "reports/policy"  # evaluate: episode GIFs
POLICY_METRICS = "metrics/policy.json"


# Gate and the run report -----------------------------------------------------------------------

GATE_RECORD = "metrics/gate.json"  # written by the gate stage; promotion and the flows read it
RUN_REPORT = "reports/run/index.html"
RUN_DRIFT_REPORT = "reports/run/drift"


# The data flywheel (`w4rl flywheel advance`; docs/flywheel.md) -----------------------------------
# data/flywheel is a dependency of the training, refinement, evaluation and gate stages. Its
# README.md and manifests are in git; rounds/ and init/ are `dvc add`ed (data/flywheel/*.dvc).

FLYWHEEL_DIR = "data/flywheel"
FLYWHEEL_ROUNDS = f"{FLYWHEEL_DIR}/rounds"  # <task>/round-<k>/<policy>.zarr: round k's evaluation episodes
FLYWHEEL_INIT = f"{FLYWHEEL_DIR}/init"  # the weights the next round starts from (world model, classifiers, policy)
FLYWHEEL_MANIFESTS = f"{FLYWHEEL_DIR}/manifests"  # round-<k>.json: what round k fed back, and from which policies


def flywheel_manifest(round_: int) -> str:
    return f"{FLYWHEEL_MANIFESTS}/round-{round_}.json"


def flywheel_round_dir(task: str, round_: int) -> str:
    return f"{FLYWHEEL_ROUNDS}/{task}/round-{round_}"


def flywheel_init(what: str, task: str | None = None) -> str:
    """world_model, or reward / policy (promoted) / candidate of `task`: what round k+1 starts from."""
    return f"{FLYWHEEL_INIT}/{what}" + (f"/{task}" if task else "")
