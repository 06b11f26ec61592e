"""Image policy, value net and success classifier: small CNNs on frames in [-1, 1].

The policy sees only the frame (no proprioception): in imagination the world model produces frames
and nothing else, so a policy refined there must act from pixels alone (World4RL's pi(x)).
Actions are modelled in a normalized space [-1, 1]^A (the bounds are stored with the weights) by a
Gaussian whose log-std is clipped to [log_std_min, log_std_max]; World4RL's conservative exploration
is log_std_max = 0 (sigma <= e^0).
"""

from __future__ import annotations

import json
import os
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from safetensors.torch import save_file
from torch import nn
from torch.distributions import Normal

from w4rl_core.atomic import atomic_path
from w4rl_core.models.configs import CNNConfig  # noqa: F401 (re-exported; torch-free home)
from w4rl_core.models.model_files import ModelFileError, build, check_fits, load_weights, read_config
from w4rl_core.robots.protocol import Observation


def _encoder(cfg: CNNConfig) -> tuple[nn.Module, int]:
    layers: list[nn.Module] = []
    c_in = 3
    for c in cfg.channels:
        layers += [nn.Conv2d(c_in, c, 3, stride=2, padding=1), nn.GroupNorm(min(8, c), c), nn.SiLU()]
        c_in = c
    side = cfg.image_size // 2 ** len(cfg.channels)
    return nn.Sequential(*layers, nn.Flatten()), c_in * side * side


class CNNHead(nn.Module):
    """Frames (B,3,H,W) in [-1,1] [+ `extra` features (B, extra)] -> (B, out)."""

    def __init__(self, cfg: CNNConfig, out: int, extra: int = 0) -> None:
        super().__init__()
        self.encoder, flat = _encoder(cfg)
        self.mlp = nn.Sequential(nn.Linear(flat + extra, cfg.hidden), nn.SiLU(), nn.Linear(cfg.hidden, out))

    def forward(self, frames: torch.Tensor, extra: torch.Tensor | None = None) -> torch.Tensor:
        features = self.encoder(frames)
        if extra is not None:
            features = torch.cat([features, extra], dim=-1)
        return self.mlp(features)


@dataclass(frozen=True)
class PolicyConfig:
    action_low: tuple[float, ...]
    action_high: tuple[float, ...]
    cnn: CNNConfig = CNNConfig()
    log_std_min: float = -5.0
    log_std_max: float = 0.0  # conservative exploration: sigma <= e^0 (normalized action units)

    def __post_init__(self) -> None:
        object.__setattr__(self, "action_low", tuple(float(v) for v in self.action_low))
        object.__setattr__(self, "action_high", tuple(float(v) for v in self.action_high))
        if self.log_std_min >= self.log_std_max:
            raise ValueError("log_std_min must be < log_std_max")


class GaussianPolicy(nn.Module):
    """N(mu(x), diag sigma(x)^2) over normalized actions; the state-dependent log-std is clipped."""

    def __init__(self, config: PolicyConfig) -> None:
        super().__init__()
        self.config = config
        self.action_dim = len(config.action_low)
        self.net = CNNHead(config.cnn, 2 * self.action_dim)
        self.register_buffer("low", torch.tensor(config.action_low))
        self.register_buffer("high", torch.tensor(config.action_high))

    def normalize(self, action: torch.Tensor) -> torch.Tensor:
        return 2 * (action - self.low) / (self.high - self.low) - 1

    def denormalize(self, u: torch.Tensor) -> torch.Tensor:
        return (u.clamp(-1, 1) + 1) / 2 * (self.high - self.low) + self.low

    def distribution(self, frames: torch.Tensor) -> Normal:
        mean, log_std = self.net(frames).chunk(2, dim=-1)
        log_std = log_std.clamp(self.config.log_std_min, self.config.log_std_max)
        return Normal(torch.tanh(mean), log_std.exp())

    def nll(self, frames: torch.Tensor, actions: torch.Tensor) -> torch.Tensor:
        """Mean negative log-likelihood of raw actions (the BC loss)."""
        return -self.distribution(frames).log_prob(self.normalize(actions)).sum(-1).mean()


class SuccessClassifier(nn.Module):
    """Binary task success from one frame (the sparse reward r = C(x))."""

    def __init__(self, cnn: CNNConfig) -> None:
        super().__init__()
        self.cnn_config = cnn
        self.net = CNNHead(cnn, 1)

    def forward(self, frames: torch.Tensor) -> torch.Tensor:
        return self.net(frames).squeeze(-1)  # logits

    @torch.no_grad()
    def prob(self, frames: torch.Tensor) -> torch.Tensor:
        return torch.sigmoid(self(frames))


def frames_from_rgb(rgb: np.ndarray | torch.Tensor, size: int) -> torch.Tensor:
    """uint8 (H,W,3) or (B,H,W,3) -> float (B,3,size,size) in [-1,1], resized as load_windows does."""
    t = torch.as_tensor(np.ascontiguousarray(rgb))
    if t.ndim == 3:
        t = t[None]
    t = t.permute(0, 3, 1, 2).float()
    if t.shape[-1] != size:
        t = F.interpolate(t, size=(size, size), mode="bilinear", antialias=True).round().clamp(0, 255)
    return t / 127.5 - 1


class PolicyActor:
    """A trained policy behind the `act(obs)` interface of robots/protocol.Policy."""

    def __init__(self, policy: GaussianPolicy, deterministic: bool = True, seed: int = 0) -> None:
        self.policy = policy.eval()
        self.deterministic = deterministic
        self.generator = torch.Generator().manual_seed(seed)

    @torch.no_grad()
    def act(self, obs: Observation) -> np.ndarray:
        dist = self.policy.distribution(frames_from_rgb(obs.rgb, self.policy.config.cnn.image_size))
        u = dist.mean if self.deterministic else dist.mean + dist.stddev * torch.randn(
            dist.mean.shape, generator=self.generator
        )
        return self.policy.denormalize(u)[0].numpy().astype(np.float32)


# ---------------------------------------------------------------------- checkpoints (safetensors + JSON)
def save_module(path: str | os.PathLike[str], module: nn.Module, kind: str, config: dict[str, Any],
                meta: dict[str, Any] | None = None) -> None:
    with atomic_path(path) as tmp:
        tmp.mkdir(parents=True)
        save_file({k: v.detach().contiguous().cpu() for k, v in module.state_dict().items()},
                  str(tmp / "model.safetensors"))
        (tmp / "config.json").write_text(
            json.dumps({"kind": kind, "config": config, "meta": meta or {}}, indent=2, sort_keys=True))


def _read(path: str | os.PathLike[str], kind: str) -> dict[str, Any]:
    raw = read_config(path, kind)
    if raw.get("kind") != kind:
        raise ModelFileError(f"{Path(path) / 'config.json'}: holds a {raw.get('kind')!r}, expected a {kind!r}")
    return raw


def save_policy(path, policy: GaussianPolicy, meta=None) -> None:
    save_module(path, policy, "policy", asdict(policy.config), meta)


def load_policy(path, task: str | None = None) -> tuple[GaussianPolicy, dict[str, Any]]:
    """The policy saved at `path`; with `task`, refused unless it was trained for that task."""
    raw = _read(path, "policy")
    policy = build(lambda: GaussianPolicy(PolicyConfig(**{**raw["config"], "cnn": CNNConfig(**raw["config"]["cnn"])})),
                   path, "policy")
    load_weights(policy, path)
    meta = raw.get("meta", {})
    trained_for = meta.get("task")
    # Meta-World accepts names with or without their -v3 suffix: compare without it.
    if task is not None and trained_for is not None and trained_for.removesuffix("-v3") != task.removesuffix("-v3"):
        check_fits(path, "policy", task=(trained_for, task))
    return policy.eval(), meta


def save_classifier(path, clf: SuccessClassifier, meta=None) -> None:
    save_module(path, clf, "success_classifier", asdict(clf.cnn_config), meta)


def load_classifier(path) -> tuple[SuccessClassifier, dict[str, Any]]:
    raw = _read(path, "success_classifier")
    clf = build(lambda: SuccessClassifier(CNNConfig(**raw["config"])), path, "success classifier")
    load_weights(clf, path)
    return clf.eval(), raw.get("meta", {})


def policy_factory(robot: Any, seed: int, path: str, deterministic: bool = False) -> PolicyActor:
    """A picklable PolicyFactory for collection/evaluation: functools.partial(policy_factory, path=...)."""
    policy, _ = load_policy(path, task=getattr(robot, "task", None))
    check_fits(path, "policy", action_dim=(policy.action_dim, len(robot.action_low)))
    return PolicyActor(policy, deterministic=deterministic, seed=seed)
