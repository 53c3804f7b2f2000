"""The SDP subset a WebRTC SFU needs: parse a client's offer, write the answer.

Sans-I/O: text in, dataclasses and text out. An offer it cannot answer raises
:class:`SdpError` (:class:`UnsupportedCodec` when only the room's video codec is
missing) with a message for the client; the SFU maps them to its control-protocol error
codes where it handles an offer (``sfu/room.py``).

The client always offers (JSEP, RFC 8829); the SFU always answers as ICE-lite
(RFC 8445 s2.5), DTLS passive (RFC 5763), BUNDLE (RFC 8843) on one transport with
rtcp-mux (RFC 5761). Audio is Opus; video is the room's one codec (VP8, VP9, H.264 or
AV1, with RTX, RFC 4588): the SFU forwards payloads untouched and rewrites only payload
types per subscriber, so every room member sends and receives that codec (H.264:
packetization-mode=1, constrained baseline ``42e01f``; VP9: profile 0). Simulcast
(RFC 8853) is accepted on receive with ``a=rid`` / ``a=simulcast:send``; rid order in
the offer is taken as lowest layer first. VP9 and AV1 publishers may also send the
dependency descriptor extension (answered on the m-lines the SFU receives, with
``a=extmap-allow-mixed`` so keyframes' long descriptors fit); in AV1 rooms the SFU sends
it on too (:func:`sent_dependency_descriptor`), as Chromium decodes AV1 SVC by it.
Transport-wide congestion control (the transport-cc extension and ``rtcp-fb
transport-cc``) is answered where offered: on receive slots the SFU stamps what it sends
and estimates the subscriber's downlink from its feedback; on publishing m-lines it
notes when each packet arrived and sends the publisher TWCC feedback (REMB still caps
the publisher).
"""

from __future__ import annotations

import hashlib
import re
from dataclasses import dataclass, field

from visavis.protocol.rtp.av1 import URI_DEPENDENCY_DESCRIPTOR
from visavis.protocol.rtp.extensions import (
    URI_ABS_SEND_TIME,
    URI_AUDIO_LEVEL,
    URI_MID,
    URI_REPAIRED_RID,
    URI_RID,
    URI_TRANSPORT_CC,
)
from visavis.protocol.rtp.keyframes import VideoCodec


class SdpError(ValueError):
    """The offer is malformed or asks for something this subset cannot answer."""


class UnsupportedCodec(SdpError):
    """The offer's video m-lines lack the room's codec (in the variant every member
    decodes): its media could not be forwarded."""


ACCEPTED_EXTENSIONS = {
    "audio": (URI_MID, URI_AUDIO_LEVEL),
    "video": (URI_MID, URI_ABS_SEND_TIME, URI_RID, URI_REPAIRED_RID),
}
# Answered only on m-lines the SFU receives, and only for these codecs' rooms.
DD_CODECS = (VideoCodec.VP9, VideoCodec.AV1)


def sent_dependency_descriptor(
    offer: Offer, section: MediaSection, video_codec: VideoCodec
) -> int | None:
    """The id with which the SFU sends the dependency descriptor on a video m-line it
    sends on, or None: AV1 rooms only (AV1 SVC is decoded by its descriptor; VP9 by its
    payload descriptor), and only with ``extmap-allow-mixed`` (the two-byte elements a
    keyframe's descriptor needs)."""
    if video_codec is not VideoCodec.AV1 or not offer.extmap_allow_mixed:
        return None
    if section.kind != "video":
        return None
    return section.extensions.get(URI_DEPENDENCY_DESCRIPTOR)


H264_PROFILE = "42e01f"  # constrained baseline, level 3.1: what every WebRTC stack decodes
_DIRECTIONS = ("sendrecv", "sendonly", "recvonly", "inactive")


@dataclass
class Codec:
    """One payload type offered in a media section."""

    pt: int
    name: str
    clock_rate: int
    channels: int | None = None
    fmtp: str | None = None
    feedback: list[str] = field(default_factory=list)


@dataclass
class MediaSection:
    """One m-line of an offer."""

    kind: str
    port: int
    proto: str
    formats: list[str]
    mid: str = ""
    direction: str = "sendrecv"
    codecs: dict[int, Codec] = field(default_factory=dict)
    extensions: dict[str, int] = field(default_factory=dict)
    ssrcs: list[int] = field(default_factory=list)
    fid_groups: list[tuple[int, int]] = field(default_factory=list)
    rids: list[str] = field(default_factory=list)
    bundle_only: bool = False
    msid: str | None = None
    ice_ufrag: str | None = None
    ice_pwd: str | None = None
    fingerprints: list[tuple[str, str]] = field(default_factory=list)
    setup: str | None = None

    @property
    def rejected(self) -> bool:
        # Port 0 with a=bundle-only is not a rejection (RFC 8843 s7.2): Firefox offers
        # every m-line after the first that way under max-bundle.
        return self.port == 0 and not self.bundle_only

    def codec(self, video: VideoCodec = VideoCodec.VP8) -> Codec | None:
        """The first offered codec the SFU forwards for this kind: Opus, or ``video``
        (the room's codec) in the variant every member can decode."""
        for codec in self._offered():
            if self.kind == "audio" and codec.name.lower() == "opus":
                return codec
            if self.kind == "video" and _is_video_codec(codec, video):
                return codec
        return None

    @property
    def twcc_answered(self) -> bool:
        """Transport-wide CC is answered here: a live m-line whose codecs offer
        ``transport-cc`` feedback, with the extension offered under a one-byte id (1-14:
        the fast path writes the one-byte form)."""
        return (
            self.direction != "inactive"
            and not self.rejected
            and any("transport-cc" in c.feedback for c in self._offered())
            and 1 <= self.extensions.get(URI_TRANSPORT_CC, 0) <= 14
        )

    def video_codecs(self) -> list[str]:
        """Names of the video codecs offered (for an error that says what was)."""
        names = [c.name.upper() for c in self._offered()]
        return [n for n in dict.fromkeys(names) if n not in ("RTX", "RED", "ULPFEC", "FLEXFEC-03")]

    def _offered(self) -> list[Codec]:
        # ASCII digits only: str.isdigit() also accepts "²", which int() refuses.
        pts = (int(f) for f in self.formats if f.isascii() and f.isdigit())
        return [codec for pt in pts if (codec := self.codecs.get(pt)) is not None]

    def rtx_for(self, pt: int) -> int | None:
        """The RTX payload type whose ``apt`` is ``pt``, if offered."""
        for codec in self.codecs.values():
            if codec.name.lower() == "rtx" and codec.fmtp and f"apt={pt}" in codec.fmtp:
                return codec.pt
        return None

    @property
    def media_ssrc(self) -> int | None:
        """The primary (non-RTX) SSRC the sender announced, if any."""
        repair = {rtx for _, rtx in self.fid_groups}
        for ssrc in self.ssrcs:
            if ssrc not in repair:
                return ssrc
        return None

    @property
    def rtx_ssrc(self) -> int | None:
        media = self.media_ssrc
        for primary, rtx in self.fid_groups:
            if primary == media:
                return rtx
        return None


def _fmtp(codec: Codec) -> dict[str, str]:
    params = (p.partition("=") for p in (codec.fmtp or "").split(";"))
    return {k.strip().lower(): v.strip().lower() for k, _, v in params if k.strip()}


def _is_video_codec(codec: Codec, video: VideoCodec) -> bool:
    if codec.name.upper() != video.sdp_name:
        return False
    fmtp = _fmtp(codec)
    if video is VideoCodec.H264:
        return (
            fmtp.get("packetization-mode") == "1" and fmtp.get("profile-level-id") == H264_PROFILE
        )
    if video is VideoCodec.VP9:
        return fmtp.get("profile-id", "0") == "0"
    return True


def require_video_codec(offer: Offer, video: VideoCodec) -> None:
    """Refuse an offer whose video m-lines lack the room's codec
    (:class:`UnsupportedCodec`, its message saying what the client offers instead)."""
    for section in offer.media:
        if section.kind != "video" or section.rejected or section.direction == "inactive":
            continue
        if section.codec(video) is None:
            variant = {VideoCodec.H264: f" ({H264_PROFILE}, packetization-mode=1)"}
            offered = ", ".join(section.video_codecs()) or "none"
            raise UnsupportedCodec(
                f"this room's video codec is {video.sdp_name}{variant.get(video, '')}, which"
                f" this client does not offer on m-line {section.mid!r} (it offers {offered})"
            )


@dataclass
class Offer:
    """A parsed offer: transport parameters and media sections."""

    ice_ufrag: str
    ice_pwd: str
    fingerprints: list[tuple[str, str]]
    media: list[MediaSection]
    extmap_allow_mixed: bool = False


def parse_offer(text: str) -> Offer:
    """Parse an SDP offer; raise :class:`SdpError` when it cannot be answered."""
    session_ufrag: str | None = None
    session_pwd: str | None = None
    session_fps: list[tuple[str, str]] = []
    allow_mixed = False
    media: list[MediaSection] = []
    current: MediaSection | None = None
    for raw in text.splitlines():
        line = raw.strip()
        if len(line) < 2 or line[1] != "=":
            continue
        kind, value = line[0], line[2:]
        if kind == "m":
            parts = value.split()
            if len(parts) < 4 or not parts[1].isdigit():
                raise SdpError(f"bad m-line {line!r}")
            current = MediaSection(parts[0], _int(parts[1]), parts[2], parts[3:])
            media.append(current)
            continue
        if kind != "a":
            continue
        name, _, arg = value.partition(":")
        if name == "ice-ufrag":
            if current is None:
                session_ufrag = arg
            else:
                current.ice_ufrag = arg
        elif name == "ice-pwd":
            if current is None:
                session_pwd = arg
            else:
                current.ice_pwd = arg
        elif name == "fingerprint":
            alg, _, fp = arg.partition(" ")
            (session_fps if current is None else current.fingerprints).append(
                (alg.lower(), fp.upper())
            )
        elif name == "extmap-allow-mixed":
            allow_mixed = True
        elif current is None:
            continue
        elif name == "mid":
            current.mid = arg
        elif name == "bundle-only":
            current.bundle_only = True
        elif name in _DIRECTIONS:
            current.direction = name
        elif name == "setup":
            current.setup = arg
        elif name == "msid":
            current.msid = arg
        elif name == "rtpmap":
            _parse_rtpmap(current, arg)
        elif name == "fmtp":
            pt_text, _, params = arg.partition(" ")
            codec = current.codecs.get(_int(pt_text))
            if codec:
                codec.fmtp = params
        elif name == "rtcp-fb":
            pt_text, _, fb = arg.partition(" ")
            if pt_text == "*":
                for codec in current.codecs.values():
                    codec.feedback.append(fb)
            elif (codec := current.codecs.get(_int(pt_text))) is not None:
                codec.feedback.append(fb)
        elif name == "extmap":
            ident, _, rest = arg.partition(" ")
            uri = rest.split()[0] if rest else ""
            current.extensions[uri] = _int(ident.split("/")[0])
        elif name == "ssrc":
            ssrc = _int(arg.split(maxsplit=1)[0] if arg.strip() else "")
            if ssrc not in current.ssrcs:
                current.ssrcs.append(ssrc)
        elif name == "ssrc-group":
            parts = arg.split()
            if len(parts) == 3 and parts[0] == "FID":
                current.fid_groups.append((_int(parts[1]), _int(parts[2])))
        elif name == "rid":
            parts = arg.split()
            if len(parts) >= 2 and parts[1] == "send":
                current.rids.append(parts[0])
    if not media:
        raise SdpError("offer has no media sections")
    first = next((m for m in media if not m.rejected), None)
    ufrag = (first.ice_ufrag if first else None) or session_ufrag
    pwd = (first.ice_pwd if first else None) or session_pwd
    fps = (first.fingerprints if first else []) or session_fps
    if not ufrag or not pwd:
        raise SdpError("offer has no ICE credentials")
    if not fps:
        raise SdpError("offer has no DTLS fingerprint")
    for section in media:
        if not section.rejected and not section.mid:
            raise SdpError("every media section needs a=mid (BUNDLE)")
    mids = [m.mid for m in media if m.mid]
    if len(set(mids)) != len(mids):
        raise SdpError("duplicate a=mid")
    return Offer(ufrag, pwd, fps, media, allow_mixed)


def _int(text: str) -> int:
    try:
        return int(text)
    except ValueError as exc:
        raise SdpError(f"expected a number, got {text!r}") from exc


def _parse_rtpmap(section: MediaSection, arg: str) -> None:
    pt_text, _, desc = arg.partition(" ")
    parts = desc.split("/")
    if len(parts) < 2:
        raise SdpError(f"bad rtpmap {arg!r}")
    section.codecs[_int(pt_text)] = Codec(
        _int(pt_text), parts[0], _int(parts[1]), _int(parts[2]) if len(parts) > 2 else None
    )


# RFC 8830: an msid identifier is 1 to 64 token characters (RFC 4566; we also keep "@",
# "/" and ":", which handles and participant ids hold and browsers accept).
_MSID_ID = re.compile(r"[A-Za-z0-9!#$%&'*+\-.^_`{|}~@/:]{1,64}")


def msid_id(text: str) -> str:
    """``text`` as an msid identifier: itself when it is one, else a digest of it. A
    participant id is ``<handle>/<device>``, and a guest's ``guest:<name>/<id>`` holds
    the name as typed (spaces, any script, up to 60 characters): written as it is, a
    space split the ``a=msid`` line and Chromium refused the whole answer, so a browser
    received nobody while such a guest was in the room."""
    if _MSID_ID.fullmatch(text):
        return text
    return "p-" + hashlib.sha256(text.encode()).hexdigest()[:32]


@dataclass
class SendInfo:
    """What the SFU sends on one slot (a subscriber's m-line)."""

    ssrc: int
    rtx_ssrc: int | None
    stream_id: str
    track_id: str


@dataclass
class AnswerParams:
    """The SFU side of the answer."""

    ice_ufrag: str
    ice_pwd: str
    fingerprint: str  # "sha-256 AB:CD:..."
    candidates: list[tuple[str, int, str]]  # (ip, port, "udp" | "tcp")
    cname: str = "visavis-sfu"


def build_answer(
    offer: Offer,
    params: AnswerParams,
    *,
    receive: set[str],
    send: dict[str, SendInfo],
    video_codec: VideoCodec = VideoCodec.VP8,
) -> str:
    """Write the answer.

    :param receive: mids on which the SFU accepts the client's media.
    :param send: mid -> what the SFU sends there; other mids are not sent on.
    :param video_codec: the room's video codec (other video codecs are not answered).
    """
    lines = [
        "v=0",
        "o=- 1 1 IN IP4 0.0.0.0",
        "s=visavis-sfu",
        "t=0 0",
        "a=ice-lite",
        "a=msid-semantic:WMS *",
    ]
    bundle = [m.mid for m in offer.media if not m.rejected and m.codec(video_codec) is not None]
    if bundle:
        lines.append("a=group:BUNDLE " + " ".join(bundle))
    dd = video_codec in DD_CODECS
    if dd and offer.extmap_allow_mixed:
        lines.append("a=extmap-allow-mixed")
    for section in offer.media:
        lines += _answer_section(
            section,
            params,
            section.mid in receive,
            send.get(section.mid),
            section.codec(video_codec),
            dd,
            sent_dependency_descriptor(offer, section, video_codec),
        )
    return "\r\n".join(lines) + "\r\n"


def _answer_section(
    section: MediaSection,
    params: AnswerParams,
    receive: bool,
    send: SendInfo | None,
    codec: Codec | None,
    dependency_descriptor: bool,
    dd_sent: int | None,
) -> list[str]:
    if section.rejected or codec is None:
        lines = [f"m={section.kind} 0 {section.proto} {' '.join(section.formats)}"]
        lines += ["c=IN IP4 0.0.0.0"]
        if section.mid:
            lines.append(f"a=mid:{section.mid}")
        return lines
    offered = section.direction
    can_recv = receive and offered in ("sendrecv", "sendonly")
    can_send = send is not None and offered in ("sendrecv", "recvonly")
    direction = {
        (True, True): "sendrecv",
        (True, False): "recvonly",
        (False, True): "sendonly",
        (False, False): "inactive",
    }[(can_recv, can_send)]
    rtx = section.rtx_for(codec.pt) if section.kind == "video" else None
    pts = [codec.pt] + ([rtx] if rtx is not None else [])
    lines = [
        f"m={section.kind} 9 {section.proto} {' '.join(str(p) for p in pts)}",
        "c=IN IP4 0.0.0.0",
        "a=rtcp:9 IN IP4 0.0.0.0",
        f"a=mid:{section.mid}",
        f"a={direction}",
        "a=rtcp-mux",
    ]
    if section.kind == "video":
        lines.append("a=rtcp-rsize")
    for uri in ACCEPTED_EXTENSIONS[section.kind]:
        if uri in section.extensions:
            lines.append(f"a=extmap:{section.extensions[uri]} {uri}")
    if section.twcc_answered:
        lines.append(f"a=extmap:{section.extensions[URI_TRANSPORT_CC]} {URI_TRANSPORT_CC}")
    dd_id = section.extensions.get(URI_DEPENDENCY_DESCRIPTOR)
    received = section.kind == "video" and dependency_descriptor and can_recv
    if dd_id is not None and (received or (can_send and dd_sent is not None)):
        lines.append(f"a=extmap:{dd_id} {URI_DEPENDENCY_DESCRIPTOR}")
    channels = f"/{codec.channels}" if codec.channels else ""
    lines.append(f"a=rtpmap:{codec.pt} {codec.name}/{codec.clock_rate}{channels}")
    if codec.fmtp:
        lines.append(f"a=fmtp:{codec.pt} {codec.fmtp}")
    if section.twcc_answered:
        lines.append(f"a=rtcp-fb:{codec.pt} transport-cc")
    if section.kind == "video":
        for fb in ("nack", "nack pli", "ccm fir", "goog-remb"):
            lines.append(f"a=rtcp-fb:{codec.pt} {fb}")
        if rtx is not None:
            lines += [f"a=rtpmap:{rtx} rtx/{codec.clock_rate}", f"a=fmtp:{rtx} apt={codec.pt}"]
    if can_recv and section.rids:
        lines += [f"a=rid:{rid} recv" for rid in section.rids]
        lines.append("a=simulcast:recv " + ";".join(section.rids))
    if can_send and send is not None:
        msid = f"{msid_id(send.stream_id)} {msid_id(send.track_id)}"
        lines.append(f"a=msid:{msid}")
        if send.rtx_ssrc is not None and rtx is not None:
            lines.append(f"a=ssrc-group:FID {send.ssrc} {send.rtx_ssrc}")
        lines.append(f"a=ssrc:{send.ssrc} cname:{params.cname}")
        lines.append(f"a=ssrc:{send.ssrc} msid:{msid}")
        if send.rtx_ssrc is not None and rtx is not None:
            lines.append(f"a=ssrc:{send.rtx_ssrc} cname:{params.cname}")
            lines.append(f"a=ssrc:{send.rtx_ssrc} msid:{msid}")
    lines += [
        f"a=ice-ufrag:{params.ice_ufrag}",
        f"a=ice-pwd:{params.ice_pwd}",
        f"a=fingerprint:{params.fingerprint}",
        "a=setup:passive",
    ]
    for index, (ip, port, transport) in enumerate(params.candidates):
        if transport == "tcp":
            lines.append(
                f"a=candidate:{index + 1} 1 tcp {1518280447 - index} {ip} {port} typ host "
                "tcptype passive"
            )
        else:
            lines.append(f"a=candidate:{index + 1} 1 udp {2130706431 - index} {ip} {port} typ host")
    lines.append("a=end-of-candidates")
    return lines
