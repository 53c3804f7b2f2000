"""The wire format between `visavis serve` and its media children, and the restart
back-off (sans-I/O: no processes here; tests/test_processes.py runs the real ones)."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from pydantic import SecretStr

from visavis.config import Settings
from visavis.supervision import (
    Ready,
    RestartBackoff,
    WireError,
    command_line,
    error_line,
    hello_line,
    parse_command,
    parse_hello,
    parse_report,
    ready_line,
)


def test_the_child_gets_the_parents_settings_secrets_included(tmp_path: Path) -> None:
    settings = Settings(
        data_dir=tmp_path,
        shared_secret=SecretStr("s3cret"),
        relay={"static-auth-secret": "rest-secret", "user": ["alice:pw"], "listening-port": 0},
        sfu={"allowed_networks": ["127.0.0.0/8"], "media_port": 0},
        signaling={"port": 0},
        metrics_port=9100,
    )
    hello = parse_hello(hello_line(settings, "relay", "/run/x/relay.sock"))
    got = hello.settings
    assert hello.part == "relay" and hello.metrics_socket == "/run/x/relay.sock"
    assert got.role == "relay" and got.metrics_port is None  # the parent serves /metrics
    assert got.shared_secret is not None and got.shared_secret.get_secret_value() == "s3cret"
    assert got.relay.static_auth_secret is not None
    assert got.relay.static_auth_secret.get_secret_value() == "rest-secret"
    assert got.relay.user == ["alice:pw"] and got.relay.listening_port == 0
    assert got.data_dir == tmp_path and got.node_id == settings.node_id
    assert got.sfu == settings.sfu and got.fleet == settings.fleet
    assert got.model_dump(exclude={"role", "metrics_port"}) == settings.model_dump(
        exclude={"role", "metrics_port"}
    )


def test_the_environment_does_not_override_the_parents_settings(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    line = hello_line(Settings(data_dir=tmp_path, relay={"realm": "a"}), "relay", "s")
    monkeypatch.setenv("VISAVIS_RELAY__REALM", "b")
    assert parse_hello(line).settings.relay.realm == "a"


def test_an_unreadable_hello_never_echoes_the_line() -> None:
    with pytest.raises(WireError) as caught:
        parse_hello(b'{"settings": {"shared_secret": "s3cret", "role": "nope"}}')
    assert "s3cret" not in str(caught.value)


def test_reports_and_commands_round_trip() -> None:
    ready = Ready({"sfu": ["ws://127.0.0.1:1/sfu", "udp://x"]}, "ws://127.0.0.1:1/sfu")
    assert parse_report(ready_line(ready)) == ready
    assert parse_report(error_line("the SFU cannot listen")) == "the SFU cannot listen"
    assert parse_command(command_line("reload")) == "reload"
    with pytest.raises(WireError):
        parse_report(b"garbage")
    with pytest.raises(WireError):
        parse_command(json.dumps({"command": "rm -rf"}).encode())
    with pytest.raises(WireError):
        command_line("rm -rf")


def test_restart_backoff_doubles_and_resets_after_a_steady_run() -> None:
    backoff = RestartBackoff(first=0.5, longest=4.0, steady=60.0)
    assert backoff.delay(started_at=0, died_at=1) == 0.5
    assert backoff.delay(started_at=2, died_at=3) == 1.0
    assert backoff.failed_start() == 2.0  # a restart that did not get ready
    assert backoff.delay(started_at=5, died_at=6) == 4.0
    assert backoff.delay(started_at=7, died_at=8) == 4.0  # bounded
    assert backoff.delay(started_at=10, died_at=100) == 0.5  # up a minute: fresh start
