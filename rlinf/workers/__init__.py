"""Worker groups of an RL run: actor, critic, rollout, reward (and env for simulators)."""
