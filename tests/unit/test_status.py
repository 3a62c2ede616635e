"""Tier 1: the status and stats documents built from component snapshots."""

from types import SimpleNamespace

from edge_agent import __version__
from edge_agent.capture.health import CameraStats
from edge_agent.daemon.status import DaemonState, stats_document, status_document

CAM = CameraStats(
    "front", "rtsp://user:***@cam/1", "reconnecting", 120, 7, 3, 14.567, "read failed", 2.0, 4.5,
    (320, 240),
)  # fmt: skip
GEN = SimpleNamespace(
    worker=SimpleNamespace(
        info=SimpleNamespace(
            backend="edgetpu",
            model_path="/m/x_edgetpu.tflite",
            runtime="tflite_runtime.interpreter",
        )
    ),
    meta={"name": "doorcam", "version": "1.2.0"},
)


def test_status_document():
    doc = status_document(
        state=DaemonState.RUNNING,
        device_id="box1",
        groups=("lab",),
        started=12.34567,
        cameras=[CAM],
        details={"front": "backoff 2.0s"},
        generation=GEN,
        broker_connected=True,
        last_error="",
        broker="mq2:1883",
    )
    assert doc == {
        "state": "running",
        "device_id": "box1",
        "groups": ["lab"],
        "device_type": "",
        "agent_version": __version__,
        "started": 12.346,
        "cameras": {
            "front": {
                "state": "reconnecting",
                "detail": "backoff 2.0s",
                "source": "rtsp://user:***@cam/1",
                "frames": 120,
                "dropped": 7,
                "reconnects": 3,
                "fps": 14.57,
                "last_error": "read failed",
                "frame_size": [320, 240],  # the mode a fitted camera settled on
            }
        },
        "backend": "edgetpu",
        "model": {
            "name": "doorcam",
            "version": "1.2.0",
            "file": "/m/x_edgetpu.tflite",
            "runtime": "tflite_runtime.interpreter",
        },
        "broker_connected": True,
        "broker": "mq2:1883",
        "storage_error": "",
        "mqtt_error": "",
        "last_error": "",
    }


def test_status_without_a_model_yet():
    doc = status_document(
        state=DaemonState.STARTING,
        device_id="b",
        groups=(),
        started=0.0,
        cameras=[],
        details={},
        generation=None,
        broker_connected=False,
        last_error="x",
    )
    assert doc["backend"] is None and doc["model"]["name"] == "" and doc["cameras"] == {}


def test_stats_document_adds_model_drops_and_temperature():
    doc = stats_document(
        {"fps": 14.9},
        generation=GEN,
        cameras=[CAM, CAM._replace(dropped=1)],
        worker_restarts=2,
        mqtt={"spooled": 5},
        apex_temperatures={"apex_0": 47.2},
    )
    assert doc == {
        "fps": 14.9,
        "backend": "edgetpu",
        "model": "doorcam",
        "model_version": "1.2.0",
        "dropped_frames": 8,
        "worker_restarts": 2,
        "mqtt": {"spooled": 5},
        "apex_temperature_c": {"apex_0": 47.2},
    }
    assert "apex_temperature_c" not in stats_document(
        {}, generation=None, cameras=[], worker_restarts=0, mqtt={}, apex_temperatures={}
    )


def test_frames_the_model_dropped_count_as_errors_in_stats():
    counters = {"frames": 10, "errors": 1, "worker_restarts": 0, "motion_skipped": 0}
    doc = stats_document(
        {"counters": counters}, generation=None, cameras=[], worker_restarts=2, mqtt={},
        apex_temperatures={}, model_dropped=3,
    )  # fmt: skip
    assert doc["counters"] == {**counters, "errors": 4}
    assert counters["errors"] == 1  # the pipeline's own snapshot is left alone


def test_storage_error_is_reported_and_stands_in_for_last_error():
    doc = status_document(
        state=DaemonState.RUNNING,
        device_id="b",
        groups=(),
        started=0.0,
        cameras=[],
        details={},
        generation=None,
        broker_connected=False,
        last_error="",
        storage_error="spool: disk full",
    )
    assert doc["storage_error"] == "spool: disk full"
    assert doc["last_error"] == "spool: disk full"


def test_a_broker_link_problem_is_reported_and_stands_in_for_last_error():
    refused = "broker refused publishing to edge/b/results: Not authorized"
    doc = status_document(
        state=DaemonState.RUNNING,
        device_id="b",
        groups=(),
        started=0.0,
        cameras=[],
        details={},
        generation=None,
        broker_connected=True,
        last_error="",
        mqtt_error=refused,
        durability={"possibly_lost_last_run": 0, "spool_dropped": 0, "refused": 4},
    )
    assert (doc["mqtt_error"], doc["last_error"], doc["refused"]) == (refused, refused, 4)


def test_possible_loss_of_the_last_run_is_in_the_status():
    doc = status_document(
        state=DaemonState.RUNNING,
        device_id="b",
        groups=(),
        started=0.0,
        cameras=[],
        details={},
        generation=None,
        broker_connected=True,
        last_error="",
        durability={"possibly_lost_last_run": 17, "spool_dropped": 2},
    )
    assert (doc["possibly_lost_last_run"], doc["spool_dropped"]) == (17, 2)
    assert doc["state"] == "running"  # the counters never shadow the document's own keys


def test_status_names_the_device_type_for_rollouts():
    """A rollout leaves out boxes whose status names a type the release does not list."""
    from edge_agent.tools.release.rollout.plan import member_from_status

    doc = status_document(
        state=DaemonState.RUNNING, device_id="d1", groups=["lobby"], started=0.0,
        cameras=[], details={}, generation=None, broker_connected=True, last_error="",
        device_type="rpi4-usb",
    )  # fmt: skip
    assert doc["device_type"] == "rpi4-usb"
    assert member_from_status("d1", doc, "lobby").device_type == "rpi4-usb"
