"""The world model as one object: action encoder + EDM denoiser + sampler, saved as safetensors+JSON.

Checkpoints are never unpickled: weights are safetensors, the configuration is JSON.
"""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any

import torch
from safetensors.torch import save_file

from w4rl_core.atomic import atomic_path
from w4rl_core.models.configs import (  # noqa: F401 (re-exported; torch-free home)
    EDMConfig, SamplerConfig, UNetConfig, WorldModelConfig)
from w4rl_core.models.action_encoding import ActionEncoder, make_action_encoder
from w4rl_core.models.model_files import CONFIG_FILE, WEIGHTS_FILE, ModelFileError, build, load_weights, read_config
from w4rl_core.models.edm import Denoiser
from w4rl_core.models.sampler import sample_next_frame
from w4rl_core.models.unet import FrameUNet

#: Bumped when a checkpoint of the previous layout can no longer be read correctly. 2: Fourier
#: noise embedding, normalised mid-block attention, optional context-noise embedding.
FORMAT_VERSION = 2


class WorldModel(torch.nn.Module):
    """Predicts the next frame from T frames and T actions."""

    def __init__(self, config: WorldModelConfig) -> None:
        super().__init__()
        self.config = config
        self.encoder: ActionEncoder = make_action_encoder(
            config.action_encoding, config.action_low, config.action_high, config.action_bins
        )
        self.denoiser = Denoiser(FrameUNet(config.unet, self.encoder.features), config.edm)

    def encode_actions(self, actions: torch.Tensor) -> torch.Tensor:
        return self.encoder.encode(actions)

    def loss(self, frames: torch.Tensor, actions: torch.Tensor, generator=None,
             shard: tuple[int, int] = (0, 1)) -> tuple[torch.Tensor, dict]:
        """frames (B,T+1,3,H,W) in [-1,1]; raw actions (B,T,A); shard: see Denoiser.forward."""
        return self.denoiser(frames, self.encode_actions(actions), generator, shard)

    @torch.no_grad()
    def predict(
        self,
        context: torch.Tensor,
        actions: torch.Tensor,
        sampler: SamplerConfig | None = None,
        generator: torch.Generator | None = None,
    ) -> torch.Tensor:
        """context (B,T,3,H,W) in [-1,1]; raw actions (B,T,A) -> next frame (B,3,H,W)."""
        return sample_next_frame(
            self.denoiser, context, self.encode_actions(actions), sampler or self.config.sampler, generator
        )


def save_world_model(path: str | os.PathLike[str], model: WorldModel, meta: dict[str, Any] | None = None) -> None:
    """Write config.json + model.safetensors into a directory, atomically."""
    with atomic_path(path) as tmp:
        tmp.mkdir(parents=True)
        state = {k: v.detach().contiguous().cpu() for k, v in model.state_dict().items()}
        save_file(state, str(tmp / WEIGHTS_FILE))
        (tmp / CONFIG_FILE).write_text(
            json.dumps({"format_version": FORMAT_VERSION, "config": model.config.to_dict(), "meta": meta or {}},
                       indent=2, sort_keys=True)
        )


def load_world_model(path: str | os.PathLike[str], device: str | torch.device = "cpu") -> tuple[WorldModel, dict]:
    path = Path(path)
    raw = read_config(path, "world-model")
    if raw.get("format_version") != FORMAT_VERSION:
        raise ModelFileError(
            f"{path / CONFIG_FILE}: world-model format {raw.get('format_version', 1)}, this w4rl reads format "
            f"{FORMAT_VERSION}; retrain it with this version (`dvc repro train_world_model`)"
        )
    model = build(lambda: WorldModel(WorldModelConfig.from_dict(raw["config"])), path, "world model")
    load_weights(model, path)
    return model.to(device).eval(), raw.get("meta", {})
