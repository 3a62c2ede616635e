"""``edge-agent model rollout`` and ``model push``: bad input is a one-line error with a
non-zero exit, never a traceback (no broker needed: all of it is refused before)."""

from __future__ import annotations

import pytest

from edge_agent.cli import main


def run(argv, capsys):
    """The exit code and stderr of the CLI; any exception but SystemExit fails the test."""
    try:
        code = main(argv)
    except SystemExit as exc:  # argparse's usage errors
        code = exc.code
    return code, capsys.readouterr().err


START = ["model", "rollout", "start", "--group", "lobby", "--base-url", "http://127.0.0.1:1/"]


@pytest.mark.parametrize(
    "args, named",
    [
        (["--waves", "abc"], "argument --waves: 'abc' is not a count or a percentage"),
        (["--waves", ","], "argument --waves: a plan needs at least one wave"),
        (["--threshold", "200%"], "argument --threshold: '200%' must be a count"),
        (["--soak", "nan"], "argument --soak: "),
        (["--device-timeout", "0"], "argument --device-timeout: "),
        (["--offline-wait", "-1"], "argument --offline-wait: "),
        (["--discover", "nan"], "argument --discover: "),  # waited forever
        (["--id", "a b"], "argument --id: bad rollout id 'a b'"),
        (["--group", "a/b"], "argument --group: group must match"),
    ],
)
def test_a_bad_rollout_start_option_is_a_usage_error_naming_it(args, named, tmp_path, capsys):
    code, err = run([*START, str(tmp_path), "--state-dir", str(tmp_path), *args], capsys)
    assert code == 2 and named in err, err


@pytest.mark.parametrize("action", ["status", "resume", "abort"])
def test_a_rollout_id_that_is_no_file_name_is_a_usage_error(action, tmp_path, capsys):
    code, err = run(["model", "rollout", action, "../x", "--state-dir", str(tmp_path)], capsys)
    assert code == 2 and "argument id: bad rollout id '../x'" in err, err


@pytest.mark.parametrize(
    "serve", [["--base-url", "http://127.0.0.1:1/"], ["--serve", "127.0.0.1:0"]]
)
def test_a_missing_release_names_its_manifest(serve, tmp_path, capsys):
    missing = tmp_path / "no-release"
    argv = ["model", "rollout", "start", str(missing), "--group", "lobby", *serve]
    code, err = run([*argv, "--state-dir", str(tmp_path)], capsys)
    assert code == 2, err
    assert err.strip() == (
        f"edge-agent model: error: bad_manifest: {missing / 'manifest.json'}: "
        "No such file or directory"
    )


@pytest.mark.parametrize(
    "args, named",
    [
        (["--device", "a b"], "argument --device: device id must match"),
        (["--group", "a/b"], "argument --group: group must match"),
        (["--device", "d1", "--timeout", "nan"], "argument --timeout: "),
        (["--device", "d1", "--timeout", "-5"], "argument --timeout: "),
        # A negative canary was no canary: every device updated at once.
        (["--group", "g", "--canary", "-3"], "argument --canary: expected integer >= 0, got -3"),
    ],
)
def test_a_bad_push_option_is_a_usage_error_naming_it(args, named, tmp_path, capsys):
    code, err = run(["model", "push", str(tmp_path), *args], capsys)
    assert code == 2 and named in err, err


@pytest.mark.parametrize(
    "argv, named",
    [
        (["model", "push", "rel", "--device", "d1", "--serve", "0.0.0.0:abc"], "--serve"),
        (["model", "push", "rel", "--device", "d1", "--serve", "0.0.0.0:99999"], "--serve"),
        ([*START, "rel", "--serve", "127.0.0.1:http"], "--serve"),
        ([*START, "rel", "--broker", "localhost:abc"], "--broker"),
        (["model", "rollout", "abort", "r1", "--broker", "localhost:70000"], "--broker"),
    ],
)
def test_a_bad_port_is_a_usage_error_naming_the_option(argv, named, capsys):
    # int('abc') raised ValueError, and port 99999 an OverflowError from bind().
    code, err = run(argv, capsys)
    assert code == 2 and f"argument {named}: expected HOST[:PORT] with a port 0..65535" in err, err
