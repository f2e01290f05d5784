"""rlinf: reinforcement-learning post-training for language models and VLA policies on Ray."""

__version__ = "0.1.0"
