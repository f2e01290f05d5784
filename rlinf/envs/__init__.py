"""Environments: text tasks with verifiable answers (and, later, simulators)."""
