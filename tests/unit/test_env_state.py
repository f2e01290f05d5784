"""GymVectorEnv.get_state / set_state: a restored copy (through JSON) steps exactly like the original,
across episode ends and auto-resets."""

import json

import numpy as np

from rlinf.envs.gym_env import GymVectorEnv


def test_restored_envs_continue_bit_exactly():
    a = GymVectorEnv("CartPole-v1", 3, max_episode_steps=25)
    a.reset(seed=0)
    rng = np.random.default_rng(0)
    for _ in range(17):
        a.step(rng.integers(0, 2, 3))
    state = json.loads(json.dumps(a.get_state()))
    assert state["complete"]
    b = GymVectorEnv("CartPole-v1", 3, max_episode_steps=25)
    b.reset(seed=123)
    b.set_state(state)
    ended = 0
    for _ in range(80):
        actions = rng.integers(0, 2, 3)
        x, y = a.step(actions), b.step(actions)
        for p, q in zip(x[:4], y[:4]):
            np.testing.assert_array_equal(p, q)
        for key in ("done", "episode_return", "episode_length", "final_obs"):
            np.testing.assert_array_equal(x[4][key], y[4][key])
        ended += int(x[4]["done"].sum())
    assert ended >= 3  # auto-resets (from the restored generators) happened


def test_state_of_other_layout_is_rejected():
    a = GymVectorEnv("CartPole-v1", 2)
    a.reset(seed=0)
    b = GymVectorEnv("CartPole-v1", 3)
    try:
        b.set_state(a.get_state())
    except ValueError as e:
        assert "does not fit" in str(e)
    else:
        raise AssertionError("expected ValueError")
