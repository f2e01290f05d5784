"""AgentEnvWorker: the env group of the agent workflow. Each rank plays text / tool episodes
(`rlinf.envs.agent.ToolEnv`) with the language model as the policy, exactly as a simulator env worker
steps ManiSkill with a VLA: the env holds the episode state, runs tools and grades answers; the rollout
group generates the model's turns.

    env.connect(rollout_actors)                         # once, after both groups are up
    trajectories = env.run_episodes(items, greedy, seed)  # items: [(TextSample, group_index), ...]

The hot path does not pass through the controller: a rank asks its rollout rank (rank r -> rollout rank
r mod R) for each batch of turns with a direct Ray call, so the controller issues one command per
collection and receives finished `Trajectory` records. Scheduling (`env.scheduling`): per_trajectory
(an episode's next turn is generated as soon as its tool returns, batched with whichever others are
ready) or lockstep (rlinf.envs.agent.episodes).

Tokens: the prompt is the chat template over the episode's first messages when the tokenizer has one,
else their contents joined by blank lines; model turns stop at the env's stop strings (or EOS); tool
results are encoded with the policy tokenizer and appended as env tokens (characters a char-level
tokenizer does not know are dropped from them).
"""

import logging
from typing import Any, List, Optional, Sequence, Tuple

import ray

from rlinf.config.schema import EnvConfig, ModelConfig
from rlinf.envs.agent import STOP_STRINGS, SYSTEM_PROMPT, ToolEnv
from rlinf.envs.agent.episodes import run_episodes
from rlinf.envs.agent.trajectory import Trajectory
from rlinf.errors import InputError
from rlinf.models.tokenizer import CharTokenizer, chat_ids, load_tokenizer
from rlinf.scheduler import Worker
from rlinf.tools import TOOLS
from rlinf.workers.reward.verifiers import REWARDS

logger = logging.getLogger(__name__)


def validate_agent_env(cfg: EnvConfig) -> None:
    """Tool names and tool options, checked before any worker starts."""
    if not cfg.tools:
        raise InputError("the agent workflow needs at least one tool", key="env.tools")
    unknown = [t for t in cfg.tools if t not in TOOLS]
    if unknown:
        raise InputError(f"unknown tool(s) {unknown}; known: {', '.join(TOOLS.names())}", key="env.tools")
    if "retrieve" in cfg.tools and cfg.corpus is None:
        raise InputError("the retrieve tool needs a corpus file", key="env.corpus")


class AgentEnvWorker(Worker):
    """Text / tool episodes of one rank; see the module docstring."""

    def __init__(self, cfg: EnvConfig, verifier: str, model_cfg: ModelConfig, seed: int):
        super().__init__()
        validate_agent_env(cfg)
        self.cfg, self.seed = cfg, seed
        self.verifier = REWARDS.get(verifier)
        self.tokenizer = load_tokenizer(model_cfg.path, model_cfg.char_vocab)
        self.stop_token_seqs = [self.tokenizer.encode(s) for s in STOP_STRINGS]
        self.tool_options = {"retrieve": {"corpus": cfg.corpus}} if cfg.corpus is not None else {}
        self.rollout: Optional[Any] = None  # the Ray actor of this rank's rollout rank

    def connect(self, rollout_actors: Sequence[Any]) -> int:
        """Pair this rank with rollout rank `rank mod len(rollout_actors)`; returns that rank."""
        index = self.rank % len(rollout_actors)
        self.rollout = rollout_actors[index]
        return index

    # ---- tokens -----------------------------------------------------------------------------------
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

    # ---- episodes ---------------------------------------------------------------------------------
    def run_episodes(self, items: List[Tuple[Any, int]], greedy: bool = False,
                     seed: Optional[int] = None) -> List[Trajectory]:
        """Play one episode per (sample, group_index) to its end; trajectories in `items` order, each
        with `info["version"]`, the oldest weights version that generated one of its turns."""
        if self.rollout is None:
            raise RuntimeError(f"{self.name}: run_episodes before connect()")
        if not items:
            return []
        versions: List[int] = []
        first_call = [True]

        def generate(contexts: List[List[int]]):
            call_seed = seed if first_call[0] else None  # one seeded stream per collection
            first_call[0] = False
            ref = self.rollout._rlinf_execute.remote("generate_turns", (contexts, self.stop_token_seqs),
                                                     {"greedy": greedy, "seed": call_seed})
            out, _, _ = ray.get(ref, timeout=self.wait_timeout_s)
            versions.append(out["version"])
            return out["tokens"], out["logprobs"]

        envs = [self.make_env() for _ in items]
        trajectories = run_episodes(envs, [s for s, _ in items], generate, self.encode, self.decode,
                                    render_prompt=self.render_prompt, group_indices=[g for _, g in items])
        oldest = min(versions)
        for traj in trajectories:
            traj.info["version"] = oldest
        return trajectories
