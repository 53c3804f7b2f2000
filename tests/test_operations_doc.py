"""docs/operations.md works when followed.

Every configuration the guide shows is a file in docs/deploy/, included verbatim (the
``<!-- include deploy/NAME -->`` marker before each block; ``python -m
tests.test_operations_doc`` rewrites the blocks from the files). Each configuration is
started as its systemd unit's ``ExecStart`` says, with the real ``visavis serve``, in a
network namespace that has the machine's documented addresses and ports. Only what
belongs to the test machine is replaced: the data directory, the certificate paths
(a certificate for the documented name) and, for the signaling node, the PostgreSQL and
Redis URLs. Then, from inside the namespace, it checks what each part binds and what a
device is told (tests/deploy_probe.py).
"""

from __future__ import annotations

import json
import re
import shlex
import shutil
import subprocess
import sys
from contextlib import ExitStack
from pathlib import Path
from typing import Any

import pytest

from tests import netns
from tests.netns import Listener, Namespace
from tests.relay.tls_cert import write_self_signed
from tests.served import Served, serve
from tests.services import REDIS_URL, fresh_postgres, fresh_redis_prefix

ROOT = Path(__file__).resolve().parents[1]
DOC = ROOT / "docs" / "operations.md"
DEPLOY = ROOT / "docs" / "deploy"
INCLUDE = re.compile(r"<!-- include deploy/(?P<name>[^ ]+) -->\n```(?P<lang>\w*)\n(?P<body>.*?)```",
                     re.S)  # fmt: skip
NO_ICE = "signaling hands devices NO STUN/TURN server"
REST_SECRET = "operations-doc-test-secret"

pytestmark = pytest.mark.skipif(netns.available() is not None, reason=str(netns.available()))


def sync_includes(text: str) -> str:
    """The guide with every included block replaced by its file's current text."""

    def block(found: re.Match[str]) -> str:
        body = (DEPLOY / found["name"]).read_text()
        return f"<!-- include deploy/{found['name']} -->\n```{found['lang']}\n{body}```"

    return INCLUDE.sub(block, text)


def toml(name: str) -> dict[str, Any]:
    import tomllib

    return tomllib.loads((DEPLOY / name).read_text())


# ---------------------------------------------------------------------- the text itself
def test_the_guide_shows_every_deploy_file_verbatim() -> None:
    text = DOC.read_text()
    assert text == sync_includes(text), "run: python -m tests.test_operations_doc"
    included = {m["name"] for m in INCLUDE.finditer(text)}
    assert included == {p.name for p in DEPLOY.iterdir()}, "a deploy file the guide omits"
    # No configuration in the guide that is not one of the tested files.
    for lang in ("toml", "ini", "conf"):
        blocks = re.findall(rf"```{lang}\n", text)
        assert len(blocks) == sum(1 for m in INCLUDE.finditer(text) if m["lang"] == lang), (
            f"a {lang} block in operations.md that no test starts"
        )


@pytest.mark.skipif(shutil.which("systemd-analyze") is None, reason="systemd not installed")
def test_the_units_pass_systemd_analyze(tmp_path: Path) -> None:
    for unit, instance in (("visavis.service", "visavis.service"),
                           ("visavis@.service", "visavis@relay.service")):  # fmt: skip
        text = (DEPLOY / unit).read_text()
        binary = shlex.split(exec_start(unit))[0]
        (tmp_path / unit).write_text(text.replace(binary, "/bin/true"))
        done = subprocess.run(
            ["systemd-analyze", "verify", str(tmp_path / instance)],
            capture_output=True, text=True, timeout=60,
        )  # fmt: skip
        assert done.returncode == 0 and not done.stderr.strip(), done.stderr


def exec_start(unit: str) -> str:
    for line in (DEPLOY / unit).read_text().splitlines():
        if line.startswith("ExecStart="):
            return line.removeprefix("ExecStart=")
    raise AssertionError(f"{unit} has no ExecStart")


def unit_args(unit: str, instance: str = "") -> list[str]:
    """The unit's ``visavis serve`` arguments, /etc/visavis/... mapped to docs/deploy."""
    argv = shlex.split(exec_start(unit).replace("%i", instance))
    assert argv[0].endswith("/visavis") and argv[1] == "serve", argv
    files = {"/etc/visavis/visavis.toml": DEPLOY / "one-machine.toml"}
    mapped = []
    for arg in argv[2:]:
        if arg.startswith("/etc/visavis/"):
            arg = str(files.get(arg, DEPLOY / Path(arg).name))
            assert Path(arg).exists(), arg
        mapped.append(arg)
    return mapped


def port_table() -> set[tuple[str, int]]:
    """(protocol, port) of every single-port row of the guide's "Open these" table."""
    found: set[tuple[str, int]] = set()
    for row in re.findall(r"^\| (\d+) \| ([A-Za-z ]+) \|", DOC.read_text(), re.M):
        port, protocols = int(row[0]), row[1]
        for proto in ("udp", "tcp"):
            if proto.upper() in protocols:
                found.add((proto, port))
    return found


def probe(ns: Namespace, **args: str) -> dict[str, Any]:
    argv = [sys.executable, "-m", "tests.deploy_probe"]
    for key, value in args.items():
        argv += [f"--{key}", value]
    done = ns.run(argv, timeout=120)
    assert done.returncode == 0, done.stderr[-3000:]
    report: dict[str, Any] = json.loads(done.stdout.splitlines()[-1])
    return report


def candidates(lines: list[str]) -> set[tuple[str, str, int]]:
    out = set()
    for line in lines:
        fields = line.split()  # a=candidate:F C transport prio ip port typ host ...
        out.add((fields[2].lower(), fields[4], int(fields[5])))
    return out


def check_ice(report: dict[str, Any], urls: list[str], public: str, local: str) -> None:
    """Devices get exactly the configured URLs, with credentials for TURN, and each of
    them works: STUN maps, TURN allocates on the public address in the relay range."""
    servers = report["welcome"]["ice_servers"]
    assert sorted(u for s in servers for u in s["urls"]) == sorted(urls)
    for server in servers:
        if any(u.startswith("turn") for u in server["urls"]):
            assert server["username"] and server["credential"]
    for url, result in report["ice"].items():
        assert result["ok"], (url, result)
        if url.startswith("stun:"):
            assert result["mapped"][0] == local, (url, result)
        else:
            host, port = result["relayed"]
            assert host == public and 49152 <= port <= 65535, (url, result)


# ---------------------------------------------------------------------- one machine
def test_one_machine(tmp_path: Path) -> None:
    config = toml("one-machine.toml")
    cert, key = write_self_signed(tmp_path, hostname="call.example.org")
    env = {"VISAVIS_RELAY__CERT": str(cert), "VISAVIS_RELAY__PKEY": str(key)}
    with Namespace(["10.0.0.7/24"]) as ns, serve(
        tmp_path / "data", *unit_args("visavis.service"), env=env,
        wrapper=ns.prefix, free_ports=False,
    ) as served:  # fmt: skip
        sockets = netns.listening(served.pid)
        public = {(s.proto, s.port) for s in sockets if s.host == "10.0.0.7"}
        assert public == port_table() - {("tcp", 443)}, sockets
        assert {s for s in sockets if s.host != "10.0.0.7"} == {
            Listener("tcp", "127.0.0.1", 8080),  # signaling, behind the proxy
            Listener("tcp", "127.0.0.1", 3479),  # SFU control, behind the proxy
        }
        check_printed(served, "203.0.113.7")
        report = probe(
            ns, signaling="http://127.0.0.1:8080", sfu="ws://127.0.0.1:3479/sfu",
            secret=(tmp_path / "data" / "shared-secret").read_text().strip(),
            hosts=json.dumps({"call.example.org": "10.0.0.7"}), cafile=str(cert),
        )  # fmt: skip
        check_ice(report, config["signaling"]["turn_urls"], "203.0.113.7", "10.0.0.7")
        assert candidates(report["sfu_candidates"]) == {
            ("udp", "203.0.113.7", 3480), ("tcp", "203.0.113.7", 3481)
        }  # fmt: skip
        assert NO_ICE not in served.log()


def check_printed(served: Served, public: str) -> None:
    """What `visavis serve` prints says where devices reach each part."""
    for url in served.endpoints.get("relay", []):
        assert f":{public}:" in url or f"{public}:" in url, served.endpoints
    if "sfu" in served.endpoints:
        assert f"udp://{public}:3480" in served.endpoints["sfu"], served.endpoints


# ---------------------------------------------------------------------- many machines
async def test_many_machines(tmp_path: Path) -> None:
    """The three roles of "Many machines" in one namespace (their addresses differ, so
    they coexist): signaling on PostgreSQL + Redis, the relay, the one SFU."""
    signaling = toml("signaling.toml")
    cert, key = write_self_signed(tmp_path, hostname="turn.example.org")
    common = {"VISAVIS_SHARED_SECRET": REST_SECRET}
    async with fresh_postgres() as database, fresh_redis_prefix() as prefix:
        with ExitStack() as stack:
            ns = stack.enter_context(Namespace(["10.0.1.21/24", "10.0.1.31/24"]))
            for port in (5432, 6379):
                ns.forward_tcp(port, tmp_path)
            assert REDIS_URL.startswith("redis://127.0.0.1:6379")
            roles: dict[str, dict[str, str]] = {
                "relay": {"VISAVIS_RELAY__CERT": str(cert), "VISAVIS_RELAY__PKEY": str(key)},
                "sfu": {},
                "signaling": {"VISAVIS_DATABASE_URL": database, "VISAVIS_BUS_URL": REDIS_URL,
                              "VISAVIS_REDIS_PREFIX": prefix},
            }  # fmt: skip
            served: dict[str, Served] = {}
            for role, env in roles.items():
                served[role] = stack.enter_context(serve(
                    tmp_path / role, *unit_args("visavis@.service", role),
                    env={**common, **env}, wrapper=ns.prefix, free_ports=False,
                ))  # fmt: skip
            sockets = netns.listening(served["relay"].pid) - {
                Listener("tcp", "127.0.0.1", 5432), Listener("tcp", "127.0.0.1", 6379)
            }  # fmt: skip
            assert sockets == {
                Listener("tcp", "0.0.0.0", 8080),
                Listener("udp", "10.0.1.21", 3478),
                Listener("tcp", "10.0.1.21", 3478),
                Listener("tcp", "10.0.1.21", 5349),
                Listener("tcp", "127.0.0.1", 3479),
                Listener("udp", "10.0.1.31", 3480),
                Listener("tcp", "10.0.1.31", 3481),
            }
            check_printed(served["relay"], "203.0.113.8")
            check_printed(served["sfu"], "203.0.113.9")
            report = probe(
                ns, signaling="http://127.0.0.1:8080", sfu="ws://127.0.0.1:3479/sfu",
                secret=REST_SECRET, hosts=json.dumps({"turn.example.org": "10.0.1.21"}),
                cafile=str(cert),
            )  # fmt: skip
            check_ice(report, signaling["signaling"]["turn_urls"], "203.0.113.8", "10.0.1.21")
            assert candidates(report["sfu_candidates"]) == {
                ("udp", "203.0.113.9", 3480), ("tcp", "203.0.113.9", 3481)
            }  # fmt: skip
            assert NO_ICE not in served["signaling"].log()


def test_a_signaling_node_without_relay_urls_warns(tmp_path: Path) -> None:
    """The old guide's signaling command: no turn_urls, no relay here. It must say so at
    start, and devices indeed get no ICE server."""
    with Namespace() as ns, serve(
        tmp_path / "data", "--role", "signaling", wrapper=ns.prefix, free_ports=False,
        env={"VISAVIS_SIGNALING__PORT": "8080"},
    ) as served:  # fmt: skip
        assert NO_ICE in served.log()
        report = probe(ns, signaling="http://127.0.0.1:8080")
        assert report["welcome"]["ice_servers"] == []


def _rewrite() -> None:
    DOC.write_text(sync_includes(DOC.read_text()))


if __name__ == "__main__":
    _rewrite()
