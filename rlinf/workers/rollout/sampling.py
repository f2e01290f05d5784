"""Batched autoregressive sampling with a KV cache, returning tokens and behaviour log-probs, and the
one definition of the sampling distribution that the rollout samples from and the actor scores.

Prompts are left-padded so every row's last prompt token sits in the same column; position ids
come from the attention mask, so padding changes nothing a row sees. A row stops at EOS (or at a
stop sequence); later positions hold `pad_id` and are masked out.

The sampling distribution (see `sampling_logits`): with raw logits l over the vocabulary V,
temperature tau, top-k k and nucleus mass p,

    z = l / tau                                    (tau = 0, greedy: z = l and no filtering)
    K = {v : z_v >= k-th largest z}                (all of V when k = 0 or k >= |V|)
    q = softmax of z restricted to K, sorted descending q_(1) >= q_(2) >= ...
    P = {v : sum of q_(j) ranked strictly before v < p}   (the top token always stays; all of V when p = 1)
    S = K n P,    pi(y) = exp(z_y) / sum_{v in S} exp(z_v) for y in S, 0 outside S
    log pi(y) = z_y - logsumexp_{v in S} z_v

Behaviour log-probs (what `sample` records and what vLLM's `processed_logprobs` return) are log pi
of the sampled tokens, and the actor recomputes log pi with the same function
(`sampling_logprobs`), so at the rollout's weights the PPO ratio pi_theta / pi_behaviour is 1 up to
float rounding whatever the temperature / top-k / top-p. Greedy log-probs are the unmodified model's.
"""

from dataclasses import dataclass
from typing import Dict, List, Optional, Sequence

import torch

from rlinf.algorithms.losses import logprobs_from_logits


@dataclass
class SamplingParams:
    max_new_tokens: int = 16
    temperature: float = 1.0
    top_p: float = 1.0
    top_k: int = 0


@dataclass
class Generation:
    responses: torch.Tensor   # [N, T] response token ids, pad after the end
    logprobs: torch.Tensor    # [N, T] behaviour log-prob of each response token (0 on pad)
    mask: torch.Tensor        # [N, T] 1.0 on response tokens (EOS included)


def left_pad(prompts: Sequence[Sequence[int]], pad_id: int):
    """[N, L] ids and attention mask, prompts aligned to the right edge."""
    width = max(len(p) for p in prompts)
    rows = [[pad_id] * (width - len(p)) + [int(t) for t in p] for p in prompts]  # one tensor, not one per row
    masks = [[0] * (width - len(p)) + [1] * len(p) for p in prompts]
    return torch.tensor(rows, dtype=torch.long).reshape(len(prompts), width), \
        torch.tensor(masks, dtype=torch.long).reshape(len(prompts), width)


def as_sampling_params(sampling) -> SamplingParams:
    """SamplingParams from a temperature (float) or any object with temperature / top_p / top_k
    (RolloutConfig, SamplingParams)."""
    if isinstance(sampling, (int, float)):
        return SamplingParams(temperature=float(sampling))
    return SamplingParams(temperature=float(sampling.temperature), top_p=float(getattr(sampling, "top_p", 1.0)),
                          top_k=int(getattr(sampling, "top_k", 0) or 0))


def is_filtered(params: SamplingParams) -> bool:
    """Whether top-k / top-p restrict the support (never when greedy)."""
    return params.temperature != 0 and ((0 < params.top_k) or params.top_p < 1.0)


@torch.no_grad()
def sampling_support(z: torch.Tensor, top_k: int = 0, top_p: float = 1.0) -> torch.Tensor:
    """[..., V] bool: the set S = K n P of the module docstring for tempered logits `z` (k-th-largest
    ties stay, top-p's mass is that of the top-k-renormalised distribution, the top token always stays).
    Not differentiable: the support is a selection."""
    V = z.shape[-1]
    keep = torch.ones_like(z, dtype=torch.bool)
    if 0 < top_k < V:
        kth = torch.topk(z, top_k, dim=-1).values[..., -1:]
        keep = z >= kth
    if top_p < 1.0:
        zk = z.float().masked_fill(~keep, float("-inf"))
        sorted_z, idx = torch.sort(zk, descending=True, dim=-1)
        probs = torch.softmax(sorted_z, dim=-1)
        drop = (probs.cumsum(-1) - probs) >= top_p  # the mass ranked before it already reaches top_p
        drop[..., 0] = False
        keep = keep & ~torch.zeros_like(keep).scatter(-1, idx, drop)
    return keep


def sampling_logits(logits: torch.Tensor, params: SamplingParams,
                    tokens: Optional[torch.Tensor] = None) -> torch.Tensor:
    """[..., V] logits of the sampling distribution: z = logits / tau, -inf outside S (module docstring);
    log_softmax of the result is log pi. Greedy (tau = 0) and unfiltered sampling return logits / tau.

    `tokens` [...] (the actor's scoring): each position's own token is added to S, so log pi stays
    finite where the token is outside S: padding after EOS (masked out anyway), a k-th / top-p boundary
    tie that the sampler's float rounding resolved the other way, or a reference model whose own filter
    would drop the policy's token. Tokens the sampler drew are in S, so their log pi is unchanged."""
    t = params.temperature
    z = logits / t if t not in (0.0, 1.0) else logits
    if not is_filtered(params):
        return z
    if z.dim() <= 2:
        keep = sampling_support(z.detach(), params.top_k, params.top_p)
    else:  # one sequence at a time: top-p's sort of [T, V] bounds the temporary memory
        keep = torch.stack([sampling_support(row.detach(), params.top_k, params.top_p) for row in z])
    if tokens is not None:
        keep.scatter_(-1, tokens.long().unsqueeze(-1), True)
    return z.masked_fill(~keep, float("-inf"))


def sampling_logprobs(logits: torch.Tensor, tokens: torch.Tensor, params: SamplingParams) -> torch.Tensor:
    """[B, T, V], [B, T] -> [B, T]: log pi(token) = z_token - logsumexp_S z (module docstring), the
    behaviour log-prob the rollout recorded for a sampled token. Differentiable in `logits`."""
    return logprobs_from_logits(sampling_logits(logits, params, tokens), tokens)


@torch.no_grad()
def sample(model: torch.nn.Module, prompts: Sequence[Sequence[int]], params: SamplingParams, eos_id: int,
           pad_id: int, generator: Optional[torch.Generator] = None,
           stop_token_seqs: Optional[List[List[int]]] = None) -> Generation:
    """Generate up to `params.max_new_tokens` tokens for every prompt."""
    ids, attn = left_pad(prompts, pad_id)
    n = ids.shape[0]
    device = next(model.parameters()).device
    ids, attn = ids.to(device), attn.to(device)
    pos = (attn.cumsum(-1) - 1).clamp(min=0)
    out = model(input_ids=ids, attention_mask=attn, position_ids=pos, use_cache=True)
    past, logits = out.past_key_values, out.logits[:, -1, :]
    next_pos = pos[:, -1:] + 1
    tokens, logps, valid = [], [], []
    finished = torch.zeros(n, dtype=torch.bool, device=device)
    for _ in range(params.max_new_tokens):
        logits = logits.float()
        logp_all = torch.log_softmax(sampling_logits(logits, params), -1)
        if params.temperature == 0:
            tok = logp_all.argmax(-1)
        else:
            tok = torch.multinomial(logp_all.exp(), 1, generator=generator).squeeze(-1)
        logp = logp_all.gather(-1, tok[:, None]).squeeze(-1)
        tok = torch.where(finished, torch.full_like(tok, pad_id), tok)
        tokens.append(tok)
        valid.append(~finished)
        logps.append(torch.where(finished, torch.zeros_like(logp), logp))
        finished |= tok == eos_id
        if stop_token_seqs:
            finished |= _ends_with_stop(torch.stack(tokens, 1), stop_token_seqs)
        if bool(finished.all()):
            break
        attn = torch.cat([attn, torch.ones((n, 1), dtype=attn.dtype, device=device)], dim=1)
        out = model(input_ids=tok[:, None], attention_mask=attn, position_ids=next_pos, past_key_values=past,
                    use_cache=True)
        past, logits = out.past_key_values, out.logits[:, -1, :]
        next_pos = next_pos + 1
    responses = torch.stack(tokens, 1).cpu()
    logprobs = torch.stack(logps, 1).cpu()
    mask = torch.stack(valid, 1).float().cpu()  # up to and including EOS or the stop sequence's last token
    return Generation(responses, logprobs * mask, mask)


def _ends_with_stop(tokens: torch.Tensor, stops: List[List[int]]) -> torch.Tensor:
    hit = torch.zeros(tokens.shape[0], dtype=torch.bool, device=tokens.device)
    for seq in stops:
        k = len(seq)
        if 0 < k <= tokens.shape[1]:
            hit |= (tokens[:, -k:] == torch.tensor(seq, device=tokens.device)).all(-1)
    return hit


def turns_from_generation(responses: torch.Tensor, logprobs: torch.Tensor, mask: torch.Tensor,
                          stop_token_seqs: List[List[int]]) -> Dict[str, list]:
    """Per-row lists of the generated tokens and their log-probs, each row cut after the first complete
    stop sequence (an engine that cannot stop on token sequences generates past it; what follows is
    dropped, and the kept tokens' log-probs do not depend on it)."""
    tokens_out, logprobs_out = [], []
    for row, row_logp, n in zip(responses.tolist(), logprobs.tolist(), mask.sum(1).long().tolist()):
        end = n
        for k in range(1, n + 1):
            if any(0 < len(seq) <= k and row[k - len(seq):k] == seq for seq in stop_token_seqs):
                end = k
                break
        tokens_out.append(row[:end])
        logprobs_out.append(row_logp[:end])
    return {"tokens": tokens_out, "logprobs": logprobs_out}

