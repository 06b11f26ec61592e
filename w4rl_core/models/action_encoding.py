"""Action encodings that condition the world model (World4RL's ablation: two-hot wins).

Two-hot (DreamerV3): each action dimension a in [low, high] spreads over K evenly spaced bins
b_1..b_K; for b_k <= a <= b_{k+1}: t[k] = (b_{k+1} - a) / (b_{k+1} - b_k), t[k+1] = (a - b_k) /
(b_{k+1} - b_k), all else 0. The expectation sum_k t[k] b_k returns a exactly: lossless and
differentiable. One-hot (nearest bin) and a linear projection are kept for ablations.
"""

from __future__ import annotations

from typing import Literal

import torch

ActionEncodingKind = Literal["two_hot", "one_hot", "linear"]


class ActionEncoder:
    """Maps actions (..., A) to features (..., A * per_dim). Stateless apart from the bounds."""

    per_dim: int = 1

    def __init__(self, low: torch.Tensor | list[float], high: torch.Tensor | list[float]) -> None:
        self.low = torch.as_tensor(low, dtype=torch.float32)
        self.high = torch.as_tensor(high, dtype=torch.float32)
        if self.low.shape != self.high.shape or self.low.ndim != 1 or not torch.all(self.low < self.high):
            raise ValueError(f"action bounds must be 1-D with low < high, got {self.low} / {self.high}")

    @property
    def action_dim(self) -> int:
        return len(self.low)

    @property
    def features(self) -> int:
        return self.action_dim * self.per_dim

    def _clamp(self, a: torch.Tensor) -> torch.Tensor:
        low, high = self.low.to(a.device), self.high.to(a.device)
        return torch.maximum(torch.minimum(a, high), low)

    def encode(self, a: torch.Tensor) -> torch.Tensor:
        raise NotImplementedError

    def decode(self, e: torch.Tensor) -> torch.Tensor:
        raise NotImplementedError


class _BinnedEncoder(ActionEncoder):
    def __init__(self, low, high, bins: int = 21) -> None:
        super().__init__(low, high)
        if bins < 2:
            raise ValueError(f"bins must be >= 2, got {bins}")
        self.per_dim = bins
        # (A, K) bin centres, evenly spaced per dimension
        steps = torch.linspace(0.0, 1.0, bins)
        self.bins = self.low[:, None] + (self.high - self.low)[:, None] * steps[None, :]

    def decode(self, e: torch.Tensor) -> torch.Tensor:
        """Expectation over bins: exact inverse of two-hot, bin centre for one-hot."""
        weights = e.reshape(*e.shape[:-1], self.action_dim, self.per_dim)
        return (weights * self.bins.to(e.device)).sum(-1)


class TwoHotEncoder(_BinnedEncoder):
    def encode(self, a: torch.Tensor) -> torch.Tensor:
        a = self._clamp(a.float())
        k = self.per_dim
        low, high = self.low.to(a.device), self.high.to(a.device)
        pos = (a - low) / (high - low) * (k - 1)  # fractional bin index in [0, K-1]
        lower = pos.floor().clamp(0, k - 2)  # at a == high, use the last interval with weight 1 on b_K
        upper_w = pos - lower
        out = torch.zeros(*a.shape, k, device=a.device, dtype=a.dtype)
        out.scatter_(-1, lower.long().unsqueeze(-1), (1 - upper_w).unsqueeze(-1))
        out.scatter_add_(-1, (lower.long() + 1).unsqueeze(-1), upper_w.unsqueeze(-1))
        return out.reshape(*a.shape[:-1], self.features)


class OneHotEncoder(_BinnedEncoder):
    def encode(self, a: torch.Tensor) -> torch.Tensor:
        a = self._clamp(a.float())
        low, high = self.low.to(a.device), self.high.to(a.device)
        idx = torch.round((a - low) / (high - low) * (self.per_dim - 1)).long()
        out = torch.nn.functional.one_hot(idx, self.per_dim).to(a.dtype)
        return out.reshape(*a.shape[:-1], self.features)


class LinearEncoder(ActionEncoder):
    """Actions scaled to [-1, 1]; the model's action MLP is then the linear projection."""

    def encode(self, a: torch.Tensor) -> torch.Tensor:
        low, high = self.low.to(a.device), self.high.to(a.device)
        return 2 * (self._clamp(a.float()) - low) / (high - low) - 1

    def decode(self, e: torch.Tensor) -> torch.Tensor:
        low, high = self.low.to(e.device), self.high.to(e.device)
        return (e + 1) / 2 * (high - low) + low


def make_action_encoder(kind: str, low, high, bins: int = 21) -> ActionEncoder:
    if kind == "two_hot":
        return TwoHotEncoder(low, high, bins)
    if kind == "one_hot":
        return OneHotEncoder(low, high, bins)
    if kind == "linear":
        return LinearEncoder(low, high)
    raise ValueError(f"unknown action encoding {kind!r}: two_hot, one_hot or linear")
