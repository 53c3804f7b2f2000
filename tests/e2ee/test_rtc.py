"""The private aiortc hooks SFrame relies on still exist (fails loudly on a rename)."""

from __future__ import annotations

import inspect
import queue

import aiortc
import aiortc.rtcrtpreceiver
from aiortc import RTCRtpReceiver, RTCRtpSender
from aiortc.codecs.vpx import Vp8Encoder, VpxPayloadDescriptor

from visavis.e2ee.ratchet import Keyring
from visavis.e2ee.rtc import RECEIVER_ERROR, RECEIVER_QUEUE, SENDER_HOOK, decrypt_receiver


class _Transport:
    """Just enough of an RTCDtlsTransport for the constructors."""

    state = "new"
    transport = None

    def _register_rtp_receiver(self, *args: object) -> None: ...

    def _register_rtp_sender(self, *args: object) -> None: ...


def test_sender_hook_exists() -> None:
    assert inspect.iscoroutinefunction(getattr(RTCRtpSender, SENDER_HOOK))
    assert "self.__encoder.pack" in inspect.getsource(getattr(RTCRtpSender, SENDER_HOOK))
    assert callable(Vp8Encoder._packetize) and callable(VpxPayloadDescriptor.parse)


async def test_receiver_queue_is_replaced_before_the_decoder_thread_takes_it() -> None:
    receiver = RTCRtpReceiver("video", _Transport())  # type: ignore[arg-type]
    assert isinstance(getattr(receiver, RECEIVER_QUEUE), queue.Queue)
    assert hasattr(receiver, RECEIVER_ERROR)
    decrypt_receiver(receiver, Keyring(), "video")
    assert type(getattr(receiver, RECEIVER_QUEUE)).__name__ == "_DecryptingQueue"
    source = inspect.getsource(aiortc.rtcrtpreceiver.RTCRtpReceiver)
    assert "self.__decoder_queue.put((codec, encoded_frame))" in source
    assert "self.__decoder_queue,\n" in source  # handed to decoder_worker at thread start


async def test_peer_connection_certificate_list_is_where_direct_e2ee_puts_its_own() -> None:
    """DirectE2ee gives every connection of a 1:1 call the certificate it signed."""
    pc = aiortc.RTCPeerConnection()
    try:
        assert isinstance(pc._RTCPeerConnection__certificates, list)  # type: ignore[attr-defined]
        source = inspect.getsource(aiortc.RTCPeerConnection)
        assert "RTCDtlsTransport(iceTransport, self.__certificates)" in source
    finally:
        await pc.close()
