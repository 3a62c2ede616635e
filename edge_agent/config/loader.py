"""Reading the TOML config file and validating it into a :class:`Config`.

``parse_config`` is pure (text in, Config out); ``load_config`` reads the one file,
parses it, and adds the checks that need the file itself (its permissions). Nothing
here looks at model files, devices or the network: that is ``doctor``'s job.

Every problem found is reported: one :class:`~edge_agent.errors.ConfigError` naming
the file and the dotted key, or a :class:`~edge_agent.errors.ConfigErrors` holding
one per problem, in file order. A section with an invalid key is not checked further
as a whole (its cross-key rules need every key valid).
"""

from __future__ import annotations

import dataclasses
import os
import re
import stat
import sys
from collections.abc import Mapping
from types import ModuleType
from typing import Any, Union

from edge_agent.config import rules
from edge_agent.config.checks import Check, Invalid, did_you_mean, show
from edge_agent.config.schema import (
    ARRAYS,
    ORDER,
    PATHS,
    SECTIONS,
    SOURCE,
    CameraConfig,
    Config,
)
from edge_agent.config.url_checks import is_synthetic, is_url
from edge_agent.errors import ConfigError, ConfigErrors
from edge_agent.redaction import has_credentials

DEFAULT_CONFIG_PATH = "/etc/edge-agent/config.toml"
# A config is a few kilobytes: a path to /dev/zero or a runaway file must not be read
# without end (nor fill the memory of a daemon reloading on SIGHUP).
MAX_CONFIG_BYTES = 1 << 20

# Secrets may come from the environment (e.g. a systemd EnvironmentFile or
# credential) instead of the file; a variable that is set and non-empty wins.
ENV_OVERRIDES: dict[str, tuple[str, str]] = {
    "EDGE_AGENT_MQTT_USERNAME": ("mqtt", "username"),
    "EDGE_AGENT_MQTT_PASSWORD": ("mqtt", "password"),
}


def config_path_from_env(env: Mapping[str, str] | None = None) -> str:
    """The config file of a command given none: ``$EDGE_AGENT_CONFIG`` when set and
    non-empty (an empty assignment in an EnvironmentFile means unset), else
    :data:`DEFAULT_CONFIG_PATH`."""
    return (os.environ if env is None else env).get("EDGE_AGENT_CONFIG") or DEFAULT_CONFIG_PATH


def import_toml(version_info: tuple[int, ...] = tuple(sys.version_info)) -> ModuleType:
    """Return the TOML parser module: stdlib ``tomllib`` on 3.11+, else ``tomli``.

    Both expose the same ``loads`` and ``TOMLDecodeError``.
    """
    if tuple(version_info[:2]) >= (3, 11):
        import tomllib

        return tomllib
    import tomli

    return tomli


toml = import_toml()

_TOML_AT_LINE = re.compile(r"\s*\(at line (\d+), column (\d+)\)$")
_TOML_AT_END = re.compile(r"\s*\(at end of document\)$")


def parse_config(
    text: str,
    source: str = "<string>",
    *,
    env: Mapping[str, str] | None = None,
    base_dir: str | None = None,
) -> Config:
    """Parse and validate config text.

    Args:
        text: the TOML document.
        source: the name used in error messages and stored in ``Config.source``.
        env: environment for the ``EDGE_AGENT_MQTT_*`` overrides; default ``os.environ``.
        base_dir: directory that relative paths are resolved against; ``None`` leaves
            them as written (``load_config`` passes the config file's directory).

    Returns:
        The validated, immutable configuration.

    Raises:
        ConfigError: a TOML syntax error or an invalid key or value (``ConfigErrors``
            when there are several).
    """
    doc = _loads(text, source)
    config, warnings = _build(doc, source, os.environ if env is None else env, base_dir)
    return dataclasses.replace(config, warnings=tuple(warnings))


def load_config(
    path: Union[str, os.PathLike] = DEFAULT_CONFIG_PATH,
    *,
    env: Mapping[str, str] | None = None,
) -> Config:
    """Read, parse and validate the config file at ``path``.

    Relative paths in the file are resolved against the file's directory. When the
    file holds a secret and its mode lets group or others in (``mode & 0o077``), a
    warning is added to ``Config.warnings``.

    Args:
        path: the config file; messages name it as given.
        env: environment for the ``EDGE_AGENT_MQTT_*`` overrides; default ``os.environ``.

    Returns:
        The validated configuration.

    Raises:
        ConfigError: the file cannot be read, is not a regular file or FIFO of at most
            ``MAX_CONFIG_BYTES``, is not UTF-8 TOML, or is invalid.
    """
    name = os.fspath(path)
    try:
        with open(name, "rb") as handle:
            # fstat on the handle we read, so the mode belongs to those very bytes.
            info = os.fstat(handle.fileno())
            # A FIFO is fine (a secrets helper may feed the config through one); a
            # device is not a config file, and /dev/zero would be read without end.
            if not (stat.S_ISREG(info.st_mode) or stat.S_ISFIFO(info.st_mode)):
                raise ConfigError("not a regular file or a FIFO (a device?)", file=name)
            mode = stat.S_IMODE(info.st_mode)
            data = handle.read(MAX_CONFIG_BYTES + 1)
    except OSError as exc:
        raise ConfigError(f"cannot read config file: {exc.strerror}", file=name) from exc
    if len(data) > MAX_CONFIG_BYTES:
        raise ConfigError(f"larger than {MAX_CONFIG_BYTES} bytes: not a config file", file=name)
    try:
        text = data.decode("utf-8")
    except UnicodeDecodeError as exc:
        raise ConfigError(f"not valid UTF-8 (byte {exc.start})", file=name) from exc
    doc = _loads(text, name)
    base_dir = os.path.dirname(os.path.abspath(name))
    config, warnings = _build(doc, name, os.environ if env is None else env, base_dir)
    secrets = _secrets_in(doc)
    if secrets and mode & 0o077:
        warnings.append(
            f"{name}: holds secrets ({', '.join(secrets)}) but its mode is {mode:04o}, "
            f"readable beyond its owner; run `chmod 600 {name}` "
            "(or pass the MQTT password in EDGE_AGENT_MQTT_PASSWORD)"
        )
    return dataclasses.replace(config, warnings=tuple(warnings))


def _loads(text: str, source: str) -> dict[str, Any]:
    """Parse TOML, turning a syntax error into ``file: line N: message``."""
    try:
        # Editors on other platforms may add a byte-order mark, which TOML forbids.
        return toml.loads(text.removeprefix("\ufeff"))
    except RecursionError as exc:
        # The parser recurses once per level of nested arrays and inline tables; a
        # file nested thousands deep (hostile or garbled) must not crash a reload.
        raise ConfigError("arrays or inline tables nested too deeply", file=source) from exc
    except toml.TOMLDecodeError as exc:
        message = str(exc)
        match = _TOML_AT_LINE.search(message)
        if match:
            line, column = match.groups()
            message = f"line {line}: {message[: match.start()]} (column {column})"
        elif _TOML_AT_END.search(message):
            message = f"end of file: {_TOML_AT_END.sub('', message)}"
        raise ConfigError(message, file=source) from exc
    except ValueError as exc:  # an integer beyond Python's 4300 digits: no TOMLDecodeError
        raise ConfigError(f"a value the parser refuses: {exc}", file=source) from exc


def _build(
    doc: dict[str, Any], source: str, env: Mapping[str, str], base_dir: str | None
) -> tuple[Config, list[str]]:
    """Validate a parsed document into a Config plus its (pure) warnings."""
    doc = _apply_env(doc, env, source)
    values: dict[str, Any] = {}
    errors: list[ConfigError] = []
    for name, raw in doc.items():
        try:
            if name in ARRAYS:
                values[name] = _array(raw, name, source, base_dir)
            elif name in SECTIONS:
                values[name] = _table(raw, SECTIONS[name], name, source, base_dir)
            else:
                raise ConfigError(_unknown_top_level(name), file=source, key=name)
        except ConfigError as exc:
            errors.extend(_each(exc))
    _raise_all(errors)
    # Absent sections take the dataclass defaults (one camera "cam0" on index 0).
    config = Config(source=source, **values)
    try:
        rules.check_objects(config)
    except rules.Problem as exc:
        raise ConfigError(exc.message, file=source, key=exc.key) from exc
    if not config.mqtt.spool_dir:
        # Filled in here so the daemon never has to know the default.
        mqtt = dataclasses.replace(config.mqtt, spool_dir=config.spool_dir)
        config = dataclasses.replace(config, mqtt=mqtt)
    warnings = [f"{source}: {key}: {message}" for key, message in rules.warnings_for(config)]
    return config, warnings


def _apply_env(doc: dict[str, Any], env: Mapping[str, str], source: str) -> dict[str, Any]:
    """Overlay the ``EDGE_AGENT_MQTT_*`` variables on a copy of ``doc``.

    Raises:
        ConfigError: a variable is not UTF-8 (raw bytes in an EnvironmentFile, which
            Python decodes with surrogate escapes and MQTT cannot send).
    """
    doc = dict(doc)
    for variable, (section, key) in ENV_OVERRIDES.items():
        value = env.get(variable)
        try:
            (value or "").encode("utf-8")
        except UnicodeEncodeError as exc:  # the value is a secret: never shown
            message = f"${variable} is not valid UTF-8"
            raise ConfigError(message, file=source, key=f"{section}.{key}") from exc
        table = doc.get(section, {})
        # A malformed section is left alone so validation reports it.
        if value and isinstance(table, dict):
            doc[section] = {**table, key: value}
    return doc


def _array(raw: Any, name: str, source: str, base_dir: str | None) -> tuple[Any, ...]:
    """Validate an array of tables (``[[camera]]``)."""
    if not isinstance(raw, list) or not all(isinstance(item, dict) for item in raw):
        got = "a table" if isinstance(raw, dict) else show(raw)
        raise ConfigError(
            f"expected array of tables ([[{name}]]), got {got}", file=source, key=name
        )
    if not raw:
        raise ConfigError(f"expected at least one [[{name}]] table, got []", file=source, key=name)
    items = []
    errors: list[ConfigError] = []
    for index, table in enumerate(raw):
        if ARRAYS[name] is CameraConfig:
            # Unnamed cameras are numbered by position: cam0, cam1, ...
            table = {"name": f"cam{index}", **table}
        try:
            items.append(_table(table, ARRAYS[name], f"{name}[{index}]", source, base_dir))
        except ConfigError as exc:
            errors.extend(_each(exc))
    _raise_all(errors)
    if ARRAYS[name] is CameraConfig:
        try:
            rules.check_cameras(items)
        except rules.Problem as exc:
            raise ConfigError(exc.message, file=source, key=exc.key) from exc
    return tuple(items)


def field_check(section: type, name: str) -> Check:
    """The check a section's field is validated with (``field_check(ModelConfig,
    "num_threads")``), for a CLI option that mirrors a config key and must accept
    exactly the same values.

    Raises:
        KeyError: ``section`` has no such field.
    """
    for spec in dataclasses.fields(section):
        if spec.name == name:
            return spec.metadata["check"]
    raise KeyError(f"{section.__name__} has no field {name!r}")


def _table(raw: Any, cls: type, prefix: str, source: str, base_dir: str | None) -> Any:
    """Validate one table against the dataclass ``cls`` and build it."""
    if not isinstance(raw, dict):
        tables = isinstance(raw, list) and raw and all(isinstance(t, dict) for t in raw)
        got = "an array of tables" if tables else show(raw)
        raise ConfigError(f"expected a table ([{prefix}]), got {got}", file=source, key=prefix)
    specs = {spec.name: spec for spec in dataclasses.fields(cls)}
    kwargs: dict[str, Any] = {}
    errors: list[ConfigError] = []
    for key, value in raw.items():
        spec = specs.get(key)
        if spec is None:
            errors.append(ConfigError(_unknown(key, specs), file=source, key=f"{prefix}.{key}"))
            continue
        try:
            normalized = spec.metadata["check"](value)
        except Invalid as exc:
            errors.append(ConfigError(exc.message, file=source, key=f"{prefix}.{key}{exc.subkey}"))
            continue
        kwargs[key] = _resolve(normalized, spec.metadata["path"], base_dir)
    for key, spec in specs.items():
        if spec.metadata["required"] and key not in kwargs and key not in raw:
            errors.append(
                ConfigError("required key is missing", file=source, key=f"{prefix}.{key}")
            )
    _raise_all(errors)
    section = cls(**kwargs)
    try:
        rules.check_section(section, prefix)
    except rules.Problem as exc:
        raise ConfigError(exc.message, file=source, key=exc.key) from exc
    return section


def _each(exc: ConfigError) -> tuple[ConfigError, ...]:
    """The single problems inside ``exc``."""
    return exc.errors if isinstance(exc, ConfigErrors) else (exc,)


def _raise_all(errors: list[ConfigError]) -> None:
    """Raise the one problem as itself, several as one ConfigErrors, none not at all."""
    if len(errors) == 1:
        raise errors[0]
    if errors:
        raise ConfigErrors(errors)


def _resolve(value: Any, kind: str, base_dir: str | None) -> Any:
    """Make a relative path absolute against ``base_dir`` (the config's directory)."""
    if not kind or base_dir is None:
        return value
    if kind == PATHS:
        return tuple(_join(base_dir, item) for item in value)
    # A camera source is resolved only when it is a file path, not an index or URL.
    if kind == SOURCE and (isinstance(value, int) or is_url(value) or is_synthetic(value)):
        return value
    return _join(base_dir, value) if value else value


def _join(base_dir: str, path: str) -> str:
    """Join ``path`` onto ``base_dir`` unless it is absolute already."""
    return path if os.path.isabs(path) else os.path.normpath(os.path.join(base_dir, path))


def _unknown(key: str, known: Mapping[str, Any]) -> str:
    """Message for an unknown key, suggesting the closest known one."""
    return "unknown key" + did_you_mean(key, known)


def _unknown_top_level(key: str) -> str:
    """Unknown top-level key: a misspelt section, or a setting outside its section."""
    suggestion = did_you_mean(key, ORDER)
    if suggestion:
        return "unknown section" + suggestion
    owners = [
        name
        for name in ORDER
        if key in {spec.name for spec in dataclasses.fields({**SECTIONS, **ARRAYS}[name])}
    ]
    if len(owners) == 1:
        return f'unknown key; did you mean "{owners[0]}.{key}"?'
    return "unknown key"


def _secrets_in(doc: dict[str, Any]) -> list[str]:
    """Dotted keys of secrets written in the file itself (not from the environment)."""
    found = []
    mqtt = doc.get("mqtt")
    if isinstance(mqtt, dict) and mqtt.get("password"):
        found.append("mqtt.password")
    cameras = doc.get("camera")
    for index, camera in enumerate(cameras if isinstance(cameras, list) else []):
        source = camera.get("source") if isinstance(camera, dict) else None
        if isinstance(source, str) and has_credentials(source):
            found.append(f"camera[{index}].source")
    updates = doc.get("updates")
    url = updates.get("manifest_url") if isinstance(updates, dict) else None
    if isinstance(url, str) and has_credentials(url):
        found.append("updates.manifest_url")
    return found
