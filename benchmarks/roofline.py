#!/usr/bin/env python
"""Roofline estimate for imagination: FLOPs and bytes per imagined frame, and the frames/s ceiling
they imply on a GPU.

    .venv/bin/python benchmarks/roofline.py                 # profiles/gpu.yaml's U-Net (64 px, 17.9M params)
    .venv/bin/python benchmarks/roofline.py --channels 32,64,64,128 --layers-per-block 1   # 3.2M, the baseline size

FLOPs: torch.utils.flop_counter on one U-Net pass (convolutions and matmuls; the elementwise work of
GroupNorm, SiLU and FiLM is counted separately, it is small in FLOPs but not in bytes). Bytes, in
bf16 (2 bytes per element), two bounds:
  unfused: every leaf module (conv, GroupNorm, SiLU, linear) reads its input and writes its output,
           as eager PyTorch does; a lower bound, since the functional ops between modules (FiLM
           scale/shift, residual adds, skip concatenations) make further passes;
  fused:   only convolutions read and write activations (norm, activation, FiLM and residual folded
           into the convolutions' prologue/epilogue, the best a compiler can do here).
Weights are read once per batched pass, so per frame they are divided by the batch size.
Peak numbers default to an H100 SXM (989 dense bf16 TFLOP/s, 3.35 TB/s HBM3); pass others.
Prints one table and appends it, with machine, date and command, to benchmarks/results.md.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

import torch
from torch.utils.flop_counter import FlopCounterMode

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from benchmarks.bench_data import append_results  # noqa: E402
from benchmarks.bench_world_model import add_model_args, model_config  # noqa: E402
from w4rl_core.models.unet import FrameUNet  # noqa: E402
from w4rl_core.models.world_model import WorldModel  # noqa: E402

BYTES = 2  # bf16


def measure(net: FrameUNet, batch: int, t: int, size: int, action_features: int) -> dict[str, float]:
    """FLOPs and activation bytes of one U-Net pass over `batch` frames."""
    x = torch.randn(batch, 3, size, size)
    context = torch.randn(batch, t, 3, size, size)
    actions = torch.randn(batch, t, action_features)
    c_noise = torch.zeros(batch)
    unfused = fused = elementwise = 0

    def numel(v) -> int:
        if isinstance(v, torch.Tensor):
            return v.numel()
        if isinstance(v, (tuple, list)):
            return sum(numel(u) for u in v)
        return 0

    def hook(module, inputs, output):
        nonlocal unfused, fused, elementwise
        n_in, n_out = numel(inputs), numel(output)
        unfused += n_in + n_out
        if isinstance(module, torch.nn.Conv2d):
            fused += n_in + n_out
        if isinstance(module, (torch.nn.GroupNorm, torch.nn.SiLU)):
            elementwise += 8 * n_out if isinstance(module, torch.nn.GroupNorm) else 4 * n_out

    handles = [m.register_forward_hook(hook) for m in net.modules() if not list(m.children())]
    counter = FlopCounterMode(display=False)
    with torch.no_grad(), counter:
        net(x, c_noise, context, actions)
    for h in handles:
        h.remove()
    return {"flops": counter.get_total_flops() / batch, "elementwise": elementwise / batch,
            "unfused_bytes": unfused * BYTES / batch, "fused_bytes": fused * BYTES / batch}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    add_model_args(parser, image_size=64, channels="64,128,128,256", layers_per_block=2, norm_groups=32)
    parser.add_argument("--steps", type=int, default=3, help="Euler steps per imagined frame")
    parser.add_argument("--batch", type=int, default=1024, help="frames per batched U-Net pass (weights amortized)")
    parser.add_argument("--peak-tflops", type=float, default=989.0, help="dense bf16 TFLOP/s (H100 SXM)")
    parser.add_argument("--bandwidth-tbs", type=float, default=3.35, help="memory TB/s (H100 SXM HBM3)")
    parser.add_argument("--no-append", action="store_true")
    args = parser.parse_args()

    cfg = model_config(args)
    channels = cfg.unet.channels
    model = WorldModel(cfg).eval()
    net = model.denoiser.net
    params = sum(p.numel() for p in net.parameters())
    m = measure(net, 2, cfg.context_frames, args.image_size, model.encoder.features)
    s = args.steps
    weight_bytes = params * BYTES / args.batch
    flops = s * (m["flops"] + m["elementwise"])
    unfused = s * (m["unfused_bytes"] + weight_bytes)
    fused = s * (m["fused_bytes"] + weight_bytes)
    peak, bw = args.peak_tflops * 1e12, args.bandwidth_tbs * 1e12
    ridge = peak / bw

    def ceiling(nbytes: float) -> float:
        return min(peak / flops, bw / nbytes)

    label = f"{args.image_size}px, channels {channels}, {args.layers_per_block} layers/block, {params / 1e6:.2f}M params"
    rows = [
        (f"U-Net {label}", f"{s} Euler steps per imagined frame; batch {args.batch}"),
        ("FLOPs per imagined frame (conv + matmul)", f"{s * m['flops'] / 1e9:.2f} GFLOP"),
        ("  + elementwise (GroupNorm, SiLU)", f"{s * m['elementwise'] / 1e9:.3f} GFLOP"),
        ("bytes per imagined frame, unfused (eager)", f"{unfused / 1e6:.1f} MB → {flops / unfused:.0f} FLOP/byte"),
        ("bytes per imagined frame, fused (compiler's best)", f"{fused / 1e6:.1f} MB → {flops / fused:.0f} FLOP/byte"),
        (f"ridge point at {args.peak_tflops:.0f} TFLOP/s, {args.bandwidth_tbs} TB/s", f"{ridge:.0f} FLOP/byte"),
        ("ceiling, compute-bound", f"{peak / flops:,.0f} frames/s"),
        ("ceiling, unfused bytes", f"{ceiling(unfused):,.0f} frames/s"),
        ("ceiling, fused bytes", f"{ceiling(fused):,.0f} frames/s"),
    ]
    append_results("roofline", rows, args.no_append)


if __name__ == "__main__":
    main()
