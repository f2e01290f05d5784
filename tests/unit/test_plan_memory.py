"""rlinf.plan: memory estimates on hand-computed counts, and the CLI's exit 2 when no plan fits."""

import pytest

from rlinf.plan import api
from rlinf.plan.__main__ import main
from rlinf.plan.cost_model import PhaseCost, Workload
from rlinf.plan.hardware import GIB, Hardware, load_hardware
from rlinf.plan.memory import (MemorySpec, activation_bytes_per_token, causal_lm_params, kv_bytes_per_token,
                               peak_bytes_per_device, train_state_bytes)


def test_causal_lm_param_count():
    # 2 layers x (4 + 8) x 64^2 + 2 x 16 x 64 (embedding and untied head)
    assert causal_lm_params(64, 2, 16) == 2 * 12 * 4096 + 2 * 16 * 64 == 100_352
    assert causal_lm_params(64, 2, 16, tied=True) == 2 * 12 * 4096 + 16 * 64
    # the 7B shape (Llama-2-7B: h 4096, 32 layers, V 32000, MLP 11008 = 2.6875 h, gated: 3 matrices)
    assert causal_lm_params(4096, 32, 32000, ffn_mult=1.5 * 2.6875) == pytest.approx(6.74e9, rel=0.01)


def test_kv_and_activation_bytes():
    assert kv_bytes_per_token(4096, 32, 2) == 2 * 32 * 4096 * 2  # 512 KiB per token, fp16 MHA
    assert activation_bytes_per_token(10, 3) == 34 * 10 * 3
    assert activation_bytes_per_token(10, 3, checkpointing=True) == 2 * 10 * 3


def test_train_state_fp32_and_bf16():
    fp32 = MemorySpec(params=1000, trainable=1000, param_bytes=4)
    assert train_state_bytes(fp32, 1000, 1000, 4) == (4000 + 4000 + 8000) / 4  # params, grads, Adam m + v
    bf16 = MemorySpec(params=1000, trainable=100, param_bytes=2)  # LoRA-like: 100 trainable
    assert train_state_bytes(bf16, 1000, 100, 1) == 2000 + 200 + 100 * 12  # + fp32 master, m, v


def test_peak_per_device_colocated_with_and_without_offload():
    spec = MemorySpec(params=1000, trainable=1000, param_bytes=4, kv_bytes_per_sample=10, rollout_batch=8,
                      env_bytes_per_env=5, num_envs=4)
    devices = {"actor": [0, 1], "rollout": [0, 1], "env": [0, 1]}
    actor, rollout, env = 16000 / 2, 4000 + 10 * 8 / 2, 5 * 4 / 2
    assert peak_bytes_per_device(spec, devices, offload=False)[0] == pytest.approx(actor + rollout + env)
    assert peak_bytes_per_device(spec, devices, offload=True)[1] == pytest.approx(max(actor, rollout) + env)
    split = peak_bytes_per_device(spec, {"actor": [0], "rollout": [1], "env": [1]}, offload=False)
    assert split == {0: pytest.approx(16000), 1: pytest.approx(4000 + 80 + 20)}


def test_hardware_file_errors_name_the_key(tmp_path):
    f = tmp_path / "hw.yaml"
    f.write_text("name: x\ndevice_memory_gib: 80\nnvlink: 3\n")
    with pytest.raises(Exception, match="nvlink"):
        load_hardware(str(f))
    f.write_text("name: x\ndevice_memory_gib: 80\nmemory_reserve: 0.25\n")
    assert load_hardware(str(f)).usable_bytes == pytest.approx(60 * GIB)


def test_infeasible_exits_2_naming_the_key_and_writes_nothing(tmp_path, monkeypatch, capsys):
    hw = tmp_path / "tiny.yaml"
    hw.write_text("name: tiny\ndevice_memory_gib: 0.001\nmemory_reserve: 0.0\n")
    big = MemorySpec(params=1e8, trainable=1e8, param_bytes=4)  # 1.6 GB of training state on one device
    fake = Workload(name="w", kind="reasoning", samples_per_step=8, generate=PhaseCost(work_s=1.0),
                    update=PhaseCost(work_s=1.0), memory=big)
    monkeypatch.setattr(api, "profile", lambda *a, **k: fake)
    out = tmp_path / "plan.yaml"
    rc = main(["--config", "configs/grpo_arith.yaml", "--devices", "4", "--hardware", str(hw), "--out", str(out)])
    err = capsys.readouterr().err.strip().splitlines()
    assert rc == 2 and not out.exists()
    assert len(err) == 1 and err[0].startswith("rlinf: error: cluster.component_placement: no plan fits")
    assert "nearest miss" in err[0] and "GiB" in err[0]


def test_best_plan_is_written_as_yaml_override(tmp_path, monkeypatch, capsys):
    import yaml

    fake = Workload(name="w", kind="reasoning", samples_per_step=8, generate=PhaseCost(serial_s=4.0),
                    update=PhaseCost(work_s=8.0), memory=MemorySpec(params=1e3, trainable=1e3))
    monkeypatch.setattr(api, "profile", lambda *a, **k: fake)
    out = tmp_path / "plan.yaml"
    hw = Hardware(name="gpu", device_memory_gib=80)
    monkeypatch.setattr(api, "local_hardware", lambda d: hw)
    assert main(["--config", "configs/grpo_arith.yaml", "--devices", "4", "--out", str(out)]) == 0
    written = yaml.safe_load(out.read_text())
    assert written["cluster"]["component_placement"] == {"actor": "0-1", "rollout,reward": "2-3"}
    assert written["runner"]["schedule"] == "async" and written["algorithm"]["max_staleness"] >= 1
    assert "colocated" in capsys.readouterr().out  # the table lists every candidate
