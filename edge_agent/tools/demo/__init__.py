"""``edge-agent demo``: the real daemon on the bundled model and clip, printed live."""
