"""GPU only (skipped without CUDA, without `vllm`, or with vLLM's CPU build): the vLLM engine on a GPU
against the transformers engine on the same GPU and a teacher-forced forward on the host. Greedy
responses are the same tokens, behaviour log-probs agree within a tolerance, a weight load replaces the
engine's weights, and sleep / wake (GPU only) keeps them. Run with `make test-gpu`."""

import importlib.util

import pytest
import torch

from rlinf.config import ModelConfig, RolloutConfig
from rlinf.scheduler import WorkerGroup
from rlinf.workers.rollout.worker import RolloutWorker
from tests.vllm_helpers import publish, teacher_forced

pytestmark = [pytest.mark.timeout(600),
              pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device"),
              pytest.mark.skipif(importlib.util.find_spec("vllm") is None, reason="needs the vllm package")]

VOCAB, EOS, PAD = 15, 2, 0
MODEL = ModelConfig(hidden_size=64, num_layers=2, num_heads=2)  # fp32, head size 32
PROMPTS = [[3, 4, 13, 5, 14], [7, 7, 13, 9, 14], [12, 14], [4, 5, 6, 7, 8, 9, 10], [3], [11, 13, 3, 14]]
ATOL = 1e-2  # fp32 on two engines and two devices (GPU kernels, possibly TF32, vs host): not bit equality


def _skip_cpu_build() -> None:
    from vllm.platforms import current_platform

    if not current_platform.is_cuda():
        pytest.skip(f"vllm here is the {current_platform.device_type} build, not CUDA")


@pytest.fixture(scope="module")
def engines(gpu_cluster):
    """A vLLM rollout and a transformers rollout, both on GPU 0 (vLLM takes a quarter of its memory)."""
    _skip_cpu_build()
    from rlinf.workers.rollout.vllm_worker import VLLMRolloutWorker

    cfg = RolloutConfig(max_new_tokens=8, temperature=0.7, vllm_gpu_memory_utilization=0.25)
    vllm_group = WorkerGroup(gpu_cluster, VLLMRolloutWorker, "vllm_gpu", [0], args=(cfg, MODEL, VOCAB, EOS, PAD, 1),
                             init_dist=False)
    hf_group = WorkerGroup(gpu_cluster, RolloutWorker, "hf_gpu", [0], args=(cfg, MODEL, VOCAB, EOS, PAD, 1),
                           init_dist=False)
    yield cfg, vllm_group, hf_group
    vllm_group.shutdown()
    hf_group.shutdown()


def test_greedy_matches_transformers_and_sampled_logprobs_match_teacher_forcing(engines):
    """Same weights in both engines: greedy tokens equal, greedy log-probs within ATOL; sampled at
    temperature 0.7, vLLM's behaviour log-probs are the tempered distribution's (teacher-forced on the
    host), and the same seed gives the same samples."""
    cfg, vllm_group, hf_group = engines
    model, refs = publish(MODEL, VOCAB, seed=11)
    assert vllm_group.call("load_weights", refs, 3).wait() == [3]
    hf_group.call("load_weights", refs, 3).wait()
    greedy = vllm_group.call("generate", PROMPTS, greedy=True).wait()[0]
    reference = hf_group.call("generate", PROMPTS, greedy=True).wait()[0]
    assert greedy["version"] == 3
    assert torch.equal(greedy["responses"], reference["responses"])
    assert torch.equal(greedy["mask"], reference["mask"])
    assert torch.allclose(greedy["logprobs"], reference["logprobs"], atol=ATOL)

    prompts = PROMPTS * 4
    sampled = vllm_group.call("generate", prompts, seed=5).wait()[0]
    expected = teacher_forced(model, prompts, sampled, cfg.temperature)
    assert torch.allclose(sampled["logprobs"], expected * sampled["mask"], atol=ATOL)
    raw = teacher_forced(model, prompts, sampled, 1.0) * sampled["mask"]
    assert not torch.allclose(expected * sampled["mask"], raw, atol=10 * ATOL)  # the check above sees temperature
    again = vllm_group.call("generate", prompts, seed=5).wait()[0]
    assert torch.equal(again["responses"], sampled["responses"])


def test_weight_load_replaces_weights_and_sleep_wake_keeps_them(engines):
    """A second load changes the greedy outputs (and they equal the transformers engine's again); sleep
    level 1 and wake up report True on CUDA and leave the greedy outputs unchanged."""
    _, vllm_group, hf_group = engines
    _, refs_a = publish(MODEL, VOCAB, seed=11)
    vllm_group.call("load_weights", refs_a, 3).wait()
    greedy_a = vllm_group.call("generate", PROMPTS, greedy=True).wait()[0]
    _, refs_b = publish(MODEL, VOCAB, seed=12)
    assert vllm_group.call("load_weights", refs_b, 4).wait() == [4]
    hf_group.call("load_weights", refs_b, 4).wait()
    greedy_b = vllm_group.call("generate", PROMPTS, greedy=True).wait()[0]
    assert greedy_b["version"] == 4
    assert not torch.equal(greedy_b["responses"], greedy_a["responses"])
    assert torch.equal(greedy_b["responses"], hf_group.call("generate", PROMPTS, greedy=True).wait()[0]["responses"])

    assert vllm_group.call("sleep").wait() == [True]
    assert vllm_group.call("wake_up").wait() == [True]
    after = vllm_group.call("generate", PROMPTS, greedy=True).wait()[0]
    assert torch.equal(after["responses"], greedy_b["responses"])
    assert torch.allclose(after["logprobs"], greedy_b["logprobs"], atol=1e-5)
