"""Uplift intervals that respect the crossed seeds x scenes design (w4rl_core/eval/intervals.py)."""

import json
import statistics
import time

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from w4rl_core.eval.intervals import (TaskOutcomes, _replicates, paired_interval, pooled_interval,
                                      seed_interval, task_interval)

FAST = {"resamples": 300}  # hypothesis examples: properties hold for any resample count


def scenes(n, prefix="s"):
    return tuple(f"{prefix}{j}" for j in range(n))


def uplift_task(name, rates, n_scenes=25):
    """BC fails everywhere; seed i succeeds on the first rates[i] * n_scenes scenes (nested successes)."""
    bc = (False,) * n_scenes
    refined = {i: tuple(j < round(r * n_scenes) for j in range(n_scenes)) for i, r in enumerate(rates)}
    return TaskOutcomes(name, scenes(n_scenes), bc, refined)


def complement(t, name=None):
    """Success <-> failure for every policy: every d changes sign (the swap, for several seeds)."""
    return TaskOutcomes(name or t.task, t.scenes, tuple(not x for x in t.bc),
                        {s: tuple(not x for x in out) for s, out in t.refined.items()})


def width(r):
    return r["ci"][1] - r["ci"][0]


@st.composite
def task_outcomes(draw, name="t", max_seeds=4, max_scenes=12):
    n_seeds = draw(st.integers(1, max_seeds))
    n_scenes = draw(st.integers(1, max_scenes))
    bools = st.lists(st.booleans(), min_size=n_scenes, max_size=n_scenes).map(tuple)
    seeds = draw(st.lists(st.integers(0, 1000), min_size=n_seeds, max_size=n_seeds, unique=True))
    return TaskOutcomes(name, scenes(n_scenes), draw(bools), {s: draw(bools) for s in seeds})


def disagree(t):
    """Some seed's mean differs from another's, or some seed's d varies over scenes."""
    d = t.differences()
    return bool(np.ptp(d.mean(axis=1)) > 0 or (np.ptp(d, axis=1) > 0).any())


def paired_uplift(base: list[bool], other: list[bool]) -> dict:
    """The interval the pipeline reported before (every pair an independent draw, normal
    approximation): the naive reference the clustered intervals are compared with."""
    d = np.asarray(other, float) - np.asarray(base, float)
    half = 1.96 * d.std(ddof=1) / np.sqrt(len(d))
    return {"uplift": float(d.mean()), "uplift_ci95": [d.mean() - half, d.mean() + half]}


# (a) seed uplifts 0.32, 0.20, 0 on 25 scenes: the crossed interval is far wider than independent pairs.
def test_three_seeds_wider_than_independent_pairs():
    t = uplift_task("reach", [0.32, 0.20, 0.0])
    r = task_interval(t)
    pairs_bc = list(t.bc) * 3
    pairs_refined = [x for out in t.refined.values() for x in out]
    naive = paired_uplift(pairs_bc, pairs_refined)
    naive_width = naive["uplift_ci95"][1] - naive["uplift_ci95"][0]
    assert r["uplift"] == pytest.approx(naive["uplift"]) == pytest.approx(13 / 75)
    assert width(r) > 1.8 * naive_width  # ~2.2x: one seed in three did nothing
    assert r["ci"][0] <= 0.0 < r["ci"][1]  # resampling the null seed three times is 1/27 > 2.5 %
    assert r["method"].startswith("crossed bootstrap over 3 seeds x 25 scenes")
    assert r["seed_variation_estimable"] and r["warning"] is None and r["note"] is None
    assert (r["seeds"], r["scenes"], r["pairs"], r["pairs_refined_only"], r["pairs_bc_only"]) == (3, 25, 75, 13, 0)


def test_six_seed_example_pooled_over_two_tasks():
    # The motivating six (task, seed) uplifts 0.32, 0.20, 0, 0, 0, 0: independent pairs said [+0.038, +0.135].
    r = pooled_interval([uplift_task("a", [0.32, 0.20, 0.0]), uplift_task("b", [0.0, 0.0, 0.0])])
    assert r["uplift"] == pytest.approx(13 / 150)
    assert r["ci"][0] <= 0.0 and width(r) > 1.5 * (0.135 - 0.038)
    assert r["tasks"] == 2 and r["seeds"] == 6 and r["scenes"] == 50


# (b) no discordant pair: [0, 0] and a note.
def test_all_differences_zero():
    t = uplift_task("push", [0.0, 0.0, 0.0])
    for r in (task_interval(t), pooled_interval([t]), seed_interval(t, 1),
              paired_interval(t.bc, t.bc, t.scenes)):
        assert r["uplift"] == 0.0 and r["ci"] == [0.0, 0.0] == r["ci95"]
        assert "no discordant pair" in r["note"]
        json.dumps(r)


def test_constant_nonzero_difference_is_a_point_with_a_note():
    r = task_interval(uplift_task("push", [1.0, 1.0]))
    assert r["ci"] == [1.0, 1.0] and "constant" in r["note"] and r["pairs_refined_only"] == 50


def test_one_seed_is_the_scene_bootstrap_and_warns():
    t = uplift_task("reach", [0.32])
    r = task_interval(t, resamples=2000, rng_seed=3)
    assert not r["seed_variation_estimable"] and "seed variation not estimable" in r["method"]
    assert "'reach'" in r["warning"]
    s = seed_interval(t, 0, resamples=2000, rng_seed=3)
    assert s["ci"] == r["ci"] and s["warning"] is None  # same draws: the same scene bootstrap
    p = pooled_interval([t, uplift_task("push", [0.1, 0.2])], resamples=500)
    assert not p["seed_variation_estimable"] and "'reach'" in p["warning"] and "'push'" not in p["warning"]


def test_level_and_keys():
    t = uplift_task("reach", [0.32, 0.2, 0.0])
    r95, r80 = task_interval(t), task_interval(t, level=0.8)
    assert r95["ci95"] == r95["ci"] and r95["level"] == 0.95
    assert "ci95" not in r80 and r80["level"] == 0.8 and width(r80) < width(r95)
    keys = {"uplift", "ci", "level", "method", "seeds", "scenes", "pairs", "pairs_refined_only",
            "pairs_bc_only", "seed_variation_estimable", "warning", "note", "resamples", "rng_seed",
            "se", "variance_parts"}
    for r in (r80, seed_interval(t, 0), paired_interval(t.bc, t.refined[0], t.scenes), pooled_interval([t])):
        assert keys <= set(r) and "10000 resamples" in r["method"]
        json.loads(json.dumps(r))
    with pytest.raises(ValueError, match="level"):
        task_interval(t, level=1.0)
    with pytest.raises(ValueError, match="resamples"):
        task_interval(t, resamples=0)


def test_deterministic_for_a_given_rng_seed():
    t = uplift_task("reach", [0.32, 0.2, 0.04])
    assert task_interval(t, rng_seed=7) == task_interval(t, rng_seed=7)
    assert task_interval(t, rng_seed=7)["rng_seed"] == 7


def test_degenerate_percentile_falls_back_to_normal_with_closed_form_se():
    # One discordant pair in 40 scenes: the replicate's count of it is ~Binomial(40, 1/40), whose
    # 40 % .. 60 % quantiles are both 1, i.e. exactly the estimate: the percentile interval is a point.
    n = 40
    bc = (False,) * n
    r = paired_interval(bc, (True,) + bc[1:], scenes(n), level=0.2, resamples=2000)
    assert "normal interval" in r["method"]
    z = statistics.NormalDist().inv_cdf(0.6)
    se = np.sqrt(np.var([1] + [0] * (n - 1)) / n)  # ideal bootstrap s.e. of a mean of n values
    assert r["se"] == pytest.approx(se)
    assert r["ci"] == pytest.approx([max(-1.0, 1 / n - z * se), 1 / n + z * se])


def test_closed_form_se_matches_the_bootstrap():
    # The fallback's s.e. is the ideal bootstrap's: check it against the Monte Carlo replicates.
    for t in (uplift_task("reach", [0.32, 0.2, 0.0]), task_outcomes_example()):
        d = t.differences()
        reps = _replicates([d], 40_000, np.random.default_rng(0)) / d.size
        assert float(reps.std()) == pytest.approx(task_interval(t)["se"], rel=0.03)
        assert float(reps.mean()) == pytest.approx(d.mean(), abs=0.01)


def task_outcomes_example():
    rng = np.random.default_rng(5)
    return TaskOutcomes("mixed", scenes(30), tuple(rng.random(30) < 0.5),
                        {s: tuple(rng.random(30) < 0.6) for s in range(4)})


def test_more_scenes_shrink_the_scene_part():
    t = uplift_task("reach", [0.32, 0.2, 0.0])
    big = TaskOutcomes("reach", scenes(100), t.bc * 4, {s: out * 4 for s, out in t.refined.items()})
    r, rb = task_interval(t), task_interval(big)
    assert rb["uplift"] == pytest.approx(r["uplift"])
    assert rb["variance_parts"]["scenes"] == pytest.approx(r["variance_parts"]["scenes"] / 4)
    assert rb["variance_parts"]["seeds"] == pytest.approx(r["variance_parts"]["seeds"])
    # One seed: the scene part is the whole interval, and it shrinks.
    one, one_big = task_interval(uplift_task("a", [0.32])), task_interval(uplift_task("a", [0.32], 100))
    assert width(one_big) < 0.7 * width(one)


def test_timing_pooled_10k_resamples_4_tasks_3_seeds_50_scenes():
    rng = np.random.default_rng(0)
    tasks = [TaskOutcomes(f"t{i}", scenes(50), tuple(rng.random(50) < 0.4),
                          {s: tuple(rng.random(50) < 0.5) for s in range(3)}) for i in range(4)]
    start = time.perf_counter()
    r = pooled_interval(tasks, resamples=10_000)
    assert time.perf_counter() - start < 1.0
    assert r["pairs"] == 600 and r["ci"][0] < r["uplift"] < r["ci"][1]


# (c) properties.
@settings(max_examples=80, deadline=None)
@given(task_outcomes(), st.integers(0, 2**32 - 1))
def test_task_interval_properties(t, rng_seed):
    r = task_interval(t, rng_seed=rng_seed, **FAST)
    lo, hi = r["ci"]
    assert -1.0 <= lo <= r["uplift"] <= hi <= 1.0
    assert r["uplift"] == pytest.approx(t.differences().mean())
    if disagree(t):
        assert hi > lo and r["note"] is None
    else:
        assert lo == hi == r["uplift"] and r["note"]
    assert r["seed_variation_estimable"] == (len(t.refined) > 1)


@settings(max_examples=60, deadline=None)
@given(task_outcomes(), st.integers(0, 2**32 - 1))
def test_swapping_the_policies_mirrors_exactly(t, rng_seed):
    # Same rng seed, same draws, integer replicates: the mirror is exact, not just within tolerance.
    r, m = task_interval(t, rng_seed=rng_seed, **FAST), task_interval(complement(t), rng_seed=rng_seed, **FAST)
    assert m["uplift"] == -r["uplift"] and m["ci"] == [-r["ci"][1], -r["ci"][0]]
    assert (m["pairs_refined_only"], m["pairs_bc_only"]) == (r["pairs_bc_only"], r["pairs_refined_only"])
    seed = next(iter(t.refined))
    p = paired_interval(t.bc, t.refined[seed], t.scenes, rng_seed=rng_seed, **FAST)
    q = paired_interval(t.refined[seed], t.bc, t.scenes, rng_seed=rng_seed, **FAST)
    assert q["uplift"] == -p["uplift"] and q["ci"] == [-p["ci"][1], -p["ci"][0]]
    assert seed_interval(t, seed, rng_seed=rng_seed, **FAST)["ci"] == p["ci"]


@settings(max_examples=60, deadline=None)
@given(task_outcomes(), st.randoms(use_true_random=False))
def test_scene_order_does_not_change_the_estimate(t, rnd):
    order = list(range(len(t.scenes)))
    rnd.shuffle(order)
    shuffled = TaskOutcomes(t.task, tuple(t.scenes[j] for j in order), tuple(t.bc[j] for j in order),
                            {s: tuple(out[j] for j in order) for s, out in t.refined.items()})
    r, q = task_interval(t, **FAST), task_interval(shuffled, **FAST)
    assert q["uplift"] == r["uplift"] and q["se"] == pytest.approx(r["se"])


@settings(max_examples=50, deadline=None)
@given(task_outcomes(), st.integers(2, 4))
def test_tiling_scenes_divides_the_scene_part(t, k):
    big = TaskOutcomes(t.task, scenes(len(t.scenes) * k), t.bc * k, {s: o * k for s, o in t.refined.items()})
    r, rb = task_interval(t, resamples=50), task_interval(big, resamples=50)
    assert rb["uplift"] == pytest.approx(r["uplift"])
    assert rb["variance_parts"]["scenes"] == pytest.approx(r["variance_parts"]["scenes"] / k, abs=1e-12)
    assert rb["variance_parts"]["seeds"] == pytest.approx(r["variance_parts"]["seeds"], abs=1e-12)


@settings(max_examples=50, deadline=None)
@given(task_outcomes(name="a"), task_outcomes(name="b", max_scenes=6), st.integers(0, 1000))
def test_pooled_properties(a, b, rng_seed):
    twin = TaskOutcomes("a2", a.scenes, a.bc, a.refined)
    one, two = pooled_interval([a], **FAST), pooled_interval([a, twin], **FAST)
    assert two["uplift"] == pytest.approx(one["uplift"]) and one["uplift"] == pytest.approx(task_interval(a)["uplift"])
    assert two["se"] == pytest.approx(one["se"] / np.sqrt(2))  # twins: two independent draws averaged
    r = pooled_interval([a, b], rng_seed=rng_seed, **FAST)
    pairs = a.differences().size + b.differences().size
    assert r["uplift"] == pytest.approx((a.differences().sum() + b.differences().sum()) / pairs)
    assert -1.0 <= r["ci"][0] <= r["uplift"] <= r["ci"][1] <= 1.0
    if disagree(a) or disagree(b) or a.differences().mean() != b.differences().mean():
        assert r["ci"][1] > r["ci"][0]  # never zero-width while (task, seed) clusters disagree
    m = pooled_interval([complement(a), complement(b)], rng_seed=rng_seed, **FAST)
    assert m["uplift"] == -r["uplift"] and m["ci"] == [-r["ci"][1], -r["ci"][0]]


def test_tasks_that_disagree_only_between_each_other_give_a_nonzero_interval():
    """Task a: refined wins every scene for every seed; task b: loses every one. Inside each task
    nothing varies, but the (task, seed) clusters disagree: the pooled interval must be wide."""
    sc = scenes(10)
    win = TaskOutcomes("a", sc, (False,) * 10, {s: (True,) * 10 for s in range(3)})
    lose = TaskOutcomes("b", sc, (True,) * 10, {s: (False,) * 10 for s in range(3)})
    r = pooled_interval([win, lose], **FAST)
    assert r["uplift"] == 0.0 and r["ci"] == [-1.0, 1.0]
    assert "t-interval over the 6 (task, seed) cluster means" in r["method"]
    half = TaskOutcomes("c", sc, (False,) * 10, {s: (False,) * 10 for s in range(3)})  # d = 0 throughout
    r = pooled_interval([win, half], **FAST)
    assert r["uplift"] == 0.5 and r["ci"][0] < 0.5 < r["ci"][1]
    same = pooled_interval([win, TaskOutcomes("a2", sc, (False,) * 10, {s: (True,) * 10 for s in range(3)})], **FAST)
    assert same["ci"] == [1.0, 1.0] and "nothing varies" in same["note"]
    # Only then: while d varies inside a task, the interval stays the stratified bootstrap.
    mixed = TaskOutcomes("m", sc, (False,) * 10, {s: (True,) * 5 + (False,) * 5 for s in range(3)})
    r = pooled_interval([lose, mixed], **FAST)
    assert "t-interval" not in r["method"] and r["method"].startswith("task-stratified crossed bootstrap")


# (d) validation names the task and the seed.
def test_validation_errors():
    sc = scenes(3)
    with pytest.raises(ValueError, match=r"task 'reach', seed 7: 2 outcomes for 3 scenes"):
        TaskOutcomes("reach", sc, (True, False, True), {1: (True,) * 3, 7: (True, False)})
    with pytest.raises(ValueError, match=r"task 'reach', bc: 4 outcomes"):
        TaskOutcomes("reach", sc, (True,) * 4, {1: (True,) * 3})
    with pytest.raises(ValueError, match=r"task 'reach': scenes must be distinct.*'s1'"):
        TaskOutcomes("reach", ("s0", "s1", "s1"), (True,) * 3, {1: (True,) * 3})
    with pytest.raises(ValueError, match=r"task 'reach': no refinement seeds"):
        TaskOutcomes("reach", sc, (True,) * 3, {})
    with pytest.raises(ValueError, match=r"task 'reach': no scenes"):
        TaskOutcomes("reach", (), (), {1: ()})
    with pytest.raises(ValueError, match=r"task 'reach', seed 2: outcomes must be booleans"):
        TaskOutcomes("reach", sc, (True,) * 3, {2: (True, 0.5, False)})
    t = TaskOutcomes("reach", sc, (True,) * 3, {2: (True,) * 3})
    with pytest.raises(ValueError, match=r"task 'reach': no seed 5"):
        seed_interval(t, 5)
    with pytest.raises(ValueError, match="distinct"):
        pooled_interval([t, t])
    with pytest.raises(ValueError, match="paired_interval, other: 2 outcomes for 3 scenes"):
        paired_interval((True,) * 3, (True,) * 2, sc)
    with pytest.raises(ValueError, match="distinct"):
        paired_interval((True,) * 2, (True,) * 2, ("x", "x"))


def test_outcomes_are_normalised_and_read_only():
    t = TaskOutcomes("reach", ["a", "b"], [1, np.bool_(False)], {3: [0, 1], 1: (True, True)})
    assert t.scenes == ("a", "b") and t.bc == (True, False) and list(t.refined) == [1, 3]
    assert t.refined[3] == (False, True)
    with pytest.raises(TypeError):
        t.refined[4] = (True, True)
