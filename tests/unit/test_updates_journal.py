"""The on-disk record of the update request in progress, and the download limit keys."""

from __future__ import annotations

import pytest

from edge_agent.config import ConfigError, parse_config
from edge_agent.updates.journal import RequestJournal, final_state


def state(kind, rid="r1", reason=None, name="blobs", version="2.0.0"):
    return {"state": kind, "request_id": rid, "reason": reason, "name": name, "version": version}


def test_a_request_in_progress_is_recorded_once_and_removed_when_it_ends(tmp_path):
    journal = RequestJournal(tmp_path)
    journal.observe(state("downloading"))
    first = journal.path.stat().st_mtime_ns
    journal.observe(state("downloading"))  # a percent update: no rewrite
    assert journal.path.stat().st_mtime_ns == first
    assert journal.take() == ("r1", "blobs", "2.0.0", "downloading")
    journal.observe(state("failed", rid="r2", reason="busy"))  # another request's refusal
    journal.observe(state("failed", reason="busy"))  # a refused duplicate of r1
    assert journal.take() is not None
    journal.observe(state("active"))
    assert journal.take() is None and not journal.path.exists()


def test_a_stop_keeps_the_record_for_the_next_start(tmp_path):
    journal = RequestJournal(tmp_path)
    journal.observe(state("verifying"))
    journal.observe(state("failed", reason="interrupted"), stopping=True)
    pending = RequestJournal(tmp_path).take()  # the next run
    assert pending == ("r1", "blobs", "2.0.0", "verifying")
    doc = final_state(pending, ("color_blobs", ""))
    assert (doc["state"], doc["reason"], doc["request_id"]) == ("failed", "interrupted", "r1")
    assert "verifying" in doc["message"]
    # Confirmed just before the stop: the request did succeed.
    assert final_state(pending, ("blobs", "2.0.0"))["state"] == "active"


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
