"""Agent workflow: RL of a language model that acts in multi-turn text / tool environments.

The reasoning workflow with its reward group replaced by an env group (`AgentEnvWorker`, placed at
`cluster.component_placement.env` like a simulator's): the env ranks play the episodes with direct calls
to their rollout ranks and grade them with the verifier `reward.name`; the controller receives finished
`Trajectory` records, turns them into training rows (`rlinf.workflows.multiturn`: only model tokens carry
behaviour log-probs and loss) and trains with the registered estimators and losses, unchanged. Weight
sync, reference, critic, KL, checkpoints: inherited.

Metrics per step: `agent/turns` (model turns per episode), `agent/tool_calls` (calls per episode),
`agent/tool_call_rate` (episodes with at least one call), `agent/truncated`, `agent/tool_errors` (failed
or malformed calls per episode), plus the reasoning ones (`reward/accuracy` = episodes graded >= 1).
Evaluation (greedy, held-out prompts): accuracy, reward, turns, tool_call_rate, and the first
`env.transcripts` episodes written to `<run>/transcripts/eval_step_<N>.{jsonl,md}` (N: updates done).
"""

import logging
import time
from pathlib import Path
from typing import Dict, List, Optional, Tuple

import torch

from rlinf.config import RLinfConfig
from rlinf.envs.agent.trajectory import Trajectory
from rlinf.envs.text import TextSample
from rlinf.errors import InputError
from rlinf.placement import Placement
from rlinf.scheduler import Cluster, WorkerGroup
from rlinf.workers.env.agent_worker import AgentEnvWorker, validate_agent_env
from rlinf.workflows.batching import split_even
from rlinf.workflows.multiturn import build_multiturn_rows
from rlinf.workflows.reasoning import ReasoningWorkflow
from rlinf.workflows.transcripts import episode_record, write_transcripts

logger = logging.getLogger(__name__)


def _validate_agent(cfg: RLinfConfig) -> None:
    validate_agent_env(cfg.env)
    if cfg.reward.type != "rule":
        raise InputError("the agent workflow grades answers with a verifier (reward.type=rule)", key="reward.type")
    if cfg.algorithm.dynamic_sampling:
        raise InputError("dynamic sampling is not available in the agent workflow", key="algorithm.dynamic_sampling")
    if cfg.runner.schedule == "async" or cfg.algorithm.max_staleness > 0:
        raise InputError("the agent workflow runs the sync schedule only (max_staleness 0)", key="runner.schedule")


def episode_stats(trajectories: List[Trajectory]) -> Dict[str, float]:
    """Means over episodes of the agent metrics (module docstring)."""
    n = len(trajectories)
    return {
        "turns": sum(t.info["turns"] for t in trajectories) / n,
        "tool_calls": sum(t.info["tool_calls"] for t in trajectories) / n,
        "tool_call_rate": sum(t.info["tool_calls"] > 0 for t in trajectories) / n,
        "truncated": sum(bool(t.info.get("truncated")) for t in trajectories) / n,
        "tool_errors": sum(t.info["tool_errors"] for t in trajectories) / n,
    }


class AgentWorkflow(ReasoningWorkflow):
    # Env ranks call the rollout ranks directly, not behind the controller's calls: every load is waited for.
    settle_weight_loads = True
    collects_ahead = False  # the env ranks issue the rollout calls, not the controller

    def __init__(self, cfg: RLinfConfig, placement: Placement, phase):
        _validate_agent(cfg)
        super().__init__(cfg, placement, phase)
        self.run_path: Optional[Path] = None

    def launch_scoring_group(self, cluster: Cluster) -> None:
        self.env = WorkerGroup(cluster, AgentEnvWorker, "env", self.placement.devices["env"],
                               args=(self.cfg.env, self.cfg.reward.name, self.cfg.actor.model, self.cfg.runner.seed),
                               init_dist=False, wait_ready=False)
        self.reward_has_state = False
        self.reward = None
        self.groups.append(self.env)

    def start(self, cluster: Cluster) -> None:
        super().start(cluster)
        self.env.call("connect", self.rollout.actors).wait()

    # ---- episodes ---------------------------------------------------------------------------------
    def play(self, samples: List[TextSample], n: int, greedy: bool, seed: int) -> Tuple[List[Trajectory], float]:
        """n episodes per sample over the env ranks; trajectories in (sample, repeat) order, and seconds."""
        items = [(s, g) for g, s in enumerate(samples) for _ in range(n)]
        t0 = time.time()
        parts = self.env.scatter("run_episodes", split_even(items, self.env.size), greedy=greedy, seed=seed).wait()
        return [t for part in parts for t in part], time.time() - t0

    def collect(self, step: int) -> Dict:
        algo = self.cfg.algorithm
        trajectories, seconds = self.play(self.prompts_for_step(step), algo.group_size, False,
                                          self.cfg.runner.seed + step)
        rows = build_multiturn_rows(trajectories, self.tokenizer.pad_token_id)
        mask = rows.batch["response_mask"]
        return {"batch": rows.batch, "token_rewards": rows.token_rewards, "scores": rows.scores,
                "group_index": rows.group_index, "mask": mask, "texts": [None] * len(trajectories),
                "versions": torch.tensor([t.info["version"] for t in trajectories]),
                "timing": {"rollout": seconds, "reward": 0.0}, "agent": episode_stats(trajectories)}

    def training_batch(self, rollout: Dict) -> Dict[str, torch.Tensor]:
        return rollout["batch"]

    def train(self, rollout: Dict) -> Dict[str, float]:
        metrics = super().train(rollout)
        metrics.update({f"agent/{k}": v for k, v in rollout["agent"].items()})
        return metrics

    def evaluate(self) -> Dict[str, float]:
        """Greedy episodes on the held-out prompts (module docstring)."""
        self.sync_weights()
        with self.phase("evaluate"):
            trajectories, _ = self.play(self.task.eval, 1, True, 0)
        scores = torch.tensor([t.total_reward for t in trajectories])
        result = {"accuracy": float((scores >= 1.0).float().mean()), "reward": float(scores.mean()),
                  "num_samples": len(trajectories)}
        stats = episode_stats(trajectories)
        result.update(turns=stats["turns"], tool_call_rate=stats["tool_call_rate"])
        if self.cfg.env.transcripts and self.run_path is not None:  # named by step: a resumed run adds files
            records = [episode_record(t, s, self.tokenizer) for t, s in
                       zip(trajectories[:self.cfg.env.transcripts], self.task.eval)]
            write_transcripts(records, self.run_path / "transcripts", f"eval_step_{self.version}")
        return result

    def attach_run_dir(self, path: Path) -> None:
        """The runner hands over the run directory once it exists (after start; transcripts go there)."""
        self.run_path = Path(path)
