"""Reward-model training as a workflow of the one runner (sync schedule, same run directory, checkpoints,
metrics): a Bradley-Terry sequence classifier learns preference pairs.

Data: `data.task` preference (a user's jsonl / parquet / arrow file, rlinf.envs.text.files) or
synthetic_preference (rlinf.envs.text.synthetic_preference). Each step takes `data.batch_size` pairs:
a seeded shuffle of the training pairs per pass (`data.seed` + pass), cut into consecutive batches,
so step s always gets the same pairs and a resumed run continues where it stopped. The pairs are
split evenly over the group's ranks (`data.batch_size` must divide), tokenized in the controller
(chat template when the tokenizer has one; `data.max_length` tokens at most, keeping the end).

One group, `actor` (its placement key and checkpoint folder): RewardModelTrainer, the reward model
built from `actor.model` (tiny from config or a local Hugging Face directory), trained with lr
`actor.lr`, clip `actor.grad_clip`, `actor.micro_batch_size` pairs per forward, data parallel with
FSDP2 (`actor.backend: fsdp`) or DeepSpeed ZeRO (`actor.backend: deepspeed`, stage `actor.zero_stage`;
rlinf.workers.reward.rm_deepspeed).

evaluate() -> {pair_accuracy, loss, reward_gap, num_pairs} on the held-out pairs: fraction with
r_chosen > r_rejected, the mean Bradley-Terry loss and the mean r_chosen - r_rejected.

Checkpoint at `<run>/checkpoints/step_N/`: `actor/` (sharded model + optimizer + RNG, for resuming)
and `reward_model/` (the full model as a Hugging Face directory with its tokenizer, for
`reward.model.path` or `AutoModelForSequenceClassification.from_pretrained`).
"""

import logging
import time
from pathlib import Path
from typing import Dict, List, Optional, Tuple

import torch

from rlinf.algorithms import bradley_terry_loss
from rlinf.config import RLinfConfig
from rlinf.envs.text import PREFERENCE_TASKS, load_task
from rlinf.envs.text.files import encode_pairs
from rlinf.errors import InputError
from rlinf.models.tokenizer import load_tokenizer
from rlinf.placement import Placement
from rlinf.scheduler import Cluster, WorkerGroup
from rlinf.workers.reward.rm_trainer import RewardModelTrainer
from rlinf.workflows.batching import epoch_batch

logger = logging.getLogger(__name__)

GROUP = "actor"
EXPORT_DIR = "reward_model"  # the Hugging Face directory inside each checkpoint

Pair = Tuple[List[int], List[int], float]


def validate(cfg: RLinfConfig) -> None:
    """What this workflow cannot run, before anything starts."""
    if cfg.runner.schedule not in ("auto", "sync") or cfg.algorithm.max_staleness > 0:
        raise InputError("reward-model training runs under the sync schedule only (set runner.schedule=sync and "
                         "algorithm.max_staleness=0)", key="runner.schedule")
    if cfg.data.task not in PREFERENCE_TASKS:
        raise InputError(f"reward-model training needs preference pairs: data.task must be one of "
                         f"{', '.join(PREFERENCE_TASKS)} (got '{cfg.data.task}')", key="data.task")


def pad_pairs(pairs: List[Pair], pad_id: int) -> Dict[str, torch.Tensor]:
    """input_ids / attention_mask [n, 2, W] (chosen, rejected; right-padded) and margin [n]."""
    width = max(max(len(c), len(r)) for c, r, _ in pairs)
    ids = torch.full((len(pairs), 2, width), pad_id, dtype=torch.long)
    mask = torch.zeros((len(pairs), 2, width), dtype=torch.long)
    for i, (chosen, rejected, _) in enumerate(pairs):
        for j, seq in enumerate((chosen, rejected)):
            ids[i, j, :len(seq)] = torch.tensor(seq, dtype=torch.long)
            mask[i, j, :len(seq)] = 1
    return {"input_ids": ids, "attention_mask": mask,
            "margin": torch.tensor([m for _, _, m in pairs], dtype=torch.float32)}


def pair_metrics(scores: torch.Tensor, margins: torch.Tensor) -> Dict[str, float]:
    """From [n, 2] scores (chosen, rejected): pair_accuracy, Bradley-Terry loss, reward_gap, num_pairs."""
    gap = scores[:, 0] - scores[:, 1]
    return {"pair_accuracy": float((gap > 0).float().mean()),
            "loss": float(bradley_terry_loss(scores[:, 0], scores[:, 1], margins)),
            "reward_gap": float(gap.mean()), "num_pairs": int(scores.shape[0])}


class RewardModelWorkflow:
    def __init__(self, cfg: RLinfConfig, placement: Placement, phase):
        validate(cfg)
        self.cfg, self.placement, self.phase = cfg, placement, phase
        self.tokenizer = load_tokenizer(cfg.actor.model.path, cfg.actor.model.char_vocab)
        self.world = placement.world_size(GROUP)
        if cfg.data.batch_size % self.world:
            raise InputError(f"data.batch_size {cfg.data.batch_size} pairs do not split evenly over {self.world} "
                             f"ranks", key="data.batch_size")
        task = load_task(cfg.data)
        self.train_pairs = encode_pairs(self.tokenizer, task.train, cfg.data.max_length, "data.path")
        self.eval_pairs = encode_pairs(self.tokenizer, task.eval, cfg.data.max_length, "data.eval_path")
        if len(self.train_pairs) < cfg.data.batch_size:
            raise InputError(f"{len(self.train_pairs)} training pairs, fewer than one batch", key="data.batch_size")
        self.version = self.synced_version = 0  # updates done (the sync schedule's counters)
        self.groups: List[WorkerGroup] = []
        logger.info("reward model: %d training pairs, %d held out", len(self.train_pairs), len(self.eval_pairs))

    def start(self, cluster: Cluster) -> None:
        cfg = self.cfg
        trainer_cls = RewardModelTrainer
        if cfg.actor.backend == "deepspeed":
            from rlinf.workers.reward.rm_deepspeed import DeepSpeedRewardModelTrainer as trainer_cls
        self.trainer = WorkerGroup(cluster, trainer_cls, GROUP, self.placement.devices[GROUP],
                                   args=(cfg.actor, len(self.tokenizer), cfg.runner.seed))
        self.groups.append(self.trainer)
        n_params = self.trainer.call("setup").wait()[0]
        logger.info("reward model: %s parameters on %d rank(s)", f"{n_params:,}", self.trainer.size)

    def sync_weights(self, publish: bool = True) -> None:
        """Nothing to sync: no rollout reads the reward model during its training."""

    # ---- data ---------------------------------------------------------------------------------------
    def pairs_for_step(self, step: int) -> List[Pair]:
        """The step's pairs: a seeded shuffle per pass over the training pairs (resumable by step)."""
        return epoch_batch(self.train_pairs, self.cfg.data.batch_size, self.cfg.data.seed, step)

    def collect(self, step: int) -> Dict:
        return {"pairs": self.pairs_for_step(step), "step": step}

    def _shards(self, pairs: List[Pair]) -> List[Dict[str, torch.Tensor]]:
        per = len(pairs) // self.world
        return [pad_pairs(pairs[r * per:(r + 1) * per], self.tokenizer.pad_token_id) for r in range(self.world)]

    # ---- phases -------------------------------------------------------------------------------------
    def train(self, batch: Dict) -> Dict[str, float]:
        pairs = batch["pairs"]
        t0 = time.time()
        metrics = self.trainer.scatter("update", self._shards(pairs)).wait()[0]
        self.version += 1
        metrics.update({"time/update_s": time.time() - t0, "weights/version": self.version,
                        "samples": len(pairs), "tokens": float(sum(len(c) + len(r) for c, r, _ in pairs))})
        return metrics

    def score_pairs(self, pairs: List[Pair]) -> torch.Tensor:
        """[n, 2] scores of `pairs` by the group: split evenly, the shortfall padded with repeats of the
        first pair (every rank runs the same number of forwards), the padding dropped."""
        per = -(-len(pairs) // self.world)
        padded = pairs + [pairs[0]] * (per * self.world - len(pairs))
        shards = [pad_pairs(padded[r * per:(r + 1) * per], self.tokenizer.pad_token_id) for r in range(self.world)]
        return torch.cat(self.trainer.scatter("score", shards).wait())[:len(pairs)]

    def evaluate(self) -> Dict[str, float]:
        with self.phase("evaluate"):
            scores = self.score_pairs(self.eval_pairs)
        return pair_metrics(scores, torch.tensor([m for _, _, m in self.eval_pairs], dtype=torch.float32))

    # ---- checkpoints --------------------------------------------------------------------------------
    def save_checkpoint(self, path: str) -> None:
        """`path/actor` (sharded, for resuming) and `path/reward_model` (Hugging Face directory)."""
        self.trainer.call("save_checkpoint", f"{path}/{GROUP}", {"version": self.version},
                          export_dir=f"{path}/{EXPORT_DIR}").wait()

    def checkpoint_mismatch(self, path: str) -> Optional[str]:
        if not (Path(path) / GROUP).is_dir():
            return f"group '{GROUP}' (the reward model) is missing from the checkpoint"
        for name in ("critic", "reference"):
            if (Path(path) / name).is_dir():
                return f"checkpoint holds a '{name}' group: it is not a reward-model checkpoint"
        found = [m for m in self.trainer.call("checkpoint_mismatch", f"{path}/{GROUP}").wait() if m is not None]
        return f"{GROUP}: {found[0]}" if found else None

    def load_checkpoint(self, path: str, step: int) -> None:
        self.trainer.call("load_checkpoint", f"{path}/{GROUP}").wait()
        self.version = self.synced_version = step
