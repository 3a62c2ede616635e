"""The camera and MQTT threads run SCHED_BATCH: woken once per frame, they never preempt
the inference worker (edge_agent/scheduling.py; the pipeline's is in tests/unit)."""

import os
import threading
import time

import pytest

from edge_agent.capture.camera import Camera

pytestmark = pytest.mark.skipif(
    not hasattr(os, "SCHED_BATCH"), reason="scheduling policies are Linux's"
)


def thread_named(name: str, timeout: float = 5.0) -> threading.Thread:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        for t in threading.enumerate():
            if t.name == name and t.native_id is not None:
                return t
        time.sleep(0.01)
    raise AssertionError(f"no thread {name!r}")


def policy_once_set(thread: threading.Thread, timeout: float = 5.0) -> int:
    """The thread's policy once it left SCHED_OTHER (it sets its own when it starts)."""
    deadline = time.monotonic() + timeout
    policy = os.sched_getscheduler(thread.native_id)
    while policy == os.SCHED_OTHER and time.monotonic() < deadline:
        time.sleep(0.01)
        policy = os.sched_getscheduler(thread.native_id)
    return policy


def test_camera_thread():
    camera = Camera("sched", "synthetic:64x48@30")
    camera.start()
    try:
        assert camera.get(5) is not None
        assert policy_once_set(thread_named("camera-sched")) == os.SCHED_BATCH
    finally:
        assert camera.stop(5)


def test_mqtt_publisher_thread(mqtt_broker, mqtt_publisher_factory):
    pub = mqtt_publisher_factory(mqtt_broker.port)
    assert pub.wait_connected(10)
    assert policy_once_set(thread_named("mqtt-publisher")) == os.SCHED_BATCH
    assert os.sched_getscheduler(0) == os.SCHED_OTHER  # the caller's own is untouched
