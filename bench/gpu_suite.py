"""GPU benchmark kit: the figures a lent GPU host should produce, in <= 10 minutes on one GPU.

    python -m bench.gpu_suite [--out gpu_suite.json] [--budget-s 570]      (or: bash bench/gpu_suite.sh)

Without CUDA it prints one line and exits 2. Otherwise each part runs in its own subprocess (ManiSkill
allows one GPU simulation per process; a part that fails or hangs cannot take the others down) under a
time limit; the parts' `RESULT {json}` lines are collected into one JSON file, also printed as this
script's own last line `RESULT {json}`. A part that fails is recorded with its exit code and the tail
of its output, never dropped.

Parts (all weights random, built from configs; nothing is downloaded):
- sync_ipc:     the colocated hand-off bound on GPU 0 for Qwen2.5-0.5B shapes (bench.reshard's `500m`,
                bf16, ~0.99 GB): a target process allocates the arena, a source process on the same GPU
                opens it through CUDA IPC (`rlinf.reshard.transport._open_arena`) and copies the model's
                bytes in; compared with one device-to-device copy of the same bytes in one process.
                Bit-exact check: digest of the arena against the source's bytes.
- sync_engine:  the resharding engine's colocated sync (ReshardSource -> ReshardTarget, dp 1 -> 1
                replica, both on GPU 0, bench.reshard's workers with their tensors on the GPU), timed best
                of N after a warm-up, with per-slice digests. Its header exchange goes over the link's
                NCCL group, whose two ranks then share one GPU; NCCL does not support that, so on a
                one-GPU host this part is expected to fail (recorded as such) until the library sends
                colocated headers another way.
- rollout:      generation tokens/s of the transformers engine (`rlinf.workers.rollout.sampling.sample`,
                KV cache) and of vLLM (`LLM` as `VLLMRolloutWorker` builds it: eager, token-id prompts,
                processed log-probs) on the same 0.5B-shape bf16 weights, 64 prompts x 128 new tokens, EOS
                never sampled; best of 3 alternating repeats (bench.rollout_engines' method, on the GPU).
- embodied_*:   ManiSkill PushCube-v1 on the PhysX GPU sim (256 envs, 32 decisions per collection, MLP
                actor-critic: configs/ppo_maniskill_pushcube_mlp.yaml), collection speed per placement
                mode of bench.embodied_pipeline on one GPU: colocated k = 1, hybrid k = 2 and k = 4
                (disaggregated needs a second device). Hybrid builds k GPU simulations in the env worker's
                process, which ManiSkill may refuse; such a mode is recorded as failed.
"""

import argparse
import hashlib
import json
import math
import os
import platform
import signal
import subprocess
import sys
import tempfile
import time
from typing import Dict, List, Optional

import torch

from bench.reshard import MODELS, BenchSource, BenchTarget, qwen2_params

PARTS = {  # name: (arguments of its subprocess, time limit in s); the limits add up to 570 s
    "sync_ipc": (["--part", "sync_ipc"], 110),
    "sync_engine": (["--part", "sync_engine"], 60),
    "rollout": (["--part", "rollout"], 190),
    "embodied_colocated_k1": (["--part", "embodied", "--mode", "colocated_k1"], 70),
    "embodied_hybrid_k2": (["--part", "embodied", "--mode", "hybrid_k2"], 70),
    "embodied_hybrid_k4": (["--part", "embodied", "--mode", "hybrid_k4"], 70),
}
NO_CUDA = "gpu_suite: no CUDA device here (torch.cuda.is_available() is False); run it on a GPU host"
REPEATS = 5


def _digest(t: torch.Tensor) -> str:
    data = t.detach().contiguous().reshape(-1).view(torch.uint8).cpu().numpy()
    return hashlib.blake2b(data.data, digest_size=16).hexdigest()


def _sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


# ---- sync parts: workers ---------------------------------------------------------------------------
class GpuSource(BenchSource):
    """bench.reshard's source with its shards on the worker's GPU, plus the raw IPC copy."""

    def setup(self, params, replicas: int, tp: int, seed: int = 0) -> int:
        from rlinf.reshard import SourceLayout, TargetLayout, make_plan

        self.plan = make_plan(params, SourceLayout(self.world_size), TargetLayout(replicas, tp))
        self.local: Dict[str, torch.Tensor] = {}
        for i, (name, _, dtype) in enumerate(params):
            g = torch.Generator(device=self.device).manual_seed(seed * 100003 + i * 97 + self.rank)
            self.local[name] = torch.randn(self.plan.src_shape(name, self.rank), generator=g, dtype=dtype,
                                           device=self.device)
        self.sources = {}
        return sum(t.numel() for t in self.local.values())

    def digests(self) -> Dict[tuple, str]:
        return {(t.name, t.src, t.dst, t.box): _digest(self.local[t.name][t.src_index()])
                for t in self.plan.transfers if t.src == self.rank}

    def model_bytes(self) -> int:
        return sum(t.numel() * t.element_size() for t in self.local.values())

    def ipc_copy(self, handle: dict, repeats: int) -> Dict[str, object]:
        """Open the arena behind `handle` (CUDA IPC) and copy every shard's bytes into it back to back;
        the best of `repeats` timed copies, and the digest of the bytes written."""
        from rlinf.reshard.transport import _open_arena

        arena = _open_arena(handle)
        if arena is None:
            return {"opened": False}
        flat = [t.reshape(-1).view(torch.uint8) for t in self.local.values()]
        best = math.inf
        for _ in range(repeats + 1):  # the first is a warm-up
            _sync(self.device)
            start = time.perf_counter()
            offset = 0
            for f in flat:
                arena[offset:offset + f.numel()].copy_(f)
                offset += f.numel()
            _sync(self.device)
            best = min(best, time.perf_counter() - start)
        return {"opened": True, "seconds": best, "digest": _digest(torch.cat(flat))}

    def device_memcpy(self, repeats: int) -> float:
        """One device-to-device copy of the model's bytes in this process: best of `repeats`."""
        src = torch.cat([t.reshape(-1).view(torch.uint8) for t in self.local.values()])
        dst = torch.empty_like(src)
        best = math.inf
        for _ in range(repeats + 1):
            _sync(self.device)
            start = time.perf_counter()
            dst.copy_(src)
            _sync(self.device)
            best = min(best, time.perf_counter() - start)
        return best


class GpuTarget(BenchTarget):
    """bench.reshard's target (its ReshardTarget arenas are on the worker's GPU) plus a bare IPC arena."""

    def make_ipc_arena(self, nbytes: int) -> dict:
        from torch.multiprocessing.reductions import reduce_tensor

        self.ipc_arena = torch.zeros(nbytes, dtype=torch.uint8, device=self.device)
        return {"kind": "cuda_ipc", "uuid": str(torch.cuda.get_device_properties(self.device).uuid),
                "ipc": reduce_tensor(self.ipc_arena), "nbytes": nbytes}

    def ipc_digest(self) -> str:
        _sync(self.device)
        return _digest(self.ipc_arena)

    def digests(self, key: str) -> Dict[tuple, str]:
        target = self.targets[key]
        return {(t.name, t.src, t.dst, t.box): _digest(target.tensors[t.name][t.dst_index()])
                for t in target.plan.transfers if t.dst == target.rank}


def _gpu_cluster(wait_timeout_s: float = 300.0):
    from rlinf.config import ClusterConfig
    from rlinf.scheduler import Cluster

    return Cluster(ClusterConfig(num_devices=1, device_type="cuda", wait_timeout_s=wait_timeout_s))


def part_sync_ipc(model: str = "500m") -> dict:
    """Colocated CUDA IPC hand-off of the model's bytes vs one in-process device copy (see the docstring)."""
    from rlinf.scheduler import WorkerGroup

    params = qwen2_params(model)
    cluster = _gpu_cluster()
    src = tgt = None
    try:
        src = WorkerGroup(cluster, GpuSource, "gs_src", [0], init_dist=False)
        tgt = WorkerGroup(cluster, GpuTarget, "gs_tgt", [0], init_dist=False)
        n_params = src.call("setup", params, 1, 1).wait()[0]
        nbytes = src.call("model_bytes").wait()[0]
        handle = tgt.call("make_ipc_arena", nbytes).wait()[0]
        ipc = src.call("ipc_copy", handle, REPEATS).wait()[0]
        memcpy = src.call("device_memcpy", REPEATS).wait()[0]
        out = {"model": model, "params": n_params, "model_mb": round(nbytes / 2**20, 1), "ipc_opened": ipc["opened"],
               "memcpy_s": round(memcpy, 5), "memcpy_gb_per_s": round(nbytes / memcpy / 1e9, 1)}
        if ipc["opened"]:
            out.update({"ipc_copy_s": round(ipc["seconds"], 5), "ipc_gb_per_s": round(nbytes / ipc["seconds"] / 1e9, 1),
                        "ipc_vs_memcpy": round(ipc["seconds"] / memcpy, 3),
                        "bit_exact": tgt.call("ipc_digest").wait()[0] == ipc["digest"]})
        return out
    finally:
        for group in (src, tgt):
            if group is not None:
                group.shutdown()
        cluster.shutdown()


def part_sync_engine(model: str = "500m", timeout_s: float = 30.0) -> dict:
    """The resharding engine's colocated sync dp 1 -> 1 replica on GPU 0 (expected to fail on one GPU:
    the link's NCCL group then has two ranks on one device)."""
    from rlinf.config import ReshardConfig
    from rlinf.reshard import wait_all
    from rlinf.scheduler import WorkerGroup

    params = qwen2_params(model)
    cfg = ReshardConfig()
    cluster = _gpu_cluster(wait_timeout_s=timeout_s + 30)
    src = tgt = None
    try:
        src = WorkerGroup(cluster, GpuSource, "ge_src", [0], init_dist=False)
        tgt = WorkerGroup(cluster, GpuTarget, "ge_tgt", [0], init_dist=False)
        src.link(tgt)
        n_params = src.call("setup", params, 1, 1).wait()[0]
        handles = tgt.call("make_target", "co", params, 1, 1, 1, src.name, True, cfg.bucket_mb,
                           cfg.pipeline_depth).wait()
        src.call("make_source", "co", tgt.name, cfg.bucket_mb, cfg.pipeline_depth).wait()
        direct = src.call("attach", "co", handles).wait()[0]
        times: List[float] = []
        for version in range(1, REPEATS + 2):  # the first is a warm-up
            start = time.perf_counter()
            wait_all([src.call("send", "co", version), tgt.call("recv", "co", version)], timeout_s)
            times.append(time.perf_counter() - start)
        expect = src.call("digests").wait()[0]
        got = tgt.call("digests", "co").wait()[0]
        nbytes = src.call("model_bytes").wait()[0]
        best = min(times[1:])
        return {"model": model, "params": n_params, "direct_targets": direct, "colocated_s": round(best, 5),
                "colocated_gb_per_s": round(nbytes / best / 1e9, 1),
                "bit_exact": got == expect and len(got) == len(expect)}
    finally:
        for group in (src, tgt):
            if group is not None:
                group.shutdown()
        cluster.shutdown()


# ---- rollout part ------------------------------------------------------------------------------------
def _qwen2_on_gpu(model: str, seed: int = 1):
    """A random-weight bf16 Qwen2 with bench.reshard's `model` shapes, built directly on the GPU."""
    from transformers import Qwen2Config, Qwen2ForCausalLM

    config = Qwen2Config(**MODELS[model], tie_word_embeddings=True, max_position_embeddings=1024,
                         pad_token_id=0, bos_token_id=1, eos_token_id=2)
    torch.manual_seed(seed)
    with torch.device("cuda"):
        net = Qwen2ForCausalLM(config).to(torch.bfloat16)
    net.config.use_cache = True
    return net.eval()


def part_rollout(model: str = "500m", batch: int = 64, new_tokens: int = 128, repeats: int = 3) -> dict:
    """Tokens/s of the transformers engine and of vLLM on the same weights and prompts (see the docstring)."""
    os.environ["VLLM_ENABLE_V1_MULTIPROCESSING"] = "0"
    os.environ.setdefault("VLLM_LOGGING_LEVEL", "WARNING")
    from rlinf.workers.rollout.sampling import SamplingParams, sample

    net = _qwen2_on_gpu(model)
    vocab = net.config.vocab_size
    prompts = [[3 + (i * 7919) % (vocab - 3) for i in range(j, j + 16)] for j in range(batch)]
    path = tempfile.mkdtemp(prefix="rlinf-gpu-suite-")
    net.save_pretrained(path)
    from vllm import LLM, SamplingParams as VLLMParams
    from vllm.inputs import TokensPrompt

    llm = LLM(model=path, skip_tokenizer_init=True, dtype="bfloat16", enforce_eager=True, max_model_len=512,
              logprobs_mode="processed_logprobs", seed=1, gpu_memory_utilization=0.5)

    def run_hf(rep: int) -> int:
        g = torch.Generator(device="cuda").manual_seed(rep)
        out = sample(net, prompts, SamplingParams(max_new_tokens=new_tokens, temperature=1.0), -1, 0, g)
        return int(out.mask.sum())

    def run_vllm(rep: int) -> int:
        params = [VLLMParams(max_tokens=new_tokens, temperature=1.0, logprobs=0, detokenize=False,
                             seed=rep * 1000 + i, ignore_eos=True) for i in range(batch)]
        outs = llm.generate([TokensPrompt(prompt_token_ids=q) for q in prompts], params, use_tqdm=False)
        return sum(len(o.outputs[0].token_ids) for o in outs)

    times: Dict[str, List[float]] = {"transformers": [], "vllm": []}
    run_hf(-1), run_vllm(-1)  # warm-up
    for rep in range(repeats):
        for name, fn in (("transformers", run_hf), ("vllm", run_vllm)):
            torch.cuda.synchronize()
            start = time.perf_counter()
            n = fn(rep)
            times[name].append(time.perf_counter() - start)
            if n != batch * new_tokens:
                raise RuntimeError(f"{name} generated {n} tokens, expected {batch * new_tokens}")
    tokens = batch * new_tokens
    out = {"model": model, "params": sum(p.numel() for p in net.parameters()), "dtype": "bfloat16", "batch": batch,
           "new_tokens": new_tokens, "vllm_enforce_eager": True,
           **{f"{k}_tok_per_s_best": round(tokens / min(v), 1) for k, v in times.items()},
           **{f"{k}_s_all": [round(t, 3) for t in v] for k, v in times.items()}}
    out["vllm_over_transformers"] = round(out["vllm_tok_per_s_best"] / out["transformers_tok_per_s_best"], 2)
    return out


# ---- embodied part ---------------------------------------------------------------------------------
def part_embodied(mode: str, envs: int = 256, steps: int = 32, repeats: int = 3, sim: str = "gpu") -> dict:
    """Collection speed of one placement mode of bench.embodied_pipeline on one device, ManiSkill GPU sim
    (`sim="cpu"`: physx CPU on a CPU device, a smoke run of this code on a machine without CUDA)."""
    from bench.embodied_pipeline import MODES, _config, _no_phase, _shutdown
    from rlinf.placement import build_placement
    from rlinf.scheduler import Cluster
    from rlinf.workflows import components_for
    from rlinf.workflows.embodied import EmbodiedWorkflow

    spec, stages = MODES[mode]
    device = "cuda" if sim == "gpu" else "cpu"
    extra = [f"env.sim_backend={sim}", "cluster.num_devices=1", f"cluster.device_type={device}"]
    cfg = _config("maniskill_mlp", envs, steps, stages, extra)
    if cfg.env.sim_backend != sim or cfg.cluster.num_devices != 1:
        raise RuntimeError("bench.embodied_pipeline's overrides won over the GPU ones")
    cluster = Cluster(cfg.cluster)
    wf = EmbodiedWorkflow(cfg, build_placement(spec, 1, stages, components_for(cfg)), _no_phase)
    try:
        wf.start(cluster)
        start = time.perf_counter()
        wf.collect(0)  # warm-up: first reset, first inference
        warmup = time.perf_counter() - start
        times = [wf.collect(1 + r)["time"] for r in range(repeats)]
    finally:
        _shutdown(wf)
        cluster.shutdown()
    chunk = cfg.actor.model.action_chunk
    decisions = steps // chunk
    best = min(times)
    return {"mode": mode, "placement_mode": wf.placement.mode, "stages": stages, "envs": envs,
            "decisions_per_collect": decisions, "collect_s": [round(t, 3) for t in times],
            "warmup_collect_s": round(warmup, 3), "env_steps_per_s_best": round(envs * decisions * chunk / best, 1),
            "step_ms_best": round(1000 * best / decisions, 2)}


# ---- driver ----------------------------------------------------------------------------------------
def _run_part(name: str, limit_s: float) -> dict:
    """Run one part in its own subprocess and process group (Ray's processes included) with a time limit;
    its RESULT, or how it failed. A part past its limit is ended with its whole process group."""
    args, _ = PARTS[name]
    start = time.perf_counter()
    env = {**os.environ, "RAY_ADDRESS": os.environ.get("RAY_ADDRESS", "local")}  # never join a leftover Ray
    proc = subprocess.Popen([sys.executable, "-m", "bench.gpu_suite", *args], stdout=subprocess.PIPE,
                            stderr=subprocess.STDOUT, text=True, start_new_session=True, env=env)
    try:
        output, _ = proc.communicate(timeout=limit_s)
    except subprocess.TimeoutExpired:
        output = _end_group(proc)
        return {"ok": False, "error": f"timed out after {limit_s:.0f} s", "seconds": round(limit_s, 1),
                "tail": output[-3000:]}
    finally:
        _end_group(proc)  # whatever the part left behind (a Ray it failed to stop)
    seconds = round(time.perf_counter() - start, 1)
    results = [line[len("RESULT "):] for line in output.splitlines() if line.startswith("RESULT ")]
    if proc.returncode == 0 and results:
        return {"ok": True, "seconds": seconds, "result": json.loads(results[-1])}
    return {"ok": False, "error": f"exit code {proc.returncode}", "seconds": seconds, "tail": output[-3000:]}


def _end_group(proc: subprocess.Popen) -> str:
    """SIGTERM, then SIGKILL after 10 s, to the part's process group; returns the output still unread."""
    for sig in (signal.SIGTERM, signal.SIGKILL):
        try:
            os.killpg(proc.pid, sig)
        except ProcessLookupError:
            break
        try:
            return proc.communicate(timeout=10)[0] or ""
        except subprocess.TimeoutExpired:
            continue
    return ""


def run_suite(out_path: str, budget_s: float, only: Optional[List[str]] = None) -> dict:
    start = time.perf_counter()
    parts: Dict[str, dict] = {}
    for name, (_, limit) in PARTS.items():
        if only and name not in only:
            continue
        left = budget_s - (time.perf_counter() - start)
        if left < 20:
            parts[name] = {"ok": False, "error": "skipped: suite time budget spent"}
            continue
        parts[name] = _run_part(name, min(limit, left))
        status = "ok" if parts[name]["ok"] else parts[name]["error"]
        print(f"{name}: {status} ({parts[name].get('seconds', 0)} s)", flush=True)
        if parts[name]["ok"]:
            print("  " + json.dumps(parts[name]["result"]), flush=True)
    summary = {"gpu": torch.cuda.get_device_name(0), "gpus": torch.cuda.device_count(), "torch": torch.__version__,
               "cuda": torch.version.cuda, "machine": platform.machine(), "cpus": os.cpu_count(),
               "wall_s": round(time.perf_counter() - start, 1), "budget_s": budget_s, "parts": parts}
    with open(out_path, "w") as f:
        json.dump(summary, f, indent=1)
    return summary


def main() -> int:
    parser = argparse.ArgumentParser(prog="python -m bench.gpu_suite", description=__doc__.splitlines()[0])
    parser.add_argument("--out", default="gpu_suite.json", help="JSON file of all figures")
    parser.add_argument("--budget-s", type=float, default=570.0, help="time budget of the whole suite")
    parser.add_argument("--only", default=None, help="comma-separated subset of " + ",".join(PARTS))
    parser.add_argument("--part", choices=["sync_ipc", "sync_engine", "rollout", "embodied"], default=None,
                        help=argparse.SUPPRESS)
    parser.add_argument("--mode", default="colocated_k1", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if not torch.cuda.is_available():
        print(NO_CUDA, file=sys.stderr)
        return 2
    if args.part is not None:
        run = {"sync_ipc": part_sync_ipc, "sync_engine": part_sync_engine, "rollout": part_rollout,
               "embodied": lambda: part_embodied(args.mode)}[args.part]
        print("RESULT " + json.dumps(run()), flush=True)
        return 0
    only = args.only.split(",") if args.only else None
    summary = run_suite(args.out, args.budget_s, only)
    print(f"wrote {args.out}")
    print("RESULT " + json.dumps(summary))
    return 0


if __name__ == "__main__":
    sys.exit(main())
