"""``edge-agent bench``: the pipeline measured against the interpreter's own limit.

One run puts, side by side and interleaved round by round, a bare ``set_tensor`` +
``invoke()`` loop (in its own process, same model, runtime and threads) and the daemon's
real pipeline (camera -> preprocess -> supervised worker -> decoder -> MQTT publisher ->
broker -> a subscriber), then a cold start of ``edge-agent run``; it reports throughput,
per-stage latency, CPU, memory and start-up figures, and checks them against the
project's performance targets. See :func:`edge_agent.tools.bench.runner.run_bench`.
"""
