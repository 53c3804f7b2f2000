"""Check SFrame test vectors: ``python -m visavis.e2ee.sframe --vectors FILE``.

The file is the JSON published with RFC 9605 (Appendix C): ``header`` encodings,
``aes_ctr_hmac`` AEAD cases and full ``sframe`` encryptions for each cipher suite. Each
case is run through the codec in ``visavis.protocol.sframe`` in both directions; the
command prints ``N passed, N failed`` and exits non-zero on any failure.
"""

from __future__ import annotations

import argparse
import json
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any

from visavis.protocol.sframe import (
    Aead,
    CipherSuite,
    Context,
    SendKey,
    decode_header,
    derive_key_salt,
    encode_header,
)
from visavis.protocol.sframe.suites import derive_secret

Case = dict[str, Any]


def _h(value: str) -> bytes:
    return bytes.fromhex(value)


class VectorMismatch(AssertionError):
    """A computed value differs from the vector's."""


def _expect(ok: bool, what: str) -> None:
    if not ok:
        raise VectorMismatch(f"{what} differs from the vector")


def _header(case: Case) -> None:
    encoded = _h(case["encoded"])
    _expect(encode_header(case["kid"], case["ctr"]) == encoded, "encode")
    parsed = decode_header(encoded)
    _expect((parsed.kid, parsed.ctr, parsed.raw) == (case["kid"], case["ctr"], encoded), "decode")


def _aes_ctr_hmac(case: Case) -> None:
    suite = CipherSuite(case["cipher_suite"])
    aead = Aead(suite, _h(case["key"]))
    nonce, aad, ct = _h(case["nonce"]), _h(case["aad"]), _h(case["ct"])
    _expect(aead.key[: aead.params.nka] == _h(case["enc_key"]), "enc_key")
    _expect(aead.key[aead.params.nka :] == _h(case["auth_key"]), "auth_key")
    _expect(aead.seal(nonce, aad, _h(case["pt"])) == ct, "seal")
    _expect(aead.open(nonce, aad, ct) == _h(case["pt"]), "open")


def _sframe(case: Case) -> None:
    suite = CipherSuite(case["cipher_suite"])
    kid, ctr, base_key = case["kid"], case["ctr"], _h(case["base_key"])
    _expect(derive_secret(suite, base_key) == _h(case["sframe_secret"]), "secret")
    key, salt = derive_key_salt(suite, kid, base_key)
    _expect((key, salt) == (_h(case["sframe_key"]), _h(case["sframe_salt"])), "key/salt")
    nonce = (int.from_bytes(salt, "big") ^ ctr).to_bytes(len(salt), "big")
    _expect(nonce == _h(case["nonce"]), "nonce")
    metadata, ct, pt = _h(case["metadata"]), _h(case["ct"]), _h(case["pt"])
    _expect(encode_header(kid, ctr) + metadata == _h(case["aad"]), "aad")
    _expect(SendKey(kid, base_key, suite, ctr).protect(pt, metadata) == ct, "protect")
    receiver = Context(suite)
    receiver.add_key(kid, base_key)
    _expect(receiver.unprotect(ct, metadata).plaintext == pt, "unprotect")


CHECKS: dict[str, Callable[[Case], None]] = {
    "header": _header,
    "aes_ctr_hmac": _aes_ctr_hmac,
    "sframe": _sframe,
}


def check_vectors(vectors: dict[str, list[Case]]) -> tuple[int, list[str]]:
    """(number passed, descriptions of failures) for every case in ``vectors``."""
    passed, failures = 0, []
    for section, cases in vectors.items():
        check = CHECKS.get(section)
        if check is None:
            failures.append(f"{section}: unknown section")
            continue
        for index, case in enumerate(cases):
            try:
                check(case)
            except Exception as exc:  # a failing vector is reported, never raised
                failures.append(f"{section}[{index}]: {type(exc).__name__} {exc}")
            else:
                passed += 1
    return passed, failures


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m visavis.e2ee.sframe", description=__doc__)
    parser.add_argument("--vectors", type=Path, required=True, help="RFC 9605 vector JSON")
    parser.add_argument("-v", "--verbose", action="store_true", help="list every failure")
    args = parser.parse_args(argv)
    passed, failures = check_vectors(json.loads(args.vectors.read_text()))
    if args.verbose:
        for failure in failures:
            print(failure)
    print(f"{passed} passed, {len(failures)} failed")
    return 1 if failures else 0


if __name__ == "__main__":
    sys.exit(main())
