"""Greedy evaluation inside the env workers (sync schedule, one pipeline stage, env ranks == rollout ranks):
one `EnvWorker.run_eval` per env rank, which takes the greedy actions from its paired rollout rank's policy itself
(a local copy of a small policy, or a direct call per step), gives
the same episodes, in the same order, as the controller-driven loop (a greedy `act` and an `eval_step` per env
step), on a discrete and a continuous MLP task and on LIBERO with the tiny VLA (dict observations), with
uneven quotas and with an idle env rank; both paths keep raising a clear error at the EVAL_MAX_STEPS bound.
(Action chunks, C > 1, need ManiSkill or LIBERO with an OFT head: eval_step runs them the same on both
paths, only the caller of `act` differs.)"""

from contextlib import contextmanager

import pytest

import rlinf.workflows.embodied as embodied
from rlinf.config import load_config
from rlinf.placement import build_placement
from rlinf.workflows import components_for

pytestmark = pytest.mark.timeout(300)

# 2 env ranks, 2 rollout ranks. CartPole / Pendulum (MLP): 2 x 3 envs, 7 episodes -> quotas 4 / 3 per rank,
# [2, 1, 1] / [1, 1, 1] per env. LIBERO (tiny VLA, image + instruction observations): 2 x 2 envs, 3 episodes.
LAYOUT = ["runner.progress_bar=false", "cluster.num_devices=2",
          "cluster.component_placement={actor: 0, rollout: 0-1, env: 0-1}"]
MLP = ["env.num_envs=3", "env.rollout_steps=8", "actor.global_batch_size=24", "env.eval_episodes=7",
       "env.max_episode_steps=30"]
CASES = {
    "cartpole": ("configs/ppo_cartpole_mlp.yaml", [*MLP, "env.id=CartPole-v1"], None, 7),
    "pendulum": ("configs/ppo_cartpole_mlp.yaml", [*MLP, "env.id=Pendulum-v1"], None, 7),
    "libero_vla": ("configs/grpo_libero_spatial_tinyvla.yaml",
                   ["env.num_envs=2", "env.rollout_steps=4", "env.max_episode_steps=4", "env.eval_episodes=3",
                    "actor.model.num_layers=1", "actor.model.vision_layers=1"], "libero", 3),
}


@contextmanager
def _phase(name, group="controller"):
    yield


def _events(wf):
    """Names of the env workers' group calls since the last look (the timeline's per-rank events)."""
    return {e["name"] for rank_events in wf.env.call("_rlinf_pop_events").wait() for e in rank_events}


def _rollout_calls(wf):
    """Names of the calls the rollout ranks ran since the last look (env ranks' direct calls included)."""
    return {e["name"] for rank_events in wf.rollout.call("_rlinf_pop_events").wait() for e in rank_events}


def _evaluate(wf, direct):
    wf.direct = direct
    _events(wf)
    metrics = wf.evaluate()
    episodes = wf.env.call("eval_results").wait()  # per rank, in the order the episodes were counted
    names = _events(wf)
    assert ("run_eval" in names) == direct and ("eval_step" in names) == (not direct), names
    return metrics, episodes


@pytest.mark.parametrize("case", ["cartpole", "pendulum", pytest.param("libero_vla", marks=pytest.mark.extended)])
def test_direct_evaluation_matches_the_controller_loop(cluster, tmp_path, monkeypatch, case):
    config, overrides, needs, total = CASES[case]
    if needs:
        pytest.importorskip(needs)
    cfg = load_config(config, [*LAYOUT, *overrides, f"runner.output_dir={tmp_path / 'run'}"])
    placement = build_placement(cfg.cluster.component_placement, cfg.cluster.num_devices,
                                cfg.rollout.pipeline_stages, components_for(cfg))
    wf = embodied.EmbodiedWorkflow(cfg, placement, _phase)
    try:
        wf.start(cluster)
        assert wf.direct and wf.env.size == wf.rollout.size == 2
        wf.train(wf.collect(0))  # a trained policy, not the initial one
        wf.rollout.call("_rlinf_pop_events").wait()
        direct, direct_eps = _evaluate(wf, True)
        # a small policy: each env rank fetched a copy once and asked its rollout rank nothing else
        calls = _rollout_calls(wf)
        assert "policy_snapshot" in calls and "act" not in calls, calls
        loop, loop_eps = _evaluate(wf, False)
        assert direct == loop and direct_eps == loop_eps
        assert direct["num_episodes"] == total
        cfg.env.eval_local_policy_max_params = 0  # asked per decision: the same episodes again
        _rollout_calls(wf)
        asked, asked_eps = _evaluate(wf, True)
        assert asked == loop and asked_eps == loop_eps and {"policy_snapshot", "act"} <= _rollout_calls(wf)
        assert [len(e["returns"]) for e in direct_eps] == [total // 2 + total % 2, total // 2]

        cfg.env.eval_episodes = 1  # env rank 1 has no episode: only rank 0 evaluates
        direct, direct_eps = _evaluate(wf, True)
        loop, loop_eps = _evaluate(wf, False)
        assert direct == loop and direct_eps == loop_eps and direct["num_episodes"] == 1

        monkeypatch.setattr(embodied, "EVAL_MAX_STEPS", 3)  # 30- / 4-step episodes do not end in 3 steps
        for path in (True, False):
            wf.direct = path
            with pytest.raises(RuntimeError, match="evaluation did not finish 1 episodes within 3 steps"):
                wf.evaluate()
    finally:
        for group in wf.groups:
            group.shutdown()
