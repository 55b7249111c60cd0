"""PIV data objects: certificate containers, CHUID, CCC, and ykman's PIVMAN objects.

Layouts follow SP 800-73-4 Part 1 Appendix A (certificate: 70 cert, 71 CertInfo, FE LRC;
CHUID Table 9; CCC Table 8). The PIVMAN objects follow yubikey-manager so that a management
key protected by either tool is found by the other.
"""

from __future__ import annotations

import os
from dataclasses import dataclass, field
from datetime import date

from ..core.errors import BadResponseError
from ..core.tlv import TlvError, parse_dict, tlv, unwrap

TAG_CERT = 0x70
TAG_CERT_INFO = 0x71
TAG_LRC = 0xFE
CERTINFO_GZIP = 0x01


# --- certificate container -------------------------------------------------------------

def encode_certificate_object(cert_der: bytes, compress: bool = False) -> bytes:
    """Wrap a DER certificate as SP 800-73-4 stores it; *compress* gzips it and sets CertInfo
    bit 0 (YubiKey and OpenSC read this; it lets RSA-4096 chains fit the object limit)."""
    if compress:
        # mtime=0 makes the bytes reproducible, so re-importing the same cert is idempotent.
        import gzip  # here, not at module level: `pivtool info` start-up pays for imports

        body = gzip.compress(cert_der, mtime=0)
        info = CERTINFO_GZIP
    else:
        body, info = cert_der, 0
    return tlv(TAG_CERT, body) + tlv(TAG_CERT_INFO, bytes((info,))) + tlv(TAG_LRC)


def decode_certificate_object(data: bytes) -> tuple[bytes, bool]:
    """Return (DER certificate, was_compressed) from a certificate object's contents."""
    try:
        items = parse_dict(data)
    except TlvError as e:
        raise BadResponseError(f"malformed certificate object: {e}") from e
    if TAG_CERT not in items:
        raise BadResponseError("certificate object has no certificate (tag 70)")
    body = items[TAG_CERT]
    info = items.get(TAG_CERT_INFO, b"\x00")
    if info and info[0] & CERTINFO_GZIP:
        return _decompress(body), True
    return body, False


#: Largest certificate a compressed object may inflate to: real ones are a few KiB, and a
#: crafted object (a card is untrusted input) must not inflate to gigabytes.
MAX_INFLATED = 64 * 1024


def _inflate(data: bytes, wbits: int) -> bytes:
    import zlib

    d = zlib.decompressobj(wbits)
    out = d.decompress(data, MAX_INFLATED + 1)
    if len(out) > MAX_INFLATED or d.unconsumed_tail:
        raise BadResponseError(f"compressed certificate inflates beyond "
                               f"{MAX_INFLATED // 1024} KiB")
    if not d.eof:
        raise BadResponseError("compressed certificate does not decompress: truncated")
    return out


def _decompress(body: bytes) -> bytes:
    """CertInfo says "compressed": gzip (what YubiKeys and ykman write) or the Net iD
    format (01 00, 2-byte little-endian length, zlib stream), which yubikit reads too.
    Inflated at most to :data:`MAX_INFLATED` bytes."""
    import zlib

    try:
        if body[:2] == b"\x1f\x8b":
            return _inflate(body, 16 + zlib.MAX_WBITS)
        if body[:2] == b"\x01\x00" and len(body) >= 4:
            out = _inflate(body[4:], zlib.MAX_WBITS)
            if len(out) != int.from_bytes(body[2:4], "little"):
                raise BadResponseError("compressed certificate has the wrong length")
            return out
    except (OSError, EOFError, zlib.error) as e:
        raise BadResponseError(f"compressed certificate does not decompress: {e}") from e
    raise BadResponseError("compressed certificate in an unknown format")


# --- FASC-N (TIG SCEPACS §6; 40 x 5-bit BCD characters with odd parity) -----------------

_SS, _FS, _ES = 0b11010, 0b10110, 0b11111


def _bcd5(digit: int) -> int:
    # 4 data bits least-significant first, then an odd-parity bit.
    bits = [(digit >> i) & 1 for i in range(4)]
    parity = 1 - (sum(bits) % 2)
    value = 0
    for b in [*bits, parity]:
        value = (value << 1) | b
    return value


@dataclass(frozen=True)
class FascN:
    """Federal Agency Smart Credential Number. The defaults are the all-9 test identifiers
    commercial PIV-compatible cards use when no agency issued them."""

    agency_code: str = "9999"
    system_code: str = "9999"
    credential_number: str = "999999"
    credential_series: str = "0"
    individual_credential_issue: str = "1"
    person_identifier: str = "0000000000"
    organizational_category: str = "3"
    organizational_identifier: str = "0000"
    association_category: str = "1"

    def encode(self) -> bytes:
        """The 25-byte binary FASC-N."""
        fields = [self.agency_code, self.system_code, self.credential_number,
                  self.credential_series, self.individual_credential_issue]
        chars = [_SS]
        for f in fields:
            chars += [_bcd5(int(d)) for d in f]
            chars.append(_FS)
        for f in (self.person_identifier, self.organizational_category,
                  self.organizational_identifier, self.association_category):
            chars += [_bcd5(int(d)) for d in f]
        chars.append(_ES)
        lrc = 0
        for c in chars:
            lrc ^= c
        chars.append(lrc)
        value = 0
        for c in chars:
            value = (value << 5) | c
        if len(chars) != 40:
            raise ValueError("FASC-N field lengths are wrong")
        return value.to_bytes(25, "big")


# --- CHUID ---------------------------------------------------------------------------

@dataclass
class Chuid:
    """Card Holder Unique Identifier (SP 800-73-4 Part 1 Table 9).

    Windows keys its smart-card certificate cache on the GUID, so a new certificate wants a
    new GUID (:meth:`generate`)."""

    guid: bytes
    fasc_n: bytes = field(default_factory=lambda: FascN().encode())
    expiration: date = date(2030, 1, 1)
    signature: bytes = b""  # issuer asymmetric signature; empty = unsigned (not a real PIV)
    extra: dict[int, bytes] = field(default_factory=dict)

    @classmethod
    def generate(cls) -> Chuid:
        """A CHUID with a fresh random GUID."""
        return cls(guid=os.urandom(16))

    def encode(self) -> bytes:
        """The object's contents (without the 53 wrapper)."""
        out = tlv(0x30, self.fasc_n)
        for tag in (0x32, 0x33):
            if tag in self.extra:
                out += tlv(tag, self.extra[tag])
        out += tlv(0x34, self.guid)
        out += tlv(0x35, self.expiration.strftime("%Y%m%d").encode())
        if 0x36 in self.extra:
            out += tlv(0x36, self.extra[0x36])
        out += tlv(0x3E, self.signature) + tlv(TAG_LRC)
        return out

    @classmethod
    def decode(cls, data: bytes) -> Chuid:
        """Parse a CHUID object's contents."""
        try:
            items = parse_dict(data)
            exp_raw = items.get(0x35, b"20300101").decode("ascii")
            expiration = date(int(exp_raw[:4]), int(exp_raw[4:6]), int(exp_raw[6:8]))
        except (TlvError, ValueError, UnicodeDecodeError) as e:
            raise BadResponseError(f"malformed CHUID: {e}") from e
        if 0x34 not in items:
            raise BadResponseError("malformed CHUID: no GUID (tag 34)")
        extra = {t: v for t, v in items.items() if t in (0x32, 0x33, 0x36)}
        return cls(guid=items[0x34], fasc_n=items.get(0x30, b""), expiration=expiration,
                   signature=items.get(0x3E, b""), extra=extra)

    @property
    def guid_hex(self) -> str:
        """GUID as 32 hex digits."""
        return self.guid.hex()


# --- CCC -----------------------------------------------------------------------------

#: GSC-IS RID + manufacturer FF (unknown) + card type 02 (Java card): the card identifier
#: prefix SP 800-73-4 Table 8 describes and yubico-piv-tool/ykman use.
CCC_ID_PREFIX = bytes.fromhex("a000000116ff02")


def build_ccc(card_id_random: bytes | None = None) -> bytes:
    """Card Capability Container contents (SP 800-73-4 Part 1 Table 8) with a random id."""
    rnd = card_id_random if card_id_random is not None else os.urandom(14)
    if len(rnd) != 14:
        raise ValueError("CCC card identifier random part must be 14 bytes")
    return (tlv(0xF0, CCC_ID_PREFIX + rnd) + tlv(0xF1, b"\x21") + tlv(0xF2, b"\x21")
            + tlv(0xF3) + tlv(0xF4, b"\x00") + tlv(0xF5, b"\x10") + tlv(0xF6) + tlv(0xF7)
            + tlv(0xFA) + tlv(0xFB) + tlv(0xFC) + tlv(0xFD) + tlv(TAG_LRC))


def ccc_card_id(data: bytes) -> bytes:
    """The card identifier (tag F0) of a CCC."""
    try:
        return parse_dict(data)[0xF0]
    except (TlvError, KeyError) as e:
        raise BadResponseError("malformed CCC: no card identifier") from e


# --- PIVMAN (yubikey-manager's objects) ----------------------------------------------

PIVMAN_FLAG_PUK_BLOCKED = 0x01
PIVMAN_FLAG_MGMT_PROTECTED = 0x02


@dataclass
class PivmanData:
    """ykman's object 5FFF00: tag 80 { 81 flags, 82 salt (PIN-derived key, deprecated),
    83 PIN change timestamp }."""

    flags: int | None = None
    salt: bytes | None = None
    pin_timestamp: int | None = None

    @property
    def mgmt_key_protected(self) -> bool:
        """True when the management key is stored in the PIN-protected object."""
        return bool((self.flags or 0) & PIVMAN_FLAG_MGMT_PROTECTED)

    @property
    def puk_blocked(self) -> bool:
        """True when ykman blocked the PUK on purpose (its PIN-only mode)."""
        return bool((self.flags or 0) & PIVMAN_FLAG_PUK_BLOCKED)

    @property
    def has_derived_key(self) -> bool:
        """True for ykman's old PIN-derived management key (a salt in tag 82): the key is
        :func:`derive_mgmt_key` of the PIN and that salt."""
        return self.salt is not None

    def set_flag(self, mask: int, on: bool) -> None:
        """Set or clear a flag bit."""
        if on:
            self.flags = (self.flags or 0) | mask
        elif self.flags is not None:
            self.flags &= ~mask

    def encode(self) -> bytes:
        """Object contents; empty when nothing is set (the object is then deleted)."""
        inner = b""
        if self.flags:
            inner += tlv(0x81, bytes((self.flags,)))
        if self.salt is not None:
            inner += tlv(0x82, self.salt)
        if self.pin_timestamp is not None:
            inner += tlv(0x83, self.pin_timestamp.to_bytes(4, "big"))
        return tlv(0x80, inner) if inner else b""

    @classmethod
    def decode(cls, data: bytes) -> PivmanData:
        """Parse the object contents (empty = nothing set)."""
        if not data:
            return cls()
        try:
            items = parse_dict(unwrap(data, 0x80))
        except TlvError as e:
            raise BadResponseError(f"malformed PIVMAN data: {e}") from e
        flags = items[0x81][0] if items.get(0x81) else None
        ts = int.from_bytes(items[0x83], "big") if 0x83 in items else None
        return cls(flags, items.get(0x82), ts)


#: ykman's PIN-derived management key: PBKDF2-HMAC-SHA1, 10,000 rounds, a 24-byte 3DES key
#: (``ykman.piv.derive_management_key``; deprecated by ykman, still found on older keys).
PIVMAN_KDF_ROUNDS = 10_000
PIVMAN_KDF_KEY_LEN = 24


def derive_mgmt_key(pin: bytes, salt: bytes) -> bytes:
    """The 3DES management key ykman derived from *pin* (unpadded, as typed) and the
    PIVMAN salt (tag 82)."""
    from cryptography.hazmat.primitives import hashes
    from cryptography.hazmat.primitives.kdf.pbkdf2 import PBKDF2HMAC

    kdf = PBKDF2HMAC(hashes.SHA1(), PIVMAN_KDF_KEY_LEN, salt, PIVMAN_KDF_ROUNDS)
    return kdf.derive(pin)


@dataclass
class PivmanProtectedData:
    """ykman's PIN-protected object 5FC109: tag 88 { 89 management key }.

    ``repr`` hides the key so it cannot leak into a log or traceback."""

    key: bytes | None = field(default=None, repr=False)

    def encode(self) -> bytes:
        """Object contents; empty when no key is stored."""
        return tlv(0x88, tlv(0x89, self.key)) if self.key is not None else b""

    @classmethod
    def decode(cls, data: bytes) -> PivmanProtectedData:
        """Parse the object contents."""
        if not data:
            return cls()
        try:
            items = parse_dict(unwrap(data, 0x88))
        except TlvError:
            # Never echo the bytes: they may be a key.
            raise BadResponseError("malformed PIN-protected data object") from None
        return cls(items.get(0x89))
