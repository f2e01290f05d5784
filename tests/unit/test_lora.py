"""LoRA on the tiny VLA: zero-init equivalence, what trains, the trainable count, config checks,
and the actor's optimizer / checkpoint / rlinf.eval loading with trainable-only weights."""

import json

import numpy as np
import pytest
import torch
from torch import nn

from rlinf.config import ActorConfig, AlgorithmConfig, ModelConfig
from rlinf.errors import InputError
from rlinf.models.lora import LoRALinear, apply_lora, load_weights, sync_tensors
from rlinf.models.policy import build_policy, policy_spec

SPEC = {"image_shape": (32, 32, 3), "state_dim": 5, "obs_dim": 5, "action_dim": 3, "discrete": False,
        "obs_shape": None, "action_low": [-1.0] * 3, "action_high": [1.0] * 3}


def _cfg(rank=4, head="chunk", chunk=2):
    return ModelConfig(kind="vla", hidden_size=32, num_layers=1, num_heads=2, vision_hidden_size=32, vision_layers=1,
                       patch_size=16, instruction_tokens=8, action_head=head, action_chunk=chunk, lora_rank=rank,
                       lora_alpha=8.0)


def _obs(B=4, seed=0):
    g = torch.Generator().manual_seed(seed)
    return {"image": torch.randint(0, 256, (B, 32, 32, 3), generator=g, dtype=torch.uint8),
            "state": torch.randn(B, 5, generator=g), "instruction": ["pick the cube", "push it"] * (B // 2)}


def test_lora_linear_is_the_base_at_init_and_follows_the_formula():
    torch.manual_seed(0)
    base = nn.Linear(6, 5)
    lora = LoRALinear(base, rank=2, alpha=6.0)
    x = torch.randn(3, 6)
    assert torch.equal(lora(x), base(x))  # B = 0
    with torch.no_grad():
        lora.lora_B.weight.normal_()
    A, B = lora.lora_A.weight, lora.lora_B.weight
    want = x @ base.weight.T + base.bias + (6.0 / 2) * (x @ A.T @ B.T)
    assert torch.allclose(lora(x), want, atol=1e-6)
    assert not base.weight.requires_grad and A.requires_grad and B.requires_grad


@pytest.mark.parametrize("head", ["tokens", "chunk"])
def test_wrapped_vla_matches_the_unwrapped_one_at_init(head):
    plain, lora = build_policy(_cfg(0, head), SPEC, 3), build_policy(_cfg(4, head), SPEC, 3)
    base_state = {k.replace(".base.", "."): v for k, v in lora.state_dict().items() if "lora_" not in k}
    assert base_state.keys() == plain.state_dict().keys()
    assert all(torch.equal(v, plain.state_dict()[k]) for k, v in base_state.items())  # same frozen base
    obs = _obs()
    a0, lp0, v0 = plain.act(obs, greedy=True)
    a1, lp1, v1 = lora.act(obs, greedy=True)
    assert torch.equal(a0, a1) and torch.equal(lp0, lp1) and torch.equal(v0, v1)
    e0, e1 = plain.evaluate(obs, a0), lora.evaluate(obs, a0)
    assert all(torch.equal(x, y) for x, y in zip(e0, e1))


def test_trainable_parameters_counted_by_hand():
    model = build_policy(_cfg(4, "chunk", 2), SPEC, 0)
    h, r, ffn, n_tok = 32, 4, 4 * 32, 2 * 3
    lora = 4 * r * (h + h) + 2 * r * (h + ffn) + r * (ffn + h)      # q k v o, gate up, down (1 layer)
    keep = n_tok * h + 2 * (h * h + h) + (5 * h + h) + (h * 2 + 2)  # queries, projector, proprio, value head
    assert sum(p.numel() for p in model.parameters() if p.requires_grad) == lora + keep == 5506
    names = [n for n, p in model.named_parameters() if p.requires_grad]
    assert all(n.split(".")[0] in ("projector", "proprio", "action_queries", "value_head") or "lora_" in n
               for n in names)
    assert set(sync_tensors(model)) == set(names)


def test_only_trainable_parameters_get_gradients_and_are_in_the_optimizer():
    from rlinf.workers.actor.embodied_actor import EmbodiedActorWorker

    actor = EmbodiedActorWorker(ActorConfig(model=_cfg(4), lr=1e-2), AlgorithmConfig(), SPEC, 0, 10)
    trainable = {id(p) for p in actor.model.parameters() if p.requires_grad}
    in_optim = {id(p) for g in actor.optimizer.param_groups for p in g["params"]}
    assert in_optim == trainable and len(trainable) < len(list(actor.model.parameters()))
    obs = _obs()
    lp, ent, v = actor.model.evaluate(obs, actor.model.act(obs)[0])
    (lp.sum() + v.sum()).backward()
    for n, p in actor.model.named_parameters():
        assert (p.grad is not None) == p.requires_grad, n
    assert any(float(p.grad.abs().sum()) > 0 for n, p in actor.model.named_parameters() if "lora_A" not in n
               and p.requires_grad)


def test_lora_on_other_kinds_is_an_input_error_naming_the_key():
    from rlinf.config import load_config

    with pytest.raises(InputError) as e:
        load_config("configs/ppo_cartpole_mlp.yaml", ["actor.model.lora_rank=4"])
    assert e.value.key == "actor.model.lora_rank"
    with pytest.raises(InputError) as e:
        load_config("configs/ppo_cartpole_mlp.yaml", ["actor.model.lora_rank=-1"])
    assert e.value.key == "actor.model.lora_rank"
    cfg = load_config("configs/ppo_maniskill_tinyvla.yaml", ["actor.model.lora_rank=4"])
    assert cfg.actor.model.lora_rank == 4
    assert policy_spec(cfg.actor.model, {**SPEC, "image_shape": (64, 64, 3)})["lora_rank"] == 4


def test_apply_lora_needs_a_target_layer():
    with pytest.raises(ValueError):
        apply_lora(nn.Sequential(nn.Linear(2, 2)), 2, 2.0, lm="0")


def test_load_weights_accepts_full_or_exactly_the_trainable_tensors():
    src, dst = build_policy(_cfg(4), SPEC, 0), build_policy(_cfg(4), SPEC, 0)
    with torch.no_grad():
        for p in src.parameters():
            if p.requires_grad:
                p.add_(0.5)
    load_weights(dst, {k: v.clone() for k, v in sync_tensors(src).items()})
    assert all(torch.equal(v, dst.state_dict()[k]) for k, v in src.state_dict().items())
    partial = dict(sync_tensors(src))
    partial.pop(next(iter(partial)))
    with pytest.raises(ValueError):
        load_weights(dst, partial)
    load_weights(dst, src.state_dict())  # a full state dict still loads


def test_lora_checkpoint_holds_trainable_tensors_and_eval_loads_it(tmp_path):
    from rlinf.config import load_config
    from rlinf.eval import load_policy
    from rlinf.workers.actor.embodied_actor import EmbodiedActorWorker

    cfg = load_config("configs/ppo_maniskill_tinyvla.yaml",
                      ["actor.model.lora_rank=4", "actor.model.num_layers=1", "actor.model.vision_layers=1",
                       "runner.seed=7"])
    spec = {**SPEC, "image_shape": (cfg.env.image_size, cfg.env.image_size, 3), "action_dim": 3}
    actor = EmbodiedActorWorker(cfg.actor, cfg.algorithm, spec, cfg.runner.seed, 10)
    with torch.no_grad():
        for p in actor.trainable:
            p.add_(0.01)
    actor.save_checkpoint(str(tmp_path / "ckpt" / "actor"), {"env_id": cfg.env.id})
    saved = torch.load(tmp_path / "ckpt" / "actor" / "model.pt", weights_only=True)
    assert set(saved) == set(sync_tensors(actor.model)) and len(saved) < len(actor.model.state_dict())
    meta = json.loads((tmp_path / "ckpt" / "actor" / "meta.json").read_text())
    assert meta["weights"] == "trainable" and meta["base_seed"] == 7
    # eval with another runner.seed still rebuilds the run's frozen base from the checkpoint's base_seed
    other = load_config("configs/ppo_maniskill_tinyvla.yaml",
                        ["actor.model.lora_rank=4", "actor.model.num_layers=1", "actor.model.vision_layers=1"])
    policy = load_policy(other, tmp_path / "ckpt", spec)
    want = actor.model.state_dict()
    got = policy.model.state_dict()
    assert set(got) == set(want) and all(torch.equal(got[k], want[k]) for k in want)
    fresh = EmbodiedActorWorker(cfg.actor, cfg.algorithm, spec, cfg.runner.seed, 10)
    fresh.load_checkpoint(str(tmp_path / "ckpt" / "actor"))
    assert all(np.array_equal(fresh.state_dict_numpy()[k], v) for k, v in actor.state_dict_numpy().items())


def test_llama_decoder_gets_seven_adapters_per_layer_and_bf16_bases_work():
    """OpenVLA's LM is a Llama decoder: the default targets cover its projections; adapters stay fp32."""
    from transformers import LlamaConfig, LlamaForCausalLM

    torch.manual_seed(0)
    lm = LlamaForCausalLM(LlamaConfig(vocab_size=50, hidden_size=16, intermediate_size=24, num_hidden_layers=2,
                                      num_attention_heads=2, num_key_value_heads=2)).to(torch.bfloat16)
    ids = torch.randint(0, 50, (2, 5))
    before = lm(input_ids=ids).logits
    assert apply_lora(lm, 4, 4.0, lm="model") == 2 * 7
    assert torch.equal(lm(input_ids=ids).logits, before)
    r = 4
    per_layer = 4 * r * (16 + 16) + 2 * r * (16 + 24) + r * (24 + 16)
    trainable = {n: p for n, p in lm.named_parameters() if p.requires_grad}
    assert sum(p.numel() for p in trainable.values()) == 2 * per_layer
    assert all(p.dtype == torch.float32 for p in trainable.values()) and not lm.lm_head.weight.requires_grad


def _image_batch(rng, n=2, T=4, C=2):
    obs = {"image": rng.integers(0, 256, (n, T, 32, 32, 3), dtype=np.uint8),
           "state": rng.normal(size=(n, T, 5)).astype(np.float32),
           "instruction": np.array([["pick the cube"] * T, ["push it"] * T] * (n // 2))}
    mask = np.ones((n, T, C), np.float32)
    mask[0, -1, 1] = 0.0  # an episode that ended inside a chunk
    return {"obs": obs, "actions": rng.uniform(-1, 1, (n, T, C, 3)).astype(np.float32),
            "logprobs": np.full((n, T, C), -16.0, np.float32), "values": rng.normal(size=(n, T, C)).astype(np.float32),
            "rewards": rng.normal(size=(n, T, C)).astype(np.float32), "dones": np.zeros((n, T, C), bool),
            "final_values": np.zeros((n, T, C), np.float32), "bootstrap_values": np.zeros((n, C), np.float32),
            "mask": mask}


@pytest.mark.parametrize("level", ["action", "chunk"])
def test_micro_batches_accumulate_the_minibatch_gradient(level):
    """embodied_micro_batch_size splits a PPO minibatch into passes; the update matches one pass."""
    from rlinf.workers.actor.embodied_actor import EmbodiedActorWorker

    algo = AlgorithmConfig(adv_estimator="gae", reward_level="chunk", logprob_level=level, update_epochs=1,
                           entropy_coef=0.01)
    batch = _image_batch(np.random.default_rng(0))
    states, metrics = [], []
    for micro in (None, 3):
        actor = EmbodiedActorWorker(ActorConfig(model=_cfg(4), lr=1e-2, grad_clip=0.5, embodied_micro_batch_size=micro),
                                    algo, SPEC, 0, 10)
        metrics.append(actor.update({k: v for k, v in batch.items()}))
        states.append(actor.state_dict_numpy())
    assert any(not np.array_equal(states[0][k], build_policy(_cfg(4), SPEC, 0).state_dict()[k].numpy())
               for k in states[0])  # the step moved the weights
    for k in states[0]:
        np.testing.assert_allclose(states[1][k], states[0][k], rtol=1e-4, atol=1e-6, err_msg=k)
    for k in ("actor/pg_loss", "critic/value_loss", "actor/entropy", "actor/grad_norm", "actor/clipfrac"):
        assert metrics[1][k] == pytest.approx(metrics[0][k], rel=1e-4, abs=1e-6), k
