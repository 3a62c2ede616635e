"""Tier 1: the cores a process may use, from its affinity mask and its cgroup CPU quota."""

import os

import pytest

from edge_agent.inference.cores import available_cores, quota_cores


def _tree(tmp_path, files, cgroup_lines):
    for rel, text in files.items():
        path = tmp_path / "fs" / rel
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(text)
    proc = tmp_path / "cgroup"
    proc.write_text("".join(f"{line}\n" for line in cgroup_lines))
    return str(tmp_path / "fs"), str(proc)


@pytest.mark.parametrize(
    ("files", "lines", "expected"),
    [
        ({"docker/abc/cpu.max": "200000 100000"}, ["0::/docker/abc"], 2.0),  # v2, own path
        ({"cpu.max": "150000 100000"}, ["0::/"], 1.5),  # v2, a container's own root
        ({"cpu.max": "max 100000"}, ["0::/"], None),  # v2, unlimited
        (
            {
                "cpu,cpuacct/k8s/pod/cpu.cfs_quota_us": "50000",
                "cpu,cpuacct/k8s/pod/cpu.cfs_period_us": "100000",
            },
            ["4:cpu,cpuacct:/k8s/pod"],
            0.5,
        ),  # v1 with the usual combined mount
        ({"cpu/cpu.cfs_quota_us": "-1", "cpu/cpu.cfs_period_us": "100000"}, ["1:cpu:/"], None),
        ({}, ["0::/"], None),  # no cgroup files at all
        ({"cpu.max": "garbage"}, ["0::/"], None),
    ],
)
def test_quota_in_cores(tmp_path, files, lines, expected):
    root, proc = _tree(tmp_path, files, lines)
    assert quota_cores(root, proc) == expected


def test_available_cores_take_the_smaller_of_affinity_and_quota(tmp_path):
    affinity = len(os.sched_getaffinity(0))
    root, proc = _tree(tmp_path, {"cpu.max": "max 100000"}, ["0::/"])
    assert available_cores(root, proc) == affinity
    root, proc = _tree(tmp_path, {"cpu.max": "150000 100000"}, ["0::/"])
    assert available_cores(root, proc) == min(affinity, 2)  # 1.5 cores: two threads
    root, proc = _tree(tmp_path, {"cpu.max": "1000 100000"}, ["0::/"])
    assert available_cores(root, proc) == 1  # a hundredth of a core still runs one
