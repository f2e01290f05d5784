"""Which worker groups a config needs (used for placement before anything starts)."""

from typing import Tuple

from rlinf.config.schema import RLinfConfig


def components_for(cfg: RLinfConfig) -> Tuple[str, ...]:
    """Components the run starts: actor and rollout always; the rest as the config asks."""
    names = ["actor", "rollout"]
    if cfg.env.id is not None:
        names.append("env")
    else:
        names.append("reward")
    if cfg.critic.enabled:
        names.append("critic")
    if cfg.algorithm.kl_coef > 0:
        names.append("reference")
    return tuple(names)
