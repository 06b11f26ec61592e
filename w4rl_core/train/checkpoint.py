"""Resumable training state without pickle: tensors in safetensors, everything else in JSON.

torch.save/torch.load would pickle the optimizer state; we flatten it into named tensors instead so
a checkpoint fetched from anywhere can be loaded without executing code.
"""

from __future__ import annotations

import hashlib
import json
import os
from pathlib import Path
from typing import Any

import torch
from safetensors.torch import load_file, save_file

from w4rl_core.atomic import atomic_path

STATE_TENSORS, STATE_META = "state.safetensors", "state.json"


def optimizer_tensors(opt: torch.optim.Optimizer) -> tuple[dict[str, torch.Tensor], dict[str, Any]]:
    sd = opt.state_dict()
    tensors = {}
    scalars: dict[str, Any] = {}
    for pid, state in sd["state"].items():
        for key, value in state.items():
            if torch.is_tensor(value):
                tensors[f"optim/{pid}/{key}"] = value.detach().cpu().contiguous()
            else:
                scalars[f"{pid}/{key}"] = value
    return tensors, {"param_groups": sd["param_groups"], "scalars": scalars}


def load_optimizer(opt: torch.optim.Optimizer, tensors: dict[str, torch.Tensor], meta: dict[str, Any]) -> None:
    state: dict[int, dict[str, Any]] = {}
    for name, value in tensors.items():
        if name.startswith("optim/"):
            _, pid, key = name.split("/", 2)
            state.setdefault(int(pid), {})[key] = value
    for name, value in meta["scalars"].items():
        pid, key = name.split("/", 1)
        state.setdefault(int(pid), {})[key] = value
    opt.load_state_dict({"state": state, "param_groups": meta["param_groups"]})


def save_state(path: str | os.PathLike[str], tensors: dict[str, torch.Tensor], meta: dict[str, Any]) -> None:
    with atomic_path(path) as tmp:
        tmp.mkdir(parents=True)
        save_file({k: v.detach().cpu().contiguous() for k, v in tensors.items()}, str(tmp / STATE_TENSORS))
        (tmp / STATE_META).write_text(json.dumps(meta, indent=2, sort_keys=True))


def load_state(path: str | os.PathLike[str]) -> tuple[dict[str, torch.Tensor], dict[str, Any]] | None:
    path = Path(path)
    if not (path / STATE_META).exists() or not (path / STATE_TENSORS).exists():
        return None
    return load_file(str(path / STATE_TENSORS)), json.loads((path / STATE_META).read_text())


def parameter_fingerprint(*modules: torch.nn.Module) -> str:
    """sha256 of the modules' state (names and bytes): what a checkpoint resumes into, and the
    frozen-model check of refinement."""
    h = hashlib.sha256()
    for m in modules:
        for name, p in sorted(m.state_dict().items()):
            h.update(name.encode())
            h.update(p.detach().cpu().contiguous().numpy().tobytes())
    return h.hexdigest()
