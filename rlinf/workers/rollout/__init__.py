"""Rollout: generation engines behind one interface and the RolloutWorker that drives them."""
