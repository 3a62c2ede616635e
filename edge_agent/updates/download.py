"""Release downloads over HTTPS: streamed, capped, resumable, retried, allowlisted.

A file is streamed to ``<dest>.part`` and renamed to ``<dest>`` once complete. A
transient failure (timeout, reset, 5xx, short body) is retried with exponential
backoff, resuming with ``Range`` (the 206 answer's ``Content-Range`` must start where
the part file ends, else it restarts; a 200 answer restarts from zero). ``If-Range``
guards against the file changing between attempts.

Reasons raised (as :class:`ModelUpdateError`): ``bad_url``, ``insecure_url``,
``host_not_allowed``, ``http_error``, ``tls_error``, ``timeout``, ``too_large``,
``truncated``, ``cancelled``, ``no_space`` (the disk or quota filled up while writing),
``io_error``.

Every request (manifest fetches, headers and bodies alike) runs under a watchdog (see
:mod:`edge_agent.updates.guard`): a wall-clock deadline per attempt, per file and, inside
:meth:`Downloader.budget`, per update; a minimum transfer rate; and cancel, which ends a
blocked transfer within a fraction of a second. A deadline or a too-slow transfer fails
with ``timeout``.
"""

from __future__ import annotations

import contextlib
import errno
import http.client
import logging
import os
import re
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Callable, NamedTuple, Optional

from edge_agent.errors import ModelUpdateError
from edge_agent.redaction import mask_credentials
from edge_agent.updates.guard import Deadline, TransferGuard
from edge_agent.updates.transport import (
    DownloadSettings,
    Failure,
    Transport,
    close_quietly,
    content_length,
    read_chunks,
)

logger = logging.getLogger(__name__)

Progress = Callable[[int, Optional[int]], None]
_CONTENT_RANGE = re.compile(r"bytes (\d+)-(\d+)/(\d+|\*)")


class Fetched(NamedTuple):
    """Result of :meth:`Downloader.fetch_if_changed`."""

    changed: bool
    body: bytes | None
    etag: str | None
    last_modified: str | None


class Downloader:
    """Fetches URLs under one policy.

    Args:
        settings: the download policy.
        cancel: set it to abort a download in progress (``cancelled``).
        clock: monotonic clock (tests may inject one).
    """

    def __init__(
        self,
        settings: DownloadSettings | None = None,
        *,
        cancel: threading.Event | None = None,
        clock: Callable[[], float] = time.monotonic,
    ):
        self.settings = settings or DownloadSettings()
        self.cancel = cancel or threading.Event()
        self._clock = clock
        self._http = Transport(self.settings, self.cancel)
        self._local = threading.local()  # the update budget of the calling thread

    @contextlib.contextmanager
    def budget(self, seconds: float | None = None) -> Iterator[None]:
        """Bound every fetch made inside the block by one deadline (one update's budget).

        Args:
            seconds: the budget (default: ``settings.update_timeout``).
        """
        limit = self.settings.update_timeout if seconds is None else seconds
        previous = getattr(self._local, "deadline", None)
        mine = Deadline(self._clock() + limit, f"update exceeded its {limit:g}s limit")
        with self._deadline(mine if previous is None or mine.at < previous.at else previous):
            yield

    def unbudgeted(self) -> contextlib.AbstractContextManager[None]:
        """Lift the calling thread's update budget inside the block: a swap's wait for
        frames is no fetch of its update, and a fetch made meanwhile is another request's."""
        return self._deadline(None)

    @contextlib.contextmanager
    def _deadline(self, deadline: Deadline | None) -> Iterator[None]:
        """The calling thread's budget inside the block; the one before it after."""
        previous = getattr(self._local, "deadline", None)
        self._local.deadline = deadline
        try:
            yield
        finally:
            self._local.deadline = previous

    # ------------------------------------------------------------------ public

    def download(
        self,
        url: str,
        dest: str | os.PathLike[str],
        *,
        max_bytes: int,
        expected_size: int | None = None,
        progress: Progress | None = None,
    ) -> int:
        """Download ``url`` to ``dest`` via ``dest.part``, resuming with Range on retry.

        Args:
            url: the https (or allowed http) URL.
            dest: final file path; it appears only once the body is complete.
            max_bytes: hard size cap.
            expected_size: the size the manifest promises (a tighter cap, and the
                length a body without Content-Length must reach).
            progress: ``progress(bytes_done, total_or_None)``, throttled.

        Returns:
            The number of bytes in ``dest``.

        Raises:
            ModelUpdateError: see the module docstring for reasons.
        """
        dest = Path(dest)
        part = dest.with_name(dest.name + ".part")
        cap = min(max_bytes, expected_size) if expected_size is not None else max_bytes
        final = self._final()
        state = _Resume()
        self._http.retrying(
            url,
            lambda: self._download_once(url, part, cap, expected_size, progress, state, final),
            final,
        )
        os.replace(part, dest)
        return dest.stat().st_size

    def fetch(self, url: str, *, max_bytes: int) -> bytes:
        """GET a small document into memory (e.g. a manifest URL).

        Raises:
            ModelUpdateError: as :meth:`download`.
        """
        final = self._final()
        fetched = self._http.retrying(
            url, lambda: self._fetch_once(url, {}, max_bytes, final), final
        )
        return fetched.body or b""

    def fetch_if_changed(
        self,
        url: str,
        etag: str | None = None,
        last_modified: str | None = None,
        *,
        max_bytes: int = 64 * 1024,
    ) -> Fetched:
        """Conditional GET for polling a manifest URL.

        Args:
            url: the manifest URL.
            etag, last_modified: validators from the previous answer.
            max_bytes: body cap.

        Returns:
            ``Fetched(changed, body, etag, last_modified)``: on 304, changed is False,
            body None and the validators are those passed in.

        Raises:
            ModelUpdateError: as :meth:`download`.
        """
        headers = {}
        if etag:
            headers["If-None-Match"] = etag
        if last_modified:
            headers["If-Modified-Since"] = last_modified
        final = self._final()
        fetched = self._http.retrying(
            url, lambda: self._fetch_once(url, headers, max_bytes, final), final
        )
        if not fetched.changed:
            return Fetched(False, None, etag, last_modified)
        return fetched

    # --------------------------------------------------------------- internals

    def _final(self) -> Deadline:
        """The deadline of one file or document: its own limit, or the update's if sooner."""
        limit = self.settings.max_duration
        mine = Deadline(self._clock() + limit, f"exceeded {limit:g}s")
        update = getattr(self._local, "deadline", None)
        return update if update is not None and update.at < mine.at else mine

    def _fetch_once(
        self, url: str, headers: dict[str, str], max_bytes: int, final: Deadline
    ) -> Fetched:
        """One GET into memory."""
        with self._http.guard(url, final) as guard:
            return self._fetch_guarded(url, headers, max_bytes, guard)

    def _fetch_guarded(
        self, url: str, headers: dict[str, str], max_bytes: int, guard: TransferGuard
    ) -> Fetched:
        """One GET into memory, under its attempt's guard."""
        shown = mask_credentials(url)  # in messages
        conn, resp = self._http.open(url, headers, guard)
        try:
            if resp.status == 304:
                return Fetched(False, None, None, None)
            if resp.status != 200:
                raise self._http.status_error(url, resp)
            length = content_length(resp)
            if length is not None and length > max_bytes:
                raise Failure("too_large", f"{shown}: {length} bytes, limit {max_bytes}")
            body = bytearray()
            for chunk in read_chunks(resp, url, guard):
                body += chunk
                if len(body) > max_bytes:
                    raise Failure("too_large", f"{shown}: more than {max_bytes} bytes")
            if length is not None and len(body) < length:
                raise Failure(
                    "truncated",
                    f"{shown}: got {len(body)} of {length} bytes",
                    retry=True,
                )
            return Fetched(
                True, bytes(body), resp.getheader("ETag"), resp.getheader("Last-Modified")
            )
        finally:
            close_quietly(conn)

    def _download_once(
        self,
        url: str,
        part: Path,
        cap: int,
        expected: int | None,
        progress: Progress | None,
        state: _Resume,
        final: Deadline,
    ) -> None:
        """One attempt: resume from ``part``'s size when it has bytes."""
        offset = part.stat().st_size if part.exists() else 0
        headers: dict[str, str] = {}
        if offset:
            headers["Range"] = f"bytes={offset}-"
            if state.validator:
                headers["If-Range"] = state.validator
        with self._http.guard(url, final) as guard:
            self._attempt(url, headers, part, offset, cap, expected, progress, state, guard)
        size = part.stat().st_size
        if expected is not None and size < expected:
            raise Failure(
                "truncated", f"{mask_credentials(url)}: got {size} of {expected} bytes", retry=True
            )

    def _attempt(
        self,
        url: str,
        headers: dict[str, str],
        part: Path,
        offset: int,
        cap: int,
        expected: int | None,
        progress: Progress | None,
        state: _Resume,
        guard: TransferGuard,
    ) -> None:
        """Request and stream one attempt under its guard."""
        conn, resp = self._http.open(url, headers, guard)
        try:
            total = self._plan(url, resp, part, offset, cap, expected)
            if total is None and resp.status == 416:
                return  # the part already holds the whole file
            if resp.status == 200:
                offset = 0
            etag = resp.getheader("ETag")
            state.validator = (
                etag if etag and not etag.startswith("W/") else resp.getheader("Last-Modified")
            )
            self._stream(url, resp, part, offset, total, cap, progress, guard)
        finally:
            close_quietly(conn)

    def _plan(
        self,
        url: str,
        resp: http.client.HTTPResponse,
        part: Path,
        offset: int,
        cap: int,
        expected: int | None,
    ) -> int | None:
        """Check the status and size before reading; returns the full size if known."""
        shown = mask_credentials(url)  # in messages
        if resp.status == 416 and offset:
            if expected is not None and offset == expected:
                return None
            part.unlink(missing_ok=True)  # start over from zero
            raise Failure(
                "http_error",
                f"{shown}: range not satisfiable; restarting",
                retry=True,
            )
        if resp.status == 206 and offset:
            m = _CONTENT_RANGE.fullmatch(resp.getheader("Content-Range", "").strip())
            if not m or int(m.group(1)) != offset:
                part.unlink(missing_ok=True)  # a range we did not ask for: start over cleanly
                raise Failure(
                    "http_error",
                    f"{shown}: bad Content-Range; restarting",
                    retry=True,
                )
            total = None if m.group(3) == "*" else int(m.group(3))
        elif resp.status == 200:
            if offset:
                logger.info("download %s: server ignored Range; restarting from 0", shown)
            length = content_length(resp)
            total = length
        else:
            raise self._http.status_error(url, resp)
        if total is not None and total > cap:
            raise Failure("too_large", f"{shown}: {total} bytes, limit {cap}")
        if total is not None and expected is not None and total < expected:
            raise Failure(
                "truncated",
                f"{shown}: server has {total} bytes, manifest says {expected}",
            )
        return total

    def _stream(
        self,
        url: str,
        resp: http.client.HTTPResponse,
        part: Path,
        offset: int,
        total: int | None,
        cap: int,
        progress: Progress | None,
        guard: TransferGuard,
    ) -> None:
        """Append the body to ``part`` (truncated to ``offset`` first), enforcing the cap."""
        shown = mask_credentials(url)  # in messages
        done = offset
        last = -1e9
        try:
            with open(part, "r+b" if part.exists() else "wb") as f:
                f.truncate(offset)
                f.seek(offset)
                for chunk in read_chunks(resp, url, guard):
                    done += len(chunk)
                    if done > cap:
                        raise Failure("too_large", f"{shown}: more than {cap} bytes")
                    f.write(chunk)
                    now = self._clock()
                    if progress and now - last >= self.settings.progress_interval:
                        last = now
                        progress(done, total)
                f.flush()
                os.fsync(f.fileno())
        except OSError as exc:
            raise ModelUpdateError(write_failure(exc), f"{part}: {exc}") from exc
        if total is not None and done < total:
            raise Failure(
                "truncated",
                f"{shown}: connection closed at {done} of {total} bytes",
                retry=True,
            )
        if progress:
            progress(done, total)


class _Resume:
    """What one download remembers between attempts (the If-Range validator)."""

    def __init__(self) -> None:
        self.validator: str | None = None


def write_failure(exc: OSError) -> str:
    """The reason for a failed write: ``no_space`` for a full disk or quota, else ``io_error``."""
    return "no_space" if exc.errno in (errno.ENOSPC, errno.EDQUOT) else "io_error"
