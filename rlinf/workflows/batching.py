"""Pure helpers that turn prompts, rollouts and rewards into training tensors."""

import random
from typing import Dict, List, Optional, Sequence

import torch

from rlinf.algorithms import compute_advantages
from rlinf.config.schema import AlgorithmConfig
from rlinf.workers.packing import balanced_partition, row_lengths
from rlinf.workers.rollout.sampling import left_pad


def split_even(items: Sequence, parts: int) -> List[list]:
    """Contiguous split into `parts` chunks whose sizes differ by at most one."""
    n = len(items)
    bounds = [n * i // parts for i in range(parts + 1)]
    return [list(items[bounds[i]:bounds[i + 1]]) for i in range(parts)]


def epoch_batch(items: Sequence, batch_size: int, seed: int, step: int) -> list:
    """Batch `step` of a seeded shuffle per pass over `items` (pass e shuffled with seed + e), so any step's
    batch is known without replaying earlier ones (resuming by step); at least one batch per pass."""
    per_epoch = max(1, len(items) // batch_size)
    epoch, index = divmod(step, per_epoch)
    order = list(range(len(items)))
    random.Random(seed + epoch).shuffle(order)
    return [items[i] for i in order[index * batch_size:(index + 1) * batch_size]]


def concat_rollouts(outputs: List[Dict], pad_id: int) -> Dict[str, torch.Tensor]:
    """Stack per-rank rollout outputs (possibly of different response widths) into one batch."""
    width = max(o["responses"].shape[1] for o in outputs)

    def pad(t, value):
        return torch.nn.functional.pad(t, (0, width - t.shape[1]), value=value)

    return {
        "responses": torch.cat([pad(o["responses"], pad_id) for o in outputs]),
        "logprobs": torch.cat([pad(o["logprobs"], 0.0) for o in outputs]),
        "mask": torch.cat([pad(o["mask"], 0.0) for o in outputs]),
        "versions": torch.cat([torch.full((o["responses"].shape[0],), o["version"]) for o in outputs]),
    }


def build_lm_batch(prompts: List[List[int]], rollout: Dict[str, torch.Tensor], pad_id: int) -> Dict[str, torch.Tensor]:
    """Prompt + response tensors in the layout ActorWorker / CriticWorker read."""
    prompt_ids, prompt_attn = left_pad(prompts, pad_id)
    mask = rollout["mask"]
    input_ids = torch.cat([prompt_ids, rollout["responses"]], dim=1)
    attention_mask = torch.cat([prompt_attn, mask.long()], dim=1)
    return {
        "input_ids": input_ids,
        "attention_mask": attention_mask,
        "position_ids": (attention_mask.cumsum(-1) - 1).clamp(min=0),
        "response_mask": mask,
        "behaviour_logprobs": rollout["logprobs"],
    }


def add_advantages(batch: Dict[str, torch.Tensor], scores: torch.Tensor, group_index: torch.Tensor,
                   algo: AlgorithmConfig, values: Optional[torch.Tensor] = None,
                   token_rewards: Optional[torch.Tensor] = None) -> Dict[str, torch.Tensor]:
    """Advantages and returns by `algo.adv_estimator` from outcome scores, or from per-token rewards when
    given (KL in the reward: the estimator then reads those, sequence-level ones their sum), and critic
    values for GAE."""
    advantages, returns = compute_advantages(
        algo.adv_estimator, mask=batch["response_mask"], scores=scores if token_rewards is None else None,
        token_rewards=token_rewards, group_index=group_index, values=values, gamma=algo.gamma, lam=algo.lam,
        norm_by_std=algo.norm_adv_by_std,
    )
    out = {**batch, "advantages": advantages, "returns": returns}
    if values is not None:
        out["values"] = values
    return out


def build_train_batch(prompts: List[List[int]], rollout: Dict[str, torch.Tensor], scores: torch.Tensor,
                      group_index: torch.Tensor, algo: AlgorithmConfig, pad_id: int) -> Dict[str, torch.Tensor]:
    """`build_lm_batch` + `add_advantages` for critic-free estimators."""
    return add_advantages(build_lm_batch(prompts, rollout, pad_id), scores, group_index, algo)


def shard_indices(batch: Dict[str, torch.Tensor], parts: int, balance_tokens: bool = False) -> List[torch.Tensor]:
    """Row indices of each of `parts` equal shards: contiguous, or with `balance_tokens` a
    `rlinf.workers.packing.balanced_partition` of the rows' unpadded token counts (equal row counts,
    token sums within max - min row length of each other)."""
    n = batch["input_ids"].shape[0]
    if n % parts:
        raise ValueError(f"{n} rows cannot be split evenly over {parts} ranks")
    if not balance_tokens:
        size = n // parts
        return [torch.arange(i * size, (i + 1) * size) for i in range(parts)]
    return [torch.tensor(p, dtype=torch.long) for p in balanced_partition(row_lengths(batch), parts)]


def shard_rows(batch: Dict[str, torch.Tensor], parts: int, balance_tokens: bool = False) -> List[Dict[str, torch.Tensor]]:
    """Split every tensor of `batch` by rows into `parts` equal shards (`shard_indices`)."""
    if not balance_tokens:
        n = batch["input_ids"].shape[0]
        if n % parts:
            raise ValueError(f"{n} rows cannot be split evenly over {parts} ranks")
        size = n // parts
        return [{k: v[i * size:(i + 1) * size] for k, v in batch.items()} for i in range(parts)]
    return [{k: v[idx] for k, v in batch.items()} for idx in shard_indices(batch, parts, True)]


def unshard_rows(outputs: List[torch.Tensor], batch: Dict[str, torch.Tensor], parts: int,
                 balance_tokens: bool = False) -> torch.Tensor:
    """Per-shard row outputs of `shard_rows(batch, parts, balance_tokens)` back in `batch`'s row order."""
    stacked = torch.cat(outputs)
    if not balance_tokens:
        return stacked
    out = torch.empty_like(stacked)
    out[torch.cat(shard_indices(batch, parts, True))] = stacked
    return out
