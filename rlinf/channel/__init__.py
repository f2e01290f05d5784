"""Channel: a named streaming queue between worker groups with backpressure and staleness control.

Runtime part: knows nothing of RL. See `Channel` (client), `StalenessManager` (admission rule).
"""

from rlinf.channel.channel import DEFAULT_TIMEOUT_S, NAMESPACE, Channel
from rlinf.channel.core import ChannelClosed, ChannelCore, ChannelGone, ChannelTimeout, Envelope
from rlinf.channel.staleness import StalenessManager

__all__ = [
    "Channel",
    "ChannelClosed",
    "ChannelCore",
    "ChannelGone",
    "ChannelTimeout",
    "DEFAULT_TIMEOUT_S",
    "Envelope",
    "NAMESPACE",
    "StalenessManager",
]
