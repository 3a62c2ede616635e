"""A camera: one capture thread, latest-frame semantics, reopen with capped backoff.

The thread belongs to the :class:`Camera` (``start()`` / ``stop(timeout)``). It reads into
the :class:`~edge_agent.capture.frames.FrameSlot`: the newest frame, drops, never queues.

States: ``starting`` -> ``streaming`` <-> ``reconnecting``; files without ``loop`` end in
``ended``; ``stop()`` gives ``stopped``. A source that fails to open, returns no frame (live
source, read timeout), disappears (file gone at its end, device unplugged) or repeats one
image for 30 s (a frozen stream, see FreezeWatch) is released and reopened after
``reopen_initial`` s, doubling up to ``reopen_max``, reset by a session as long as its delay.
No camera problem ends the thread: errors are logged once per outage (then debug), retried.
Network opens/reads time out after ``stale_after`` s; V4L2 stalls at OpenCV's select() timeout.
"""

from __future__ import annotations

import functools
import logging
import math
import threading
import time
from typing import Any, Callable

import cv2

from edge_agent.backoff import StableBackoff
from edge_agent.capture.frames import FREEZE_AFTER, Frame, FrameSlot, FreezeWatch
from edge_agent.capture.health import FPS_WINDOW, CameraState, CameraStats, StateCallback
from edge_agent.capture.leftover import left_blocked
from edge_agent.capture.mjpeg import open_reduced
from edge_agent.capture.motion import MotionSettings
from edge_agent.capture.sources import (
    Capture,
    SourceKind,
    SourceLike,
    SourceSpec,
    file_identity,
    mask_credentials,
    open_capture,
    parse_source,
    source_fps,
)
from edge_agent.capture.v4l2 import FitTarget
from edge_agent.errors import CaptureError, ConfigError
from edge_agent.ratemeter import RateMeter
from edge_agent.scheduling import yield_to_worker

logger = logging.getLogger(__name__)

Opener = Callable[..., Capture]

FALLBACK_FILE_FPS = 30.0


class _Outcome:
    """How a capture session ended (other than by an exception)."""

    STOPPED = "stopped"
    ENDED = "ended"
    REOPEN = "reopen"  # a looping file was replaced, or a device needs another mode


class Camera:
    """One camera source read by its own thread; consume with :meth:`get`.

    Args:
        name: the camera name (logs, MQTT topics).
        source: see :func:`~edge_agent.capture.sources.parse_source`.
        width, height, fps: requested device mode, or synthetic pattern size/rate. For
            files, ``fps`` is only the pacing fallback when the file reports no rate.
        loop: restart files at their end instead of ending.
        reopen_initial, reopen_max: backoff bounds in seconds.
        stale_after: seconds without a frame before a network read gives up.
        realtime: pace files and synthetic sources at their frame rate (drop when the
            consumer is slow, like a camera). False reads them as fast as consumed,
            losslessly (benchmarks); live sources are always realtime.
        on_state: ``on_state(name, state, detail)`` on every state change, from the
            capture thread (or ``stop()``'s caller) outside locks; its errors are logged.
        opener: replaces :func:`~edge_agent.capture.sources.open_capture` (same signature).
        fit: a device is sized to this model input at each open (``camera.fit_model``),
            and reopened when it changes.

    Raises:
        ConfigError: invalid source or timing values.
    """

    def __init__(
        self,
        name: str,
        source: SourceLike,
        *,
        width: int | None = None,
        height: int | None = None,
        fps: float | None = None,
        loop: bool = False,
        reopen_initial: float = 1.0,
        reopen_max: float = 30.0,
        stale_after: float = 10.0,
        realtime: bool = True,
        on_state: StateCallback | None = None,
        opener: Opener | None = None,
        fit: FitTarget | None = None,
    ):
        if not name:
            raise ConfigError("camera name is empty")
        for key, value in (("reopen_initial", reopen_initial), ("stale_after", stale_after)):
            if not (isinstance(value, (int, float)) and math.isfinite(value) and value > 0):
                raise ConfigError(f"camera {name}: {key} must be > 0, got {value!r}")
        if not (isinstance(reopen_max, (int, float)) and reopen_initial <= reopen_max < math.inf):
            raise ConfigError(f"camera {name}: reopen_max must be finite and >= reopen_initial")
        self.name = name
        self.spec: SourceSpec = parse_source(source)
        self.source = self.spec.display
        self._mode = {"width": width, "height": height, "fps": fps}
        self._loop = loop
        self._stale_after = float(stale_after)
        self._realtime = realtime or not self.spec.paced
        self._on_state = on_state
        self._opener: Opener = opener or open_capture
        self._fit = fit
        self._backoff = StableBackoff(float(reopen_initial), float(reopen_max))
        self._slot = FrameSlot()
        self._stop = threading.Event()
        self._stop_asked = 0.0  # monotonic time stop_soon() was first called
        self._thread: threading.Thread | None = None
        self._lock = threading.Lock()  # guards the fields below
        self._state = CameraState.STARTING
        self._last_error: str | None = None
        self._reconnects = 0
        self._delay = 0.0
        self._rate = RateMeter(FPS_WINDOW)  # thread-safe on its own
        self._outage_started: float | None = None
        self._failures = 0  # consecutive failures in the current outage
        self._next_id = 0  # written by the capture thread only
        self._file_identity: tuple[int, ...] | None = None

    @classmethod
    def from_config(cls, config: Any, **kwargs: Any) -> Camera:
        """A (not yet started) camera from a ``CameraConfig``-like object (name, source,
        mode, timings, loop, realtime, decode_scale, motion_gate; None fields take the
        defaults). ``kwargs``: ``realtime`` (wins over the config's), ``on_state``,
        ``opener`` (default per decode_scale and motion_gate), and ``fit``: the FitTarget
        a device is sized to when ``fit_model`` is on."""
        fields = ("width", "height", "fps", "loop", "reopen_initial", "reopen_max", "stale_after")
        fields += ("realtime",) if "realtime" not in kwargs else ()
        options = {f: getattr(config, f) for f in fields if getattr(config, f, None) is not None}
        scale, gate = getattr(config, "decode_scale", 1), MotionSettings.of(config)
        if scale > 1 or gate.enabled:  # a gated camera decodes only what moves
            kwargs.setdefault("opener", functools.partial(open_reduced, scale=scale, motion=gate))
        if not getattr(config, "fit_model", False):
            kwargs.pop("fit", None)  # only a camera with fit_model sizes its device
        return cls(config.name, config.source, **options, **kwargs)

    def start(self) -> None:
        """Start the capture thread (once per Camera).

        Raises:
            CaptureError: the camera was already started or stopped.
        """
        if self._thread is not None or self._stop.is_set():
            raise CaptureError(f"camera {self.name}: already started or stopped")
        self._thread = threading.Thread(target=self._run, name=f"camera-{self.name}", daemon=True)
        self._thread.start()

    def stop(self, timeout: float = 5.0) -> bool:
        """Stop the thread and release the source; True when the thread ended within
        ``timeout`` s (a backend blocked in open/read holds it until its own timeout; the
        process then waits for it at exit, see capture/leftover.py)."""
        self.stop_soon()
        thread = self._thread
        if thread is not None:
            thread.join(timeout)
        stopped = thread is None or not thread.is_alive()
        if thread is not None and not stopped:  # logged, and waited for at exit
            left_blocked(self.name, thread, self._stop_asked, self._stale_after)
        self._set_state(CameraState.STOPPED, "stopped")
        return stopped

    def stop_soon(self) -> None:
        """Tell the thread to stop, without waiting (:meth:`stop` then joins it): cameras
        stopped together this way wait for the slowest, not for the sum of them."""
        self._stop_asked = self._stop_asked or time.monotonic()
        self._stop.set()
        self._slot.close()

    def get(self, timeout: float = 1.0) -> Frame | None:
        """The newest frame not returned before, waiting up to ``timeout`` s (0 polls).

        The previous frame's image may be reused by the capture thread from this call on.

        Returns:
            A :class:`Frame`, or None on timeout, or at once once ended/stopped and drained.
        """
        return self._slot.take(timeout)

    def stats(self) -> CameraStats:
        """A consistent snapshot of counters and state."""
        counts = self._slot.counts()
        fps, age = self._rate.rate(), self._rate.age()
        with self._lock:
            return CameraStats(
                self.name, self.source, self._state, counts.published, counts.dropped,
                self._reconnects, fps, self._last_error, self._delay, age, counts.size,
            )  # fmt: skip

    @property
    def state(self) -> str:
        """The current :class:`CameraState` value."""
        with self._lock:
            return self._state

    def is_alive(self) -> bool:
        """Whether the capture thread is running."""
        return self._thread is not None and self._thread.is_alive()

    def __enter__(self) -> Camera:
        self.start()
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.stop()

    def __repr__(self) -> str:
        return f"Camera({self.name!r}, {self.source!r}, state={self.state!r})"

    def _run(self) -> None:
        """Thread body: sessions until stopped or ended; never lets an error escape."""
        yield_to_worker()  # a frame taken wakes this thread: it must not preempt the worker
        try:
            while not self._stop.is_set():
                try:
                    outcome = self._session()
                except Exception as exc:  # cv2.error, CaptureError, anything: retry
                    try:
                        self._after_failure(exc)
                    except Exception:  # even logging trouble must not kill the camera
                        logger.exception("camera %s: error while handling a failure", self.name)
                        self._stop.wait(self._backoff.maximum)
                    continue
                if outcome == _Outcome.ENDED:
                    self._set_state(CameraState.ENDED, "end of file")
                    logger.info("camera %s: %s ended", self.name, self.source)
                    break
                if outcome == _Outcome.STOPPED:
                    break
        finally:
            self._slot.close()

    def _session(self) -> str:
        """Open the source once and pump frames until stop, end, or an exception."""
        if self._failures:
            with self._lock:
                self._reconnects += 1
        cap = self._open()
        try:
            return self._pump(cap)
        finally:
            try:
                cap.release()
            except Exception as exc:  # a dead device may fail to release; nothing to do
                logger.debug("camera %s: release failed: %s", self.name, exc)

    def _open(self) -> Capture:
        """Open through the opener; remember a file's identity to spot replacements."""
        spec = self.spec
        identity = file_identity(spec.target) if spec.kind == SourceKind.FILE else None
        fit = {"fit": self._fit.take()} if self._fit is not None else {}
        cap = self._opener(
            spec, name=self.name, **self._mode, **fit,
            open_timeout=self._stale_after, read_timeout=self._stale_after,
        )  # fmt: skip
        self._file_identity = identity
        return cap

    def _pump(self, cap: Capture) -> str:
        """Read frames into the slot until stopped, ended, or failing (raises)."""
        paced = self.spec.paced and self._realtime
        lossless = self.spec.paced and not self._realtime
        freeze = FreezeWatch(FREEZE_AFTER if self.spec.kind == SourceKind.STREAM else None)
        period = 1.0 / source_fps(cap, self._mode["fps"] or FALLBACK_FILE_FPS) if paced else 0.0
        due = time.monotonic()
        since_rewind = 0
        while not self._stop.is_set():
            if self._fit is not None and self._fit.take_changed():
                return _Outcome.REOPEN  # another model: open the device in a mode for it
            index, buffer = self._slot.writable()
            started = time.monotonic()
            ok, image = cap.read(buffer) if buffer is not None else cap.read()
            now = time.monotonic()
            if not ok or image is None:
                if self.spec.kind != SourceKind.FILE:
                    waited = now - started
                    if waited >= self._stale_after * 0.9:
                        raise CaptureError(f"no frame for {waited:.1f}s")
                    raise CaptureError("read() returned no frame")
                outcome = self._end_of_file(cap, since_rewind)
                if outcome is not None:
                    return outcome
                since_rewind = 0
                due = time.monotonic()
                continue
            frame = Frame.captured(image, self._next_id, now, self.name)
            freeze.check(frame.pixels, now)  # frozen at its old size: reopen (a watch a session)
            since_rewind += 1
            quiet = frame.undecoded
            if not self._slot.publish(index, frame, wait=lossless, stop=self._stop, quiet=quiet):
                break
            self._next_id += 1
            self._on_frame(now)
            if paced:
                due += period
                if due < now - period:  # fell behind (slow disk, CPU): no catch-up burst
                    due = now
                delay = due - time.monotonic()
                if delay > 0 and self._stop.wait(delay):
                    break
        return _Outcome.STOPPED

    def _end_of_file(self, cap: Capture, since_rewind: int) -> str | None:
        """At a file's end: rewind (None), end, reopen a replaced file, or raise."""
        if not self._loop and since_rewind:
            return _Outcome.ENDED  # played to the end; whatever happens to it now is moot
        identity = file_identity(self.spec.target)
        if identity is None:
            raise CaptureError(f"{self.source}: file disappeared")
        if since_rewind == 0:
            raise CaptureError(f"{self.source}: no decodable frames")
        if identity != self._file_identity:
            logger.info("camera %s: %s changed on disk, reopening", self.name, self.source)
            return _Outcome.REOPEN
        if not cap.set(cv2.CAP_PROP_POS_FRAMES, 0):
            return _Outcome.REOPEN
        return None

    def _on_frame(self, now: float) -> None:
        """Book-keeping for a delivered frame; ends an outage on the first one."""
        with self._lock:
            self._rate.tick()
            recovering = self._state != CameraState.STREAMING
            failures, began = self._failures, self._outage_started
            if recovering:
                self._failures = 0
                self._outage_started = None
                self._delay = 0.0
        if not recovering:
            return
        self._backoff.succeeded()  # reset once this session lasts as long as its delay
        if failures:
            logger.info(
                "camera %s: streaming again after %d failed attempt(s), %.1fs down",
                self.name, failures, now - (began or now),
            )  # fmt: skip
        else:
            logger.info("camera %s: streaming from %s", self.name, self.source)
        self._set_state(CameraState.STREAMING, "")

    def _after_failure(self, exc: BaseException) -> None:
        """Log (once per outage), enter reconnecting, wait out the backoff."""
        detail = mask_credentials(str(exc).strip()) or type(exc).__name__
        if not isinstance(exc, CaptureError):
            detail = f"{type(exc).__name__}: {detail}"
        delay = self._backoff.next()
        with self._lock:
            first = self._failures == 0
            self._failures += 1
            failures = self._failures
            self._last_error = detail
            self._delay = delay
            if first:
                self._outage_started = time.monotonic()
        if first and not isinstance(exc, (CaptureError, cv2.error)):
            logger.warning(
                "camera %s: unexpected error, reopening in %.2fs", self.name, delay,
                exc_info=exc,
            )  # fmt: skip
        elif first:
            logger.warning("camera %s: %s; reopening in %.2fs", self.name, detail, delay)
        else:
            logger.debug(
                "camera %s: attempt %d failed: %s; next in %.2fs",
                self.name, failures, detail, delay,
            )  # fmt: skip
        self._set_state(CameraState.RECONNECTING, detail)
        self._stop.wait(delay)

    def _set_state(self, state: str, detail: str) -> None:
        """Change state and notify outside the lock; ``stopped`` is final."""
        with self._lock:
            if self._state == state or self._state == CameraState.STOPPED:
                return
            self._state = state
        if self._on_state is None:
            return
        try:
            self._on_state(self.name, state, detail)
        except Exception:
            logger.exception("camera %s: on_state callback failed for %r", self.name, state)
