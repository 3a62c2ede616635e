"""Answers a start gives for the requests a power cut left unfinished are answers like any
other: the same command sent again gets them again, it does not run a second time.

The daemon's real update service (store, installer, runner, ledger, journal) with the
stand-in supervisor of ``test_update_trial``; the power cut is a ``Crash`` raised at the
worst instant of the first run, and the next start is a new service on the same state dir.
"""

from __future__ import annotations

import pytest

from edge_agent.daemon.model_updates import UpdateService
from edge_agent.daemon.options import model_options
from tests.component.test_update_trial import (  # noqa: F401 (lab is a fixture)
    FakeSupervisor,
    installed,
    lab,
    pointer,
    rollback,
    update,
)
from tests.support.model_states import States


class Crash(BaseException):
    """Stands for a power cut: nothing after it runs, the disk stays as it is."""


@pytest.mark.filterwarnings("ignore::pytest.PytestUnhandledThreadExceptionWarning")
def test_a_rollback_answered_by_the_next_start_is_not_run_again_when_repeated(lab):  # noqa: F811
    lab.service.start(lab.sup)
    installed(lab, "1.0.0", "1.1.0", "1.2.0")
    store_rollback = lab.service.store.rollback
    cut = []

    def rollback_then_power_cut(**kw):
        result = store_rollback(**kw)  # the store has switched back to 1.1.0 ...
        cut.append(result)
        raise Crash("power cut")  # ... and the answer never went out

    lab.service.store.rollback = rollback_then_power_cut
    rollback(lab, "rb")
    lab.states.wait(lambda items: bool(cut))
    assert lab.states.finals("rb") == []
    assert pointer(lab)["version"] == "1.1.0"

    # The next start, on the same state dir.
    states, sup = States(), FakeSupervisor()
    again = UpdateService(lab.config, model_options(lab.config), None, states)
    try:
        again.start(sup)
        final = states.final("rb")
        assert (final["state"], final["reason"], final["version"]) == (
            "rolled_back",
            "requested",
            "1.1.0",
        ), final
        # The operator did not see that answer (or runs `rollout abort --abort-rollback`
        # again): the same command comes again. It was answered: it gets that answer.
        rollback_payload = b'{"request_id": "rb"}'
        again.handle("model/rollback", rollback_payload, "edge/cam/cmd/model/rollback")
        states.wait(lambda items: len(states.finals("rb")) == 2)
        repeat = states.finals("rb")[1]
        assert (repeat["state"], repeat["version"]) == ("rolled_back", "1.1.0"), repeat
        assert pointer(lab)["version"] == "1.1.0", "the rollback ran a second time"
    finally:
        again.stop(5.0)
        sup.close()


def test_a_command_repeated_before_startup_is_kept_once_and_answered_once(lab):  # noqa: F811
    # queue_depth 2. The same rollback three times while the daemon starts (QoS 1
    # redelivery, an operator's retry, a resumed rollout): a repeat, not three commands.
    for _ in range(3):
        rollback(lab, "same")
    rollback(lab, "other")  # a second command still has room
    assert lab.states.finals("same") == [], "a repeat was refused: two answers for one request"
    assert lab.states.finals("other") == []
    lab.service.start(lab.sup)
    lab.states.wait_finals(["same", "other"])
    for rid in ("same", "other"):
        finals = lab.states.finals(rid)
        assert [(f["state"], f["reason"]) for f in finals] == [("failed", "no_previous")], finals


def test_an_answered_command_repeated_while_the_daemon_starts_keeps_its_answer(lab):  # noqa: F811
    lab.service.start(lab.sup)
    installed(lab, "1.0.0", "1.1.0")
    rollback(lab, "rb")
    done = lab.states.final("rb")
    assert (done["state"], done["version"]) == ("rolled_back", "1.0.0"), done
    lab.service.stop(5.0)

    def life():
        states = States()
        return states, UpdateService(lab.config, model_options(lab.config), None, states)

    # The next start: while its model loads, the same command comes again (the operator
    # did not see the answer), and the power goes before the start completes.
    states, booting = life()
    booting.handle("model/rollback", b'{"request_id": "rb"}', "edge/cam/cmd/model/rollback")
    # The start after that: the command must not be said interrupted ("send it again":
    # sent again, it would go one more release back); it was answered rolled_back.
    states, again = life()
    sup = FakeSupervisor()
    try:
        again.start(sup)
        assert again.last_state is not None  # the start published its state
        wrong = [s for s in states.finals("rb") if s["state"] != "rolled_back"]
        assert wrong == [], wrong
    finally:
        again.stop(5.0)
        sup.close()
    assert pointer(lab)["version"] == "1.0.0"


@pytest.mark.filterwarnings("ignore::pytest.PytestUnhandledThreadExceptionWarning")
def test_a_rollback_taken_by_a_trial_cut_by_a_power_cut_is_answered_as_the_switch_back(lab):  # noqa: F811
    lab.service.start(lab.sup)
    installed(lab, "1.0.0", "1.1.0")
    lab.sup.frames.clear()  # the cameras are down: 2.0.0 waits on trial for frames
    update(lab, "2.0.0", "trial")
    lab.states.waiting("trial")
    cut = []

    def power_cut(**kw):  # the trial gives way to the rollback: the power goes right then
        cut.append(kw)
        raise Crash("power cut")

    lab.service.store.rollback = power_cut
    rollback(lab, "rb")
    lab.states.wait(lambda items: bool(cut))
    assert lab.states.finals("rb") == [] and pointer(lab)["version"] == "2.0.0"

    states, sup = States(), FakeSupervisor()
    again = UpdateService(lab.config, model_options(lab.config), None, states)
    try:
        assert again.startup_model() is not None  # recovery: the trial is undone
        again.start(sup)
        assert pointer(lab)["version"] == "1.1.0"
        # The switch back was the rollback asked for: it is answered so, not "interrupted,
        # send it again" (sent again, it would go a second release back, to 1.0.0).
        answer = states.final("rb")
        assert (answer["state"], answer["reason"], answer["version"]) == (
            "rolled_back",
            "requested",
            "1.1.0",
        ), answer
        again.handle("model/rollback", b'{"request_id": "rb"}', "edge/cam/cmd/model/rollback")
        states.wait(lambda items: len(states.finals("rb")) == 2)
        assert pointer(lab)["version"] == "1.1.0", "the rollback ran a second time"
    finally:
        again.stop(5.0)
        sup.close()
