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

Envs, tokens and prompts come from `rlinf.workers.env.agent_episodes.AgentEpisodes` (shared with
`python -m rlinf.eval`, which plays the same episodes in-process).
"""

import logging
from typing import Any, List, Optional, Sequence, Tuple

from rlinf.config.schema import EnvConfig, ModelConfig
from rlinf.envs.agent.trajectory import Trajectory
from rlinf.scheduler import Worker
from rlinf.workers.env.agent_episodes import AgentEpisodes, validate_agent_env

__all__ = ["AgentEnvWorker", "validate_agent_env"]

logger = logging.getLogger(__name__)


class AgentEnvWorker(Worker):
    """Text / tool episodes of one rank; see the module docstring."""

    def __init__(self, cfg: EnvConfig, verifier: str, model_cfg: ModelConfig, seed: int):
        super().__init__()
        self.episodes = AgentEpisodes(cfg, verifier, model_cfg)
        self.cfg, self.seed = cfg, seed
        self.tokenizer = self.episodes.tokenizer
        self.rollout: Optional[Any] = None  # the Ray actor of this rank's rollout rank

    def connect(self, rollout_actors: Sequence[Any]) -> int:
        """Pair this rank with rollout rank `rank mod len(rollout_actors)`; returns that rank."""
        self.rollout = self.paired_peer(list(rollout_actors))
        return self.rank % len(rollout_actors)

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
            out = self.call_peer(self.rollout, "generate_turns", contexts, self.episodes.stop_token_seqs,
                                 greedy=greedy, seed=call_seed)
            versions.append(out["version"])
            return out["tokens"], out["logprobs"]

        trajectories = self.episodes.play([s for s, _ in items], generate, [g for _, g in items],
                                          timeout_s=self.wait_timeout_s)
        oldest = min(versions)
        for traj in trajectories:
            traj.info["version"] = oldest
        return trajectories
