"""The `w4rl` command. Thin: parse arguments, call a stage or w4rl_core, print, set the exit code.

One module per command group, as DVC keeps one module per command (dvc/commands/):

- common.py: the shared options (--params, --device, --task) and loading params;
- data.py: `collect`, `data validate|info|view|drift|push`, `data import lerobot`, `data export lerobot`;
- train.py: `train world-model|bc|reward`, `eval fidelity`, `refine`, `evaluate`;
- robot.py: `robot serve|evaluate` (the bridge protocol);
- registry.py: `report`, `gate`, `promote`, `registry list|show`, `lineage`;
- flows.py: `flows serve|retrain` (Prefect);
- flywheel.py: `flywheel advance|run` (the data flywheel).

Each imports what a command needs inside the command, so that `w4rl --help` and light verbs start
without torch.
"""

from __future__ import annotations

import os
import sys

import typer

from pipelines.cli import data, flows, flywheel, registry, robot, train

app = typer.Typer(
    help="w4rl: robot episodes -> world model -> policy refinement in imagination -> gated policy.",
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_enable=False,
)
for group in (data, train, robot, registry, flows, flywheel):
    group.register(app)


def main() -> None:  # pragma: no cover - console entry point
    os.environ.setdefault("MUJOCO_GL", "egl")
    try:
        app()
    except Exception as err:
        # A saved model that cannot be used: one line, not a torch traceback. The class is looked up,
        # not imported: importing model_files imports torch (~4 s), and a verb that never loaded a
        # model (gate, registry, validate) cannot have raised it.
        model_files = sys.modules.get("w4rl_core.models.model_files")
        if model_files is None or not isinstance(err, model_files.ModelFileError):
            raise
        typer.secho(f"error: {err}", fg="red", err=True)
        raise SystemExit(1) from None


if __name__ == "__main__":  # pragma: no cover
    main()
