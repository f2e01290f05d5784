"""PolicyRolloutWorker: the inference copy of an embodied policy (rlinf.models.policy) that picks actions.

Weights arrive from the actor through `load_weights` (a Ray object ref of {name: ndarray}, as for
the LM rollout); the worker records the version it holds and tags every output with it. Besides the
actions it returns log pi(a|s) (behaviour log-probs) and V(s), and V of the final observations of
time-limit-truncated episodes so the trainer can bootstrap through the cut:
r_t <- r_t + gamma * V(s_final).
"""

import logging
from typing import Dict, List, Optional

import numpy as np
import torch

from rlinf.config.schema import ModelConfig
from rlinf.models.lora import load_weights, sync_tensors
from rlinf.models.policy import build_policy, to_tensors
from rlinf.envs import obs as obs_ops
from rlinf.scheduler import Worker
from rlinf.workers.weights import ModuleReshardTarget, fetch_state_dict

logger = logging.getLogger(__name__)


class PolicyRolloutWorker(ModuleReshardTarget, Worker):
    """One replica of the policy per rank; `act` runs a batch of observations through it."""

    def __init__(self, model_cfg: ModelConfig, spec: Dict[str, object], seed: int):
        super().__init__()
        self.model_cfg, self.spec, self.seed = model_cfg, spec, seed
        self.model = build_policy(model_cfg, spec, seed).to(self.device).eval()
        self.generator = torch.Generator(device=self.device).manual_seed(seed * 1000 + self.rank)
        self.version = -1

    def load_weights(self, refs: List, version: int) -> int:
        """Replace the weights with the actor's (bit-exact copy; with LoRA the trainable tensors, on the
        identical frozen base this worker built); returns the version now held."""
        load_weights(self.model, fetch_state_dict(refs[0]))
        self.version = version
        return version

    def setup_reshard(self, peer_group: str, dp_size: int, colocated: bool, cfg, staged: bool = False) -> dict:
        """Become a resharding target (one full replica; the actor's replicas are identical, so the plan's
        source is one full copy): the model reads its weights from the engine's views from now on.
        `staged`: syncs land in a staging arena and `apply_weights` switches between requests (async).
        With LoRA only the trainable tensors are planned and bound (`rlinf.models.lora.sync_tensors`)."""
        from rlinf.reshard import SourceLayout, TargetLayout, make_plan

        plan = make_plan(((n, t.shape, t.dtype) for n, t in sync_tensors(self.model).items()), SourceLayout(1),
                         TargetLayout(self.world_size, 1))
        return self._bind_reshard(plan, peer_group, colocated, cfg, staged)

    @torch.no_grad()
    def act(self, batch: Dict[str, Optional[np.ndarray]], greedy: bool = False) -> Dict[str, object]:
        """Actions for `batch["obs"]` (n rows: an array or a dict of arrays, see rlinf.envs.obs).

        Returns actions, logprobs, values (shapes of the policy interface: [n] or, with action chunks,
        [n, C]), version, and final_values = V(final_obs) on the rows where `batch["cut"]` (time-limit
        truncation) is set, 0 elsewhere; None when `cut` is None. With chunks `cut` is [n, C] (the step of
        the chunk where the episode was cut) and `final_obs` holds one observation per row.
        """
        x = to_tensors(batch["obs"], self.device)
        actions, logprobs, values = self.model.act(x, greedy=greedy, generator=self.generator)
        out = {"actions": actions.cpu().numpy(), "logprobs": logprobs.cpu().numpy(),
               "values": values.cpu().numpy(), "final_values": None, "version": self.version}
        cut = batch["cut"]
        if cut is not None and cut.any():
            rows = cut if cut.ndim == 1 else cut.any(axis=1)
            v = self.model.value(to_tensors(obs_ops.take(batch["final_obs"], rows), self.device)).cpu().numpy()
            final_values = np.zeros(cut.shape, dtype=np.float32)
            if cut.ndim == 1:
                final_values[rows] = v
            else:  # V(s_final) estimate for the cut step: the first column (state of the final obs)
                final_values[rows] = np.where(cut[rows], v.reshape(len(v), -1)[:, :1], 0.0)
            out["final_values"] = final_values
        return out

    def policy_snapshot(self, max_params: int) -> Optional[Dict[str, object]]:
        """What an env rank needs to evaluate on its own copy of this policy (`EnvWorker.run_eval`): the model
        config, task spec and seed it was built from, the weights (full state dict, CPU tensors) and their
        version; None when the policy has more than `max_params` parameters."""
        if sum(p.numel() for p in self.model.parameters()) > max_params:
            return None
        return {"model_cfg": self.model_cfg, "spec": self.spec, "seed": self.seed, "version": self.version,
                "state": {k: v.detach().cpu().clone() for k, v in self.model.state_dict().items()}}

    def get_rng_state(self) -> torch.Tensor:
        """State of the action-sampling generator (checkpoints: a resumed run samples the same actions)."""
        return self.generator.get_state()

    def set_rng_state(self, state: torch.Tensor) -> None:
        self.generator.set_state(state)

    def state_dict_numpy(self) -> Dict[str, np.ndarray]:
        """The inference weights as arrays (tests compare them bit for bit with the actor's)."""
        return {k: v.detach().cpu().numpy() for k, v in self.model.state_dict().items()}
