"""RolloutWorker: holds a generation copy of the policy and samples responses for prompts.

Weights arrive from the actor through `load_weights` (a Ray object ref of {name: array}); the
worker records the version it holds so every sample is tagged with the weights that produced it.
"""

import logging
from typing import Dict, List, Sequence

import numpy as np
import torch

from rlinf.config.schema import ModelConfig, RolloutConfig
from rlinf.models.causal_lm import build_causal_lm
from rlinf.scheduler import Worker
from rlinf.workers.reward.worker import ScoresOwnResponses
from rlinf.workers.weights import ModuleReshardTarget, fetch_state_dict
from rlinf.workers.rollout.sampling import SamplingParams, sample, turns_from_generation

logger = logging.getLogger(__name__)


class RolloutWorker(ScoresOwnResponses, ModuleReshardTarget, Worker):
    """Transformers engine: KV-cache batched sampling on this rank's device."""

    def __init__(self, cfg: RolloutConfig, model_cfg: ModelConfig, vocab_size: int, eos_id: int, pad_id: int,
                 seed: int):
        super().__init__()
        self.cfg = cfg
        self.model = build_causal_lm(model_cfg, vocab_size, seed=seed).to(self.device).eval()
        self.eos_id, self.pad_id = eos_id, pad_id
        self.generator = torch.Generator(device=self.device).manual_seed(seed * 1000 + self.rank)
        self.version = -1

    def load_weights(self, refs: List, version: int) -> int:
        """Replace the weights with the actor's (bit-exact copy); returns the version now held."""
        missing, unexpected = self.model.load_state_dict(fetch_state_dict(refs[0]), strict=False)
        if unexpected or [m for m in missing if not m.endswith("lm_head.weight")]:
            raise RuntimeError(f"weight mismatch: missing={missing} unexpected={unexpected}")
        self.version = version
        return version

    def setup_reshard(self, peer_group: str, dp_size: int, colocated: bool, cfg, staged: bool = False) -> dict:
        """Become a resharding target (full replica, tp 1): the model's parameters are rebound to the
        engine's views, so every later sync updates them in place. `staged` (async schedule): syncs land
        in a staging arena while generation goes on; `apply_weights` switches between requests."""
        from rlinf.reshard import SourceLayout, TargetLayout, plan_for_module

        plan = plan_for_module(self.model, SourceLayout(dp_size), TargetLayout(self.world_size, 1))
        return self._bind_reshard(plan, peer_group, colocated, cfg, staged)

    def generate(self, prompts: Sequence[Sequence[int]], greedy: bool = False,
                 seed: int | None = None) -> Dict[str, object]:
        """Sample one response per prompt (repeat prompts for groups). Tensors are [N, T]."""
        params = SamplingParams(max_new_tokens=self.cfg.max_new_tokens,
                                temperature=0.0 if greedy else self.cfg.temperature,
                                top_p=self.cfg.top_p, top_k=self.cfg.top_k)
        if seed is not None:
            self.generator.manual_seed(seed * 1000 + self.rank)
        gen = sample(self.model, prompts, params, self.eos_id, self.pad_id, self.generator)
        return {"responses": gen.responses, "logprobs": gen.logprobs, "mask": gen.mask, "version": self.version}

    def generate_turns(self, contexts: Sequence[Sequence[int]], stop_token_seqs: List[List[int]],
                       greedy: bool = False, seed: int | None = None) -> Dict[str, object]:
        """One model turn per context (multi-turn episodes; an env worker calls this directly): at most
        `rollout.max_new_tokens` tokens, ending at EOS or at the end of a stop sequence. Returns plain lists
        (`tokens`, `logprobs`, one per generated token) and the weights `version`. `seed` reseeds the
        sampler; None continues its stream (the later turns of one collection)."""
        params = SamplingParams(max_new_tokens=self.cfg.max_new_tokens,
                                temperature=0.0 if greedy else self.cfg.temperature,
                                top_p=self.cfg.top_p, top_k=self.cfg.top_k)
        if seed is not None:
            self.generator.manual_seed(seed * 1000 + self.rank)
        gen = sample(self.model, contexts, params, self.eos_id, self.pad_id, self.generator,
                     stop_token_seqs=stop_token_seqs)
        return {**turns_from_generation(gen.responses, gen.logprobs, gen.mask, stop_token_seqs),
                "version": self.version}

    # ---- residency (the schedule decides when: rlinf.runners.residency) ----------------------------
    def offload(self) -> bool:
        """Nothing moves: the weights are bound to the resharding engine's views (its arena or its
        received buffers), and the KV cache lives only inside a `generate` call. False: not offloaded."""
        return False

    def onload(self) -> bool:
        return False

    def state_dict_numpy(self) -> Dict[str, np.ndarray]:
        """The generation weights as arrays (tests compare them bit for bit with the actor's)."""
        return {k: v.detach().cpu().float().numpy() for k, v in self.model.state_dict().items()}
