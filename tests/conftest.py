"""Shared pytest configuration: fixture plugins live in tests/support/."""

pytest_plugins = [
    "tests.support.paths",
    "tests.support.broker",
    "tests.support.rabbitmq",
    "tests.support.daemon",
    "tests.support.tpu_plugin",
    "tests.support.notify",
]
