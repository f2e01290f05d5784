"""No hidden global state: building a policy leaves torch's global RNG alone, starting Ray leaves the
caller's environment alone (thread caps reach workers through their own environment)."""

import os

import torch

from rlinf.config.schema import ClusterConfig, ModelConfig
from rlinf.models.mlp import MLPActorCritic, build_mlp_policy
from rlinf.scheduler import cluster as cluster_mod


def _mlp_cfg():
    return ModelConfig(kind="mlp", hidden_size=16, num_layers=2)


def test_building_the_mlp_policy_does_not_touch_the_global_rng():
    torch.manual_seed(1234)
    before = torch.random.get_rng_state()
    build_mlp_policy(_mlp_cfg(), obs_dim=4, action_dim=3, discrete=False, seed=7)
    assert torch.equal(torch.random.get_rng_state(), before)


def test_same_seed_same_weights_as_the_former_global_seeding():
    """The private generator draws what `torch.manual_seed(seed)` + default construction drew, so
    recorded results of earlier runs (same seeds) still hold."""
    for discrete in (True, False):
        model = build_mlp_policy(_mlp_cfg(), obs_dim=4, action_dim=2, discrete=discrete, seed=3)
        torch.manual_seed(3)
        reference = MLPActorCritic(4, 2, discrete, 16, 2)  # generator None: the global RNG
        for (name, a), (_, b) in zip(model.state_dict().items(), reference.state_dict().items()):
            assert torch.equal(a, b), name
    other = build_mlp_policy(_mlp_cfg(), obs_dim=4, action_dim=2, discrete=True, seed=4)
    assert not torch.equal(other.pi[0].weight, model.pi[0].weight)


def test_starting_ray_leaves_the_callers_environment_alone(monkeypatch):
    """Ray starts inside the run's worker environment (its processes inherit it), and the caller's
    environment is as it was afterwards."""
    monkeypatch.delenv("OMP_NUM_THREADS", raising=False)
    calls = []
    monkeypatch.setattr(cluster_mod.ray, "init", lambda **kwargs: calls.append((kwargs, dict(os.environ))))
    env_before = dict(os.environ)
    c = cluster_mod.Cluster.__new__(cluster_mod.Cluster)
    c.cfg = ClusterConfig(num_devices=1, threads_per_worker=3)
    c.run_prefix, c.workers, c._inherited_env = "rlinf-test-prefix", 5, {}
    seen_by_work = []
    c._init_ray(while_starting=lambda: seen_by_work.append(os.environ.get("OMP_NUM_THREADS")))
    assert dict(os.environ) == env_before
    assert seen_by_work == ["3"]  # the work beside Ray's start runs inside the worker environment, never as it changes
    (kwargs, env_during), = calls
    assert env_during["OMP_NUM_THREADS"] == "3" and env_during["RLINF_RUN_PREFIX"] == "rlinf-test-prefix"
    assert env_during["RLINF_BIND_HOST"] == "127.0.0.1"
    assert kwargs["num_cpus"] == 5  # Ray starts a process ahead for each of 5 workers
    assert c._inherited_env == {k: env_during[k] for k in c._inherited_env} and "OMP_NUM_THREADS" in c._inherited_env
    # (workers get OMP_NUM_THREADS in their own environment: tests/integration/test_worker_group.py
    # test_identity_devices_and_thread_cap)

