"""Finding backends: the built-ins, then the ``edge_agent.backends`` entry points.

A third party adds an accelerator by shipping a distribution whose metadata declares
``[edge_agent.backends] name = module:Class``; nothing in edge-agent is patched. Plugins
are loaded where models load: in the daemon that is the crash-isolated inference worker,
so even a plugin that kills its process at import costs a worker, not the daemon.

Rules:
- A plugin that fails to import, names something that is not a concrete Backend
  subclass, disagrees with its entry point's name, or cannot be constructed is logged
  once (with its name and distribution) and skipped.
- A plugin may replace a built-in by taking its name (logged; the doctor shows it).
- Two plugins claiming one name: the first on ``sys.path`` wins, the other is skipped.
- The same class declared twice (edge-agent's own metadata names its built-ins) is one.
"""

from __future__ import annotations

import importlib
import inspect
import logging
import re
import sys
import threading
from collections.abc import Iterable, Sequence
from importlib import metadata
from typing import Any, NamedTuple

from edge_agent.inference.backends.base import BUILTINS, DEVICE_KINDS, ENTRY_POINT_GROUP, Backend

logger = logging.getLogger(__name__)

BUILTIN = "built-in"
_NAME = re.compile(r"[a-z0-9][a-z0-9_.-]*\Z")


class PluginSpec(NamedTuple):
    """One declared backend: an entry point, or a built-in."""

    name: str
    value: str  # "module:Class"
    origin: str  # "built-in", or the distribution as "name version"


class Found(NamedTuple):
    """A backend class in use and where it came from."""

    cls: type[Backend]
    spec: PluginSpec
    replaces_builtin: bool


class Problem(NamedTuple):
    """A declared backend that was skipped, and why."""

    spec: PluginSpec
    reason: str


class Discovery(NamedTuple):
    """The outcome of one discovery."""

    found: tuple[Found, ...]  # best first
    problems: tuple[Problem, ...]

    @property
    def backends(self) -> tuple[type[Backend], ...]:
        """The backend classes, best first."""
        return tuple(f.cls for f in self.found)

    def get(self, name: str) -> Found | None:
        """The backend registered under ``name``, or None."""
        return next((f for f in self.found if f.spec.name == name), None)


def _declared(path: Sequence[str] | None) -> list[PluginSpec]:
    """Entry points of ENTRY_POINT_GROUP in the distributions on ``path`` (default sys.path).

    Walks the distributions rather than ``metadata.entry_points()``, whose signature
    changed in Python 3.10, so 3.9 to 3.13 behave alike; a distribution seen twice on
    the path counts once (the first), as ``entry_points()`` does from 3.10 on.
    """
    specs, seen = [], set()
    kwargs = {} if path is None else {"path": list(path)}
    for dist in metadata.distributions(**kwargs):
        try:
            points = [ep for ep in dist.entry_points if ep.group == ENTRY_POINT_GROUP]
            if not points:
                continue  # most distributions: their METADATA is not even parsed
            name = dist.metadata["Name"] or "unknown"
            key = re.sub(r"[-_.]+", "-", name).lower()
            if key in seen:
                continue
            seen.add(key)
            origin = f"{name} {dist.version}"
        except Exception as exc:  # unreadable metadata must not stop discovery
            logger.debug("skipping unreadable distribution metadata: %s", exc)
            continue
        specs.extend(PluginSpec(ep.name, ep.value, origin) for ep in points)
    return specs


def _load(spec: PluginSpec) -> type[Backend]:
    """Import and check one declared backend.

    Raises:
        ValueError: with the reason it cannot be used.
    """
    module_name, _, attr = spec.value.partition(":")
    try:
        obj: Any = importlib.import_module(module_name.strip())
        for part in attr.strip().split(".") if attr.strip() else ():
            obj = getattr(obj, part)
    except (Exception, SystemExit) as exc:  # a plugin's import may do anything
        raise ValueError(f"cannot import {spec.value}: {type(exc).__name__}: {exc}") from exc
    if not (inspect.isclass(obj) and issubclass(obj, Backend)):
        raise ValueError(f"{spec.value} is {obj!r}, not a Backend subclass")
    if inspect.isabstract(obj):
        raise ValueError(f"{spec.value} does not implement open()")
    name = getattr(obj, "name", None)
    if name != spec.name or not _NAME.match(spec.name):
        raise ValueError(
            f"{spec.value}.name is {name!r}: it must equal the entry point name "
            f"{spec.name!r} (lower case letters, digits, '_', '.', '-')"
        )
    priority = getattr(obj, "priority", None)
    if not isinstance(priority, int) or isinstance(priority, bool):
        raise ValueError(f"{spec.value}.priority is {priority!r}, not an integer")
    kinds = getattr(obj, "kinds", None)
    if not isinstance(kinds, (set, frozenset)) or not kinds or not kinds <= DEVICE_KINDS:
        raise ValueError(
            f"{spec.value}.kinds is {kinds!r}: a non-empty set of {sorted(DEVICE_KINDS)}"
        )
    try:
        obj()  # the engine constructs every candidate: a failing constructor stops here
    except Exception as exc:
        raise ValueError(f"{spec.value}() fails: {type(exc).__name__}: {exc}") from exc
    return obj


_lock = threading.RLock()  # guards _reported and _last (discover holds it around resolve)
_reported: set[tuple[str, str, str]] = set()


def _report(problem: Problem) -> None:
    """Log a skipped backend once per process."""
    key = (problem.spec.name, problem.spec.origin, problem.reason)
    with _lock:
        if key in _reported:
            return
        _reported.add(key)
    logger.warning(
        "backend plugin %s (%s) skipped: %s",
        problem.spec.name,
        problem.spec.origin,
        problem.reason,
    )


def resolve(specs: Iterable[PluginSpec]) -> Discovery:
    """Load the declared backends in order (built-ins first) under the rules above."""
    chosen: dict[str, Found] = {}
    problems: list[Problem] = []
    for spec in specs:
        try:
            cls = _load(spec)
        except ValueError as exc:
            problems.append(Problem(spec, str(exc)))
            continue
        held = chosen.get(spec.name)
        if held is not None and held.cls is cls:
            continue  # the same class declared twice (installed metadata of a built-in)
        if held is None:
            chosen[spec.name] = Found(cls, spec, False)
        elif held.spec.origin == BUILTIN:
            logger.info(
                "backend %s: plugin %s (%s) replaces the built-in",
                spec.name,
                spec.value,
                spec.origin,
            )
            chosen[spec.name] = Found(cls, spec, True)
        else:
            reason = f"the name {spec.name!r} is already taken by {held.spec.origin}"
            problems.append(Problem(spec, reason))
    for problem in problems:
        _report(problem)
    found = sorted(
        chosen.values(), key=lambda f: (f.cls.priority, f.spec.origin != BUILTIN, f.spec.name)
    )
    return Discovery(tuple(found), tuple(problems))


_last: tuple[tuple[str, ...], Discovery] | None = None  # the latest path and its outcome


def discover(path: Sequence[str] | None = None) -> Discovery:
    """Built-in and plugin backends, best first.

    Args:
        path: directories to look for distributions in (default ``sys.path``; the result
            is then cached for as long as ``sys.path`` does not change).
    """
    global _last
    key = tuple(sys.path if path is None else path)
    with _lock:
        if _last is None or _last[0] != key:
            builtins = [PluginSpec(name, value, BUILTIN) for name, value in BUILTINS.items()]
            _last = (key, resolve([*builtins, *_declared(path)]))
        return _last[1]
