"""Puts the running model and the cameras into every log line of the daemon.

A logging filter on the handler adds ``record.context`` (e.g. ``model=doorcam@1.2.0
(edgetpu) cameras=front,back``), so journald lines can be attributed without every
call site repeating it; messages about one camera still name it themselves.
"""

from __future__ import annotations

import logging
import threading

FORMAT = "%(asctime)s %(levelname)s %(name)s [%(context)s]: %(message)s"


class LogContext(logging.Filter):
    """Thread-safe holder of the current context, usable as a handler filter."""

    def __init__(self) -> None:
        super().__init__()
        self._lock = threading.Lock()
        self._text = "starting"

    def set(self, *, model: str, backend: str | None, cameras: list[str]) -> None:
        """Update the context (called when the model, backend or cameras change)."""
        # "-" rather than nothing: "[model= cameras=-]" reads like a broken line.
        text = f"model={model or '-'}" + (f" ({backend})" if backend else "")
        text += f" cameras={','.join(cameras) or '-'}"
        with self._lock:
            self._text = text

    def filter(self, record: logging.LogRecord) -> bool:
        """Attach the context; never drops a record."""
        with self._lock:
            record.context = self._text
        return True


def install(context: LogContext) -> None:
    """Add the context to every root handler and switch them to the daemon's format."""
    for handler in logging.getLogger().handlers:
        handler.addFilter(context)
        handler.setFormatter(logging.Formatter(FORMAT))
