"""Intervals for a refined policy's success-rate uplift over BC that respect how the evaluation was drawn.

The design
----------
The final evaluation runs BC and every refinement seed's policy on the *same* distinct simulator
scenes of a task, once per policy per scene. Per (seed, scene) the paired difference is
d = refined_seed(scene) - bc(scene), in {-1, 0, +1}. For one task the d's form a seeds x scenes
matrix: a *crossed* design with two random factors. Seeds are random (another seed is another PPO
run, another policy) and scenes are random (draws from the task's scene distribution). The pairs are
not independent: the d's of one seed share that seed's policy, and the d's of one scene share that
scene. Treating every pair as an independent draw (the normal approximation the pipeline used
before these intervals) ignores both and overstates certainty: seed uplifts 0.32, 0.20, 0 look
like 75 independent pairs with a clear uplift, when the honest reading is "one seed in three did
nothing".

So we bootstrap over the random units, as rliable (Agarwal et al. 2021, "Deep RL at the edge of the
statistical precipice") does over runs, stratified by task:

* `seed_interval`, `paired_interval`: one pair of fixed policies, scenes random: resample scenes.
* `task_interval`: resample seed indices and scene indices independently, with replacement, and
  take the mean of d over the resampled seeds x scenes. This is Owen's (2007) "pigeonhole
  bootstrap" for crossed random effects.
* `pooled_interval`: tasks are the fixed population the profile evaluates, so they are strata,
  never resampled; within each task the crossed resampling above; each replicate is the
  pair-weighted mean over tasks (the same weighting as the point estimate).

Each replicate is computed exactly in integers (counts of how often each seed / scene was drawn,
times the integer d's), then divided once, so results are deterministic for a given `rng_seed` and
swapping the two policies negates every replicate exactly.

The interval
------------
Percentile interval, taken at outer order statistics (no interpolation, so it mirrors exactly under
a swap of the policies), widened if needed to contain the point estimate (a skewed discrete
bootstrap distribution can in principle put 97.5 % of its mass on one side of the mean).

A percentile interval of a discrete bootstrap distribution can collapse to a point while the data
disagree (a few discordant pairs, a low level, few resamples). A zero-width interval would then
claim certainty the data do not have, so in that case we fall back to estimate +- z * se, where se
is the *closed-form* standard deviation of this very bootstrap (the "ideal" bootstrap, i.e. with
infinitely many resamples; see `_variance_parts`). We use the closed form rather than the Monte
Carlo standard deviation of the replicates because it has no resampling noise and is strictly
positive exactly when d varies inside some stratum, so the fallback can never be degenerate itself.
When d is constant inside every stratum but differs between strata (task a: every pair +1, task b:
every pair -1), tasks-as-fixed-strata has nothing to resample although the (task, seed) clusters
disagree; the interval is then a t-interval over the cluster means (clusters treated as
exchangeable, the view that generalises across tasks), never zero-width, and the method says so.
When d is the same constant on every pair (e.g. every seed returned BC's weights: all d = 0), no
resampling can move the estimate and the interval is [c, c], with a "note" saying so.

Intervals are clipped to [-1, 1], the range of a mean of d.

Known limits
------------
* Few seeds: a percentile bootstrap over 3 seeds sees 3 values; its seed variance is (R-1)/R of the
  unbiased one, and it has no t-style correction for estimating that variance from 3 values (a
  t-interval on 2 degrees of freedom uses 4.30 instead of 1.96). So with 3 seeds the interval is
  still optimistic; read it as a lower bound on the uncertainty and prefer >= 5 seeds for decisions.
  With 1 seed the seed variation is not estimable at all: the task interval is the scene bootstrap
  alone and the result says so ("seed_variation_estimable": False, a "warning").
* Crossed bootstrap is slightly conservative otherwise (Owen 2007): under a random-effects model
  d_ij = mu + a_i + b_j + e_ij the mean's variance is s_A^2/R + s_B^2/C + s_E^2/(RC), while
  resampling seeds and scenes independently has expected variance about
  s_A^2/R + s_B^2/C + 3 s_E^2/(RC): the interaction term is counted about three times.
* Tasks are fixed: the pooled interval speaks about these tasks, not about a population of tasks.
* One episode per policy per scene: the scene part also carries the simulator's episode noise.
* Scenes must be shared by all seeds of a task (crossed, enforced by `TaskOutcomes`); a design with
  different scenes per seed (nested) would need a different bootstrap.

Result dicts (plain JSON-serialisable floats / ints / lists / str / None)
-------------------------------------------------------------------------
"uplift", "ci" [lo, hi], "level", "ci95" (the same list, present only when level == 0.95: callers
that read the conventional key keep working, and an interval at another level can never be
mislabelled as 95 %), "method", "seeds", "scenes", "pairs", "pairs_refined_only", "pairs_bc_only",
"seed_variation_estimable", "warning" (str or None), "note" (str or None), "resamples", "rng_seed",
"se" (closed-form bootstrap standard error) and "variance_parts" {"seeds", "scenes", "interaction"}
(its decomposition: which factor dominates says whether more seeds or more scenes would help).
`pooled_interval` adds "tasks"; its "seeds" / "scenes" count (task, seed) policies and
(task, scene) scenes. `seed_interval` and `paired_interval` compare two fixed policies, so they
report "seeds": 1 and "seed_variation_estimable": False without a warning: their question is about
those policies, not about what another seed would give.
"""

from __future__ import annotations

import statistics
import types
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np


@dataclass(frozen=True)
class TaskOutcomes:
    """One task's final evaluation: success of BC and of each refinement seed's policy per scene.

    `refined` maps seed -> outcomes aligned with `scenes` (the same scenes for every seed: crossed).
    Normalised to tuples of bools and a read-only mapping ordered by seed.
    """

    task: str
    scenes: tuple[str, ...]
    bc: tuple[bool, ...]
    refined: Mapping[int, tuple[bool, ...]]

    def __post_init__(self) -> None:
        scenes = tuple(str(s) for s in self.scenes)
        if not scenes:
            raise ValueError(f"task {self.task!r}: no scenes")
        if len(set(scenes)) != len(scenes):
            dup = sorted({s for s in scenes if scenes.count(s) > 1})
            raise ValueError(f"task {self.task!r}: scenes must be distinct, repeated: {dup}")
        bc = _outcomes(self.bc, len(scenes), f"task {self.task!r}, bc")
        if not self.refined:
            raise ValueError(f"task {self.task!r}: no refinement seeds")
        refined = {int(seed): _outcomes(out, len(scenes), f"task {self.task!r}, seed {seed}")
                   for seed, out in sorted(self.refined.items())}
        object.__setattr__(self, "scenes", scenes)
        object.__setattr__(self, "bc", bc)
        object.__setattr__(self, "refined", types.MappingProxyType(refined))

    def differences(self) -> np.ndarray:
        """d = refined - bc as a seeds x scenes int64 matrix, rows in seed order."""
        bc = np.asarray(self.bc, dtype=np.int64)
        return np.asarray([self.refined[s] for s in self.refined], dtype=np.int64) - bc


def _outcomes(values: Sequence[Any], n: int, who: str) -> tuple[bool, ...]:
    values = tuple(values)
    if len(values) != n:
        raise ValueError(f"{who}: {len(values)} outcomes for {n} scenes")
    if any(v not in (0, 1) for v in values):  # True/False, 0/1, numpy bools
        raise ValueError(f"{who}: outcomes must be booleans")
    return tuple(bool(v) for v in values)


def seed_interval(outcomes: TaskOutcomes, seed: int, *, resamples: int = 10_000, level: float = 0.95,
                  rng_seed: int = 0) -> dict[str, Any]:
    """One seed's paired uplift over BC on the task's scenes; bootstrap over scenes (the policy is fixed)."""
    if seed not in outcomes.refined:
        raise ValueError(f"task {outcomes.task!r}: no seed {seed} (seeds: {list(outcomes.refined)})")
    d = np.asarray(outcomes.refined[seed], dtype=np.int64) - np.asarray(outcomes.bc, dtype=np.int64)
    return _result([d[None, :]], resamples, level, rng_seed,
                   f"scene bootstrap over {d.size} scenes (seed {seed})")


def paired_interval(base: Sequence[bool], other: Sequence[bool], scenes: Sequence[str], *,
                    resamples: int = 10_000, level: float = 0.95, rng_seed: int = 0) -> dict[str, Any]:
    """Uplift of `other` over `base` (e.g. a candidate vs the promoted policy) run on the same scenes.

    Both policies are fixed, so only scenes are resampled; the interval is about these two policies
    (for the promotion gate's non-regression rule). "pairs_refined_only" counts scenes where `other`
    succeeded and `base` failed, "pairs_bc_only" the reverse.
    """
    scenes = tuple(str(s) for s in scenes)
    if not scenes or len(set(scenes)) != len(scenes):
        raise ValueError(f"paired_interval: scenes must be distinct and non-empty, got {len(scenes)} "
                         f"with {len(scenes) - len(set(scenes))} repeated")
    b = np.asarray(_outcomes(base, len(scenes), "paired_interval, base"), dtype=np.int64)
    o = np.asarray(_outcomes(other, len(scenes), "paired_interval, other"), dtype=np.int64)
    return _result([(o - b)[None, :]], resamples, level, rng_seed,
                   f"scene bootstrap over {len(scenes)} scenes (two fixed policies)")


def task_interval(outcomes: TaskOutcomes, *, resamples: int = 10_000, level: float = 0.95,
                  rng_seed: int = 0) -> dict[str, Any]:
    """The task's uplift (mean of d over seeds x scenes) with a crossed bootstrap over seeds and scenes."""
    d = outcomes.differences()
    n_seeds, n_scenes = d.shape
    if n_seeds == 1:
        method = f"scene bootstrap over {n_scenes} scenes (1 seed: seed variation not estimable)"
    else:
        method = f"crossed bootstrap over {n_seeds} seeds x {n_scenes} scenes"
    return _result([d], resamples, level, rng_seed, method, one_seed_tasks=[outcomes.task] * (n_seeds == 1))


def pooled_interval(tasks: Sequence[TaskOutcomes], *, resamples: int = 10_000, level: float = 0.95,
                    rng_seed: int = 0) -> dict[str, Any]:
    """Uplift over all (task, seed, scene) pairs; bootstrap stratified by task, crossed within each."""
    if not tasks:
        raise ValueError("pooled_interval: no tasks")
    names = [t.task for t in tasks]
    if len(set(names)) != len(names):
        raise ValueError(f"pooled_interval: tasks must be distinct, got {names}")
    blocks = [t.differences() for t in tasks]
    seeds, scenes = [b.shape[0] for b in blocks], [b.shape[1] for b in blocks]
    method = (f"task-stratified crossed bootstrap over {len(tasks)} tasks "
              f"({_span(seeds)} seeds x {_span(scenes)} scenes each)")
    one_seed = [t.task for t, b in zip(tasks, blocks) if b.shape[0] == 1]
    out = _result(blocks, resamples, level, rng_seed, method, one_seed_tasks=one_seed)
    return out | {"tasks": len(tasks)}


def _span(counts: list[int]) -> str:
    return str(counts[0]) if min(counts) == max(counts) else f"{min(counts)}-{max(counts)}"


def _replicates(blocks: list[np.ndarray], resamples: int, rng: np.random.Generator) -> np.ndarray:
    """Integer sum of d over each replicate's resampled seeds x scenes, summed over strata (tasks).

    With W[b, i] = how often seed i was drawn in replicate b and V[b, j] the same for scene j, the
    replicate's sum over the resampled grid is sum_ij W[b,i] V[b,j] d[i,j] = sum_j (W @ d)[b,j] V[b,j].
    Each stratum keeps its own pairs count (R x C), so dividing the total by all pairs gives the
    pair-weighted mean over tasks.
    """
    total = np.zeros(resamples, dtype=np.int64)
    for d in blocks:
        n_seeds, n_scenes = d.shape
        # One seed: nothing to draw (and skipping keeps task_interval == seed_interval for it).
        w = (_counts(rng.integers(0, n_seeds, size=(resamples, n_seeds)), n_seeds) if n_seeds > 1
             else np.ones((resamples, 1), dtype=np.int64))
        v = _counts(rng.integers(0, n_scenes, size=(resamples, n_scenes)), n_scenes)
        total += ((w @ d) * v).sum(axis=1)
    return total


def _counts(idx: np.ndarray, k: int) -> np.ndarray:
    """Per row of drawn indices, how often each of 0..k-1 was drawn (one bincount for all rows)."""
    rows = idx.shape[0]
    flat = idx + k * np.arange(rows, dtype=np.int64)[:, None]
    return np.bincount(flat.ravel(), minlength=rows * k).reshape(rows, k).astype(np.int64)


def _variance_parts(d: np.ndarray) -> dict[str, float]:
    """Variance of the ideal (infinitely resampled) crossed bootstrap of mean(d), in closed form.

    With seed counts W ~ Multinomial(R, 1/R) and scene counts V ~ Multinomial(C, 1/C), independent,
    Var(mean over the resampled grid) = var(row means)/R + var(column means)/C
    + mean(doubly centred residual^2)/(RC), population variances throughout. It is zero exactly
    when d is constant, so the normal fallback built on it is never degenerate while d varies.
    With one seed (R = 1) the seed and interaction parts vanish: the plain scene bootstrap.
    """
    n_seeds, n_scenes = d.shape
    d = d.astype(float)
    rows, cols, grand = d.mean(axis=1), d.mean(axis=0), d.mean()
    resid = d - rows[:, None] - cols[None, :] + grand
    return {"seeds": float(rows.var()) / n_seeds, "scenes": float(cols.var()) / n_scenes,
            "interaction": float((resid**2).mean()) / (n_seeds * n_scenes)}


def _result(blocks: list[np.ndarray], resamples: int, level: float, rng_seed: int, method: str,
            one_seed_tasks: list[str] | None = None) -> dict[str, Any]:
    if not (isinstance(resamples, int | np.integer) and resamples >= 1):
        raise ValueError(f"resamples must be a positive integer, got {resamples!r}")
    if not 0 < level < 1:
        raise ValueError(f"level must lie in (0, 1), got {level!r}")
    pairs = sum(b.size for b in blocks)
    total = sum(int(b.sum()) for b in blocks)
    uplift = total / pairs
    reps = np.sort(_replicates(blocks, int(resamples), np.random.default_rng(rng_seed))) / pairs

    # Variance parts of the pooled mean: strata are independent, each weighted by its share of pairs.
    parts = {"seeds": 0.0, "scenes": 0.0, "interaction": 0.0}
    for b in blocks:
        for key, var in _variance_parts(b).items():
            parts[key] += (b.size / pairs) ** 2 * var
    se = float(np.sqrt(sum(parts.values())))
    varies = any(np.ptp(b) > 0 for b in blocks)  # d not constant inside some stratum

    # Percentile interval at outer order statistics (exactly mirrored under a swap of the policies).
    k = int(np.floor((1 - level) / 2 * (resamples - 1)))
    lo, hi = min(float(reps[k]), uplift), max(float(reps[resamples - 1 - k]), uplift)
    method = f"{method}, {resamples} resamples"
    note = None
    if varies and hi - lo <= 0:
        z = statistics.NormalDist().inv_cdf(0.5 + level / 2)
        lo, hi = uplift - z * se, uplift + z * se
        method += "; percentile interval degenerate, normal interval with the closed-form bootstrap s.e. instead"
    elif not varies and len({float(b.flat[0]) for b in blocks}) > 1:
        # Constant inside every task, different between tasks: the stratified bootstrap (tasks fixed)
        # has nothing to resample, yet the (task, seed) clusters disagree. Then treat the clusters as
        # exchangeable, a t-interval over their means: wider than the fixed-task view, never zero.
        from scipy.stats import t as student_t  # scipy is already a dependency (evidently's)

        clusters = np.concatenate([b.mean(axis=1) for b in blocks])
        se = float(clusters.std(ddof=1) / np.sqrt(clusters.size))
        half = float(student_t.ppf(0.5 + level / 2, df=clusters.size - 1)) * se
        lo, hi = uplift - half, uplift + half
        method += ("; d is constant within every task but differs between tasks: t-interval over the "
                   f"{clusters.size} (task, seed) cluster means instead")
        note = "d is constant within every task: the interval reflects only the disagreement between tasks"
    elif not varies:
        lo = hi = uplift
        if all(not b.any() for b in blocks):
            note = "no discordant pair: every policy matched the baseline on every scene"
        else:
            note = "d is the same constant on every pair: nothing varies to resample"
    lo, hi = max(-1.0, lo), min(1.0, hi)

    one_seed_tasks = one_seed_tasks or []
    warning = None
    if one_seed_tasks:
        warning = ("one refinement seed for task(s) " + ", ".join(map(repr, one_seed_tasks))
                   + ": there the interval covers scene sampling only; another seed could give a different policy")
    out: dict[str, Any] = {
        "uplift": float(uplift), "ci": [float(lo), float(hi)], "level": float(level),
        "method": method,
        "seeds": sum(b.shape[0] for b in blocks), "scenes": sum(b.shape[1] for b in blocks),
        "pairs": int(pairs),
        "pairs_refined_only": sum(int((b > 0).sum()) for b in blocks),
        "pairs_bc_only": sum(int((b < 0).sum()) for b in blocks),
        "seed_variation_estimable": bool(all(b.shape[0] > 1 for b in blocks)),
        "warning": warning, "note": note, "resamples": int(resamples), "rng_seed": int(rng_seed),
        "se": se, "variance_parts": parts,
    }
    if level == 0.95:
        out["ci95"] = list(out["ci"])
    return out
