"""Multi-turn token bookkeeping: `Trajectory` records (rlinf.envs.agent.trajectory) -> training rows in the
layout `build_lm_batch` makes and the actor / critic read, so estimators and losses come unchanged from
the registries. Pure tensor helpers: no Ray, no model.

Layout of B trajectories, P = longest prompt, T = longest response (all segments concatenated):

    input_ids       [B, P + T]  prompt left-padded with pad_id | segments in order, right-padded
    attention_mask  [B, P + T]  1 on every real token: prompt, model AND env/tool tokens (the model
                                reads tool results), 0 on padding
    position_ids    [B, P + T]  cumsum(attention_mask) - 1, clamped at 0 (as build_lm_batch)
    response_mask   [B, T]      float, 1 only on model-generated tokens: env/tool tokens get no loss
    behaviour_logprobs [B, T]   the rollout's log-prob at each model token, 0 elsewhere
    token_rewards   [B, T]      per-turn reward at the last token of the model turn that earned it, plus the
                                outcome reward at the last model token of the trajectory; 0 elsewhere
    scores          [B]         sum of token_rewards = outcome + per-turn rewards (`Trajectory.total_reward`)
    group_index     [B]         long

Which estimator reads what: sequence estimators (grpo, rloo, drgrpo) compare `scores` (or the masked sum
of `token_rewards`, the same number); token estimators (gae, reinforce_plus_plus) read `token_rewards`
and skip masked (tool) steps, so discounting and GAE run over model tokens only:
    G_t = r_t + gamma * G_t'   with t' the next MODEL token.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Dict, List, Optional

import torch

from rlinf.algorithms import compute_advantages
from rlinf.envs.agent.trajectory import Trajectory

BATCH_KEYS = ("input_ids", "attention_mask", "position_ids", "response_mask", "behaviour_logprobs")


@dataclass
class MultiTurnRows:
    """`batch` has exactly the keys of build_lm_batch (BATCH_KEYS); the rest feed the estimators."""

    batch: Dict[str, torch.Tensor]
    token_rewards: torch.Tensor
    scores: torch.Tensor
    group_index: torch.Tensor


def response_tensors(trajectories: List[Trajectory], width: Optional[int] = None) -> Dict[str, torch.Tensor]:
    """[B, T] response ids (pad 0 here; see build_multiturn_rows), token-present mask, model mask,
    behaviour log-probs and token rewards, as the module docstring lays them out."""
    T = width if width is not None else max((len(t.response_ids) for t in trajectories), default=0)
    B = len(trajectories)
    ids = torch.zeros(B, T, dtype=torch.long)
    present = torch.zeros(B, T, dtype=torch.long)
    model = torch.zeros(B, T, dtype=torch.float32)
    logp = torch.zeros(B, T, dtype=torch.float32)
    rewards = torch.zeros(B, T, dtype=torch.float32)
    for b, traj in enumerate(trajectories):
        pos, last_model = 0, None
        for seg in traj.segments:
            n = len(seg.token_ids)
            if pos + n > T:
                raise ValueError(f"trajectory {b} has {len(traj.response_ids)} response tokens > width {T}")
            ids[b, pos:pos + n] = torch.tensor(seg.token_ids, dtype=torch.long)
            present[b, pos:pos + n] = 1
            if seg.is_model and n:
                model[b, pos:pos + n] = 1.0
                logp[b, pos:pos + n] = torch.tensor(seg.logprobs, dtype=torch.float32)
                rewards[b, pos + n - 1] += seg.reward
                last_model = pos + n - 1
            elif seg.is_model and seg.reward != 0.0:
                raise ValueError(f"trajectory {b}: an empty model turn cannot carry a reward ({seg.reward})")
            pos += n
        if last_model is None and traj.reward != 0.0:
            raise ValueError(f"trajectory {b} has a reward ({traj.reward}) but no model token to put it on")
        if last_model is not None:
            rewards[b, last_model] += traj.reward
    return {"ids": ids, "present": present, "model_mask": model, "logprobs": logp, "token_rewards": rewards}


def build_multiturn_rows(trajectories: List[Trajectory], pad_id: int) -> MultiTurnRows:
    """Training rows of `trajectories` (layout in the module docstring)."""
    if not trajectories:
        raise ValueError("no trajectories")
    resp = response_tensors(trajectories)
    P = max(len(t.prompt_ids) for t in trajectories)
    B, T = resp["ids"].shape
    prompt_ids = torch.full((B, P), pad_id, dtype=torch.long)
    prompt_attn = torch.zeros((B, P), dtype=torch.long)
    for b, traj in enumerate(trajectories):
        n = len(traj.prompt_ids)
        prompt_ids[b, P - n:] = torch.tensor(traj.prompt_ids, dtype=torch.long)
        prompt_attn[b, P - n:] = 1
    response_ids = torch.where(resp["present"].bool(), resp["ids"], torch.full_like(resp["ids"], pad_id))
    attention_mask = torch.cat([prompt_attn, resp["present"]], dim=1)
    batch = {
        "input_ids": torch.cat([prompt_ids, response_ids], dim=1),
        "attention_mask": attention_mask,
        "position_ids": (attention_mask.cumsum(-1) - 1).clamp(min=0),
        "response_mask": resp["model_mask"],
        "behaviour_logprobs": resp["logprobs"],
    }
    scores = torch.tensor([t.total_reward for t in trajectories], dtype=torch.float32)
    group_index = torch.tensor([t.group_index for t in trajectories], dtype=torch.long)
    return MultiTurnRows(batch, resp["token_rewards"], scores, group_index)


def multiturn_advantages(rows: MultiTurnRows, estimator: str, values: Optional[torch.Tensor] = None,
                         gamma: float = 1.0, lam: float = 1.0, norm_by_std: bool = True):
    """(advantages, returns) [B, T] by the registered `estimator` from the rows' token rewards (sequence
    estimators read their masked sum, i.e. `scores`), with critic `values` [B, T] for gae."""
    return compute_advantages(estimator, mask=rows.batch["response_mask"], token_rewards=rows.token_rewards,
                              group_index=rows.group_index, values=values, gamma=gamma, lam=lam,
                              norm_by_std=norm_by_std)
