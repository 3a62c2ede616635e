"""Backend discovery: built-ins plus ``edge_agent.backends`` entry points.

Each test writes real distributions (``*.dist-info`` with METADATA and
entry_points.txt, and the plugin's module) into its tmp dir and discovers from there,
as ``importlib.metadata`` does from ``sys.path``.
"""

from __future__ import annotations

import configparser
import itertools
import logging
import sys
import textwrap

import pytest

from edge_agent.config import ConfigError, parse_config
from edge_agent.daemon.app import model_options
from edge_agent.errors import BackendUnavailable
from edge_agent.inference.backends import discovery
from edge_agent.inference.backends.base import BUILTINS, ENTRY_POINT_GROUP, ModelRequest, registered
from edge_agent.inference.backends.cpu import CpuBackend
from edge_agent.inference.backends.edgetpu import EdgeTpuBackend
from edge_agent.inference.engine import candidate_backends
from edge_agent.tools.doctor.host import OK, WARN, HostChecks
from edge_agent.tools.doctor.report import Report
from tests.support.paths import REPO

_ids = itertools.count()

PLUGIN = """
from edge_agent.inference.backends.base import Backend

class {cls}(Backend):
    name = {name!r}
    priority = {priority!r}
    kinds = frozenset({kinds!r})

    def open(self, request):
        raise RuntimeError("no {name} accelerator on this machine")
"""


def distribution(root, dist: str, entries: dict[str, str], version: str = "1.0") -> None:
    """A distribution declaring ``entries`` (name -> module:attr) in the backends group."""
    info = root / f"{dist.replace('-', '_')}-{version}.dist-info"
    info.mkdir(parents=True)
    (info / "METADATA").write_text(f"Metadata-Version: 2.1\nName: {dist}\nVersion: {version}\n")
    lines = [f"[{ENTRY_POINT_GROUP}]", *(f"{k} = {v}" for k, v in entries.items())]
    (info / "entry_points.txt").write_text("\n".join(lines) + "\n")


def module(root, source: str) -> str:
    """Write a uniquely named module; return its name."""
    name = f"edge_agent_test_plugin_{next(_ids)}"
    (root / f"{name}.py").write_text(textwrap.dedent(source))
    return name


def backend_module(root, name="hailo", priority=50, kinds=("auto", "pci"), cls="Accel") -> str:
    """A module holding one working Backend subclass; returns ``module:Class``."""
    source = PLUGIN.format(cls=cls, name=name, priority=priority, kinds=set(kinds))
    return f"{module(root, source)}:{cls}"


@pytest.fixture
def site(tmp_path, monkeypatch):
    """A directory that is importable, for modules and distributions."""
    monkeypatch.syspath_prepend(str(tmp_path))
    return tmp_path


def names(found: discovery.Discovery) -> list[str]:
    return [f.spec.name for f in found.found]


def test_builtins_need_no_installed_metadata(tmp_path):
    found = discovery.discover([str(tmp_path)])  # a path without any distribution
    assert found.backends == (EdgeTpuBackend, CpuBackend)
    assert [f.spec.origin for f in found.found] == ["built-in", "built-in"]
    assert found.problems == ()


def test_setup_cfg_declares_the_builtins_as_entry_points():
    parser = configparser.ConfigParser()
    parser.read(REPO / "setup.cfg")
    declared = parser["options.entry_points"][ENTRY_POINT_GROUP].strip().splitlines()
    assert dict(line.replace(" ", "").split("=") for line in declared) == BUILTINS


def test_a_plugin_is_ranked_by_priority_between_the_builtins(site):
    distribution(site, "edge-agent-hailo", {"hailo": backend_module(site)}, "2.1")
    found = discovery.discover([str(site)])
    assert names(found) == ["edgetpu", "hailo", "cpu"]
    hailo = found.get("hailo")
    assert hailo.spec.origin == "edge-agent-hailo 2.1" and not hailo.replaces_builtin
    # auto tries it after the Edge TPU and before the CPU; "cpu" and "usb" never do.
    pool = [cls() for cls in found.backends]
    assert [b.name for b in candidate_backends("auto", pool)] == ["edgetpu", "hailo", "cpu"]
    assert [b.name for b in candidate_backends("pci:1", pool)] == ["edgetpu", "hailo", "cpu"]
    assert [b.name for b in candidate_backends("cpu", pool)] == ["cpu"]
    assert [b.name for b in candidate_backends("usb", pool)] == ["edgetpu", "cpu"]


def test_registered_follows_sys_path(site):
    assert "npu" not in [cls.name for cls in registered()]
    distribution(site, "edge-agent-npu", {"npu": backend_module(site, "npu", 20)})
    site.joinpath("other").mkdir()
    sys.path.insert(1, str(site / "other"))  # a changed sys.path is a new discovery
    try:
        assert [cls.name for cls in registered()] == ["edgetpu", "npu", "cpu"]
    finally:
        sys.path.remove(str(site / "other"))


BROKEN = {
    "import error": ("import edge_agent_no_such_module\n", "ModuleNotFoundError"),
    "exit at import": ("raise SystemExit(3)\n", "SystemExit: 3"),
    "not a class": ("Thing = 42\n", "is 42, not a Backend subclass"),
    "not a backend": ("class Thing:\n    name = 'broken'\n", "not a Backend subclass"),
    "abstract": (
        "from edge_agent.inference.backends.base import Backend\n"
        "class Thing(Backend):\n    name = 'broken'\n    priority = 1\n"
        "    kinds = frozenset({'auto'})\n",
        "does not implement open()",
    ),
    "constructor fails": (
        PLUGIN.format(cls="Thing", name="broken", priority=1, kinds={"auto"})
        + "    def __init__(self):\n        raise OSError('no /dev/accel0')\n",
        "Thing() fails: OSError: no /dev/accel0",
    ),
}


@pytest.mark.parametrize("case", sorted(BROKEN))
def test_a_broken_plugin_is_logged_once_with_its_name_and_skipped(site, caplog, case):
    source, reason = BROKEN[case]
    distribution(site, "edge-agent-broken", {"broken": f"{module(site, source)}:Thing"})
    with caplog.at_level(logging.WARNING, logger=discovery.__name__):
        for _ in range(3):  # repeated discoveries (a cache miss each time) log it once
            found = discovery.resolve(discovery._declared([str(site)]))
    assert names(found) == []
    [problem] = found.problems
    assert problem.spec.name == "broken" and problem.spec.origin == "edge-agent-broken 1.0"
    assert reason in problem.reason
    logged = [r.getMessage() for r in caplog.records]
    assert len(logged) == 1 and logged[0].startswith(
        "backend plugin broken (edge-agent-broken 1.0) skipped: "
    )
    # The built-ins still load beside it.
    assert discovery.discover([str(site)]).backends == (EdgeTpuBackend, CpuBackend)


@pytest.mark.parametrize(
    "attrs, reason",
    [
        ({"name": "other"}, "name is 'other': it must equal the entry point name 'accel'"),
        ({"priority": "high"}, "priority is 'high', not an integer"),
        ({"kinds": ("gpu",)}, "kinds is frozenset({'gpu'})"),
    ],
)
def test_a_plugin_with_wrong_attributes_is_skipped(site, attrs, reason):
    values = {"name": "accel", "priority": 30, "kinds": ("auto",), **attrs}
    target = backend_module(site, **values)
    distribution(site, "edge-agent-accel", {"accel": target})
    found = discovery.discover([str(site)])
    assert names(found) == ["edgetpu", "cpu"]
    assert [p.spec.name for p in found.problems] == ["accel"]
    assert reason in found.problems[0].reason


def test_duplicate_names_first_plugin_wins_and_a_plugin_may_replace_a_builtin(site):
    first, second = site / "a", site / "b"
    first.mkdir(), second.mkdir()
    distribution(first, "edge-agent-accel-one", {"accel": backend_module(site, "accel", 30)})
    distribution(second, "edge-agent-accel-two", {"accel": backend_module(site, "accel", 5)})
    replacement = backend_module(site, "edgetpu", 10, ("auto", "usb", "pci"))
    distribution(second, "community-edgetpu", {"edgetpu": replacement})
    found = discovery.discover([str(first), str(second)])
    assert names(found) == ["edgetpu", "accel", "cpu"]
    assert found.get("accel").spec.origin == "edge-agent-accel-one 1.0"
    assert found.get("edgetpu").replaces_builtin
    assert found.get("edgetpu").spec.value == replacement
    [problem] = found.problems
    assert problem.spec.origin == "edge-agent-accel-two 1.0"
    assert problem.reason == "the name 'accel' is already taken by edge-agent-accel-one 1.0"


def test_installed_metadata_of_the_builtins_and_a_distribution_seen_twice_count_once(site):
    copy = site / "copy"
    copy.mkdir()
    for root in (site, copy):  # e.g. site-packages and a stale copy later on the path
        distribution(root, "edge-agent", dict(BUILTINS, hailo=backend_module(site)), "9.9")
    found = discovery.discover([str(site), str(copy)])
    assert names(found) == ["edgetpu", "hailo", "cpu"]
    assert not found.get("edgetpu").replaces_builtin
    assert found.problems == ()


def test_a_foreign_exception_from_open_costs_that_backend_only(site):
    distribution(site, "edge-agent-hailo", {"hailo": backend_module(site)})
    hailo = discovery.discover([str(site)]).get("hailo").cls()
    with pytest.raises(BackendUnavailable, match=r"backend hailo failed: RuntimeError: no hailo"):
        hailo.open(ModelRequest("m.tflite", None, "auto", 1))


@pytest.mark.parametrize("value", ["", "/usr/lib/libedgetpu-max.so.1", "libedgetpu.so.1"])
def test_edgetpu_library_takes_an_absolute_path_or_a_library_name(value):
    config = parse_config(f'[model]\nedgetpu_library = "{value}"\n', "c.toml", env={})
    assert config.model.edgetpu_library == value
    assert model_options(config).request().edgetpu_library == value  # what the worker gets


def test_edgetpu_library_relative_path_is_blamed_on_the_key():
    with pytest.raises(ConfigError) as info:
        parse_config('[model]\nedgetpu_library = "lib/libedgetpu.so.1"\n', "c.toml", env={})
    assert info.value.key == "model.edgetpu_library"
    assert "an absolute path or a library file name" in str(info.value)


def test_the_doctor_lists_backends_and_the_plugins_it_skipped(site):
    distribution(site, "edge-agent-hailo", {"hailo": backend_module(site)}, "2.1")
    slow = backend_module(site, "slow", 150, ("auto",))
    distribution(site, "edge-agent-slow", {"slow": slow, "broken": "edge_agent_nowhere:X"})
    report = Report()
    HostChecks(report, str(site), str(site)).backends()
    checks = {c.name: c for c in report.checks if c.section == "Backends"}
    assert list(checks) == ["edgetpu", "hailo", "cpu", "slow", "broken"]
    assert checks["hailo"].status == OK
    hailo = discovery.discover().get("hailo").spec.value
    assert checks["hailo"].detail == f"edge-agent-hailo 2.1: {hailo}, priority 50, serves auto, pci"
    assert checks["edgetpu"].detail.startswith("built-in: edge_agent.inference.backends.edgetpu")
    assert checks["slow"].detail.endswith(
        "ranks after the CPU, so auto tries it only if the CPU fails"
    )
    assert checks["broken"].status == WARN
    assert checks["broken"].detail.startswith(
        "edge-agent-slow 1.0 (edge_agent_nowhere:X) skipped: cannot import edge_agent_nowhere:X"
    )
