"""The request ledger: answered commands, known by request id and command digest."""

from __future__ import annotations

from edge_agent.updates.requests import RequestLedger, Seen, request_key


def test_a_reused_request_id_does_not_make_the_first_command_run_again(tmp_path):
    # "r1" for a rollback, then (an operator's habit) "r1" again for an update: two
    # requests. The rollback redelivered afterwards was answered: it must not run again.
    ledger = RequestLedger(tmp_path / "requests.json")
    back = request_key("rollback", "r1", b'{"request_id": "r1"}')
    update = request_key("update", "r1", b'{"request_id": "r1", "manifest_url": "x"}')
    for key, state in ((back, "rolled_back"), (update, "active")):
        assert ledger.admit(key)[0] is Seen.NEW
        ledger.answer(key, {"state": state, "reason": None, "request_id": "r1"})
    for reloaded in (ledger, RequestLedger(tmp_path / "requests.json")):
        assert reloaded.admit(back) == (Seen.ANSWERED, {"state": "rolled_back", "reason": None,
                                                       "request_id": "r1"})  # fmt: skip
        assert reloaded.admit(update)[1]["state"] == "active"
