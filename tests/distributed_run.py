"""Train a small world model on a store, as one process or under torchrun (tests/test_distributed.py).

    python tests/distributed_run.py STORE OUT [--steps N] [--checkpoint-every K]
    python -m torch.distributed.run --standalone --nproc-per-node 2 tests/distributed_run.py STORE OUT
"""

from __future__ import annotations

import argparse
from pathlib import Path

from w4rl_core.data.windows import load_windows
from w4rl_core.models.accel import AccelConfig
from w4rl_core.models.unet import UNetConfig
from w4rl_core.models.world_model import WorldModelConfig
from w4rl_core.train.world_model import WorldModelTrainConfig, train_world_model


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("store")
    ap.add_argument("out", type=Path)
    ap.add_argument("--steps", type=int, default=12)
    ap.add_argument("--checkpoint-every", type=int, default=100)
    a = ap.parse_args()
    train, val = load_windows([a.store], image_size=16, val_fraction=0.25, seed=0)
    model = WorldModelConfig(action_low=train.action_low, action_high=train.action_high,
                             unet=UNetConfig(image_size=16, context_frames=2, channels=(16, 32)))
    config = WorldModelTrainConfig(steps=a.steps, batch_size=8, lr=1e-3, warmup_steps=0, log_every=1,
                                   val_every=a.steps, checkpoint_every=a.checkpoint_every, device="cpu")
    train_world_model(model, config, train, val, a.out / "model", a.out / "checkpoint", a.out / "run",
                      progress=False, accel=AccelConfig(precision="float32"))  # not bf16: see the test's tolerance


if __name__ == "__main__":
    main()
