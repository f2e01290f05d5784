"""Weight-sync (resharding) speed: FSDP2 dp-2 shards -> 2 full rollout replicas, Qwen2 shapes, bf16.

    python -m bench.reshard [--quick] [--repeats N] [--bucket-mb MB]

Models (random weights, HF Qwen2 parameter names and shapes; tied embeddings):
  135m   hidden 576, 30 layers, 8 heads / 2 kv heads, intermediate 1536, vocab 49152   (~134M params)
  500m   Qwen2.5-0.5B shapes: hidden 896, 24 layers, 14 / 2 heads, inter 4864, vocab 151936 (~494M)
  --quick uses 20m and 60m instead.
Paths, each timed on the controller (wall time of both group calls), best of --repeats after a warm-up:
  colocated      sources copy their shards straight into the targets' /dev/shm arenas
  memcpy         the limit: ONE tensor copy of the same bytes (all bytes the targets receive) in one process
  disaggregated  bucketed, pipelined gloo point-to-point over the link, dp 2 -> 2 targets
  broadcast      the limit: ONE raw gloo broadcast of the model's bytes from one rank to the 2 targets
Colocated and memcpy share the machine's cores with whatever else runs, so they are measured in
interleaved pairs (a sync, then the memcpy right after) and the ratio reported is the median of the
per-pair ratios, with their min-max spread (`colocated_vs_memcpy_range`); the best times are kept too.
Bit-exactness: every target hashes each received slice; the owning source hashes the same slice.
Last line: `RESULT {json}`.
"""

import argparse
import hashlib
import json
import logging
import math
import os
import platform
import statistics
import time
from typing import Dict, List

import torch

from rlinf.reshard import ReshardSource, ReshardTarget, SourceLayout, TargetLayout, make_plan, wait_all
from rlinf.scheduler import Worker

MODELS = {
    "20m": dict(hidden_size=256, intermediate_size=768, num_hidden_layers=8, num_attention_heads=4,
                num_key_value_heads=2, vocab_size=32768),
    "60m": dict(hidden_size=512, intermediate_size=1536, num_hidden_layers=8, num_attention_heads=8,
                num_key_value_heads=2, vocab_size=49152),
    "135m": dict(hidden_size=576, intermediate_size=1536, num_hidden_layers=30, num_attention_heads=8,
                 num_key_value_heads=2, vocab_size=49152),
    "500m": dict(hidden_size=896, intermediate_size=4864, num_hidden_layers=24, num_attention_heads=14,
                 num_key_value_heads=2, vocab_size=151936),
}
DTYPE = torch.bfloat16


def qwen2_params(name: str) -> List[tuple]:
    """(name, shape, dtype) of a Qwen2 causal LM with `MODELS[name]`, built on the meta device."""
    from transformers import Qwen2Config, Qwen2ForCausalLM

    with torch.device("meta"):
        model = Qwen2ForCausalLM(Qwen2Config(**MODELS[name], tie_word_embeddings=True))
    return [(n, tuple(p.shape), DTYPE) for n, p in model.named_parameters()]


def _digest(t: torch.Tensor) -> str:
    return hashlib.blake2b(t.contiguous().reshape(-1).view(torch.uint8).numpy().data, digest_size=16).hexdigest()


class BenchSource(Worker):
    def setup(self, params, replicas: int, tp: int, seed: int = 0) -> int:
        """This dp rank's FSDP2 shards of random bf16 weights (dp = group size)."""
        self.plan = make_plan(params, SourceLayout(self.world_size), TargetLayout(replicas, tp))
        self.local: Dict[str, torch.Tensor] = {}
        for i, (name, _, dtype) in enumerate(params):
            g = torch.Generator().manual_seed(seed * 100003 + i * 97 + self.rank)
            self.local[name] = torch.randn(self.plan.src_shape(name, self.rank), generator=g, dtype=dtype)
        self.sources: Dict[str, ReshardSource] = {}
        return sum(t.numel() for t in self.local.values())

    def make_source(self, key: str, peer: str, bucket_mb: float, depth: int) -> None:
        self.sources[key] = ReshardSource(self.plan, self, peer, bucket_mb=bucket_mb, depth=depth)

    def attach(self, key: str, handles) -> List[int]:
        return self.sources[key].attach(handles)

    def send(self, key: str, version: int) -> int:
        return self.sources[key].send(self.local, version)

    def drop_source(self, key: str) -> None:
        self.sources.pop(key)

    def digests(self) -> Dict[tuple, str]:
        return {(t.name, t.src, t.dst, t.box): _digest(self.local[t.name][t.src_index()])
                for t in self.plan.transfers if t.src == self.rank}

    def memcpy(self, nbytes: int, repeats: int) -> float:
        if getattr(self, "_copy", None) is None or self._copy[0].numel() != nbytes:
            self._copy = (torch.ones(nbytes, dtype=torch.uint8), torch.zeros(nbytes, dtype=torch.uint8))
            self._copy[1].copy_(self._copy[0])  # fault the pages in once
        src, dst = self._copy
        best = float("inf")
        for _ in range(repeats):
            start = time.perf_counter()
            dst.copy_(src)
            best = min(best, time.perf_counter() - start)
        return best

    def free_memcpy(self) -> None:
        self._copy = None

    def bcast_send(self, peer: str, nbytes: int) -> float:
        if getattr(self, "_bcast", None) is None or self._bcast.numel() != nbytes:
            self._bcast = torch.ones(nbytes, dtype=torch.uint8)
        start = time.perf_counter()
        self.link_broadcast(self._bcast, peer, 0)
        return time.perf_counter() - start


class BenchTarget(Worker):
    def __init__(self):
        super().__init__()
        self.targets: Dict[str, ReshardTarget] = {}

    def make_target(self, key: str, params, dp: int, replicas: int, tp: int, peer: str, colocated: bool,
                    bucket_mb: float, depth: int):
        plan = make_plan(params, SourceLayout(dp), TargetLayout(replicas, tp))
        self.targets[key] = ReshardTarget(plan, self, peer, colocated=colocated, bucket_mb=bucket_mb, depth=depth)
        return self.targets[key].handle()

    def recv(self, key: str, version: int) -> int:
        return self.targets[key].recv(version)

    def digests(self, key: str) -> Dict[tuple, str]:
        target = self.targets[key]
        return {(t.name, t.src, t.dst, t.box): _digest(target.tensors[t.name][t.dst_index()])
                for t in target.plan.transfers if t.dst == target.rank}

    def bcast_recv(self, key: str, peer: str) -> float:
        arena = self.targets[key].arena  # reuse the weights' memory as the receive buffer
        start = time.perf_counter()
        self.link_broadcast(arena, peer, 0)
        return time.perf_counter() - start

    def close(self, key: str) -> None:
        self.targets.pop(key).close()


def _timed(call, repeats: int) -> float:
    call()  # warm-up: maps arenas, faults pages, builds the schedules
    best = float("inf")
    for _ in range(repeats):
        start = time.perf_counter()
        call()
        best = min(best, time.perf_counter() - start)
    return best


def bench_model(cluster, name: str, repeats: int, bucket_mb: float, depth: int) -> dict:
    from rlinf.scheduler import WorkerGroup

    params = qwen2_params(name)
    n_params = sum(math.prod(s) for _, s, _ in params)
    model_bytes = n_params * torch.empty((), dtype=DTYPE).element_size()
    src = WorkerGroup(cluster, BenchSource, f"bsrc_{name}", [0, 1])
    tgt = WorkerGroup(cluster, BenchTarget, f"btgt_{name}", [2, 3], init_dist=False)
    ref = WorkerGroup(cluster, BenchSource, f"bref_{name}", [0], init_dist=False)
    out = {"params": n_params, "model_mb": round(model_bytes / 2**20, 1)}
    version = [0]
    try:
        src.link(tgt)
        ref.link(tgt)
        src.call("setup", params, 2, 1).wait(timeout=600)
        exact = True
        for mode in ("colocated", "disaggregated"):
            handles = tgt.call("make_target", mode, params, 2, 2, 1, src.name, mode == "colocated", bucket_mb,
                              depth).wait()
            src.call("make_source", mode, tgt.name, bucket_mb, depth).wait()
            direct = src.call("attach", mode, handles).wait()
            assert all(bool(d) == (mode == "colocated") for d in direct), direct
            inside = []

            def sync():
                version[0] += 1
                hs = [src.call("send", mode, version[0]), tgt.call("recv", mode, version[0])]
                sent, got = wait_all(hs, 600)
                assert set(sent) | set(got) == {version[0]}, (sent, got)
                inside.append(max(d for h in hs for d in h.durations))

            if mode == "colocated":  # interleaved with the memcpy limit, so both see the same load
                sync()  # warm-up: maps arenas, faults pages
                ref.call("memcpy", 2 * model_bytes, 1).wait(timeout=600)
                pairs = []
                for _ in range(repeats):
                    start = time.perf_counter()
                    sync()
                    t_sync = time.perf_counter() - start
                    pairs.append((t_sync, ref.call("memcpy", 2 * model_bytes, 1).wait(timeout=600)[0]))
                ratios = sorted(a / b for a, b in pairs)
                out[mode] = round(min(a for a, _ in pairs), 4)
                out["memcpy"] = round(min(b for _, b in pairs), 4)
                out["colocated_vs_memcpy"] = round(statistics.median(ratios), 3)
                out["colocated_vs_memcpy_range"] = [round(ratios[0], 3), round(ratios[-1], 3)]
            else:
                out[mode] = round(_timed(sync, repeats), 4)
            out[mode + "_in_workers"] = round(min(inside[1:]), 4)  # slowest rank's method time, best sync
            expect = {k: v for per in src.call("digests").wait(timeout=600) for k, v in per.items()}
            got = {k: v for per in tgt.call("digests", mode).wait(timeout=600) for k, v in per.items()}
            exact = exact and got == expect and len(got) == len(expect)
            if mode == "colocated":  # free the shared-memory arenas before the next allocations
                src.call("drop_source", mode).wait()
                tgt.call("close", mode).wait()
                ref.call("free_memcpy").wait()
        nbytes = arena_bytes(params)  # one replica's arena: the model's bytes (+ 64 B alignment)

        def bcast():
            wait_all([ref.call("bcast_send", tgt.name, nbytes), tgt.call("bcast_recv", "disaggregated", ref.name)], 600)

        out["broadcast"] = round(_timed(bcast, repeats), 4)
        out["bytes_moved_mb"] = round(2 * model_bytes / 2**20, 1)
        out["bit_exact"] = bool(exact)
        out["disaggregated_vs_broadcast"] = round(out["disaggregated"] / out["broadcast"], 3)
        out["disaggregated_gb_per_s"] = round(2 * model_bytes / out["disaggregated"] / 1e9, 3)
        out["colocated_gb_per_s"] = round(2 * model_bytes / out["colocated"] / 1e9, 3)
        return out
    finally:
        for g in (src, tgt, ref):
            g.shutdown()


def arena_bytes(params) -> int:
    return make_plan(params, SourceLayout(2), TargetLayout(2, 1)).arena_bytes(0)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="20M and 60M models (smoke run)")
    parser.add_argument("--repeats", type=int, default=None,
                        help="timed syncs per path, best kept (default 5, quick 5); colocated: the median pair ratio")
    parser.add_argument("--models", default=None, help="comma-separated subset of " + ",".join(MODELS))
    parser.add_argument("--depth", type=int, default=None, help="reshard.pipeline_depth (default: the config's)")
    parser.add_argument("--bucket-mb", type=float, default=None, help="reshard.bucket_mb (default: the config's)")
    args = parser.parse_args()
    from rlinf.config import ClusterConfig, ReshardConfig
    from rlinf.scheduler import Cluster

    repeats = args.repeats or 5
    bucket_mb = args.bucket_mb or ReshardConfig().bucket_mb
    depth = args.depth or ReshardConfig().pipeline_depth
    logging.basicConfig(level=logging.WARNING)
    torch.set_num_threads(1)
    os.environ.setdefault("OMP_NUM_THREADS", "1")
    cluster = Cluster(ClusterConfig(num_devices=4, ray_num_cpus=os.cpu_count(), wait_timeout_s=600))
    results = {}
    try:
        names = args.models.split(",") if args.models else (["20m", "60m"] if args.quick else ["135m", "500m"])
        for name in names:
            results[name] = bench_model(cluster, name, repeats, bucket_mb, depth)
            r = results[name]
            print(f"{name}: {r['params'] / 1e6:.0f}M params, {r['model_mb']} MB bf16, {r['bytes_moved_mb']} MB moved | "
                  f"colocated {r['colocated']} s vs memcpy {r['memcpy']} s (x{r['colocated_vs_memcpy']} median, "
                  f"range {r['colocated_vs_memcpy_range']}) | "
                  f"disaggregated {r['disaggregated']} s vs broadcast {r['broadcast']} s "
                  f"(x{r['disaggregated_vs_broadcast']}) | bit_exact {r['bit_exact']}", flush=True)
    finally:
        cluster.shutdown()
    result = {
        "models": results, "bucket_mb": bucket_mb, "pipeline_depth": depth, "repeats": repeats, "dp": 2, "targets": "2 replicas (tp 1)",
        "cpus": os.cpu_count(), "machine": platform.machine(), "torch": torch.__version__,
        "colocated_vs_memcpy": max(r["colocated_vs_memcpy"] for r in results.values()),
        "colocated_vs_memcpy_range": [min(r["colocated_vs_memcpy_range"][0] for r in results.values()),
                                      max(r["colocated_vs_memcpy_range"][1] for r in results.values())],
        "load_average": os.getloadavg(),
        "disaggregated_vs_broadcast": max(r["disaggregated_vs_broadcast"] for r in results.values()),
        "bit_exact": all(r["bit_exact"] for r in results.values()),
    }
    print("RESULT " + json.dumps(result))


if __name__ == "__main__":
    main()
