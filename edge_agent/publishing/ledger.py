"""A persisted bound on the durable messages a power cut could lose (held only in memory).

The publisher keeps a result only in memory while the broker acknowledges it promptly
(nothing is written per result: SD cards). Those results are lost if the power goes.
To *count* that loss at the next start without a write per result, the ledger persists a
lease: an upper bound on how many durable messages are held only in memory. It is
rewritten only when the bound could be exceeded (every ``headroom / 2`` messages or
so), and set to the exact number at a clean stop (normally 0).

Each rewrite is fsynced. So that a fast stream (an Edge TPU gives 380 results a second)
does not write the card several times a second, a lease renewed within
:data:`MIN_RENEWAL_S` of the previous one doubles its headroom (up to
:data:`MAX_HEADROOM`), and one renewed after ``4 * MIN_RENEWAL_S`` or more halves it
back towards the configured one: about one write a second at most, whatever the rate.

The next start reads the lease as :attr:`LossLedger.previous`: "the last run may have
lost up to this many results". An upper bound, not an exact count: at most
``headroom`` more than what really was in memory when the process died.
"""

from __future__ import annotations

import json
import logging
import time
from collections.abc import Callable
from pathlib import Path

from edge_agent.atomicfile import write_atomic

logger = logging.getLogger(__name__)

DEFAULT_HEADROOM = 128
MIN_RENEWAL_S = 1.0  # renewals closer than this widen the headroom
MAX_HEADROOM = 8192  # 21 s of results at 380 a second


class LossLedger:
    """The lease file of one publisher (owned by its thread; not thread-safe).

    Args:
        path: the ledger file (in the spool directory).
        headroom: messages the lease may run ahead of what is in memory (the least: a
            fast stream widens it, see the module docstring).
        clock: monotonic seconds (injectable for tests).

    Attributes:
        previous: the bound the last run left (0 after a clean stop or on a first start).
    """

    def __init__(
        self,
        path: str | Path,
        headroom: int = DEFAULT_HEADROOM,
        clock: Callable[[], float] = time.monotonic,
    ):
        self.path = Path(path)
        self.headroom = self._least = headroom
        self._clock = clock
        self.previous = self._read()
        self._lease = self._at_unsecured = self._at_produced = 0
        self._writable = self._write(0)  # the old bound is reported once, not again
        self._renewed_at = float("-inf")  # the first renewal keeps the configured headroom

    def update(self, produced: int, unsecured: int) -> None:
        """Renew the lease if what may be in memory could soon exceed it.

        Args:
            produced: durable messages produced so far in this run.
            unsecured: how many of them are held only in memory right now.
        """
        bound = self._at_unsecured + produced - self._at_produced
        if bound + self.headroom // 2 < self._lease:
            return
        now = self._clock()
        since = now - self._renewed_at
        if since < MIN_RENEWAL_S:
            self.headroom = max(self._least, min(MAX_HEADROOM, self.headroom * 2))
        elif since >= 4 * MIN_RENEWAL_S:
            self.headroom = max(self._least, self.headroom // 2)
        if self._write(unsecured + self.headroom):
            self._at_unsecured, self._at_produced = unsecured, produced
            self._renewed_at = now

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
        # Overflow: an infinite count ("1e999"); recursion: deeply nested brackets.
        except (OSError, ValueError, KeyError, TypeError, OverflowError, RecursionError) as exc:
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
