"""The project's exception hierarchy.

Library code raises these (always ``raise ... from cause``); the daemon boundary and
the CLI catch :class:`EdgeAgentError`, log or print one line, and decide what to do.
"""

from __future__ import annotations


class EdgeAgentError(Exception):
    """Base class of every error edge-agent raises on purpose."""


class ConfigError(EdgeAgentError):
    """A configuration file or value is invalid.

    The message always names the file and the dotted key, e.g.
    ``config.toml: mqtt.port: expected integer 1..65535, got "abc"``.
    """

    def __init__(self, message: str, *, file: str | None = None, key: str | None = None):
        self.file = file
        self.key = key
        prefix = "".join(f"{part}: " for part in (file, key) if part)
        super().__init__(prefix + message)


class ConfigErrors(ConfigError):
    """Several problems in one config file, each a :class:`ConfigError` naming its key."""

    def __init__(self, errors: list[ConfigError]):
        self.errors = tuple(errors)
        super().__init__("\n".join(str(e) for e in self.errors))
        # The message already names each file and key; keep the first for callers.
        self.file, self.key = self.errors[0].file, self.errors[0].key


class StopRequested(EdgeAgentError):
    """A stop signal (SIGTERM, SIGINT) cut short a blocking step that gives way to one,
    such as reading a config FIFO nobody feeds
    (:meth:`edge_agent.daemon.signals.SignalQueue.stop_interrupts`)."""


class ModelError(EdgeAgentError):
    """A model file is missing, not a TFLite flatbuffer, or unusable as configured.

    Attributes:
        key: the ``[model]`` setting at fault (``model.path``, ``model.labels``,
            ``model.task``) when the raiser knows it, so that ``check-config`` can name
            it; None otherwise. It is not part of the message.
    """

    def __init__(self, message: str, *, key: str | None = None):
        super().__init__(message)
        self.key = key


class BackendUnavailable(EdgeAgentError):
    """An inference backend (e.g. the Edge TPU) cannot be used on this machine right now."""


class InferenceError(EdgeAgentError):
    """A loaded model failed to invoke."""


class CaptureError(EdgeAgentError):
    """A camera source cannot be opened or stopped delivering frames."""


class PublishError(EdgeAgentError):
    """A message could not be published or spooled."""


class WorkerError(EdgeAgentError):
    """The inference worker process died, hung, or answered out of protocol.

    Attributes:
        backend: the backend whose loading killed the worker, when it died loading one
            (so it can be skipped); None otherwise.
    """

    def __init__(self, message: str, *, backend: str | None = None):
        super().__init__(message)
        self.backend = backend


class ModelUpdateError(EdgeAgentError):
    """A model update was rejected or failed; the running model is untouched.

    Attributes:
        reason: a short machine-readable code published on the ``model`` topic
            (e.g. ``sha256_mismatch``, ``bad_signature``, ``not_newer``).
    """

    def __init__(self, reason: str, message: str):
        self.reason = reason
        super().__init__(f"{reason}: {message}")
