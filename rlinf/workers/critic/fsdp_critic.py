"""CriticWorker: a causal-LM backbone with a scalar value head, trained with FSDP2 on clipped value loss.

values[:, t] estimates the return from the state *before* response token t, read from the hidden
state at the position that predicts that token (the same alignment as the actor's log-probs).
"""

import time
from typing import Dict

import torch

from rlinf.algorithms import value_loss
from rlinf.config.schema import AlgorithmConfig, CriticConfig
from rlinf.models.causal_lm import build_causal_lm
from rlinf.workers.actor.fsdp_actor import loss_denominator
from rlinf.workers.fsdp_worker import FSDPTrainWorker, micro_batches, to_device


class ValueModel(torch.nn.Module):
    """Backbone (the LM minus its head) + Linear(hidden, 1)."""

    def __init__(self, lm: torch.nn.Module):
        super().__init__()
        self.model = lm.model
        self.value_head = torch.nn.Linear(lm.config.hidden_size, 1)
        torch.nn.init.zeros_(self.value_head.weight)
        torch.nn.init.zeros_(self.value_head.bias)

    def forward(self, input_ids, attention_mask, position_ids):
        hidden = self.model(input_ids=input_ids, attention_mask=attention_mask, position_ids=position_ids,
                            use_cache=False).last_hidden_state
        return self.value_head(hidden).sum(-1)  # [B, T]; a reduction, not a view (FSDP2 hooks need that)


class CriticWorker(FSDPTrainWorker):
    def __init__(self, cfg: CriticConfig, algo: AlgorithmConfig, vocab_size: int, seed: int):
        super().__init__()
        self.cfg, self.algo = cfg, algo
        self.model = ValueModel(build_causal_lm(cfg.model, vocab_size, seed=seed + 1))

    def setup(self) -> int:
        return self.shard_and_build_optimizer(self.cfg.lr, 0.0)

    def _values(self, mb: Dict[str, torch.Tensor], T: int) -> torch.Tensor:
        return self.model(mb["input_ids"], mb["attention_mask"], mb["position_ids"])[:, -T - 1:-1]

    @torch.no_grad()
    def compute_values(self, batch: Dict[str, torch.Tensor]) -> torch.Tensor:
        """[N, T] value estimates for the response positions (0 on padding)."""
        batch = to_device(batch, self.device)
        T = batch["response_mask"].shape[1]
        self.model.eval()
        values = torch.cat([self._values(mb, T) for mb in micro_batches(batch, self.cfg.micro_batch_size)])
        return (values * batch["response_mask"]).cpu()

    def _micro_step(self, mb: Dict[str, torch.Tensor], T: int, denominator: float) -> Dict[str, float]:
        loss, metrics = value_loss(self._values(mb, T), mb["values"], mb["returns"], mb["response_mask"],
                                   clip=self.algo.value_clip, loss_agg=self.algo.loss_agg, denominator=denominator)
        loss.backward()
        return {"critic/vf_loss": float(loss.detach()), **{f"critic/{k}": float(v) for k, v in metrics.items()}}

    def update(self, batch: Dict[str, torch.Tensor]) -> Dict[str, float]:
        t0 = time.time()
        batch = to_device(batch, self.device)
        T = batch["response_mask"].shape[1]
        denominator = loss_denominator(batch["response_mask"], self.algo.loss_agg)
        out = self.train_epochs(batch, self.cfg.micro_batch_size, self.algo.update_epochs, self.cfg.grad_clip,
                                lambda mb: self._micro_step(mb, T, denominator))
        out["critic/grad_norm"] = out.pop("grad_norm")
        out["time/critic_update_s"] = time.time() - t0
        return self.group_mean(out)
