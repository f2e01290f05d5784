"""A tiny vision-language-action policy built from Hugging Face configs (no downloads), with a value head.

    image uint8 [B, H, W, 3] -> SigLIP ViT (patch `patch_size`) -> P patch features -> 2-layer MLP projector
    state [B, d] -> Linear                                                   (one proprio token)
    instruction str -> char tokens, cut / left-padded to `instruction_tokens`  (LM token embeddings)
    Qwen2 decoder over  [image tokens | proprio token | instruction tokens | action positions]

Action tokens (`actor.model.action_bins` = K bins per dimension, OpenVLA-style): a continuous action
a in [low, high] of dimension i falls in bin b = floor((a - low_i) / (high_i - low_i) * K) (clipped to
0..K-1), bin b is the token id V - K + b (the LAST K ids of the LM vocabulary of size V) and decodes to
the bin centre low_i + (b + 1/2) (high_i - low_i) / K. The policy's categorical over a dimension is
the softmax of the LM logits restricted to those K ids. A decision emits C x D tokens
(C = `action_chunk`, D = action dims; action j of the chunk, dimension i is token j * D + i).

Heads (`actor.model.action_head`):
    tokens  autoregressive: token t is read at the position after token t - 1 (the last prefix
            position for t = 0), each chosen token fed back (KV cache in `act`, teacher forcing in
            `evaluate`; the two agree up to float rounding);
    chunk   OpenVLA-OFT-style parallel decoding: C x D learned "empty action" query embeddings follow
            the prefix and ONE forward pass reads every token's logits; the tokens of a decision are
            conditionally independent given the prefix.
log pi(action) = sum over its D tokens of log softmax; log pi(chunk) = sum over its C actions.
Value head: Linear(hidden, C) on the last prefix position: V estimates for the chunk's C steps
(column 0 is V(s) of the observation; see rlinf.models.policy for the interface and shapes).
"""

from typing import Any, Dict, List, Optional, Tuple

import numpy as np
import torch
import torch.nn.functional as F
from torch import Tensor, nn

from rlinf.config.schema import ModelConfig
from rlinf.errors import InputError
from rlinf.models.tokenizer import CharTokenizer


class ActionTokenizer:
    """Uniform bins over [low, high] per action dimension <-> the last `bins` ids of a vocabulary."""

    def __init__(self, low: List[float], high: List[float], bins: int, vocab_size: int):
        lo, hi = np.asarray(low, np.float64), np.asarray(high, np.float64)
        finite = np.isfinite(lo) & np.isfinite(hi) & (hi > lo)
        self.low = torch.tensor(np.where(finite, lo, -1.0), dtype=torch.float32)  # unbounded dims: [-1, 1]
        self.high = torch.tensor(np.where(finite, hi, 1.0), dtype=torch.float32)
        self.bins, self.vocab_size = bins, vocab_size
        self.first_id = vocab_size - bins

    def edges(self, dim: int) -> Tensor:
        """The bins + 1 bin edges of dimension `dim`."""
        return torch.linspace(float(self.low[dim]), float(self.high[dim]), self.bins + 1)

    def to_bins(self, actions: Tensor) -> Tensor:
        """[..., D] actions -> long bins in 0..bins-1."""
        lo, hi = self.low.to(actions.device), self.high.to(actions.device)
        frac = (actions.float() - lo) / (hi - lo)
        return torch.floor(frac * self.bins).long().clamp(0, self.bins - 1)

    def centers(self, bins: Tensor) -> Tensor:
        """[..., D] bins -> actions at the bin centres."""
        lo, hi = self.low.to(bins.device), self.high.to(bins.device)
        return lo + (bins.float() + 0.5) * (hi - lo) / self.bins

    def to_tokens(self, bins: Tensor) -> Tensor:
        return bins + self.first_id

    def from_tokens(self, tokens: Tensor) -> Tensor:
        return tokens - self.first_id


class TinyVLA(nn.Module):
    """See the module docstring; `act` / `evaluate` / `value` follow rlinf.models.policy."""

    LORA_LM = "lm"  # LoRA (actor.model.lora_rank): adapters in the decoder; these stay trainable
    LORA_TRAINABLE = ("projector", "proprio", "action_queries", "value_head")

    def __init__(self, cfg: ModelConfig, spec: Dict[str, Any]):
        super().__init__()
        from transformers import Qwen2Config, Qwen2Model, SiglipVisionConfig, SiglipVisionModel

        H, W, _ = spec["image_shape"]
        if H != W or H % cfg.patch_size:
            raise InputError(f"the tiny VLA needs square images with a side that is a multiple of the patch size "
                             f"{cfg.patch_size}, got {H} x {W}", key="actor.model.patch_size")
        if cfg.hidden_size % cfg.num_heads:
            raise InputError(f"hidden_size {cfg.hidden_size} is not divisible by num_heads {cfg.num_heads}",
                             key="actor.model.num_heads")
        self.action_chunk, self.action_dim, self.head = cfg.action_chunk, spec["action_dim"], cfg.action_head
        self.n_tokens = self.action_chunk * self.action_dim
        self.text = CharTokenizer(cfg.char_vocab)
        self.instruction_tokens = cfg.instruction_tokens
        vocab = self.text.vocab_size + cfg.action_bins
        self.actions = ActionTokenizer(spec["action_low"], spec["action_high"], cfg.action_bins, vocab)
        vh = cfg.vision_hidden_size
        self.vision = SiglipVisionModel(SiglipVisionConfig(
            hidden_size=vh, intermediate_size=4 * vh, num_hidden_layers=cfg.vision_layers,
            num_attention_heads=max(1, vh // 32), image_size=H, patch_size=cfg.patch_size))
        h = cfg.hidden_size
        self.projector = nn.Sequential(nn.Linear(vh, h), nn.GELU(), nn.Linear(h, h))
        self.state_dim = int(spec.get("state_dim") or 0)
        self.proprio = nn.Linear(self.state_dim, h) if self.state_dim else None
        n_prefix = (H // cfg.patch_size) ** 2 + (1 if self.state_dim else 0) + cfg.instruction_tokens
        self.lm = Qwen2Model(Qwen2Config(
            vocab_size=vocab, hidden_size=h, intermediate_size=4 * h, num_hidden_layers=cfg.num_layers,
            num_attention_heads=cfg.num_heads, num_key_value_heads=cfg.num_heads,
            max_position_embeddings=n_prefix + self.n_tokens + 8, pad_token_id=0))
        self.lm_head = nn.Linear(h, vocab, bias=False)
        if self.head == "chunk":
            self.action_queries = nn.Parameter(torch.randn(self.n_tokens, h) * 0.02)
        self.value_head = nn.Linear(h, self.action_chunk)
        nn.init.zeros_(self.value_head.weight)
        nn.init.zeros_(self.value_head.bias)
        self._instr_cache: Dict[str, List[int]] = {}

    # ---- inputs ---------------------------------------------------------------------------------
    def _instruction_ids(self, texts: List[str], device) -> Tensor:
        rows = []
        for t in texts:
            if t not in self._instr_cache:
                kept = "".join(c for c in t.lower() if c in self.text.chars)[: self.instruction_tokens]
                ids = self.text.encode(kept)
                self._instr_cache[t] = [self.text.pad_token_id] * (self.instruction_tokens - len(ids)) + ids
            rows.append(self._instr_cache[t])
        return torch.tensor(rows, dtype=torch.long, device=device)

    def _prefix(self, obs: Dict[str, Any]) -> Tensor:
        """[B, P + 1 + L, h]: image tokens, proprio token, instruction tokens."""
        image = obs["image"]
        pixels = image.permute(0, 3, 1, 2).float() / 127.5 - 1.0  # SigLIP's mean 0.5 / std 0.5 normalisation
        parts = [self.projector(self.vision(pixel_values=pixels).last_hidden_state)]
        if self.proprio is not None:
            parts.append(self.proprio(obs["state"].float().flatten(1))[:, None])
        B = image.shape[0]
        texts = obs.get("instruction") or [""] * B
        parts.append(self.lm.embed_tokens(self._instruction_ids(list(texts), image.device)))
        return torch.cat(parts, dim=1)

    def _action_logits(self, hidden: Tensor) -> Tensor:
        """Logits over the K action-token ids only (the last K rows of the LM head)."""
        return F.linear(hidden, self.lm_head.weight[self.actions.first_id:])

    # ---- policy interface -------------------------------------------------------------------------
    def _shape(self, actions: Tensor, logp: Tensor, values: Tensor, ent: Optional[Tensor] = None):
        """Token-level [B, C * D] -> actions [B, C, D] (or [B, D] with C = 1), per-action sums."""
        B, C, D = logp.shape[0], self.action_chunk, self.action_dim
        logp = logp.view(B, C, D).sum(-1)
        ent = ent.view(B, C, D).sum(-1) if ent is not None else None
        if C == 1:
            return actions.view(B, D), logp[:, 0], values[:, 0], (ent[:, 0] if ent is not None else None)
        return actions.view(B, C, D), logp, values, ent

    @torch.no_grad()
    def act(self, obs: Dict[str, Any], greedy: bool = False, generator: Optional[torch.Generator] = None):
        prefix = self._prefix(obs)
        B = prefix.shape[0]
        if self.head == "chunk":
            queries = self.action_queries.unsqueeze(0).expand(B, -1, -1)
            hidden = self.lm(inputs_embeds=torch.cat([prefix, queries], 1), use_cache=False).last_hidden_state
            values = self.value_head(hidden[:, prefix.shape[1] - 1])
            logits = self._action_logits(hidden[:, prefix.shape[1]:])           # [B, C*D, K]
            tokens = _pick(logits, greedy, generator)
            logp = torch.log_softmax(logits.float(), -1).gather(-1, tokens[..., None]).squeeze(-1)
        else:
            out = self.lm(inputs_embeds=prefix, use_cache=True)
            last, cache = out.last_hidden_state[:, -1], out.past_key_values
            values = self.value_head(last)
            picked, logps = [], []
            for t in range(self.n_tokens):
                logits = self._action_logits(last)                              # [B, K]
                tok = _pick(logits, greedy, generator)
                logps.append(torch.log_softmax(logits.float(), -1).gather(-1, tok[:, None]).squeeze(-1))
                picked.append(tok)
                if t + 1 < self.n_tokens:
                    emb = self.lm.embed_tokens(self.actions.to_tokens(tok))[:, None]
                    out = self.lm(inputs_embeds=emb, past_key_values=cache, use_cache=True)
                    last, cache = out.last_hidden_state[:, -1], out.past_key_values
            tokens, logp = torch.stack(picked, 1), torch.stack(logps, 1)
        bins = tokens.view(B, self.action_chunk, self.action_dim)
        actions = self.actions.centers(bins)
        a, lp, v, _ = self._shape(actions, logp, values)
        return a, lp, v

    def evaluate(self, obs: Dict[str, Any], actions: Tensor):
        prefix = self._prefix(obs)
        B, n = prefix.shape[0], prefix.shape[1]
        bins = self.actions.to_bins(actions.reshape(B, self.n_tokens // self.action_dim, self.action_dim))
        bins = bins.reshape(B, self.n_tokens)
        if self.head == "chunk":
            queries = self.action_queries.unsqueeze(0).expand(B, -1, -1)
            hidden = self.lm(inputs_embeds=torch.cat([prefix, queries], 1), use_cache=False).last_hidden_state
            logits = self._action_logits(hidden[:, n:])
        else:  # teacher forcing: position n - 1 + t reads token t
            fed = self.lm.embed_tokens(self.actions.to_tokens(bins[:, :-1]))
            hidden = self.lm(inputs_embeds=torch.cat([prefix, fed], 1), use_cache=False).last_hidden_state
            logits = self._action_logits(hidden[:, n - 1:])
        logprobs_all = torch.log_softmax(logits.float(), -1)
        logp = logprobs_all.gather(-1, bins[..., None]).squeeze(-1)
        ent = -(logprobs_all.exp() * logprobs_all).sum(-1)
        values = self.value_head(hidden[:, n - 1])
        _, lp, v, e = self._shape(bins, logp, values, ent)
        return lp, e, v

    def value(self, obs: Dict[str, Any]) -> Tensor:
        prefix = self._prefix(obs)
        values = self.value_head(self.lm(inputs_embeds=prefix, use_cache=False).last_hidden_state[:, -1])
        return values[:, 0] if self.action_chunk == 1 else values


def _pick(logits: Tensor, greedy: bool, generator: Optional[torch.Generator]) -> Tensor:
    """argmax, or a sample from softmax(logits), over the last axis."""
    if greedy:
        return logits.argmax(-1)
    probs = torch.softmax(logits.float(), -1)
    flat = probs.reshape(-1, probs.shape[-1])
    return torch.multinomial(flat, 1, generator=generator).view(probs.shape[:-1])


def build_vla(cfg: ModelConfig, spec: Dict[str, Any], seed: int) -> nn.Module:
    """The tiny VLA (no `path`), or an OpenVLA / OpenVLA-OFT checkpoint from the local `path`; with
    `lora_rank` > 0, LoRA adapters on its LM (`rlinf.models.lora`, initialised from `seed`) and
    everything but the adapters and the policy's `LORA_TRAINABLE` submodules frozen."""
    if cfg.path is not None:
        from rlinf.models.openvla import load_openvla

        policy = load_openvla(cfg, spec, seed)
    else:
        with torch.random.fork_rng():
            torch.manual_seed(seed)
            policy = TinyVLA(cfg, spec)
    if cfg.lora_rank:
        from rlinf.models.lora import apply_lora

        with torch.random.fork_rng():
            torch.manual_seed(seed + 1)
            apply_lora(policy, cfg.lora_rank, cfg.lora_alpha, lm=policy.LORA_LM, keep_trainable=policy.LORA_TRAINABLE)
    return policy
