"""End-to-end encryption above DTLS-SRTP: SFrame per frame, keys the servers never see.

``sframe`` checks RFC 9605 vectors, ``frames`` applies SFrame to codec frames with
their routing bytes left clear but authenticated, ``identity`` and ``keys`` hold the
device identity and the per-call key schedule.
"""
