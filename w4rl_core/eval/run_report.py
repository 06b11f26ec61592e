"""One self-contained HTML page per retraining run: data drift, world-model fidelity with
real | imagined strips, BC vs refined success, and the gate decision. Images are embedded (base64)
so the page can be mailed or archived as one file."""

from __future__ import annotations

import base64
import html
import os
from pathlib import Path
from typing import Any

from w4rl_core.atomic import write_text_atomic

CSS = """body{font-family:sans-serif;max-width:1100px;margin:2em auto;color:#222}
table{border-collapse:collapse;margin:1em 0}td,th{border:1px solid #ccc;padding:4px 8px;text-align:right}
th{background:#f3f3f3}.pass{color:#080}.fail{color:#b00;font-weight:bold}.warn{background:#fff3cd;padding:8px}
img{image-rendering:pixelated;max-width:100%;margin:4px 0}"""


def _img(path: Path) -> str:
    data = base64.b64encode(path.read_bytes()).decode()
    mime = "image/gif" if path.suffix == ".gif" else "image/png"
    return f'<img src="data:{mime};base64,{data}" alt="{html.escape(path.name)}">'


def _fmt(v: Any) -> str:
    return f"{v:.3f}" if isinstance(v, float) else html.escape(str(v))


def _table(header: list[str], rows: list[list[Any]]) -> str:
    head = "".join(f"<th>{html.escape(h)}</th>" for h in header)
    body = "".join("<tr>" + "".join(f"<td>{_fmt(c)}</td>" for c in r) + "</tr>" for r in rows)
    return f"<table><tr>{head}</tr>{body}</table>"


def build_run_report(
    out: str | os.PathLike[str],
    *,
    title: str,
    smoke_scale: bool,
    drift: dict[str, Any] | None,
    fidelity: dict[str, Any] | None,
    fidelity_dir: Path | None,
    policy: dict[str, Any] | None,
    gate: dict[str, Any] | None,
    fed_back: dict[str, Any] | None = None,
) -> None:
    """`fed_back`: the manifest of the flywheel round whose evaluation episodes this run trained on
    (None: nothing was fed back)."""
    parts = [f"<h1>{html.escape(title)}</h1>"]
    if smoke_scale:
        parts.append('<p class="warn">SMOKE-SCALE run: tiny data and models. These numbers exercise the '
                     "pipeline; they say nothing about the method.</p>")

    parts.append("<h2>Dataset drift</h2>")
    if drift:
        drifted = sorted(c for c, v in drift["columns"].items() if v["drift"])
        parts.append(f"<p>Reference: {html.escape(', '.join(drift['reference']))} "
                     f"({drift['reference_episodes']} episodes); current: {html.escape(', '.join(drift['current']))} "
                     f"({drift['current_episodes']} episodes). Drifted features: "
                     f"{html.escape(', '.join(drifted) or 'none')}.</p>")
        parts.append(_table(["feature", "method", "value", "threshold", "drift"],
                            [[c, v["method"], v["value"], v["threshold"], v["drift"]]
                             for c, v in sorted(drift["columns"].items())]))
    else:
        parts.append("<p>No drift summary.</p>")

    parts.append("<h2>Data fed back by the flywheel</h2>")
    if fed_back:
        rows = [[task, len(e["stores"]), sum(s.get("episodes", 0) for s in e["stores"].values()),
                 ", ".join(sorted(e.get("policies", {}))), e.get("promoted") or "-",
                 (e.get("drift") or {}).get("dataset_drift"), ", ".join((e.get("drift") or {}).get("drifted") or [])]
                for task, e in sorted(fed_back.get("tasks", {}).items())]
        parts.append(f"<p>Round {fed_back['round']}'s evaluation episodes (run commit "
                     f"{html.escape(str(fed_back.get('run_commit')))}) are in this run's training data; their drift "
                     "is against the task's policy episodes already there (Evidently's tests).</p>")
        parts.append(_table(["task", "stores", "episodes", "policies", "promoted then", "dataset drift",
                             "drifted columns"], rows))
    else:
        parts.append("<p>Nothing fed back: flywheel round 0.</p>")

    parts.append("<h2>World-model fidelity</h2>")
    if fidelity:
        metrics = [m for m in ("psnr", "psnr_moving", "ssim") if m in fidelity["model"]]
        hs = list(fidelity["model"]["psnr"])
        rows = [[name] + [fidelity[name].get(m, {}).get(h) for m in metrics for h in hs]
                for name in ("model", "copy_last_frame")]
        labels = {"psnr": "PSNR", "psnr_moving": "PSNR moving px", "ssim": "SSIM"}
        parts.append(_table(["", *[f"{labels[m]} {h}" for m in metrics for h in hs]], rows))
        agree = fidelity.get("classifier_agreement") or {}
        if agree.get("frame") is not None:
            parts.append(f"<p>Success detector agreement, imagined vs real frames of the same episodes: "
                         f"{agree['frame']:.2f} of frames, {agree['episode']:.2f} of episodes.</p>")
        for name in fidelity.get("visuals", []):
            if fidelity_dir and name.endswith(".png") and (fidelity_dir / name).exists():
                parts.append(f"<p>{html.escape(name)} (top: real, bottom: imagined)</p>{_img(fidelity_dir / name)}")
    else:
        parts.append("<p>No fidelity metrics.</p>")

    parts.append("<h2>Success on the robot: BC vs refined</h2>")
    if policy and policy.get("evaluated") is False:
        parts.append(f"<p>Not evaluated: {html.escape(str(policy.get('not_evaluated')))}.</p>")
    elif policy:
        rows = []
        def ci(v):
            return "-" if not v else f"{v[0]:+.2f}..{v[1]:+.2f}"

        entries = [*policy["per_task"].items(), ("overall (all tasks and seeds)", policy["overall"])]
        for task, e in entries:
            cand = e.get("candidate") or {}
            rows.append([task, e["bc"]["success_rate"], e["refined"]["success_rate"], e["bc"]["episodes"],
                         (e.get("scenes") or {}).get("distinct", "-"), e.get("uplift"), ci(e.get("uplift_ci95")),
                         cand.get("uplift", "-"), ci(cand.get("uplift_ci95")), e.get("imagined_success_bc", "-"),
                         e.get("imagined_success_refined", "-"),
                         (e.get("reward_calibration") or {}).get("classifier_success", "-")])
        parts.append(_table(["task", "BC", "refined (all seeds)", "scenes per policy", "distinct unseen scenes",
                             "uplift (all seeds)", "95% CI (seeds x scenes)", "candidate uplift",
                             "candidate 95% CI", "imagined BC", "imagined refined",
                             "detector success on BC episodes"], rows))
    else:
        parts.append("<p>No policy metrics.</p>")

    parts.append("<h2>Gate decision</h2>")
    if gate:
        for task, v in gate["tasks"].items():
            verdict = '<span class="pass">PROMOTE</span>' if v["promote"] else '<span class="fail">REFUSE</span>'
            parts.append(f"<h3>{html.escape(task)}: {verdict}</h3>")
            if v.get("decision"):
                parts.append(f"<p>{html.escape(v['decision'])}</p>")
            parts.append(_table(["rule", "result", "reason"],
                                [[r["rule"], "pass" if r["passed"] else "FAIL", r["reason"]] for r in v["rules"]]))
    else:
        parts.append("<p>No gate decision.</p>")
    page = f"<!doctype html><html><head><meta charset='utf-8'><title>{html.escape(title)}</title>" \
           f"<style>{CSS}</style></head><body>{''.join(parts)}</body></html>"
    write_text_atomic(out, page)
