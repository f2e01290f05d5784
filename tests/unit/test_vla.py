"""Tiny VLA (action tokens and action chunks), CNN policy, and the embodied chunk / group machinery."""

import math

import numpy as np
import pytest
import torch

from rlinf.config import AlgorithmConfig, EnvConfig, ModelConfig
from rlinf.errors import InputError
from rlinf.models.policy import build_policy, policy_spec, state_spec, to_tensors
from rlinf.models.vla import ActionTokenizer
from rlinf.workers.actor.embodied_actor import embodied_advantages

SPEC = {"image_shape": (32, 32, 3), "state_dim": 5, "obs_dim": 5, "action_dim": 3, "discrete": False,
        "obs_shape": None, "action_low": [-1.0] * 3, "action_high": [1.0] * 3}


def _vla(head="tokens", chunk=1, seed=0):
    cfg = ModelConfig(kind="vla", hidden_size=32, num_layers=1, num_heads=2, vision_hidden_size=32, vision_layers=1,
                      patch_size=16, instruction_tokens=8, action_head=head, action_chunk=chunk)
    return build_policy(cfg, SPEC, seed)


def _obs(B=4, seed=0):
    g = torch.Generator().manual_seed(seed)
    return {"image": torch.randint(0, 256, (B, 32, 32, 3), generator=g, dtype=torch.uint8),
            "state": torch.randn(B, 5, generator=g), "instruction": ["pick the cube", "push it"] * (B // 2)}


def test_action_bins_for_minus_one_to_one_and_last_256_ids():
    tok = ActionTokenizer([-1.0, -1.0], [1.0, 1.0], 256, vocab_size=300)
    edges = tok.edges(0)
    assert len(edges) == 257 and edges[0] == -1 and edges[128] == 0 and edges[256] == 1
    assert math.isclose(float(edges[1]), -1 + 2 / 256)  # bin width 2 / 256 = 0.0078125
    a = torch.tensor([[-1.0, 1.0], [0.0, -0.9921], [0.99, -5.0]])
    bins = tok.to_bins(a)
    # floor((a + 1) / 2 * 256), clipped to 0..255: -1 -> 0, 1 -> 255, 0 -> 128, -0.9921 -> 1, 0.99 -> 254
    assert bins.tolist() == [[0, 255], [128, 1], [254, 0]]
    assert tok.to_tokens(bins).tolist() == [[44, 299], [172, 45], [298, 44]]  # 300 - 256 + b
    assert torch.equal(tok.from_tokens(tok.to_tokens(bins)), bins)
    assert float(tok.centers(torch.tensor([0]))[0]) == -1 + 1 / 256
    every = torch.arange(256)[:, None].expand(256, 2)
    assert torch.equal(tok.to_bins(tok.centers(every)), every)  # centres round-trip to their bins


def test_unbounded_action_dims_fall_back_to_minus_one_one():
    tok = ActionTokenizer([-np.inf, 0.0], [np.inf, 2.0], 4, vocab_size=10)
    assert tok.low.tolist() == [-1.0, 0.0] and tok.high.tolist() == [1.0, 2.0]


@pytest.mark.parametrize("head,chunk", [("tokens", 1), ("tokens", 2), ("chunk", 3)])
def test_act_and_evaluate_agree_and_shapes(head, chunk):
    model = _vla(head, chunk)
    obs = _obs()
    actions, logp, values = model.act(obs, generator=torch.Generator().manual_seed(0))
    lead = (4,) if chunk == 1 else (4, chunk)
    assert actions.shape == lead + (3,) and logp.shape == values.shape == lead
    assert ((actions >= -1) & (actions <= 1)).all()
    logp2, entropy, values2 = model.evaluate(obs, actions)
    assert torch.allclose(logp, logp2, atol=1e-5) and torch.allclose(values, values2, atol=1e-6)
    assert entropy.shape == lead and (entropy > 0).all()
    # a different action has a different log-prob (the check above is not vacuous)
    other = model.evaluate(obs, -actions)[0]
    assert not torch.allclose(other, logp)
    greedy = model.act(obs, greedy=True)[0]
    assert torch.equal(greedy, model.act(obs, greedy=True)[0])
    assert torch.allclose(model.value(obs), values, atol=1e-6)


def test_chunk_logprob_is_the_sum_of_its_token_logprobs():
    model = _vla("chunk", 2)
    obs = _obs()
    actions, logp, _ = model.act(obs, generator=torch.Generator().manual_seed(1))
    with torch.no_grad():
        prefix = model._prefix(obs)
        q = model.action_queries.unsqueeze(0).expand(4, -1, -1)
        hidden = model.lm(inputs_embeds=torch.cat([prefix, q], 1)).last_hidden_state[:, prefix.shape[1]:]
        token_logp = torch.log_softmax(hidden @ model.lm_head.weight[model.actions.first_id:].T, -1)
        bins = model.actions.to_bins(actions).reshape(4, 6)
        per_token = token_logp.gather(-1, bins[..., None]).squeeze(-1)  # [B, C * D]
    assert torch.allclose(logp, per_token.view(4, 2, 3).sum(-1), atol=1e-5)      # per action: sum over dims
    assert torch.allclose(logp.sum(-1), per_token.sum(-1), atol=1e-5)            # per chunk: sum over tokens


def test_token_head_logprob_matches_a_step_by_step_decode_without_cache():
    model = _vla("tokens", 1)
    obs = _obs()
    actions, logp, _ = model.act(obs, generator=torch.Generator().manual_seed(2))
    bins = model.actions.to_bins(actions)
    total = torch.zeros(4)
    with torch.no_grad():
        seq = model._prefix(obs)
        for t in range(3):
            last = model.lm(inputs_embeds=seq).last_hidden_state[:, -1]
            lp = torch.log_softmax(last @ model.lm_head.weight[model.actions.first_id:].T, -1)
            total += lp.gather(-1, bins[:, t:t + 1]).squeeze(-1)
            seq = torch.cat([seq, model.lm.embed_tokens(model.actions.to_tokens(bins[:, t]))[:, None]], 1)
    assert torch.allclose(logp, total, atol=1e-5)


def test_vla_same_seed_same_weights_and_a_gradient_step_raises_the_logprob():
    a, b = _vla(seed=3), _vla(seed=3)
    assert all(torch.equal(x, y) for x, y in zip(a.state_dict().values(), b.state_dict().values()))
    obs = _obs()
    actions = a.act(obs, generator=torch.Generator().manual_seed(0))[0]
    opt = torch.optim.Adam(a.parameters(), lr=1e-3)
    before = a.evaluate(obs, actions)[0].detach()
    for _ in range(3):
        opt.zero_grad()
        (-a.evaluate(obs, actions)[0].mean()).backward()
        opt.step()
    assert (a.evaluate(obs, actions)[0].detach().mean() > before.mean() + 0.01)


@pytest.mark.parametrize("discrete", [False, True])
def test_cnn_act_matches_evaluate(discrete):
    spec = dict(SPEC, image_shape=(64, 64, 3), discrete=discrete, action_dim=4 if discrete else 3)
    model = build_policy(ModelConfig(kind="cnn", hidden_size=32), spec, seed=0)
    obs = to_tensors({"image": np.random.default_rng(0).integers(0, 256, (5, 64, 64, 3), dtype=np.uint8),
                      "state": np.ones((5, 5), np.float32), "instruction": np.array(["x"] * 5, dtype=object)})
    actions, logp, values = model.act(obs, generator=torch.Generator().manual_seed(0))
    assert actions.shape == ((5,) if discrete else (5, 3)) and logp.shape == values.shape == (5,)
    logp2, entropy, values2 = model.evaluate(obs, actions)
    assert torch.allclose(logp, logp2, atol=1e-6) and torch.allclose(values, values2) and (entropy > 0).all()
    assert policy_spec(ModelConfig(kind="cnn", hidden_size=32), spec)["image_shape"] == [64, 64, 3]


def test_builder_rejects_policies_that_do_not_fit_the_observations():
    with pytest.raises(InputError) as e:
        build_policy(ModelConfig(kind="mlp"), SPEC, 0)
    assert e.value.key == "actor.model.kind"
    with pytest.raises(InputError) as e:
        build_policy(ModelConfig(kind="vla"), state_spec(4, 2, False), 0)
    assert e.value.key == "actor.model.kind"
    with pytest.raises(InputError) as e:
        build_policy(ModelConfig(kind="cnn", action_chunk=2), SPEC, 0)
    assert e.value.key == "actor.model.action_chunk"


# ---- advantages at chunk / action level and group-relative ------------------------------------------
def _batch(rewards, mask=None, dones=None, C=1):
    r = torch.tensor(rewards, dtype=torch.float32).reshape(len(rewards), -1, C)
    z = torch.zeros_like(r)
    return {"rewards": r, "mask": torch.ones_like(r) if mask is None else torch.tensor(mask, dtype=torch.float32).view_as(r),
            "dones": z if dones is None else torch.tensor(dones, dtype=torch.float32).view_as(r),
            "final_values": z, "values": z, "bootstrap_values": torch.zeros(len(rewards), C)}


def test_chunk_level_sums_the_rewards_of_a_chunk():
    algo = AlgorithmConfig(adv_estimator="gae", gamma=0.5, lam=1.0, reward_level="chunk")
    # one env, two decisions of C = 2 steps: chunk rewards 1 + 2 = 3 and 3 + 4 = 7 (V = 0)
    adv, ret = embodied_advantages(algo, _batch([[[1, 2], [3, 4]]], C=2))
    assert adv.shape == (1, 2) and torch.allclose(adv, torch.tensor([[3 + 0.5 * 7, 7.0]]))
    # the episode ends at the chunk's first step: the masked second step's reward does not count
    adv, _ = embodied_advantages(algo, _batch([[[1, 5], [3, 4]]], mask=[[[1, 0], [1, 1]]],
                                              dones=[[[1, 0], [0, 0]]], C=2))
    assert torch.allclose(adv, torch.tensor([[1.0, 7.0]]))
    # action level: GAE over the 4 env steps, gamma 0.5: A = [1 + .5 * 2 + .25 * 3 + .125 * 4, ...]
    algo_a = AlgorithmConfig(adv_estimator="gae", gamma=0.5, lam=1.0, reward_level="action")
    adv, _ = embodied_advantages(algo_a, _batch([[[1, 2], [3, 4]]], C=2))
    assert adv.shape == (1, 2, 2) and torch.allclose(adv, torch.tensor([[[3.25, 4.5], [5.0, 4.0]]]))


def test_grpo_group_relative_episode_returns():
    algo = AlgorithmConfig(adv_estimator="grpo", group_size=2, reward_level="chunk")
    # 4 envs, T = 3, C = 1; returns (masked sums) 1, 3 | 2, 2 -> group 0: mean 2, std sqrt(2); group 1: std 0
    rewards = [[1, 0, 0], [1, 1, 1], [2, 0, 9], [1, 1, 0]]
    mask = [[1, 1, 1], [1, 1, 1], [1, 1, 0], [1, 1, 1]]  # env 2's episode ended at step 1: the 9 is not counted
    b = _batch(rewards, mask)
    b["group_index"] = torch.tensor([0, 0, 1, 1])
    adv, _ = embodied_advantages(algo, b)
    s = 1 / (math.sqrt(2) + 1e-6)
    expected = torch.tensor([[-s] * 3, [s] * 3, [0.0, 0.0, 0.0], [0.0] * 3])
    assert adv.shape == (4, 3) and torch.allclose(adv, expected, atol=1e-6)


def test_env_worker_steps_a_chunk_open_loop_and_shares_group_seeds():
    from rlinf.workers.env.worker import EnvWorker

    worker = EnvWorker(EnvConfig(id="CartPole-v1", num_envs=2, max_episode_steps=3), stages=1, seed=0, chunk=2)
    obs = worker.reset(seeds=[[7, 7]])[0]
    assert np.array_equal(obs[0], obs[1])  # one seed per group -> the same initial state
    out = worker.step(np.zeros((2, 2), np.int64))
    assert out["mask"].all() and out["rewards"].tolist() == [[1, 1], [1, 1]] and out["episode_envs"] == []
    out = worker.step(np.zeros((2, 2), np.int64))  # step 3 hits the time limit at the chunk's first step
    assert out["mask"].tolist() == [[True, False]] * 2 and out["rewards"].tolist() == [[1, 0], [1, 0]]
    assert out["truncated"].tolist() == [[True, False]] * 2 and out["final_obs"] is not None
    assert sorted(out["episode_envs"]) == [0, 1] and out["episode_returns"] == [3.0, 3.0]


@pytest.mark.parametrize("config", ["configs/gpu/ppo_maniskill_openvla_oft.yaml",
                                    "configs/gpu/grpo_libero_spatial_openvla_oft.yaml"])
def test_gpu_openvla_configs_validate_except_for_the_model_path(config, tmp_path):
    """The GPU recipes pass the embodied checks before any worker starts; only the placeholder path fails."""
    from rlinf.config import load_config
    from rlinf.placement import build_placement
    from rlinf.workflows import components_for
    from rlinf.workflows.embodied import validate

    cfg = load_config(config, [])
    placement = build_placement(cfg.cluster.component_placement, cfg.cluster.num_devices,
                                cfg.rollout.pipeline_stages, components_for(cfg))
    with pytest.raises(InputError) as e:
        validate(cfg, placement)
    assert e.value.key == "actor.model.path"
    validate(load_config(config, [f"actor.model.path={tmp_path}"]), placement)
    with pytest.raises(InputError) as e:  # remote code is opt-in
        validate(load_config(config, [f"actor.model.path={tmp_path}", "actor.model.trust_remote_code=false"]),
                 placement)
    assert e.value.key == "actor.model.trust_remote_code"


@pytest.mark.parametrize("override,key", [
    ("actor.model.action_chunk=3", "env.rollout_steps"),                  # 20 steps are not whole chunks of 3
    ("algorithm.reward_level=action", "algorithm.logprob_level"),          # with logprob_level chunk below
    ("actor.model.kind=mlp", "actor.model.kind"),                          # rgb observations
    ("algorithm.adv_estimator=grpo", "algorithm.group_size"),             # 8 envs are not groups of 3
    ("actor.model.patch_size=24", "actor.model.patch_size"),              # 64 px is not whole patches
])
def test_embodied_vla_config_checks_name_the_key(override, key):
    from rlinf.config import load_config
    from rlinf.placement import build_placement
    from rlinf.workflows import components_for
    from rlinf.workflows.embodied import validate

    base = ["algorithm.logprob_level=chunk", "algorithm.group_size=3"]
    cfg = load_config("configs/ppo_maniskill_tinyvla.yaml", base + [override])
    placement = build_placement(cfg.cluster.component_placement, cfg.cluster.num_devices,
                                cfg.rollout.pipeline_stages, components_for(cfg))
    with pytest.raises(InputError) as e:
        validate(cfg, placement)
    assert e.value.key == key
    validate(load_config("configs/ppo_maniskill_tinyvla.yaml", base), placement)
