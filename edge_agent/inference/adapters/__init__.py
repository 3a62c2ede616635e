"""inference/adapters."""
