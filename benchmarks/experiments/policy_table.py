#!/usr/bin/env python
"""metrics/policy.json (one or more runs) as the markdown tables docs/results.md shows: per seed,
per task and pooled, with the scene counts and the interval each figure comes with.

    python benchmarks/experiments/policy_table.py results/cpu/metrics/policy.json [more.json ...]
"""

from __future__ import annotations

import json
import sys
from pathlib import Path


def _ci(v) -> str:
    return "–" if not v else f"[{v[0]:+.3f}, {v[1]:+.3f}]"


def _f(v, fmt="{:.2f}") -> str:
    return "–" if v is None else fmt.format(v)


def table(path: str) -> str:
    m = json.loads(Path(path).read_text())
    lines = [f"`{path}`: {m['episodes_per_policy']} scenes per task and policy", "",
             "| task | seed | scenes (distinct / overlap train / overlap select) | BC real | refined real | "
             "uplift [95% CI] | BC imagined | refined imagined | returned | real episodes used |",
             "|---|---|---|---|---|---|---|---|---|---|"]
    for task, e in m["per_task"].items():
        sc = e["scenes"]
        scenes = f"{sc['distinct']} / {sc['overlap_training']} / {sc['overlap_selection']}"
        for r in e["seeds"]:
            it = r.get("selected_iteration")
            returned = "BC (iteration 0)" if it == 0 else f"iteration {it}"
            lines.append(f"| {task} | {r['seed']} | {scenes} | {r['bc_success_rate']:.2f} | {r['success_rate']:.2f} | "
                         f"{r['uplift']:+.2f} {_ci(r['uplift_ci95'])} | {_f(r['imagined_eval_bc'])} | "
                         f"{_f(r['imagined_eval_refined'])} | {returned} | {r['real_episodes_used']} |")
        lines.append(f"| **{task}** | all (crossed) | {scenes} | **{e['bc']['success_rate']:.2f}** | "
                     f"**{e['refined']['success_rate']:.2f}** | **{e['uplift']:+.3f} {_ci(e['uplift_ci95'])}** | "
                     f"{_f(e.get('imagined_success_bc'))} | {_f(e.get('imagined_success_refined'))} | "
                     f"candidate seed {e['candidate']['seed']} | {e['real_episodes_used']} |")
    o = m["overall"]
    lines.append(f"| **overall** | all (task-stratified) | | **{o['bc']['success_rate']:.3f}** | "
                 f"**{o['refined']['success_rate']:.3f}** | **{o['uplift']:+.3f} {_ci(o['uplift_ci95'])}** "
                 f"({o['pairs']} pairs; {o['pairs_refined_only']} refined-only, {o['pairs_bc_only']} BC-only) | | | | "
                 f"{o['real_episodes_used']} |")
    lines += ["", f"Interval: {o['interval']['method']}" + (f"; {o['interval']['warning']}" if o['interval'].get('warning')
                                                           else ""), ""]
    return "\n".join(lines)


if __name__ == "__main__":
    print("\n".join(table(p) for p in sys.argv[1:]))
