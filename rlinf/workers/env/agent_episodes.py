"""The policy side of text / tool episodes, without Ray: the policy tokenizer, the `ToolEnv`s, the rendered
prompts and the stop sequences. The agent workflow's env worker (`AgentEnvWorker`, which asks its rollout
rank for the turns) and `python -m rlinf.eval` (which generates in its own process) play episodes through
the same object, so a checkpoint is evaluated on exactly the prompts and tokens it was trained on.

    episodes = AgentEpisodes(cfg.env, cfg.reward.name, cfg.actor.model)
    trajectories = episodes.play(samples, generate, timeout_s=600)   # generate: rlinf.envs.agent.episodes

Tokens: the prompt is the chat template over the episode's first messages when the tokenizer has one,
else their contents joined by blank lines; model turns stop at the env's stop strings (`stop_token_seqs`,
or EOS); tool results are encoded with the policy tokenizer and appended as env tokens (characters a
char-level tokenizer does not know are dropped from them).
"""

import os
from typing import Callable, List, Optional, Sequence

from rlinf.config.schema import EnvConfig, ModelConfig
from rlinf.envs.agent import STOP_STRINGS, SYSTEM_PROMPT, ToolEnv
from rlinf.envs.agent.episodes import Generate, run_episodes
from rlinf.envs.agent.trajectory import Trajectory
from rlinf.errors import InputError
from rlinf.models.tokenizer import CharTokenizer, chat_ids, load_tokenizer
from rlinf.tools import TOOLS
from rlinf.workers.reward.verifiers import REWARDS


def validate_agent_env(cfg: EnvConfig) -> None:
    """Tool names and tool options, checked before any worker starts."""
    if not cfg.tools:
        raise InputError("the agent workflow needs at least one tool", key="env.tools")
    unknown = [t for t in cfg.tools if t not in TOOLS]
    if unknown:
        raise InputError(f"unknown tool(s) {unknown}; known: {', '.join(TOOLS.names())}", key="env.tools")
    if "retrieve" in cfg.tools and cfg.corpus is None:
        raise InputError("the retrieve tool needs a corpus file", key="env.corpus")
    if cfg.corpus is not None and not os.path.isfile(cfg.corpus):
        raise InputError(f"corpus file not found: {cfg.corpus} (absolute, or relative to the working directory)",
                         key="env.corpus")


class AgentEpisodes:
    """Envs, tokens and prompts of agent episodes for `env` config `cfg`, graded by verifier `verifier`
    (`reward.name`), with the tokenizer of `model_cfg`; see the module docstring."""

    def __init__(self, cfg: EnvConfig, verifier: str, model_cfg: ModelConfig):
        validate_agent_env(cfg)
        self.cfg = cfg
        self.verifier: Callable[[str, str], float] = REWARDS.get(verifier)
        self.tokenizer = load_tokenizer(model_cfg.path, model_cfg.char_vocab)
        self.stop_token_seqs = [self.tokenizer.encode(s) for s in STOP_STRINGS]
        self.tool_options = {"retrieve": {"corpus": cfg.corpus}} if cfg.corpus is not None else {}

    def encode(self, text: str) -> List[int]:
        if isinstance(self.tokenizer, CharTokenizer):
            return self.tokenizer.encode(self.tokenizer.keep_known(text))
        return list(self.tokenizer.encode(text, add_special_tokens=False))

    def decode(self, ids: List[int]) -> str:
        return self.tokenizer.decode(ids, skip_special_tokens=True)

    def render_prompt(self, messages) -> List[int]:
        if getattr(self.tokenizer, "chat_template", None):
            return chat_ids(self.tokenizer.apply_chat_template(messages, add_generation_prompt=True, tokenize=True,
                                                               return_dict=False))
        return self.encode("\n\n".join(m["content"] for m in messages))

    def make_env(self) -> ToolEnv:
        return ToolEnv(verifier=self.verifier, tools=self.cfg.tools, max_turns=self.cfg.max_turns,
                       max_total_tokens=self.cfg.max_total_tokens, count_tokens=lambda s: len(self.encode(s)),
                       malformed_call_reward=self.cfg.malformed_call_reward,
                       system_prompt=SYSTEM_PROMPT if self.cfg.system_prompt else None,
                       tool_options=self.tool_options)

    def play(self, samples: Sequence, generate: Generate, group_indices: Optional[Sequence[int]] = None, *,
             timeout_s: float) -> List[Trajectory]:
        """One episode per sample to its end (a fresh env each), with `env.scheduling` and `env.tool_workers`;
        `timeout_s` bounds one env step. Trajectories in `samples` order."""
        envs = [self.make_env() for _ in samples]
        return run_episodes(envs, list(samples), generate, self.encode, self.decode, render_prompt=self.render_prompt,
                            group_indices=group_indices, schedule=self.cfg.scheduling,
                            tool_workers=self.cfg.tool_workers, timeout_s=timeout_s)
