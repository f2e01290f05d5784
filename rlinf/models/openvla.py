"""OpenVLA / OpenVLA-OFT checkpoints from a local directory, behind the rlinf policy interface (GPU users).

How these checkpoints load: an OpenVLA Hugging Face checkpoint directory holds the weights plus its own
modelling code (`configuration_prismatic.py`, `modeling_prismatic.py`, `processing_prismatic.py`, named
by `auto_map` in config.json); transformers builds it only with `trust_remote_code=True` through the
image-text-to-text auto class (the old `AutoModelForVision2Seq`), and that code imports `timm` (install
it on the GPU host). rlinf therefore asks for `actor.model.trust_remote_code: true` and loads with
`local_files_only=True`: the code that runs is the code in the directory the user provided.

What this wrapper does with the loaded model (`vla`):
- prompt "In: What action should the robot take to <instruction>?\\nOut:" through the checkpoint's processor,
  camera image as a PIL image (rows of identical instruction are batched: the prismatic forward inserts
  the image patches after the first token, so a batch must share one prompt length);
- actions are tokens: the checkpoint's action vocabulary is the last `n_action_bins` ids below
  V = text vocab - pad_to_multiple_of; token V - d (d = 1..K) decodes to bin centre
  centres[clip(d - 1, 0, K - 2)] of linspace(-1, 1, K), then to env units with the dataset's q01 / q99
  norm stats (`actor.model.unnorm_key`), as OpenVLA's `predict_action` does. Sampling is restricted to
  those K ids; evaluate() maps env actions back to the nearest bin centre's token;
- action_head tokens: C x D tokens decoded autoregressively (KV cache); action_head chunk (OFT-style
  parallel decoding with discrete tokens, as RLinf's OpenVLA-OFT RL checkpoints): C x D placeholder
  tokens appended, one forward, logits read at the placeholder positions. OFT's continuous L1-regression
  head and its proprio projector (separate files, the `prismatic` package) are not supported;
- a value head (Linear on the LM's last prompt hidden state, C outputs) is added and trained from zero.

NOT EXERCISED here: no OpenVLA weights, no timm, no GPU on the machine this was written on. Only the
error paths (missing directory, no opt-in) are tested; the LoRA submodule names (`LORA_LM`,
`LORA_TRAINABLE`) follow prismatic's OpenVLAForActionPrediction and were not checked against a checkpoint
(`apply_lora` raises if the LM holds no q/k/v/o/gate/up/down projection).
"""

import logging
from pathlib import Path
from typing import Any, Dict, List, Optional

import numpy as np
import torch
from torch import Tensor, nn

from rlinf.config.schema import ModelConfig
from rlinf.errors import InputError

logger = logging.getLogger(__name__)

_DTYPES = {"float32": torch.float32, "bfloat16": torch.bfloat16, "float16": torch.float16}
PROMPT = "In: What action should the robot take to {}?\nOut:"
LLAMA_EMPTY_TOKEN = 29871  # OpenVLA appends Llama's "" token after "Out:" (its training-time prompts end so)


def check_checkpoint_dir(cfg: ModelConfig) -> None:
    """InputError (before workers start) unless `path` is a local directory and remote code is opted in."""
    if not Path(str(cfg.path)).is_dir():
        raise InputError("VLA checkpoint directory not found (download OpenVLA / OpenVLA-OFT weights and point "
                         "actor.model.path at them)", key="actor.model.path")
    if not cfg.trust_remote_code:
        raise InputError("OpenVLA checkpoints define their model classes in Python files inside the checkpoint; "
                         "set actor.model.trust_remote_code=true to run them", key="actor.model.trust_remote_code")


class OpenVLAPolicy(nn.Module):
    """act / evaluate / value of rlinf.models.policy over a loaded OpenVLA (-OFT) model."""

    # LoRA (actor.model.lora_rank): adapters in the Llama decoder (prismatic's `language_model`), as RLinf's
    # OpenVLA-OFT recipes; the vision backbone and the LM stay frozen, the projector and value head train.
    LORA_LM = "vla.language_model"
    LORA_TRAINABLE = ("vla.projector", "value_head")

    def __init__(self, cfg: ModelConfig, spec: Dict[str, Any], vla: nn.Module, processor: Any):
        super().__init__()
        self.vla, self.processor = vla, processor
        self.action_chunk, self.action_dim, self.head = cfg.action_chunk, spec["action_dim"], cfg.action_head
        self.n_tokens = self.action_chunk * self.action_dim
        conf = vla.config
        self.K = int(getattr(conf, "n_action_bins", cfg.action_bins))
        self.vocab = int(conf.text_config.vocab_size - getattr(conf, "pad_to_multiple_of", 0))
        edges = np.linspace(-1.0, 1.0, self.K)
        self.register_buffer("centers", torch.tensor((edges[:-1] + edges[1:]) / 2, dtype=torch.float32),
                             persistent=False)
        low, high, mask = self._norm_stats(cfg.unnorm_key)
        self.register_buffer("q01", torch.tensor(low, dtype=torch.float32), persistent=False)
        self.register_buffer("q99", torch.tensor(high, dtype=torch.float32), persistent=False)
        self.register_buffer("norm_mask", torch.tensor(mask, dtype=torch.bool), persistent=False)
        self.value_head = nn.Linear(conf.text_config.hidden_size, self.action_chunk)
        nn.init.zeros_(self.value_head.weight)
        nn.init.zeros_(self.value_head.bias)

    def _norm_stats(self, key: Optional[str]):
        stats = getattr(self.vla, "norm_stats", None) or getattr(self.vla.config, "norm_stats", None) or {}
        if key is None and len(stats) == 1:
            key = next(iter(stats))
        if key is None:
            logger.warning("OpenVLA: no actor.model.unnorm_key; bins in [-1, 1] are used as env actions")
            ones = np.ones(self.action_dim)
            return -ones, ones, np.zeros(self.action_dim, bool)
        if key not in stats:
            raise InputError(f"unnorm_key '{key}' is not in the checkpoint's norm_stats ({', '.join(stats)})",
                             key="actor.model.unnorm_key")
        a = stats[key]["action"]
        return np.asarray(a["q01"]), np.asarray(a["q99"]), np.asarray(a.get("mask", np.ones(len(a["q01"]), bool)))

    # ---- token <-> action ---------------------------------------------------------------------------
    def _to_actions(self, k: Tensor) -> Tensor:
        """k: index into the last K ids (token = vocab - K + k) -> env actions."""
        d = self.K - k                                      # token = vocab - d
        norm = self.centers[(d - 1).clamp(0, self.K - 2)]
        unnorm = 0.5 * (norm + 1) * (self.q99 - self.q01) + self.q01
        return torch.where(self.norm_mask, unnorm, norm)

    def _to_index(self, actions: Tensor) -> Tensor:
        """Env actions -> k of the nearest bin centre (inverse of _to_actions on its image)."""
        a = actions.float()
        scale = (self.q99 - self.q01).clamp_min(1e-8)
        norm = torch.where(self.norm_mask, 2 * (a - self.q01) / scale - 1, a)
        idx = (norm[..., None] - self.centers).abs().argmin(-1)  # centre index = d - 1
        return self.K - (idx + 1)

    # ---- forward passes --------------------------------------------------------------------------------
    def _inputs(self, obs: Dict[str, Any], rows: List[int]) -> Dict[str, Tensor]:
        from PIL import Image

        text = PROMPT.format(str(obs["instruction"][rows[0]]).lower())
        images = [Image.fromarray(obs["image"][i].cpu().numpy()) for i in rows]
        enc = self.processor([text] * len(rows), images, return_tensors="pt")
        dev = next(self.vla.parameters()).device
        ids = enc["input_ids"].to(dev)
        if not bool((ids[:, -1] == LLAMA_EMPTY_TOKEN).all()):
            ids = torch.cat([ids, torch.full((len(rows), 1), LLAMA_EMPTY_TOKEN, device=dev)], 1)
        return {"input_ids": ids, "pixel_values": enc["pixel_values"].to(dev, next(self.vla.parameters()).dtype)}

    def _groups(self, obs: Dict[str, Any]) -> List[List[int]]:
        by_text: Dict[str, List[int]] = {}
        for i, t in enumerate(obs["instruction"]):
            by_text.setdefault(str(t), []).append(i)
        return list(by_text.values())

    def _action_logits(self, logits: Tensor) -> Tensor:
        return logits[..., self.vocab - self.K:self.vocab].float()

    def _run(self, obs: Dict[str, Any], k: Optional[Tensor], greedy: bool, generator) -> tuple:
        """(k [B, C*D], logp [B, C*D], entropy [B, C*D], values [B, C]); teacher-forced when k is given."""
        B = len(obs["instruction"])
        dev = self.value_head.weight.device
        out_k = torch.zeros(B, self.n_tokens, dtype=torch.long, device=dev)
        out_lp, out_ent = torch.zeros(B, self.n_tokens, device=dev), torch.zeros(B, self.n_tokens, device=dev)
        values = torch.zeros(B, self.action_chunk, device=dev)
        for rows in self._groups(obs):
            inp = self._inputs(obs, rows)
            ids = inp["input_ids"]
            placeholder = torch.full((len(rows), self.n_tokens), self.vocab - 1, device=ids.device)
            if self.head == "chunk" or k is not None:
                fed = placeholder if self.head == "chunk" else (self.vocab - self.K + k[rows][:, :-1])
                res = self.vla(input_ids=torch.cat([ids, fed], 1), pixel_values=inp["pixel_values"],
                               output_hidden_states=True, use_cache=False)
                n = self.n_tokens if self.head == "chunk" else self.n_tokens - 1
                h_prompt = res.hidden_states[-1][:, -n - 1]
                logits = res.logits[:, -n:] if self.head == "chunk" else res.logits[:, -n - 1:]
                logits = self._action_logits(logits)
                chosen = k[rows] if k is not None else _pick(logits, greedy, generator)
            else:  # autoregressive sampling with the KV cache
                res = self.vla(input_ids=ids, pixel_values=inp["pixel_values"], output_hidden_states=True,
                               use_cache=True)
                h_prompt, cache, steps, picks = res.hidden_states[-1][:, -1], res.past_key_values, [], []
                step_logits = self._action_logits(res.logits[:, -1])
                for t in range(self.n_tokens):
                    tok = _pick(step_logits, greedy, generator)
                    steps.append(step_logits)
                    picks.append(tok)
                    if t + 1 < self.n_tokens:
                        res = self.vla(input_ids=(self.vocab - self.K + tok)[:, None], past_key_values=cache,
                                       use_cache=True)
                        cache, step_logits = res.past_key_values, self._action_logits(res.logits[:, -1])
                logits, chosen = torch.stack(steps, 1), torch.stack(picks, 1)
            logp_all = torch.log_softmax(logits, -1)
            out_k[rows] = chosen
            out_lp[rows] = logp_all.gather(-1, chosen[..., None]).squeeze(-1)
            out_ent[rows] = -(logp_all.exp() * logp_all).sum(-1)
            values[rows] = self.value_head(h_prompt.float())
        return out_k, out_lp, out_ent, values

    @torch.no_grad()
    def act(self, obs: Dict[str, Any], greedy: bool = False, generator: Optional[torch.Generator] = None):
        k, lp, _, values = self._run(obs, None, greedy, generator)
        B, C, D = k.shape[0], self.action_chunk, self.action_dim
        actions, lp = self._to_actions(k.view(B, C, D)), lp.view(B, C, D).sum(-1)
        if C == 1:
            return actions[:, 0], lp[:, 0], values[:, 0]
        return actions, lp, values

    def evaluate(self, obs: Dict[str, Any], actions: Tensor):
        B, C, D = actions.shape[0], self.action_chunk, self.action_dim
        k = self._to_index(actions.reshape(B, C, D)).reshape(B, C * D)
        _, lp, ent, values = self._run(obs, k, False, None)
        lp, ent = lp.view(B, C, D).sum(-1), ent.view(B, C, D).sum(-1)
        if C == 1:
            return lp[:, 0], ent[:, 0], values[:, 0]
        return lp, ent, values

    @torch.no_grad()
    def value(self, obs: Dict[str, Any]) -> Tensor:
        values = self._run(obs, torch.zeros(len(obs["instruction"]), self.n_tokens, dtype=torch.long,
                                            device=self.value_head.weight.device), False, None)[3]
        return values[:, 0] if self.action_chunk == 1 else values


def _pick(logits: Tensor, greedy: bool, generator) -> Tensor:
    if greedy:
        return logits.argmax(-1)
    probs = torch.softmax(logits, -1)
    return torch.multinomial(probs.reshape(-1, probs.shape[-1]), 1, generator=generator).view(probs.shape[:-1])


def load_openvla(cfg: ModelConfig, spec: Dict[str, Any], seed: int) -> nn.Module:
    """An OpenVLA / OpenVLA-OFT checkpoint from the local `cfg.path`, wrapped as an rlinf policy."""
    check_checkpoint_dir(cfg)
    from transformers import AutoModelForImageTextToText, AutoProcessor

    processor = AutoProcessor.from_pretrained(cfg.path, trust_remote_code=True, local_files_only=True)
    vla = AutoModelForImageTextToText.from_pretrained(cfg.path, trust_remote_code=True, local_files_only=True,
                                                      dtype=_DTYPES[cfg.dtype])
    with torch.random.fork_rng():
        torch.manual_seed(seed)
        policy = OpenVLAPolicy(cfg, spec, vla, processor)
    return policy  # the value head and the bin tables stay float32; the VLA runs in actor.model.dtype
