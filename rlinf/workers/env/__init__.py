"""Env workers: vectorised simulators stepped with actions from the rollout's policy."""
