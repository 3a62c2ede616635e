"""daemon.liveness: the watchdog is fed while every camera is down and retrying."""

from __future__ import annotations

from edge_agent.capture.health import CameraState, CameraStats
from edge_agent.daemon.liveness import CHECK_EVERY, RETRY_GRACE, RetryWatch
from tests.support.clock import FakeClock


def cam(name, state=CameraState.RECONNECTING, reconnects=1, backoff=2.0):
    return CameraStats(name, "rtsp://cam", state, 0, 0, reconnects, 0.0, "down", backoff, None)


def test_every_camera_retrying_feeds_the_watchdog():
    watch = RetryWatch(FakeClock(100.0))
    assert watch.all_retrying([cam("a"), cam("b")])


def test_a_camera_streaming_without_frames_or_ended_does_not():
    watch = RetryWatch(FakeClock(100.0))
    # streaming but no frame processed: wedged, a restart may mend it
    assert not watch.all_retrying([cam("a"), cam("b", state=CameraState.STREAMING)])
    assert not watch.all_retrying([cam("a", state=CameraState.ENDED)])
    assert not watch.all_retrying([])  # no camera at all: nothing retries


def test_a_camera_that_stopped_attempting_does_not():
    clock = FakeClock(100.0)
    watch = RetryWatch(clock)
    assert watch.all_retrying([cam("a", reconnects=3, backoff=30.0)])
    clock.now += 2 * 30.0 + RETRY_GRACE  # no new attempt, still within the window
    assert watch.all_retrying([cam("a", reconnects=3, backoff=30.0)])
    clock.now += 1.0  # past it: the camera thread is stuck in an open, say
    assert not watch.all_retrying([cam("a", reconnects=3, backoff=30.0)])
    assert watch.all_retrying([cam("a", reconnects=4, backoff=30.0)])  # it attempted again


def test_the_cameras_are_looked_at_once_a_second():
    clock = FakeClock(100.0)
    watch = RetryWatch(clock)
    assert watch.due() and not watch.due()
    clock.now += CHECK_EVERY
    assert watch.due()
