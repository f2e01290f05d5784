"""A tiny calculator-agent policy for tests: weights that already write well-formed calculator calls."""

from pathlib import Path

import torch

from rlinf.envs.text import load_task
from rlinf.envs.text.calc import answer_text, tool_call_text
from rlinf.models.causal_lm import build_causal_lm
from rlinf.tools import call as call_tool
from rlinf.workers.env.agent_episodes import AgentEpisodes


def format_trained_actor(cfg, path: Path) -> Path:
    """120 steps of plain language modelling on worked calculator episodes of training prompts: the model
    writes well-formed calculator calls (operands mostly wrong) and answers. Saved as actor shards."""
    import torch.distributed.checkpoint as dcp

    episodes = AgentEpisodes(cfg.env, cfg.reward.name, cfg.actor.model)
    env, texts = episodes.make_env(), []
    for s in load_task(cfg.data).train[:256]:
        expression = s.prompt.rstrip("=")
        result = env.wrap_observation(call_tool("calculator", expression).observation())
        text = s.prompt + tool_call_text(expression) + result + answer_text(s.answer)
        texts.append(episodes.encode(text) + [episodes.tokenizer.eos_token_id])
    model = build_causal_lm(cfg.actor.model, len(episodes.tokenizer), seed=0)
    opt = torch.optim.AdamW(model.parameters(), lr=1e-2)
    gen = torch.Generator().manual_seed(0)
    for _ in range(120):
        batch = [texts[i] for i in torch.randint(len(texts), (32,), generator=gen).tolist()]
        ids = torch.zeros(len(batch), max(map(len, batch)), dtype=torch.long)
        for j, t in enumerate(batch):
            ids[j, :len(t)] = torch.tensor(t)
        attn = (ids != 0).long()
        loss = model(input_ids=ids, attention_mask=attn, labels=ids.masked_fill(attn == 0, -100)).loss
        opt.zero_grad()
        loss.backward()
        opt.step()
    dcp.save({"model": model.state_dict()}, checkpoint_id=str(path), no_dist=True)
    return path
