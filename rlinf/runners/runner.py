"""The one training loop of reasoning RL (GRPO / PPO-family on a language model).

    for step in steps:
        batch   = schedule.next_batch(step)    # sync: sync weights, generate, score now
        metrics = train(batch)                 # advantages on the controller, update on the actor
        schedule.after_update(step)
        log / evaluate / checkpoint

The schedule (sync today; async with bounded staleness plugs in the same way) decides when
rollouts happen relative to updates; the loop itself never changes.
"""

import logging
import random
from contextlib import contextmanager
import time
from pathlib import Path
from typing import Dict, List, Optional

import torch

from rlinf.config import RLinfConfig, to_yaml
from rlinf.envs.text import TextSample, load_task
from rlinf.errors import InputError
from rlinf.models.tokenizer import load_tokenizer
from rlinf.placement import Placement
from rlinf.runners.batching import build_train_batch, concat_rollouts, shard_rows, split_even
from rlinf.runners.progress import Progress
from rlinf.runners.schedules import make_schedule
from rlinf.scheduler import Cluster, WorkerGroup
from rlinf.utils.rundir import RunDir
from rlinf.workers.actor.fsdp_actor import ActorWorker
from rlinf.workers.reward import RewardWorker
from rlinf.workers.rollout.worker import RolloutWorker

logger = logging.getLogger(__name__)


class Runner:
    """Owns the worker groups, the data and the run directory of one reasoning-RL run."""

    def __init__(self, cfg: RLinfConfig, placement: Placement, config_name: str = "run"):
        self.cfg, self.placement = cfg, placement
        self.tokenizer = load_tokenizer(cfg.actor.model.path)
        self.task = load_task(cfg.data)
        n_rows = cfg.data.batch_size * cfg.algorithm.group_size
        if n_rows % placement.world_size("actor"):
            raise InputError(f"data.batch_size x algorithm.group_size = {n_rows} rows do not split evenly over "
                             f"{placement.world_size('actor')} actor ranks", key="data.batch_size")
        self.events: List[dict] = []
        self.version = 0
        self.synced_version = -1
        self.run_dir = RunDir.create(cfg.runner.output_dir, config_name, to_yaml(cfg), cfg.runner.tensorboard)
        logger.info("run directory: %s", self.run_dir.path)
        self.cluster = Cluster(cfg.cluster)
        self._start_groups()
        self.schedule = make_schedule(cfg, placement)

    # ---- setup ------------------------------------------------------------------------------------
    def _start_groups(self) -> None:
        cfg, tok = self.cfg, self.tokenizer
        vocab = len(tok)
        with self._phase("controller", "start_workers"):
            self.actor = WorkerGroup(self.cluster, ActorWorker, "actor", self.placement.devices["actor"],
                                     args=(cfg.actor, cfg.algorithm, vocab, cfg.runner.seed))
            self.rollout = WorkerGroup(self.cluster, RolloutWorker, "rollout", self.placement.devices["rollout"],
                                       args=(cfg.rollout, cfg.actor.model, vocab, tok.eos_token_id,
                                             tok.pad_token_id, cfg.runner.seed), init_dist=False)
            self.reward = WorkerGroup(self.cluster, RewardWorker, "reward", self.placement.devices["reward"],
                                      args=(cfg.reward,), init_dist=False)
            n_params = self.actor.call("setup").wait()[0]
        logger.info("actor: %s parameters on %d rank(s); mode %s", f"{n_params:,}", self.actor.size,
                    self.placement.mode)

    @contextmanager
    def _phase(self, group: str, name: str):
        """Time a controller-side phase for the timeline."""
        start = time.time()
        try:
            yield
        finally:
            self.events.append({"group": group, "rank": 0, "name": name, "start": start, "end": time.time()})

    # ---- data -------------------------------------------------------------------------------------
    def prompts_for_step(self, step: int) -> List[TextSample]:
        """The step's prompts: a seeded shuffle per pass over the training set (resumable by step)."""
        B, data = self.cfg.data.batch_size, self.task.train
        per_epoch = max(1, len(data) // B)
        epoch, index = divmod(step, per_epoch)
        order = list(range(len(data)))
        random.Random(self.cfg.data.seed + epoch).shuffle(order)
        return [data[i] for i in order[index * B:(index + 1) * B]]

    def encode(self, sample: TextSample) -> List[int]:
        tok = self.tokenizer
        if getattr(tok, "chat_template", None):
            return tok.apply_chat_template([{"role": "user", "content": sample.prompt}], add_generation_prompt=True,
                                           tokenize=True)
        return tok.encode(sample.prompt)

    # ---- phases -------------------------------------------------------------------------------------
    def sync_weights(self) -> None:
        """Actor weights -> every rollout rank (bit-exact), tagged with the current version."""
        if self.synced_version == self.version:
            return
        with self._phase("controller", "sync_weights"):
            refs = [r for per_rank in self.actor.call("export_weights").wait() for r in per_rank]
            versions = self.rollout.call("load_weights", refs, self.version).wait()
        assert set(versions) == {self.version}
        self.synced_version = self.version

    def generate(self, samples: List[TextSample], n: int, greedy: bool = False,
                 seed: Optional[int] = None) -> Dict:
        """n responses per sample, spread over the rollout ranks; returns rollout tensors + texts + rewards."""
        prompts = [self.encode(s) for s in samples for _ in range(n)]
        answers = [s.answer for s in samples for _ in range(n)]
        shards = split_even(prompts, self.rollout.size)
        t0 = time.time()
        outs = self.rollout.scatter("generate", shards, greedy=greedy, seed=seed).wait()
        rollout = concat_rollouts(outs, self.tokenizer.pad_token_id)
        t1 = time.time()
        texts = [self.tokenizer.decode(r[m.bool()].tolist(), skip_special_tokens=True)
                 for r, m in zip(rollout["responses"], rollout["mask"])]
        pairs = list(zip(texts, answers))
        scores = [s for part in self.reward.scatter("score", split_even(pairs, self.reward.size)).wait() for s in part]
        rollout.update(prompts=prompts, texts=texts, scores=torch.tensor(scores, dtype=torch.float32),
                       group_index=torch.arange(len(samples)).repeat_interleave(n),
                       timing={"rollout": t1 - t0, "reward": time.time() - t1})
        return rollout

    def train(self, rollout: Dict) -> Dict[str, float]:
        cfg = self.cfg
        batch = build_train_batch(rollout["prompts"], rollout, rollout["scores"], rollout["group_index"],
                                  cfg.algorithm, self.tokenizer.pad_token_id)
        t0 = time.time()
        metrics = self.actor.scatter("update", shard_rows(batch, self.actor.size)).wait()[0]
        self.version += 1
        scores, mask = rollout["scores"], rollout["mask"]
        metrics.update({
            "reward/mean": float(scores.mean()),
            "reward/accuracy": float((scores >= 1.0).float().mean()),
            "response/length": float(mask.sum(1).mean()),
            "staleness/max": float(self.version - 1 - rollout["versions"].min()),
            "time/rollout_s": rollout["timing"]["rollout"],
            "time/reward_s": rollout["timing"]["reward"],
            "time/update_s": time.time() - t0,
            "weights/version": self.version,
        })
        return metrics

    def evaluate(self) -> Dict[str, float]:
        self.sync_weights()
        with self._phase("controller", "evaluate"):
            out = self.generate(self.task.eval, 1, greedy=True, seed=0)
        scores = out["scores"]
        return {"accuracy": float((scores >= 1.0).float().mean()), "reward": float(scores.mean()),
                "num_samples": len(self.task.eval)}

    # ---- the loop -----------------------------------------------------------------------------------
    def fit(self) -> Dict:
        cfg = self.cfg.runner
        t_start = time.time()
        eval_start = self.evaluate()
        logger.info("eval at start: %s", eval_start)
        self.run_dir.log_metrics(0, {f"eval/{k}": v for k, v in eval_start.items()})
        samples = tokens = 0
        train_time = 0.0
        progress = Progress(cfg.max_steps, enabled=cfg.progress_bar)
        self.schedule.start(self)
        for step in range(cfg.max_steps):
            t0 = time.time()
            rollout = self.schedule.next_batch(self, step)
            metrics = self.train(rollout)
            self.schedule.after_update(self, step)
            dt = time.time() - t0
            train_time += dt
            samples += len(rollout["texts"])
            tokens += int(rollout["mask"].sum())
            metrics.update({"time/step_s": dt, "throughput/samples_per_s": len(rollout["texts"]) / dt,
                            "throughput/tokens_per_s": float(rollout["mask"].sum()) / dt})
            if cfg.eval_interval and (step + 1) % cfg.eval_interval == 0 and step + 1 < cfg.max_steps:
                metrics.update({f"eval/{k}": v for k, v in self.evaluate().items()})
            if (step + 1) % cfg.log_interval == 0 or step + 1 == cfg.max_steps:
                self.run_dir.log_metrics(step + 1, metrics)
            progress.update(step + 1, metrics)
        self.schedule.stop(self)
        progress.close()
        eval_final = self.evaluate()
        logger.info("eval at end: %s", eval_final)
        self.run_dir.log_metrics(cfg.max_steps, {f"eval/{k}": v for k, v in eval_final.items()})
        summary = {
            "eval": {"start": eval_start, "final": eval_final},
            "steps": cfg.max_steps,
            "throughput": {"samples_per_s": samples / max(train_time, 1e-9),
                           "tokens_per_s": tokens / max(train_time, 1e-9)},
            "wall_time_s": time.time() - t_start,
            "placement": self.placement.as_dict(),
        }
        self.run_dir.write_summary(summary)
        return summary

    def close(self) -> None:
        events = list(self.events)
        for group in (self.actor, self.rollout, self.reward):
            try:
                events += group.pop_events()
            finally:
                group.shutdown()
        if self.cfg.runner.timeline:
            self.run_dir.write_timeline(events)
        self.run_dir.close()
        self.cluster.shutdown()


def run(cfg: RLinfConfig, placement: Placement, config_name: str = "run", resume: Optional[str] = None) -> Dict:
    if resume is not None:
        raise InputError("--resume is not supported yet for this recipe", key="--resume")
    runner = Runner(cfg, placement, config_name)
    try:
        summary = runner.fit()
    finally:
        runner.close()
    logger.info("run directory: %s", Path(runner.run_dir.path))
    return summary
