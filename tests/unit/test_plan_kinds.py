"""The planner on every workflow: agent runs are planned like reasoning runs with the env group in place of
the reward group and without async plans; SFT and reward-model training (one group) have one plan, data
parallel over every device, predicted by its own profile run (profile runs faked: rows by hand)."""

import pytest

from rlinf.config import load_config
from rlinf.errors import InputError
from rlinf.plan.cost_model import PhaseCost, Workload
from rlinf.plan.hardware import Hardware
from rlinf.plan.profile import candidate_overrides, fit_workload, workload_kind
from rlinf.plan.simulate import candidates, plan

GPU = Hardware(name="gpu", device_memory_gib=80)


def test_each_shipped_workflow_has_a_kind():
    kinds = {path: workload_kind(load_config(path, [])) for path in (
        "configs/grpo_arith.yaml", "configs/ppo_cartpole_mlp.yaml", "configs/grpo_calc_agent.yaml",
        "configs/sft_tiny.yaml", "configs/rm_synthetic.yaml")}
    assert list(kinds.values()) == ["reasoning", "embodied", "agent", "single", "single"]


def test_agent_plans_place_the_env_group_and_stay_sync():
    cands = candidates("agent", 4)
    assert {c.schedule for c in cands} == {"sync"}
    assert [c.name for c in cands] == ["colocated", "disagg_1+3", "disagg_2+2", "disagg_3+1"]
    assert cands[2].placement == {"actor": "0-1", "rollout,env": "2-3"}
    # the generation (the episodes) on the rollout's devices, then the update on the actor's: hand-computed
    w = Workload(name="a", kind="agent", samples_per_step=16, generate=PhaseCost(serial_s=2.0),
                 update=PhaseCost(work_s=4.0))
    ranked = plan(w, GPU, 4)
    colocated = next(p for p in ranked if p.candidate.name == "colocated")
    assert colocated.step_s == pytest.approx(2.0 + 4.0 / 4)
    split = next(p for p in ranked if p.candidate.name == "disagg_2+2")
    assert split.step_s == pytest.approx(2.0 + 4.0 / 2)
    assert next(p for p in ranked if p.candidate.name == "disagg_3+1").why == "16 rows do not split over 3 actor ranks"


def _rows(step_s):
    return [{"step": i, "time/step_s": t} for i, t in enumerate(step_s)]


def test_single_group_has_one_plan_predicted_by_its_run():
    cfg = load_config("configs/sft_tiny.yaml", [])
    w = fit_workload("configs/sft_tiny.yaml", cfg, {"all": (_rows([9.0, 9.0, 1.0, 3.0, 2.0]), [])}, 2, GPU)
    assert w.kind == "single" and w.samples_per_step == cfg.data.batch_size
    ranked = plan(w, GPU, 2)
    assert [p.candidate.name for p in ranked] == ["data_parallel"]
    assert ranked[0].step_s == pytest.approx(2.0)  # the median after the 2 warm-up steps
    assert ranked[0].feasible
    over = candidate_overrides(ranked[0].candidate, 2, "single", 0)
    placed = load_config("configs/sft_tiny.yaml", over)
    assert dict(placed.cluster.component_placement) == {"actor": "all"} and placed.cluster.num_devices == 2


def test_unknown_workflow_is_an_input_error(monkeypatch):
    import rlinf.plan.profile as profile

    monkeypatch.setattr(profile, "workflow_name", lambda cfg: "distillation")
    with pytest.raises(InputError, match="runner.workflow"):
        workload_kind(load_config("configs/grpo_arith.yaml", []))


def test_an_embodied_config_that_refuses_a_pipelined_run_gets_no_hybrid_plans():
    cfg = load_config("configs/ppo_cartpole_mlp.yaml", [])
    rows = [{"step": i, "time/step_s": 1.0, "time/rollout_s": 0.64, "time/update_s": 0.3} for i in range(4)]
    acts = [{"group": "rollout", "name": "act", "start": 0.0, "end": 0.002}]
    runs = {"one": (rows, acts), "all": (rows, acts)}  # no "k2": the profile's pipelined run was refused
    w = fit_workload("configs/ppo_cartpole_mlp.yaml", cfg, runs, 2, GPU)
    assert w.max_stages == 1
    names = [p.candidate.name for p in plan(w, GPU, 2)]
    assert "colocated" in names and not any(n.startswith("hybrid") for n in names)
