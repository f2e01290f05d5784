"""rlinf.plan: the cost model, the schedule simulation and the ranking on hand-computed cases."""

import pytest

from rlinf.plan.cost_model import PhaseCost, Workload, fit_two_points, weight_sync_s
from rlinf.plan.hardware import Hardware
from rlinf.plan.memory import MemorySpec
from rlinf.plan.simulate import Candidate, candidates, collect_time, plan, predict, rank, step_time

GPU = Hardware(name="gpu", device_memory_gib=80, intra_node_bandwidth_gbs=100, inter_node_bandwidth_gbs=10,
               devices_per_node=8)
CPU2 = Hardware(name="cpu", device_memory_gib=4, shared_cores=2)


def reasoning(**kw) -> Workload:
    base = dict(name="r", kind="reasoning", samples_per_step=64, generate=PhaseCost(work_s=8.0),
                reward=PhaseCost(serial_s=0.5), update=PhaseCost(work_s=4.0), sync_fixed_s=0.25, weight_bytes=1e9)
    base.update(kw)
    return Workload(**base)


def embodied(**kw) -> Workload:
    base = dict(name="e", kind="embodied", samples_per_step=100, generate=PhaseCost(serial_s=0.02),
                env=PhaseCost(serial_s=0.06), update=PhaseCost(serial_s=1.0), decisions=10, sync_fixed_s=0.1,
                stage_call_s=0.001)
    base.update(kw)
    return Workload(**base)


def test_phase_time_formula():
    pc = PhaseCost(serial_s=1.0, work_s=8.0, per_rank_s=0.5)
    assert pc.time(1, GPU) == pytest.approx(9.0)
    assert pc.time(4, GPU) == pytest.approx(1.0 + 2.0 + 1.5)
    assert pc.time(4, CPU2) == pytest.approx(1.0 + 4.0 + 1.5)  # 4 virtual devices on 2 cores: eff 2


def test_fit_two_points_recovers_serial_and_work():
    fitted = fit_two_points(t1=9.0, t_many=3.0, devices=4, hw=GPU)  # 1 + 8 / 1, 1 + 8 / 4
    assert fitted.serial_s == pytest.approx(1.0) and fitted.work_s == pytest.approx(8.0)
    slower = fit_two_points(t1=1.0, t_many=1.6, devices=4, hw=GPU)  # got slower: linear in the ranks
    assert slower.work_s == 0.0 and slower.serial_s == pytest.approx(1.0) and slower.per_rank_s == pytest.approx(0.2)
    assert slower.time(2, GPU) == pytest.approx(1.2)


def test_colocated_step_is_sum_of_phases_plus_sync():
    w = reasoning()
    c = Candidate("colocated", {"actor,rollout,reward": "all"}, "sync", train_devices=4, rollout_devices=4)
    t, parts = step_time(w, GPU, c, 4)
    assert t == pytest.approx(8.0 / 4 + 0.5 + 4.0 / 4 + 0.25)  # generate + reward + update + local sync
    assert parts["sync"] == pytest.approx(0.25)


def test_disaggregated_sync_pays_network_sync_and_idles():
    w = reasoning()
    c = Candidate("disagg_1+3", {"actor": "0", "rollout,reward": "1-3"}, "sync", mode="disaggregated",
                  train_devices=1, rollout_devices=3)
    t, _ = step_time(w, GPU, c, 4)
    sync = 0.25 + 1e9 / 100e9
    assert weight_sync_s(w, GPU, True, 4) == pytest.approx(sync)
    assert t == pytest.approx(8.0 / 3 + 0.5 + 4.0 + sync)


def test_async_step_is_max_of_stages_in_steady_state():
    w = reasoning(jitter_s=0.0)
    c = Candidate("async_s1_2+2", {"actor": "0-1", "rollout,reward": "2-3"}, "async", max_staleness=1,
                  mode="disaggregated", train_devices=2, rollout_devices=2)
    t, _ = step_time(w, GPU, c, 4)
    sync = 0.25 + 0.01
    assert t == pytest.approx(max(8.0 / 2 + 0.5, 4.0 / 2 + sync))
    # staleness absorbs jitter: s = 2 predicts less than s = 1
    jittery = reasoning(jitter_s=1.0)
    s1 = step_time(jittery, GPU, c, 4)[0]
    s2 = step_time(jittery, GPU, Candidate(**{**c.__dict__, "max_staleness": 2}), 4)[0]
    assert s1 == pytest.approx(4.5 + 0.4) and s2 == pytest.approx(4.5 + 0.2)


def test_async_on_shared_cores_is_bounded_by_total_work():
    w = reasoning(generate=PhaseCost(work_s=4.0), reward=PhaseCost(), update=PhaseCost(work_s=4.0), weight_bytes=0,
                  sync_fixed_s=0.0)
    c = Candidate("async", {"actor": "0-1", "rollout,reward": "2-3"}, "async", max_staleness=1,
                  mode="disaggregated", train_devices=2, rollout_devices=2)
    # each side alone: 4 / eff(2) = 2 s; together 8 device-seconds on 2 cores: 4 s
    assert step_time(w, CPU2, c, 4)[0] == pytest.approx(4.0)
    assert step_time(w, GPU, c, 4)[0] == pytest.approx(2.0)


def test_hybrid_pipeline_bound():
    w = embodied()
    e, p = 0.06, 0.02
    assert collect_time(w, GPU, 4, 1)[0] == pytest.approx(10 * (e + p))
    for k in (2, 4):
        expected = 10 * (max(e, p) + min(e, p) / k + k * 0.001)
        assert collect_time(w, GPU, 4, k)[0] == pytest.approx(expected)
    hybrid = Candidate("hybrid_k2", {"actor,rollout,env": "all"}, "sync", pipeline_stages=2, mode="hybrid",
                       train_devices=4, rollout_devices=4)
    assert step_time(w, GPU, hybrid, 4)[0] == pytest.approx(0.1 + 10 * (0.06 + 0.01 + 0.002) + 1.0)


def test_candidates_cover_every_mode():
    names = [c.name for c in candidates("embodied", 4)]
    assert names[:3] == ["colocated", "hybrid_k2", "hybrid_k4"]
    assert {"disagg_1+3", "disagg_2+2", "disagg_3+1", "async_s1_2+2", "async_s2_3+1"} <= set(names)
    assert len(candidates("reasoning", 4)) == 1 + 3 * 3
    big = candidates("reasoning", 1024)
    assert len(big) < 70 and all(1 <= c.train_devices < 1024 for c in big[1:])


def test_ranking_orders_feasible_by_step_time_then_infeasible():
    w = reasoning()
    ranked = plan(w, GPU, 4)
    times = [p.step_s for p in ranked if p.feasible]
    assert times == sorted(times)
    # linear phases: colocated 2 + 0.5 + 1 + 0.25 = 3.75 s beats every split (idle devices, network sync)
    assert ranked[0].candidate.name == "colocated"
    # a long tail (4 s of generation that no device count shortens): colocated 4 + 0.5 + 2 + 0.25 = 6.75 s,
    # async 2+2 max(4 + 0.5, 8 / 2 + 0.26) = 4.5 s
    tail = reasoning(generate=PhaseCost(serial_s=4.0), update=PhaseCost(work_s=8.0))
    best = plan(tail, GPU, 4)[0]
    assert best.candidate.name.startswith("async_s") and best.candidate.name.endswith("2+2")
    assert best.step_s == pytest.approx(4.5)
    w = reasoning(memory=MemorySpec(params=1e6, trainable=1e6))
    infeasible = predict(w, Hardware(name="tiny", device_memory_gib=1e-9), ranked[0].candidate, 4)
    assert rank([infeasible, ranked[1]])[-1] is infeasible


def test_plans_rlinf_would_refuse_are_infeasible():
    w = reasoning()  # 64 rows: 3 actor ranks cannot split them
    by = {p.candidate.name: p for p in plan(w, GPU, 4)}
    assert not by["disagg_3+1"].feasible and "3 actor ranks" in by["disagg_3+1"].why
    assert by["disagg_2+2"].feasible
    e = embodied(memory=MemorySpec(params=1e3, trainable=1e3, num_envs=8))
    by = {p.candidate.name: p for p in plan(e, GPU, 4)}
    assert not by["hybrid_k4"].feasible and "2 envs per rank < 4 stages" in by["hybrid_k4"].why
    assert not by["disagg_3+1"].feasible  # 8 envs on one env rank, 3 actor ranks
    assert "8 envs do not split over 3 env ranks" in by["disagg_1+3"].why
    assert by["hybrid_k2"].feasible and by["disagg_2+2"].feasible


def test_table_marks_plans_the_profile_cannot_tell_apart():
    from rlinf.plan.__main__ import table

    ranked = plan(reasoning(), GPU, 4)
    text = table(ranked, noise_s=0.0)
    assert "~" not in text and text.splitlines()[1].split()[1] == "colocated"
    gap = ranked[1].step_s - ranked[0].step_s
    marked = table(ranked, noise_s=gap / 2 + 1e-9).splitlines()
    assert "~" in marked[2] and "~" not in marked[1] and marked[-1].startswith("~: within 2 x")


def test_three_points_interpolate_past_the_core_count():
    from rlinf.plan.cost_model import fit_points
    from rlinf.plan.profile import mid_devices

    # 1, 2 and 4 ranks on 2 shared cores: fastest at 2, slower again at 4 (ranks contend)
    pc = fit_points({1: 1.5, 2: 1.0, 4: 1.3}, 4, CPU2)
    assert [pc.time(d, CPU2) for d in (1, 2, 3, 4)] == pytest.approx([1.5, 1.0, 1.15, 1.3])
    assert pc.time(6, CPU2) == pytest.approx(1.6)  # the last segment extended
    assert fit_points({1: 9.0, 4: 3.0}, 4, GPU).points == ()  # two points: the serial + work form
    assert mid_devices(CPU2, 4) == 2 and mid_devices(CPU2, 2) is None and mid_devices(GPU, 4) is None
