"""Batched autoregressive sampling with a KV cache, returning tokens and behaviour log-probs.

Prompts are left-padded so every row's last prompt token sits in the same column; position ids
come from the attention mask, so padding changes nothing a row sees. A row stops at EOS (or at a
stop sequence); later positions hold `pad_id` and are masked out. Log-probs are those of the
distribution actually sampled from (after temperature / top-k / top-p), which is what PPO's
behaviour policy means; with temperature 0 (greedy) they are the unmodified model's.
"""

from dataclasses import dataclass
from typing import List, Optional, Sequence

import torch


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
    ids = torch.full((len(prompts), width), pad_id, dtype=torch.long)
    attn = torch.zeros((len(prompts), width), dtype=torch.long)
    for i, p in enumerate(prompts):
        ids[i, width - len(p):] = torch.tensor(p, dtype=torch.long)
        attn[i, width - len(p):] = 1
    return ids, attn


def _filter_logits(logits: torch.Tensor, top_k: int, top_p: float) -> torch.Tensor:
    if top_k > 0 and top_k < logits.shape[-1]:
        kth = torch.topk(logits, top_k, dim=-1).values[..., -1:]
        logits = logits.masked_fill(logits < kth, float("-inf"))
    if top_p < 1.0:
        sorted_logits, idx = torch.sort(logits, descending=True, dim=-1)
        probs = torch.softmax(sorted_logits, dim=-1)
        # Drop a token when the mass before it already reaches top_p (the top token always stays).
        drop = (probs.cumsum(-1) - probs) >= top_p
        sorted_logits = sorted_logits.masked_fill(drop, float("-inf"))
        logits = torch.full_like(logits, float("-inf")).scatter(-1, idx, sorted_logits)
    return logits


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
    tokens, logps = [], []
    finished = torch.zeros(n, dtype=torch.bool, device=device)
    for _ in range(params.max_new_tokens):
        logits = logits.float()
        if params.temperature == 0:
            logp_all = torch.log_softmax(logits, -1)
            tok = logp_all.argmax(-1)
        else:
            logp_all = torch.log_softmax(_filter_logits(logits / params.temperature, params.top_k, params.top_p), -1)
            tok = torch.multinomial(logp_all.exp(), 1, generator=generator).squeeze(-1)
        logp = logp_all.gather(-1, tok[:, None]).squeeze(-1)
        tok = torch.where(finished, torch.full_like(tok, pad_id), tok)
        tokens.append(tok)
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
    mask = response_mask(responses, eos_id, pad_id)
    return Generation(responses, logprobs * mask, mask)


def response_mask(responses: torch.Tensor, eos_id: int, pad_id: int) -> torch.Tensor:
    """1.0 up to and including the first EOS of each row; 0 afterwards."""
    is_eos = responses == eos_id
    after_eos = (is_eos.cumsum(1) - is_eos.long()) > 0
    return (~after_eos).float()


def _ends_with_stop(tokens: torch.Tensor, stops: List[List[int]]) -> torch.Tensor:
    hit = torch.zeros(tokens.shape[0], dtype=torch.bool, device=tokens.device)
    for seq in stops:
        k = len(seq)
        if 0 < k <= tokens.shape[1]:
            hit |= (tokens[:, -k:] == torch.tensor(seq, device=tokens.device)).all(-1)
    return hit
