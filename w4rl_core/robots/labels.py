"""Operator success labels, for robots that cannot tell whether an episode succeeded.

Most hardware reports no success (the bridge's step info says `success: null`). With
`robot.success` prompt or queue the pipeline asks a person at the end of each such episode, and
records the answer as the episode's per-frame success: failed everywhere, or succeeded from the
step the operator names (by default the last frame). The episode store's source records that its
outcomes came from an operator (collect.py), so a success rate is never presented as the robot's.

Two ways to ask (robot.success):
- prompt: on the terminal of the process that runs the stage (/dev/tty, so it works under
  `dvc repro` and `make repro`): for an operator who runs the pipeline beside the robot.
- queue: a request file per episode in `label_dir`, answered by `w4rl robot label` from any
  terminal that sees that directory (a laptop beside the robot, while a scheduled flow waits).
  Each request carries a fresh nonce and an answer must repeat it: an answer left from a killed
  run can never label the episode that replaced it. The stage waits at most `timeout_s`.

An answer is one line: `n` (failed), `y` (succeeded, on the last frame) or `y T` (succeeded from
step T on, 1 <= T < steps; step 0 is the reset frame, before any action).
"""

from __future__ import annotations

import json
import os
import time
import uuid
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Protocol

from w4rl_core.atomic import write_json_atomic

LABEL_SOURCES = ("robot", "prompt", "queue")  # robot: the robot reports success (no operator)
MAX_PROMPT_ATTEMPTS = 5  # a mistyped answer is asked again, a few times, never forever


@dataclass(frozen=True)
class LabelRequest:
    """What the operator is asked about: one recorded episode, identified for a person."""

    task: str
    kind: str  # policy (BC rollouts) | eval
    episode: int  # index within the run (scene `index` of its role's list)
    scene: str  # the scene id the robot reported at reset
    steps: int  # recorded frames; a success step is in 1..steps-1
    seed: int
    nonce: str = ""

    @property
    def id(self) -> str:
        return f"{self.task}-{self.kind}-{self.episode:05d}-{self.nonce}"

    def describe(self) -> str:
        return (f"{self.task} / {self.kind} episode {self.episode} (scene {self.scene or 'not reported'}, "
                f"{self.steps} steps)")


def parse_answer(text: str, steps: int) -> int | None:
    """The first successful step of an answer (`n`, `y`, `y T`), or None for a failed episode."""
    words = text.strip().lower().split()
    if words and words[0] in ("n", "no", "fail", "failed", "failure"):
        if len(words) == 1:
            return None
    elif words and words[0] in ("y", "yes", "success", "succeeded"):
        if len(words) == 1:
            return steps - 1
        if len(words) == 2 and words[1].isdigit() and 1 <= int(words[1]) < steps:
            return int(words[1])
    raise ValueError(f"answer {text.strip()!r}: give 'n' (failed), 'y' (succeeded on the last frame) or "
                     f"'y T' (succeeded from step T on, 1 <= T <= {steps - 1})")


class Labeler(Protocol):
    def label(self, request: LabelRequest) -> int | None:
        """The first successful step of the episode, or None if it failed."""
        ...


class PromptLabeler:
    """Asks on the controlling terminal (/dev/tty: stdin and stdout may belong to DVC)."""

    def __init__(self, tty: str | os.PathLike[str] = "/dev/tty") -> None:
        self.tty = str(tty)

    def label(self, request: LabelRequest) -> int | None:
        try:  # two streams: a terminal is not seekable, which a read-write text stream needs
            reader, writer = open(self.tty, encoding="utf-8"), open(self.tty, "w", encoding="utf-8")
        except OSError as err:
            raise RuntimeError(f"{request.describe()}: the robot reported no success and there is no terminal to "
                               f"ask on ({self.tty}: {err}); use robot.success queue and answer with "
                               "`w4rl robot label`") from None
        with reader, writer:
            for _ in range(MAX_PROMPT_ATTEMPTS):
                writer.write(f"\n{request.describe()}: did it succeed? [n | y | y STEP] ")
                writer.flush()
                line = reader.readline()
                if not line:
                    break
                try:
                    return parse_answer(line, request.steps)
                except ValueError as err:
                    writer.write(f"{err}\n")
        raise RuntimeError(f"{request.describe()}: no valid operator answer after {MAX_PROMPT_ATTEMPTS} tries")


class QueueLabeler:
    """Writes `<dir>/pending/<id>.json` and waits for `<dir>/answers/<id>.json` (`w4rl robot label`)."""

    def __init__(self, root: str | os.PathLike[str], timeout_s: float = 3600.0, poll_s: float = 0.5) -> None:
        if timeout_s <= 0 or poll_s <= 0:
            raise ValueError("label timeout_s and poll_s must be > 0")
        self.root, self.timeout_s, self.poll_s = Path(root), timeout_s, poll_s

    def label(self, request: LabelRequest) -> int | None:
        request = LabelRequest(**{**asdict(request), "nonce": uuid.uuid4().hex[:12]})
        pending, answer = self.root / "pending" / f"{request.id}.json", self.root / "answers" / f"{request.id}.json"
        write_json_atomic(pending, asdict(request))
        deadline = time.monotonic() + self.timeout_s
        try:
            while not answer.exists():
                if time.monotonic() > deadline:
                    raise TimeoutError(f"{request.describe()}: no operator label within {self.timeout_s:g} s; answer "
                                       f"with `w4rl robot label --dir {self.root}` (robot.label_timeout_s)")
                time.sleep(self.poll_s)
            record = json.loads(answer.read_text())
            if record.get("nonce") != request.nonce:
                raise RuntimeError(f"{answer}: the answer is for another recording of this episode")
            first = parse_answer(record["answer"], request.steps)
            write_json_atomic(self.root / "done" / f"{request.id}.json", {**asdict(request), **record})
            pending.unlink()  # before the answer: a request without its answer file is one still open
            answer.unlink()
            return first
        finally:
            pending.unlink(missing_ok=True)


def pending_requests(root: str | os.PathLike[str]) -> list[LabelRequest]:
    """The episodes waiting for an operator's label (none answered yet), oldest first."""
    folder, answers = Path(root) / "pending", Path(root) / "answers"
    requests = []
    for path in sorted(folder.glob("*.json")) if folder.is_dir() else []:
        if (answers / path.name).exists():  # answered, not yet taken by the waiting stage
            continue
        try:
            requests.append((path.stat().st_mtime, LabelRequest(**json.loads(path.read_text()))))
        except (OSError, ValueError, TypeError):  # taken and removed meanwhile, or not ours
            continue
    return [r for _, r in sorted(requests, key=lambda x: x[0])]


def answer_request(root: str | os.PathLike[str], request: LabelRequest, text: str, operator: str = "") -> None:
    """Record an operator's answer to a pending request (checked now, so a typo is refused here)."""
    parse_answer(text, request.steps)
    write_json_atomic(Path(root) / "answers" / f"{request.id}.json",
                      {"nonce": request.nonce, "answer": text.strip(), "operator": operator,
                       "answered_at": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())})


def make_labeler(source: str, label_dir: str, timeout_s: float) -> Labeler | None:
    """The labeler for robot.success `source`; None for robot (the robot reports success)."""
    if source not in LABEL_SOURCES:
        raise ValueError(f"success source must be one of {LABEL_SOURCES}, got {source!r}")
    if source == "prompt":
        return PromptLabeler()
    if source == "queue":
        return QueueLabeler(label_dir, timeout_s)
    return None


class UnreportedSuccess:
    """A robot that reports no success (`None`) and no reward, like most hardware: the simulator
    behind `w4rl robot serve --no-report-success`, standing in for such a robot in tests and docs.
    Everything else passes through to the wrapped robot."""

    def __init__(self, robot) -> None:
        self._robot = robot

    def __getattr__(self, name: str):
        return getattr(self._robot, name)

    def reset(self, seed: int, scene=None):
        return self._robot.reset(seed) if scene is None else self._robot.reset(seed, scene=scene)

    def step(self, action):
        obs, info = self._robot.step(action)
        return obs, {**info, "success": None, "reward": 0.0}
