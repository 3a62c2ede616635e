"""inference/backends."""
