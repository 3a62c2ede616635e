"""The 2-node RabbitMQ cluster fixture (:mod:`edge_agent.tools.fleet.rabbit`) for the
cluster tests: skipped, with the reason, where it cannot run."""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from edge_agent.tools.fleet.rabbit import RabbitCluster, unavailable


@pytest.fixture(scope="module")
def rabbit_cluster(tmp_path_factory) -> Iterator[RabbitCluster]:
    """A started 2-node cluster for one test module (starting one takes ~20-40 s)."""
    why = unavailable()
    if why:
        pytest.skip(why)
    cluster = RabbitCluster(tmp_path_factory.mktemp("rabbitmq"))
    try:
        took = cluster.start()
    except Exception as exc:
        logs = cluster.a.logs() + cluster.b.logs()
        cluster.stop()
        # Where RabbitMQ cannot run (no Erlang distribution, a sandbox), say why.
        pytest.skip(f"the RabbitMQ cluster cannot start here: {exc}\n{logs[-1500:]}")
    print(f"rabbitmq cluster up in {took:.1f}s: {cluster.a!r} {cluster.b!r}")
    yield cluster
    cluster.stop()
