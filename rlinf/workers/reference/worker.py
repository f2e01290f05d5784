"""ReferenceWorker: the frozen reference policy pi_ref, a group of its own placed by
`cluster.component_placement.reference` and FSDP2-sharded over its ranks like the actor.

pi_ref is the actor's initial policy: the same model config (`actor.model`) and the same seed, and with
`actor.init_checkpoint` the same checkpoint weights, so before the first update its log-probs equal the
actor's. It computes per-token log-probs of the
rollout's sampling distribution (temperature / top-k / top-p, as the actor does), which the workflow
turns into the KL to the reference: in the loss (algorithm.kl_in=loss) or in the reward (kl_in=reward).
"""

from typing import Dict, Optional

import torch

from rlinf.config.schema import ModelConfig
from rlinf.models.causal_lm import build_causal_lm
from rlinf.utils.checkpoint_layout import init_checkpoint_dir
from rlinf.workers.actor.fsdp_actor import sequence_logprobs
from rlinf.workers.fsdp_worker import FSDPTrainWorker, to_device
from rlinf.workers.rollout.sampling import as_sampling_params


class ReferenceWorker(FSDPTrainWorker):
    def __init__(self, model_cfg: ModelConfig, vocab_size: int, seed: int, micro_batch_size: int, sampling=1.0,
                 max_tokens_per_micro_batch: Optional[int] = None, init_checkpoint: Optional[str] = None):
        """`micro_batch_size` / `max_tokens_per_micro_batch`: the actor's (padded rows, or a packing token
        budget; see `FSDPTrainWorker.split_micro_batches`); `init_checkpoint`: the actor's
        `actor.init_checkpoint` (its model weights are loaded at setup)."""
        super().__init__()
        self.init_checkpoint = init_checkpoint
        self.micro_batch_size = micro_batch_size
        self.max_tokens = max_tokens_per_micro_batch
        self.sampling = as_sampling_params(sampling)
        self.model = build_causal_lm(model_cfg, vocab_size, seed=seed).eval().requires_grad_(False)

    def setup(self) -> int:
        """Shard over the group's ranks (no optimizer: nothing here trains), then load the init checkpoint's
        weights when there is one; returns #params."""
        n_params = self.shard_model()
        if self.init_checkpoint is not None:
            self.load_model_weights(str(init_checkpoint_dir(self.init_checkpoint)))
        return n_params

    def compute_logprobs(self, batch: Dict[str, torch.Tensor]) -> torch.Tensor:
        """[n, T] log pi_ref of this rank's rows' response tokens (on CPU)."""
        mbs = self.split_micro_batches(to_device(batch, self.device), self.micro_batch_size, self.max_tokens)
        return sequence_logprobs(self.model, mbs, self.sampling).cpu()
