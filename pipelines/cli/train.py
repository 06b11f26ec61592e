"""`w4rl train ...`, `w4rl eval fidelity`, `w4rl refine`, `w4rl evaluate`: the model stages."""

from __future__ import annotations

import json
import typer

from pipelines.cli.common import DEFAULT_PARAMS, DeviceOpt, ParamsOpt, TaskOpt, load, policy_params

train_app = typer.Typer(help="Train models: the world model, a task's BC policy and its success classifier.",
                        no_args_is_help=True)
eval_app = typer.Typer(help="Evaluate models.", no_args_is_help=True)


def register(app: typer.Typer) -> None:
    app.add_typer(train_app, name="train")
    app.add_typer(eval_app, name="eval")
    app.command()(refine)
    app.command()(evaluate)


@train_app.command("world-model")
def train_world_model(params: ParamsOpt = DEFAULT_PARAMS, device: DeviceOpt = None) -> None:
    """Train the EDM world model on all validated stores; resumes from data/checkpoints after a kill.
    Data-parallel under `torchrun --nproc-per-node N -m pipelines train world-model` (docs/scaling.md)."""
    from pipelines.stages import world_model as stage

    from w4rl_core.train.distributed import launched_ranks

    p = load(params)
    main = launched_ranks().main  # under torchrun: rank 0 speaks for the run
    if main:
        typer.echo(p.profile.banner, err=True)
    summary = stage.train(p, device, progress=True)
    if main:
        typer.echo(json.dumps(summary))


@eval_app.command("fidelity")
def eval_fidelity(params: ParamsOpt = DEFAULT_PARAMS, device: DeviceOpt = None) -> None:
    """Imagined episodes from held-out episode starts with the recorded actions: PSNR (full frame and
    moving pixels) and SSIM per horizon vs copying the last frame, detector agreement."""
    from pipelines.paths import FIDELITY_METRICS, FIDELITY_REPORT
    from pipelines.stages import world_model as stage

    p = load(params)
    typer.echo(p.profile.banner, err=True)
    m = stage.fidelity(p, device)
    for metric in ("psnr", "psnr_moving", "ssim"):
        for name in ("model", "copy_last_frame"):
            v, se = m[name][metric], m[name][f"{metric}_se"]
            cells = "  ".join(f"{h}: {v[h]:.3f}±{se[h] or 0:.3f}" for h in v)
            typer.echo(f"{metric:<12} {name:<16} {cells}")
    agree = m["classifier_agreement"]
    typer.echo(f"detector agreement imagined vs real: frames {agree['frame']}, episodes {agree['episode']}")
    typer.echo(f"metrics: {FIDELITY_METRICS}; report, strips and GIFs: {FIDELITY_REPORT}/")


@train_app.command("bc")
def train_bc(task: TaskOpt, params: ParamsOpt = DEFAULT_PARAMS, device: DeviceOpt = None) -> None:
    """Behaviour cloning: Gaussian image policy fitted to the task's expert episodes."""
    from pipelines.stages import policy as stage

    typer.echo(json.dumps(stage.train_bc(policy_params(params, device), task, progress=True)))


@train_app.command("reward")
def train_reward(task: TaskOpt, params: ParamsOpt = DEFAULT_PARAMS, device: DeviceOpt = None) -> None:
    """Success classifier on the task's expert and BC-rollout frames; precision/recall/F1 held out."""
    from pipelines.stages import policy as stage

    typer.echo(json.dumps(stage.train_reward(policy_params(params, device), task, progress=True)))


def refine(task: TaskOpt, params: ParamsOpt = DEFAULT_PARAMS, device: DeviceOpt = None) -> None:
    """PPO inside the frozen world model from the BC policy, once per refine.seeds entry, rewarded by
    the frozen, calibrated success detector."""
    from pipelines.stages import policy as stage

    typer.echo(json.dumps(stage.refine(policy_params(params, device), task)))


def evaluate(params: ParamsOpt = DEFAULT_PARAMS) -> None:
    """Success rate of BC and refined policies on params.robot, per task and overall (metrics/policy.json)."""
    from pipelines.stages import policy as stage

    m = stage.evaluate(policy_params(params, None))
    if m.get("evaluated") is False:
        typer.echo(f"not evaluated: {m['not_evaluated']}; the gate refuses every task")
        return
    typer.echo(f"{m['episodes_per_policy']} distinct unseen scenes per task, each once per policy; intervals "
               "resample refinement seeds and scenes")
    typer.echo(f"{'task':<20} {'BC':>14} {'refined':>14} {'uplift [95% CI]':>24}")
    for task, e in [*m["per_task"].items(), ("overall", m["overall"])]:
        lo, hi = e["uplift_ci95"]
        typer.echo(f"{task:<20} {e['bc']['success_rate']:>6.2f} (n={e['bc']['episodes']:>3}) "
                   f"{e['refined']['success_rate']:>6.2f} (n={e['refined']['episodes']:>3}) "
                   f"{e['uplift']:>+7.2f} [{lo:+.2f}, {hi:+.2f}]")
        for row in e["seeds"] if task in m["per_task"] else []:  # overall["seeds"] lists the seed numbers
            lo, hi = row["uplift_ci95"]
            typer.echo(f"  seed {row['seed']:<13} {'':>14} {row['success_rate']:>6.2f} (n={row['episodes']:>3}) "
                       f"{row['uplift']:>+7.2f} [{lo:+.2f}, {hi:+.2f}]")


