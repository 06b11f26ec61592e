"""Reading a saved model directory (config.json + model.safetensors) so that anything wrong with it
is said in one line naming the file and the mismatch, never as a stack trace from inside torch or
safetensors. Weights are only ever read with safetensors (no pickle)."""

from __future__ import annotations

import json
from collections.abc import Callable
from pathlib import Path
from typing import Any, TypeVar

import torch
from safetensors.torch import load_file

T = TypeVar("T")
CONFIG_FILE, WEIGHTS_FILE = "config.json", "model.safetensors"


class ModelFileError(ValueError):
    """A saved model that cannot be used as asked; the message names the file and why."""


class MissingModelError(ModelFileError, FileNotFoundError):
    """No model where one was expected (callers that handle a missing file still catch it)."""


def read_config(path: str | Path, what: str) -> dict[str, Any]:
    path = Path(path)
    file = path / CONFIG_FILE
    if not file.exists():
        raise MissingModelError(f"{file}: missing; is {path} a {what} directory (not `dvc pull`ed?)")
    try:
        raw = json.loads(file.read_text())
    except (json.JSONDecodeError, UnicodeDecodeError) as err:
        raise ModelFileError(f"{file}: not valid JSON ({err})") from None
    if not isinstance(raw, dict) or not isinstance(raw.get("config"), dict):
        raise ModelFileError(f"{file}: has no 'config' mapping; not a {what} saved by w4rl")
    return raw


def build(factory: Callable[[], T], path: str | Path, what: str) -> T:
    """Build the model (or its config) that config.json describes; a config it does not accept is
    named as the file's fault."""
    try:
        return factory()
    except (TypeError, ValueError, KeyError) as err:
        raise ModelFileError(f"{Path(path) / CONFIG_FILE}: does not describe a valid {what} ({err})") from None


def load_weights(module: torch.nn.Module, path: str | Path) -> None:
    """Load model.safetensors into `module` after checking that every tensor is there with the shape
    the module (built from config.json) expects."""
    file = Path(path) / WEIGHTS_FILE
    if not file.exists():
        raise MissingModelError(f"{file}: missing")
    try:
        state = load_file(str(file), device="cpu")
    except Exception as err:  # safetensors' SafetensorError (truncated, corrupt header) and OSError alike
        raise ModelFileError(f"{file}: not a readable safetensors file ({err}); re-run the stage that wrote it "
                             "or `dvc pull` it again") from None
    expected = module.state_dict()
    missing = sorted(set(expected) - set(state))
    unexpected = sorted(set(state) - set(expected))
    shapes = [f"{k} {tuple(state[k].shape)} vs {tuple(v.shape)}" for k, v in expected.items()
              if k in state and state[k].shape != v.shape]
    if missing or unexpected or shapes:
        parts = [f"{label} {items[:3]}{' ...' if len(items) > 3 else ''}" for label, items in
                 (("missing tensors", missing), ("unexpected tensors", unexpected),
                  ("shapes (file vs config)", shapes)) if items]
        raise ModelFileError(f"{file} does not match {Path(path) / CONFIG_FILE}: {'; '.join(parts)}")
    module.load_state_dict(state)


def check_fits(path: str | Path, what: str, **pairs: tuple[Any, Any]) -> None:
    """`name=(the model's, what it is used with)` for each property that must agree (image size,
    action dimension, task): a model trained for something else is named, not run."""
    wrong = [f"{name}: the {what} has {mine!r}, used with {theirs!r}" for name, (mine, theirs) in pairs.items()
             if mine != theirs]
    if wrong:
        raise ModelFileError(f"{path}: {what} does not fit ({'; '.join(wrong)})")
