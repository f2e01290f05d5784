"""DAPO dynamic sampling in the reasoning workflow's collection: keep only groups with a learning signal.

A step needs `target_groups` groups (prompts x group_size samples). Each round generates and scores
some prompts; groups whose rewards are all equal (`dynamic_sampling_mask`) are dropped, the others
kept, until the batch is full or `max_rounds` rounds ran. Later rounds ask for as many prompts as the
keep rate seen so far says are needed (at most `target_groups`). A batch still short after the last
round is filled with dropped groups (their group-relative advantages are zero, so they add no
gradient) to keep the batch shape the actor ranks split. Rounds within a step use the same weights.

Every generated group is accounted for: generated_groups == kept_groups + surplus_groups +
no_signal_groups, where surplus groups had a signal but a round brought more than the batch still
needed (counted in `dropped/surplus_groups`, logged), and padded_groups of the no-signal ones fill a
short batch.
"""

import logging
import math
from typing import Callable, Dict, List

import torch

from rlinf.algorithms import dynamic_sampling_mask

logger = logging.getLogger(__name__)

_ROW_TENSORS = ("responses", "logprobs", "mask")  # [N, T]: padded to a common width when merged
_ROW_LISTS = ("prompts", "texts")


def _select_rows(rollout: Dict, rows: torch.Tensor) -> Dict:
    idx = rows.tolist()
    out = {k: rollout[k][rows] for k in (*_ROW_TENSORS, "versions", "scores", "group_index")}
    out.update({k: [rollout[k][i] for i in idx] for k in _ROW_LISTS})
    return out


def _merge(parts: List[Dict], pad_id: int) -> Dict:
    """Concatenate row subsets of rollouts (responses of different widths), renumbering groups 0.."""
    width = max(p["responses"].shape[1] for p in parts)

    def pad(t, value):
        return torch.nn.functional.pad(t, (0, width - t.shape[1]), value=value)

    out = {"responses": torch.cat([pad(p["responses"], pad_id) for p in parts]),
           "logprobs": torch.cat([pad(p["logprobs"], 0.0) for p in parts]),
           "mask": torch.cat([pad(p["mask"], 0.0) for p in parts])}
    for k in ("versions", "scores"):
        out[k] = torch.cat([p[k] for p in parts])
    for k in _ROW_LISTS:
        out[k] = [x for p in parts for x in p[k]]
    _, out["group_index"] = torch.unique_consecutive(torch.cat([p["group_index"] + 1_000_000 * i
                                                                for i, p in enumerate(parts)]), return_inverse=True)
    return out


def collect_dynamic(generate: Callable[[int, int], Dict], target_groups: int, max_rounds: int,
                    pad_id: int) -> Dict:
    """Fill a batch of `target_groups` groups with signal. `generate(round, num_prompts)` returns a scored
    rollout (keys responses, logprobs, mask, versions, scores, group_index, prompts, texts, timing) whose
    groups are contiguous. Returns the merged rollout with `dynamic_sampling` metrics added."""
    kept: List[Dict] = []
    dropped: List[Dict] = []
    n_kept = generated = rounds = no_signal_groups = surplus = 0
    timing = {"rollout": 0.0, "reward": 0.0}
    while n_kept < target_groups and rounds < max_rounds:
        need = target_groups - n_kept
        keep_rate = n_kept / generated if generated else 1.0
        ask = target_groups if rounds == 0 else min(target_groups, math.ceil(need / max(keep_rate, 1.0 / target_groups)))
        rollout = generate(rounds, ask)
        rounds += 1
        generated += ask
        for key in timing:
            timing[key] += rollout["timing"][key]
        keep = dynamic_sampling_mask(rollout["scores"], rollout["group_index"])
        groups = torch.unique_consecutive(rollout["group_index"])
        signal = [g for g in groups.tolist() if bool(keep[rollout["group_index"] == g].all())]
        no_signal_groups += len(groups) - len(signal)
        take = signal[:need]
        surplus += len(signal) - len(take)
        n_kept += len(take)
        in_take = torch.isin(rollout["group_index"], torch.tensor(take, dtype=rollout["group_index"].dtype))
        if take:
            kept.append(_select_rows(rollout, in_take.nonzero().squeeze(-1)))
        no_signal = ~keep
        if bool(no_signal.any()):
            dropped.append(_select_rows(rollout, no_signal.nonzero().squeeze(-1)))
    padded = 0
    for part in dropped:  # still short after max_rounds: zero-advantage groups keep the batch shape
        if n_kept + padded >= target_groups:
            break
        groups = torch.unique_consecutive(part["group_index"]).tolist()[:target_groups - n_kept - padded]
        kept.append(_select_rows(part, torch.isin(part["group_index"], torch.tensor(groups)).nonzero().squeeze(-1)))
        padded += len(groups)
    out = _merge(kept, pad_id)
    out["timing"] = timing
    if surplus:
        logger.info("dynamic sampling: %d group(s) with a learning signal beyond the batch's %d dropped "
                    "(counted in dropped/surplus_groups)", surplus, target_groups)
    out["dynamic_sampling"] = {"kept_groups": float(n_kept), "rounds": float(rounds),
                               "generated_groups": float(generated),
                               "dropped_fraction": no_signal_groups / generated if generated else 0.0,
                               "padded_groups": float(padded),
                               "no_signal_groups": float(no_signal_groups),
                               "surplus_groups": float(surplus)}
    # Groups generated but not trained on although they had a signal: the step's `dropped/<why>` metrics.
    out["dropped"] = {"surplus_groups": float(surplus)}
    return out
