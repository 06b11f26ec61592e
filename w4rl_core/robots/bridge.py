"""A robot over the network: an HTTP bridge serving any Robot, and RemoteRobot, its client.

The bridge binds 127.0.0.1 unless told otherwise and requires a bearer token on every request
(compared in constant time). Requests are validated by pydantic: a malformed action (wrong length,
non-numeric, NaN/inf, outside the bounds) is rejected with a 422 naming the field, and the robot is
never touched. All robot calls run on one dedicated thread: MuJoCo's GL context belongs to the
thread that created it, and a physical robot takes one command at a time.

Abuse is bounded (BridgeLimits): a request body over `max_body_bytes` gets 413 before it is read
whole; a client that stalls mid-body more than `body_timeout_s` gets 408; connections beyond
`max_connections` get 503 from uvicorn (`limit_concurrency`); idle keep-alive connections close
after `keep_alive_s`. The server stays up through all of it (tests/test_bridge.py, and the load
test in benchmarks/bench_bridge.py).
"""

# No `from __future__ import annotations` here: FastAPI must see the request models (defined inside
# create_app, where the action bounds are known) as real classes, not strings it cannot resolve.
import asyncio
import base64
import hmac
import math
import threading
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from typing import Any, Literal, Optional

import numpy as np

from w4rl_core.robots.protocol import Observation, Robot, SceneRequest

TOKEN_MIN_LENGTH = 16
TOKEN_ENV = "W4RL_ROBOT_TOKEN"  # where clients (the pipeline's stages, `w4rl robot ...`) read the token


class BridgeLimits:
    """What one client can cost the bridge. A step request is ~100 bytes; frames go the other way."""

    def __init__(self, max_body_bytes: int = 64 * 1024, body_timeout_s: float = 10.0, max_connections: int = 32,
                 keep_alive_s: float = 5.0) -> None:
        if max_body_bytes < 1024 or body_timeout_s <= 0 or max_connections < 1 or keep_alive_s <= 0:
            raise ValueError("bridge limits: max_body_bytes >= 1024, body_timeout_s > 0, max_connections >= 1, "
                             "keep_alive_s > 0")
        self.max_body_bytes, self.body_timeout_s = max_body_bytes, body_timeout_s
        self.max_connections, self.keep_alive_s = max_connections, keep_alive_s


class _BoundedBody:
    """ASGI middleware: refuse bodies over the size limit (413) and bodies that stall (408) before
    the application reads them. Hand-written because neither FastAPI nor uvicorn bounds request
    body size or the time between body chunks; it is the usual ~30 lines of ASGI."""

    def __init__(self, app: Any, limits: BridgeLimits) -> None:
        self.app, self.limits = app, limits

    async def __call__(self, scope: dict, receive: Callable, send: Callable) -> None:
        if scope["type"] != "http":
            return await self.app(scope, receive, send)
        length = dict(scope.get("headers") or []).get(b"content-length")
        if length is not None and (not length.isdigit() or int(length) > self.limits.max_body_bytes):
            return await _refuse(send, 413, f"request body over {self.limits.max_body_bytes} bytes")
        messages, size = [], 0
        while True:  # read the whole (bounded) body first, each chunk within the timeout
            try:
                message = await asyncio.wait_for(receive(), self.limits.body_timeout_s)
            except asyncio.TimeoutError:
                return await _refuse(send, 408, f"request body not received within {self.limits.body_timeout_s} s")
            messages.append(message)
            size += len(message.get("body", b""))
            if size > self.limits.max_body_bytes:
                return await _refuse(send, 413, f"request body over {self.limits.max_body_bytes} bytes")
            if message["type"] != "http.request" or not message.get("more_body", False):
                break

        async def replay() -> dict:
            return messages.pop(0) if messages else await receive()

        await self.app(scope, replay, send)


async def _refuse(send: Callable, status: int, detail: str) -> None:
    import json

    body = json.dumps({"detail": detail}).encode()
    await send({"type": "http.response.start", "status": status,
                "headers": [(b"content-type", b"application/json"), (b"content-length", str(len(body)).encode()),
                            (b"connection", b"close")]})
    await send({"type": "http.response.body", "body": body})


def encode_obs(obs: Observation) -> dict[str, Any]:
    rgb = np.ascontiguousarray(obs.rgb, dtype=np.uint8)
    return {"rgb": base64.b64encode(rgb.tobytes()).decode(), "shape": list(rgb.shape),
            "state": [float(v) for v in obs.state]}


def decode_obs(d: dict[str, Any]) -> Observation:
    rgb = np.frombuffer(base64.b64decode(d["rgb"]), dtype=np.uint8).reshape(d["shape"])
    return Observation(rgb=rgb.copy(), state=np.asarray(d["state"], dtype=np.float32))


def create_app(robot_factory: Callable[[], Robot], token: str, limits: BridgeLimits | None = None):
    """A FastAPI app serving the robot built by `robot_factory` (called on the robot thread)."""
    from fastapi import Depends, FastAPI, Header, HTTPException, Request
    from fastapi.exceptions import RequestValidationError
    from fastapi.responses import JSONResponse
    from pydantic import BaseModel, Field, field_validator

    if len(token) < TOKEN_MIN_LENGTH:
        raise ValueError(f"the bridge token must have at least {TOKEN_MIN_LENGTH} characters")
    executor = ThreadPoolExecutor(max_workers=1, thread_name_prefix="robot")
    robot: Robot = executor.submit(robot_factory).result()
    low, high = np.asarray(robot.action_low, np.float64), np.asarray(robot.action_high, np.float64)

    class ResetRequest(BaseModel):
        seed: int
        # Optional: scene `index` of the robot's list for `role` (SceneRequest). Without them the
        # robot sets up whatever scene it likes (ad-hoc use; the pipeline always sends both).
        role: Optional[Literal["training", "selection", "evaluation"]] = None  # scenes.SCENE_ROLES
        index: Optional[int] = Field(default=None, ge=0)

    class StepRequest(BaseModel):
        action: list[float]

        @field_validator("action")
        @classmethod
        def check_action(cls, v: list[float]) -> list[float]:
            if len(v) != len(low):
                raise ValueError(f"action must have {len(low)} values, got {len(v)}")
            if not all(math.isfinite(x) for x in v):
                raise ValueError("action values must be finite numbers")
            if any(x < lo - 1e-6 or x > hi + 1e-6 for x, lo, hi in zip(v, low, high)):
                raise ValueError(f"action outside the bounds {low.tolist()} .. {high.tolist()}")
            return v

    def authorized(authorization: str = Header(default="")) -> None:
        scheme, _, given = authorization.partition(" ")
        if scheme.lower() != "bearer" or not hmac.compare_digest(given.encode(), token.encode()):
            raise HTTPException(status_code=401, detail="missing or wrong bearer token",
                                headers={"WWW-Authenticate": "Bearer"})

    app = FastAPI(title="w4rl robot bridge", dependencies=[Depends(authorized)])
    app.add_middleware(_BoundedBody, limits=limits or BridgeLimits())

    @app.exception_handler(RequestValidationError)
    async def invalid_request(_: Request, exc: RequestValidationError) -> JSONResponse:
        # Name the field and the problem, without echoing the input: it may hold NaN, which JSON
        # cannot encode (FastAPI's default handler would answer 500 instead of 422).
        errors = [{"field": ".".join(str(p) for p in e["loc"]), "error": e["msg"]} for e in exc.errors()]
        return JSONResponse(status_code=422, content={"detail": errors})

    async def on_robot(fn, *args):
        try:
            return await asyncio.get_running_loop().run_in_executor(executor, fn, *args)
        except Exception as err:  # the robot refused (e.g. an episode past its length): say so, stay up
            raise HTTPException(status_code=409, detail=f"robot {fn.__name__} failed: {type(err).__name__}: {err}; "
                                                        "reset the robot (/reset) and try again") from None

    @app.get("/info")
    async def info() -> dict[str, Any]:
        return {"task": robot.task, "action_low": low.tolist(), "action_high": high.tolist(),
                "state_dim": int(getattr(robot, "state_dim", 0)), "fps": float(getattr(robot, "fps", 0.0))}

    def reset_robot(seed: int, role: Optional[str], index: Optional[int]) -> Observation:
        if role is None or index is None:
            return robot.reset(seed)
        return robot.reset(seed, scene=SceneRequest(role, index))

    @app.post("/reset")
    async def reset(req: ResetRequest) -> dict[str, Any]:
        if (req.role is None) != (req.index is None):
            raise HTTPException(status_code=422, detail=[{"field": "body.role", "error": "give role and index together"}])
        obs = await on_robot(reset_robot, req.seed, req.role, req.index)
        # The identity of the scene the robot set up: what the pipeline checks for repeats and leaks.
        return {"obs": encode_obs(obs), "scene": str(getattr(robot, "scene_id", "") or "")}

    @app.post("/step")
    async def step(req: StepRequest) -> dict[str, Any]:
        obs, info = await on_robot(robot.step, np.asarray(req.action, dtype=np.float32))
        # success null: the robot cannot tell (most hardware); an operator labels the episode.
        success = info.get("success")
        return {"obs": encode_obs(obs), "info": {"success": None if success is None else bool(success),
                                                 "reward": float(info.get("reward", 0.0) or 0.0)}}

    @app.on_event("shutdown")
    def close() -> None:
        executor.submit(robot.close).result()
        executor.shutdown()

    return app


class BridgeServer:
    """Runs the bridge with uvicorn in a background thread (tests, notebooks) or in the foreground."""

    def __init__(self, robot_factory: Callable[[], Robot], token: str, host: str = "127.0.0.1", port: int = 8765,
                 limits: BridgeLimits | None = None):
        import uvicorn

        limits = limits or BridgeLimits()
        self.url = f"http://{host}:{port}"
        self._server = uvicorn.Server(uvicorn.Config(
            create_app(robot_factory, token, limits), host=host, port=port, log_level="warning",
            limit_concurrency=limits.max_connections, timeout_keep_alive=limits.keep_alive_s,
            h11_max_incomplete_event_size=16 * 1024,  # bounded request line + headers
        ))
        self._thread: threading.Thread | None = None

    def run(self) -> None:
        self._server.run()

    def start(self, timeout: float = 30.0) -> "BridgeServer":
        import time

        self._thread = threading.Thread(target=self._server.run, daemon=True)
        self._thread.start()
        deadline = time.monotonic() + timeout
        while not self._server.started:
            if time.monotonic() > deadline or not self._thread.is_alive():
                raise RuntimeError(f"robot bridge did not start on {self.url}")
            time.sleep(0.05)
        return self

    def stop(self) -> None:
        self._server.should_exit = True
        if self._thread:
            self._thread.join(timeout=30)


class RemoteRobot:
    """The Robot protocol over the bridge: evaluation code drives it like the simulator."""

    def __init__(self, url: str, token: str, timeout: float = 60.0) -> None:
        import httpx

        self._client = httpx.Client(base_url=url, headers={"Authorization": f"Bearer {token}"}, timeout=timeout)
        info = self._call("GET", "/info")
        self.task: str = info["task"]
        self.action_low = np.asarray(info["action_low"], dtype=np.float32)
        self.action_high = np.asarray(info["action_high"], dtype=np.float32)
        self.state_dim = int(info.get("state_dim", 0))
        self.fps = float(info.get("fps", 0.0))
        self.scene_id = ""  # the identity the robot reported for the scene of the last reset

    def _call(self, method: str, path: str, body: dict | None = None) -> dict[str, Any]:
        r = self._client.request(method, path, json=body)
        if r.status_code != 200:
            raise RuntimeError(f"robot bridge {method} {path}: HTTP {r.status_code}: {r.text}")
        return r.json()

    def reset(self, seed: int, scene: SceneRequest | None = None) -> Observation:
        body: dict[str, Any] = {"seed": int(seed)}
        if scene is not None:
            body |= {"role": scene.role, "index": int(scene.index)}
        out = self._call("POST", "/reset", body)
        self.scene_id = str(out.get("scene", "") or "")
        return decode_obs(out["obs"])

    def step(self, action: np.ndarray) -> tuple[Observation, dict[str, Any]]:
        action = np.clip(np.asarray(action, dtype=np.float32), self.action_low, self.action_high)
        out = self._call("POST", "/step", {"action": [float(a) for a in action]})
        return decode_obs(out["obs"]), out["info"]

    def close(self) -> None:
        self._client.close()
