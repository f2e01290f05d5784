"""RewardModelTrainer: a one-label sequence classifier (the reward model) trained with FSDP2 data parallel
on preference pairs by the Bradley-Terry loss.

A batch (this rank's shard of the step's pairs) is a dict of tensors:
    input_ids, attention_mask [n, 2, W]   row i: [chosen, rejected] token ids, right-padded with pad id
    margin [n]                            per-pair margin m (0 without one)
Both responses of a micro-batch are scored in one forward ([2k, W]); the score is the head's output at
the last non-padding token (transformers' pooling). Per micro-batch of k pairs out of the rank's n,

    loss_mb = (k / n) * mean_i -log sigmoid(r_c,i - r_r,i - m_i)

so accumulated gradients equal those of the rank's whole batch; FSDP2 averages them over ranks (equal
pair counts per rank, enforced by the workflow), giving the mean over the step's pairs. One optimizer
step per call, gradient norm clipped at actor.grad_clip. Metrics (averaged over ranks): rm/loss,
rm/pair_accuracy (fraction with r_c > r_r), rm/reward_gap (mean r_c - r_r), rm/grad_norm.

Checkpoints: FSDPTrainWorker's torch.distributed.checkpoint shards under `<checkpoint>/actor`, and,
written by rank 0 from the gathered full weights, a Hugging Face directory `export_dir`
(`<checkpoint>/reward_model/`: config.json, model.safetensors and the tokenizer) that
`AutoModelForSequenceClassification.from_pretrained` and `rlinf.models.reward_model.load_reward_model`
load.
"""

import time
from typing import Dict, Optional

import torch

from rlinf.algorithms import bradley_terry_loss
from rlinf.config.schema import ActorConfig
from rlinf.models.reward_model import build_reward_model, save_reward_model
from rlinf.models.tokenizer import load_tokenizer
from rlinf.workers.fsdp_worker import FSDPTrainWorker, micro_batches, to_device


class RewardModelTrainer(FSDPTrainWorker):
    def __init__(self, cfg: ActorConfig, vocab_size: int, seed: int):
        super().__init__()
        self.cfg, self.vocab_size, self.seed = cfg, vocab_size, seed
        torch.manual_seed(seed)
        # Same seed on every rank: identical initial weights before sharding.
        self.model = build_reward_model(cfg.model, vocab_size, seed=seed)

    def setup(self) -> int:
        return self.shard_and_build_optimizer(self.cfg.lr, self.cfg.weight_decay)

    def _scores(self, mb: Dict[str, torch.Tensor]) -> torch.Tensor:
        """[k, 2] scores (chosen, rejected) of a micro-batch, both in one forward."""
        k, _, width = mb["input_ids"].shape
        out = self.model(input_ids=mb["input_ids"].reshape(2 * k, width),
                         attention_mask=mb["attention_mask"].reshape(2 * k, width), use_cache=False)
        return out.logits.float().reshape(k, 2)

    def update(self, batch: Dict[str, torch.Tensor]) -> Dict[str, float]:
        """One optimizer step on this rank's pairs (module docstring); metrics averaged over the group."""
        t0 = time.time()
        batch = to_device(batch, self.device)
        n = batch["input_ids"].shape[0]
        self.model.train()
        sums = {"rm/loss": 0.0, "rm/pair_accuracy": 0.0, "rm/reward_gap": 0.0}
        mbs = micro_batches(batch, self.cfg.micro_batch_size)
        for i, mb in enumerate(mbs):
            k = mb["input_ids"].shape[0]
            scores = self._scores(mb)
            loss = bradley_terry_loss(scores[:, 0], scores[:, 1], mb["margin"])
            self._backward(loss * (k / n), boundary=i == len(mbs) - 1)
            gap = (scores[:, 0] - scores[:, 1]).detach()
            sums["rm/loss"] += float(loss.detach()) * k / n
            sums["rm/pair_accuracy"] += float((gap > 0).float().sum()) / n
            sums["rm/reward_gap"] += float(gap.sum()) / n
        sums["rm/grad_norm"] = self.optimizer_step(self.cfg.grad_clip)
        sums["time/rm_update_s"] = time.time() - t0
        return self.group_mean(sums)

    def _backward(self, loss: torch.Tensor, boundary: bool) -> None:
        """Backward of one micro-batch's share of the loss (`boundary`: the rank's last micro-batch)."""
        loss.backward()

    @torch.no_grad()
    def score(self, batch: Dict[str, torch.Tensor]) -> torch.Tensor:
        """[n, 2] scores (chosen, rejected) of this rank's pairs, in eval mode. Every rank of the group
        must call it with the same number of pairs (FSDP2 gathers parameters in each forward)."""
        batch = to_device(batch, self.device)
        self.model.eval()
        parts = [self._scores(mb) for mb in micro_batches(batch, self.cfg.micro_batch_size)]
        return torch.cat(parts).cpu()

    def save_checkpoint(self, path: str, extra: Optional[dict] = None, export_dir: Optional[str] = None) -> str:
        """The sharded checkpoint at `path`; with `export_dir`, also the full model as a Hugging Face
        directory there (a collective: every rank gathers, rank 0 writes)."""
        super().save_checkpoint(path, extra)
        if export_dir is not None:
            self.export_hf(export_dir)
        return path

    def export_hf(self, path: str) -> None:
        state = self.full_state_dict()
        if self.rank != 0:
            return
        full = build_reward_model(self.cfg.model, self.vocab_size, seed=self.seed)
        full.load_state_dict(state)
        save_reward_model(full, load_tokenizer(self.cfg.model.path, self.cfg.model.char_vocab), path)
