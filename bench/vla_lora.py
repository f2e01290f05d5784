"""LoRA vs full fine-tuning of the VLA: what a device holds and moves, and the tiny VLA's update time.

    python -m bench.vla_lora [--rank R] [--repeats N]

Part 1 (counted, not timed): the OpenVLA-7B language model (Llama-2-7B shapes from transformers'
LlamaConfig defaults, built on the meta device: no weights, no memory) with rank-32 LoRA on q/k/v/o/gate/
up/down as the GPU recipes: parameters, trainable parameters, and the actor's per-device state in bytes
(bf16 base; full fine-tuning: bf16 params + grads + Adam's two moments in the param dtype; LoRA: the frozen
bf16 base + fp32 adapters, their grads and Adam moments). The projector and vision tower are not counted.
Part 2 (timed, CPU): the embodied actor's PPO update on the tiny VLA of configs/ppo_maniskill_tinyvla.yaml
(64 px, chunks of 2, 8 envs x 10 decisions, minibatch 40), full vs LoRA rank R: median seconds per update
over N updates after one warm-up, trainable parameters, weight-sync bytes (`rlinf.models.lora.sync_tensors`)
and Adam state bytes. The last line printed is `RESULT {json}`.
"""

import argparse
import json
import statistics
import time

import numpy as np
import torch


def count_7b(rank: int) -> dict:
    from transformers import LlamaConfig, LlamaForCausalLM

    from rlinf.models.lora import apply_lora

    conf = LlamaConfig()  # defaults: hidden 4096, intermediate 11008, 32 layers, vocab 32000 (Llama-2-7B)
    with torch.device("meta"):
        lm = LlamaForCausalLM(conf).to(torch.bfloat16)
    total = sum(p.numel() for p in lm.parameters())
    apply_lora(lm, rank, float(rank), lm="model")
    lora = sum(p.numel() for p in lm.parameters() if p.requires_grad)
    full_bytes = total * (2 + 2 + 2 * 2)          # bf16 params, grads, Adam m and v
    lora_bytes = total * 2 + lora * (4 + 4 + 2 * 4)  # frozen bf16 base + fp32 adapters, grads, m, v
    return {"params": total, "lora_params": lora, "lora_fraction": lora / total,
            "full_ft_state_gib": full_bytes / 2**30, "lora_state_gib": lora_bytes / 2**30,
            "state_ratio": lora_bytes / full_bytes}


def _batch(rng, n=8, T=10, C=2, D=7, side=64, state_dim=9):
    obs = {"image": rng.integers(0, 256, (n, T, side, side, 3), dtype=np.uint8),
           "state": rng.normal(size=(n, T, state_dim)).astype(np.float32),
           "instruction": np.array([["push the cube to the goal"] * T] * n)}
    return {"obs": obs, "actions": rng.uniform(-1, 1, (n, T, C, D)).astype(np.float32),
            "logprobs": np.full((n, T, C), -7 * np.log(256), np.float32),
            "values": rng.normal(size=(n, T, C)).astype(np.float32), "rewards": rng.normal(size=(n, T, C)).astype(np.float32),
            "dones": np.zeros((n, T, C), bool), "final_values": np.zeros((n, T, C), np.float32),
            "bootstrap_values": np.zeros((n, C), np.float32)}


def time_tiny(rank: int, repeats: int) -> dict:
    from rlinf.config import load_config
    from rlinf.models.lora import sync_tensors
    from rlinf.workers.actor.embodied_actor import EmbodiedActorWorker

    cfg = load_config("configs/ppo_maniskill_tinyvla.yaml", [f"actor.model.lora_rank={rank}",
                                                             f"actor.model.lora_alpha={float(2 * rank)}"])
    spec = {"image_shape": (64, 64, 3), "state_dim": 9, "obs_dim": 9, "action_dim": 7, "discrete": False,
            "obs_shape": None, "action_low": [-1.0] * 7, "action_high": [1.0] * 7}
    torch.manual_seed(0)
    actor = EmbodiedActorWorker(cfg.actor, cfg.algorithm, spec, 0, 100)
    rng = np.random.default_rng(0)
    times = []
    for i in range(repeats + 1):
        batch = _batch(rng)
        t0 = time.perf_counter()
        actor.update(batch)
        if i:
            times.append(time.perf_counter() - t0)
    adam = sum(t.numel() * t.element_size() for s in actor.optimizer.state.values() for t in s.values()
               if torch.is_tensor(t) and t.dim() > 0)
    return {"update_s": statistics.median(times), "params": sum(p.numel() for p in actor.model.parameters()),
            "trainable": sum(p.numel() for p in actor.trainable),
            "sync_bytes": sum(t.numel() * t.element_size() for t in sync_tensors(actor.model).values()),
            "adam_bytes": adam}


def main() -> None:
    p = argparse.ArgumentParser()
    p.add_argument("--rank", type=int, default=8, help="LoRA rank of the tiny VLA (hidden 64)")
    p.add_argument("--repeats", type=int, default=5)
    args = p.parse_args()
    torch.set_num_threads(1)
    big = count_7b(32)
    print(f"OpenVLA-7B LM, LoRA r=32: {big['lora_params'] / 1e6:.1f} M of {big['params'] / 1e9:.2f} B parameters "
          f"train ({100 * big['lora_fraction']:.2f}%); actor state per device {big['lora_state_gib']:.1f} GiB vs "
          f"{big['full_ft_state_gib']:.1f} GiB full fine-tuning ({big['state_ratio']:.3f}x)")
    full, lora = time_tiny(0, args.repeats), time_tiny(args.rank, args.repeats)
    for name, r in (("full", full), (f"lora r={args.rank}", lora)):
        print(f"tiny VLA {name:>10}: update {r['update_s']:.3f} s, trainable {r['trainable']} / {r['params']}, "
              f"sync {r['sync_bytes'] / 1e6:.3f} MB, Adam state {r['adam_bytes'] / 1e6:.3f} MB")
    ratios = {"update_time": lora["update_s"] / full["update_s"], "sync_bytes": lora["sync_bytes"] / full["sync_bytes"],
              "adam_bytes": lora["adam_bytes"] / full["adam_bytes"]}
    print("LoRA / full: " + ", ".join(f"{k} {v:.3f}x" for k, v in ratios.items()))
    print("RESULT " + json.dumps({"openvla_7b_lm": big, "tiny_full": full, "tiny_lora": lora, "lora_rank": args.rank,
                                  "ratios": ratios}))


if __name__ == "__main__":
    main()
