"""One builder for every embodied policy (`actor.model.kind`: mlp | cnn | vla) and the interface they share.

The policy interface (what rollout workers, the embodied actor and `rlinf.eval` call):

    policy.action_chunk   C, actions emitted per decision (1 for mlp / cnn; `actor.model.action_chunk`
                          for the VLA); the env worker executes a chunk open-loop over C env steps
    policy.act(obs, greedy=False, generator=None) -> (actions, logprobs, values)     no gradient
    policy.evaluate(obs, actions) -> (logprobs, entropy, values)                     with gradient
    policy.value(obs) -> values

Shapes, B = batch: with C = 1, actions [B, *action_shape] (discrete: [B]) and logprobs, entropy,
values [B]; with C > 1 a chunk axis follows the batch axis: actions [B, C, action_dim], logprobs and
entropy [B, C] per action (log pi of a chunk = their sum), values [B, C] (V estimates for each step
of the chunk, all read from the chunk's first observation; chunk-level algorithms use column 0).

`obs` is `to_tensors(env_obs)`: a float32 tensor [B, ...] for state tasks, or for image tasks a dict
{"image": uint8 [B, H, W, 3], "state": float32 [B, d], "instruction": list of B str}.

`spec` (from `EnvWorker.spec`): obs_shape (array obs) or image_shape + state_dim (dict obs),
obs_dim, action_dim, discrete, action_low / action_high (lists; continuous tasks).
"""

from typing import Any, Dict, List, Union

import numpy as np
import torch

from rlinf.config.schema import ModelConfig
from rlinf.errors import InputError

TensorObs = Union[torch.Tensor, Dict[str, Any]]


def build_policy(cfg: ModelConfig, spec: Dict[str, Any], seed: int) -> torch.nn.Module:
    """The actor-critic of `actor.model` for a task of `spec`; identical weights for the same seed."""
    image = spec.get("image_shape") is not None
    if cfg.kind == "mlp":
        if image:
            raise InputError("an mlp policy needs state observations (env.obs_mode state); use kind cnn or vla "
                             "for rgb", key="actor.model.kind")
        if cfg.action_chunk != 1:
            raise InputError("action chunks need actor.model.kind vla", key="actor.model.action_chunk")
        from rlinf.models.mlp import build_mlp_policy

        return build_mlp_policy(cfg, spec["obs_dim"], spec["action_dim"], spec["discrete"], seed)
    if cfg.kind in ("cnn", "vla") and not image:
        raise InputError(f"a {cfg.kind} policy needs image observations (env.obs_mode rgb)", key="actor.model.kind")
    if cfg.kind == "cnn":
        if cfg.action_chunk != 1:
            raise InputError("action chunks need actor.model.kind vla", key="actor.model.action_chunk")
        from rlinf.models.cnn import CNNActorCritic

        torch.manual_seed(seed)
        return CNNActorCritic(tuple(spec["image_shape"]), spec["state_dim"], spec["action_dim"], spec["discrete"],
                              cfg.hidden_size, tuple(cfg.cnn_channels))
    if cfg.kind == "vla":
        if spec["discrete"]:
            raise InputError("a vla policy needs continuous (Box) actions", key="actor.model.kind")
        from rlinf.models.vla import build_vla

        return build_vla(cfg, spec, seed)
    raise InputError(f"embodied policies are mlp, cnn or vla, got '{cfg.kind}'", key="actor.model.kind")


def policy_spec(cfg: ModelConfig, spec: Dict[str, Any]) -> Dict[str, Any]:
    """What fixes a policy's parameter shapes (a checkpoint loads only into the same one)."""
    out: Dict[str, Any] = {"kind": cfg.kind, "obs_dim": spec["obs_dim"], "action_dim": spec["action_dim"],
                           "discrete": spec["discrete"], "hidden_size": cfg.hidden_size, "num_layers": cfg.num_layers}
    if cfg.kind != "mlp":
        out["image_shape"] = list(spec["image_shape"])
    if cfg.kind == "cnn":
        out["cnn_channels"] = list(cfg.cnn_channels)
    if cfg.kind == "vla":
        out.update({"path": cfg.path, "action_head": cfg.action_head, "action_chunk": cfg.action_chunk,
                    "action_bins": cfg.action_bins, "vision_hidden_size": cfg.vision_hidden_size,
                    "vision_layers": cfg.vision_layers, "patch_size": cfg.patch_size,
                    "instruction_tokens": cfg.instruction_tokens, "num_heads": cfg.num_heads})
        if cfg.lora_rank:  # the adapters' shapes, and their scale, which a checkpoint's values assume
            out.update({"lora_rank": cfg.lora_rank, "lora_alpha": cfg.lora_alpha})
    return out


# ---- observations -----------------------------------------------------------------------------------
def greedy_actions(model: torch.nn.Module, obs: Union[np.ndarray, Dict[str, np.ndarray]], device: Any = "cpu") -> np.ndarray:
    """The mode actions (argmax / mean) of `model` for env observations `obs`: what the rollout rank's
    `act(greedy=True)` answers, computed by the same `model.act` (the generator plays no part in a greedy
    action), used by env ranks that evaluate on a local copy of the policy."""
    with torch.no_grad():
        actions, _, _ = model.act(to_tensors(obs, device), greedy=True)
    return actions.cpu().numpy()


def to_tensors(obs: Union[np.ndarray, Dict[str, np.ndarray]], device: Any = "cpu") -> TensorObs:
    """Env observations (numpy, see rlinf.envs.obs) -> the policy's input batch on `device`."""
    if isinstance(obs, dict):
        out: Dict[str, Any] = {}
        for k, v in obs.items():
            if k == "instruction":
                out[k] = [str(s) for s in np.asarray(v).reshape(-1)]
            elif k == "image":
                out[k] = torch.as_tensor(np.require(v, requirements=['C', 'W']), dtype=torch.uint8, device=device)
            else:
                out[k] = torch.as_tensor(np.require(v, requirements=['C', 'W']), dtype=torch.float32, device=device)
        return out
    return torch.as_tensor(np.require(obs, requirements=['C', 'W']), dtype=torch.float32, device=device)


def flatten_steps(obs: Union[np.ndarray, Dict[str, np.ndarray]], n: int, T: int):
    """[n, T, ...] numpy observations -> [n * T, ...] (row-major, as `reshape(n * T, ...)`)."""
    if isinstance(obs, dict):
        return {k: v.reshape(n * T, *v.shape[2:]) for k, v in obs.items()}
    return obs.reshape(n * T, *obs.shape[2:])


def index(obs: TensorObs, idx: torch.Tensor) -> TensorObs:
    """Rows `idx` (a long tensor) of a policy input batch."""
    if isinstance(obs, dict):
        rows: List[int] = idx.tolist()
        return {k: ([v[i] for i in rows] if isinstance(v, list) else v[idx]) for k, v in obs.items()}
    return obs[idx]


def batch_size(obs: TensorObs) -> int:
    if isinstance(obs, dict):
        return len(obs["state"]) if "state" in obs else len(obs["image"])
    return len(obs)


def chunk_of(model: torch.nn.Module) -> int:
    """C of a policy (1 for policies without the attribute, e.g. the MLP)."""
    return int(getattr(model, "action_chunk", 1))


def state_spec(obs_dim: int, action_dim: int, discrete: bool, low: float = -1.0, high: float = 1.0) -> Dict[str, Any]:
    """The `spec` of a flat state-observation task (tests and tools that have no env worker at hand)."""
    return {"obs_shape": (obs_dim,), "obs_dim": obs_dim, "action_dim": action_dim, "discrete": discrete,
            "image_shape": None, "state_dim": None,
            "action_low": None if discrete else [low] * action_dim, "action_high": None if discrete else [high] * action_dim}
