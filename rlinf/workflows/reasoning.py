"""Reasoning workflow: GRPO / PPO-family RL of a language model on verifiable text tasks.

Phases the runner and its schedule call: `sync_weights`, `collect(step)` (generate + score),
`train(batch)`, `evaluate()`. Groups: actor (FSDP2 training), rollout (generation), reward.
"""

import logging
import random
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Dict, List, Optional, Tuple

import torch

from rlinf.algorithms import ADV_ESTIMATORS, POLICY_LOSSES, AdaptiveKLController, kl_penalized_token_rewards
from rlinf.config import RLinfConfig
from rlinf.envs.text import TextSample, load_task
from rlinf.errors import InputError
from rlinf.models.tokenizer import decode_responses, encode_prompt, load_tokenizer
from rlinf.placement import Placement
from rlinf.workflows.batching import (add_advantages, build_lm_batch, concat_rollouts, epoch_batch, shard_rows,
                                      split_even, unshard_rows)
from rlinf.workflows import scores_in_rollout
from rlinf.workflows.dynamic_sampling import collect_dynamic
from rlinf.workflows.weight_sync import WeightSync, WeightSyncMixin
from rlinf.scheduler import Cluster, GroupHandle, WorkerGroup
from rlinf.workers.actor.fsdp_actor import ActorWorker
from rlinf.workers.critic.fsdp_critic import CriticWorker, check_critic_init
from rlinf.workers.reference.worker import ReferenceWorker
from rlinf.workers.reward import REWARDS, reward_worker_class, validate_reward
from rlinf.workers.rollout.worker import RolloutWorker

logger = logging.getLogger(__name__)

EVAL_KL_SEED = 7_654_321  # the sampled responses `eval_kl` measures (the same at every evaluation)


def _validate_names(cfg: RLinfConfig) -> None:
    """Registry names and combinations, checked before any worker starts."""
    ADV_ESTIMATORS.get(cfg.algorithm.adv_estimator)
    POLICY_LOSSES.get(cfg.algorithm.policy_loss)
    validate_reward(cfg.reward)
    unknown = sorted(v for v in cfg.reward.eval_verifiers.values() if v not in REWARDS)
    if unknown:
        raise InputError(f"unknown verifier(s) {unknown}; known: {', '.join(REWARDS.names())}",
                         key="reward.eval_verifiers")
    if cfg.algorithm.kl_target is not None and cfg.algorithm.kl_in != "reward":
        raise InputError("an adaptive KL coefficient (kl_target) needs algorithm.kl_in=reward",
                         key="algorithm.kl_target")
    if cfg.algorithm.adv_estimator == "gae" and not cfg.critic.enabled:
        raise InputError("'gae' needs a critic: set critic.enabled=true (or use grpo, rloo, ...)",
                         key="algorithm.adv_estimator")
    if cfg.rollout.engine == "vllm":
        from rlinf.workers.rollout.vllm_worker import validate_vllm

        validate_vllm(cfg.actor.model)
    elif cfg.rollout.engine != "transformers":
        raise InputError(f"engine '{cfg.rollout.engine}' generates for simulators, not text (use transformers "
                         "or vllm)", key="rollout.engine")


@dataclass
class IssuedGeneration:
    """Rollout calls issued and not waited for yet (`ReasoningWorkflow.issue_generation`)."""
    handle: GroupHandle
    prompts: List[List[int]]  # prompt token ids, one row per response
    answers: list
    prompt_texts: List[str]
    num_samples: int
    n: int  # responses per sample
    greedy: bool
    issued_at: float
    scored: bool = False  # the rollout ranks scored too (reward.in_rollout): each output has `scores`
    ahead_of_step: Optional[int] = None  # issued by the previous step's train() for this step (collect ahead)


class ReasoningWorkflow(WeightSyncMixin):
    # The weight load is only issued by sync_weights; generate() queues its rollout calls behind it, then settles.
    settle_weight_loads = False
    # The sync schedule may let train() issue the next step's generation (`collect_next_ahead`); it then sets
    # `collect_ahead_until` to the step the run ends before.
    collects_ahead = True
    collect_ahead_until: Optional[int] = None

    def __init__(self, cfg: RLinfConfig, placement: Placement, phase):
        self.cfg, self.placement, self.phase = cfg, placement, phase
        _validate_names(cfg)
        self.tokenizer = load_tokenizer(cfg.actor.model.path, cfg.actor.model.char_vocab)
        self.task = load_task(cfg.data)
        n_rows = cfg.data.batch_size * cfg.algorithm.group_size
        for name in ("actor", "reference") if cfg.algorithm.kl_coef > 0 else ("actor",):
            if n_rows % placement.world_size(name):
                raise InputError(f"data.batch_size x algorithm.group_size = {n_rows} rows do not split evenly "
                                 f"over {placement.world_size(name)} {name} ranks", key="data.batch_size")
        self.kl = AdaptiveKLController(cfg.algorithm.kl_coef, cfg.algorithm.kl_target, cfg.algorithm.kl_horizon)
        self.version = 0          # weights version of the actor (updates done)
        self.weights: WeightSync  # set in start()
        self.groups: List[WorkerGroup] = []
        self.async_schedule = cfg.runner.schedule == "async" or (cfg.runner.schedule == "auto" and
                                                                 cfg.algorithm.max_staleness > 0)
        if cfg.algorithm.dynamic_sampling:  # how many rounds a step needs is known only after its first one
            self.collects_ahead = False
        self._ahead: Optional[IssuedGeneration] = None

    def start(self, cluster: Cluster) -> None:
        cfg, tok, devices = self.cfg, self.tokenizer, self.placement.devices
        vocab = len(tok)
        actor_cls = ActorWorker
        if cfg.actor.backend == "deepspeed":
            from rlinf.workers.actor.deepspeed_actor import DeepSpeedActorWorker as actor_cls
        # Every group is launched before any is waited for: their processes start side by side.
        self.actor = WorkerGroup(cluster, actor_cls, "actor", devices["actor"],
                                 args=(cfg.actor, cfg.algorithm, vocab, cfg.runner.seed, cfg.rollout), wait_ready=False)
        self.groups.append(self.actor)
        rollout_cls = RolloutWorker
        if cfg.rollout.engine == "vllm":
            from rlinf.workers.rollout.vllm_worker import VLLMRolloutWorker as rollout_cls
        self.rollout = WorkerGroup(cluster, rollout_cls, "rollout", devices["rollout"],
                                   args=(cfg.rollout, cfg.actor.model, vocab, tok.eos_token_id, tok.pad_token_id,
                                         cfg.runner.seed), init_dist=False, wait_ready=False)
        self.groups.append(self.rollout)
        self.launch_scoring_group(cluster)
        self.critic = None
        if cfg.critic.enabled:
            check_critic_init(cfg.critic, cfg.reward.model.path, tok)
            self.critic = WorkerGroup(cluster, CriticWorker, "critic", devices["critic"],
                                      args=(cfg.critic, cfg.algorithm, vocab, cfg.runner.seed),
                                      kwargs={"reward_model_path": cfg.reward.model.path}, wait_ready=False)
            self.groups.append(self.critic)
        self.reference = None
        if cfg.algorithm.kl_coef > 0:  # pi_ref: the actor's initial policy (model config, seed, init checkpoint)
            self.reference = WorkerGroup(cluster, ReferenceWorker, "reference", devices["reference"],
                                         args=(cfg.actor.model, vocab, cfg.runner.seed, cfg.actor.micro_batch_size,
                                               cfg.rollout, cfg.actor.max_tokens_per_micro_batch),
                                         kwargs={"init_checkpoint": cfg.actor.init_checkpoint}, wait_ready=False)
            self.groups.append(self.reference)
        for group in self.groups:
            group.ready()
        self.weights = WeightSync(self.actor, self.rollout, self.phase)
        if self.critic is not None:
            critic_setup = self.critic.call("setup")
        reference_setup = self.reference.call("setup") if self.reference is not None else None
        if self.reward is not None:  # reward ranks decode the rollout ranks' outputs themselves (generate)
            self.reward.call("attach_tokenizer", tok).wait()
        elif scores_in_rollout(cfg.reward) and not cfg.env.tools:  # the rollout ranks score their own responses
            self.rollout.call("attach_scorer", tok, cfg.reward).wait()
        n_params = self.actor.call("setup").wait()[0]
        if reference_setup is not None:
            reference_setup.wait()
        if self.critic is not None:
            critic_setup.wait()
        if cfg.reshard.transport != "object_store":  # auto and engine: the resharding engine
            self.weights.use_engine(cfg.reshard, colocated=self.placement.shares_devices("actor", "rollout"),
                                    staged=self.async_schedule)
        logger.info("actor: %s parameters on %d rank(s); placement %s", f"{n_params:,}", self.actor.size,
                    self.placement.mode)

    def launch_scoring_group(self, cluster: Cluster) -> None:
        """Launch (without waiting) the group that scores responses: the reward group, rule verifiers or a
        learned reward model; none with `reward.in_rollout` (the rollout ranks score). The agent workflow
        launches its env group here instead."""
        if scores_in_rollout(self.cfg.reward):
            self.reward, self.reward_has_state = None, False
            return
        reward_cls = reward_worker_class(self.cfg.reward)
        self.reward = WorkerGroup(cluster, reward_cls, "reward", self.placement.devices["reward"],
                                  args=(self.cfg.reward,), init_dist=reward_cls.INIT_DIST, wait_ready=False)
        self.reward_has_state = reward_cls.has_state(self.cfg.reward)  # checkpointed under <ckpt>/reward
        self.groups.append(self.reward)

    # ---- data -------------------------------------------------------------------------------------
    def prompts_for_step(self, step: int) -> List[TextSample]:
        """The step's prompts: a seeded shuffle per pass over the training set (resumable by step)."""
        return epoch_batch(self.task.train, self.cfg.data.batch_size, self.cfg.data.seed, step)

    def encode(self, sample: TextSample) -> List[int]:
        return encode_prompt(self.tokenizer, sample.prompt)

    # ---- phases -----------------------------------------------------------------------------------
    def refill_prompts(self, step: int, round_: int, count: int) -> List[TextSample]:
        """Extra prompts for dynamic-sampling round `round_` >= 1 of `step`: seeded by (data seed, step,
        round), so a resumed run draws the same ones."""
        data = self.task.train
        rng = random.Random(f"{self.cfg.data.seed}-{step}-{round_}")
        picks = rng.sample(range(len(data)), count) if count <= len(data) else rng.choices(range(len(data)), k=count)
        return [data[i] for i in picks]

    def collect(self, step: int) -> Dict:
        algo, seed = self.cfg.algorithm, self.cfg.runner.seed + step
        if not algo.dynamic_sampling:
            issued = self._take_ahead(step) or self.issue_generation(self.prompts_for_step(step), algo.group_size,
                                                                     seed=seed)
            return {**self.finish_generation(issued), "step": step}

        def generate_round(round_: int, count: int) -> Dict:
            samples = self.prompts_for_step(step)[:count] if round_ == 0 else self.refill_prompts(step, round_, count)
            return self.generate(samples, algo.group_size, seed=seed + round_ * 10_000_019)

        rollout = collect_dynamic(generate_round, self.cfg.data.batch_size, algo.dynamic_sampling_max_rounds,
                                  self.tokenizer.pad_token_id)
        return {**rollout, "step": step}

    def collect_next_ahead(self, step: int) -> None:
        """Collect ahead, called by train() right after it issued the transfer of the weights its update
        makes (`WeightSync.load_after_update`): issue step `step + 1`'s generation now. Each rollout rank
        runs its calls in the order they were issued, so the generation starts on the new weights as soon
        as they are in, instead of after the controller has the update's result, logged it and come back.
        The samples are those `collect(step + 1)` would draw: prompts and seed are functions of the step
        and the weights are the same. A reward group's scoring waits for `collect`, so a reward model's
        running statistics see the batches in the same order around evaluations as without collecting
        ahead (rule verifiers scoring in the rollout ranks keep no statistics).
        A run that stops before step `step + 1` (early stopping, a failure) does not train on this batch:
        `discard_ahead` counts it as dropped."""
        nxt = step + 1
        if self.collect_ahead_until is None or nxt >= self.collect_ahead_until:  # set only if collects_ahead
            return
        self._ahead = self.issue_generation(self.prompts_for_step(nxt), self.cfg.algorithm.group_size,
                                            seed=self.cfg.runner.seed + nxt)
        self._ahead.ahead_of_step = nxt

    def _take_ahead(self, step: int) -> Optional[IssuedGeneration]:
        issued, self._ahead = self._ahead, None
        if issued is not None and issued.ahead_of_step != step:
            raise RuntimeError(f"the generation issued ahead is for step {issued.ahead_of_step}, collecting step {step}")
        return issued

    def discard_ahead(self) -> int:
        """At the end of a run: forget a generation issued ahead for a step that will not run (it is not
        waited for; the groups' shutdown ends it). Returns the number of batches dropped (0 or 1)."""
        issued, self._ahead = self._ahead, None
        if issued is None:
            return 0
        logger.info("the generation issued ahead for step %d (%d responses) is dropped: the run stopped before "
                    "that step", issued.ahead_of_step, len(issued.prompts))
        return 1

    def generate(self, samples: List[TextSample], n: int, greedy: bool = False, seed: Optional[int] = None,
                 score: bool = True) -> Dict:
        """n responses per sample spread over the rollout ranks, decoded and (unless `score` is False) scored."""
        return self.finish_generation(self.issue_generation(samples, n, greedy, seed, score), score)

    def issue_generation(self, samples: List[TextSample], n: int, greedy: bool = False,
                         seed: Optional[int] = None, score: bool = True) -> IssuedGeneration:
        """The first half of `generate`: the rollout ranks' calls go out; nothing is waited for. With
        `reward.in_rollout` (and `score`) each rollout rank also scores its rows."""
        prompts = [self.encode(s) for s in samples for _ in range(n)]
        answers = [s.answer for s in samples for _ in range(n)]
        prompt_texts = [s.prompt for s in samples for _ in range(n)]
        shards = split_even(prompts, self.rollout.size)
        scored = score and scores_in_rollout(self.cfg.reward)
        if scored:
            per_rank = zip(shards, split_even(prompt_texts, self.rollout.size), split_even(answers, self.rollout.size))
            handle = self.rollout.call_per_rank("generate_scored", list(per_rank), greedy=greedy, seed=seed)
        else:
            handle = self.rollout.scatter("generate", shards, greedy=greedy, seed=seed)
        return IssuedGeneration(handle, prompts, answers, prompt_texts, len(samples), n, greedy, time.time(), scored)

    def finish_generation(self, issued: IssuedGeneration, score: bool = True) -> Dict:
        """The second half of `generate`: wait for the responses, decode and (unless `score` is False) score them."""
        generation, greedy = issued.handle, issued.greedy
        t0 = time.time() if issued.ahead_of_step is not None else issued.issued_at  # the wait, not the update before it
        self.weights.settle()  # the weight load `sync_weights` issued (the generate calls run after it)
        # Evaluation (greedy) is scored without adding to a reward model's running normalisation.
        # With as many reward ranks as rollout ranks, reward rank i scores rollout rank i's responses as
        # soon as they exist, fetching them itself: the scoring call goes out now, with no controller
        # round trip between generating and scoring; the controller decodes its copy meanwhile.
        direct_scores = None
        if score and not issued.scored and self.reward.size == self.rollout.size:
            shards = zip(generation.peer_results(), split_even(issued.prompt_texts, self.reward.size),
                         split_even(issued.answers, self.reward.size))
            direct_scores = self.reward.call_per_rank("score_generation", list(shards), update_stats=not greedy)
        outputs = generation.wait()
        rollout = concat_rollouts(outputs, self.tokenizer.pad_token_id)
        t1 = time.time()
        texts = decode_responses(self.tokenizer, rollout["responses"], rollout["mask"])
        prompts = issued.prompts
        if not score:
            rollout.update(prompts=prompts, texts=texts)
            return rollout
        if issued.scored:
            scores = [s for out in outputs for s in out["scores"]]
        elif direct_scores is not None:
            scores = [s for part in direct_scores.wait() for s in part]
        else:
            items = list(zip(issued.prompt_texts, texts, issued.answers))  # the reward model reads the prompt too
            scores = [s for part in self.reward.scatter("score", split_even(items, self.reward.size),
                                                        update_stats=not greedy).wait() for s in part]
        rollout.update(prompts=prompts, texts=texts, scores=torch.tensor(scores, dtype=torch.float32),
                       group_index=torch.arange(issued.num_samples).repeat_interleave(issued.n),
                       timing={"rollout": t1 - t0, "reward": time.time() - t1})
        return rollout

    def training_batch(self, rollout: Dict) -> Dict[str, torch.Tensor]:
        """The rows the actor and critic read (prompt + response layout of `build_lm_batch`)."""
        return build_lm_batch(rollout["prompts"], rollout, self.tokenizer.pad_token_id)

    def train(self, rollout: Dict) -> Dict[str, float]:
        batch = self.training_batch(rollout)
        t0 = time.time()
        values = ref_logprobs = None
        # With packing, ranks get token-balanced shards (equal row counts); outputs come back in batch order.
        pack_a = self.cfg.actor.max_tokens_per_micro_batch is not None  # the reference packs as the actor
        pack_c = self.cfg.critic.max_tokens_per_micro_batch is not None
        # Critic values and reference log-probs are independent: both groups work at once.
        values_handle = (self.critic.scatter("compute_values", shard_rows(batch, self.critic.size, pack_c))
                         if self.critic is not None else None)
        ref_handle = (self.reference.scatter("compute_logprobs", shard_rows(batch, self.reference.size, pack_a))
                      if self.reference is not None else None)
        if values_handle is not None:
            values = unshard_rows(values_handle.wait(), batch, self.critic.size, pack_c)
        if ref_handle is not None:
            ref_logprobs = unshard_rows(ref_handle.wait(), batch, self.reference.size, pack_a)
        batch, kl_metrics = self.apply_kl(batch, rollout, ref_logprobs, values)
        # Actor and critic updates are independent: run them concurrently, then wait for both.
        actor_handle = self.actor.scatter("update", shard_rows(batch, self.actor.size, pack_a))
        critic_handle = (self.critic.scatter("update", shard_rows(batch, self.critic.size, pack_c))
                         if self.critic else None)
        # The new weights go to the rollout ranks as the update ends, and the next step's generation behind them.
        if self.load_weights_after_update and self.weights.load_after_update(self.version + 1) and "step" in rollout:
            self.collect_next_ahead(rollout["step"])
        metrics = actor_handle.wait()[0]
        if critic_handle is not None:
            metrics.update(critic_handle.wait()[0])
        self.version += 1
        scores, mask = rollout["scores"], rollout["mask"]
        metrics.update({
            "reward/mean": float(scores.mean()),
            "reward/accuracy": float((scores >= 1.0).float().mean()),
            "response/length": float(mask.sum(1).mean()),
            "staleness/max": float(self.version - 1 - rollout["versions"].min()),
            "staleness/channel": float(rollout.get("channel_staleness", 0)),
            "time/rollout_s": rollout["timing"]["rollout"],
            "time/reward_s": rollout["timing"]["reward"],
            "time/update_s": time.time() - t0,
            "weights/version": self.version,
            "samples": len(rollout["texts"]),
            "tokens": float(mask.sum()),
        })
        metrics.update(kl_metrics)
        for key, value in rollout.get("dynamic_sampling", {}).items():
            metrics[f"dynamic_sampling/{key}"] = value
        for key, value in rollout.get("dropped", {}).items():  # finished samples not trained on, by reason
            metrics[f"dropped/{key}"] = value
        return metrics

    def apply_kl(self, batch: Dict, rollout: Dict, ref_logprobs: Optional[torch.Tensor],
                 values: Optional[torch.Tensor]) -> Tuple[Dict, Dict[str, float]]:
        """Advantages, with the KL to the reference where `algorithm.kl_in` puts it: in the loss (the batch
        carries `ref_logprobs` to the actor) or in the reward (per-token penalty, coefficient from the
        adaptive controller, updated after this batch). The KL of the batch is measured against the
        behaviour log-probs (the sampling policy) with `algorithm.kl_estimator`. A multi-turn rollout
        brings its own `token_rewards` (per-turn rewards + the outcome at its last model token)."""
        algo, scores, mask = self.cfg.algorithm, rollout["scores"], batch["response_mask"]
        turn_rewards = rollout["token_rewards"] if "token_rewards" in rollout else None
        if ref_logprobs is None:
            return add_advantages(batch, scores, rollout["group_index"], algo, values, turn_rewards), {}
        coef = self.kl.coef
        token_rewards, kl_seq = kl_penalized_token_rewards(scores, batch["behaviour_logprobs"], ref_logprobs, mask,
                                                           coef, algo.kl_estimator, turn_rewards)
        if algo.kl_in == "loss":
            batch = {**batch, "ref_logprobs": ref_logprobs}
            token_rewards = turn_rewards
        batch = add_advantages(batch, scores, rollout["group_index"], algo, values, token_rewards)
        kl_mean = float(kl_seq.mean())
        if algo.kl_in == "reward":
            self.kl.update(kl_mean, len(kl_seq))
        return batch, {"kl/seq_mean": kl_mean, "kl/coef": coef}

    def evaluate(self) -> Dict[str, float]:
        """Greedy responses to the held-out prompts: accuracy and mean reward; with a reward model its raw
        score (`rm_reward`); each of `reward.eval_verifiers` (`<name>_reward`); with a reference the KL
        of the policy to it (`kl`, see `eval_kl`)."""
        self.sync_weights()
        with self.phase("evaluate"):
            out = self.generate(self.task.eval, 1, greedy=True, seed=0)
            result = {"accuracy": float((out["scores"] >= 1.0).float().mean()), "reward": float(out["scores"].mean()),
                      "num_samples": len(self.task.eval)}
            prompts = [s.prompt for s in self.task.eval]
            if self.cfg.reward.type == "model":
                pairs = list(zip(prompts, out["texts"]))  # scatter takes one list of shards
                parts = self.reward.scatter("raw_scores", split_even(pairs, self.reward.size)).wait()
                result["rm_reward"] = float(torch.cat(parts).mean())
            for name, verifier in self.cfg.reward.eval_verifiers.items():
                fn = REWARDS.get(verifier)
                result[f"{name}_reward"] = sum(fn(t, s.answer) for t, s in zip(out["texts"], self.task.eval)) / len(prompts)
            if self.reference is not None:
                result["kl"] = self.eval_kl()
        logger.info("eval samples: %s", "; ".join(f"{s.prompt!r} -> {t!r}" for s, t in zip(self.task.eval[:4], out["texts"])))
        return result

    def eval_kl(self) -> float:
        """Mean sequence KL(pi || pi_ref) on the held-out prompts, estimated with k1 = sum_t (log pi - log
        pi_ref) over one response per prompt *sampled* from the policy (seeded; greedy responses would
        not estimate it), both log-probs of the rollout's sampling distribution."""
        out = self.generate(self.task.eval, 1, seed=EVAL_KL_SEED, score=False)
        batch = build_lm_batch(out["prompts"], out, self.tokenizer.pad_token_id)
        pack = self.cfg.actor.max_tokens_per_micro_batch is not None
        ref = unshard_rows(self.reference.scatter("compute_logprobs", shard_rows(batch, self.reference.size, pack)).wait(),
                           batch, self.reference.size, pack)
        mask = batch["response_mask"]
        return float(((batch["behaviour_logprobs"] - ref) * mask).sum(1).mean())

    # ---- checkpoints --------------------------------------------------------------------------------
    def _stateful_groups(self) -> List[WorkerGroup]:
        """Groups whose state a checkpoint holds: actor, critic, and the reward group when it keeps state
        (a reward model's running normaliser)."""
        reward = self.reward if self.reward_has_state else None
        return [g for g in (self.actor, self.critic, reward) if g is not None]

    def save_checkpoint(self, path: str) -> None:
        """Every training group writes its shards (model, optimizer, RNG) under `path/<group>`. Rollouts
        keep no state a resumed run needs (generation is seeded by step); under the async schedule the
        schedule writes its queued batches beside this (schedule.pt, see AsyncSchedule)."""
        handles = [g.call("save_checkpoint", f"{path}/{g.name}", {"version": self.version})
                   for g in self._stateful_groups()]
        for h in handles:
            h.wait()
        torch.save({"kl": self.kl.state()}, f"{path}/workflow.pt")

    def checkpoint_mismatch(self, path: str) -> Optional[str]:
        """None when the checkpoint holds exactly this config's training groups, each with this config's
        tensors (every rank compares its own shards' layout); else the first difference."""
        groups = self._stateful_groups()
        names = {g.name for g in groups}
        saved = {child.name for child in Path(path).iterdir() if child.is_dir()}
        for name in sorted(names | {"actor", "critic", "reward"}):
            if name in names and name not in saved:
                return f"group '{name}' of this config is missing from the checkpoint"
            if name not in names and name in saved:
                return f"checkpoint holds a '{name}' group this config does not build"
        handles = [g.call("checkpoint_mismatch", f"{path}/{g.name}") for g in groups]
        for group, handle in zip(groups, handles):
            found = [m for m in handle.wait() if m is not None]
            if found:
                return f"{group.name}: {found[0]}"
        return None

    def load_checkpoint(self, path: str, step: int) -> None:
        handles = [g.call("load_checkpoint", f"{path}/{g.name}") for g in self._stateful_groups()]
        for h in handles:
            h.wait()
        state_file = Path(path) / "workflow.pt"
        if state_file.exists():  # checkpoints written before the KL controller had state have none
            self.kl.load(torch.load(state_file, weights_only=True)["kl"])
        self.version = step
        self.weights.reset()
