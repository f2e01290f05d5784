"""Critic: a value model trained alongside the actor (PPO with GAE)."""
