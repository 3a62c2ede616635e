"""The daemon's log context stays readable when the model has no name yet."""

from __future__ import annotations

import logging

from edge_agent.daemon.logcontext import LogContext


def test_log_context_with_no_model_name_reads_as_a_dash() -> None:
    context = LogContext()
    context.set(model="", backend=None, cameras=[])
    record = logging.LogRecord("x", logging.INFO, __file__, 1, "m", None, None)
    context.filter(record)
    assert record.context == "model=- cameras=-"
