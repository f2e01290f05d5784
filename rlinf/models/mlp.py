"""MLP actor-critic for state-observation control tasks (gymnasium classic control, MuJoCo states).

Two separate tanh MLPs, a policy and a value network (as in CleanRL's PPO), each
`num_layers` hidden layers of `hidden_size` units, orthogonal init (gain sqrt 2 for hidden layers,
0.01 for the policy head, 1 for the value head), zero biases:

    discrete:    pi(a | s) = Categorical(softmax(f_pi(s)))
    continuous:  pi(a | s) = Normal(mu = f_pi(s), sigma = exp(log_std)),  log_std a state-independent
                 parameter (init 0); log pi(a | s) sums over action dimensions
    value:       V(s) = f_v(s)

The value head is the critic of embodied PPO: no separate critic model or worker is needed.
"""

import math
from typing import Tuple

import torch
from torch import Tensor, nn
from torch.distributions import Categorical, Normal

from rlinf.config.schema import ModelConfig


def _layer(n_in: int, n_out: int, gain: float, generator: torch.Generator | None) -> nn.Linear:
    """Orthogonal weight, zero bias. The random draws are those of `nn.Linear`'s own init followed by
    `orthogonal_`, so `generator` seeded with s gives the weights `torch.manual_seed(s)` used to give,
    without touching torch's global RNG (with generator None, the global RNG is used, as nn.Linear does)."""
    if generator is None:
        layer = nn.Linear(n_in, n_out)
    else:
        layer = torch.nn.utils.skip_init(nn.Linear, n_in, n_out)  # no draw from the global RNG
        nn.init.kaiming_uniform_(layer.weight, a=math.sqrt(5), generator=generator)  # = nn.Linear.reset_parameters
        bound = 1 / math.sqrt(n_in) if n_in > 0 else 0
        nn.init.uniform_(layer.bias, -bound, bound, generator=generator)
    nn.init.orthogonal_(layer.weight, gain, generator=generator)
    nn.init.zeros_(layer.bias)
    return layer


def _mlp(n_in: int, hidden: int, layers: int, n_out: int, out_gain: float,
         generator: torch.Generator | None) -> nn.Sequential:
    mods, width = [], n_in
    for _ in range(layers):
        mods += [_layer(width, hidden, math.sqrt(2), generator), nn.Tanh()]
        width = hidden
    mods.append(_layer(width, n_out, out_gain, generator))
    return nn.Sequential(*mods)


def action_dist(out: Tensor, log_std: Tensor | None, discrete: bool):
    """The policy head's distribution: Categorical over logits, or a diagonal Normal(out, exp(log_std))."""
    return Categorical(logits=out) if discrete else Normal(out, log_std.exp().expand_as(out))


def action_logprob(dist, actions: Tensor, discrete: bool) -> Tensor:
    """log pi(a|s) [B]: a continuous action's dimensions are independent, so their log-probs add."""
    return dist.log_prob(actions) if discrete else dist.log_prob(actions).sum(-1)


def action_entropy(dist, discrete: bool) -> Tensor:
    return dist.entropy() if discrete else dist.entropy().sum(-1)


def sample_action(dist, discrete: bool, greedy: bool, generator: torch.Generator | None) -> Tensor:
    """A sample from `dist` drawn with `generator` (reproducible per worker), or its mode when greedy."""
    if greedy:
        return dist.probs.argmax(-1) if discrete else dist.mean
    if discrete:
        return torch.multinomial(dist.probs, 1, generator=generator).squeeze(-1)
    return dist.mean + dist.stddev * torch.randn(dist.mean.shape, generator=generator, device=dist.mean.device)


class MLPActorCritic(nn.Module):
    """`act(obs) -> (action, logprob, value)`, `evaluate(obs, actions) -> (logprob, entropy, value)`."""

    def __init__(self, obs_dim: int, action_dim: int, discrete: bool, hidden_size: int = 64, num_layers: int = 2,
                 generator: torch.Generator | None = None):
        super().__init__()
        self.obs_dim, self.action_dim, self.discrete = obs_dim, action_dim, discrete
        self.pi = _mlp(obs_dim, hidden_size, num_layers, action_dim, 0.01, generator)
        self.v = _mlp(obs_dim, hidden_size, num_layers, 1, 1.0, generator)
        if not discrete:
            self.log_std = nn.Parameter(torch.zeros(action_dim))

    def _dist(self, obs: Tensor):
        return action_dist(self.pi(obs.flatten(1)), None if self.discrete else self.log_std, self.discrete)

    def value(self, obs: Tensor) -> Tensor:
        """V(s) [B]."""
        return self.v(obs.flatten(1)).squeeze(-1)

    @torch.no_grad()
    def act(self, obs: Tensor, greedy: bool = False, generator: torch.Generator | None = None) -> Tuple[Tensor, Tensor, Tensor]:
        """Sample (or, greedy, take the mode: argmax / mean) an action; returns (action, log pi(a|s), V(s))."""
        dist = self._dist(obs)
        action = sample_action(dist, self.discrete, greedy, generator)
        return action, action_logprob(dist, action, self.discrete), self.value(obs)

    def evaluate(self, obs: Tensor, actions: Tensor) -> Tuple[Tensor, Tensor, Tensor]:
        """(log pi(a|s) [B], entropy of pi(.|s) [B], V(s) [B]) with gradients, for the PPO update."""
        dist = self._dist(obs)
        return action_logprob(dist, actions, self.discrete), action_entropy(dist, self.discrete), self.value(obs)


def build_mlp_policy(cfg: ModelConfig, obs_dim: int, action_dim: int, discrete: bool, seed: int) -> MLPActorCritic:
    """The actor-critic of `actor.model` (kind mlp) for a task; identical weights for the same seed,
    drawn from a private generator (torch's global RNG is neither reseeded nor advanced)."""
    if cfg.kind != "mlp":
        raise ValueError(f"build_mlp_policy needs actor.model.kind 'mlp', got '{cfg.kind}'")
    generator = torch.Generator().manual_seed(seed)
    return MLPActorCritic(obs_dim, action_dim, discrete, cfg.hidden_size, cfg.num_layers, generator=generator)
