"""Imported by the workers' forkserver only (its first preload), never by the daemon.

The forkserver gives each child the SIGINT handler the server had before it began
serving. Ctrl-C reaches the whole foreground process group, so a child forked at that
moment (a worker starting as ``edge-agent bench`` or ``run`` in a terminal is
interrupted) got a KeyboardInterrupt, and printed its traceback, before its own first
line could ignore it. Ignored here, in the server before it serves, every child starts
with it ignored: the parent decides when its children stop.
"""

from __future__ import annotations

import signal

signal.signal(signal.SIGINT, signal.SIG_IGN)
