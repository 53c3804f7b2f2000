"""A throwaway network namespace that looks like a documented machine.

Deployment tests run ``visavis serve`` exactly as a guide configures it: on the guide's
fixed ports and private addresses (10.0.0.7 ...), which this machine does not have. A
fresh namespace gets them (on its own loopback interface), so nothing collides with other
tests and no packet leaves it. Root only (CI runs as root, like the NAT lab).

    with Namespace(["10.0.0.7/24"]) as ns:
        ns.run(["python", "-m", "tests.deploy_probe", ...])   # inside
        ns.listening(pid)                                     # its sockets, from outside
"""

from __future__ import annotations

import os
import secrets
import shutil
import socket
import subprocess
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from types import TracebackType


def available() -> str | None:
    """Why namespaces cannot be used here, or None when they can."""
    if os.geteuid() != 0:
        return "network namespaces need root"
    if shutil.which("ip") is None:
        return "iproute2 is not installed"
    return None


def _sh(*argv: str) -> None:
    subprocess.run(argv, check=True, capture_output=True, text=True, timeout=30)


@dataclass(frozen=True)
class Listener:
    proto: str  # "tcp" or "udp"
    host: str
    port: int


def _hex_address(text: str) -> tuple[str, int]:
    host_hex, port_hex = text.split(":")
    raw = bytes.fromhex(host_hex)
    if len(raw) == 4:
        host = socket.inet_ntop(socket.AF_INET, raw[::-1])
    else:  # four little-endian 32-bit words
        words = b"".join(raw[i : i + 4][::-1] for i in range(0, 16, 4))
        host = socket.inet_ntop(socket.AF_INET6, words)
    return host, int(port_hex, 16)


def listening(pid: int) -> set[Listener]:
    """TCP sockets in LISTEN and bound UDP sockets of the network namespace of ``pid``
    (``/proc/PID/net`` shows that process's namespace), whoever owns them."""
    found: set[Listener] = set()
    for proto in ("tcp", "udp", "tcp6", "udp6"):
        path = Path(f"/proc/{pid}/net/{proto}")
        if not path.exists():
            continue
        for line in path.read_text().splitlines()[1:]:
            fields = line.split()
            local, state = fields[1], fields[3]
            if proto.startswith("tcp") and state != "0A":  # 0A: LISTEN
                continue
            if proto.startswith("udp") and state != "07":  # 07: unconnected
                continue
            host, port = _hex_address(local)
            found.add(Listener(proto[:3], host, port))
    return found


@dataclass
class Namespace:
    """``ip netns add`` with loopback up, carrying ``addresses`` (CIDR) too."""

    addresses: Sequence[str] = ()
    name: str = field(default_factory=lambda: f"vvdoc{secrets.token_hex(3)}")
    processes: list[subprocess.Popen[bytes]] = field(default_factory=list)

    def __enter__(self) -> Namespace:
        _sh("ip", "netns", "add", self.name)
        try:
            _sh("ip", "-n", self.name, "link", "set", "lo", "up")
            # On lo: this kernel has no dummy interfaces, and these addresses only need
            # to be the machine's own, reachable from inside.
            for address in self.addresses:
                _sh("ip", "-n", self.name, "addr", "add", address, "dev", "lo")
        except BaseException:
            self.close()
            raise
        return self

    def __exit__(
        self, kind: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        self.close()

    @property
    def prefix(self) -> list[str]:
        """Put in front of a command to run it inside."""
        return ["ip", "netns", "exec", self.name]

    def run(self, argv: Sequence[str], timeout: float = 60) -> subprocess.CompletedProcess[str]:
        return subprocess.run(
            [*self.prefix, *argv], capture_output=True, text=True, timeout=timeout
        )

    def forward_tcp(self, port: int, socket_dir: Path) -> None:
        """Make 127.0.0.1:``port`` of this machine (PostgreSQL, Redis) answer at
        127.0.0.1:``port`` inside, through a Unix socket (socat on both sides); return
        once the inside end listens."""
        path = socket_dir / f"forward-{port}.sock"
        outside = subprocess.Popen(
            ["socat", f"UNIX-LISTEN:{path},fork", f"TCP:127.0.0.1:{port}"],
            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
        )  # fmt: skip
        self.processes.append(outside)
        inside = subprocess.Popen(
            [*self.prefix, "socat", f"TCP-LISTEN:{port},bind=127.0.0.1,fork,reuseaddr",
             f"UNIX-CONNECT:{path}"],
            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
        )  # fmt: skip
        self.processes.append(inside)
        deadline = time.monotonic() + 20
        while Listener("tcp", "127.0.0.1", port) not in listening(inside.pid) or not path.exists():
            if inside.poll() is not None or outside.poll() is not None:
                raise RuntimeError(f"socat forwarding port {port} exited")
            if time.monotonic() > deadline:
                raise TimeoutError(f"forwarding of port {port} never listened")
            time.sleep(0.02)  # polling a readiness condition

    def close(self) -> None:
        """Stop what :meth:`forward_tcp` started (by PID), then delete the namespace."""
        for process in reversed(self.processes):
            if process.poll() is None:
                process.terminate()
                try:
                    process.wait(5)
                except subprocess.TimeoutExpired:
                    process.kill()
                    process.wait()
        self.processes.clear()
        subprocess.run(["ip", "netns", "del", self.name], capture_output=True, timeout=30)
