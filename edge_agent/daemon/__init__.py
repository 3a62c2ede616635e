"""The daemon: only what ``edge-agent run`` loads (app, frame pipeline, model-update glue,
stats, status, systemd notify, signals, log context). Never imports ``edge_agent.tools``."""
