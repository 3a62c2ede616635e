"""Chaos: a power cut while a rollback ends a trial that waited for frames.

A rollback sent while a release on trial waits for camera frames is taken by the
trial (it ends it, switching back) and answered once the switch back is done. Until
then it was in memory only: a power cut during the switch back left the update
answered ``interrupted`` at the next start and the rollback never answered.
"""

from __future__ import annotations

import threading

import pytest

from edge_agent.updates.journal import RequestJournal
from tests.component import test_update_trial as trial

lab = trial.lab  # the fixture: the real update service, a stand-in supervisor

pytestmark = [pytest.mark.faults]


@pytest.mark.parametrize("sent", ["while_the_trial_waits", "before_the_trial_began"])
def test_a_rollback_taken_by_a_waiting_trial_is_journalled_until_answered(lab, sent):
    lab.service.start(lab.sup)
    trial.installed(lab, "1.0.0", "1.1.0")
    lab.sup.frames.clear()  # the cameras go down: the next release waits for frames
    switching_back, resume = threading.Event(), threading.Event()

    def slow_switch_back():
        switching_back.set()
        resume.wait(20)
        return trial.Ticket()

    lab.sup.switches.rollback = slow_switch_back
    if sent == "before_the_trial_began":  # queued behind the update, taken out for the trial
        lab.sup.block_prepare.set()
        trial.update(lab, "2.0.0", "trial")
        lab.states.wait(lambda _: any(s["state"] == "verifying" for s in lab.states.of("trial")))
        trial.rollback(lab, "rb")
        lab.sup.release.set()
    else:
        trial.update(lab, "2.0.0", "trial")
        lab.states.waiting("trial")
        trial.rollback(lab, "rb")
    assert switching_back.wait(20), "the trial did not give way to the rollback"
    # A power cut now: what the next start reads from the state dir.
    left = RequestJournal(lab.tmp / "state")
    assert left.take() is not None and left.take().request_id == "trial"
    held = [key.request_id for key in left.take_held()]
    assert held == ["rb"], "the rollback the trial took is not on disk"
    resume.set()
    answer = lab.states.final("rb")
    assert (answer["state"], answer["version"]) == ("rolled_back", "1.1.0"), answer
    assert trial.pointer(lab)["version"] == "1.1.0"
    assert lab.states.final("trial")["reason"] == "superseded"
    # Answered: off the journal, so the next start does not answer it again.
    after = RequestJournal(lab.tmp / "state")
    assert after.take_queued() == [] and after.take_held() == []
