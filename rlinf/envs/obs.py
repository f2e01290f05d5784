"""Batched observations: a float32 array [N, ...] or a dict of arrays that all lead with N.

The workflow concatenates the observations of env ranks / pipeline stages and splits them over
rollout ranks without knowing which of the two forms a task uses.
"""

from typing import Dict, List, Sequence, Union

import numpy as np

Obs = Union[np.ndarray, Dict[str, np.ndarray]]


def concat(parts: Sequence[Obs]) -> Obs:
    """Concatenate along the batch dimension."""
    if isinstance(parts[0], dict):
        return {k: np.concatenate([p[k] for p in parts]) for k in parts[0]}
    return np.concatenate(parts)


def take(obs: Obs, index) -> Obs:
    """Rows `index` (an index array, boolean mask or slice)."""
    if isinstance(obs, dict):
        return {k: v[index] for k, v in obs.items()}
    return obs[index]


def size(obs: Obs) -> int:
    """Batch size N."""
    return len(next(iter(obs.values()))) if isinstance(obs, dict) else len(obs)


def stack(steps: List[Obs], axis: int = 1) -> Obs:
    """Stack T batched observations into [N, T, ...] (axis 1) arrays."""
    if isinstance(steps[0], dict):
        return {k: np.stack([s[k] for s in steps], axis=axis) for k in steps[0]}
    return np.stack(steps, axis=axis)


def zeros_like(obs: Obs) -> Obs:
    if isinstance(obs, dict):
        return {k: np.zeros_like(v) for k, v in obs.items()}
    return np.zeros_like(obs)
