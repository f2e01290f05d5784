"""Peak memory per device of a placement: parameters, gradients, optimizer state, activations, KV cache,
simulator state, with or without offload. Pure arithmetic on a `MemorySpec`; no torch.

Byte counts (b = bytes per parameter of the model dtype, P = parameters, T = trainable parameters):
- training state of an actor (or critic) FSDP-sharded over d ranks (full shard, ZeRO-3 like):
      (P*b + T*b + T*opt) / d,   opt = 8 (Adam m and v in fp32) + 4 when b < 4 (fp32 master weights)
  plus activations of one micro-batch on every rank: activation_bytes_per_sample x micro_batch;
- a frozen reference sharded the same way: P*b / d;
- a rollout rank holds a full replica (rlinf's rollouts are replicas) and the KV cache of the sequences it
  decodes at once: P*b + kv_bytes_per_sample x min(rollout_batch / d_rollout, max_concurrent);
- an env rank: env_bytes_per_env x num_envs / d_env.
A device's peak is the sum of what lives on it at once. Colocated with offload (the sync schedule's
residency moves the training state off the devices during generation, rlinf.runners.residency):
max(training state, rollout) + env. Without offload everything stays: the sum.
"""

from dataclasses import dataclass
from typing import Dict, List


@dataclass(frozen=True)
class MemorySpec:
    params: float
    trainable: float
    param_bytes: int = 4
    critic_params: float = 0.0
    reference: bool = False
    activation_bytes_per_sample: float = 0.0
    micro_batch: int = 1
    kv_bytes_per_sample: float = 0.0
    rollout_batch: int = 1
    max_concurrent: int = 1 << 30
    env_bytes_per_env: float = 0.0
    num_envs: int = 0
    offload: bool = False


def causal_lm_params(hidden: int, layers: int, vocab: int, tied: bool = False, ffn_mult: float = 4.0) -> float:
    """Parameters of a decoder-only transformer: per layer 4h^2 (q, k, v, o) + 2 x ffn_mult x h^2 (MLP up and
    down; 12 h^2 per layer with ffn_mult 4, the GPT count), plus embeddings V*h and an untied head V*h.
    Norms and biases (O(h) per layer) are left out."""
    per_layer = 4 * hidden * hidden + 2 * ffn_mult * hidden * hidden
    return layers * per_layer + vocab * hidden * (1 if tied else 2)


def kv_bytes_per_token(hidden: int, layers: int, param_bytes: int, kv_fraction: float = 1.0) -> float:
    """KV cache of one token: 2 (K and V) x layers x hidden x bytes x kv_fraction (kv heads / heads, GQA)."""
    return 2.0 * layers * hidden * param_bytes * kv_fraction


def activation_bytes_per_token(hidden: int, layers: int, checkpointing: bool = False) -> float:
    """Training activations of one token in 16-bit: 34 x h bytes per layer (Korthikanti et al. 2022, no
    sequence parallelism, attention scores left out); with activation checkpointing only each layer's
    input is kept, 2 x h bytes per layer."""
    return (2.0 if checkpointing else 34.0) * hidden * layers


def train_state_bytes(spec: MemorySpec, params: float, trainable: float, ranks: int) -> float:
    """(P*b + T*b + T*opt) / d + activations of one micro-batch (module docstring)."""
    opt = 8 + (4 if spec.param_bytes < 4 else 0)
    sharded = (params * spec.param_bytes + trainable * spec.param_bytes + trainable * opt) / max(1, ranks)
    return sharded + spec.activation_bytes_per_sample * spec.micro_batch


def component_bytes(spec: MemorySpec, devices: Dict[str, List[int]]) -> Dict[str, float]:
    """Bytes per device of each placed component (the module docstring's formulas)."""
    out: Dict[str, float] = {}
    for name, devs in devices.items():
        d = max(1, len(devs))
        if name == "actor":
            out[name] = train_state_bytes(spec, spec.params, spec.trainable, d)
        elif name == "critic":
            critic = spec.critic_params
            out[name] = train_state_bytes(spec, critic, critic, d) if critic else 0.0
        elif name == "reference":
            out[name] = spec.params * spec.param_bytes / d if spec.reference else 0.0
        elif name == "rollout":
            concurrent = min(spec.rollout_batch / d, spec.max_concurrent)
            out[name] = spec.params * spec.param_bytes + spec.kv_bytes_per_sample * concurrent
        elif name == "env":
            out[name] = spec.env_bytes_per_env * spec.num_envs / d
        else:  # reward: a rule verifier holds nothing to speak of
            out[name] = 0.0
    return out


def peak_bytes_per_device(spec: MemorySpec, devices: Dict[str, List[int]], offload: bool) -> Dict[int, float]:
    """Peak bytes on every device: the sum of the components on it, or with `offload` (colocated sync)
    max(training components, rollout) + the rest (module docstring)."""
    per = component_bytes(spec, devices)
    train = ("actor", "critic", "reference")
    peaks: Dict[int, float] = {}
    for dev in sorted({d for devs in devices.values() for d in devs}):
        here = [n for n, devs in devices.items() if dev in devs]
        t = sum(per[n] for n in here if n in train)
        r = per["rollout"] if "rollout" in here else 0.0
        rest = sum(per[n] for n in here if n not in train and n != "rollout")
        peaks[dev] = (max(t, r) if offload else t + r) + rest
    return peaks
