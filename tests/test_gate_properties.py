"""The gate never promotes on bad evidence (hypothesis): any metric it reads made missing, NaN,
infinite or of the wrong type blocks promotion with a rule that says so; a candidate worse than the
promoted policy on the same scenes by more than the margin, or with its interval wholly below it, is
never promoted; a candidate that is BC, or gains nothing over it, is never promoted as refined; every
decision names its rules."""

from __future__ import annotations

import copy

from hypothesis import given, settings
from hypothesis import strategies as st

from w4rl_core.registry.gate import GateRules, decide

TASK = "door-lock-v3"
ALL_RULES = GateRules(min_psnr_mean=20.0, min_ssim_mean=0.5, require_beats_copy_last_frame=True,
                      require_beats_copy_last_every_horizon=True, min_uplift=0.0, min_uplift_ci_low=-1.0,
                      min_overall_uplift=0.0, min_overall_uplift_ci_low=-1.0, min_refined_success=0.0,
                      regression_margin=0.05, min_episodes=10)


def passing_inputs() -> tuple[dict, dict]:
    per_h = {"h1": 30.0, "h8": 28.0, "mean": 29.0}
    fidelity = {"model": {"psnr": dict(per_h), "psnr_moving": dict(per_h), "ssim": {"mean": 0.9}},
                "copy_last_frame": {"psnr": {k: v - 5 for k, v in per_h.items()},
                                    "psnr_moving": {k: v - 5 for k, v in per_h.items()}}}
    entry = {"bc": {"success_rate": 0.3, "episodes": 20}, "refined": {"success_rate": 0.6, "episodes": 20},
             "scenes": {"episodes_per_policy": 20, "distinct": 20, "overlap_training": 0, "overlap_selection": 0},
             "candidate": {"seed": 0, "success_rate": 0.6, "episodes": 20, "distinct_scenes": 20, "uplift": 0.3,
                           "uplift_ci95": [0.1, 0.5], "selected_iteration": 5},
             "uplift": 0.3, "uplift_ci95": [0.1, 0.5]}
    policy = {"per_task": {TASK: entry}, "overall": {"uplift": 0.3, "uplift_ci95": [0.1, 0.5]}}
    return fidelity, policy


def versus_promoted(diff: float, half: float = 0.1) -> dict:
    """The candidate against the promoted policy on the same scenes (regression_rule's input)."""
    return {"uplift": diff, "ci95": [diff - half, diff + half], "scenes": 20}


# Every value the gate reads, as (which input, path).
READ = [("fidelity", ("model", "psnr", "mean")), ("fidelity", ("model", "ssim", "mean")),
        ("fidelity", ("copy_last_frame", "psnr", "mean")), ("fidelity", ("model", "psnr", "h8")),
        ("fidelity", ("copy_last_frame", "psnr_moving", "h1")), ("fidelity", ("model", "psnr_moving", "mean")),
        ("policy", ("per_task", TASK, "candidate", "success_rate")),
        ("policy", ("per_task", TASK, "candidate", "distinct_scenes")),
        ("policy", ("per_task", TASK, "candidate", "uplift")), ("policy", ("per_task", TASK, "candidate", "uplift_ci95", 0)),
        ("policy", ("per_task", TASK, "candidate", "selected_iteration")),
        ("policy", ("per_task", TASK, "scenes", "overlap_training")),
        ("policy", ("per_task", TASK, "scenes", "overlap_selection")),
        ("policy", ("overall", "uplift")), ("policy", ("overall", "uplift_ci95", 0))]
BAD = st.sampled_from([float("nan"), float("inf"), float("-inf"), None, "0.9", True, [0.9], {"mean": 0.9}, "missing"])


def _corrupt(doc: dict, path: tuple, bad) -> None:
    *parents, last = path
    for key in parents:
        doc = doc[key]
    if bad == "missing":
        if isinstance(doc, list):
            doc.clear()
        else:
            del doc[last]
    else:
        doc[last] = bad


def test_the_passing_inputs_pass():
    fidelity, policy = passing_inputs()
    assert decide(ALL_RULES, fidelity, policy, [TASK], {TASK: versus_promoted(0.0)})["tasks"][TASK]["promote"]


@settings(max_examples=300, deadline=None)
@given(read=st.sampled_from(READ), bad=BAD)
def test_any_bad_metric_blocks_promotion_and_is_named(read, bad):
    fidelity, policy = passing_inputs()
    which, path = read
    _corrupt(fidelity if which == "fidelity" else policy, path, bad)
    decision = decide(ALL_RULES, fidelity, policy, [TASK], {TASK: versus_promoted(0.0)})["tasks"][TASK]
    assert decision["promote"] is False
    failed = [r for r in decision["rules"] if not r["passed"]]
    assert failed and all(r["rule"] in decision["failed_rules"] for r in failed)
    assert any("missing or malformed" in r["reason"] for r in failed), failed


@settings(max_examples=300, deadline=None)
@given(diff=st.floats(-1, 1), half=st.floats(0, 0.5), margin=st.floats(0, 0.5))
def test_a_candidate_worse_than_promoted_on_the_same_scenes_is_never_promoted(diff, half, margin):
    fidelity, policy = passing_inputs()
    rules = GateRules(**{**ALL_RULES.__dict__, "regression_margin": margin})
    decision = decide(rules, fidelity, policy, [TASK], {TASK: versus_promoted(diff, half)})["tasks"][TASK]
    if diff < -margin or diff + half < 0:  # worse beyond the margin, or surely worse
        assert not decision["promote"] and "non_regression" in decision["failed_rules"]
    else:
        assert "non_regression" not in decision["failed_rules"]


@settings(max_examples=100, deadline=None)
@given(iteration=st.integers(0, 50), uplift=st.floats(-1, 1), task_uplift=st.floats(-1, 1))
def test_bc_or_no_gain_is_never_promoted_as_refined_whatever_the_other_seeds_did(iteration, uplift, task_uplift):
    fidelity, policy = passing_inputs()
    entry = policy["per_task"][TASK]
    entry["candidate"] |= {"selected_iteration": iteration, "uplift": uplift, "uplift_ci95": [uplift - 0.1, uplift + 0.1]}
    entry["uplift"] = task_uplift  # all seeds pooled: not the candidate's own figure
    rules = GateRules(**{**ALL_RULES.__dict__, "min_uplift": -1.0, "min_uplift_ci_low": None})
    decision = decide(rules, fidelity, policy, [TASK])["tasks"][TASK]
    if iteration == 0 or uplift <= 0:
        assert not decision["promote"] and decision["failed_rules"] == ["refinement_gave_something"]
        assert decision["decision"].startswith("refinement gave nothing: BC kept")
    else:
        assert decision["promote"], decision["failed_rules"]


@settings(max_examples=50, deadline=None)
@given(training=st.integers(0, 5), selection=st.integers(0, 5))
def test_evaluation_scenes_shared_with_training_or_selection_block_promotion(training, selection):
    fidelity, policy = passing_inputs()
    policy["per_task"][TASK]["scenes"] |= {"overlap_training": training, "overlap_selection": selection}
    decision = decide(ALL_RULES, fidelity, policy, [TASK])["tasks"][TASK]
    assert decision["promote"] is (training + selection == 0)


@settings(max_examples=200, deadline=None)
@given(drop=st.lists(st.sampled_from([r for _, r in READ]), max_size=4),
       promoted=st.one_of(st.none(), st.floats(-1, 1)))
def test_every_decision_names_its_rules_and_follows_them(drop, promoted):
    fidelity, policy = passing_inputs()
    for path in drop:
        which = "fidelity" if path[0] in ("model", "copy_last_frame") else "policy"
        try:
            _corrupt(fidelity if which == "fidelity" else policy, path, float("nan"))
        except (KeyError, IndexError):
            pass
    record = decide(ALL_RULES, copy.deepcopy(fidelity), policy, [TASK],
                    {} if promoted is None else {TASK: versus_promoted(promoted)})
    task = record["tasks"][TASK]
    assert all({"rule", "passed", "value", "threshold", "reason"} <= set(r) for r in task["rules"])
    assert task["promote"] == all(r["passed"] for r in task["rules"]) == (not task["failed_rules"])
    assert record["promote_any"] == task["promote"]
