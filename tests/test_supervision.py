"""The wire format between `visavis serve` and its media children, and the restart
back-off (sans-I/O: no processes here; tests/test_processes.py runs the real ones)."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from prometheus_client.parser import text_string_to_metric_families
from pydantic import SecretStr

from visavis.config import Settings
from visavis.supervision import (
    Peer,
    Ready,
    RestartBackoff,
    WireError,
    WorkerLoad,
    command_line,
    error_line,
    hello_line,
    load_line,
    merge_families,
    parse_command,
    parse_hello,
    parse_report,
    peer_line,
    ready_line,
    worker_count,
    worker_name,
    worker_settings,
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
    load = WorkerLoad(rooms=2, participants=7, cpu=0.25, pps=1234.5, record="signed.rec")
    assert parse_report(load_line(load)) == load
    assert parse_command(command_line("reload")) == "reload"
    assert parse_command(peer_line("signed.rec")) == Peer("signed.rec")
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


def test_one_sfu_worker_per_core_unless_told_or_impossible(tmp_path: Path) -> None:
    def count(cores: int = 4, **values: object) -> int:
        return worker_count(Settings(data_dir=tmp_path, **values), cores)  # type: ignore[arg-type]

    assert count() == 4 and count(cores=1) == 1
    assert count(sfu={"workers": 3}) == 3
    assert count(role="signaling") == 0 and count(role="relay") == 0
    # role sfu: several workers are fleet nodes; without a registry signaling knows one URL.
    assert count(role="sfu") == 1
    assert count(role="sfu", bus_url="redis://127.0.0.1:6379/0") == 4
    with pytest.raises(ValueError, match="needs a fleet registry"):
        count(role="sfu", sfu={"workers": 2})
    # Behind a proxy with one URL (the deployment guide's files), auto is one worker.
    assert count(sfu={"public_url": "wss://sfu.example.org/sfu"}) == 1
    with pytest.raises(ValueError, match=r"put \{worker\} in it"):
        count(sfu={"public_url": "wss://sfu.example.org/sfu", "workers": 2})
    assert count(sfu={"public_url": "wss://sfu.example.org/sfu/{worker}"}) == 4


def test_each_worker_gets_its_own_ports_and_node_id(tmp_path: Path) -> None:
    settings = Settings(
        data_dir=tmp_path, node_id="n1", sfu={"public_url": "wss://x.example/sfu/{worker}"}
    )
    second = worker_settings(settings, 1, 3)
    assert (second.sfu.port, second.sfu.media_port, second.sfu.tcp_port) == (3482, 3483, 3484)
    assert second.node_id == "n1-1" and second.sfu.public_url == "wss://x.example/sfu/1"
    assert second.sfu.workers == 1  # a worker never starts workers of its own
    assert worker_name(1, 3) == "sfu-1" and worker_name(0, 1) == "sfu"
    only = worker_settings(settings, 0, 1)  # one worker: today's ports and node id
    assert (only.sfu.port, only.sfu.media_port, only.node_id) == (3479, 3480, "n1")
    assert only.sfu.workers == 1
    free = Settings(data_dir=tmp_path, sfu={"port": 0, "media_port": 0, "tcp_port": "off"})
    moved = worker_settings(free, 2, 3).sfu
    assert (moved.port, moved.media_port, moved.tcp_port) == (0, 0, None)  # any free port


def test_the_workers_metrics_are_summed_into_one_exposition() -> None:
    worker = """# HELP visavis_sfu_packets_in_total SFU packets in
# TYPE visavis_sfu_packets_in_total counter
visavis_sfu_packets_in_total {n}.0
# HELP visavis_sfu_dropped_packets_total datagrams dropped, by reason
# TYPE visavis_sfu_dropped_packets_total counter
visavis_sfu_dropped_packets_total{{reason="garbage"}} {n}.0
visavis_sfu_dropped_packets_total{{reason="srtp_auth"}} 1.0
# HELP visavis_sfu_joins_refused_created Joins refused
# TYPE visavis_sfu_joins_refused_created gauge
visavis_sfu_joins_refused_created{{reason="wrong_node"}} 170000000{n}.0
"""
    relay = "# HELP visavis_relay_allocations live\n# TYPE visavis_relay_allocations gauge\n"
    relay += "visavis_relay_allocations 3.0\n"
    texts = [worker.format(n=2), worker.format(n=5), relay]
    merged = {f.name: f for f in merge_families([text_string_to_metric_families(t) for t in texts])}
    assert sorted(merged) == ["visavis_relay_allocations", "visavis_sfu_dropped_packets",
                              "visavis_sfu_joins_refused_created",
                              "visavis_sfu_packets_in"]  # fmt: skip
    samples = {
        (s.name, tuple(s.labels.values())): s.value
        for f in merged.values()
        for s in f.samples
    }
    assert samples == {
        ("visavis_sfu_packets_in_total", ()): 7.0,
        ("visavis_sfu_dropped_packets_total", ("garbage",)): 7.0,
        ("visavis_sfu_dropped_packets_total", ("srtp_auth",)): 2.0,
        ("visavis_relay_allocations", ()): 3.0,
        ("visavis_sfu_joins_refused_created", ("wrong_node",)): 1700000002.0,  # earliest
    }
    assert merged["visavis_sfu_packets_in"].type == "counter"
