"""edge-agent on a real 2-node RabbitMQ 3.10 cluster (MQTT plugin): devices on node A,
the operator on node B; results, availability, last will and ``model push`` cross the
cluster; killing node A moves the devices to B (``mqtt.hosts``) without losing a result.

One module, one cluster (``rabbit_cluster`` is module-scoped: a node takes ~10-20 s to
start). Skipped, with the reason, where rabbitmq-server is not installed.
"""

from __future__ import annotations

import time

import pytest

from edge_agent.publishing.connection import Connection
from edge_agent.publishing.settings import MqttSettings
from edge_agent.publishing.topics import Topics, group_status_request
from edge_agent.tools.release import operator
from edge_agent.tools.release.push import ServeSettings, push
from tests.component.test_updates_operator import (  # one simulated device, one release
    Device,
    collect,
    finals,
    pack_release,
)
from tests.support.broker import MqttSubscriber, wait_until
from tests.support.updates_e2e import retained

RESULTS = "edge/dev1/results"


def _addr(node) -> str:
    return f"{node.host}:{node.port}"


def _seqs(sub: MqttSubscriber, topic: str = RESULTS) -> list[int]:
    return list(dict.fromkeys(m.json()["seq"] for m in sub.on(topic)))


@pytest.fixture(scope="module")
def keys(tmp_path_factory):
    d = tmp_path_factory.mktemp("keys")
    return (
        d / "release.key",
        d / "release.pub",
        operator.keygen(d / "release.key", d / "release.pub"),
    )


@pytest.fixture
def operator_on_b(rabbit_cluster):
    sub = MqttSubscriber(rabbit_cluster.b.host, rabbit_cluster.b.port, ["edge/#"]).start()
    yield sub
    sub.stop()


def test_results_and_availability_cross_the_cluster(
    rabbit_cluster, operator_on_b, mqtt_publisher_factory
):
    a = rabbit_cluster.a
    pub = mqtt_publisher_factory(1883, hosts=(_addr(a), _addr(rabbit_cluster.b)))
    assert pub.wait_connected(20) and pub.broker == _addr(a)
    online = operator_on_b.wait_for("edge/dev1/available", timeout=10)
    assert online.payload == b"online"
    for i in range(200):
        pub.publish_result({"seq": i})
    wait_until(lambda: len(_seqs(operator_on_b)) == 200, 20, "results on node B")
    assert _seqs(operator_on_b) == list(range(200))
    wait_until(lambda: pub.stats()["inflight"] == 0, 10, "PUBACKs from node A")


def test_last_will_written_on_a_reaches_b(rabbit_cluster, operator_on_b):
    a = rabbit_cluster.a
    topics = Topics("edge", "lwt1", ())
    conn = Connection(
        MqttSettings(host=a.host, port=a.port, protocol="3.1.1"),
        topics,
        None,
        on_connected=lambda: None,
        on_ack=lambda *args: None,
        on_message=lambda msg: None,
    )
    conn.open()
    deadline = time.monotonic() + 10
    while not conn.subscribed and time.monotonic() < deadline:
        assert conn.step(0.1), conn.error
    operator_on_b.wait_for(topics.available, lambda m: m.payload == b"online", timeout=10)
    conn.close(clean=False)  # the socket just drops: node A publishes the will
    will = operator_on_b.wait_for(topics.available, lambda m: m.payload == b"offline", timeout=15)
    assert will.payload == b"offline"


def test_model_push_from_b_to_devices_on_a(rabbit_cluster, tmp_path, keys):
    a, b = rabbit_cluster.a, rabbit_cluster.b
    rel = pack_release(tmp_path, keys)
    cams = [Device(a, tmp_path, f"rcam-{i}", keys[1], groups=("yard",)) for i in (1, 2)]
    try:
        seen, report = collect()
        code = push(
            rel, broker=MqttSettings(hosts=(_addr(b),), connect_timeout=10.0), prefix="edge",
            devices=["rcam-1", "rcam-2"], serve=ServeSettings(host="127.0.0.1", port=0),
            timeout=60, report=report, public_keys=[str(keys[1])],
        )  # fmt: skip
        assert code == 0, seen
        assert finals(seen) == {"rcam-1": "active", "rcam-2": "active"}
        assert all(c.store.active(verify=True).label == "mobilenet@1.0.0" for c in cams)
    finally:
        for cam in cams:
            cam.close()


def test_group_members_answer_a_status_request_across_the_cluster(
    rabbit_cluster, operator_on_b, mqtt_publisher_factory
):
    a, b = rabbit_cluster.a, rabbit_cluster.b
    pub = mqtt_publisher_factory(1883, device="yard1", groups=("yard",), hosts=(_addr(a),))
    assert pub.wait_connected(20)
    pub.publish_status({"state": "running", "groups": ["yard"]})
    operator_on_b.wait_for("edge/yard1/status", timeout=10)  # live, as it was written
    # RabbitMQ 3.10 gives retained messages only to a subscription without wildcards, and
    # only on the node they were written to: a newcomer to "edge/+/status" gets nothing,
    # on either node, while the exact topic on node A has it.
    for node in (a, b):
        late = MqttSubscriber(node.host, node.port, ["edge/+/status"]).start()
        try:
            late.publish(group_status_request("edge", "nobody"), b"{}", qos=1, timeout=5)
            assert late.on("edge/yard1/status") == []
        finally:
            late.stop()
    assert retained(a, "edge/yard1/status")["groups"] == ["yard"]
    # So an operator asks: the members answer live, and the answer crosses the cluster.
    late = MqttSubscriber(b.host, b.port, ["edge/+/status"]).start()
    try:
        late.publish(group_status_request("edge", "yard"), b"{}", qos=1, timeout=5)
        answer = late.wait_for("edge/yard1/status", timeout=10)
        assert answer.json()["groups"] == ["yard"]
    finally:
        late.stop()


def test_qos2_results_are_taken_as_qos1_and_still_acknowledged(
    rabbit_cluster, operator_on_b, mqtt_publisher_factory
):
    # RabbitMQ 3.10 downgrades QoS 2 to 1: the PUBACK must still release the results.
    a = rabbit_cluster.a
    pub = mqtt_publisher_factory(1883, device="dev3", hosts=(_addr(a),), qos_results=2)
    assert pub.wait_connected(20)
    for i in range(50):
        pub.publish_result({"seq": i})
    topic = "edge/dev3/results"
    wait_until(lambda: len(_seqs(operator_on_b, topic)) == 50, 20, "QoS 2 results on node B")
    assert _seqs(operator_on_b, topic) == list(range(50))
    wait_until(lambda: pub.stats()["published"] >= 50, 10, "every result acknowledged")
    assert pub.stats()["inflight"] == 0


def test_a_staged_rollout_from_b_completes_on_simulated_devices_on_a(rabbit_cluster, tmp_path):
    # 20 simulated devices (the daemon's own update path) on node A; the operator's
    # rollout on node B finds them by asking the group (retained statuses stay on A),
    # sends wave by wave, and follows their live model states across the cluster.
    from edge_agent.tools.fleet.bench import GROUP, demo_fleet, make_release
    from edge_agent.tools.fleet.fleet import Fleet
    from edge_agent.tools.fleet.rollout_bench import _serve
    from edge_agent.tools.release.rollout.plan import Plan
    from edge_agent.tools.release.rollout.runner import Runner, start
    from edge_agent.tools.release.rollout.store import DeviceStep, RolloutStatus, RolloutStore

    a, b = rabbit_cluster.a, rabbit_cluster.b
    release, public = make_release(tmp_path)
    server = _serve(release)
    settings = demo_fleet(20, tmp_path / "agents", public, a.host, a.port, processes=1)
    counter = MqttSubscriber(b.host, b.port, ["fleet/+/cmd/model/+"]).start()
    try:
        with Fleet(settings) as fleet:
            mqtt = MqttSettings(hosts=(_addr(b),), connect_timeout=10.0)
            store = RolloutStore(tmp_path / "ops")
            t0 = time.monotonic()
            ro = start(release, group=GROUP, plan=Plan.parse("1,25%,100%", "0", device_timeout=120),
                       broker=mqtt, prefix="fleet", base_url=server.url, store=store,
                       discover_seconds=3.0)  # fmt: skip
            assert sorted(d for w in ro.waves for d in w) == fleet.device_ids
            final = Runner(store, ro.id, mqtt).run()
            took = time.monotonic() - t0
            assert final.status is RolloutStatus.COMPLETED
            assert all(r.step is DeviceStep.ACTIVE for r in final.devices.values())
            outcomes = fleet.wait_terminal(ro.request_id, 30)
            assert all(o.active and o.version == "2" for o in outcomes.values())
        per_device: dict[str, int] = {}
        for topic, n in list(counter.counts.items()):
            per_device[topic.split("/")[1]] = per_device.get(topic.split("/")[1], 0) + n
        assert per_device == dict.fromkeys(fleet.device_ids, 1)
        print(f"FIGURE rabbit_rollout: devices=20 waves={[len(w) for w in ro.waves]} "
              f"start_to_completed_s={took:.1f}")  # fmt: skip
    finally:
        counter.stop()
        server.stop()


def test_killing_node_a_moves_devices_to_b_without_losing_a_result(
    rabbit_cluster, operator_on_b, mqtt_publisher_factory
):
    # Last in the module: node A does not come back.
    a, b = rabbit_cluster.a, rabbit_cluster.b
    pub = mqtt_publisher_factory(1883, device="dev2", hosts=(_addr(a), _addr(b)))
    assert pub.wait_connected(20) and pub.broker == _addr(a)
    topic = "edge/dev2/results"
    pub.publish_status({"state": "running"})
    for i in range(100):
        pub.publish_result({"seq": i})
    wait_until(lambda: len(_seqs(operator_on_b, topic)) >= 50, 20, "results via node A")
    a.kill()
    killed = time.monotonic()
    for i in range(100, 300):
        pub.publish_result({"seq": i})
    wait_until(lambda: pub.broker == _addr(b), 30, "failover to node B")
    moved = time.monotonic() - killed
    wait_until(lambda: 299 in _seqs(operator_on_b, topic), 30, "every result via node B")
    print(
        f"FIGURE rabbitmq failover: on node B {moved:.2f}s after node A was killed, every "
        f"result there {time.monotonic() - killed:.2f}s after; replayed {pub.stats()['replayed']}"
    )
    # The operator's session on B never broke: it saw every result, in order.
    assert _seqs(operator_on_b, topic) == list(range(300))
    # The device wrote its retained state again on B, so a newcomer there finds it.
    assert retained(b, "edge/dev2/status")["state"] == "running"
    assert pub.stats()["reconnects"] == 1
