"""EmbodiedActorWorker: PPO (GAE) / GRPO training of an embodied policy (rlinf.models.policy) on env trajectories.

The value head of the actor-critic is the critic, so embodied PPO runs no separate critic group.
Every rank holds a full replica (same seed, so identical initial weights) and a shard of the env
trajectories (rows = envs); after each backward the ranks all-reduce (average) their gradients over
the group's process group (gloo on CPU, NCCL on GPU), so the replicas stay identical and each
optimizer step follows the gradient of the global minibatch.

A rank's batch, n envs x T steps:
    obs [n, T, *obs_shape], actions [n, T(, action_dim)], logprobs, values, rewards, dones [n, T]
    final_values [n, T]  V(s_final) where the episode was cut by the time limit (else 0)
    bootstrap_values [n] V(s_T) of the observation after the last step
Advantages (GAE, `rlinf.algorithms.gae` with dones):
    r'_t = r_t + gamma * final_values_t
    delta_t = r'_t + gamma (1 - d_t) V_{t+1} - V_t,   A_t = delta_t + gamma lam (1 - d_t) A_{t+1},   R_t = A_t + V_t
Per minibatch (advantages normalised to zero mean, unit std within the minibatch):
    L = L_clip(ratio, A) - entropy_coef * mean H(pi) + value_coef * L_V(V, V_old, R; value_clip)

Action chunks (C = actor.model.action_chunk; C = 1 is the case above with a chunk axis of size 1): the
per-step arrays are [n, T, C] (T decisions of C env steps; `mask` 0 on the steps of a chunk after its
episode ended, and on steps after an env's episode under GRPO). `algorithm.reward_level`:
    chunk   r_t = sum_c mask r_{t,c} (+ gamma V(s_final)), one GAE step per decision on V[..., 0]
    action  GAE over the T * C env steps, V[t, c] = the value head's c-th output at the chunk's start
`algorithm.logprob_level`: chunk -> one ratio per decision from log pi(chunk) = sum_c log pi(a_c)
(advantage of the decision); action -> one ratio per action (its step's advantage, or its chunk's).
GRPO-family estimators (`adv_estimator` grpo, drgrpo, rloo, reinforce_plus_plus_baseline): the score of
an env row is its episode return sum mask * r, groups are the `group_index` rows that started from the
same seed, and no value loss is trained.

LoRA (`actor.model.lora_rank` > 0, VLA): Adam, the gradient all-reduce and the clip cover the trainable
parameters only (adapters, projector, action-chunk embeddings, value head); weight syncs (engine plan and
object store) and checkpoints (`model.pt`, meta `weights: trainable`) carry only those tensors, since every
process rebuilds the same frozen base from the config, `seed` and checkpoint path (`rlinf.models.lora`).
"""

import json
import logging
import time
from pathlib import Path
from typing import Dict, List, Optional

import numpy as np
import ray
import torch
import torch.distributed as dist

from rlinf.algorithms import compute_advantages, compute_policy_loss, value_loss
from rlinf.algorithms.advantages import masked_mean, masked_var
from rlinf.config.schema import ActorConfig, AlgorithmConfig
from rlinf.models.lora import has_lora, load_weights, sync_tensors, trainable_parameters
from rlinf.models.policy import build_policy, chunk_of, flatten_steps, index, policy_spec, to_tensors
from rlinf.scheduler import Worker

logger = logging.getLogger(__name__)


class EmbodiedActorWorker(Worker):
    """Policy (actor-critic) + Adam; one data-parallel replica per device of the actor's placement."""

    def __init__(self, cfg: ActorConfig, algo: AlgorithmConfig, spec: Dict[str, object], seed: int, total_steps: int):
        super().__init__()
        self.cfg, self.algo, self.total_steps = cfg, algo, total_steps
        self.spec = spec
        self.model = build_policy(cfg.model, spec, seed).to(self.device)
        self.seed = seed
        self.chunk = chunk_of(self.model)
        self.trainable = list(trainable_parameters(self.model).values())  # all of them without LoRA
        self.optimizer = torch.optim.Adam(self.trainable, lr=cfg.lr, eps=cfg.adam_eps)
        self.generator = torch.Generator().manual_seed(seed * 7919 + self.rank)
        self.version = 0

    def setup(self) -> int:
        """Number of parameters (the replicas already match: same seed on every rank)."""
        return sum(p.numel() for p in self.model.parameters())

    def _lr(self) -> float:
        if self.cfg.lr_schedule == "linear":
            return self.cfg.lr * max(0.0, 1.0 - self.version / self.total_steps)
        return self.cfg.lr

    @property
    def uses_values(self) -> bool:
        return self.algo.adv_estimator == "gae"

    def advantages(self, batch: Dict[str, torch.Tensor]):
        """(advantages, returns) [n, T, C] (reward level action) or [n, T] (chunk) over the rank's env rows."""
        return embodied_advantages(self.algo, batch)

    def update(self, batch: Dict[str, np.ndarray]) -> Dict[str, float]:
        """PPO epochs over this rank's shard; returns metrics averaged over the group."""
        t0 = time.time()
        algo = self.algo
        n, T = batch["rewards"].shape[:2]
        data = {k: torch.tensor(v, device=self.device) for k, v in batch.items() if k != "obs"}
        for k in ("logprobs", "values", "rewards", "final_values", "bootstrap_values", "dones", "mask"):
            if k in data:
                data[k] = data[k].float()
        if "mask" not in data:
            data["mask"] = torch.ones_like(data["rewards"])
        if self.chunk == 1:  # give the per-step arrays their chunk axis of size 1
            for k in ("logprobs", "values", "rewards", "final_values", "dones", "mask", "bootstrap_values"):
                data[k] = data[k].unsqueeze(-1)
        adv, ret = self.advantages(data)
        chunk_level = self.algo.logprob_level == "chunk"
        if chunk_level and adv.dim() == 3:
            raise ValueError("reward_level action needs logprob_level action")  # validated before start
        if not chunk_level and adv.dim() == 2:  # each action of a chunk takes its chunk's advantage
            adv, ret = adv.unsqueeze(-1).expand(n, T, self.chunk), ret.unsqueeze(-1).expand(n, T, self.chunk)
        values = data["values"][..., 0] if adv.dim() == 2 else data["values"]
        mask = data["mask"][..., 0] if adv.dim() == 2 else data["mask"]
        flat = {"obs": to_tensors(flatten_steps(batch["obs"], n, T), self.device),
                "actions": data["actions"].reshape(n * T, *data["actions"].shape[2:]),
                "logprobs": data["logprobs"].reshape(n * T, self.chunk), "values": values.reshape(n * T, -1),
                "adv": adv.reshape(n * T, -1), "ret": ret.reshape(n * T, -1), "mask": mask.reshape(n * T, -1)}
        size = n * T
        is_metrics = self._proximal(flat) if self.decoupled else {}
        mb = self.cfg.global_batch_size // self.world_size if self.cfg.global_batch_size else size
        for group in self.optimizer.param_groups:
            group["lr"] = self._lr()
        sums: Dict[str, float] = {}
        steps = 0
        self.model.train()
        for _ in range(algo.update_epochs):
            perm = torch.randperm(size, generator=self.generator).to(self.device)
            for start in range(0, size - mb + 1, mb):
                metrics = self._minibatch_step({k: index(v, perm[start:start + mb]) for k, v in flat.items()})
                for k, v in metrics.items():
                    sums[k] = sums.get(k, 0.0) + v
                steps += 1
        self.version += 1
        out = {k: v / max(steps, 1) for k, v in sums.items()}
        out.update(is_metrics)
        valid = flat["mask"] > 0
        ret_v, val_v = flat["ret"][valid], flat["values"][valid]
        var_ret = float(ret_v.var()) if ret_v.numel() > 1 else 0.0
        out.update({"actor/lr": self.optimizer.param_groups[0]["lr"],
                    "actor/optimizer_steps": float(steps),
                    "critic/explained_variance": 1.0 - float((ret_v - val_v).var()) / var_ret
                    if var_ret > 0 and self.uses_values else 0.0,
                    "critic/returns_mean": float(ret_v.mean()) if ret_v.numel() else 0.0,
                    "actor/update_time_s": time.time() - t0})
        return _group_mean(out, self.device)

    @property
    def decoupled(self) -> bool:
        """Decoupled PPO (proximal policy + truncated IS weights) with off_policy_correction tis. Otherwise
        the PPO ratio is taken against the behaviour log-probs, stale batch (max_staleness > 0) or not:
        clipping around a recomputed proximal policy without the IS weights would train a stale batch
        as if it were on-policy (the ratio of the first minibatch would be exactly 1)."""
        return self.algo.off_policy_correction == "tis"

    @torch.no_grad()
    def _proximal(self, flat: Dict[str, torch.Tensor]) -> Dict[str, float]:
        """Decoupled PPO (as the reasoning actor): the PPO "old" policy becomes the proximal one, this
        actor's weights before the update, recomputed here, instead of the (possibly stale) behaviour
        policy that sampled the actions. With `tis` each sample is also weighted by
        w = min(pi_prox / pi_behaviour, tis_cap). GAE and the value clip keep the rollout's values."""
        self.model.eval()
        proximal = self.model.evaluate(flat["obs"], flat["actions"])[0].float().reshape(flat["logprobs"].shape)
        ratio = torch.exp(proximal - flat["logprobs"])
        flat["logprobs"] = proximal
        if self.algo.off_policy_correction == "tis":
            flat["is_weights"] = ratio.clamp(max=self.algo.tis_cap)
        return {"offpolicy/is_ratio_mean": float(ratio.mean()), "offpolicy/is_ratio_max": float(ratio.max()),
                "offpolicy/is_ratio_min": float(ratio.min()),
                "offpolicy/is_clipped_frac": float((ratio > self.algo.tis_cap).float().mean())}

    def _minibatch_step(self, mb: Dict[str, torch.Tensor]) -> Dict[str, float]:
        """One optimizer step on a PPO minibatch; with `actor.embodied_micro_batch_size` m the minibatch
        runs in forward/backward passes of m samples whose losses are divided by the whole minibatch's
        valid-step count (gradient accumulation: the same gradient up to float rounding)."""
        B = len(mb["adv"])
        adv, mask = mb["adv"], mb["mask"]
        if self.uses_values and mask.sum() > 1:  # normalised over the minibatch, before any split
            adv = (adv - masked_mean(adv, mask)) / (masked_var(adv, mask).sqrt() + 1e-8)
        micro = self.cfg.embodied_micro_batch_size or B
        self.optimizer.zero_grad(set_to_none=True)
        if micro >= B:
            out = self._loss_backward(mb, adv, None, 1.0)
        else:
            den = float(mask.sum().clamp_min(1e-8))
            out = {}
            for start in range(0, B, micro):
                idx = torch.arange(start, min(start + micro, B), device=adv.device)
                part = {k: index(v, idx) for k, v in mb.items()}
                weight = float(part["mask"].sum()) / den  # share of the minibatch's valid steps (metrics)
                for k, v in self._loss_backward(part, adv[idx], den, weight).items():
                    out[k] = out.get(k, 0.0) + v
        self._average_gradients()
        norm = 0.0
        if self.cfg.grad_clip > 0:
            norm = float(torch.nn.utils.clip_grad_norm_(self.trainable, self.cfg.grad_clip))
        self.optimizer.step()
        out["actor/grad_norm"] = norm
        return out

    def _loss_backward(self, mb: Dict[str, torch.Tensor], adv: torch.Tensor, den: Optional[float],
                       weight: float) -> Dict[str, float]:
        """Backward of the PPO loss on (part of) a minibatch; `den`: the divisor of the losses' means (None:
        this part's valid steps). Returns the loss terms (sums over parts = the minibatch's) and the
        per-part metrics scaled by `weight`."""
        algo = self.algo
        logp, entropy, values = self.model.evaluate(mb["obs"], mb["actions"])
        B = len(adv)
        logp, entropy, values = logp.reshape(B, -1), entropy.reshape(B, -1), values.reshape(B, -1)
        old, mask, is_w = mb["logprobs"], mb["mask"], mb.get("is_weights")
        if algo.logprob_level == "chunk":  # one decision: log pi(chunk) = sum of its actions' log-probs
            logp, old = logp.sum(-1, keepdim=True), old.sum(-1, keepdim=True)
        pg, pg_metrics = compute_policy_loss(algo.policy_loss, logp, old, adv, mask,
                                             clip_low=algo.clip_ratio_low, clip_high=algo.clip_ratio_high,
                                             dual_clip=algo.dual_clip, is_weights=is_w, denominator=den)
        if entropy.shape != mask.shape:  # chunk level: mean entropy of the chunk's actions per decision
            entropy = entropy.mean(-1, keepdim=True)
        ent = masked_mean(entropy, mask) if den is None else (entropy * mask).sum() / den
        loss = pg - algo.entropy_coef * ent
        vloss, v_metrics = torch.zeros(()), {"vf_clipfrac": 0.0}
        if self.uses_values:
            vals = values[:, :mb["values"].shape[1]]
            vloss, v_metrics = value_loss(vals, mb["values"], mb["ret"], mask, clip=algo.value_clip, denominator=den)
            loss = loss + algo.value_coef * vloss
        loss.backward()
        out = {f"actor/{k}": weight * float(v) for k, v in pg_metrics.items()}
        out.update({"actor/pg_loss": float(pg.detach()), "actor/entropy": float(ent.detach()),
                    "critic/value_loss": float(vloss.detach()),
                    "critic/vf_clipfrac": weight * float(v_metrics["vf_clipfrac"])})
        return out

    def _average_gradients(self) -> None:
        """g <- (1 / world) * sum over ranks of g, one flat all_reduce for all trainable parameters."""
        if self.world_size == 1:
            return
        params = [p for p in self.trainable if p.grad is not None]
        flat = torch.cat([p.grad.reshape(-1) for p in params])
        dist.all_reduce(flat)
        flat /= self.world_size
        offset = 0
        for p in params:
            p.grad.copy_(flat[offset:offset + p.numel()].view_as(p.grad))
            offset += p.numel()

    # ---- checkpoints (the replicas are identical: rank 0 writes model and optimizer) -------------
    def save_checkpoint(self, path: str, extra: Optional[dict] = None) -> str:
        """`path/model.pt`, `optim.pt`, `meta.json` (rank 0) and `rng_rank<r>.pt` (every rank).

        The learning-rate schedule's state is the update count (`version`, in meta.json). With LoRA,
        model.pt holds the trainable tensors only (meta: `weights: trainable`, `base_seed`: the seed the
        frozen base and the adapters' initialisation were built from; `rlinf.eval` rebuilds it from them).
        """
        out = Path(path)
        out.mkdir(parents=True, exist_ok=True)
        if self.rank == 0:
            lora = has_lora(self.model)
            state = sync_tensors(self.model) if lora else self.model.state_dict()
            torch.save({k: v.detach().cpu() for k, v in state.items()}, out / "model.pt")
            torch.save(self.optimizer.state_dict(), out / "optim.pt")
            meta = {"version": self.version, "world_size": self.world_size, "model": self.model_spec(),
                    **({"weights": "trainable", "base_seed": self.seed} if lora else {}), **(extra or {})}
            (out / "meta.json").write_text(json.dumps(meta, indent=2))
        torch.save({"generator": self.generator.get_state(), "torch_rng": torch.get_rng_state()},
                   out / f"rng_rank{self.rank}.pt")
        return str(out)

    def load_checkpoint(self, path: str) -> dict:
        """Restore model, optimizer, update count and (when saved with the same world size) RNG."""
        src = Path(path)
        if not (src / "model.pt").exists():
            raise FileNotFoundError(f"no embodied actor checkpoint in {path} (model.pt missing)")
        meta = json.loads((src / "meta.json").read_text())
        if meta["model"] != self.model_spec():
            raise ValueError(f"checkpoint model {meta['model']} does not match this run's {self.model_spec()}")
        load_weights(self.model, torch.load(src / "model.pt", map_location=self.device, weights_only=True))
        self.optimizer.load_state_dict(torch.load(src / "optim.pt", map_location=self.device, weights_only=True))
        self.version = meta["version"]
        rng_file = src / f"rng_rank{self.rank}.pt"
        if rng_file.exists() and meta["world_size"] == self.world_size:
            rng = torch.load(rng_file, weights_only=True)
            self.generator.set_state(rng["generator"])
            torch.set_rng_state(rng["torch_rng"])
        else:
            logger.warning("actor rank %d: checkpoint saved by %d rank(s), not %d: minibatch order is not restored",
                           self.rank, meta["world_size"], self.world_size)
        return meta

    def checkpoint_mismatch(self, path: str) -> Optional[str]:
        """None when `path/model.pt` and `optim.pt` hold this model's tensors (names, shapes, dtypes) and
        this optimizer's state; else the first difference. Nothing is loaded into the model."""
        from rlinf.utils.checkpoint_layout import first_mismatch, layout_of, optimizer_mismatch, torch_file_layout

        src = Path(path)
        for name in ("model.pt", "optim.pt", "meta.json"):
            if not (src / name).exists():
                return f"{src / name} missing"
        state = sync_tensors(self.model) if has_lora(self.model) else self.model.state_dict()
        mismatch = first_mismatch(layout_of(state), torch_file_layout(src / "model.pt"))
        return mismatch or optimizer_mismatch(self.optimizer, torch.load(src / "optim.pt", map_location="cpu",
                                                                         weights_only=True))

    def model_spec(self) -> Dict[str, object]:
        """What fixes the parameter shapes: a checkpoint loads only into the same spec."""
        return policy_spec(self.cfg.model, self.spec)

    def setup_reshard(self, peer_group: str, num_replicas: int, cfg, handles: List) -> None:
        """Resharding source for `num_replicas` rollout replicas. The replicas here are identical, so the
        plan's source is one full copy (`SourceLayout(1)`) and rank 0 sends it; other ranks send nothing.
        With LoRA the plan holds the trainable tensors only (the rollout plans the same `sync_tensors`)."""
        from rlinf.reshard import ReshardSource, SourceLayout, TargetLayout, make_plan

        self.reshard = None
        if self.rank == 0:
            tensors = sync_tensors(self.model)
            plan = make_plan(((n, t.shape, t.dtype) for n, t in tensors.items()), SourceLayout(1),
                             TargetLayout(num_replicas, 1))
            self.reshard = ReshardSource(plan, self, peer_group, cfg.bucket_mb, cfg.pipeline_depth, cfg.timeout_s,
                                         rank=0)
            self.reshard.attach(handles)

    def send_weights(self, version: int) -> int:
        if self.reshard is None:
            return version
        return self.reshard.send(sync_tensors(self.model), version)

    def export_weights(self) -> List:
        """Rank 0 returns [ObjectRef of {name: ndarray}] (replicas are identical; with LoRA the trainable
        tensors only); other ranks []."""
        if self.rank != 0:
            return []
        state = sync_tensors(self.model) if has_lora(self.model) else self.model.state_dict()
        return [ray.put({k: v.detach().cpu().numpy().copy() for k, v in state.items()})]

    def state_dict_numpy(self) -> Dict[str, np.ndarray]:
        """This replica's weights as arrays (tests check the replicas stay identical)."""
        return {k: v.detach().cpu().numpy().copy() for k, v in self.model.state_dict().items()}


GROUP_ESTIMATORS = ("grpo", "drgrpo", "dr_grpo", "rloo", "reinforce_plus_plus_baseline")


def embodied_advantages(algo: AlgorithmConfig, batch: Dict[str, torch.Tensor]):
    """(advantages, returns) of a rank's rows through the `rlinf.algorithms` registry.

    batch: rewards, dones, mask, final_values, values [n, T, C]; bootstrap_values [n, C]; group_index [n]
    (group estimators). Returns [n, T, C] for reward_level action (or token), [n, T] for chunk.
    """
    r, mask = batch["rewards"], batch["mask"]
    n, T, C = r.shape
    chunk = algo.reward_level == "chunk"
    if algo.adv_estimator in GROUP_ESTIMATORS:  # episode return per row, relative to its group
        adv, ret = compute_advantages(algo.adv_estimator, token_rewards=(r * mask).reshape(n, T * C),
                                      mask=mask.reshape(n, T * C), group_index=batch["group_index"],
                                      norm_by_std=algo.norm_adv_by_std)
        adv, ret = adv.reshape(n, T, C), ret.reshape(n, T, C)
        return (adv[..., 0], ret[..., 0]) if chunk else (adv, ret)
    rewards = (r + algo.gamma * batch["final_values"]) * mask
    if chunk:  # one decision per chunk: summed rewards, the chunk ends its episode if any step did
        return compute_advantages(algo.adv_estimator, token_rewards=rewards.sum(-1), values=batch["values"][..., 0],
                                  mask=mask[..., 0], dones=(batch["dones"] * mask).amax(-1),
                                  bootstrap_values=batch["bootstrap_values"][:, 0], gamma=algo.gamma, lam=algo.lam)
    adv, ret = compute_advantages(algo.adv_estimator, token_rewards=rewards.reshape(n, T * C),
                                  values=batch["values"].reshape(n, T * C), mask=mask.reshape(n, T * C),
                                  dones=batch["dones"].reshape(n, T * C), bootstrap_values=batch["bootstrap_values"][:, 0],
                                  gamma=algo.gamma, lam=algo.lam)
    return adv.reshape(n, T, C), ret.reshape(n, T, C)


def _group_mean(metrics: Dict[str, float], device: torch.device) -> Dict[str, float]:
    """Average scalar metrics over the actor's ranks (all ranks hold the same keys)."""
    if not dist.is_initialized() or dist.get_world_size() == 1:
        return metrics
    keys = sorted(metrics)
    t = torch.tensor([metrics[k] for k in keys], dtype=torch.float64, device=device)
    dist.all_reduce(t)
    t /= dist.get_world_size()
    return {k: float(v) for k, v in zip(keys, t)}
