"""The SFU's ICE-lite: the sans-I/O module is :mod:`visavis.protocol.ice_lite` (on the
project's STUN codec); this import path is kept for the SFU shells and the fuzz targets."""

from visavis.protocol.ice_lite import CheckResult, answer_check, parse_request

__all__ = ["CheckResult", "answer_check", "parse_request"]
