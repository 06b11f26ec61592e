"""The models' configs: plain dataclasses validated at construction, importable without torch.

params.yaml is validated in full (pipelines/params.py) at the start of every stage and CLI process,
and importing torch for that cost ~4 s per process on the 2-core VMs, in stages (validate, gate) and
verbs (promote, registry, lineage) that never touch a tensor. The modules that build the models
(unet, edm, sampler, world_model, accel, policy) import these classes from here and re-export them.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, field
from typing import Any, Literal

ACTION_ENCODINGS = ("two_hot", "one_hot", "linear")  # make_action_encoder's kinds

_AUTO = "auto"
_COMPILE_MODES = ("default", "max-autotune", "max-autotune-no-cudagraphs", "reduce-overhead")
# inductor generates the kernels (what a run wants); aot_eager traces the same graphs (dynamo +
# AOTAutograd, forward and backward) and runs them with eager kernels: torch's own first step for
# telling a tracing problem from a code-generation one, and seconds instead of minutes to compile.
_COMPILE_BACKENDS = ("inductor", "aot_eager")


def _auto_or_bool(name: str, value: Any) -> None:
    if value != _AUTO and not isinstance(value, bool):
        raise ValueError(f"accel.{name} must be true, false or 'auto', not {value!r}")


@dataclass(frozen=True)
class UNetConfig:
    image_size: int = 32
    context_frames: int = 4  # T
    channels: tuple[int, ...] = (32, 32, 64, 64)  # per resolution level (conv-only blocks)
    layers_per_block: int = 1
    norm_groups: int = 8
    context_noise_embedding: bool = False  # condition on the context-noise level (0 at sampling)

    def __post_init__(self) -> None:
        object.__setattr__(self, "channels", tuple(int(c) for c in self.channels))
        if any(c % self.norm_groups for c in self.channels):
            raise ValueError(f"every channel count must be divisible by norm_groups={self.norm_groups}")
        if self.image_size % 2 ** (len(self.channels) - 1):
            raise ValueError(f"image_size {self.image_size} must be divisible by 2^(levels-1)")
        if self.context_frames < 1 or self.layers_per_block < 1:
            raise ValueError("context_frames and layers_per_block must be >= 1")


@dataclass(frozen=True)
class EDMConfig:
    sigma_data: float = 0.5
    p_mean: float = -0.4  # training sigma: ln(sigma) ~ N(p_mean, p_std)
    p_std: float = 1.2
    sigma_min: float = 2e-3
    sigma_max: float = 20.0
    offset_noise: float = 0.3
    context_noise_max: float = 0.1  # context frames get sigma ~ U(0, max) noise during training

    def __post_init__(self) -> None:
        if not 0 < self.sigma_min < self.sigma_max or self.sigma_data <= 0:
            raise ValueError("need 0 < sigma_min < sigma_max and sigma_data > 0")
        if self.offset_noise < 0 or self.context_noise_max < 0 or self.p_std <= 0:
            raise ValueError("offset_noise, context_noise_max must be >= 0 and p_std > 0")


@dataclass(frozen=True)
class SamplerConfig:
    steps: int = 3
    method: Literal["euler", "heun"] = "euler"
    sigma_min: float = 2e-3
    sigma_max: float = 5.0
    rho: float = 7.0

    def __post_init__(self) -> None:
        if self.steps < 1 or self.method not in ("euler", "heun"):
            raise ValueError("steps must be >= 1 and method 'euler' or 'heun'")
        if not 0 < self.sigma_min < self.sigma_max or self.rho <= 0:
            raise ValueError("need 0 < sigma_min < sigma_max and rho > 0")


@dataclass(frozen=True)
class WorldModelConfig:
    action_low: tuple[float, ...]
    action_high: tuple[float, ...]
    unet: UNetConfig = field(default_factory=UNetConfig)
    edm: EDMConfig = field(default_factory=EDMConfig)
    sampler: SamplerConfig = field(default_factory=SamplerConfig)
    action_encoding: str = "two_hot"
    action_bins: int = 21

    def __post_init__(self) -> None:
        object.__setattr__(self, "action_low", tuple(float(v) for v in self.action_low))
        object.__setattr__(self, "action_high", tuple(float(v) for v in self.action_high))
        # The checks make_action_encoder makes (w4rl_core/models/action_encoding.py), without torch.
        if self.action_encoding not in ACTION_ENCODINGS:
            raise ValueError(f"unknown action encoding {self.action_encoding!r}: two_hot, one_hot or linear")
        if len(self.action_low) != len(self.action_high) or not self.action_low or not all(
                lo < hi for lo, hi in zip(self.action_low, self.action_high)):
            raise ValueError(f"action bounds must be 1-D with low < high, got {self.action_low} / {self.action_high}")
        if self.action_encoding != "linear" and self.action_bins < 2:
            raise ValueError(f"bins must be >= 2, got {self.action_bins}")

    @property
    def context_frames(self) -> int:
        return self.unet.context_frames

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> WorldModelConfig:
        return cls(
            **{k: v for k, v in d.items() if k not in ("unet", "edm", "sampler")},
            unet=UNetConfig(**d["unet"]),
            edm=EDMConfig(**d["edm"]),
            sampler=SamplerConfig(**d["sampler"]),
        )


@dataclass(frozen=True)
class AccelConfig:
    """How the world model runs; 'auto' means on for CUDA, off for CPU (docs/params.md), except
    precision: auto is bf16 on CUDA and on CPUs with native bf16, float32 elsewhere."""

    precision: str = _AUTO  # auto | float32 | bfloat16
    channels_last: bool | str = _AUTO
    compile: bool = False  # torch.compile: minutes of compilation, worth it on a GPU run
    compile_mode: str = "default"
    compile_backend: str = "inductor"  # inductor | aot_eager (tracing only, eager kernels)
    cuda_graphs: bool | str = _AUTO
    data_on_device: bool | str = _AUTO  # training: hold the uint8 frames on the device, gather there

    def __post_init__(self) -> None:
        if self.precision not in (_AUTO, "float32", "bfloat16"):
            raise ValueError(f"accel.precision must be auto, float32 or bfloat16, not {self.precision!r}")
        for name in ("channels_last", "cuda_graphs", "data_on_device"):
            _auto_or_bool(name, getattr(self, name))
        if not isinstance(self.compile, bool):
            raise ValueError(f"accel.compile must be true or false, not {self.compile!r}")
        if self.compile_mode not in _COMPILE_MODES:
            raise ValueError(f"accel.compile_mode must be one of {_COMPILE_MODES}, not {self.compile_mode!r}")
        if self.compile_backend not in _COMPILE_BACKENDS:
            raise ValueError(f"accel.compile_backend must be one of {_COMPILE_BACKENDS}, not {self.compile_backend!r}")
        if self.compile_backend != "inductor" and self.compile_mode != "default":
            raise ValueError(f"accel.compile_mode {self.compile_mode!r} is inductor's; with compile_backend "
                             f"{self.compile_backend!r} use default")
        if self.compile and self.compile_mode == "reduce-overhead" and self.cuda_graphs is True:
            raise ValueError("accel: compile_mode reduce-overhead already uses CUDA graphs; set cuda_graphs false")

    def resolve(self, device: Any) -> Any:
        """This config on `device` (a torch.device or its name): w4rl_core.models.accel.ResolvedAccel."""
        from w4rl_core.models.accel import resolve_accel

        return resolve_accel(self, device)


@dataclass(frozen=True)
class CNNConfig:
    image_size: int = 32
    channels: tuple[int, ...] = (16, 32, 64)  # stride-2 conv stages
    hidden: int = 256

    def __post_init__(self) -> None:
        object.__setattr__(self, "channels", tuple(int(c) for c in self.channels))
        if self.image_size < 2 ** len(self.channels) or not self.channels or self.hidden < 1:
            raise ValueError("image_size must allow one stride-2 stage per channel entry; hidden >= 1")
