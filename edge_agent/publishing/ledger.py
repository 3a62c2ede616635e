"""A persisted bound on the durable messages a power cut could lose (held only in memory).

The publisher keeps a result only in memory while the broker acknowledges it promptly
(nothing is written per result: SD cards). Those results are lost if the power goes.
To *count* that loss at the next start without a write per result, the ledger persists a
lease: an upper bound on how many durable messages are held only in memory. It is
rewritten only when the bound could be exceeded (every ``headroom / 2`` messages or
so), and set to the exact number at a clean stop (normally 0).

The next start reads the lease as :attr:`LossLedger.previous`: "the last run may have
lost up to this many results". An upper bound, not an exact count: at most
``headroom`` more than what really was in memory when the process died.
"""

from __future__ import annotations

import json
import logging
from pathlib import Path

from edge_agent.atomicfile import write_atomic

logger = logging.getLogger(__name__)

DEFAULT_HEADROOM = 128


class LossLedger:
    """The lease file of one publisher (owned by its thread; not thread-safe).

    Args:
        path: the ledger file (in the spool directory).
        headroom: messages the lease may run ahead of what is in memory.

    Attributes:
        previous: the bound the last run left (0 after a clean stop or on a first start).
    """

    def __init__(self, path: str | Path, headroom: int = DEFAULT_HEADROOM):
        self.path = Path(path)
        self.headroom = headroom
        self.previous = self._read()
        self._lease = self._at_unsecured = self._at_produced = 0
        self._writable = self._write(0)  # the old bound is reported once, not again

    def update(self, produced: int, unsecured: int) -> None:
        """Renew the lease if what may be in memory could soon exceed it.

        Args:
            produced: durable messages produced so far in this run.
            unsecured: how many of them are held only in memory right now.
        """
        bound = self._at_unsecured + produced - self._at_produced
        if bound + self.headroom // 2 < self._lease:
            return
        if self._write(unsecured + self.headroom):
            self._at_unsecured, self._at_produced = unsecured, produced

    def close(self, unsecured: int) -> None:
        """Clean stop: persist the exact number left only in memory (lost)."""
        self._write(unsecured)

    def _read(self) -> int:
        """The lease the last run left; a corrupt file is logged and counts as 0."""
        try:
            doc = json.loads(self.path.read_text())
            return max(0, int(doc["possibly_lost"]))
        except FileNotFoundError:
            return 0
        except (OSError, ValueError, KeyError, TypeError) as exc:
            logger.warning("loss ledger %s unreadable (%s): counting 0", self.path, exc)
            return 0

    def _write(self, lease: int) -> bool:
        """Persist a lease (atomic, fsynced); a failure is logged once and returns False."""
        try:
            write_atomic(self.path, json.dumps({"possibly_lost": lease}).encode(), mode=0o600)
        except OSError as exc:
            if getattr(self, "_writable", True):
                logger.error("loss ledger %s: cannot write: %s", self.path, exc.strerror)
            self._writable = False
            return False
        self._lease, self._writable = lease, True
        return True
