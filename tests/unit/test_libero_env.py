"""LIBERO vector env: two libero_spatial slots built once; shapes, upright images, the benchmark's
instructions, fixed init states per seed, same-step auto-reset at the time limit, state capture, bad ids."""

import numpy as np
import pytest

from rlinf.config import load_config
from rlinf.errors import InputError

pytestmark = pytest.mark.timeout(300)

MAX_STEPS = 3


def _cfg(*overrides):
    return load_config("configs/ppo_cartpole_mlp.yaml", ["env.simulator=libero", "env.id=libero_spatial",
                                                          f"env.max_episode_steps={MAX_STEPS}", *overrides]).env


@pytest.fixture(scope="module")
def env():
    from rlinf.envs import make_vector_env

    venv = make_vector_env(_cfg(), 2)
    yield venv
    venv.close()


def test_spaces_shapes_and_instructions(env):
    from rlinf.envs.libero_env import get_suite

    obs = env.reset(seed=0)
    assert obs["image"].shape == (2, 128, 128, 3) and obs["image"].dtype == np.uint8
    assert obs["state"].shape == (2, 9) and obs["state"].dtype == np.float32
    assert env.action_dim == 7 and env.obs_dim == 9 and not env.discrete
    suite = get_suite("libero_spatial")
    assert list(obs["instruction"]) == [suite.get_task(0).language, suite.get_task(1).language]
    assert obs["instruction"][0] == "pick up the black bowl between the plate and the ramekin and place it on the plate"
    # the state is end-effector pose + gripper: a unit quaternion in columns 3..6
    np.testing.assert_allclose(np.linalg.norm(obs["state"][:, 3:7], axis=1), 1.0, atol=1e-4)


def test_image_is_robosuite_frame_flipped_upright(env):
    obs = env.reset(seed=0)
    raw = env.envs[0].sim.render(camera_name="agentview", width=128, height=128)  # OpenGL: bottom row first
    assert np.abs(obs["image"][0].astype(int) - raw[::-1].astype(int)).mean() < 1.0
    assert np.abs(obs["image"][0].astype(int) - raw.astype(int)).mean() > 10.0
    np.testing.assert_array_equal(env.render(), obs["image"])
    # upright agentview: the robot stands at the back (top rows: grey wall / robot), the table in front
    # (bottom rows: light wood)
    assert obs["image"][0, -20:].mean() > obs["image"][0, :20].mean()


def test_init_states_follow_the_seed(env):
    a = env.reset(seed=3)
    assert env.get_state()["init_ids"] == [3, 4]
    b = env.reset(seed=3)
    np.testing.assert_array_equal(a["image"], b["image"])
    np.testing.assert_array_equal(a["state"], b["state"])
    c = env.reset(seed=5)
    assert env.get_state()["init_ids"] == [5, 6]
    assert np.abs(a["image"].astype(int) - c["image"].astype(int)).mean() > 0.5  # objects elsewhere
    env.reset(seed=[7, 7])  # per-slot seeds (GRPO groups share an init state)
    assert env.get_state()["init_ids"] == [7, 7]


def test_time_limit_truncates_and_resets_in_the_same_step(env):
    env.reset(seed=0)
    for t in range(MAX_STEPS):
        obs, rewards, terminated, truncated, info = env.step(np.zeros((2, 7)))
        assert not terminated.any() and (rewards == 0).all()
        assert info["has_success"] and not info["success"].any()
        if t < MAX_STEPS - 1:
            assert not info["done"].any() and (info["episode_length"] == 0).all()
    assert truncated.all() and info["done"].all()
    assert list(info["episode_length"]) == [MAX_STEPS] * 2 and list(info["episode_return"]) == [0.0, 0.0]
    assert list(info["init_state"]) == [2, 3]  # next episodes: init states advance by num_envs
    assert info["final_obs"]["image"].std() > 0 and list(info["final_obs"]["instruction"]) == list(obs["instruction"])
    assert np.abs(info["final_obs"]["state"] - obs["state"]).max() > 1e-4  # obs is the new episode's


def test_goal_reached_terminates_with_success_and_reward(env):
    env.reset(seed=0)
    task = env.envs[0].env  # slot 0: task 0, goal (On akita_black_bowl_1 plate_1)
    bowl, plate = task.objects_dict["akita_black_bowl_1"], task.objects_dict["plate_1"]
    above_plate = task.sim.data.body_xpos[task.sim.model.body_name2id(plate.root_body)] + [0.0, 0.0, 0.03]
    task.sim.data.set_joint_qpos(bowl.joints[-1], np.concatenate([above_plate, [1.0, 0.0, 0.0, 0.0]]))
    task.sim.forward()
    for _ in range(MAX_STEPS):
        obs, rewards, terminated, truncated, info = env.step(np.zeros((2, 7)))
        if info["done"][0]:
            break
    assert terminated[0] and not truncated[0] and info["success"][0] and rewards[0] == 1.0
    assert info["episode_return"][0] == 1.0 and 1 <= info["episode_length"][0] < MAX_STEPS
    assert not info["success"][1]


def test_state_capture_restores_the_simulation(env):
    env.reset(seed=1)
    env.step(np.zeros((2, 7)))
    state = env.get_state()
    assert state["complete"] is False and len(state["sim"][0]) > 50
    action = np.tile([[0.5, 0.0, -0.3, 0.0, 0.0, 0.0, 1.0]], (2, 1))
    first, *_ = env.step(action)
    env.set_state(state)
    second, *_ = env.step(action)
    np.testing.assert_allclose(first["state"], second["state"], atol=1e-3)
    assert np.abs(first["image"].astype(int) - second["image"].astype(int)).mean() < 2.0


def test_bad_suite_and_task_ids():
    from rlinf.envs import check_env, make_vector_env

    with pytest.raises(InputError, match="libero_spatial") as e:
        check_env(_cfg("env.id=libero_spatail"))
    assert e.value.key == "env.id"
    with pytest.raises(InputError) as e:
        make_vector_env(_cfg("env.task_ids=[0,12]"), 1)
    assert e.value.key == "env.task_ids"
