"""The promotion gate: explicit rules over the metric files, one decision record per task.

A rule whose input is missing or malformed fails (with the reason): the gate never promotes on
absent evidence. Rules: world-model fidelity thresholds (shared by every task), refined success at
least BC success + margin; and, at promotion time, no regression against the task's currently
promoted policy (regression_rule).
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass
from typing import Any


@dataclass(frozen=True)
class GateRules:
    min_psnr_mean: float = 0.0  # world model: mean PSNR over the fidelity horizon (dB)
    min_ssim_mean: float = 0.0
    require_beats_copy_last_frame: bool = False  # world model beats the trivial baseline on mean PSNR
    # ... and on full-frame and moving-pixel PSNR at every reported horizon
    require_beats_copy_last_every_horizon: bool = False
    min_uplift: float = 0.0  # per task: refined success - BC success (paired, pooled over seeds) >= this
    min_uplift_ci_low: float | None = None  # per task: lower end of the uplift's 95% interval >= this
    min_overall_uplift: float | None = None  # all tasks pooled: uplift >= this
    min_overall_uplift_ci_low: float | None = None  # all tasks pooled: lower end of its 95% interval >= this
    min_refined_success: float = 0.0  # the promotion candidate's success rate
    regression_margin: float = 0.0  # candidate >= promoted - margin
    min_episodes: int = 1  # evaluation episodes per policy, at least

    def __post_init__(self) -> None:
        if self.min_episodes < 1 or self.regression_margin < 0:
            raise ValueError("min_episodes must be >= 1 and regression_margin >= 0")


def _number(d: Any, *path: str) -> float | None:
    """d[path...] as a finite float, or None when missing/malformed."""
    for key in path:
        if not isinstance(d, dict) or key not in d:
            return None
        d = d[key]
    if isinstance(d, bool) or not isinstance(d, (int, float)) or not math.isfinite(d):
        return None
    return float(d)


def _section(d: Any, *path: str) -> dict[str, Any]:
    """d[path...] when it is a dict, else {} (a malformed section has no keys to read)."""
    for key in path:
        d = d.get(key) if isinstance(d, dict) else None
    return d if isinstance(d, dict) else {}


def _rule(name: str, value: float | None, threshold: float | None, passed: bool | None, what: str) -> dict:
    if value is None:
        return {"rule": name, "passed": False, "value": None, "threshold": threshold,
                "reason": f"{what} is missing or malformed"}
    return {"rule": name, "passed": bool(passed), "value": value, "threshold": threshold,
            "reason": f"{what} = {value:.4g} {'meets' if passed else 'fails'} threshold {threshold}"}


def fidelity_rules(rules: GateRules, fidelity: dict[str, Any] | None) -> list[dict[str, Any]]:
    psnr = _number(fidelity, "model", "psnr", "mean")
    ssim = _number(fidelity, "model", "ssim", "mean")
    out = [
        _rule("fidelity_psnr", psnr, rules.min_psnr_mean, psnr is not None and psnr >= rules.min_psnr_mean,
              "world-model mean PSNR"),
        _rule("fidelity_ssim", ssim, rules.min_ssim_mean, ssim is not None and ssim >= rules.min_ssim_mean,
              "world-model mean SSIM"),
    ]
    if rules.require_beats_copy_last_frame:
        base = _number(fidelity, "copy_last_frame", "psnr", "mean")
        margin = None if psnr is None or base is None else psnr - base
        out.append(_rule("fidelity_beats_copy_last_frame", margin, 0.0, margin is not None and margin > 0,
                         "PSNR margin over copying the last frame"))
    if rules.require_beats_copy_last_every_horizon:
        for metric in ("psnr", "psnr_moving"):
            # Every horizon either side reports: one missing on the model's side fails the rule.
            keys = sorted(set(_section(fidelity, "model", metric)) | set(_section(fidelity, "copy_last_frame", metric))
                          or {"mean"})
            margins = []
            for key in keys:
                m, b = _number(fidelity, "model", metric, key), _number(fidelity, "copy_last_frame", metric, key)
                margins.append(None if m is None or b is None else m - b)
            worst = None if any(v is None for v in margins) else min(margins)
            out.append(_rule(f"fidelity_{metric}_beats_copy_last_every_horizon", worst, 0.0,
                             worst is not None and worst > 0,
                             f"smallest {metric} margin over copying the last frame ({', '.join(keys)})"))
    return out


def overall_rules(rules: GateRules, policy: dict[str, Any] | None) -> list[dict[str, Any]]:
    """Rules on the uplift pooled over all tasks and seeds (shared by every task's decision)."""
    out = []
    if rules.min_overall_uplift is not None:
        v = _number(policy, "overall", "uplift")
        out.append(_rule("overall_uplift", v, rules.min_overall_uplift, v is not None and v >= rules.min_overall_uplift,
                         "pooled paired uplift over BC"))
    if rules.min_overall_uplift_ci_low is not None:
        ci = (policy or {}).get("overall", {}).get("uplift_ci95") if isinstance(policy, dict) else None
        v = _number({"v": ci[0]}, "v") if isinstance(ci, list) and ci else None
        out.append(_rule("overall_uplift_ci_low", v, rules.min_overall_uplift_ci_low,
                         v is not None and v >= rules.min_overall_uplift_ci_low,
                         "lower end of the pooled uplift's 95% interval"))
    return out


def task_rules(rules: GateRules, entry: dict[str, Any] | None) -> list[dict[str, Any]]:
    refined = _number(entry, "candidate", "success_rate")
    n = _number(entry, "refined", "episodes")
    uplift = _number(entry, "uplift")
    out = [
        _rule("evaluation_episodes", n, rules.min_episodes, n is not None and n >= rules.min_episodes,
              "refined evaluation episodes"),
        _rule("refined_success", refined, rules.min_refined_success,
              refined is not None and refined >= rules.min_refined_success, "candidate's success rate"),
        _rule("uplift_over_bc", uplift, rules.min_uplift, uplift is not None and uplift >= rules.min_uplift,
              "refined - BC success (paired, all seeds)"),
    ]
    if rules.min_uplift_ci_low is not None:
        ci = entry.get("uplift_ci95") if isinstance(entry, dict) else None
        low = _number({"v": ci[0]}, "v") if isinstance(ci, list) and ci else None
        out.append(_rule("uplift_ci_low", low, rules.min_uplift_ci_low, low is not None and low >= rules.min_uplift_ci_low,
                         "lower end of the task's uplift 95% interval"))
    return out


def regression_rule(rules: GateRules, entry: dict[str, Any] | None, promoted: float | None) -> dict[str, Any]:
    """The candidate against the task's currently promoted policy. Checked when promoting, not in
    the gate stage: the registry is state outside the DVC graph, and a stage must be a function of
    what it declares."""
    refined = _number(entry, "candidate", "success_rate")
    if promoted is None:
        return {"rule": "non_regression", "passed": True, "value": refined, "threshold": None,
                "reason": "no policy of this task is promoted yet"}
    floor = promoted - rules.regression_margin
    return _rule("non_regression", refined, floor, refined is not None and refined >= floor,
                 f"candidate's success vs promoted {promoted:.4g} - margin")


def decide(
    rules: GateRules,
    fidelity: dict[str, Any] | None,
    policy: dict[str, Any] | None,
    tasks: list[str],
    promoted: dict[str, float] | None = None,
) -> dict[str, Any]:
    """The decision record: inputs, every rule with pass/fail and reason, and a verdict per task.
    With `promoted` (task -> promoted policy's success) the non-regression rule is applied too."""
    shared = fidelity_rules(rules, fidelity) + overall_rules(rules, policy)
    per_task = {}
    for task in tasks:
        entry = policy.get("per_task", {}).get(task) if isinstance(policy, dict) else None
        checks = shared + task_rules(rules, entry)
        if promoted is not None:
            checks.append(regression_rule(rules, entry, promoted.get(task)))
        failed = [c["rule"] for c in checks if not c["passed"]]
        per_task[task] = {"promote": not failed, "failed_rules": failed, "rules": checks}
    return {
        "rules": asdict(rules),
        "inputs_present": {"fidelity": fidelity is not None, "policy": policy is not None},
        "smoke_scale": bool((policy or {}).get("smoke_scale", True)),
        "tasks": per_task,
        "promote_any": any(t["promote"] for t in per_task.values()),
    }
