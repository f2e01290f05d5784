"""Dataflows, one module each, chosen by config through this registry (run.py picks; the runner knows a
workflow only by its interface: start / collect / train / evaluate / checkpoints).

This module stays light (no torch, no Ray): run.py uses `components_for` to build the placement and
`--dry-run` before anything heavy is imported; `make_workflow` imports the chosen module only.
"""

import importlib
from typing import Callable, Dict, Tuple

from rlinf.config.schema import RewardConfig, RLinfConfig


def workflow_name(cfg: RLinfConfig) -> str:
    """`runner.workflow`, or with `auto`: embodied when the config names a simulator task (`env.id`),
    agent when it names tools (`env.tools`), else reasoning."""
    if cfg.runner.workflow != "auto":
        return cfg.runner.workflow
    if cfg.env.id is not None:
        return "embodied"
    return "agent" if cfg.env.tools else "reasoning"


def scores_in_rollout(cfg: RewardConfig) -> bool:
    """The rollout ranks score their own responses: `reward.in_rollout` with a rule verifier (a reward
    model is always served by its own group)."""
    return cfg.in_rollout and cfg.type == "rule"


def _rl_components(cfg: RLinfConfig) -> Tuple[str, ...]:
    """actor, rollout, the scoring group (env for simulators and tool episodes, which grade themselves;
    reward otherwise, unless the rollout ranks score: reward.in_rollout), and critic / reference when the
    config uses them."""
    if cfg.env.id is not None or cfg.env.tools:
        names = ["actor", "rollout", "env"]
    else:  # the rollout ranks score themselves with reward.in_rollout
        names = ["actor", "rollout"] if scores_in_rollout(cfg.reward) else ["actor", "rollout", "reward"]
    if cfg.critic.enabled:
        names.append("critic")
    if cfg.algorithm.kl_coef > 0:
        names.append("reference")
    return tuple(names)


def _reward_model_components(cfg: RLinfConfig) -> Tuple[str, ...]:
    return ("actor",)  # the reward model trains on the actor's devices, as the actor group


def _sft_components(cfg: RLinfConfig) -> Tuple[str, ...]:
    return ("actor",)


# name -> (module, class, the groups it starts)
WORKFLOWS: Dict[str, Tuple[str, str, Callable[[RLinfConfig], Tuple[str, ...]]]] = {
    "reasoning": ("rlinf.workflows.reasoning", "ReasoningWorkflow", _rl_components),
    "embodied": ("rlinf.workflows.embodied", "EmbodiedWorkflow", _rl_components),
    "reward_model": ("rlinf.workflows.reward_model", "RewardModelWorkflow", _reward_model_components),
    "agent": ("rlinf.workflows.agent", "AgentWorkflow", _rl_components),
    "sft": ("rlinf.workflows.sft", "SFTWorkflow", _sft_components),
}


def components_for(cfg: RLinfConfig) -> Tuple[str, ...]:
    """The worker groups the config's workflow starts (used for placement before anything starts)."""
    return WORKFLOWS[workflow_name(cfg)][2](cfg)


def make_workflow(cfg: RLinfConfig, placement, phase):
    """An instance of the config's workflow; `phase` is the runner's timing context manager."""
    module, cls, _ = WORKFLOWS[workflow_name(cfg)]
    return getattr(importlib.import_module(module), cls)(cfg, placement, phase)
