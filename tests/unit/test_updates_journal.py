"""The on-disk record of the update requests in progress, and the download limit keys."""

from __future__ import annotations

import pytest

from edge_agent.config import ConfigError, parse_config
from edge_agent.updates.journal import RequestJournal, final_state


def state(kind, rid="r1", reason=None, name="blobs", version="2.0.0"):
    return {"state": kind, "request_id": rid, "reason": reason, "name": name, "version": version}


def test_a_request_in_progress_is_recorded_per_state_and_removed_when_it_ends(tmp_path):
    journal = RequestJournal(tmp_path)
    journal.observe(state("downloading"))
    first = journal.path.stat().st_mtime_ns
    journal.observe(state("downloading"))  # a percent update: no rewrite
    assert journal.path.stat().st_mtime_ns == first
    assert journal.take()[:5] == ("r1", "blobs", "2.0.0", "downloading", "update")
    journal.observe(state("failed", rid="r2", reason="busy"))  # another request's refusal
    journal.observe(state("failed", reason="busy"))  # a refused duplicate of r1
    assert journal.take() is not None
    journal.observe(state("installing"))  # a new step is recorded: a crash names it
    assert journal.take().state == "installing"
    journal.observe(state("active"))
    assert journal.take() is None and not journal.path.exists()


def test_a_crash_in_the_health_check_names_that_step(tmp_path):
    journal = RequestJournal(tmp_path)
    for step in ("downloading", "verifying", "installing"):
        journal.observe(state(step))
    pending = RequestJournal(tmp_path).take()  # the next run, after a SIGKILL
    doc = final_state(pending, ("blobs", "1.0.0"))
    assert (doc["state"], doc["reason"], doc["request_id"]) == ("failed", "interrupted", "r1")
    assert "installed (switch or health check)" in doc["message"], doc
    assert "downloading" not in doc["message"]
    # Confirmed just before the crash: the request did succeed.
    assert final_state(pending, ("blobs", "2.0.0"))["state"] == "active"


def test_an_interrupted_answer_given_at_a_stop_is_not_given_again(tmp_path):
    journal = RequestJournal(tmp_path)
    journal.observe(state("verifying"))
    journal.observe(state("failed", reason="interrupted"), stopping=True)
    assert RequestJournal(tmp_path).take() is None  # the next run publishes nothing more


def test_queued_requests_survive_a_crash_until_answered(tmp_path):
    journal = RequestJournal(tmp_path)
    journal.queue("q1")
    journal.queue("q2")
    journal.begin("q1", "rollback")
    journal.observe(state("installing", rid="q1", name="blobs", version="1.0.0"))
    after = RequestJournal(tmp_path)  # the next run, after a SIGKILL
    running = after.take()
    assert running[:5] == ("q1", "blobs", "1.0.0", "installing", "rollback")
    assert after.take_queued() == ["q2"]
    # The rollback had switched the store before the crash: it did roll back.
    assert final_state(running, ("blobs", "1.0.0"))["state"] == "rolled_back"
    failed = final_state(running, ("blobs", "2.0.0"))
    assert (failed["state"], failed["reason"]) == ("failed", "interrupted")
    assert "rollback" in failed["message"]
    after.clear()  # the daemon answered the running one; the queued one stays
    assert RequestJournal(tmp_path).take_queued() == ["q2"]
    after.unqueue("q2")
    assert not journal.path.exists()


def test_a_request_that_crashed_before_its_first_state_is_still_answered(tmp_path):
    RequestJournal(tmp_path).begin("r9", "update")
    pending = RequestJournal(tmp_path).take()
    doc = final_state(pending, None)
    assert (doc["state"], doc["reason"], doc["request_id"]) == ("failed", "interrupted", "r9")
    assert "about to start" in doc["message"]


def test_a_record_of_the_previous_format_is_read(tmp_path):
    journal = RequestJournal(tmp_path)
    journal.path.write_text(
        '{"request_id":"r1","name":"blobs","version":"2.0.0","state":"verifying"}'
    )
    assert RequestJournal(tmp_path).take()[:5] == ("r1", "blobs", "2.0.0", "verifying", "update")


def test_a_garbled_record_is_ignored(tmp_path):
    journal = RequestJournal(tmp_path)
    journal.path.write_bytes(b"\x00not json")
    assert journal.take() is None


def test_download_limits_are_validated_with_file_and_key():
    ok = parse_config("[updates]\nattempt_timeout = 60\nupdate_timeout = 120\n", "c.toml", env={})
    assert (ok.updates.attempt_timeout, ok.updates.update_timeout) == (60.0, 120.0)
    assert (ok.updates.min_rate_bytes, ok.updates.min_rate_window) == (1024, 60.0)
    bad = {
        "[updates]\nattempt_timeout = 60\nupdate_timeout = 30\n": "updates.update_timeout",
        "[updates]\ndownload_timeout = 30\nattempt_timeout = 10\n": "updates.attempt_timeout",
        "[updates]\nmin_rate_bytes = -1\n": "updates.min_rate_bytes",
        "[updates]\nmin_rate_window = 0.5\n": "updates.min_rate_window",
    }
    for text, key in bad.items():
        with pytest.raises(ConfigError) as e:
            parse_config(text, "c.toml", env={})
        assert "c.toml" in str(e.value) and key in str(e.value), str(e.value)


@pytest.mark.parametrize("held", ['["rb"]', '"rb"', '{"rb": 3}'])
def test_a_damaged_held_list_keeps_the_running_and_queued_requests(tmp_path, held):
    (tmp_path / "update-request.json").write_text(
        '{"running": {"request_id": "r1", "name": "blobs", "version": "2.0.0", '
        '"state": "installing", "kind": "update"}, "queued": ["q1"], "held": ' + held + "}"
    )
    journal = RequestJournal(tmp_path)
    assert journal.take()[:2] == ("r1", "blobs")
    assert journal.take_queued() == ["q1"] and journal.take_held() == []


def test_a_held_rollback_is_on_disk_until_answered(tmp_path):
    from edge_agent.updates.requests import RequestKey

    journal = RequestJournal(tmp_path)
    journal.hold(RequestKey("rb", "d1"))
    assert RequestJournal(tmp_path).take_held() == [RequestKey("rb", "d1")]
    journal.unqueue("rb")
    assert not journal.path.exists()
