"""ActorWorker: an HF causal LM trained with FSDP2 (gloo on CPU, NCCL on GPU) by a PPO-family loss.

A training batch is a dict of tensors, rows sharded over the actor's data-parallel ranks:
    input_ids, attention_mask, position_ids [N, W]   prompt (left-padded) + response
    response_mask, behaviour_logprobs, advantages [N, T]   the last T columns are the response
Each rank splits its rows into micro-batches (padded rows, or packed by a token budget:
`actor.max_tokens_per_micro_batch`, `rlinf.workers.packing`) and accumulates gradients; losses are
normalised by the group's whole-batch token (or sequence) count over the number of ranks
(`group_denominator`), so accumulation and the rank average equal one big batch however it was split.

Supervised fine-tuning (rlinf.workflows.sft): `sft_update` takes one step of token-mean NLL over the
response_mask tokens (the assistant's) with the same micro-batching, packing and group-wide divisor;
`sft_eval` sums held-out NLL and argmax hits. `actor.init_checkpoint` loads another run's model weights
at setup (any workflow using this actor); `save_checkpoint(export_dir=...)` adds a Hugging Face directory.

Log-probs. Every log pi the actor computes (policy, proximal, reference) is that of the rollout's
sampling distribution, temperature / top-k / top-p included (`rlinf.workers.rollout.sampling`,
`sampling_logprobs`): the behaviour log-probs the rollout recorded are of that distribution (the
transformers sampler's, vLLM's `processed_logprobs`), so pi_theta / pi_behaviour is 1 up to float
rounding at the rollout's weights, and the KL to the reference compares like with like.

The PPO ratio r = pi_theta / pi_old per token (`algorithm.off_policy_correction`):
- none: pi_old = pi_behaviour, the policy that sampled the batch (its recorded log-probs): standard
  PPO; a stale batch (max_staleness > 0) is clipped around the weights that produced it.
- tis: decoupled PPO: pi_old = pi_prox, this actor's weights before the update (with one epoch this
  forward's own detached log-probs, else recomputed up front), and every token's loss is weighted by
  w = min(pi_prox / pi_behaviour, tis_cap) (detached).
"""

import logging
import time
from typing import Dict, List, Optional, Tuple

import ray
import torch

from rlinf.algorithms import aggregate_loss, compute_policy_loss, entropy_from_logits, kl_penalty, logprobs_from_logits
from rlinf.config.schema import ActorConfig, AlgorithmConfig
from rlinf.models.causal_lm import build_causal_lm
from rlinf.models.tokenizer import load_tokenizer
from rlinf.utils.checkpoint_layout import init_checkpoint_dir
from rlinf.workers.rollout.sampling import as_sampling_params, sampling_logits
from rlinf.workers.fsdp_worker import FSDPTrainWorker, loss_denominator, to_device  # noqa: F401 (re-export)
from rlinf.workers.packing import is_packed, merge_rows, packed_inputs, unpack

logger = logging.getLogger(__name__)


def response_logits(model, batch: Dict[str, torch.Tensor], T: int, sampling=1.0) -> torch.Tensor:
    """[N, T, V] logits of the rollout's sampling distribution (`sampling`: SamplingParams, a
    RolloutConfig or a temperature) predicting each of the last T tokens of `input_ids`: divided by
    the temperature, -inf outside the top-k / top-p support except at the token itself (see
    `rlinf.workers.rollout.sampling.sampling_logits`), so `logprobs_from_logits` of them gives the
    log-probs the rollout recorded as behaviour log-probs."""
    out = model(input_ids=batch["input_ids"], attention_mask=batch["attention_mask"],
                position_ids=batch["position_ids"], use_cache=False)
    return sampling_logits(out.logits[:, -T - 1:-1], as_sampling_params(sampling), batch["input_ids"][:, -T:])


def response_logits_targets(model, mb: Dict[str, torch.Tensor], T: int, sampling=1.0):
    """(logits, targets, to_rows) of a micro-batch's response tokens under `sampling` (see
    `response_logits`): padded, [r, T, V] logits and [r, T] targets; packed (`rlinf.workers.packing`), one
    forward over the [1, L] sequence scoring only the K response tokens with an output (logits_to_keep:
    the LM head makes [K, V] logits, not [L, V]), [K, V] logits and [K] targets. `to_rows` maps a
    per-target tensor to [r, T] (0 on padding columns)."""
    params = as_sampling_params(sampling)
    if not is_packed(mb):
        return response_logits(model, mb, T, params), mb["input_ids"][:, -T:], lambda x: x
    src = mb["pack_src"]
    out = model(**packed_inputs(model, mb), use_cache=False, logits_to_keep=src)
    tokens = mb["pack_input_ids"][0, src + 1]
    return sampling_logits(out.logits[0], params, tokens), tokens, lambda x: unpack(x, mb)


def response_logprobs(model, mb: Dict[str, torch.Tensor], T: int, sampling=1.0,
                      entropy: bool = False) -> Tuple[torch.Tensor, Optional[torch.Tensor]]:
    """[r, T] log-probs of the micro-batch's response tokens under `sampling` and, when asked, [r, T]
    entropies of that distribution (padded or packed: `response_logits_targets`)."""
    logits, tokens, to_rows = response_logits_targets(model, mb, T, sampling)
    logp = to_rows(logprobs_from_logits(logits, tokens))
    return logp, to_rows(entropy_from_logits(logits)) if entropy else None


@torch.no_grad()
def sequence_logprobs(model, mbs: List[Dict[str, torch.Tensor]], sampling) -> torch.Tensor:
    """[N, T] log-probs of the last T (= response) tokens under `sampling`, over the micro-batches `mbs`
    (padded or packed: `FSDPTrainWorker.split_micro_batches`) in the batch's row order, no grad."""
    T = mbs[0]["response_mask"].shape[1]
    return merge_rows([response_logprobs(model, mb, T, sampling)[0] for mb in mbs], mbs)


# losses whose micro-batch values are shares of the whole-batch loss (FSDPTrainWorker.accumulate)
SUMMED_METRICS = ("actor/pg_loss", "actor/entropy", "actor/kl")
SFT_SUMMED = ("sft/loss", "sft/token_accuracy")


class ActorWorker(FSDPTrainWorker):
    """Policy model + optimizer; one rank per device. With algorithm.kl_in=loss the batch carries the
    reference group's `ref_logprobs` and kl_coef x KL joins the loss."""

    def __init__(self, cfg: ActorConfig, algo: AlgorithmConfig, vocab_size: int, seed: int, sampling=1.0):
        """`sampling`: the rollout's sampling parameters (RolloutConfig / SamplingParams: temperature,
        top_p, top_k) or just a temperature; log-probs are scored under that distribution."""
        super().__init__()
        self.cfg, self.algo = cfg, algo
        self.sampling = as_sampling_params(sampling)
        torch.manual_seed(seed)
        # Same seed on every rank: identical initial weights before sharding.
        self.model = build_causal_lm(cfg.model, vocab_size, seed=seed)
        self.vocab_size, self.seed = vocab_size, seed

    def setup(self) -> int:
        """Shard, build the optimizer and, with `actor.init_checkpoint`, load that checkpoint's model
        weights (not its optimizer state); returns #params."""
        n_params = self.shard_and_build_optimizer(self.cfg.lr, self.cfg.weight_decay, self.cfg.fsdp_gather_once)
        if self.cfg.init_checkpoint is not None:
            self.load_model_weights(str(init_checkpoint_dir(self.cfg.init_checkpoint)))
        return n_params

    def _logprobs(self, model, batch: Dict[str, torch.Tensor]) -> torch.Tensor:
        mbs = self.split_micro_batches(batch, self.cfg.micro_batch_size, self.cfg.max_tokens_per_micro_batch)
        return sequence_logprobs(model, mbs, self.sampling)

    def update(self, batch: Dict[str, torch.Tensor]) -> Dict[str, float]:
        """One PPO-family update on this rank's shard; returns metrics averaged over the group."""
        t0 = time.time()
        batch = to_device(batch, self.device)
        T = batch["response_mask"].shape[1]
        self.model.eval()
        is_metrics: Dict[str, float] = {}
        if not self.decoupled:  # standard PPO: the ratio's denominator is the policy that sampled the batch
            batch["old_logprobs"] = batch["behaviour_logprobs"]
        elif self.algo.update_epochs > 1:
            # Decoupled PPO: the proximal policy is the weights before this update. With one epoch the
            # weights do not change until the single optimizer step, so the training forward's own
            # detached log-probs are exactly those (see _micro_step); more epochs need them up front.
            batch["old_logprobs"] = self._logprobs(self.model, batch)
            is_metrics = self._importance_weights(batch, batch["old_logprobs"])
        denominator = self.group_denominator(batch["response_mask"], self.algo.loss_agg)
        out = self.train_epochs(batch, self.cfg.micro_batch_size, self.algo.update_epochs, self.cfg.grad_clip,
                                lambda mb: self._micro_step(mb, T, denominator),
                                max_tokens=self.cfg.max_tokens_per_micro_batch, summed=SUMMED_METRICS)
        out["actor/grad_norm"] = out.pop("grad_norm")
        out.update(is_metrics)
        out["time/actor_update_s"] = time.time() - t0
        return self.group_mean(out)

    @property
    def decoupled(self) -> bool:
        """Decoupled PPO (proximal policy + truncated IS weights) with off_policy_correction tis; else the
        ratio is taken against the behaviour log-probs (module docstring)."""
        return self.algo.off_policy_correction == "tis"

    def _importance_weights(self, batch: Dict[str, torch.Tensor], proximal: torch.Tensor) -> Dict[str, float]:
        """Decoupled PPO: the clip is around the proximal policy (log-probs `proximal`); with `tis`, each
        token is also weighted by w = min(pi_prox / pi_behaviour, tis_cap) (detached)."""
        mask = batch["response_mask"]
        ratio = torch.exp(proximal.detach() - batch["behaviour_logprobs"]) * mask
        n = mask.sum().clamp_min(1.0)
        metrics = {"offpolicy/is_ratio_mean": float(ratio.sum() / n),
                   "offpolicy/is_ratio_max": float(ratio.max()),
                   "offpolicy/is_clipped_frac": float(((ratio > self.algo.tis_cap) * mask).sum() / n)}
        if self.algo.off_policy_correction == "tis":
            batch["is_weights"] = ratio.clamp(max=self.algo.tis_cap)
        return metrics

    def _micro_step(self, mb: Dict[str, torch.Tensor], T: int, denominator: float) -> Dict[str, float]:
        algo = self.algo
        logp, entropy = response_logprobs(self.model, mb, T, self.sampling, entropy=algo.entropy_coef > 0)
        mask = mb["response_mask"]
        is_metrics = {}
        if algo.update_epochs == 1:  # this forward is the proximal policy (weights before the update)
            mb = dict(mb)
            if "old_logprobs" not in mb:  # decoupled PPO: the clip is around it
                mb["old_logprobs"] = logp.detach()
            is_metrics = self._importance_weights(mb, logp)  # tis: also sets mb["is_weights"]
        loss, metrics = compute_policy_loss(
            algo.policy_loss, logp, mb["old_logprobs"], mb["advantages"], mask,
            clip_low=algo.clip_ratio_low, clip_high=algo.clip_ratio_high, dual_clip=algo.dual_clip,
            loss_agg=algo.loss_agg, denominator=denominator, is_weights=mb.get("is_weights"),
        )
        out = {f"actor/{k}": float(v) for k, v in metrics.items()}
        out.update(is_metrics)
        out["actor/pg_loss"] = float(loss.detach())
        if algo.entropy_coef > 0:
            ent = aggregate_loss(entropy, mask, algo.loss_agg, denominator)
            loss = loss - algo.entropy_coef * ent
            out["actor/entropy"] = float(ent.detach())
        if "ref_logprobs" in mb:  # algorithm.kl_in=loss: the reference group's log-probs came with the batch
            kl = aggregate_loss(kl_penalty(logp, mb["ref_logprobs"], algo.kl_estimator), mask, algo.loss_agg,
                                denominator)
            loss = loss + algo.kl_coef * kl
            out["actor/kl"] = float(kl.detach())
        self._backward(loss)
        return out

    def _backward(self, loss: torch.Tensor) -> None:
        """Backward of one micro-batch's loss (DeepSpeed routes it through its engine)."""
        loss.backward()

    # ---- supervised fine-tuning (rlinf.workflows.sft) -----------------------------------------------
    def _sft_sums(self, mb: Dict[str, torch.Tensor], T: int) -> Tuple[torch.Tensor, torch.Tensor]:
        """(summed NLL, summed argmax hits) over the micro-batch's response_mask tokens under the model's
        own distribution (temperature 1, no top-k / top-p)."""
        logits, tokens, to_rows = response_logits_targets(self.model, mb, T)
        mask = mb["response_mask"]
        nll = -(to_rows(logprobs_from_logits(logits, tokens)) * mask).sum()
        hits = (to_rows((logits.argmax(-1) == tokens).to(mask.dtype)) * mask).sum()
        return nll, hits.detach()

    def sft_update(self, batch: Dict[str, torch.Tensor]) -> Dict[str, float]:
        """One optimizer step of token-mean NLL over the response_mask tokens of the whole global batch:
        every micro-batch's summed NLL is divided by the group's token count (`group_denominator`), so the
        step equals one big batch however rows were sharded or packed. Metrics (over the global batch):
        sft/loss, sft/token_accuracy (argmax = target), sft/grad_norm."""
        t0 = time.time()
        batch = to_device(batch, self.device)
        T = batch["response_mask"].shape[1]
        denominator = self.group_denominator(batch["response_mask"], "token-mean")

        def micro_step(mb: Dict[str, torch.Tensor]) -> Dict[str, float]:
            nll, hits = self._sft_sums(mb, T)
            self._backward(nll / denominator)
            return {"sft/loss": float(nll.detach()) / denominator, "sft/token_accuracy": float(hits) / denominator}

        out = self.train_epochs(batch, self.cfg.micro_batch_size, 1, self.cfg.grad_clip, micro_step,
                                max_tokens=self.cfg.max_tokens_per_micro_batch, summed=SFT_SUMMED)
        out["sft/grad_norm"] = out.pop("grad_norm")
        out["time/actor_update_s"] = time.time() - t0
        return self.group_mean(out)

    @torch.no_grad()
    def sft_eval(self, batch: Dict[str, torch.Tensor]) -> Dict[str, float]:
        """{nll, hits, tokens}: sums over this rank's response_mask tokens (the workflow adds the ranks).
        Every rank must call it with the same number of rows (FSDP2 gathers parameters in each forward)."""
        batch = to_device(batch, self.device)
        T = batch["response_mask"].shape[1]
        self.model.eval()
        nll = hits = 0.0
        for mb in self.split_micro_batches(batch, self.cfg.micro_batch_size, self.cfg.max_tokens_per_micro_batch):
            n, h = self._sft_sums(mb, T)
            nll, hits = nll + float(n), hits + float(h)
        return {"nll": nll, "hits": hits, "tokens": float(batch["response_mask"].sum())}

    def save_checkpoint(self, path: str, extra: Optional[dict] = None, export_dir: Optional[str] = None) -> str:
        """The sharded checkpoint at `path`; with `export_dir`, also the full model as a Hugging Face
        directory there with its tokenizer (a collective: every rank gathers, rank 0 writes), loadable as
        `actor.model.path`."""
        super().save_checkpoint(path, extra)
        state = self.full_state_dict() if export_dir is not None else None
        if state is not None:
            full = build_causal_lm(self.cfg.model, self.vocab_size, seed=self.seed)
            full.load_state_dict(state)
            full.save_pretrained(export_dir, safe_serialization=True)
            load_tokenizer(self.cfg.model.path, self.cfg.model.char_vocab).save_pretrained(export_dir)
        return path

    def setup_reshard(self, peer_group: str, num_replicas: int, cfg, handles: List) -> None:
        """Become a resharding source for `num_replicas` full rollout replicas."""
        from rlinf.reshard import ReshardSource, SourceLayout, TargetLayout, plan_for_module

        plan = plan_for_module(self.model, SourceLayout(self.world_size), TargetLayout(num_replicas, 1))
        self.reshard = ReshardSource(plan, self, peer_group, cfg.bucket_mb, cfg.pipeline_depth, cfg.timeout_s)
        self.reshard.attach(handles)

    def send_weights(self, version: int) -> int:
        return self.reshard.send(dict(self.model.named_parameters()), version)

    def export_weights(self) -> List:
        """Gather full weights (a collective: every rank calls); rank 0 returns [ObjectRef of {name: array}].

        numpy arrays travel through Ray's object store zero-copy; the controller only passes the ref.
        """
        state = {}
        tied = getattr(self.model.config, "tie_word_embeddings", False)
        for name, tensor in self.model.state_dict().items():
            if tied and name == "lm_head.weight":  # the same tensor as the input embedding
                continue
            full = tensor.full_tensor() if hasattr(tensor, "full_tensor") else tensor
            if self.rank == 0:
                full = full.detach().cpu()
                state[name] = full if full.dtype == torch.bfloat16 else full.numpy()
        return [ray.put(state)] if self.rank == 0 else []
