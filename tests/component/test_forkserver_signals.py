"""Children of the workers' forkserver start with SIGINT ignored.

Ctrl-C reaches the whole foreground process group; a worker forked at that moment got a
KeyboardInterrupt (and printed its traceback) before its first line could ignore it.
"""

from __future__ import annotations

import signal

from edge_agent.inference.worker import forkserver_context


def report_sigint(queue) -> None:
    """A child's very first act: say how SIGINT is handled."""
    queue.put(signal.getsignal(signal.SIGINT) == signal.SIG_IGN)


def test_a_forkserver_child_is_born_with_sigint_ignored():
    ctx = forkserver_context()
    queue = ctx.Queue()
    child = ctx.Process(target=report_sigint, args=(queue,))
    child.start()
    try:
        assert queue.get(timeout=60) is True
    finally:
        child.join(10)
    assert child.exitcode == 0
    assert signal.getsignal(signal.SIGINT) is signal.default_int_handler  # not in the parent
