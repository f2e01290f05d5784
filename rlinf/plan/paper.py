"""Plans on paper: published workloads planned from per-device rates of a hardware file, nothing run.

    python -m rlinf.plan --paper reasoning_7b --hardware configs/hardware/h100_80g.yaml --devices 8 64 1024

Two workloads (their shapes are assumptions stated here; the device rates come from the hardware file):

reasoning_7b  GRPO on a 7.6 B dense model (Qwen2.5-7B shapes: h 3584, 28 layers, GQA with 4 of 28 KV heads,
              bf16), 512 prompts x 8 samples per step, prompts 512 tokens, responses 2,048 tokens on average
              and 8,192 at most (a long-CoT length distribution).
  generation (one engine per GPU): decode is memory bound; a step over c concurrent sequences reads the
      weights and their KV cache: t_dec(c) = (P*b + c * ctx * kv) / (BW * decode_efficiency), ctx = prompt +
      mean / 2. Body on d GPUs: t(d) = mean * P*b / BWe + n * mean * (P*b / c_max + ctx * kv) / BWe / d
      (the latency floor of one decode per token plus batched work at c_max = 256 sequences per engine;
      within the floor of the exact max(floor + KV/d, batched/d) roofline);
      tail (sync schedules only): (max - mean) decode steps at a small batch, (max - mean) * P*b / BWe;
  update: 8 * P * tokens FLOPs (6 forward + backward, 2 log-prob recomputation) / (d * peak * train_mfu);
  weight sync: P*b over NVLink inside a node / the network beyond it; colocated also offloads and onloads the
      training state each step: 2 x (P*b + 12 * P) / (d * host_bandwidth).

openvla_oft_7b_maniskill  PPO on OpenVLA-OFT (7.5 B: Llama-2-7B + vision towers, bf16, parallel decoding
              of an 8-action chunk) in ManiSkill3 GPU simulation with 128 px RGB: 2,048 envs, 80 env steps per
              episode = 10 decisions of 8 actions per step, ~350 tokens per decision (image patches,
              instruction, action tokens).
  env per decision: envs x 8 / (d * env_steps_per_s);  policy per decision: 2 * P * 350 * envs FLOPs / (d *
  peak * train_mfu);  update: 6 * P * 350 * samples / (d * peak * train_mfu);  memory: 30 MB per env
  (simulation + render buffers, assumption).
"""

from dataclasses import replace
from typing import Dict, List

from rlinf.plan.cost_model import PhaseCost, Workload
from rlinf.plan.hardware import Hardware
from rlinf.plan.memory import MemorySpec, activation_bytes_per_token
from rlinf.plan.simulate import Prediction, plan

ANCHORS = {
    "reasoning_7b": "verl fully async (disaggregated, streaming rollouts): about 2x over colocated at 32-64 GPUs",
    "openvla_oft_7b_maniskill": "RLinf-VLA: hybrid (pipelined env / policy) 1.61-1.88x over colocated",
}


def reasoning_7b(hw: Hardware) -> Workload:
    P, b, h, L = 7.6e9, 2, 3584, 28
    kv = 2 * L * h * b * 4 / 28  # bytes per token, GQA 4 of 28 KV heads
    prompts, group, prompt, mean, longest = 512, 8, 512, 2048, 8192
    n = prompts * group
    bwe = hw.memory_bandwidth_gbs * 1e9 * hw.decode_efficiency
    ctx = prompt + mean / 2
    generate = PhaseCost(serial_s=mean * P * b / bwe, work_s=n * mean * (P * b / 256 + ctx * kv) / bwe)
    tokens = n * (prompt + mean)
    update = PhaseCost(work_s=8 * P * tokens / (hw.flops_per_device * hw.train_mfu))
    mem = MemorySpec(params=P, trainable=P, param_bytes=b, micro_batch=1,
                     activation_bytes_per_sample=activation_bytes_per_token(h, L, checkpointing=True) * (prompt + longest),
                     kv_bytes_per_sample=kv * (prompt + mean), rollout_batch=n, max_concurrent=256, offload=True)
    return Workload(name="reasoning_7b", kind="reasoning", samples_per_step=n, generate=generate, update=update,
                    sync_fixed_s=P * b / (hw.intra_node_bandwidth_gbs * 1e9), weight_bytes=P * b,
                    tail_s=(longest - mean) * P * b / bwe, memory=mem,
                    switch=PhaseCost(work_s=2 * (P * b + 12 * P) / (hw.host_bandwidth_gbs * 1e9)))


def openvla_oft_7b_maniskill(hw: Hardware) -> Workload:
    P, b, h, L = 7.5e9, 2, 4096, 32
    envs, decisions, chunk, tokens = 2048, 10, 8, 350
    flops = hw.flops_per_device * hw.train_mfu
    env = PhaseCost(serial_s=0.005, work_s=envs * chunk / max(hw.env_steps_per_s, 1e-9))
    policy = PhaseCost(serial_s=0.005, work_s=2 * P * tokens * envs / flops)
    update = PhaseCost(work_s=6 * P * tokens * envs * decisions / flops)
    mem = MemorySpec(params=P, trainable=P, param_bytes=b, micro_batch=8,
                     activation_bytes_per_sample=activation_bytes_per_token(h, L, checkpointing=True) * tokens,
                     kv_bytes_per_sample=0.0, rollout_batch=envs, env_bytes_per_env=30e6, num_envs=envs,
                     offload=True)
    return Workload(name="openvla_oft_7b_maniskill", kind="embodied", samples_per_step=envs * decisions,
                    generate=policy, env=env, update=update, decisions=decisions,
                    sync_fixed_s=P * b / (hw.intra_node_bandwidth_gbs * 1e9), weight_bytes=P * b,
                    stage_call_s=0.002, memory=mem, max_stages=4,
                    switch=PhaseCost(work_s=2 * (P * b + 12 * P) / (hw.host_bandwidth_gbs * 1e9)))


WORKLOADS = {"reasoning_7b": reasoning_7b, "openvla_oft_7b_maniskill": openvla_oft_7b_maniskill}


def summary(name: str, hw: Hardware, devices: int) -> Dict:
    """Best plan, colocated, and the best of the family the anchor measures (async for reasoning, hybrid
    for embodied) on `devices` devices, with the speedup of that family over colocated."""
    w = WORKLOADS[name](hw)
    ranked = plan(w, hw, devices)
    feasible = [p for p in ranked if p.feasible]
    by = {p.candidate.name: p for p in ranked}
    colo = by["colocated"]
    family = [p for p in feasible if (p.candidate.mode == "hybrid" if w.kind == "embodied" else p.candidate.schedule == "async")]
    fam = family[0] if family else None
    return {"devices": devices, "best": feasible[0] if feasible else None, "colocated": colo, "family": fam,
            "speedup": colo.step_s / fam.step_s if fam and colo.feasible else None, "feasible": len(feasible),
            "collect_speedup": colo.parts["collect"] / fam.parts["collect"] if fam else None,
            "candidates": len(ranked)}


def _fmt(p: Prediction) -> str:
    return f"{p.candidate.name} {p.step_s:.1f} s" if p is not None else "-"


def paper_report(name: str, hw: Hardware, devices: List[int]) -> str:
    """A markdown table of the plans on each device count, and the anchor to compare with."""
    if name not in WORKLOADS:
        from rlinf.errors import InputError
        raise InputError(f"unknown paper workload (known: {', '.join(WORKLOADS)})", key="--paper")
    lines = [f"{name} on {hw.name}; anchor: {ANCHORS[name]}",
             "| GPUs | best plan | samples/s | colocated | best " + ("hybrid" if "oft" in name else "async") +
             (" | speedup over colocated (step / collection) |" if "oft" in name else " | speedup over colocated |") +
             " feasible plans |", "|---|---|---|---|---|---|---|"]
    for d in devices:
        s = summary(name, hw, d)
        best = s["best"]
        colo = s["colocated"]
        colo_txt = _fmt(colo) if colo.feasible else f"infeasible ({colo.why})"
        sp = f"{s['speedup']:.2f}x" if s["speedup"] else "-"
        if s["speedup"] and "oft" in name:
            sp += f" / {s['collect_speedup']:.2f}x"
        lines.append(f"| {d} | {_fmt(best)} | {best.samples_per_s:.1f} | {colo_txt} | {_fmt(s['family'])} | {sp} | "
                     f"{s['feasible']}/{s['candidates']} |" if best else f"| {d} | none fits | - | {colo_txt} | - | - | 0 |")
    w = WORKLOADS[name](hw)
    if w.kind == "embodied":
        d = devices[0]
        balanced = hw.env_steps_per_s * w.env.work_s / max(w.generate.work_s, 1e-12)
        lines.append(f"per decision on {d} GPUs: env {w.env.time(d, hw):.3f} s, policy {w.generate.time(d, hw):.3f} s "
                     f"(hardware env_steps_per_s {hw.env_steps_per_s:g}; env = policy at {balanced:.0f} steps/s per GPU)")
        for rate in (balanced, balanced / 2):
            s = summary(name, replace(hw, env_steps_per_s=rate), d)
            lines.append(f"sensitivity, env_steps_per_s {rate:.0f}: hybrid over colocated on {d} GPUs "
                         f"{s['speedup']:.2f}x per step, {s['collect_speedup']:.2f}x in collection")
    return "\n".join(lines)
