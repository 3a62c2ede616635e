"""The daemon: supervised inference worker, frame pipeline, systemd integration, stats."""
