"""Actor: the policy model under training."""
