"""The robot bridge serving Meta-World on loopback, and RemoteRobot driving it."""

from __future__ import annotations

import httpx
import numpy as np
import pytest

from conftest import free_port
from w4rl_core.eval.policy_eval import evaluate_on_robot
from w4rl_core.models.policy import CNNConfig, GaussianPolicy, PolicyActor, PolicyConfig
from w4rl_core.robots.bridge import BridgeServer, RemoteRobot, create_app
from w4rl_core.robots.metaworld_robot import MetaWorldConfig, MetaWorldRobot

TOKEN = "test-token-0123456789abcdef"


@pytest.fixture(scope="module")
def bridge():
    server = BridgeServer(lambda: MetaWorldRobot(MetaWorldConfig(task="door-lock-v3", image_size=16)),
                          TOKEN, "127.0.0.1", free_port()).start()
    yield server
    server.stop()


def test_remote_robot_follows_the_protocol(bridge):
    robot = RemoteRobot(bridge.url, TOKEN)
    try:
        assert robot.task == "door-lock-v3" and robot.action_low.tolist() == [-1.0] * 4
        obs = robot.reset(seed=3)
        assert obs.rgb.shape == (16, 16, 3) and obs.rgb.dtype == np.uint8 and obs.state.shape == (39,)
        obs2, info = robot.step(np.array([0.1, 0.0, -0.1, 0.5]))
        assert set(info) == {"success", "reward"} and obs2.rgb.shape == (16, 16, 3)
        again = robot.reset(seed=3)
        np.testing.assert_array_equal(obs.rgb, again.rgb)  # seeded, like the local simulator
    finally:
        robot.close()


def test_wrong_or_missing_token_is_rejected(bridge):
    with pytest.raises(RuntimeError, match="HTTP 401"):
        RemoteRobot(bridge.url, "wrong-token-0123456789")
    assert httpx.post(f"{bridge.url}/reset", json={"seed": 1}).status_code == 401


@pytest.mark.parametrize("action, words", [
    ([0.1, 0.2], "must have 4 values"),
    (["left", 0, 0, 0], "valid number"),
    ([float("nan"), 0, 0, 0], "finite"),
    ([3.0, 0, 0, 0], "outside the bounds"),
])
def test_malformed_actions_are_rejected_with_a_clear_error(bridge, action, words):
    import json

    body = json.dumps({"action": action})  # allows NaN, as a careless client would send it
    r = httpx.post(f"{bridge.url}/step", content=body,
                   headers={"Authorization": f"Bearer {TOKEN}", "Content-Type": "application/json"})
    assert r.status_code == 422 and words in r.text
    bad = httpx.post(f"{bridge.url}/reset", json={"seed": "abc"}, headers={"Authorization": f"Bearer {TOKEN}"})
    assert bad.status_code == 422 and "seed" in bad.text


def test_evaluation_drives_the_remote_robot(bridge):
    policy = GaussianPolicy(PolicyConfig((-1.0,) * 4, (1.0,) * 4, CNNConfig(image_size=16, channels=(8,))))
    robot = RemoteRobot(bridge.url, TOKEN)
    try:
        summary = evaluate_on_robot(robot, PolicyActor(policy), episodes=2, seed=0, episode_len=4)
    finally:
        robot.close()
    assert summary["episodes"] == 2 and summary["success_rate"] in (0.0, 0.5, 1.0)


def test_short_tokens_are_refused():
    with pytest.raises(ValueError, match="at least 16"):
        create_app(lambda: None, "short")
