"""Fast paths for the world model, each one switchable and each one tested against the eager path.

Refinement is bounded by imagined frames per second, and every imagined frame is `steps` U-Net
passes. At these sizes (64 px, a few M parameters) small convolutions and GroupNorm are memory- and
launch-bound (docs/design.md#h100: an eager bf16 U-Net on an H100 makes ~1,800 imagined frames/s, a few
percent of the GPU). What `FastSampler` changes, and why:

- fewer passes over memory: the action conditioning and the context channels of the U-Net input are
  built once per frame, not once per denoising step, and the EDM coefficients of the fixed Karras
  schedule are Python constants (no tiny tensor kernels per step);
- bf16 weights (the frozen model is cast once: no per-call autocast casts) and channels_last, the
  layout tensor-core convolutions want;
- torch.compile: inductor fuses GroupNorm + FiLM scale/shift + SiLU into one pass over the activations
  (the "fewer normalization passes") and the EDM arithmetic into the neighbouring kernels;
- CUDA graphs: the whole sampling loop (all steps) is captured once per batch size and replayed,
  which removes the per-kernel launch cost that dominates small batches.

Outputs equal the eager sampler's (`sample_next_frame`) for the same generator: exactly up to float
rounding in float32, within bf16 tolerance in bfloat16 (tests/test_accel.py). The benchmarks in
benchmarks/bench_world_model.py measure each switch against the eager path side by side.
"""

from __future__ import annotations

import copy
import logging
from dataclasses import dataclass, replace
from types import SimpleNamespace

import torch

from w4rl_core.models.configs import _AUTO, AccelConfig  # noqa: F401 (re-exported; torch-free home)
from w4rl_core.models.sampler import SamplerConfig, edm_integrate, karras_sigmas
from w4rl_core.models.unet import FrameUNet

log = logging.getLogger(__name__)


def cpu_has_native_bf16(cpuinfo: str = "/proc/cpuinfo") -> bool:
    """Whether this CPU computes bf16 natively (AVX512-BF16 or AMX-BF16).

    bf16 is no free win on a CPU: measured 1.4-2x faster than float32 on an AMD EPYC with
    AVX512-BF16, 1.7x slower on an Intel Xeon with avx512f only (emulated conversions). `auto`
    precision asks the processor instead of assuming. Linux only; elsewhere False (float32).
    """
    try:
        with open(cpuinfo) as f:
            for line in f:
                if line.startswith("flags"):
                    flags = set(line.split(":", 1)[1].split())
                    return bool(flags & {"avx512_bf16", "amx_bf16"})
    except OSError:
        pass
    return False


@dataclass(frozen=True)
class ResolvedAccel:
    dtype: torch.dtype
    channels_last: bool
    compile: bool
    compile_mode: str
    compile_backend: str
    cuda_graphs: bool
    data_on_device: bool

    @property
    def label(self) -> str:
        parts = [str(self.dtype).removeprefix("torch.")]
        parts += [name for name in ("channels_last", "compile", "cuda_graphs") if getattr(self, name)]
        if self.compile and self.compile_backend != "inductor":
            parts[parts.index("compile")] = f"compile[{self.compile_backend}]"
        return "+".join(parts)


def resolve_accel(config: AccelConfig, device: torch.device | str) -> ResolvedAccel:
    """AccelConfig.resolve: what `config`'s choices ('auto' included) mean on `device`."""
    device = torch.device(device)
    cuda = device.type == "cuda"

    def pick(value: bool | str) -> bool:
        return cuda if value == _AUTO else bool(value)

    graphs = pick(config.cuda_graphs) and not (config.compile and config.compile_mode == "reduce-overhead")
    if graphs and not cuda:
        raise ValueError(f"accel.cuda_graphs needs a CUDA device; this run is on {device}")
    if config.precision == _AUTO:
        precision = "bfloat16" if cuda or cpu_has_native_bf16() else "float32"
    else:
        precision = config.precision
    return ResolvedAccel(
        dtype=torch.bfloat16 if precision == "bfloat16" else torch.float32,
        channels_last=pick(config.channels_last),
        compile=config.compile,
        compile_mode=config.compile_mode,
        compile_backend=config.compile_backend,
        cuda_graphs=graphs,
        data_on_device=pick(config.data_on_device),
    )


@dataclass(frozen=True)
class _Eval:
    """One U-Net evaluation of the schedule, its EDM coefficients as constants."""

    sigma: float
    c_in: float
    c_skip: float
    c_out: float
    c_noise: float


def _evaluation(denoiser, sigma: float) -> _Eval:
    """The denoiser's own preconditioning (one formula, in float32 as the eager sampler computes it)."""
    c_in, c_out, c_skip, c_noise = (float(c.reshape(-1)[0]) for c in denoiser.precondition(torch.tensor([sigma])))
    return _Eval(sigma=sigma, c_in=c_in, c_skip=c_skip, c_out=c_out, c_noise=c_noise)


class FastSampler:
    """Next-frame sampling with the world model, same contract as `WorldModel.predict`.

    The model given is not changed: a bf16 or channels_last run works on a copy of its network.
    """

    def __init__(self, model, sampler: SamplerConfig, device: torch.device | str, accel: AccelConfig | None = None):
        self.device = torch.device(device)
        self.opts = (accel or AccelConfig()).resolve(self.device)
        net: FrameUNet = model.denoiser.net
        if self.opts.dtype != torch.float32 or self.opts.channels_last:
            net = copy.deepcopy(net)
        net = net.to(self.device, dtype=self.opts.dtype).eval()
        if self.opts.channels_last:
            net = net.to(memory_format=torch.channels_last)
        for p in net.parameters():
            p.requires_grad_(False)
        self.net = net
        self.encoder = model.encoder
        self.sampler = sampler
        # The float32 schedule the eager sampler uses, as Python numbers.
        sigmas = karras_sigmas(sampler).tolist()
        self._sigma0 = sigmas[0]
        d = model.denoiser
        self._steps = [(s, n, _evaluation(d, s), _evaluation(d, n) if sampler.method == "heun" and n > 0 else None)
                       for s, n in zip(sigmas[:-1], sigmas[1:])]
        if self.device.type == "cuda":
            # Shapes are fixed for the whole run: let cuDNN pick the fastest convolution algorithms.
            torch.backends.cudnn.benchmark = True
        self._loop = self._sample_loop
        if self.opts.compile:
            self._loop = torch.compile(self._sample_loop, backend=self.opts.compile_backend,
                                       mode=self.opts.compile_mode, dynamic=False)
        self._graphs: dict[tuple[int, ...], SimpleNamespace] = {}

    @property
    def label(self) -> str:
        return self.opts.label

    def _denoised(self, x: torch.Tensor, e: _Eval, ctx: torch.Tensor, cond: torch.Tensor) -> torch.Tensor:
        """D(x; sigma), clamped to the pixel range (sampler.py says why)."""
        inp = torch.cat([ctx, (e.c_in * x).to(ctx.dtype)], dim=1)
        if self.opts.channels_last:
            inp = inp.contiguous(memory_format=torch.channels_last)
        t = torch.full((x.shape[0],), e.c_noise, device=x.device)
        out = self.net.forward_stacked(inp, t, cond).float()
        return (e.c_skip * x + e.c_out * out).clamp(-1, 1)

    def _sample_loop(self, ctx: torch.Tensor, cond: torch.Tensor, noise: torch.Tensor) -> tuple[torch.Tensor, ...]:
        """The Euler/Heun loop (sampler.edm_integrate, the eager sampler's own) on a prepared input;
        x stays float32. Also returns the first denoised estimate D(x; sigma_max): with the input
        mostly noise it is the model's mean prediction of the next frame, and its distance to the
        sample a free measure of the model's own uncertainty (used by refinement's exploitation guard).
        """
        return edm_integrate(noise * self._sigma0, self._steps, lambda x, e: self._denoised(x, e, ctx, cond))

    @torch.no_grad()
    def __call__(
        self, context: torch.Tensor, actions: torch.Tensor, generator: torch.Generator | None = None
    ) -> torch.Tensor:
        """context (B,T,3,H,W) in [-1,1]; raw actions (B,T,A) -> next frame (B,3,H,W) float32."""
        return self.sample(context, actions, generator)[0]

    @torch.no_grad()
    def sample(
        self, context: torch.Tensor, actions: torch.Tensor, generator: torch.Generator | None = None
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """(next frame, the model's mean prediction of it), both (B,3,H,W) float32 in [-1,1]."""
        b, _, c, h, w = context.shape
        # The same draw, from the same generator, as the eager sampler makes.
        noise = torch.randn(b, c, h, w, device=context.device, generator=generator)
        ctx = context.flatten(1, 2).to(self.opts.dtype)
        cond = self.net.condition(self.encoder.encode(actions).to(self.opts.dtype))
        if self.opts.cuda_graphs:
            try:
                return self._replay(ctx, cond, noise)
            except RuntimeError as err:  # one bounded attempt: capture failed, run without graphs
                log.warning("CUDA graph capture failed (%s); sampling without CUDA graphs", err)
                self.opts = replace(self.opts, cuda_graphs=False)
                self._graphs.clear()
        return self._loop(ctx, cond, noise)

    def _replay(self, ctx: torch.Tensor, cond: torch.Tensor, noise: torch.Tensor) -> tuple[torch.Tensor, ...]:
        key = tuple(ctx.shape)
        g = self._graphs.get(key)
        if g is None:
            g = self._graphs[key] = self._capture(ctx, cond, noise)
        g.ctx.copy_(ctx)
        g.cond.copy_(cond)
        g.noise.copy_(noise)
        g.graph.replay()
        return tuple(o.clone() for o in g.out)  # the graph's output buffers are overwritten by the next replay

    def _capture(self, ctx: torch.Tensor, cond: torch.Tensor, noise: torch.Tensor) -> SimpleNamespace:
        g = SimpleNamespace(ctx=ctx.clone(), cond=cond.clone(), noise=noise.clone(), graph=torch.cuda.CUDAGraph())
        side = torch.cuda.Stream(self.device)
        side.wait_stream(torch.cuda.current_stream(self.device))
        with torch.cuda.stream(side):  # warm-up outside the capture: cuDNN autotuning, compilation
            for _ in range(3):
                self._loop(g.ctx, g.cond, g.noise)
        torch.cuda.current_stream(self.device).wait_stream(side)
        with torch.cuda.graph(g.graph):
            g.out = self._loop(g.ctx, g.cond, g.noise)
        return g
