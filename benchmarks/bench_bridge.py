#!/usr/bin/env python
"""Bounded load test of the robot bridge on 127.0.0.1: requests/s and p50/p99 latency for a fixed
number of requests from several concurrent clients, on the real Meta-World robot behind it.

    .venv/bin/python benchmarks/bench_bridge.py                  # appends to benchmarks/results.md
    .venv/bin/python benchmarks/bench_bridge.py --requests 50 --no-append

`/step` runs the simulator (one robot, one command at a time: clients queue behind each other);
`/info` does not touch the robot (the HTTP, auth and validation overhead alone). Requests beyond
the bridge's connection limit are answered 503 (or their connection reset) and counted as such.
Clients share the one robot and its episode: with several clients stepping, the episode reaches
Meta-World's length before each client's own periodic reset, and those steps are refused (409).
"""

from __future__ import annotations

import argparse
import os
import secrets
import statistics
import sys
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
os.environ.setdefault("MUJOCO_GL", "egl")

import httpx  # noqa: E402

from benchmarks.bench_data import append_results  # noqa: E402
from w4rl_core.robots.bridge import BridgeServer  # noqa: E402
from w4rl_core.robots.metaworld_robot import MetaWorldConfig, MetaWorldRobot  # noqa: E402


def load(url: str, token: str, path: str, clients: int, requests: int, deadline_s: float) -> dict[str, float]:
    body = {"action": [0.1, 0.0, -0.1, 0.5]} if path == "/step" else None
    per_client = max(1, requests // clients)
    stop_at = time.monotonic() + deadline_s

    def client(_: int) -> list[tuple[int, float]]:
        out = []
        with httpx.Client(base_url=url, headers={"Authorization": f"Bearer {token}"}, timeout=30) as c:
            for i in range(per_client):
                if time.monotonic() > stop_at:
                    break
                if body and i % 50 == 0:  # episodes, not one endless one (Meta-World stops at its length)
                    c.post("/reset", json={"seed": i})
                t0 = time.perf_counter()
                try:
                    r = c.post(path, json=body) if body else c.get(path)
                    out.append((r.status_code, time.perf_counter() - t0))
                except httpx.TransportError:  # connection reset/refused under overload: counted, not fatal
                    out.append((0, time.perf_counter() - t0))
        return out

    started = time.perf_counter()
    with ThreadPoolExecutor(max_workers=clients) as pool:
        results = [r for rs in pool.map(client, range(clients)) for r in rs]
    wall = time.perf_counter() - started
    ok = sorted(t for code, t in results if code == 200)
    q = statistics.quantiles(ok, n=100) if len(ok) >= 2 else [ok[0]] * 99 if ok else [float("nan")] * 99
    return {"sent": len(results), "ok": len(ok), "rejected": sum(code == 503 for code, _ in results),
            "reset": sum(code == 0 for code, _ in results), "refused": sum(code == 409 for code, _ in results),
            "rps": len(ok) / wall, "p50_ms": q[49] * 1000, "p99_ms": q[98] * 1000}


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--requests", type=int, default=400)
    ap.add_argument("--clients", default="1,8,32")
    ap.add_argument("--deadline-s", type=float, default=60.0, help="per scenario: stop sending after this")
    ap.add_argument("--image-size", type=int, default=64)
    ap.add_argument("--no-append", action="store_true")
    args = ap.parse_args()

    token = secrets.token_urlsafe(24)
    with __import__("socket").socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    server = BridgeServer(lambda: MetaWorldRobot(MetaWorldConfig(task="door-lock-v3", image_size=args.image_size)),
                          token, "127.0.0.1", port).start()
    rows = []
    try:
        httpx.post(f"{server.url}/reset", json={"seed": 0}, headers={"Authorization": f"Bearer {token}"})
        for path in ("/info", "/step"):
            for clients in (int(c) for c in args.clients.split(",")):
                r = load(server.url, token, path, clients, args.requests, args.deadline_s)
                rows.append((f"{path} ({args.image_size} px)", str(clients), f"{r['ok']}/{r['sent']}",
                             str(r["rejected"]), str(r["reset"]), str(r["refused"]), f"{r['rps']:.0f}", f"{r['p50_ms']:.1f}",
                             f"{r['p99_ms']:.1f}"))
    finally:
        server.stop()
    append_results("bench_bridge", rows, args.no_append,
                   header=("endpoint", "clients", "ok/sent", "503", "reset", "409", "requests/s", "p50 ms", "p99 ms"),
                   preamble=f"Loopback, one door-lock-v3 robot; {args.requests} requests per scenario, "
                            f"at most {args.deadline_s:g} s each; default bridge limits (32 connections).\n\n")


if __name__ == "__main__":
    main()
