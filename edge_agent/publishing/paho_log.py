"""paho's own logging, one logger per connection: its errors kept, its debug lines
formatted only when wanted."""

from __future__ import annotations

import logging

#: The connection's logger: its debug level turns paho's debug lines on.
CONNECTION = "edge_agent.publishing.connection"
#: Where paho's lines go with debug logging (a child of the connection's logger).
PAHO = CONNECTION + ".paho"


class LastError(logging.Handler):
    """Keeps the last error paho logs: the socket error behind a lost connection (e.g. a
    TLS alert such as "certificate required"), to say why the connection died."""

    def __init__(self) -> None:
        super().__init__(logging.ERROR)
        self.text = ""

    def emit(self, record: logging.LogRecord) -> None:
        """Keep the message (a handler must not raise into paho's loop)."""
        try:
            self.text = record.getMessage()
        except Exception:  # noqa: BLE001 - a template that does not fit its arguments
            self.text = str(record.msg)


def paho_logger(errors: LastError) -> logging.Logger:
    """One client's own logger: paho's errors reach ``errors``, and its debug lines are
    formatted only when our debug logging is on (``on_log`` would have paho format a
    line for every packet sent and received: about a tenth of its CPU per publish).

    Unregistered, so it goes with the connection; with debug logging it hands every line
    on to ``edge_agent.publishing.connection.paho``. Without, paho's errors stay here: it
    logs a lost connection at ERROR, and the publisher reports it once itself.
    """
    own = logging.Logger(PAHO)  # noqa: LOG001 - one per client, unregistered
    own.addHandler(errors)
    if logging.getLogger(CONNECTION).isEnabledFor(logging.DEBUG):
        own.setLevel(logging.DEBUG)
        own.parent = logging.getLogger(PAHO)
    else:
        own.setLevel(logging.ERROR)
        own.propagate = False
    return own
