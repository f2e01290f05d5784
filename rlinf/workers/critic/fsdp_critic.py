"""CriticWorker: a causal-LM backbone with a scalar value head, trained with FSDP2 on clipped value loss.

values[:, t] estimates the return from the state *before* response token t, read from the hidden
state at the position that predicts that token (the same alignment as the actor's log-probs).

`critic.init_from_reward_model: true` starts the critic from the reward model at reward.model.path (the
usual RLHF recipe): its transformer is the backbone and its one-label score head the value head, so the
initial value at a position is the reward model's score of the prefix ending there. The critic reads
the policy's token ids, so the reward model's tokenizer must be the policy's (`check_critic_init`).
"""

import time
from typing import Dict, Optional

import torch

from rlinf.algorithms import value_loss
from rlinf.config.schema import AlgorithmConfig, CriticConfig
from rlinf.errors import InputError
from rlinf.models.causal_lm import build_causal_lm
from rlinf.workers.fsdp_worker import FSDPTrainWorker, to_device
from rlinf.workers.packing import is_packed, merge_rows, packed_inputs, unpack


KEY = "critic.init_from_reward_model"


def _vocab(tok) -> object:
    """What identifies a tokenizer's vocabulary: the char tokenizer's alphabet, else the token -> id map."""
    chars = getattr(tok, "chars", None)
    return ("chars", chars) if chars is not None else ("vocab", tok.get_vocab())


def check_same_vocab(policy_tok, reward_tok, reward_path: str) -> None:
    """The reward model reads the policy's token ids as its own: same size and the same tokens."""
    if len(policy_tok) != len(reward_tok):
        raise InputError(f"the reward model at {reward_path} has a vocabulary of {len(reward_tok)} tokens, the "
                         f"policy {len(policy_tok)}; the critic reads policy token ids, so they must match", key=KEY)
    a, b = _vocab(policy_tok), _vocab(reward_tok)
    if a != b:
        what = "alphabets" if a[0] == b[0] == "chars" else "token vocabularies"
        raise InputError(f"the reward model at {reward_path} and the policy have different {what}; the critic "
                         "reads policy token ids, so the tokenizers must be the same", key=KEY)


def check_critic_init(cfg: CriticConfig, reward_path: Optional[str], policy_tok) -> None:
    """With `critic.init_from_reward_model`: reward.model.path is a reward model whose tokenizer is the
    policy's (reads the config and tokenizer only)."""
    if not cfg.init_from_reward_model:
        return
    from rlinf.models.reward_model import reward_model_problem
    from rlinf.models.tokenizer import load_tokenizer

    problem = reward_model_problem(reward_path)
    if problem is not None:
        raise InputError(f"reward.model.path {problem}", key=KEY)
    check_same_vocab(policy_tok, load_tokenizer(reward_path), reward_path)


class ValueModel(torch.nn.Module):
    """Backbone (the LM minus its head) + Linear(hidden, 1), zero-initialised; or, `from_reward_model`, a
    sequence classifier's backbone and its one-label score head (bias 0: the score head has none)."""

    def __init__(self, lm: torch.nn.Module, head: Optional[torch.nn.Linear] = None):
        super().__init__()
        self.model = lm.model
        self.value_head = torch.nn.Linear(lm.config.hidden_size, 1)
        torch.nn.init.zeros_(self.value_head.bias)
        if head is None:
            torch.nn.init.zeros_(self.value_head.weight)
        else:
            with torch.no_grad():
                self.value_head.weight.copy_(head.weight)
                if head.bias is not None:
                    self.value_head.bias.copy_(head.bias)

    @classmethod
    def from_reward_model(cls, rm: torch.nn.Module) -> "ValueModel":
        """The reward model's transformer and its `score` head (one label) as the value model."""
        head = getattr(rm, "score", None)
        if not isinstance(head, torch.nn.Linear) or head.out_features != 1 or not hasattr(rm, "model"):
            raise InputError(f"{type(rm).__name__} has no one-label `score` head over a `model` transformer "
                             "(Llama / Qwen2 / Mistral-style sequence classifiers have)", key=KEY)
        return cls(rm, head)

    def forward(self, input_ids, attention_mask, position_ids, **attention_kwargs):
        """`attention_kwargs`: a packed batch's flash varlen boundaries (`rlinf.workers.packing`)."""
        hidden = self.model(input_ids=input_ids, attention_mask=attention_mask, position_ids=position_ids,
                            use_cache=False, **attention_kwargs).last_hidden_state
        return self.value_head(hidden).sum(-1)  # [B, T]; a reduction, not a view (FSDP2 hooks need that)


class CriticWorker(FSDPTrainWorker):
    def __init__(self, cfg: CriticConfig, algo: AlgorithmConfig, vocab_size: int, seed: int,
                 reward_model_path: Optional[str] = None):
        super().__init__()
        self.cfg, self.algo = cfg, algo
        if cfg.init_from_reward_model:
            from rlinf.models.reward_model import load_reward_model

            rm, tok = load_reward_model(reward_model_path)
            if len(tok) != vocab_size:  # the controller compared the tokenizers (check_critic_init)
                raise InputError(f"reward model vocabulary {len(tok)} != policy vocabulary {vocab_size}", key=KEY)
            self.model = ValueModel.from_reward_model(rm.requires_grad_(True).train())
        else:
            self.model = ValueModel(build_causal_lm(cfg.model, vocab_size, seed=seed + 1))

    def setup(self) -> int:
        return self.shard_and_build_optimizer(self.cfg.lr, 0.0, self.cfg.fsdp_gather_once)

    def _values(self, mb: Dict[str, torch.Tensor], T: int) -> torch.Tensor:
        """[r, T] values at the positions predicting the response tokens; a packed micro-batch's are
        read at its pack_src positions and unpacked (0 on padding columns)."""
        if is_packed(mb):
            return unpack(self.model(**packed_inputs(self.model, mb))[0, mb["pack_src"]], mb)
        return self.model(mb["input_ids"], mb["attention_mask"], mb["position_ids"])[:, -T - 1:-1]

    def _micro_batches(self, batch: Dict[str, torch.Tensor]):
        return self.split_micro_batches(batch, self.cfg.micro_batch_size, self.cfg.max_tokens_per_micro_batch)

    @torch.no_grad()
    def compute_values(self, batch: Dict[str, torch.Tensor]) -> torch.Tensor:
        """[N, T] value estimates for the response positions (0 on padding)."""
        batch = to_device(batch, self.device)
        T = batch["response_mask"].shape[1]
        self.model.eval()
        mbs = self._micro_batches(batch)
        values = merge_rows([self._values(mb, T) for mb in mbs], mbs)
        return (values * batch["response_mask"]).cpu()

    def _micro_step(self, mb: Dict[str, torch.Tensor], T: int, denominator: float) -> Dict[str, float]:
        loss, metrics = value_loss(self._values(mb, T), mb["values"], mb["returns"], mb["response_mask"],
                                   clip=self.algo.value_clip, loss_agg=self.algo.loss_agg, denominator=denominator)
        loss.backward()
        return {"critic/vf_loss": float(loss.detach()), **{f"critic/{k}": float(v) for k, v in metrics.items()}}

    def update(self, batch: Dict[str, torch.Tensor]) -> Dict[str, float]:
        t0 = time.time()
        batch = to_device(batch, self.device)
        T = batch["response_mask"].shape[1]
        denominator = self.group_denominator(batch["response_mask"], self.algo.loss_agg)
        out = self.train_epochs(batch, self.cfg.micro_batch_size, self.algo.update_epochs, self.cfg.grad_clip,
                                lambda mb: self._micro_step(mb, T, denominator),
                                max_tokens=self.cfg.max_tokens_per_micro_batch, summed=("critic/vf_loss",))
        out["critic/grad_norm"] = out.pop("grad_norm")
        out["time/critic_update_s"] = time.time() - t0
        return self.group_mean(out)
