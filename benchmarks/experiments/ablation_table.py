#!/usr/bin/env python
"""Markdown table of ablate_world_model.py's JSON lines (for docs/results.md).

    python benchmarks/experiments/ablation_table.py benchmarks/experiments/ablation_world_model_cpu.jsonl
"""

from __future__ import annotations

import json
import sys


def cells(values: dict, se: dict | None = None) -> list[str]:
    keys = [k for k in values if k != "mean"] + ["mean"]
    return [f"{values[k]:.2f}" + (f" ±{se[k]:.2f}" if se and se.get(k) is not None and k == "mean" else "")
            for k in keys]


def main(path: str) -> None:
    rows = [json.loads(line) for line in open(path) if line.strip()]
    keys = [k for k in rows[0]["model.psnr"] if k != "mean"] + ["mean"]
    head = (["variant", "seed", "steps", "train s"] + [f"PSNR {k}" for k in keys]
            + [f"moving {k}" for k in keys])
    print("| " + " | ".join(head) + " |")
    print("|" + "---|" * len(head))
    base = rows[0]
    print("| copy last frame | | | | " + " | ".join(cells(base["copy_last_frame.psnr"]) + cells(base["copy_last_frame.psnr_moving"])) + " |")
    for r in rows:
        print(f"| {r['variant']} | {r['seed']} | {r['steps']} | {r['train_s']} | "
              + " | ".join(cells(r["model.psnr"], r["model.psnr_se"]) + cells(r["model.psnr_moving"], r["model.psnr_moving_se"]))
              + " |")


if __name__ == "__main__":
    main(sys.argv[1])
