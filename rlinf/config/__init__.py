"""Typed configuration: schema, YAML loading, CLI overrides, validation."""

from rlinf.config.loader import build_config, load_config, parse_overrides, read_yaml, to_yaml
from rlinf.config.schema import (
    ActorConfig,
    AlgorithmConfig,
    ClusterConfig,
    CriticConfig,
    DataConfig,
    EnvConfig,
    EvalConfig,
    ModelConfig,
    RewardConfig,
    ReshardConfig,
    RLinfConfig,
    RolloutConfig,
    RunnerConfig,
)

__all__ = [
    "ActorConfig", "AlgorithmConfig", "ClusterConfig", "CriticConfig", "DataConfig", "EnvConfig", "EvalConfig",
    "ModelConfig", "ReshardConfig", "RewardConfig", "RLinfConfig", "RolloutConfig", "RunnerConfig",
    "build_config", "load_config", "parse_overrides", "read_yaml", "to_yaml",
]
