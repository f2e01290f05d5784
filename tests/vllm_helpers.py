"""Shared by the vLLM engine tests (tests/integration/test_vllm_rollout.py on CPU, tests/gpu/test_vllm_gpu.py):
a tiny model published as a weight reference, and teacher-forced log-probs of sampled responses."""

import ray
import torch

from rlinf.config import ModelConfig
from rlinf.models.causal_lm import build_causal_lm


def peaked_causal_lm(model_cfg: ModelConfig, vocab: int, seed: int, std: float):
    """A tiny LM whose matrices are redrawn with a larger `std` than HF's init (seeded), so its next-token
    distributions are peaked: two seeds differ visibly and top-p cuts into a small set."""
    model = build_causal_lm(model_cfg, vocab, seed=seed)
    gen = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for p in model.parameters():
            if p.dim() == 2:
                p.normal_(0.0, std, generator=gen)
    return model.eval()


def publish(model_cfg: ModelConfig, vocab: int, seed: int):
    """`peaked_causal_lm` (std 0.2); returns it and [ref of its state] as the rollout's `load_weights` takes it."""
    model = peaked_causal_lm(model_cfg, vocab, seed, 0.2)
    state = {k: v.detach().numpy() for k, v in model.state_dict().items() if k != "lm_head.weight"}
    return model.eval(), [ray.put(state)]


def teacher_forced(model, prompts, out, temperature: float) -> torch.Tensor:
    """log p(response token | prefix) under softmax(logits / temperature), per prompt, on the host, no KV cache."""
    rows = []
    for prompt, resp, mask in zip(prompts, out["responses"], out["mask"]):
        n = int(mask.sum())
        ids = torch.tensor(prompt + resp[:n].tolist())[None]
        with torch.no_grad():
            logits = model(input_ids=ids).logits[0, len(prompt) - 1:-1].float()
        logp = torch.log_softmax(logits / temperature, -1).gather(-1, resp[:n, None]).squeeze(-1)
        rows.append(torch.nn.functional.pad(logp, (0, resp.shape[0] - n)))
    return torch.stack(rows)
