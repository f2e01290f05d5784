"""A small CNN actor-critic for image (+ proprioception) observations (Nature-CNN-like, tiny).

    image uint8 [B, H, W, 3] -> x / 255 -> conv 8x8 s4 -> ReLU -> conv 4x4 s2 -> ReLU -> conv 3x3 s1 -> ReLU
        -> flatten -> Linear(hidden) -> ReLU                                   (image features)
    state [B, d] -> Linear(hidden) -> tanh                                    (proprio features, d > 0)
    trunk = concat(features) -> Linear(hidden) -> ReLU, shared by
        policy head: Normal(mu = Linear(trunk), sigma = exp(log_std)) (continuous; log_std a parameter, init
                     -0.5) or Categorical(logits = Linear(trunk)) (discrete)
        value head:  V(s) = Linear(trunk)

Orthogonal init as the MLP (gain sqrt 2 hidden, 0.01 policy head, 1 value head). The interface (act /
evaluate / value, shapes with action_chunk 1) is documented in rlinf.models.policy.
"""

import math
from typing import Dict, Sequence, Tuple

import torch
from torch import Tensor, nn

from rlinf.models.mlp import action_dist, action_entropy, action_logprob, sample_action


def _init(layer: nn.Module, gain: float) -> nn.Module:
    nn.init.orthogonal_(layer.weight, gain)
    nn.init.zeros_(layer.bias)
    return layer


class CNNActorCritic(nn.Module):
    action_chunk = 1

    def __init__(self, image_shape: Tuple[int, int, int], state_dim: int, action_dim: int, discrete: bool,
                 hidden_size: int = 64, channels: Sequence[int] = (16, 32, 32)):
        super().__init__()
        if len(channels) != 3:
            raise ValueError(f"the CNN has three conv layers, got channels {list(channels)}")
        H, W, _ = image_shape
        self.action_dim, self.discrete, self.state_dim = action_dim, discrete, state_dim
        g = math.sqrt(2)
        self.conv = nn.Sequential(
            _init(nn.Conv2d(3, channels[0], 8, stride=4), g), nn.ReLU(),
            _init(nn.Conv2d(channels[0], channels[1], 4, stride=2), g), nn.ReLU(),
            _init(nn.Conv2d(channels[1], channels[2], 3, stride=1), g), nn.ReLU(), nn.Flatten())
        with torch.no_grad():
            flat = self.conv(torch.zeros(1, 3, H, W)).shape[1]
        self.image_fc = nn.Sequential(_init(nn.Linear(flat, hidden_size), g), nn.ReLU())
        width = hidden_size
        if state_dim > 0:
            self.state_fc = nn.Sequential(_init(nn.Linear(state_dim, hidden_size), g), nn.Tanh())
            width += hidden_size
        self.trunk = nn.Sequential(_init(nn.Linear(width, hidden_size), g), nn.ReLU())
        self.pi = _init(nn.Linear(hidden_size, action_dim), 0.01)
        self.v = _init(nn.Linear(hidden_size, 1), 1.0)
        if not discrete:
            self.log_std = nn.Parameter(torch.full((action_dim,), -0.5))

    def _features(self, obs: Dict[str, Tensor]) -> Tensor:
        x = obs["image"].permute(0, 3, 1, 2).float() / 255.0
        feats = [self.image_fc(self.conv(x))]
        if self.state_dim > 0:
            feats.append(self.state_fc(obs["state"].float().flatten(1)))
        return self.trunk(torch.cat(feats, dim=-1))

    def _dist(self, h: Tensor):
        return action_dist(self.pi(h), None if self.discrete else self.log_std, self.discrete)

    def value(self, obs: Dict[str, Tensor]) -> Tensor:
        """V(s) [B]."""
        return self.v(self._features(obs)).squeeze(-1)

    @torch.no_grad()
    def act(self, obs: Dict[str, Tensor], greedy: bool = False, generator: torch.Generator | None = None):
        """(action, log pi(a|s), V(s)): sampled, or the mode (argmax / mean) when greedy."""
        h = self._features(obs)
        dist = self._dist(h)
        action = sample_action(dist, self.discrete, greedy, generator)
        return action, action_logprob(dist, action, self.discrete), self.v(h).squeeze(-1)

    def evaluate(self, obs: Dict[str, Tensor], actions: Tensor):
        """(log pi(a|s) [B], entropy [B], V(s) [B]) with gradients."""
        h = self._features(obs)
        dist = self._dist(h)
        return action_logprob(dist, actions, self.discrete), action_entropy(dist, self.discrete), self.v(h).squeeze(-1)
