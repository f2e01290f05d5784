"""RewardModelWorker: scores (prompt, response, answer) triples with a learned reward model
(`reward.type: model`), optionally mixed with rule verifiers.

- The model is a one-label sequence classifier loaded from `reward.model.path` with its OWN tokenizer
  (`rlinf.models.reward_model.load_reward_model`; a generic fast tokenizer is read as saved, see
  `rlinf.models.tokenizer.tokenizer_as_saved`): it reads the decoded text, so the policy and the reward model need not share
  a vocabulary.
- Input: prompt + response through the reward model's chat template (a user and an assistant message)
  when its tokenizer has one, else the concatenated text followed by EOS (what TRL's RewardTrainer trains
  on: `prompt + chosen + eos`); longer than `reward.model.max_length` tokens keeps the end. See
  `rlinf.models.tokenizer.conversation_ids`.
- Batching: micro-batches of `reward.model.micro_batch_size`, right-padded with the model's
  `config.pad_token_id`, so transformers' own pooling (the head's output at the last non-pad token) reads
  the same position as an unpadded forward.
- `reward.model.normalize: running`: Welford mean / std over every training score seen so far (the batch
  is added first, then normalised). With several ranks the per-shard statistics are all-gathered and
  merged in rank order, so every rank holds the same state; rank 0 writes it into checkpoints
  (`<ckpt>/reward/reward_state.json`) and a resumed run continues from it. Evaluation scores
  (`update_stats=False`) are normalised but not added.
- `reward.weights`: reward = sum of weight x source over {model, <verifier name>...}; empty = the model
  score alone.
- Placement: the group is replicated (every rank holds the whole model and scores its shard); the reward
  model is not FSDP-sharded (it is inference only; shard it when one replica no longer fits a device).
"""

import json
import math
from pathlib import Path
from typing import Callable, Dict, List, Optional, Sequence, Tuple

import torch
import torch.distributed as dist

from rlinf.config.schema import RewardConfig
from rlinf.errors import InputError
from rlinf.models.reward_model import load_reward_model
from rlinf.models.tokenizer import conversation_ids
from rlinf.scheduler import Worker
from rlinf.workers.reward.worker import ScoresGenerations
from rlinf.workers.reward.verifiers import REWARDS
from rlinf.workers.reward.worker import MODEL, check_weights

STATE_FILE = "reward_state.json"


def resolve_weights(weights: Dict[str, float]) -> Tuple[float, List[Tuple[str, Callable, float]]]:
    """(weight of the model score, [(verifier name, fn, weight)]) from `reward.weights`; empty: (1.0, [])."""
    if not weights:
        return 1.0, []
    check_weights(weights)
    verifiers = [(n, REWARDS.get(n), float(w)) for n, w in sorted(weights.items()) if n != MODEL]
    return float(weights.get(MODEL, 0.0)), verifiers


def pad_right(seqs: Sequence[List[int]], pad_id: int) -> Tuple[torch.Tensor, torch.Tensor]:
    """(input_ids, attention_mask) [B, max len], right-padded with `pad_id`."""
    width = max(len(s) for s in seqs)
    ids = torch.full((len(seqs), width), pad_id, dtype=torch.long)
    mask = torch.zeros((len(seqs), width), dtype=torch.long)
    for i, s in enumerate(seqs):
        ids[i, :len(s)] = torch.tensor(s, dtype=torch.long)
        mask[i, :len(s)] = 1
    return ids, mask


class RunningNorm:
    """Welford / Chan running mean and variance (population) of every value added, in float64."""

    EPS = 1e-6  # the std is floored here: a constant stream normalises to 0, not to inf

    def __init__(self) -> None:
        self.count, self.mean, self.m2 = 0, 0.0, 0.0

    @staticmethod
    def moments(values: torch.Tensor) -> Tuple[int, float, float]:
        """(n, mean, sum of squared deviations) of a 1-d tensor."""
        v = values.double()
        if v.numel() == 0:
            return 0, 0.0, 0.0
        mean = float(v.mean())
        return v.numel(), mean, float(((v - mean) ** 2).sum())

    def merge(self, n: int, mean: float, m2: float) -> None:
        if n == 0:
            return
        total = self.count + n
        delta = mean - self.mean
        self.mean += delta * n / total
        self.m2 += m2 + delta * delta * self.count * n / total
        self.count = total

    @property
    def std(self) -> float:
        return math.sqrt(self.m2 / self.count) if self.count else 1.0

    def normalize(self, values: torch.Tensor) -> torch.Tensor:
        return (values.double() - self.mean) / max(self.std, self.EPS)

    def state_dict(self) -> dict:
        return {"count": self.count, "mean": self.mean, "m2": self.m2}

    def load_state_dict(self, state: dict) -> None:
        self.count, self.mean, self.m2 = int(state["count"]), float(state["mean"]), float(state["m2"])


class RewardModelWorker(ScoresGenerations, Worker):
    # Running normalisation merges statistics over the group's ranks: the group needs a process group.
    INIT_DIST = True

    def __init__(self, cfg: RewardConfig):
        super().__init__()
        self.cfg = cfg
        self.model_weight, self.verifiers = resolve_weights(cfg.weights)
        model, tokenizer = load_reward_model(cfg.model.path)
        self.tokenizer = tokenizer
        self.model = model.to(self.device)
        self.pad_id = int(self.model.config.pad_token_id)
        self.norm = RunningNorm() if cfg.model.normalize == "running" else None

    @staticmethod
    def has_state(cfg: RewardConfig) -> bool:
        """Whether the group keeps state a resumed run needs (the running normaliser)."""
        return cfg.model.normalize == "running"

    # ---- scoring ----------------------------------------------------------------------------------
    @torch.no_grad()
    def model_scores(self, prompts: Sequence[str], responses: Sequence[str]) -> torch.Tensor:
        """[N] raw reward-model scores (float32, CPU), micro-batched."""
        try:
            seqs = [conversation_ids(self.tokenizer, p, r, self.cfg.model.max_length)
                    for p, r in zip(prompts, responses)]
        except ValueError as e:  # a character tokenizer meets a character outside its alphabet
            raise InputError(f"the reward model's tokenizer cannot encode a prompt or response: {e}",
                             key="reward.model.path") from None
        out = []
        mbs = self.cfg.model.micro_batch_size
        for i in range(0, len(seqs), mbs):
            ids, mask = pad_right(seqs[i:i + mbs], self.pad_id)
            logits = self.model(input_ids=ids.to(self.device), attention_mask=mask.to(self.device)).logits
            out.append(logits[:, 0].float().cpu())
        return torch.cat(out) if out else torch.zeros(0)

    def raw_scores(self, pairs: Sequence[tuple]) -> torch.Tensor:
        """[(prompt_text, response_text)] -> [N] raw reward-model scores (no normalisation, no verifiers)."""
        return self.model_scores([p for p, _ in pairs], [r for _, r in pairs])

    def _update_norm(self, raw: torch.Tensor) -> None:
        """Add this rank's shard to the running statistics, merged over all ranks in rank order."""
        n, mean, m2 = RunningNorm.moments(raw)
        if dist.is_initialized() and dist.get_world_size() > 1:
            mine = torch.tensor([n, mean, m2], dtype=torch.float64)
            parts = [torch.zeros(3, dtype=torch.float64) for _ in range(dist.get_world_size())]
            dist.all_gather(parts, mine)
            for part in parts:
                self.norm.merge(int(part[0]), float(part[1]), float(part[2]))
        else:
            self.norm.merge(n, mean, m2)

    def score(self, items: Sequence[tuple], update_stats: bool = True) -> List[float]:
        """[(prompt_text, response_text, answer)] -> rewards: the weighted sum of the (normalised) reward-model
        score and the verifiers named in reward.weights. `update_stats=False` (evaluation): normalise with
        the statistics so far without adding these scores. Every rank must take part (collectives)."""
        items = list(items)
        model_part = torch.zeros(len(items), dtype=torch.float64)
        if self.model_weight != 0.0 or self.norm is not None:
            raw = self.model_scores([p for p, _, _ in items], [r for _, r, _ in items])
            if self.norm is not None:
                if update_stats:
                    self._update_norm(raw)
                model_part = self.norm.normalize(raw)
            else:
                model_part = raw.double()
        rewards = self.model_weight * model_part
        for name, fn, weight in self.verifiers:
            if any(a is None for _, _, a in items):
                raise InputError(f"verifier '{name}' needs a reference answer per prompt (data.answer_key)",
                                 key="reward.weights")
            rewards += weight * torch.tensor([fn(r, a) for _, r, a in items], dtype=torch.float64)
        return [float(x) for x in rewards]

    # ---- checkpoints (the normaliser; every rank holds the same state, rank 0 writes it) -------------
    def save_checkpoint(self, path: str, extra: Optional[dict] = None) -> str:
        Path(path).mkdir(parents=True, exist_ok=True)
        if self.rank == 0:
            state = {"normalizer": self.norm.state_dict() if self.norm is not None else None, "extra": extra}
            (Path(path) / STATE_FILE).write_text(json.dumps(state))
        return path

    def checkpoint_mismatch(self, path: str) -> Optional[str]:
        f = Path(path) / STATE_FILE
        if not f.is_file():
            return f"{f} is missing"
        saved = json.loads(f.read_text())["normalizer"]
        if (saved is None) != (self.norm is None):
            return (f"{f}: the checkpoint's reward normaliser ({'none' if saved is None else 'running'}) differs "
                    f"from reward.model.normalize={self.cfg.model.normalize}")
        return None

    def load_checkpoint(self, path: str) -> dict:
        state = json.loads((Path(path) / STATE_FILE).read_text())
        if self.norm is not None:
            self.norm.load_state_dict(state["normalizer"])
        return state["extra"] or {}

    def normalizer_state(self) -> Optional[dict]:
        return self.norm.state_dict() if self.norm is not None else None
