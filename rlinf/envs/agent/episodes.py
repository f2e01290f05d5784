"""The multi-turn episode driver: the piece an env worker group calls to roll out a batch of text / tool
episodes with the policy, producing `Trajectory` records (`rlinf.workflows.multiturn.build_multiturn_rows`
turns them into training rows). The Ray env-group wiring and the workflow registration are not here.

    trajectories = run_episodes(envs, samples, generate, encode, decode)

- `envs[i]` (a `ToolEnv`) plays `samples[i]`; `group_indices[i]` groups samples of one prompt.
- `generate(contexts) -> (tokens, logprobs)`: one model turn for each context (a list of token ids), its
  behaviour log-probs one per token; it should stop at `STOP_STRINGS` or EOS (the transformers engine's
  `RolloutWorker.generate` / `sample`, vLLM with stop strings, or a stub in tests). Whatever follows the
  first stop string is cut here (tokens and log-probs alike), so an engine without stop strings works too.
- `encode(text) -> ids` / `decode(ids) -> text`: the policy tokenizer (no special tokens added).
- `render_prompt(messages) -> ids`: the initial context, e.g.
  `lambda m: tok.apply_chat_template(m, add_generation_prompt=True)`; the default encodes the message
  contents joined by blank lines.

Schedule: lock-step turns (every unfinished episode generates its next turn in one `generate` call, then
every env steps). Rewards: the verifier's grade on an answer turn is the trajectory's outcome reward;
any other step reward (a malformed-call penalty) is the per-turn reward of that model segment. The
observation of a non-final step is appended as an env segment; a finished episode appends nothing.
"""

from __future__ import annotations

import logging
from typing import Callable, List, Optional, Sequence, Tuple

from rlinf.envs.agent.tool_env import STOP_STRINGS, Messages, ToolEnv
from rlinf.envs.agent.trajectory import Segment, Trajectory

logger = logging.getLogger(__name__)

Generate = Callable[[List[List[int]]], Tuple[List[List[int]], List[List[float]]]]
Encode = Callable[[str], List[int]]
Decode = Callable[[List[int]], str]


def cut_at_stop(tokens: List[int], logprobs: List[float], decode: Decode,
                stops: Sequence[str] = STOP_STRINGS) -> Tuple[List[int], List[float]]:
    """The shortest prefix of `tokens` whose text contains a stop string (all tokens if none does)."""
    if not any(s in decode(tokens) for s in stops):
        return list(tokens), list(logprobs)
    for k in range(1, len(tokens) + 1):
        if any(s in decode(tokens[:k]) for s in stops):
            return list(tokens[:k]), list(logprobs[:k])
    return list(tokens), list(logprobs)


def run_episodes(envs: Sequence[ToolEnv], samples: Sequence, generate: Generate, encode: Encode, decode: Decode,
                 render_prompt: Optional[Callable[[Messages], List[int]]] = None,
                 group_indices: Optional[Sequence[int]] = None) -> List[Trajectory]:
    """Play one episode per (env, sample) to its end; returns one Trajectory each (module docstring)."""
    if len(envs) != len(samples):
        raise ValueError(f"{len(envs)} envs for {len(samples)} samples")
    render = render_prompt or (lambda messages: encode("\n\n".join(m["content"] for m in messages)))
    groups = list(group_indices) if group_indices is not None else list(range(len(samples)))
    trajectories = []
    for env, sample, group in zip(envs, samples, groups):
        prompt_ids = list(render(env.reset(sample)))
        trajectories.append(Trajectory(prompt_ids, [], 0.0, group, {"turns": 0, "tool_calls": 0}))
    contexts = [list(t.prompt_ids) for t in trajectories]
    active = list(range(len(envs)))
    while active:
        tokens, logprobs = generate([contexts[i] for i in active])
        if len(tokens) != len(active) or len(logprobs) != len(active):
            raise ValueError(f"generate returned {len(tokens)} turns for {len(active)} contexts")
        active = [i for i, turn_ids, turn_logp in zip(active, tokens, logprobs)
                  if not _play_turn(envs[i], trajectories[i], contexts[i], turn_ids, turn_logp, encode, decode)]
    return trajectories


def _play_turn(env: ToolEnv, traj: Trajectory, context: List[int], turn_ids: List[int], turn_logp: List[float],
               encode: Encode, decode: Decode) -> bool:
    """Step `env` on one generated turn, extending `traj` and `context` in place; True when the episode ended."""
    turn_ids, turn_logp = cut_at_stop(turn_ids, turn_logp, decode)
    observation, reward, done, info = env.step(decode(turn_ids))
    outcome = reward if info.get("reason") == "answer" else 0.0
    traj.segments.append(Segment.model(turn_ids, turn_logp, reward=reward - outcome))
    context.extend(turn_ids)
    traj.info["turns"] = info["turn"]
    traj.info["tool_calls"] += int(info["kind"] in ("tool", "malformed"))
    if done:
        traj.reward = outcome
        traj.info.update(reason=info["reason"], truncated=info["truncated"])
        return True
    obs_ids = list(encode(observation))
    traj.segments.append(Segment.env(obs_ids))
    context.extend(obs_ids)
    return False
