"""The training configs (params.yaml's world_model.train, world_model.data, policy.train,
reward.train, refine.ppo): plain dataclasses validated at construction, importable without torch
(see w4rl_core/models/configs.py for why). The trainers import them from here and re-export them.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

from w4rl_core.data.stream_config import StreamConfig

SOURCES = ("memory", "stream")  # world_model.data.source
ACTION_LOGPROBS = ("clipped", "gaussian")  # refine.ppo.action_logprob
_DEFAULT_STREAM = StreamConfig()


@dataclass(frozen=True)
class WorldModelDataConfig:
    """params.yaml `world_model.data`. Validated at construction."""

    # memory: every train frame is loaded once and batches are drawn from it (fastest; a resumed
    # run is bit-identical to an uninterrupted one). stream: train windows are read from the stores
    # as training goes, for data that does not fit in memory (a resumed run is not bit-identical).
    source: Literal["memory", "stream"] = "memory"
    # The stream's settings (StreamConfig documents what each costs); unused with source memory.
    shuffle_buffer: int = _DEFAULT_STREAM.shuffle_buffer
    loader_workers: int = _DEFAULT_STREAM.loader_workers
    read_ahead: int = _DEFAULT_STREAM.read_ahead

    def __post_init__(self) -> None:
        if self.source not in SOURCES:
            raise ValueError(f"source must be one of {', '.join(SOURCES)}, got {self.source!r}")
        self.stream_config()  # its own range checks

    def stream_config(self) -> StreamConfig:
        return StreamConfig(self.shuffle_buffer, self.loader_workers, self.read_ahead)


@dataclass(frozen=True)
class WorldModelTrainConfig:
    steps: int = 400  # optimizer steps
    batch_size: int = 32
    lr: float = 1e-4
    warmup_steps: int = 100  # linear learning-rate warm-up from lr/warmup_steps (0 = none)
    weight_decay: float = 1e-2  # on conv/linear weights only (not norms, biases, embeddings)
    ema_decay: float = 0.999
    grad_clip: float = 1.0
    log_every: int = 10  # steps between loss-curve rows
    val_every: int = 100  # steps between validation-loss evaluations
    checkpoint_every: int = 100  # steps between resumable checkpoints (taken at the next logged row)
    seed: int = 0
    device: str = "auto"  # auto | cpu | cuda | cuda:N

    def __post_init__(self) -> None:
        if min(self.steps, self.batch_size, self.log_every, self.val_every, self.checkpoint_every) < 1:
            raise ValueError("steps, batch_size, log_every, val_every and checkpoint_every must be >= 1")
        if not 0 <= self.ema_decay < 1 or self.lr <= 0 or self.grad_clip <= 0:
            raise ValueError("need 0 <= ema_decay < 1, lr > 0, grad_clip > 0")
        if self.warmup_steps < 0 or self.weight_decay < 0:
            raise ValueError("warmup_steps and weight_decay must be >= 0")

    def lr_at(self, step: int) -> float:
        """Learning rate of optimizer step `step` (0-based): linear warm-up, then constant. A function
        of the step alone, so a resumed run follows the same schedule with no scheduler state."""
        if self.warmup_steps == 0:
            return self.lr
        return self.lr * min(1.0, (step + 1) / self.warmup_steps)


@dataclass(frozen=True)
class SupervisedConfig:
    steps: int = 500
    batch_size: int = 64
    lr: float = 3e-4
    weight_decay: float = 1e-4
    augment_shift: int = 2  # random-shift augmentation in pixels (DrQ); 0 = off
    log_every: int = 25
    checkpoint_every: int = 200  # steps between resumable checkpoints (when the caller gives a directory)
    seed: int = 0
    device: str = "auto"

    def __post_init__(self) -> None:
        if min(self.steps, self.batch_size, self.log_every, self.checkpoint_every) < 1:
            raise ValueError("steps, batch_size, log_every and checkpoint_every must be >= 1")
        if self.lr <= 0 or self.augment_shift < 0:
            raise ValueError("need lr > 0 and augment_shift >= 0")


@dataclass(frozen=True)
class PPOConfig:
    iterations: int = 10  # rollout + update cycles
    n_envs: int = 16  # imagined episodes per rollout
    horizon: int = 46  # imagined steps per episode (the refine stage sets episode_len - T)
    epochs: int = 4  # passes over each rollout
    minibatches: int = 4
    lr: float = 1e-4
    gamma: float = 0.99
    gae_lambda: float = 0.95
    clip_coef: float = 0.2
    vf_coef: float = 0.5
    ent_coef: float = 0.0
    bc_coef: float = 0.05  # weight of the expert NLL term that anchors the policy to BC
    bc_batch: int = 64
    max_grad_norm: float = 0.5
    target_kl: float = 0.05  # stop an update early past this approx-KL (0 = never)
    critic_warmup: int = 20  # value-only epochs on the first rollout before the first policy update
    action_logprob: str = "clipped"  # clipped | gaussian: the log-probability PPO's ratio uses
    uncertainty_coef: float = 0.0  # reward penalty per unit of relative uncertainty above the reference
    uncertainty_quantile: float = 0.9  # reference: this quantile of the BC policy's uncertainty
    eval_every: int = 5  # real-robot evaluation every N iterations (0 = never)
    imagined_eval_episodes: int = 32  # like-for-like imagined evaluation of BC and result (0 = none)
    select_by_real: bool = False  # keep the best of BC and the periodic checkpoints by real success
    # > 0: rollouts of this many steps from keyframes (recorded states throughout the episodes), ended
    # at the first success, bootstrapped at the cut by a critic fitted first (critic_warmup epochs) on
    # the real Monte-Carlo success returns of BC's recorded rollouts; 0: whole episodes of `horizon`
    # steps from the recorded starts, the critic warmed up on the first rollout.
    keyframe_horizon: int = 0
    seed: int = 0
    device: str = "auto"

    def __post_init__(self) -> None:
        if min(self.iterations, self.n_envs, self.horizon, self.epochs, self.minibatches) < 1:
            raise ValueError("iterations, n_envs, horizon, epochs, minibatches must be >= 1")
        if not 0 <= self.keyframe_horizon <= self.horizon:
            raise ValueError(f"keyframe_horizon must be in [0, horizon = {self.horizon}], got {self.keyframe_horizon}")
        if self.minibatches > self.n_envs * self.rollout_steps:
            raise ValueError("minibatches must be <= n_envs * rollout steps (keyframe_horizon, or horizon)")
        if not 0 <= self.gamma <= 1 or not 0 <= self.gae_lambda <= 1 or self.clip_coef <= 0:
            raise ValueError("need gamma, gae_lambda in [0, 1] and clip_coef > 0")
        if min(self.bc_coef, self.eval_every, self.critic_warmup, self.uncertainty_coef,
               self.imagined_eval_episodes) < 0:
            raise ValueError("bc_coef, eval_every, critic_warmup, uncertainty_coef, imagined_eval_episodes >= 0")
        if self.action_logprob not in ACTION_LOGPROBS:
            raise ValueError(f"action_logprob must be one of {ACTION_LOGPROBS}, not {self.action_logprob!r}")
        if not 0 < self.uncertainty_quantile <= 1:
            raise ValueError("uncertainty_quantile must be in (0, 1]")

    @property
    def rollout_steps(self) -> int:
        """Imagined steps per rollout: keyframe_horizon when keyframe starts are on, else horizon."""
        return self.keyframe_horizon or self.horizon
