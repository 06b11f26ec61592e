"""Data-parallel training with torch.distributed, as launched by `torchrun`.

One process needs nothing: without torchrun's environment (WORLD_SIZE unset or 1) `Ranks` is the
single-process case and every helper is a no-op. Under `torchrun --nproc-per-node N` (and
--nnodes/--rdzv-endpoint for several machines) each process joins the group torchrun describes in
its environment: NCCL on CUDA, gloo on CPU. The rules the training loop follows:

- the global batch is `batch_size` windows whatever the world size; each rank computes its
  1/world part and DDP averages the gradients, so the update is the one-process update;
- every rank draws the global batch's window picks and noise from the same generators and keeps its
  part (w4rl_core.models.edm.Denoiser.forward, FrameWindows.sample), so N ranks train the same
  model as one process up to float summation order (tests/test_distributed.py states the tolerance);
- rank 0 alone writes checkpoints, curves and the model; every rank reads the checkpoint to resume,
  so several nodes need `checkpoint_dir` on a shared filesystem, and a rank that finds a different
  checkpoint than rank 0 stops the run with an error instead of training diverged copies.
"""

from __future__ import annotations

import ctypes
import os
import signal
import sys
from dataclasses import dataclass
from datetime import timedelta

import torch
import torch.distributed as dist


@dataclass(frozen=True)
class Ranks:
    rank: int = 0
    world: int = 1
    local_rank: int = 0

    @property
    def main(self) -> bool:
        return self.rank == 0

    @property
    def distributed(self) -> bool:
        return self.world > 1

    @property
    def shard(self) -> tuple[int, int]:
        return self.rank, self.world


def launched_ranks() -> Ranks:
    """The ranks torchrun put in this process's environment (one process without it)."""
    world = int(os.environ.get("WORLD_SIZE", "1"))
    return Ranks(int(os.environ.get("RANK", "0")), world, int(os.environ.get("LOCAL_RANK", "0")))


def _die_with_the_launcher() -> None:
    """torchrun starts every rank in a session of its own, so a SIGKILL of the launcher's process
    group (a killed `dvc repro`, a cancelled flow run, the kill harness) would leave the ranks
    training, checkpointing and writing outputs on their own, racing the rerun. Linux's parent-death
    signal ties each rank to torchrun; torchrun has no option for it, hence prctl by hand."""
    if sys.platform != "linux":
        return
    pr_set_pdeathsig = 1
    ctypes.CDLL(None, use_errno=True).prctl(pr_set_pdeathsig, signal.SIGKILL)
    if os.getppid() == 1:  # the launcher died before the line above
        os._exit(1)


def init(device_type: str, timeout_s: float = 1800) -> Ranks:
    """Join the process group torchrun set up (idempotent); NCCL for CUDA, gloo otherwise."""
    ranks = launched_ranks()
    if "TORCHELASTIC_RUN_ID" in os.environ:  # under torchrun, whatever the world size
        _die_with_the_launcher()
    if ranks.distributed and not dist.is_initialized():
        backend = "nccl" if device_type == "cuda" else "gloo"
        dist.init_process_group(backend=backend, timeout=timedelta(seconds=timeout_s))
    return ranks


def device_for(device: torch.device, ranks: Ranks) -> torch.device:
    """One GPU per local rank: 'cuda' means this process's own device under torchrun."""
    if ranks.distributed and device.type == "cuda" and device.index is None:
        return torch.device("cuda", ranks.local_rank)
    return device


def mean(value: torch.Tensor, ranks: Ranks) -> torch.Tensor:
    """The mean of a scalar over ranks (the global batch's loss from the ranks' parts)."""
    if not ranks.distributed:
        return value
    out = value.detach().clone()
    dist.all_reduce(out, op=dist.ReduceOp.SUM)
    return out / ranks.world


def check_agree(value: int, what: str, ranks: Ranks, device: torch.device) -> None:
    """Stop every rank if they disagree on an integer (e.g. the step they resume from)."""
    if not ranks.distributed:
        return
    lo = torch.tensor([value], dtype=torch.int64, device=device)  # NCCL reduces device tensors only
    hi = lo.clone()
    dist.all_reduce(lo, op=dist.ReduceOp.MIN)
    dist.all_reduce(hi, op=dist.ReduceOp.MAX)
    if lo.item() != hi.item():
        raise RuntimeError(f"ranks disagree on {what}: rank {ranks.rank} has {value}, the range is "
                           f"{lo.item()}..{hi.item()} (several nodes need the checkpoint directory on a shared "
                           "filesystem)")


def barrier(ranks: Ranks) -> None:
    if ranks.distributed:
        dist.barrier()


def finish(ranks: Ranks) -> None:
    if ranks.distributed and dist.is_initialized():
        dist.destroy_process_group()
