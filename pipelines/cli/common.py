"""What every command group of the `w4rl` command shares: the common options and loading params."""

from __future__ import annotations

import importlib
from pathlib import Path
from typing import Annotated, Optional

import typer

from pipelines.params import DEFAULT_PARAMS, ParamsError, load_params

ParamsOpt = Annotated[Path, typer.Option("--params", help="Parameters file.")]
DeviceOpt = Annotated[Optional[str], typer.Option(help="cpu | cuda | cuda:N (default: params, auto = CUDA if present).")]
TaskOpt = Annotated[str, typer.Option(help="A task of collect.tasks.")]

__all__ = ["DEFAULT_PARAMS", "DeviceOpt", "ParamsOpt", "TaskOpt", "load", "load_factory", "policy_params"]


def load(path: Path):
    """The params at `path`, or exit 2 with the one-line reason (file, field, what is wrong)."""
    try:
        return load_params(path)
    except ParamsError as err:
        typer.secho(str(err), fg="red", err=True)
        raise typer.Exit(2) from err


def load_factory(spec: str):
    """`package.module:function` -> the function (a PolicyFactory)."""
    module, _, name = spec.partition(":")
    if not name:
        raise typer.BadParameter(f"--policy-factory must look like 'package.module:function', got {spec!r}")
    return getattr(importlib.import_module(module), name)


def policy_params(params: Path, device: Optional[str]):
    """Params for a policy stage, with --device applied, after printing the profile banner."""
    from pipelines.stages.policy import with_device

    p = load(params)
    typer.echo(p.profile.banner, err=True)
    return with_device(p, device)
