"""The SDP subset the SFU reads (:func:`parse_offer`) and the answer it writes from it.

The offer arrives as a JSON string (any code points, lone surrogates included, up to the
control message's 200,000 characters). A parsed offer must also be answerable: the SFU
builds an answer from every offer it accepts, receiving on and sending to every mid.
"""

from __future__ import annotations

from fuzz.contract import Target, text_of
from visavis.protocol.sdp import AnswerParams, SdpError, SendInfo, build_answer, parse_offer

_PARAMS = AnswerParams(
    ice_ufrag="sfuf",
    ice_pwd="sfu-password-of-22-chars",
    fingerprint="sha-256 " + ":".join(["AB"] * 32),
    candidates=[("192.0.2.1", 3480, "udp"), ("192.0.2.1", 3481, "tcp")],
)


def one_input(data: bytes) -> None:
    offer = parse_offer(text_of(data))
    for section in offer.media:
        section.codec()
        section.media_ssrc  # noqa: B018 - properties run parsing-derived logic
        section.rtx_ssrc  # noqa: B018
    mids = {m.mid for m in offer.media}
    send = {mid: SendInfo(1111, 2222, "stream", "track") for mid in mids}
    build_answer(offer, _PARAMS, receive=mids, send=send)


_TOKENS = (
    "\r\nm=audio 9 UDP/TLS/RTP/SAVPF ",
    "\r\nm=video 0 ",
    "\r\na=mid:",
    "\r\na=rtpmap:",
    "\r\na=fmtp:",
    "\r\na=rtcp-fb:",
    "\r\na=extmap:",
    "\r\na=ssrc:",
    "\r\na=ssrc-group:FID ",
    "\r\na=rid:",
    "\r\na=ice-ufrag:",
    "\r\na=ice-pwd:",
    "\r\na=fingerprint:sha-256 ",
    "\r\na=setup:",
    "\r\na=msid:",
    "\r\na=sendonly",
    "\r\na=recvonly",
    "opus/48000/2",
    "VP8/90000",
    "rtx/90000",
    "apt=",
    " send",
    "\u00b2",
    "\u0663",
)
TARGET = Target(
    "sdp", one_input, (SdpError,), max_len=6000, dictionary=tuple(t.encode() for t in _TOKENS)
)
