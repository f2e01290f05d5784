"""Supervised fine-tuning as a workflow of the one runner (sync schedule, same run directory, checkpoints,
metrics): the actor learns conversations by next-token NLL on assistant tokens only.

Data: `data.task: conversations`, a user's jsonl / parquet / arrow file (`data.path`, column
`data.messages_key`; held out: `data.eval_path`, else the last `data.eval_size` rows), rendered in the
controller by `rlinf.envs.text.conversations` (chat template when the tokenizer has one, else the
multi-turn agent rollout's layout; at most `data.max_length` tokens, keeping the start) into the rows
`rlinf.workflows.multiturn.build_multiturn_rows` makes: prompt left-padded, then the turns, with
`response_mask` 1 on assistant tokens. Each step takes `data.batch_size` conversations: a seeded shuffle
of the training rows per pass (`data.seed` + pass), cut into consecutive batches, so step s always gets
the same rows and a resumed run continues where it stopped. Rows are split evenly over the group's
ranks (`data.batch_size` must divide; token-balanced with `actor.max_tokens_per_micro_batch`).

One group, `actor` (ActorWorker, FSDP2; lr `actor.lr`, clip `actor.grad_clip`, micro-batches of
`actor.micro_batch_size` rows or packed by `actor.max_tokens_per_micro_batch`). Loss: token-mean NLL
over the assistant tokens of the whole global batch (`ActorWorker.sft_update`). Metrics per step:
sft/loss, sft/token_accuracy (argmax = target on assistant tokens), sft/grad_norm, sft/truncated (rows
of the batch cut at data.max_length), sft/assistant_tokens, samples, tokens (all non-padding tokens).

evaluate() -> {loss, token_accuracy, tokens, truncated} over the held-out rows: NLL and argmax accuracy
per assistant token, their count, and the held-out rows cut at data.max_length.

Checkpoint at `<run>/checkpoints/step_N/`: `actor/` (sharded model + optimizer + RNG: resuming, and
`actor.init_checkpoint` of a later run, SFT or RL) and `actor_hf/` (the full model and its tokenizer as
a Hugging Face directory, for `actor.model.path`).
"""

import logging
import time
from pathlib import Path
from typing import Dict, List, Optional

import torch

from rlinf.config import RLinfConfig
from rlinf.envs.agent.trajectory import Trajectory
from rlinf.envs.text.conversations import render_conversations
from rlinf.envs.text.files import load_file_task
from rlinf.errors import InputError
from rlinf.models.tokenizer import load_tokenizer
from rlinf.placement import Placement
from rlinf.scheduler import Cluster, WorkerGroup
from rlinf.workers.actor.fsdp_actor import ActorWorker
from rlinf.workflows.batching import epoch_batch, shard_rows
from rlinf.workflows.multiturn import build_multiturn_rows

logger = logging.getLogger(__name__)

GROUP = "actor"
EXPORT_DIR = "actor_hf"  # the Hugging Face directory inside each checkpoint
ROW_KEYS = ("input_ids", "attention_mask", "position_ids", "response_mask")


def validate(cfg: RLinfConfig) -> None:
    """What this workflow cannot run, before anything starts."""
    if cfg.runner.schedule not in ("auto", "sync") or cfg.algorithm.max_staleness > 0:
        raise InputError("SFT runs under the sync schedule only (set runner.schedule=sync and "
                         "algorithm.max_staleness=0)", key="runner.schedule")
    if cfg.data.task != "conversations":
        raise InputError(f"SFT trains on conversations: set data.task=conversations (got '{cfg.data.task}')",
                         key="data.task")
    if cfg.actor.backend != "fsdp":
        raise InputError("SFT trains with the FSDP2 actor: set actor.backend=fsdp", key="actor.backend")


def sft_rows(trajectories: List[Trajectory], pad_id: int) -> Dict[str, torch.Tensor]:
    """input_ids, attention_mask, position_ids [B, P + T] and response_mask [B, T] (1 on assistant
    tokens) of rendered conversations: the multi-turn layout, without the RL fields."""
    batch = build_multiturn_rows(trajectories, pad_id).batch
    return {k: batch[k] for k in ROW_KEYS}


def pad_to_multiple(batch: Dict[str, torch.Tensor], parts: int) -> Dict[str, torch.Tensor]:
    """`batch` with copies of its first row appended until `parts` divides the row count; the copies'
    response_mask is 0, so they add nothing to any sum over assistant tokens."""
    n = batch["input_ids"].shape[0]
    extra = -n % parts
    if not extra:
        return batch
    out = {k: torch.cat([v, v[:1].expand(extra, *v.shape[1:])]) for k, v in batch.items()}
    out["response_mask"][n:] = 0
    return out


class SFTWorkflow:
    def __init__(self, cfg: RLinfConfig, placement: Placement, phase):
        validate(cfg)
        self.cfg, self.placement, self.phase = cfg, placement, phase
        self.tokenizer = load_tokenizer(cfg.actor.model.path, cfg.actor.model.char_vocab)
        self.world = placement.world_size(GROUP)
        if cfg.data.batch_size % self.world:
            raise InputError(f"data.batch_size {cfg.data.batch_size} conversations do not split evenly over "
                             f"{self.world} ranks", key="data.batch_size")
        task = load_file_task(cfg.data)
        self.train_rows = render_conversations(self.tokenizer, task.train, cfg.data.max_length, "data.path")
        self.eval_rows = render_conversations(self.tokenizer, task.eval, cfg.data.max_length,
                                              "data.eval_path" if cfg.data.eval_path is not None else "data.path")
        if len(self.train_rows) < cfg.data.batch_size:
            raise InputError(f"{len(self.train_rows)} training conversations, fewer than one batch",
                             key="data.batch_size")
        self.version = self.synced_version = 0  # updates done (the sync schedule's counters)
        self.groups: List[WorkerGroup] = []
        cut = sum(t.info["truncated"] for t in self.train_rows + self.eval_rows)
        logger.info("sft: %d training and %d held-out conversations; %d cut at data.max_length=%d",
                    len(self.train_rows), len(self.eval_rows), cut, cfg.data.max_length)

    def start(self, cluster: Cluster) -> None:
        cfg = self.cfg
        self.actor = WorkerGroup(cluster, ActorWorker, GROUP, self.placement.devices[GROUP],
                                 args=(cfg.actor, cfg.algorithm, len(self.tokenizer), cfg.runner.seed))
        self.groups.append(self.actor)
        n_params = self.actor.call("setup").wait()[0]
        logger.info("sft: %s parameters on %d rank(s)%s", f"{n_params:,}", self.actor.size,
                    f", initialised from {cfg.actor.init_checkpoint}" if cfg.actor.init_checkpoint else "")

    def sync_weights(self, publish: bool = True) -> None:
        """Nothing to sync: SFT has no rollout."""

    # ---- data ---------------------------------------------------------------------------------------
    def rows_for_step(self, step: int) -> List[Trajectory]:
        """The step's conversations: a seeded shuffle per pass over the training rows (resumable by step)."""
        return epoch_batch(self.train_rows, self.cfg.data.batch_size, self.cfg.data.seed, step)

    def collect(self, step: int) -> Dict:
        return {"rows": self.rows_for_step(step), "step": step}

    # ---- phases -------------------------------------------------------------------------------------
    def train(self, batch: Dict) -> Dict[str, float]:
        rows = batch["rows"]
        tensors = sft_rows(rows, self.tokenizer.pad_token_id)
        balance = self.cfg.actor.max_tokens_per_micro_batch is not None
        t0 = time.time()
        metrics = self.actor.scatter("sft_update", shard_rows(tensors, self.world, balance)).wait()[0]
        self.version += 1
        metrics.update({"time/update_s": time.time() - t0, "weights/version": self.version, "samples": len(rows),
                        "tokens": float(tensors["attention_mask"].sum()),
                        "sft/assistant_tokens": float(tensors["response_mask"].sum()),
                        "sft/truncated": float(sum(t.info["truncated"] for t in rows))})
        return metrics

    def evaluate(self) -> Dict[str, float]:
        with self.phase("evaluate"):
            tensors = pad_to_multiple(sft_rows(self.eval_rows, self.tokenizer.pad_token_id), self.world)
            parts = self.actor.scatter("sft_eval", shard_rows(tensors, self.world)).wait()
        nll, hits, tokens = (sum(p[k] for p in parts) for k in ("nll", "hits", "tokens"))
        return {"loss": nll / max(tokens, 1.0), "token_accuracy": hits / max(tokens, 1.0), "tokens": tokens,
                "truncated": float(sum(t.info["truncated"] for t in self.eval_rows))}

    # ---- checkpoints --------------------------------------------------------------------------------
    def save_checkpoint(self, path: str) -> None:
        """`path/actor` (sharded, for resuming and actor.init_checkpoint) and `path/actor_hf` (Hugging Face)."""
        self.actor.call("save_checkpoint", f"{path}/{GROUP}", {"version": self.version},
                        export_dir=f"{path}/{EXPORT_DIR}").wait()

    def checkpoint_mismatch(self, path: str) -> Optional[str]:
        if not (Path(path) / GROUP).is_dir():
            return f"group '{GROUP}' is missing from the checkpoint"
        for name in ("rollout", "critic", "reference", "reward_model"):
            if (Path(path) / name).is_dir():
                return f"checkpoint holds a '{name}' folder: it is not an SFT checkpoint"
        found = [m for m in self.actor.call("checkpoint_mismatch", f"{path}/{GROUP}").wait() if m is not None]
        return f"{GROUP}: {found[0]}" if found else None

    def load_checkpoint(self, path: str, step: int) -> None:
        self.actor.call("load_checkpoint", f"{path}/{GROUP}").wait()
        self.version = self.synced_version = step
