"""The promotion gate: explicit rules over the metric files, one decision record per task.

A rule whose input is missing or malformed fails (with the reason): the gate never promotes on
absent evidence. Every per-task rule reads the policy it would promote (the task's candidate seed):
its own distinct evaluation scenes (none of them a training or selection scene), its success, its
paired uplift over BC on the same scenes and that uplift's interval; a candidate that is BC's own
weights, or gains nothing over BC, is refused ("refinement gave nothing: BC kept"). World-model
fidelity thresholds and the optional pooled-uplift rules (over every task and seed: the method, not
one policy) are shared by every task. At promotion time the candidate is compared with the task's
promoted policy on the same scenes, with an interval (regression_rule).
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
    min_uplift: float = 0.0  # per task: the candidate's own paired uplift over BC (its evaluation scenes) >= this
    min_uplift_ci_low: float | None = None  # per task: lower end of the candidate's uplift interval >= this
    # The method, not the candidate: every task and seed pooled. A guard that can only refuse (a task
    # whose candidate passes is still refused while refinement as a whole falls short).
    min_overall_uplift: float | None = None  # all tasks and seeds pooled: uplift >= this
    min_overall_uplift_ci_low: float | None = None  # all tasks and seeds pooled: lower end of its 95% interval >= this
    min_refined_success: float = 0.0  # the promotion candidate's success rate
    regression_margin: float = 0.0  # candidate >= promoted - margin
    min_episodes: int = 1  # distinct evaluation scenes of the candidate, at least
    # A candidate that is BC's weights or gains nothing over BC is not promoted as refined. False
    # only for smoke tests of the promotion mechanics (Params refuses it outside smoke scale).
    require_refinement_gain: bool = True
    # The data flywheel: refuse every task when the evaluation episodes fed back into this round's
    # training data drifted from the policy episodes already there (Evidently's dataset drift test).
    # Off by default: the drift is named in every decision either way.
    refuse_on_drift: bool = False

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


def drift_rule(rules: GateRules, drift: dict[str, Any] | None) -> dict[str, Any]:
    """The drift of the task's episodes the flywheel fed back into this round's training data (the
    previous round's manifest: pipelines/stages/flywheel.py), named in the task's decision."""
    rule = {"rule": "data_drift", "threshold": None, "value": None}
    if drift is None:
        return rule | {"passed": True, "reason": "no data fed back into this round (flywheel round 0)"}
    if not isinstance(drift, dict) or "dataset_drift" not in drift:
        return rule | {"passed": False, "reason": "the fed-back data's drift summary is missing or malformed"}
    if drift["dataset_drift"] is None:
        return rule | {"passed": True, "reason": "fed-back episodes not checked for drift (no policy episodes "
                                                 "to compare them with)"}
    columns = ", ".join(drift.get("drifted") or []) or "none"
    value = drift.get("drifted_share")
    if not drift["dataset_drift"]:
        return rule | {"passed": True, "value": value,
                       "reason": f"fed-back episodes: no dataset drift (drifted columns: {columns})"}
    return rule | {"passed": not rules.refuse_on_drift, "value": value,
                   "reason": f"fed-back episodes drifted from the policy episodes in training (drifted columns: "
                             f"{columns}; {drift.get('dataset_test')}; report {drift.get('report')})"
                             + ("" if rules.refuse_on_drift else "; gate.refuse_on_drift is off")}


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


NOT_EVALUATED = "not evaluated on a robot: not promotable"


def task_rules(rules: GateRules, entry: dict[str, Any] | None) -> list[dict[str, Any]]:
    """Rules on the task's promotion candidate, from its own evaluation (`entry["candidate"]`)."""
    if isinstance(entry, dict) and "not_evaluated" in entry:  # no robot ran it: nothing else to check
        return [{"rule": "evaluated_on_robot", "passed": False, "value": None, "threshold": None,
                 "reason": f"{NOT_EVALUATED} ({entry['not_evaluated']})"}]
    scenes = _number(entry, "candidate", "distinct_scenes")
    training, selection = _number(entry, "scenes", "overlap_training"), _number(entry, "scenes", "overlap_selection")
    leaks = None if training is None or selection is None else training + selection
    success = _number(entry, "candidate", "success_rate")
    uplift = _number(entry, "candidate", "uplift")
    out = [
        _rule("evaluation_scenes", scenes, rules.min_episodes, scenes is not None and scenes >= rules.min_episodes,
              "candidate's distinct evaluation scenes"),
        _rule("unseen_scenes", leaks, 0, leaks == 0, "evaluation scenes that are training or selection scenes"),
        _rule("refined_success", success, rules.min_refined_success,
              success is not None and success >= rules.min_refined_success, "candidate's success rate"),
        _rule("uplift_over_bc", uplift, rules.min_uplift, uplift is not None and uplift >= rules.min_uplift,
              "candidate's paired uplift over BC on the same scenes"),
        gave_something_rule(entry, rules.require_refinement_gain),
    ]
    if rules.min_uplift_ci_low is not None:
        ci = _section(entry, "candidate").get("uplift_ci95")
        low = _number({"v": ci[0]}, "v") if isinstance(ci, list) and ci else None
        out.append(_rule("uplift_ci_low", low, rules.min_uplift_ci_low, low is not None and low >= rules.min_uplift_ci_low,
                         "lower end of the candidate's uplift 95% interval"))
    return out


def gave_something_rule(entry: dict[str, Any] | None, required: bool = True) -> dict[str, Any]:
    """A 'refined' policy that is BC (refinement returned BC's weights, iteration 0) or that is no
    better than BC on the evaluation scenes is not promoted as refined: BC stays what it was."""
    iteration = _number(entry, "candidate", "selected_iteration")
    uplift = _number(entry, "candidate", "uplift")
    rule = {"rule": "refinement_gave_something", "value": uplift, "threshold": 0.0}
    trust = (entry or {}).get("trust") or {}
    stopped = f"refinement did not start: {trust['reason']}" if trust.get("passed") is False else None
    if not required:
        gained = iteration not in (None, 0) and uplift is not None and uplift > 0
        return rule | {"passed": True, "reason": "not required (gate.require_refinement_gain: false, smoke scale): "
                                                 + ("candidate gains over BC" if gained else stopped or
                                                    "refinement gave nothing")}
    if iteration is None or uplift is None:
        return rule | {"passed": False, "reason": "candidate's selected_iteration or uplift is missing or malformed"}
    if iteration == 0:
        return rule | {"passed": False, "reason": "refinement gave nothing: BC kept ("
                                                  + (stopped or "the candidate is BC's own weights") + ")"}
    if uplift <= 0:
        return rule | {"passed": False, "reason": f"refinement gave nothing: BC kept (candidate's uplift over BC is "
                                                  f"{uplift:.4g} on the evaluation scenes)"}
    return rule | {"passed": True, "reason": f"candidate (iteration {iteration:.0f}) gains {uplift:.4g} over BC"}


def regression_rule(rules: GateRules, comparison: dict[str, Any] | None) -> dict[str, Any]:
    """The candidate against the task's currently promoted policy, both run on the candidate's
    evaluation scenes: `comparison` is their paired difference (candidate - promoted) with its
    interval (w4rl_core.eval.intervals.paired_interval), None when nothing is promoted. Fails when
    the candidate is worse by more than the margin, or worse with its whole interval below 0.
    Checked when promoting, not in the gate stage: the registry is state outside the DVC graph,
    and a stage must be a function of what it declares."""
    if comparison is None:
        return {"rule": "non_regression", "passed": True, "value": None, "threshold": None,
                "reason": "no policy of this task is promoted yet"}
    diff = _number(comparison, "uplift")
    ci = comparison.get("ci95") if isinstance(comparison, dict) else None
    high = _number({"v": ci[1]}, "v") if isinstance(ci, list) and len(ci) == 2 else None
    floor = -rules.regression_margin
    if diff is None or high is None:
        return _rule("non_regression", None, floor, False, "candidate - promoted success on the same scenes")
    passed = diff >= floor and high >= 0
    verdict = "meets" if passed else ("fails" if diff < floor else "fails (interval wholly below 0)")
    return {"rule": "non_regression", "passed": passed, "value": diff, "threshold": floor,
            "ci95": [float(v) for v in ci], "scenes": comparison.get("scenes"),
            "reason": f"candidate - promoted success on the same {comparison.get('scenes')} scenes = {diff:.4g} "
                      f"[{ci[0]:.3g}, {ci[1]:.3g}] {verdict} threshold {floor}"}


def summary(checks: list[dict[str, Any]]) -> str:
    """One line for people: promoted, or the first reason it is not."""
    failed = [c for c in checks if not c["passed"]]
    if not failed:
        return "promote: every rule holds"
    for first in ("evaluated_on_robot", "refinement_gave_something"):  # the reasons that explain all others
        named = next((c for c in failed if c["rule"] == first), None)
        if named is not None:
            return named["reason"]
    return f"not promoted: {failed[0]['reason']}" + (f" (and {len(failed) - 1} more)" if len(failed) > 1 else "")


def decide(
    rules: GateRules,
    fidelity: dict[str, Any] | None,
    policy: dict[str, Any] | None,
    tasks: list[str],
    promoted: dict[str, dict[str, Any] | None] | None = None,
    drift: dict[str, Any] | None = None,
) -> dict[str, Any]:
    """The decision record: inputs, every rule with pass/fail and reason, and a verdict per task.
    With `promoted` (task -> the candidate's comparison with the promoted policy, see
    regression_rule) the non-regression rule is applied too; `drift` maps each task to its fed-back
    data's drift summary (drift_rule), None when nothing was fed back."""
    shared = fidelity_rules(rules, fidelity) + overall_rules(rules, policy)
    per_task = {}
    for task in tasks:
        entry = policy.get("per_task", {}).get(task) if isinstance(policy, dict) else None
        checks = shared + [drift_rule(rules, None if drift is None else drift.get(task, {}))] + task_rules(rules, entry)
        if promoted is not None:
            checks.append(regression_rule(rules, promoted.get(task)))
        failed = [c["rule"] for c in checks if not c["passed"]]
        per_task[task] = {"promote": not failed, "failed_rules": failed, "rules": checks,
                          "decision": summary(checks)}
    return {
        "rules": asdict(rules),
        "inputs_present": {"fidelity": fidelity is not None, "policy": policy is not None},
        "smoke_scale": bool((policy or {}).get("smoke_scale", True)),
        "tasks": per_task,
        "promote_any": any(t["promote"] for t in per_task.values()),
    }
