"""One HTML page to look at an episode store the way people look at robot datasets: per episode a
GIF of the camera, a frame grid, the actions over time and where the success flag is on.

Plots are inline SVG polylines written here: matplotlib is not a dependency and a line chart of a
few action dimensions does not justify one. The page is self-contained next to its images
(relative links), written whole or not at all.
"""

from __future__ import annotations

import html
import os
from pathlib import Path
from typing import Any

import numpy as np

from w4rl_core.atomic import atomic_path
from w4rl_core.data.episode import Episode
from w4rl_core.data.store import EpisodeStore

COLORS = ("#1f77b4", "#d62728", "#2ca02c", "#9467bd", "#ff7f0e", "#8c564b", "#e377c2", "#7f7f7f")


def _svg_lines(series: np.ndarray, low: float, high: float, width: int = 360, height: int = 120,
               labels: list[str] | None = None) -> str:
    """series (T, D) -> one SVG polyline per column, y from low (bottom) to high (top)."""
    t = max(len(series) - 1, 1)
    span = (high - low) or 1.0
    lines = []
    for d in range(series.shape[1]):
        pts = " ".join(f"{width * i / t:.1f},{height * (1 - (float(v) - low) / span):.1f}"
                       for i, v in enumerate(series[:, d]))
        name = html.escape(labels[d]) if labels else f"dim {d}"
        lines.append(f'<polyline fill="none" stroke="{COLORS[d % len(COLORS)]}" stroke-width="1.5" points="{pts}">'
                     f"<title>{name}</title></polyline>")
    frame = f'<rect x="0" y="0" width="{width}" height="{height}" fill="none" stroke="#999"/>'
    return f'<svg width="{width}" height="{height}" viewBox="0 0 {width} {height}">{frame}{"".join(lines)}</svg>'


def _success_strip(success: np.ndarray, width: int = 360, height: int = 14) -> str:
    t = len(success)
    cells = "".join(f'<rect x="{width * i / t:.1f}" y="0" width="{width / t + 0.5:.1f}" height="{height}" fill="#2ca02c"/>'
                    for i in np.flatnonzero(success))
    return (f'<svg width="{width}" height="{height}"><rect width="{width}" height="{height}" fill="#eee"/>'
            f"{cells}</svg>")


def _frame_grid(ep: Episode, n: int = 8) -> np.ndarray:
    pick = np.linspace(0, len(ep) - 1, min(n, len(ep))).round().astype(int)
    return np.concatenate([ep.rgb[k] for k in pick], axis=1)


def write_view(store_url: str, out_dir: str | os.PathLike[str], episodes: int = 20,
               endpoint_url: str | None = None) -> dict[str, Any]:
    """Write `out_dir/index.html` (+ GIFs and frame grids) for the first `episodes` episodes."""
    import imageio.v3 as iio

    store = EpisodeStore.open(store_url, endpoint_url=endpoint_url)
    n = min(episodes, store.n_episodes)
    layout = store.layout
    a_low, a_high = min(layout.action_low), max(layout.action_high)  # one scale for every episode
    sections, successes = [], 0
    with atomic_path(out_dir) as tmp:
        tmp.mkdir(parents=True)
        for i in range(n):
            ep = store.episode(i)
            successes += int(ep.succeeded)
            scale = max(1, 128 // ep.rgb.shape[1])
            iio.imwrite(tmp / f"episode{i}.gif", ep.rgb.repeat(scale, 1).repeat(scale, 2), duration=60, loop=0)
            iio.imwrite(tmp / f"episode{i}_grid.png", _frame_grid(ep).repeat(2, 0).repeat(2, 1))
            sections.append(
                f'<section><h2>episode {i}: {html.escape(ep.task)} / {html.escape(ep.kind)}, {len(ep)} steps, '
                f'{"success" if ep.succeeded else "failure"}, return {float(ep.reward.sum()):.2f}</h2>'
                f'<div class="row"><img src="episode{i}.gif" alt="episode {i}"><div>'
                f"<p>actions (one line per dimension, hover for its name)</p>"
                f"{_svg_lines(ep.action, a_low, a_high)}"
                f"<p>success flag per step</p>{_success_strip(ep.success)}</div></div>"
                f'<img class="grid" src="episode{i}_grid.png" alt="frames of episode {i}"></section>'
            )
        title = html.escape(f"{store_url}: {store.n_episodes} episodes")
        page = (
            "<!doctype html><html><head><meta charset='utf-8'>"
            f"<title>{title}</title><style>body{{font-family:sans-serif;margin:2em}}"
            "section{border-top:1px solid #ccc;padding:1em 0}.row{display:flex;gap:1.5em}"
            "img{image-rendering:pixelated}.grid{margin-top:.5em;max-width:100%}h2{font-size:1em}</style></head>"
            f"<body><h1>{title}</h1><p>showing {n}, {successes} successful</p>{''.join(sections)}</body></html>"
        )
        (tmp / "index.html").write_text(page)
    return {"store": store_url, "episodes_shown": n, "episodes": store.n_episodes, "successful_shown": successes,
            "page": str(Path(out_dir) / "index.html")}
