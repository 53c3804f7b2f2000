"""A NAT test lab of Linux network namespaces, veth pairs, bridges and iptables.

Topology (addresses exist only inside the lab's namespaces)::

    public network 198.18.0.0/24: bridge br0 in namespace <prefix>-pub
      198.18.0.1        signaling + STUN/TURN (the server process runs in -pub)
      198.18.0.10+i     WAN side of LAN i's router (namespace <prefix>-r<i>)
      198.18.0.100+j    "open" clients (no NAT): namespace <prefix>-o<j>, on br0 directly
    LAN i 10.77.i.0/24: bridge lan0 in the router, 10.77.i.1; clients 10.77.i.2, .3 ...
      (namespaces <prefix>-c<i>-<k>), default route via the router

Router kinds: ``cone`` (MASQUERADE: endpoint-independent mapping), ``sym``
(MASQUERADE --random-fully: a new port per destination), ``udpblock`` (MASQUERADE, and the
router forwards only TCP to the server and replies to it: no UDP at all).

Every name starts with a per-run prefix so leftovers of a crashed run never collide;
:meth:`Lab.close` kills the processes it started (by PID) and deletes every namespace,
which removes the veths, bridges and iptables rules with them.
"""

from __future__ import annotations

import contextlib
import os
import secrets
import signal
import subprocess
from dataclasses import dataclass, field
from pathlib import Path
from typing import Literal

LanKind = Literal["open", "cone", "sym", "udpblock"]
SERVER_IP = "198.18.0.1"
PUBLIC_NET = "198.18.0.0/24"


def sh(*argv: str, check: bool = True) -> subprocess.CompletedProcess[str]:
    return subprocess.run(argv, check=check, capture_output=True, text=True, timeout=30)


def kernel_config(*options: str) -> list[str]:
    """How the running kernel sets ``options`` ("X=y", "X not set"), from /proc/config.gz."""
    import gzip

    try:
        text = gzip.decompress(Path("/proc/config.gz").read_bytes()).decode()
    except OSError:
        return []
    found = []
    for option in options:
        if f"# {option} is not set" in text:
            found.append(f"{option} not set")
        else:
            for line in text.splitlines():
                if line.startswith(f"{option}="):
                    found.append(line)
    return found


@dataclass
class Client:
    ns: str
    address: str
    lan: str


@dataclass
class Lan:
    name: str
    kind: LanKind
    router: str | None  # namespace of the router; None for "open"
    index: int
    clients: list[Client] = field(default_factory=list)


class Lab:
    def __init__(self, prefix: str | None = None) -> None:
        self.prefix = prefix or f"vv{secrets.token_hex(3)}"
        self.pub = f"{self.prefix}-pub"
        self.namespaces: list[str] = []
        self.lans: dict[str, Lan] = {}
        self.processes: list[subprocess.Popen[bytes]] = []
        self._next_lan = 1
        self._next_open = 100
        self._pub_ports = 0

    # ------------------------------------------------------------------ building
    def _netns(self, name: str) -> str:
        sh("ip", "netns", "add", name)
        self.namespaces.append(name)
        sh("ip", "-n", name, "link", "set", "lo", "up")
        return name

    def _pub_port(self) -> str:
        self._pub_ports += 1
        return f"p{self._pub_ports}"

    def start(self) -> None:
        self._netns(self.pub)
        sh("ip", "-n", self.pub, "link", "add", "br0", "type", "bridge")
        sh("ip", "-n", self.pub, "addr", "add", f"{SERVER_IP}/24", "dev", "br0")
        sh("ip", "-n", self.pub, "link", "set", "br0", "up")

    def _attach_to_pub(self, ns: str, ifname: str, address: str) -> None:
        port = self._pub_port()
        sh("ip", "link", "add", ifname, "netns", ns, "type", "veth", "peer", "name", port,
           "netns", self.pub)
        sh("ip", "-n", self.pub, "link", "set", port, "master", "br0")
        sh("ip", "-n", self.pub, "link", "set", port, "up")
        sh("ip", "-n", ns, "addr", "add", f"{address}/24", "dev", ifname)
        sh("ip", "-n", ns, "link", "set", ifname, "up")

    def add_lan(self, name: str, kind: LanKind) -> Lan:
        index = self._next_lan
        self._next_lan += 1
        if kind == "open":
            lan = Lan(name, kind, None, index)
            self.lans[name] = lan
            return lan
        router = self._netns(f"{self.prefix}-r{index}")
        self._attach_to_pub(router, "wan", f"198.18.0.{10 + index}")
        sh("ip", "-n", router, "link", "add", "lan0", "type", "bridge")
        sh("ip", "-n", router, "addr", "add", f"10.77.{index}.1/24", "dev", "lan0")
        sh("ip", "-n", router, "link", "set", "lan0", "up")
        sh("ip", "netns", "exec", router, "sysctl", "-qw", "net.ipv4.ip_forward=1")
        ipt = ("ip", "netns", "exec", router, "iptables")
        masquerade = [*ipt, "-t", "nat", "-A", "POSTROUTING", "-o", "wan", "-j", "MASQUERADE"]
        if kind == "sym":
            masquerade.append("--random-fully")
        sh(*masquerade)
        # Like any home router, drop what nobody asked for. Besides, dropping it in INPUT
        # keeps its conntrack entry unconfirmed: an unsolicited packet from a peer that
        # is punching a hole would otherwise leave an entry whose reply tuple collides with
        # our own client's outgoing flow to that peer, and MASQUERADE would then give that
        # flow a new port (no longer endpoint-independent), breaking hole punching.
        sh("ip", "netns", "exec", router, "iptables", "-A", "INPUT", "-i", "wan", "-m",
           "conntrack", "--ctstate", "NEW,INVALID", "-j", "DROP")
        if kind == "udpblock":
            sh(*ipt, "-A", "FORWARD", "-m", "conntrack", "--ctstate", "ESTABLISHED,RELATED",
               "-j", "ACCEPT")
            sh(*ipt, "-A", "FORWARD", "-i", "lan0", "-p", "tcp", "-d", SERVER_IP, "-j", "ACCEPT")
            sh(*ipt, "-P", "FORWARD", "DROP")
        lan = Lan(name, kind, router, index)
        self.lans[name] = lan
        return lan

    def add_client(self, lan_name: str) -> Client:
        lan = self.lans[lan_name]
        if lan.router is None:
            ns = self._netns(f"{self.prefix}-o{self._next_open}")
            address = f"198.18.0.{self._next_open}"
            self._next_open += 1
            self._attach_to_pub(ns, "eth0", address)
        else:
            k = len(lan.clients) + 2
            ns = self._netns(f"{self.prefix}-c{lan.index}-{k}")
            address = f"10.77.{lan.index}.{k}"
            port = f"c{k}"
            sh("ip", "link", "add", "eth0", "netns", ns, "type", "veth", "peer", "name", port,
               "netns", lan.router)
            sh("ip", "-n", lan.router, "link", "set", port, "master", "lan0")
            sh("ip", "-n", lan.router, "link", "set", port, "up")
            sh("ip", "-n", ns, "addr", "add", f"{address}/24", "dev", "eth0")
            sh("ip", "-n", ns, "link", "set", "eth0", "up")
            sh("ip", "-n", ns, "route", "add", "default", "via", f"10.77.{lan.index}.1")
        client = Client(ns, address, lan_name)
        lan.clients.append(client)
        return client

    def netem_check(self) -> tuple[bool, str]:
        """Can this kernel run ``tc ... netem``? (yes/no, and why), tried in the lab itself.

        Adds and removes a netem qdisc on the public namespace's loopback; on failure the
        reason names the kernel configuration when ``/proc/config.gz`` is readable.
        """
        tc = ("ip", "netns", "exec", self.pub, "tc", "qdisc")
        done = sh(*tc, "add", "dev", "lo", "root", "netem", "delay", "1ms", check=False)
        if done.returncode == 0:
            sh(*tc, "del", "dev", "lo", "root", check=False)
            return True, "sch_netem works"
        reason = done.stderr.strip() or f"tc exited {done.returncode}"
        facts = kernel_config("CONFIG_NET_SCH_NETEM", "CONFIG_MODULES")
        if facts:
            reason += f" ({', '.join(facts)})"
        return False, reason

    def wan_address(self, lan_name: str) -> str:
        """The public address of a LAN's router."""
        router = self.lans[lan_name].router
        assert router is not None, "open LANs have no router"
        out = sh("ip", "-n", router, "-4", "-o", "addr", "show", "dev", "wan").stdout
        return out.split(" inet ", 1)[1].split("/", 1)[0]

    def renumber_wan(self, lan_name: str, address: str) -> str:
        """Give a LAN's router a new public address (an ISP renumbering, a new uplink).

        Deleting the old address makes MASQUERADE drop every NAT mapping made with it
        (the kernel's masquerade address notifier flushes those conntrack entries): the
        LAN's existing flows (media, the signaling WebSocket) are dead, and new ones leave
        from ``address``. Returns the old address.
        """
        router = self.lans[lan_name].router
        assert router is not None, "open LANs have no router"
        old = self.wan_address(lan_name)
        sh("ip", "-n", router, "addr", "del", f"{old}/24", "dev", "wan")
        sh("ip", "-n", router, "addr", "add", f"{address}/24", "dev", "wan")
        return old

    def impair(
        self,
        lan_name: str,
        *,
        delay_ms: int = 0,
        jitter_ms: int = 0,
        loss: float = 0.0,
        rate: str | None = None,
    ) -> str:
        """Make a router's links bad: ``tc netem`` on its WAN and LAN egress.

        Kernels without ``sch_netem`` (CONFIG_NET_SCH_NETEM unset) get what they have:
        random loss from iptables' ``statistic`` match in FORWARD, a rate limit from
        ``tbf``, and no added delay. Returns a description of what was applied.
        """
        router = self.lans[lan_name].router
        assert router is not None, "open LANs have no router"
        netem = ["netem"]
        if delay_ms:
            netem += ["delay", f"{delay_ms}ms", f"{jitter_ms}ms"]
        if loss:
            netem += ["loss", f"{100 * loss:g}%"]
        if rate:
            netem += ["rate", rate]
        tc = ("ip", "netns", "exec", router, "tc", "qdisc", "replace")
        done = sh(*tc, "dev", "wan", "root", *netem, check=False)
        if done.returncode == 0:
            sh(*tc, "dev", "lan0", "root", *netem)
            return f"netem {' '.join(netem[1:])}"
        applied = []
        if loss:
            sh("ip", "netns", "exec", router, "iptables", "-I", "FORWARD", "1", "-m",
               "statistic", "--mode", "random", "--probability", f"{loss:g}", "-j", "DROP")
            applied.append(f"loss {100 * loss:g}% per router (iptables statistic)")
        if rate:
            for dev in ("wan", "lan0"):
                sh(*tc, "dev", dev, "root", "tbf", "rate", rate, "burst", "32kbit", "latency",
                   "400ms")
            applied.append(f"rate {rate} (tbf)")
        if delay_ms or jitter_ms:
            facts = ", ".join(kernel_config("CONFIG_NET_SCH_NETEM", "CONFIG_MODULES"))
            applied.append(f"NO delay or jitter: no sch_netem on this kernel "
                           f"({done.stderr.strip()}{'; ' + facts if facts else ''})")
        return ", ".join(applied)

    # ------------------------------------------------------------------ running
    def spawn(self, ns: str, argv: list[str], log: Path, env: dict[str, str] | None = None
              ) -> subprocess.Popen[bytes]:
        """Run ``argv`` inside namespace ``ns``; stdout to ``log``.out, stderr to .err."""
        with open(f"{log}.out", "wb") as out, open(f"{log}.err", "wb") as err:
            proc = subprocess.Popen(
                ["ip", "netns", "exec", ns, *argv],
                stdout=out,
                stderr=err,
                env={**os.environ, **(env or {})},
                start_new_session=True,
            )
        self.processes.append(proc)
        return proc

    def close(self) -> None:
        for proc in self.processes:
            if proc.poll() is None:
                with contextlib.suppress(ProcessLookupError):
                    os.killpg(proc.pid, signal.SIGTERM)  # the group this run started
        for proc in self.processes:
            try:
                proc.wait(5)
            except subprocess.TimeoutExpired:
                with contextlib.suppress(ProcessLookupError):
                    os.killpg(proc.pid, signal.SIGKILL)
                proc.wait(5)
        self.processes.clear()
        for ns in reversed(self.namespaces):
            sh("ip", "netns", "del", ns, check=False)
        self.namespaces.clear()

    def __enter__(self) -> Lab:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()
