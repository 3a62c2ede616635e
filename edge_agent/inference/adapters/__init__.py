"""Post-processing adapters: pure functions over output arrays returning NamedTuples."""
