"""Staged rollouts: a plan of waves, durable state, a runner and a report."""
