"""One participant's WebRTC transport: ICE-lite checks, DTLS-SRTP, SRTP in and out.

The transport owns no socket: the shared :class:`~visavis.sfu.udp.MediaEndpoint` hands it
datagrams (already demultiplexed by ICE username or remote address) and gives it a
``sendto`` callable; its :class:`~visavis.sfu.fastpath.Link` (SRTP sessions, the UDP
destination, sources by SSRC) is what the native forwarding path reads, so most SRTP
never reaches this class; an ICE-TCP connection (:mod:`visavis.sfu.tcp`) hands it the frames
it carries and is itself the path to answer on. A *path* is therefore either a UDP
address or a :class:`StreamPath`; media goes out on the selected one (the pair the
client nominated). Decrypted RTP and RTCP go up to the listener (the participant).
"""

from __future__ import annotations

import logging
import secrets
from collections.abc import Callable
from typing import Protocol

from visavis.protocol.rtp.packet import is_rtcp
from visavis.protocol.stun import Message as StunMessage
from visavis.sfu import fastpath
from visavis.sfu.dtls import DtlsIdentity, DtlsServer, DtlsState, srtp_sessions
from visavis.sfu.ice_lite import answer_check
from visavis.sfu.stats import SfuStats

Address = tuple[str, int]
logger = logging.getLogger(__name__)


class StreamPath(Protocol):
    """A connection that carries one client's packets (ICE-TCP, RFC 6544)."""

    @property
    def peer(self) -> Address: ...

    def send(self, data: bytes) -> None: ...

    def close(self) -> None: ...


Path = Address | StreamPath


class TransportListener(Protocol):
    def on_transport_connected(self, now: float) -> None: ...

    def on_rtp(self, data: bytes, now: float) -> None: ...

    def on_rtcp(self, data: bytes, now: float) -> None: ...


class WebRtcTransport:
    """ICE-lite + DTLS-SRTP termination for one participant."""

    #: False: the fast path never sends media itself; every forwarded packet goes out
    #: through :meth:`send_rtp` (taps in tests inspect what the SFU forwards there).
    native_send = True

    def __init__(
        self,
        identity: DtlsIdentity,
        stats: SfuStats,
        sendto: Callable[[bytes, Address], None],
        listener: TransportListener,
        *,
        now: float,
        ufrag: str | None = None,
    ) -> None:
        self.local_ufrag = ufrag or secrets.token_hex(4)
        self.local_pwd = secrets.token_hex(12)
        self.remote_ufrag: str | None = None
        self.identity = identity
        self.stats = stats
        self._sendto = sendto
        self.listener = listener
        self.dtls: DtlsServer | None = None
        self.link = fastpath.Link(self)
        self.link.last_seen = now
        self._address: Path | None = None
        self.addresses: set[Path] = set()  # every path an authenticated check came on
        self.connected = False

    @property
    def address(self) -> Path | None:
        """The selected path: media goes out here (natively when it is a UDP address)."""
        return self._address

    @address.setter
    def address(self, path: Path | None) -> None:
        self._address = path
        if isinstance(path, tuple) and self.native_send:
            self.link.set_destination(path[0], path[1])
        else:
            self.link.clear_destination()

    @property
    def last_seen(self) -> float:
        """Time of the last valid packet (the fast path updates it too)."""
        return self.link.last_seen

    @last_seen.setter
    def last_seen(self, now: float) -> None:
        self.link.last_seen = now

    def set_remote(self, ufrag: str, fingerprints: list[tuple[str, str]]) -> bool:
        """Apply the client's ICE/DTLS parameters; False if they changed (ICE restart)."""
        if self.remote_ufrag is None:
            self.remote_ufrag = ufrag
            self.dtls = DtlsServer(self.identity, fingerprints)
            return True
        return self.remote_ufrag == ufrag

    # -- input ------------------------------------------------------------------------
    def handle_stun(self, message: StunMessage, addr: Path, now: float) -> bool:
        """Answer a binding request routed here by ufrag; True if addr is now known."""
        if self.remote_ufrag is None:
            self.stats.drop("stun_unauthenticated")
            return False
        mapped = addr if isinstance(addr, tuple) else addr.peer
        result = answer_check(message, mapped, self.local_pwd, self.remote_ufrag)
        if result is None:
            self.stats.drop("stun_unauthenticated")
            return False
        self.last_seen = now
        self.addresses.add(addr)
        if result.nominated or self.address is None:
            self.address = addr
        self._send(result.response, addr)
        return True

    def path_closed(self, path: StreamPath) -> None:
        """A connection went away: forget it (the client's next check selects anew)."""
        self.addresses.discard(path)
        if self.address is path:
            self.address = None

    def handle_dtls(self, data: bytes, addr: Path, now: float) -> None:
        if self.dtls is None:
            self.stats.drop("garbage")
            return
        was = self.dtls.state
        for out in self.dtls.receive(data):
            self._send(out, addr)
        keys = self.dtls.srtp  # set as the state becomes CONNECTED
        if keys is not None and was is DtlsState.CONNECTING:
            self.link.rx, self.link.tx = srtp_sessions(keys)
            self.connected = True
            self.last_seen = now
            self.listener.on_transport_connected(now)
        elif self.dtls.state is DtlsState.FAILED and was is DtlsState.CONNECTING:
            self.stats.drop("dtls_failed")
            logger.info("DTLS with %s failed: %s", addr, self.dtls.error)

    def handle_srtp(self, data: bytes, now: float) -> None:
        """SRTP/SRTCP the fast path left to Python: RTCP, ICE-TCP frames, IPv6."""
        rx = self.link.rx
        if rx is None:
            self.stats.drop("not_connected")
            return
        if is_rtcp(data):
            try:
                plain = rx.unprotect_rtcp(data)
            except fastpath.SrtpError:
                self.stats.drop("srtp_auth")
                return
            self.last_seen = now
            self.stats.rtcp_in += 1
            self.listener.on_rtcp(plain, now)
        else:
            try:
                plain = rx.unprotect(data)
            except fastpath.SrtpError:
                self.stats.drop("srtp_auth")
                return
            self.last_seen = now
            self.stats.packets_in += 1
            self.link.twcc_received(plain, now)  # the fast path notes what it reads itself
            self.listener.on_rtp(plain, now)

    # -- output -----------------------------------------------------------------------
    def _send(self, data: bytes, path: Path) -> None:
        if isinstance(path, tuple):
            self._sendto(data, path)
        else:
            path.send(data)

    def send_rtp(self, plain: bytes) -> None:
        tx, addr = self.link.tx, self._address
        if tx is None or addr is None:
            return
        self._send(tx.protect(plain), addr)

    def send_rtcp(self, plain: bytes) -> None:
        tx, addr = self.link.tx, self._address
        if tx is None or addr is None:
            return
        try:
            self._send(tx.protect_rtcp(plain), addr)
        except fastpath.SrtpError:
            return
        self.stats.rtcp_out += 1
