"""EmbodiedActorWorker: PPO + GAE training of an MLP actor-critic on env trajectories.

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
from rlinf.config.schema import ActorConfig, AlgorithmConfig
from rlinf.models.mlp import build_mlp_policy
from rlinf.scheduler import Worker

logger = logging.getLogger(__name__)


class EmbodiedActorWorker(Worker):
    """MLP actor-critic + Adam; one data-parallel replica per device of the actor's placement."""

    def __init__(self, cfg: ActorConfig, algo: AlgorithmConfig, obs_dim: int, action_dim: int, discrete: bool,
                 seed: int, total_steps: int):
        super().__init__()
        self.cfg, self.algo, self.total_steps = cfg, algo, total_steps
        self.model = build_mlp_policy(cfg.model, obs_dim, action_dim, discrete, seed).to(self.device)
        self.optimizer = torch.optim.Adam(self.model.parameters(), lr=cfg.lr, eps=cfg.adam_eps)
        self.generator = torch.Generator().manual_seed(seed * 7919 + self.rank)
        self.version = 0

    def setup(self) -> int:
        """Number of parameters (the replicas already match: same seed on every rank)."""
        return sum(p.numel() for p in self.model.parameters())

    def _lr(self) -> float:
        if self.cfg.lr_schedule == "linear":
            return self.cfg.lr * max(0.0, 1.0 - self.version / self.total_steps)
        return self.cfg.lr

    def advantages(self, batch: Dict[str, torch.Tensor]):
        """(advantages, returns) [n, T] by GAE over the rank's env rows (see module docstring)."""
        algo = self.algo
        rewards = batch["rewards"] + algo.gamma * batch["final_values"]
        return compute_advantages(algo.adv_estimator, token_rewards=rewards, values=batch["values"],
                                  mask=torch.ones_like(rewards), dones=batch["dones"],
                                  bootstrap_values=batch["bootstrap_values"], gamma=algo.gamma, lam=algo.lam)

    def update(self, batch: Dict[str, np.ndarray]) -> Dict[str, float]:
        """PPO epochs over this rank's shard; returns metrics averaged over the group."""
        t0 = time.time()
        algo = self.algo
        data = {k: torch.tensor(v, device=self.device) for k, v in batch.items()}
        for k in ("logprobs", "values", "rewards", "final_values", "bootstrap_values"):
            data[k] = data[k].float()
        data["dones"] = data["dones"].float()
        adv, ret = self.advantages(data)
        n, T = adv.shape
        flat = {"obs": data["obs"].reshape(n * T, *data["obs"].shape[2:]).float(),
                "actions": data["actions"].reshape(n * T, *data["actions"].shape[2:]),
                "logprobs": data["logprobs"].reshape(-1), "values": data["values"].reshape(-1),
                "adv": adv.reshape(-1), "ret": ret.reshape(-1)}
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
                metrics = self._minibatch_step({k: v[perm[start:start + mb]] for k, v in flat.items()})
                for k, v in metrics.items():
                    sums[k] = sums.get(k, 0.0) + v
                steps += 1
        self.version += 1
        out = {k: v / max(steps, 1) for k, v in sums.items()}
        out.update(is_metrics)
        var_ret = float(flat["ret"].var())
        out.update({"actor/lr": self.optimizer.param_groups[0]["lr"],
                    "actor/optimizer_steps": float(steps),
                    "critic/explained_variance": 1.0 - float((flat["ret"] - flat["values"]).var()) / var_ret
                    if var_ret > 0 else 0.0,
                    "critic/returns_mean": float(flat["ret"].mean()),
                    "actor/update_time_s": time.time() - t0})
        return _group_mean(out, self.device)

    @property
    def decoupled(self) -> bool:
        """Decoupled PPO when a batch may come from older weights (max_staleness > 0) or TIS is asked for."""
        return self.algo.max_staleness > 0 or self.algo.off_policy_correction == "tis"

    @torch.no_grad()
    def _proximal(self, flat: Dict[str, torch.Tensor]) -> Dict[str, float]:
        """Decoupled PPO (as the reasoning actor): the PPO "old" policy becomes the proximal one, this
        actor's weights before the update, recomputed here, instead of the (possibly stale) behaviour
        policy that sampled the actions. With `tis` each sample is also weighted by
        w = min(pi_prox / pi_behaviour, tis_cap). GAE and the value clip keep the rollout's values."""
        self.model.eval()
        proximal = self.model.evaluate(flat["obs"], flat["actions"])[0].float()
        ratio = torch.exp(proximal - flat["logprobs"])
        flat["logprobs"] = proximal
        if self.algo.off_policy_correction == "tis":
            flat["is_weights"] = ratio.clamp(max=self.algo.tis_cap)
        return {"offpolicy/is_ratio_mean": float(ratio.mean()), "offpolicy/is_ratio_max": float(ratio.max()),
                "offpolicy/is_ratio_min": float(ratio.min()),
                "offpolicy/is_clipped_frac": float((ratio > self.algo.tis_cap).float().mean())}

    def _minibatch_step(self, mb: Dict[str, torch.Tensor]) -> Dict[str, float]:
        algo = self.algo
        logp, entropy, values = self.model.evaluate(mb["obs"], mb["actions"])
        adv = mb["adv"]
        if adv.numel() > 1:
            adv = (adv - adv.mean()) / (adv.std() + 1e-8)
        ones = torch.ones_like(logp)
        pg, pg_metrics = compute_policy_loss(algo.policy_loss, logp, mb["logprobs"], adv, ones,
                                             clip_low=algo.clip_ratio_low, clip_high=algo.clip_ratio_high,
                                             dual_clip=algo.dual_clip, is_weights=mb.get("is_weights"))
        vloss, v_metrics = value_loss(values, mb["values"], mb["ret"], ones, clip=algo.value_clip)
        ent = entropy.mean()
        loss = pg - algo.entropy_coef * ent + algo.value_coef * vloss
        self.optimizer.zero_grad(set_to_none=True)
        loss.backward()
        self._average_gradients()
        norm = 0.0
        if self.cfg.grad_clip > 0:
            norm = float(torch.nn.utils.clip_grad_norm_(self.model.parameters(), self.cfg.grad_clip))
        self.optimizer.step()
        out = {f"actor/{k}": float(v) for k, v in pg_metrics.items()}
        out.update({"actor/pg_loss": float(pg.detach()), "actor/entropy": float(ent.detach()),
                    "critic/value_loss": float(vloss.detach()), "critic/vf_clipfrac": float(v_metrics["vf_clipfrac"]),
                    "actor/grad_norm": norm})
        return out

    def _average_gradients(self) -> None:
        """g <- (1 / world) * sum over ranks of g, one flat all_reduce for all parameters."""
        if self.world_size == 1:
            return
        params = [p for p in self.model.parameters() if p.grad is not None]
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

        The learning-rate schedule's state is the update count (`version`, in meta.json).
        """
        out = Path(path)
        out.mkdir(parents=True, exist_ok=True)
        if self.rank == 0:
            torch.save({k: v.detach().cpu() for k, v in self.model.state_dict().items()}, out / "model.pt")
            torch.save(self.optimizer.state_dict(), out / "optim.pt")
            meta = {"version": self.version, "world_size": self.world_size, "model": self.model_spec(),
                    **(extra or {})}
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
        self.model.load_state_dict(torch.load(src / "model.pt", map_location=self.device, weights_only=True))
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

    def model_spec(self) -> Dict[str, object]:
        """What fixes the parameter shapes: a checkpoint loads only into the same spec."""
        m = self.model
        return {"kind": "mlp", "obs_dim": m.obs_dim, "action_dim": m.action_dim, "discrete": m.discrete,
                "hidden_size": self.cfg.model.hidden_size, "num_layers": self.cfg.model.num_layers}

    def setup_reshard(self, peer_group: str, num_replicas: int, cfg, handles: List) -> None:
        """Resharding source for `num_replicas` rollout replicas. The replicas here are identical, so the
        plan's source is one full copy (`SourceLayout(1)`) and rank 0 sends it; other ranks send nothing."""
        from rlinf.reshard import ReshardSource, SourceLayout, TargetLayout, make_plan, module_tensors

        self.reshard = None
        if self.rank == 0:
            tensors = module_tensors(self.model)
            plan = make_plan(((n, t.shape, t.dtype) for n, t in tensors.items()), SourceLayout(1),
                             TargetLayout(num_replicas, 1))
            self.reshard = ReshardSource(plan, self, peer_group, cfg.bucket_mb, cfg.pipeline_depth, cfg.timeout_s,
                                         rank=0)
            self.reshard.attach(handles)

    def send_weights(self, version: int) -> int:
        if self.reshard is None:
            return version
        from rlinf.reshard import module_tensors

        return self.reshard.send(module_tensors(self.model), version)

    def export_weights(self) -> List:
        """Rank 0 returns [ObjectRef of {name: ndarray}] (replicas are identical); other ranks []."""
        if self.rank != 0:
            return []
        return [ray.put({k: v.detach().cpu().numpy().copy() for k, v in self.model.state_dict().items()})]

    def state_dict_numpy(self) -> Dict[str, np.ndarray]:
        """This replica's weights as arrays (tests check the replicas stay identical)."""
        return {k: v.detach().cpu().numpy().copy() for k, v in self.model.state_dict().items()}


def _group_mean(metrics: Dict[str, float], device: torch.device) -> Dict[str, float]:
    """Average scalar metrics over the actor's ranks (all ranks hold the same keys)."""
    if not dist.is_initialized() or dist.get_world_size() == 1:
        return metrics
    keys = sorted(metrics)
    t = torch.tensor([metrics[k] for k in keys], dtype=torch.float64, device=device)
    dist.all_reduce(t)
    t /= dist.get_world_size()
    return {k: float(v) for k, v in zip(keys, t)}
