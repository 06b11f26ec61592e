"""Training the world model: AdamW, EMA weights, gradient clipping, the fast paths of
`w4rl_core.models.accel` (bf16 autocast, channels_last, torch.compile, frames held on the device;
by default on CUDA only), periodic safetensors checkpoints and resume after a kill, seeded, loss
curves and the run summary through DVCLive (w4rl_core/train/tracking.py). Training windows come
from memory or from a stream of the stores (w4rl_core/train/batches.py)."""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import time
from collections.abc import Iterator
from dataclasses import asdict
from typing import Any

import torch
from torch.nn.parallel import DistributedDataParallel
from torch.optim.swa_utils import AveragedModel

from w4rl_core.data.stream import WindowStream
from w4rl_core.data.windows import FrameWindows
from w4rl_core.models.accel import AccelConfig
from w4rl_core.models.world_model import WorldModel, WorldModelConfig, save_world_model
from w4rl_core.progress import progress_bar
from w4rl_core.train import distributed
from w4rl_core.train.batches import Batch, StreamedWindows, memory_batches, streamed_batches
from w4rl_core.train.configs import WorldModelTrainConfig  # noqa: F401 (re-exported; torch-free home)
from w4rl_core.train.checkpoint import load_optimizer, load_state, optimizer_tensors, save_state
from w4rl_core.train.tracking import CurveLog, without_timings


def parameter_groups(model: torch.nn.Module, weight_decay: float) -> list[dict[str, Any]]:
    """AdamW groups: decay conv/linear weights; not norms, biases or embeddings (EDM/DIAMOND practice:
    decaying a norm's gain or an embedding table pulls them towards 0, which is no prior worth having).
    The embeddings here are the noise/context-noise Fourier features (buffers, not trained) and the
    first layer of the action MLP, which maps the two-hot code: a lookup table in linear form."""
    embedding = {id(m.weight) for name, m in model.named_modules() if name.endswith("action_mlp.0")}
    decay, no_decay = [], []
    for p in model.parameters():
        (no_decay if p.ndim < 2 or id(p) in embedding else decay).append(p)
    return [{"params": decay, "weight_decay": weight_decay}, {"params": no_decay, "weight_decay": 0.0}]

@torch.no_grad()
def _ema_update(ema: AveragedModel, model: torch.nn.Module, updates_before: int, decay: float) -> None:
    """EMA whose decay ramps up as (1+n)/(10+n): a short (smoke) run is not dominated by the init.

    Hand-written rather than `ema.update_parameters` with an `avg_fn`: that path reads the device
    counter `n_averaged` on the host (a GPU sync every step) and updates tensor by tensor; here the
    step count is a Python int and the update is one foreach lerp over all tensors. The first update
    copies, as AveragedModel's does. `n_averaged` is kept current for the checkpointed state.
    """
    averaged = list(ema.module.parameters()) + list(ema.module.buffers())
    current = list(model.parameters()) + list(model.buffers())
    if updates_before == 0:
        torch._foreach_copy_(averaged, [c.detach() for c in current])
    else:
        d = min(decay, (1 + updates_before) / (10 + updates_before))
        torch._foreach_lerp_(averaged, [c.detach() for c in current], 1 - d)
    ema.n_averaged += 1


def resolve_device(name: str) -> torch.device:
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    return torch.device(name)


def _fingerprint(*configs: Any) -> str:
    """Identifies what a checkpoint was trained for: resume only into the same run."""
    blob = json.dumps([asdict(c) if hasattr(c, "__dataclass_fields__") else c for c in configs], sort_keys=True)
    return hashlib.sha256(blob.encode()).hexdigest()[:16]


def _data_identity(data: FrameWindows | WindowStream) -> dict[str, Any]:
    """The training data as a checkpoint's fingerprint sees it: its source and size, and for a
    stream its settings (they change the order windows come in, hence the run)."""
    if isinstance(data, FrameWindows):
        return {"source": "memory", "episodes": data.n_episodes, "frames": len(data.rgb)}
    return {"source": "stream", "episodes": data.n_episodes, "frames": data.n_frames, **asdict(data.config)}


@torch.no_grad()
def _init_state(init_from: str | os.PathLike[str] | None,
                model_config: WorldModelConfig) -> dict[str, torch.Tensor] | None:
    """The weights of the saved world model to fine-tune, refused unless its architecture is the
    one being trained (a different one cannot be fine-tuned: train from scratch instead)."""
    if init_from is None:
        return None
    from w4rl_core.models.world_model import load_world_model

    init, _ = load_world_model(init_from)
    if init.config.to_dict() != model_config.to_dict():
        differs = sorted(k for k, v in model_config.to_dict().items() if init.config.to_dict().get(k) != v)
        raise ValueError(f"{init_from}: the world model to fine-tune differs from this one in {differs}; "
                         "fine-tuning needs the same architecture and action bounds (train from scratch instead)")
    return {k: v.detach().clone() for k, v in init.state_dict().items()}


def _state_digest(state: dict[str, torch.Tensor] | None) -> str:
    h = hashlib.sha256()
    for k in sorted(state or {}):
        h.update(k.encode() + state[k].detach().cpu().contiguous().reshape(-1).view(torch.uint8).numpy().tobytes())
    return h.hexdigest()


def validation_loss(model: WorldModel, windows: FrameWindows, batches: int, batch_size: int, device, seed: int = 1234) -> float:
    """Mean loss over fixed batches (fixed windows and noise): comparable across steps."""
    if windows.n_episodes == 0:
        return float("nan")
    g = torch.Generator().manual_seed(seed)
    gd = torch.Generator(device=device).manual_seed(seed)
    t = model.config.context_frames
    losses = []
    for _ in range(batches):
        frames, actions, _ = windows.sample(batch_size, t + 1, g, device)
        loss, _ = model.loss(frames, actions[:, :t], gd)
        losses.append(float(loss))
    return sum(losses) / len(losses)


class Training:
    """Model, EMA, optimizer and generators of one training run, and its optimizer step.

    `train_world_model` drives it with logging, validation and checkpoints; the benchmark
    (benchmarks/bench_world_model.py) times `step` itself, so it measures exactly this step.
    """

    def __init__(self, model_config: WorldModelConfig, config: WorldModelTrainConfig, accel: AccelConfig,
                 ranks: distributed.Ranks | None = None, init_state: dict[str, torch.Tensor] | None = None) -> None:
        self.config = config
        self.ranks = ranks = ranks or distributed.Ranks()
        if config.batch_size % ranks.world:
            raise ValueError(f"world_model.train.batch_size {config.batch_size} (the global batch) does not split "
                             f"over {ranks.world} data-parallel processes")
        self.device = device = distributed.device_for(resolve_device(config.device), ranks)
        self.fast = fast = accel.resolve(device)
        self.mixed = fast.dtype == torch.bfloat16  # bf16 autocast over float32 master weights
        torch.manual_seed(config.seed)
        model = WorldModel(model_config)
        if init_state is not None:  # fine-tuning: the EMA below starts from these weights too
            model.load_state_dict(init_state)
        model = model.to(device)
        if fast.channels_last:  # the layout tensor-core convolutions want
            model = model.to(memory_format=torch.channels_last)
        self.ema = AveragedModel(model, use_buffers=True)
        if fast.compile:  # after the EMA copy; Module.compile keeps state_dict keys (checkpoints) unchanged
            model.denoiser.net.compile(backend=fast.compile_backend, mode=fast.compile_mode)
        self.model = model
        # The loss module: the denoiser, under DDP when data-parallel (it averages the ranks' gradients
        # during backward, bucket by bucket, overlapping the all-reduce with the rest of backward).
        self.denoiser = model.denoiser
        if ranks.distributed:
            self.denoiser = DistributedDataParallel(model.denoiser,
                                                    device_ids=[device.index] if device.type == "cuda" else None)
        # fused AdamW: one kernel for all parameters instead of several per tensor (CUDA only here).
        self.opt = torch.optim.AdamW(parameter_groups(model, config.weight_decay), lr=config.lr,
                                     fused=device.type == "cuda")
        self.batch_gen = torch.Generator().manual_seed(config.seed)
        self.noise_gen = torch.Generator(device=device).manual_seed(config.seed + 1)
        self.t = model_config.context_frames

    def memory_batches(self, windows: FrameWindows) -> Iterator[Batch]:
        """Batches of windows held in memory, drawn with `batch_gen` (checkpointed with the run)."""
        return memory_batches(windows, self.config.batch_size, self.t + 1, self.batch_gen, self.device,
                              self.ranks.shard)

    def window_stream(self, train: StreamedWindows, first_epoch: int = 0) -> WindowStream:
        """This rank's stream of training windows, its order seeded by the run's seed."""
        return train.stream(self.t + 1, self.config.seed, self.ranks.rank, self.ranks.world, first_epoch)

    def stream_batches(self, stream: WindowStream) -> Iterator[Batch]:
        """Batches of streamed windows: this rank's part of the global batch, from its share of the data."""
        return streamed_batches(stream, self.config.batch_size // self.ranks.world, self.device)

    def step(self, batches: Iterator[Batch], updates_before: int) -> tuple[torch.Tensor, torch.Tensor]:
        """One optimizer step on the next batch of `batches` (`memory_batches` or `stream_batches`)
        -> (loss, grad norm) as device tensors (no sync).
        Data-parallel: this rank's part of the global batch and its loss; the update is global."""
        for group in self.opt.param_groups:
            group["lr"] = self.config.lr_at(updates_before)
        frames, actions, _ = next(batches)
        with torch.autocast(device_type=self.device.type, dtype=torch.bfloat16, enabled=self.mixed):
            loss, _ = self.denoiser(frames, self.model.encode_actions(actions[:, : self.t]), self.noise_gen,
                                    self.ranks.shard)
        self.opt.zero_grad(set_to_none=True)
        loss.backward()
        grad_norm = torch.nn.utils.clip_grad_norm_(self.model.parameters(), self.config.grad_clip)
        self.opt.step()
        _ema_update(self.ema, self.model, updates_before, self.config.ema_decay)
        return loss.detach(), grad_norm


def train_world_model(
    model_config: WorldModelConfig,
    config: WorldModelTrainConfig,
    train: FrameWindows | StreamedWindows,
    val: FrameWindows,
    out_dir: str | os.PathLike[str],
    checkpoint_dir: str | os.PathLike[str],
    curve_dir: str | os.PathLike[str],
    meta: dict[str, Any] | None = None,
    progress: bool = True,
    accel: AccelConfig | None = None,
    init_from: str | os.PathLike[str] | None = None,
) -> dict[str, Any]:
    """Train on `train` (windows in memory, or the train split of stores to stream: StreamedWindows),
    validate on `val` (in memory either way), write the EMA model to `out_dir` -> the run summary.
    `init_from`: a saved world model of the same architecture to fine-tune, instead of fresh weights."""
    accel = accel or AccelConfig()
    ranks = distributed.init(resolve_device(config.device).type)  # one process unless under torchrun
    init_state = _init_state(init_from, model_config)
    run = Training(model_config, config, accel, ranks, init_state=init_state)
    model, ema, opt, device = run.model, run.ema, run.opt, run.device
    if run.fast.data_on_device:  # gather windows on the device: no host gather + copy per batch
        val = val.to(device)
        if isinstance(train, FrameWindows):
            train = train.to(device)
    streaming = isinstance(train, StreamedWindows)
    data = run.window_stream(train) if streaming else train  # a stream's index: metadata, no frames yet
    batch_gen, noise_gen = run.batch_gen, run.noise_gen
    # The world size is not part of the run's identity: the global batch, its picks and its noise do
    # not depend on it, so a run killed on N processes resumes on M. (A stream's order does depend on
    # it, but a resumed stream never continues the killed one's order anyway: below.)
    fingerprint = _fingerprint(model_config, config, accel, _data_identity(data),
                               None if init_from is None else _state_digest(init_state))

    step, curve = 0, []
    resumed = load_state(checkpoint_dir)
    if resumed is not None and resumed[1].get("fingerprint") == fingerprint:
        tensors, m = resumed
        model.load_state_dict({k[6:]: v for k, v in tensors.items() if k.startswith("model/")})
        ema.load_state_dict({k[4:]: v for k, v in tensors.items() if k.startswith("ema/")})
        load_optimizer(opt, tensors, m["optimizer"])
        batch_gen.set_state(tensors["rng/batch"])
        noise_gen.set_state(tensors["rng/noise"])
        step, curve = m["step"], m["curve"]
    distributed.check_agree(step, "the step to resume from", ranks, device)
    start_step = step
    if streaming and start_step:
        # The killed run's shuffle buffers and read-ahead are gone, so its stream cannot be picked up
        # where it was: the resumed one starts at the epoch after the one being read, in a new order
        # (weights, optimizer and step are restored). A resumed streaming run is therefore not
        # bit-identical to an uninterrupted one; but a run resumed again and again does not replay
        # the start of epoch 0 each time, which a restarted stream would.
        data = run.window_stream(train, first_epoch=start_step * config.batch_size // data.n_windows + 1)
    batches = run.stream_batches(data) if streaming else run.memory_batches(data)
    # Rank 0 alone writes curves, checkpoints and the model; a resumed run's curve starts as saved.
    log = CurveLog(curve_dir, replay=curve) if ranks.main else None

    def checkpoint() -> None:
        opt_tensors, opt_meta = optimizer_tensors(opt)
        tensors = {f"model/{k}": v for k, v in model.state_dict().items()}
        tensors |= {f"ema/{k}": v for k, v in ema.state_dict().items()}
        tensors |= opt_tensors | {"rng/batch": batch_gen.get_state(), "rng/noise": noise_gen.get_state().cpu()}
        save_state(checkpoint_dir, tensors, {"fingerprint": fingerprint, "step": step, "curve": curve,
                                             "optimizer": opt_meta})

    started = time.perf_counter()
    bar = progress_bar(total=config.steps, initial=step, desc="train world model", unit="step",
                       enabled=progress and ranks.main)
    running, due = [], False
    while step < config.steps:
        loss, grad_norm = run.step(batches, updates_before=step)
        step += 1
        running.append(loss)  # a device tensor: read (one sync) only when a row is logged
        bar.update(1)
        if step % config.log_every == 0 or step == config.steps:
            loss = distributed.mean(torch.stack(running).mean(), ranks)  # the global batch's loss
            row = {"step": step, "loss": float(loss), "grad_norm": float(grad_norm)}
            if ranks.main and (step % config.val_every == 0 or step == config.steps):
                row["val_loss"] = validation_loss(ema.module, val, 2, config.batch_size, device)
            curve.append(row)
            if log is not None:
                log.log(row)
            running = []
            bar.set_postfix(loss=f"{row['loss']:.4f}", refresh=False)  # refresh=True would bypass the rate limit
        # A checkpoint falls on a logged row: the losses averaged into the next row live only in
        # `running` (per rank, unsynchronised), so a checkpoint between two rows would lose them
        # and a resumed curve would differ from the uninterrupted one. When checkpoint_every is
        # not a multiple of log_every, the checkpoint waits for the next row.
        due = due or step % config.checkpoint_every == 0
        if due and not running and step < config.steps:
            due = False
            if ranks.main:
                checkpoint()
    bar.close()
    elapsed = time.perf_counter() - started

    trained_steps = step - start_step
    summary = {
        "steps": step,
        "resumed_from_step": start_step,
        "device": str(device),
        "processes": ranks.world,
        "accel": run.fast.label,
        "parameters": sum(p.numel() for p in model.parameters()),
        "train_samples_per_s": trained_steps * config.batch_size / elapsed if trained_steps else None,
        "final_loss": curve[-1]["loss"] if curve else None,
        "first_loss": curve[0]["loss"] if curve else None,
        "val_loss": next((r["val_loss"] for r in reversed(curve) if "val_loss" in r), None),
        "data_source": "stream" if streaming else "memory",
        "train_episodes": data.n_episodes,
        "val_episodes": val.n_episodes,
    }
    if ranks.main:
        ema_model = ema.module.to(memory_format=torch.contiguous_format)
        save_world_model(out_dir, ema_model, meta={**(meta or {}), "training": without_timings(summary),
                                                   "train_config": asdict(config)})
        log.finish(summary)
        # The final model is in place: the resumable state has served its purpose.
        shutil.rmtree(checkpoint_dir, ignore_errors=True)
    distributed.barrier(ranks)  # no rank reports done before the model is in place
    distributed.finish(ranks)
    return summary
