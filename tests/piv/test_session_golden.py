"""The session's command encodings against byte strings written from SP 800-73-4 Part 2 and
Yubico's published PIV extension formats — not produced by our own encoder."""

from __future__ import annotations

from collections.abc import Callable

import pytest

from pivtool.core.errors import (
    IncorrectDataError,
    NotSupportedError,
    SecurityStatusError,
    UsageError,
)
from pivtool.piv.constants import KeyType, MgmtKeyType, PinPolicy, Slot, TouchPolicy
from pivtool.piv.session import PivSession

Responder = Callable[[bytes], tuple[bytes, int]]


class Scripted:
    """Answers SELECT and GET VERSION, then whatever *reply* says; records every APDU."""

    atr = b"\x3b"
    reader_name = "scripted"

    def __init__(self, version: bytes | None, reply: Responder | None = None) -> None:
        self.version = version
        self.reply = reply or (lambda apdu: (b"", 0x9000))
        self.sent: list[bytes] = []

    def transmit(self, apdu: bytes) -> tuple[bytes, int]:
        self.sent.append(apdu)
        if apdu[1] == 0xA4:
            return b"", 0x9000
        if apdu[1] == 0xFD:
            return (self.version, 0x9000) if self.version else (b"", 0x6D00)
        return self.reply(apdu)

    def close(self) -> None:
        pass


def generic(reply: Responder | None = None) -> tuple[PivSession, Scripted]:
    conn = Scripted(None, reply)
    s = PivSession(conn)
    conn.sent.clear()
    return s, conn


def test_select_and_version_probe() -> None:
    conn = Scripted(bytes((5, 7, 1)))
    s = PivSession(conn)
    assert conn.sent[0].hex().upper() == "00A4040005A000000308"
    assert conn.sent[1].hex().upper() == "00FD0000"
    assert str(s.version) == "5.7.1" and s.protocol.extended


def test_generic_card_has_no_version_and_no_extended() -> None:
    s, _ = generic()
    assert s.version is None and not s.is_yubikey and not s.protocol.extended


def test_verify_pin_pads_with_ff() -> None:
    s, conn = generic()
    s.verify_pin("123456")
    assert conn.sent == [bytes.fromhex("0020008008313233343536FFFF")]


def test_pin_length_checked_before_the_card() -> None:
    s, conn = generic()
    for bad in ("12345", "123456789", ""):
        with pytest.raises(UsageError):
            s.verify_pin(bad)
    assert conn.sent == []


def test_empty_verify_reads_tries() -> None:
    s, conn = generic(lambda apdu: (b"", 0x63C2))
    assert s.pin_tries_by_verify() == 2
    assert conn.sent == [bytes.fromhex("00200080")]


def test_unverify() -> None:
    s, conn = generic()
    s.unverify_pin()
    assert conn.sent == [bytes.fromhex("0020FF80")]


def test_change_pin_and_unblock() -> None:
    s, conn = generic()
    s.change_pin("123456", "654321")
    s.change_puk("12345678", "87654321")
    s.unblock_pin("87654321", "11112222")
    assert conn.sent == [
        bytes.fromhex("0024008010" "313233343536FFFF" "363534333231FFFF"),
        bytes.fromhex("0024008110" "3132333435363738" "3837363534333231"),
        bytes.fromhex("002C008010" "3837363534333231" "3131313132323232"),
    ]


def test_get_data_chuid() -> None:
    s, conn = generic(lambda apdu: (bytes.fromhex("5303340100"), 0x9000))
    assert s.get_data(0x5FC102) == bytes.fromhex("340100")
    assert conn.sent == [bytes.fromhex("00CB3FFF055C035FC102")]


def test_get_data_discovery_uses_one_byte_tag() -> None:
    s, conn = generic(lambda apdu: (bytes.fromhex("7E024F00"), 0x9000))
    assert s.get_data(0x7E) == bytes.fromhex("4F00")
    assert conn.sent == [bytes.fromhex("00CB3FFF035C017E")]


def test_put_data_wraps_in_53() -> None:
    s, conn = generic()
    s.put_data(0x5FC102, bytes.fromhex("3401AA"))
    assert conn.sent == [bytes.fromhex("00DB3FFF0A5C035FC102" "53033401AA")]


def test_generate_template() -> None:
    point = bytes.fromhex("04" + "6b17d1f2e12c4247f8bce6e563a440f277037d812deb33a0f4a13945d898c296"
                          "4fe342e2fe1a7f9b8ee7eb4a7c0f9e162bce33576b315ececbb6406837bf51f5")

    def reply(apdu: bytes) -> tuple[bytes, int]:
        return bytes.fromhex("7F4943") + bytes.fromhex("8641") + point, 0x9000

    s, conn = generic(reply)
    pub = s.generate_key(Slot.AUTHENTICATION, KeyType.ECCP256)
    assert conn.sent == [bytes.fromhex("0047009A05AC03800111")]
    assert pub.public_numbers().x == int(point[1:33].hex(), 16)  # type: ignore[union-attr]


def test_generate_with_policies_on_yubikey_short_form() -> None:
    conn = Scripted(bytes((5, 4, 3)), lambda apdu: (b"", 0x6A80))
    s = PivSession(conn, extended=False)
    conn.sent.clear()
    with pytest.raises(IncorrectDataError):
        s.generate_key(Slot.SIGNATURE, KeyType.ECCP384, PinPolicy.ALWAYS, TouchPolicy.CACHED)
    assert conn.sent == [bytes.fromhex("0047009C0BAC09800114AA0103AB0103")]


def test_mgmt_auth_step_one() -> None:
    s, conn = generic(lambda apdu: (b"", 0x6982))
    with pytest.raises(SecurityStatusError):
        s.authenticate(bytes(24), MgmtKeyType.TDES)
    assert conn.sent == [bytes.fromhex("0087039B047C028000")]


def test_set_mgmt_key_and_touch_form() -> None:
    conn = Scripted(bytes((5, 7, 1)))
    s = PivSession(conn, extended=False)
    conn.sent.clear()
    key = bytes(range(16))
    s.set_mgmt_key(MgmtKeyType.AES128, key, touch=True)
    assert conn.sent == [bytes.fromhex("00FFFFFE13089B10") + key]


def test_yubikey_extensions_refused_on_generic() -> None:
    s, conn = generic()
    for call in (s.get_serial, s.reset, lambda: s.move_key(Slot.SIGNATURE, Slot.RETIRED1),
                 lambda: s.set_mgmt_key(MgmtKeyType.TDES, bytes(24)),
                 s.get_pin_metadata):
        with pytest.raises(NotSupportedError):
            call()
    assert conn.sent == []


def test_firmware_gates_before_sending() -> None:
    conn = Scripted(bytes((5, 4, 3)))
    s = PivSession(conn)
    conn.sent.clear()
    with pytest.raises(NotSupportedError):
        s.generate_key(Slot.AUTHENTICATION, KeyType.ED25519)
    with pytest.raises(NotSupportedError):
        s.delete_key(Slot.AUTHENTICATION)
    assert conn.sent == []


def test_yubikey_extension_encodings() -> None:
    conn = Scripted(bytes((5, 7, 1)),
                    lambda apdu: (b"\x01\x02\x03\x04" if apdu[1] == 0xF8 else b"", 0x9000))
    s = PivSession(conn, extended=False)
    conn.sent.clear()
    assert s.get_serial() == 0x01020304
    s.set_pin_retries(5, 4)
    s.reset()
    s.move_key(Slot.AUTHENTICATION, Slot.RETIRED1)
    s.delete_key(Slot.SIGNATURE)
    assert [a.hex().upper() for a in conn.sent] == [
        "00F80000", "00FA0504", "00FB0000", "00F6829A", "00F6FF9C"]


def test_contactless_yubikey_uses_chaining() -> None:
    # A YubiKey 5 NFC on a contactless reader (PC/SC part 3 ATR 3B 8x 80 01): extended
    # length depends on the reader there, so chaining is used (as yubikit does).
    conn = Scripted(bytes((5, 7, 1)))
    conn.atr = bytes.fromhex("3B8D80018073C021C057597562694B6579F9")
    assert not PivSession(conn).protocol.extended
    conn.atr = bytes.fromhex("3BFD1300008131FE158073C021C057597562694B657940")
    assert PivSession(conn).protocol.extended


def test_certificate_object_compression_formats() -> None:
    import gzip
    import zlib

    from pivtool.core.errors import BadResponseError
    from pivtool.piv.objects import decode_certificate_object

    der = bytes(range(256)) * 4
    # Hand-built objects: 70 <compressed cert> 71 01 01 (CertInfo: compressed) FE 00, with
    # gzip (what YubiKeys and ykman write) and the Net iD zlib format (01 00 len-LE zlib).
    for body in (gzip.compress(der),
                 b"\x01\x00" + len(der).to_bytes(2, "little") + zlib.compress(der)):
        obj = (b"\x70\x82" + len(body).to_bytes(2, "big") + body + b"\x71\x01\x01\xfe\x00")
        assert decode_certificate_object(obj) == (der, True)
    bad = b"\x70\x03\x01\x00\x05\x71\x01\x01\xfe\x00"
    with pytest.raises(BadResponseError):
        decode_certificate_object(bad)


def test_compressed_certificate_inflation_is_bounded() -> None:
    """Issue 16: a compressed certificate object was inflated without a bound (a card is
    untrusted input: 3 KB of gzip can inflate to megabytes)."""
    import gzip
    import zlib

    from pivtool.core.errors import BadResponseError
    from pivtool.piv.objects import MAX_INFLATED, decode_certificate_object

    bomb = bytes(16 * 1024 * 1024)  # 16 MiB of zeros: ~16 KiB compressed
    for body in (gzip.compress(bomb),
                 b"\x01\x00\xff\xff" + zlib.compress(bomb)):
        obj = (b"\x70\x83" + len(body).to_bytes(3, "big") + body + b"\x71\x01\x01\xfe\x00")
        with pytest.raises(BadResponseError, match="inflates beyond 64 KiB"):
            decode_certificate_object(obj)
    fits = bytes(MAX_INFLATED)
    body = gzip.compress(fits)
    obj = b"\x70\x82" + len(body).to_bytes(2, "big") + body + b"\x71\x01\x01\xfe\x00"
    assert decode_certificate_object(obj) == (fits, True)
