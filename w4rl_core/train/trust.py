"""The trust check before refining: does the reward in imagination agree with the robot on BC?

Refinement optimises the success detector on imagined frames. Where that reward disagrees with the
robot, PPO optimises the disagreement (measured: hammer, imagined 1.00 against 0/50 real after
refinement). The pipeline already holds what tells, with no new real interaction: BC's own rollouts
on the robot (the `policy` episodes of collection), of which the world model and the detector never
trained on the held-out split. From those episodes' recorded starts, BC runs in imagination exactly
as it ran on the robot (deterministic or sampled, as collection rolled it), several imagined
episodes per start, and the detector's episode success is compared with the recorded success of
the same episodes. Beyond `tolerance`, refinement of the task does not start: it returns BC, with the
reason in the record. Too few held-out rollouts to tell is a failed check too (`unchecked: stop`)
unless the profile says to refine anyway (smoke scale).
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any

import numpy as np

UNCHECKED = ("stop", "refine")


@dataclass(frozen=True)
class TrustConfig:
    tolerance: float = 0.15  # |imagined - real| success of BC on held-out rollouts beyond this: no refinement
    min_episodes: int = 8  # held-out real BC rollouts needed to tell
    samples_per_start: int = 4  # imagined episodes per recorded start (imagination's own noise averages out)
    unchecked: str = "stop"  # fewer than min_episodes: stop (return BC) or refine anyway (smoke scale)

    def __post_init__(self) -> None:
        if not 0 <= self.tolerance <= 1 or not math.isfinite(self.tolerance):
            raise ValueError(f"tolerance must be in [0, 1], got {self.tolerance}")
        if self.min_episodes < 1 or self.samples_per_start < 1:
            raise ValueError("min_episodes and samples_per_start must be >= 1")
        if self.unchecked not in UNCHECKED:
            raise ValueError(f"unchecked must be one of {UNCHECKED}, not {self.unchecked!r}")


def wilson(successes: int, n: int, z: float = 1.96) -> list[float]:
    """The Wilson score interval of a success rate (how uncertain the real side is with n episodes)."""
    if n == 0:
        return [0.0, 1.0]
    p = successes / n
    centre = (p + z * z / (2 * n)) / (1 + z * z / n)
    half = z * math.sqrt(p * (1 - p) / n + z * z / (4 * n * n)) / (1 + z * z / n)
    return [max(0.0, centre - half), min(1.0, centre + half)]


def trust_verdict(imagined: list[bool], real: list[bool], config: TrustConfig) -> dict[str, Any]:
    """The decision from BC's imagined episode successes (samples_per_start per held-out start) and the
    recorded successes of those held-out real episodes."""
    n = len(real)
    out: dict[str, Any] = {"episodes": n, "imagined_episodes": len(imagined), "tolerance": config.tolerance,
                           "real": float(np.mean(real)) if n else None,
                           "real_ci95": wilson(int(sum(real)), n),
                           "imagined": float(np.mean(imagined)) if imagined else None}
    if n < config.min_episodes or not imagined:
        refine = config.unchecked == "refine"
        return out | {"gap": None, "checked": False, "passed": refine,
                      "reason": f"{n} held-out real BC rollouts, fewer than trust.min_episodes = {config.min_episodes}: "
                                f"agreement unknown; " + ("refining anyway (trust.unchecked: refine)" if refine else
                                                          "refinement not started, BC returned")}
    gap = out["imagined"] - out["real"]
    passed = abs(gap) <= config.tolerance
    verdict = "within" if passed else "beyond"
    reason = (f"BC's imagined success {out['imagined']:.2f} against its real success {out['real']:.2f} on {n} held-out "
              f"rollouts: gap {gap:+.2f} {verdict} the tolerance {config.tolerance:.2f}")
    if not passed:
        reason += "; the reward in imagination disagrees with the robot: refinement not started, BC returned"
    return out | {"gap": gap, "checked": True, "passed": passed, "reason": reason}


def check_trust(policy, env, real: list[bool], horizon: int, config: TrustConfig, deterministic: bool,
                seed: int = 0) -> dict[str, Any]:
    """BC (`policy`) in `env` (an ImaginedEnv whose starts are the held-out rollouts' first frames, in
    order) for `horizon` steps, samples_per_start imagined episodes per start, against `real`, the
    recorded success of each of those rollouts."""
    from w4rl_core.train.ppo import imagined_success

    if env.n_starts != len(real):
        raise ValueError(f"{env.n_starts} imagined starts for {len(real)} real rollouts: they must be the same episodes")
    imagined = (imagined_success(policy, env, env.n_starts * config.samples_per_start, horizon, seed,
                                 deterministic=deterministic) if real else [])
    return trust_verdict(imagined, real, config) | {"deterministic": deterministic}
