"""Weights as they travel through Ray's object store: {name: numpy array} (bf16 stays a tensor)."""

import warnings
from typing import Dict

import numpy as np
import ray
import torch


def fetch_state_dict(ref) -> Dict[str, torch.Tensor]:
    """Tensors viewing the arrays of a published state dict (no copy; load_state_dict copies them)."""
    state = ray.get(ref)
    with warnings.catch_warnings():
        # Arrays from the object store are read-only views; load_state_dict only reads them.
        warnings.simplefilter("ignore", UserWarning)
        return {k: torch.from_numpy(v) if isinstance(v, np.ndarray) else v for k, v in state.items()}
