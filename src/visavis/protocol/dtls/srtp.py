"""DTLS-SRTP keying (RFC 5764 s4.2, RFC 7714 s12), sans-I/O: profiles and key material.

After the handshake both ends export ``2 * (key + salt)`` bytes with the label
``EXTRACTOR-dtls_srtp`` and cut them the same way: client key, server key, client salt,
server salt. Each side encrypts with its own half and decrypts with the other's.
"""

from __future__ import annotations

from dataclasses import dataclass

EXPORTER_LABEL = b"EXTRACTOR-dtls_srtp"


@dataclass(frozen=True, slots=True)
class SrtpProfile:
    """A DTLS-SRTP protection profile, named as OpenSSL's ``use_srtp`` list spells it."""

    openssl: bytes
    key_length: int
    salt_length: int

    @property
    def material_length(self) -> int:
        """Bytes to export: a key and a salt for each direction."""
        return 2 * (self.key_length + self.salt_length)


AEAD_AES_128_GCM = SrtpProfile(b"SRTP_AEAD_AES_128_GCM", 16, 12)
AES128_CM_SHA1_80 = SrtpProfile(b"SRTP_AES128_CM_SHA1_80", 16, 14)
PROFILES = (AEAD_AES_128_GCM, AES128_CM_SHA1_80)  # the SFU's preference order


@dataclass(frozen=True, slots=True)
class SrtpKeys:
    """Master key + salt of each direction (what libsrtp takes as one key)."""

    profile: SrtpProfile
    client: bytes  # the client encrypts with it: the server's inbound key
    server: bytes  # the server encrypts with it: the server's outbound key


def split_keying_material(profile: SrtpProfile, material: bytes) -> SrtpKeys:
    """Cut exported keying material into each direction's key + salt (RFC 5764 s4.2)."""
    if len(material) != profile.material_length:
        raise ValueError(
            f"{len(material)} bytes of keying material, expected {profile.material_length}"
        )
    k, s = profile.key_length, profile.salt_length
    client = material[:k] + material[2 * k : 2 * k + s]
    server = material[k : 2 * k] + material[2 * k + s :]
    return SrtpKeys(profile, client, server)


def profile_named(name: bytes | None) -> SrtpProfile | None:
    """The profile OpenSSL selected (``get_selected_srtp_profile``), if it is one of ours."""
    return next((p for p in PROFILES if p.openssl == name), None)
