"""Per-camera detection switch: ``{prefix}/{device_id}/cmd/{camera}/detect/set`` ON/OFF.

The command lives under ``cmd/`` like every other command, so the broker's one ACL rule
for a device's commands covers it. The state is published retained on
``{prefix}/{device_id}/{camera}/detect/state`` and kept in ``{state_dir}/detect.json``
(atomically), so a camera switched off stays off across restarts.

The MQTT thread writes the switch and the pipeline thread reads it: the set of cameras
switched off is replaced whole under a lock, and readers take the current set.
"""

from __future__ import annotations

import json
import logging
import os
import threading
from collections.abc import Callable, Iterable

from edge_agent.atomicfile import write_atomic
from edge_agent.publishing.topics import Topics

logger = logging.getLogger(__name__)

ON, OFF = "ON", "OFF"


class DetectSwitch:
    """Which cameras run detection.

    Args:
        cameras: the camera names.
        state_dir: where ``detect.json`` is kept.
        topics: the device's topics.
        publish: ``publish(topic, payload)``, retained, for the state.
    """

    def __init__(
        self,
        cameras: Iterable[str],
        state_dir: str,
        topics: Topics,
        publish: Callable[[str, bytes], None],
    ):
        self._cameras = tuple(cameras)
        self._path = os.path.join(state_dir, "detect.json")
        self._topics = topics
        self._publish = publish
        self._lock = threading.Lock()
        self._off: frozenset[str] = self._load()

    def _load(self) -> frozenset[str]:
        try:
            with open(self._path, encoding="utf-8") as fh:
                listed = json.load(fh).get("off", [])
            if not isinstance(listed, list):  # a string or an object would be read by letter
                raise TypeError(f"off is {type(listed).__name__}, not a list of cameras")
            off = frozenset(str(c) for c in listed if c in self._cameras)
        except FileNotFoundError:
            return frozenset()
        except (OSError, ValueError, AttributeError, TypeError) as exc:
            logger.warning(
                "detect switch %s unreadable (%s): every camera detects", self._path, exc
            )
            return frozenset()
        if off:
            logger.info(
                "detection off for camera %s (kept from %s)", ", ".join(sorted(off)), self._path
            )
        return off

    def detecting(self, camera: str) -> bool:
        """True when the camera runs detection (the pipeline asks for every frame)."""
        return camera not in self._off

    def topic_state(self, camera: str) -> str:
        """The retained state topic of a camera's switch."""
        return self._topics.detect_state(camera)

    def publish_all(self) -> None:
        """Publish every camera's state (at start; the publisher re-sends retained values)."""
        for camera in self._cameras:
            self._publish(
                self.topic_state(camera), (ON if self.detecting(camera) else OFF).encode()
            )

    def handle(self, command: str, payload: bytes) -> bool:
        """Take a ``{camera}/detect/set`` command; False when the command is not one.

        An unknown camera or a payload other than ON/OFF is logged and ignored.
        """
        parts = command.split("/")
        if len(parts) != 3 or parts[1:] != ["detect", "set"]:
            return False
        camera, value = parts[0], payload.decode("utf-8", "replace").strip().upper()
        if camera not in self._cameras or value not in (ON, OFF):
            logger.warning("detect switch: ignoring %r for camera %r", value[:16], camera[:64])
            return True
        with self._lock:
            was_on = camera not in self._off
            self._off = self._off - {camera} if value == ON else self._off | {camera}
            off = sorted(self._off)
        now_on = value == ON
        if was_on != now_on:
            try:
                write_atomic(self._path, json.dumps({"off": off}).encode(), mode=0o600)
            except OSError as exc:
                logger.warning("detect switch: cannot keep the state in %s: %s", self._path, exc)
            logger.info("camera %s: detection %s", camera, value)
        self._publish(self.topic_state(camera), value.encode())
        return True
