"""yubikit's PivSession and ManagementSession as the judge of the virtual YubiKey."""

from __future__ import annotations

import gzip
import os
from collections.abc import Callable

import pytest
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec, ed25519, padding, rsa, x25519
from cryptography.x509.oid import NameOID
from simhelpers import YubikitConnection
from yubikit.core import TRANSPORT, InvalidPinError, NotSupportedError
from yubikit.core.smartcard import ApduError
from yubikit.management import CAPABILITY, FORM_FACTOR, ManagementSession
from yubikit.piv import (
    DEFAULT_MANAGEMENT_KEY,
    KEY_TYPE,
    MANAGEMENT_KEY_TYPE,
    OBJECT_ID,
    PIN_POLICY,
    SLOT,
    TOUCH_POLICY,
    PivSession,
)

from pivtool.sim import VirtualCard, attestation_root_ca

MSG = b"pivtool virtual card test message"


def _self_signed(key: ec.EllipticCurvePrivateKey, cn: str = "test") -> x509.Certificate:
    import datetime

    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, cn)])
    now = datetime.datetime.now(datetime.timezone.utc)
    return (
        x509.CertificateBuilder()
        .subject_name(name)
        .issuer_name(name)
        .public_key(key.public_key())
        .serial_number(1)
        .not_valid_before(now)
        .not_valid_after(now + datetime.timedelta(days=1))
        .sign(key, hashes.SHA256())
    )


# --- identity -------------------------------------------------------------------------


def test_version_serial_and_default_mgmt_key_type(piv: PivSession, card: VirtualCard) -> None:
    assert tuple(piv.version) == (5, 7, 1)
    assert piv.get_serial() == card.state.serial
    assert piv.management_key_type == MANAGEMENT_KEY_TYPE.AES192


def test_device_info(card: VirtualCard) -> None:
    info = ManagementSession(YubikitConnection(card)).read_device_info()
    assert info.serial == card.state.serial
    assert tuple(info.version) == (5, 7, 1)
    assert info.form_factor == FORM_FACTOR.USB_A_KEYCHAIN
    assert CAPABILITY.PIV in info.supported_capabilities[TRANSPORT.USB]
    assert CAPABILITY.PIV in info.config.enabled_capabilities[TRANSPORT.USB]
    assert CAPABILITY.PIV in info.config.enabled_capabilities[TRANSPORT.NFC]


# --- management key -------------------------------------------------------------------


@pytest.mark.parametrize("key_type", list(MANAGEMENT_KEY_TYPE))
def test_authenticate_each_mgmt_key_type(piv: PivSession, key_type: MANAGEMENT_KEY_TYPE) -> None:
    piv.authenticate(DEFAULT_MANAGEMENT_KEY)
    new_key = os.urandom(key_type.key_len)
    piv.set_management_key(key_type, new_key)
    meta = piv.get_management_key_metadata()
    assert meta.key_type == key_type
    assert not meta.default_value
    # A new session must learn the type from metadata and authenticate with the new key.
    fresh = PivSession(piv.protocol.connection)
    assert fresh.management_key_type == key_type
    fresh.authenticate(new_key)
    wrong = bytearray(new_key)
    wrong[0] ^= 0x10  # not a DES parity bit
    with pytest.raises(ApduError) as e:
        fresh.authenticate(bytes(wrong))
    assert e.value.sw == 0x6982


def test_wrong_mgmt_key_and_no_auth(piv: PivSession) -> None:
    with pytest.raises(ApduError) as e:
        piv.authenticate(bytes(24))
    assert e.value.sw == 0x6982
    with pytest.raises(ApduError) as e:
        piv.generate_key(SLOT.AUTHENTICATION, KEY_TYPE.ECCP256)
    assert e.value.sw == 0x6982
    with pytest.raises(ApduError) as e:
        piv.put_object(OBJECT_ID.CHUID, b"x")
    assert e.value.sw == 0x6982


def test_mgmt_key_touch_recorded(piv: PivSession, card: VirtualCard) -> None:
    piv.authenticate(DEFAULT_MANAGEMENT_KEY)
    piv.set_management_key(MANAGEMENT_KEY_TYPE.AES128, bytes(range(16)), require_touch=True)
    assert piv.get_management_key_metadata().touch_policy == TOUCH_POLICY.ALWAYS
    piv.authenticate(bytes(range(16)))
    assert "touch requested for slot 9b" in card.transcript


# --- PIN and PUK ----------------------------------------------------------------------


def test_pin_lifecycle(piv: PivSession) -> None:
    assert piv.get_pin_attempts() == 3
    with pytest.raises(InvalidPinError) as e:
        piv.verify_pin("000000")
    assert e.value.attempts_remaining == 2
    assert piv.get_pin_metadata().attempts_remaining == 2
    piv.verify_pin("123456")
    assert piv.get_pin_attempts() == 3
    piv.change_pin("123456", "654321")
    assert not piv.get_pin_metadata().default_value
    piv.verify_pin("654321")
    piv.change_puk("12345678", "87654321")
    assert not piv.get_puk_metadata().default_value
    with pytest.raises(InvalidPinError) as e:
        piv.change_puk("12345678", "11111111")
    assert e.value.attempts_remaining == 2


def test_pin_block_unblock(piv: PivSession) -> None:
    for left in (2, 1, 0):
        with pytest.raises(InvalidPinError) as e:
            piv.verify_pin("999999")
        assert e.value.attempts_remaining == left
    with pytest.raises(InvalidPinError) as e:  # blocked: 6983 maps to 0 attempts
        piv.verify_pin("123456")
    assert e.value.attempts_remaining == 0
    piv.unblock_pin("12345678", "11223344")
    assert piv.get_pin_attempts() == 3
    piv.verify_pin("11223344")


def test_new_pin_too_short_rejected(piv: PivSession) -> None:
    with pytest.raises(ApduError) as e:
        piv.change_pin("123456", "1234")
    assert e.value.sw == 0x6A80


def test_set_pin_attempts(admin: PivSession) -> None:
    admin.change_pin("123456", "24682468")
    admin.set_pin_attempts(5, 4)
    assert admin.get_pin_metadata().total_attempts == 5
    assert admin.get_puk_metadata().total_attempts == 4
    # PIN and PUK are back to their defaults.
    admin.verify_pin("123456")
    assert admin.get_pin_metadata().default_value


def test_set_pin_attempts_needs_pin(piv: PivSession) -> None:
    piv.authenticate(DEFAULT_MANAGEMENT_KEY)
    with pytest.raises(ApduError) as e:
        piv.set_pin_attempts(5, 5)
    assert e.value.sw == 0x6982


def test_reset_only_when_blocked_then_factory(admin: PivSession, card: VirtualCard) -> None:
    admin.generate_key(SLOT.AUTHENTICATION, KEY_TYPE.ECCP256)
    admin.put_object(OBJECT_ID.CHUID, b"chuid")
    with pytest.raises(ApduError) as e:
        admin.protocol.send_apdu(0, 0xFB, 0, 0)
    assert e.value.sw == 0x6985
    admin.reset()  # yubikit blocks PIN and PUK itself, then sends RESET
    assert admin.get_pin_attempts() == 3
    assert admin.get_pin_metadata().default_value
    with pytest.raises(ApduError) as e:
        admin.get_slot_metadata(SLOT.AUTHENTICATION)
    assert e.value.sw == 0x6A88
    with pytest.raises(ApduError) as e:
        admin.get_object(OBJECT_ID.CHUID)
    assert e.value.sw == 0x6A82
    # The attestation key and certificate survive a reset.
    assert admin.get_certificate(SLOT.ATTESTATION)
    admin.authenticate(DEFAULT_MANAGEMENT_KEY)


# --- keys -----------------------------------------------------------------------------


def _check_sign(piv: PivSession, slot: SLOT, kt: KEY_TYPE, pub: object) -> None:
    if kt.algorithm.value == "rsa":
        assert isinstance(pub, rsa.RSAPublicKey)
        sig = piv.sign(slot, kt, MSG, hashes.SHA256(), padding.PKCS1v15())
        pub.verify(sig, MSG, padding.PKCS1v15(), hashes.SHA256())
        pss = padding.PSS(padding.MGF1(hashes.SHA256()), 32)
        sig = piv.sign(slot, kt, MSG, hashes.SHA256(), pss)
        pub.verify(sig, MSG, pss, hashes.SHA256())
        ct = pub.encrypt(b"secret", padding.PKCS1v15())
        assert piv.decrypt(slot, ct, padding.PKCS1v15()) == b"secret"
        oaep = padding.OAEP(padding.MGF1(hashes.SHA256()), hashes.SHA256(), None)
        assert piv.decrypt(slot, pub.encrypt(b"oaep", oaep), oaep) == b"oaep"
    elif kt == KEY_TYPE.ED25519:
        assert isinstance(pub, ed25519.Ed25519PublicKey)
        pub.verify(piv.sign(slot, kt, MSG, None), MSG)
    elif kt == KEY_TYPE.X25519:
        assert isinstance(pub, x25519.X25519PublicKey)
        peer = x25519.X25519PrivateKey.generate()
        assert piv.calculate_secret(slot, peer.public_key()) == peer.exchange(pub)
    else:
        assert isinstance(pub, ec.EllipticCurvePublicKey)
        h = hashes.SHA256() if kt == KEY_TYPE.ECCP256 else hashes.SHA384()
        pub.verify(piv.sign(slot, kt, MSG, h), MSG, ec.ECDSA(h))
        peer_key = ec.generate_private_key(pub.curve)
        secret = piv.calculate_secret(slot, peer_key.public_key())
        assert secret == peer_key.exchange(ec.ECDH(), pub)


FAST_TYPES = [
    KEY_TYPE.RSA1024,
    KEY_TYPE.RSA2048,
    KEY_TYPE.ECCP256,
    KEY_TYPE.ECCP384,
    KEY_TYPE.ED25519,
    KEY_TYPE.X25519,
]


@pytest.mark.parametrize("kt", FAST_TYPES, ids=str)
def test_generate_use_attest(admin: PivSession, card: VirtualCard, kt: KEY_TYPE) -> None:
    pub = admin.generate_key(SLOT.AUTHENTICATION, kt)
    meta = admin.get_slot_metadata(SLOT.AUTHENTICATION)
    assert meta.key_type == kt
    assert meta.generated
    assert meta.pin_policy == PIN_POLICY.ONCE
    assert meta.touch_policy == TOUCH_POLICY.NEVER
    assert meta.public_key == pub
    _check_sign(admin, SLOT.AUTHENTICATION, kt, pub)
    _verify_attestation(admin, card, SLOT.AUTHENTICATION, pub, PIN_POLICY.ONCE)


def test_generate_rsa_3072_4096(admin: PivSession) -> None:
    # Slow keygen: each size once.
    for slot, kt in ((SLOT.RETIRED1, KEY_TYPE.RSA3072), (SLOT.RETIRED2, KEY_TYPE.RSA4096)):
        pub = admin.generate_key(slot, kt)
        assert isinstance(pub, rsa.RSAPublicKey)
        assert pub.key_size == kt.bit_len
        sig = admin.sign(slot, kt, MSG, hashes.SHA256(), padding.PKCS1v15())
        pub.verify(sig, MSG, padding.PKCS1v15(), hashes.SHA256())


def _verify_attestation(
    piv: PivSession, card: VirtualCard, slot: SLOT, pub: object, pin_policy: PIN_POLICY
) -> None:
    cert = piv.attest_key(slot)
    intermediate = piv.get_certificate(SLOT.ATTESTATION)
    root = attestation_root_ca(card.state)
    cert.verify_directly_issued_by(intermediate)
    intermediate.verify_directly_issued_by(root)
    root.verify_directly_issued_by(root)
    assert cert.public_key() == pub
    cn = cert.subject.get_attributes_for_oid(NameOID.COMMON_NAME)[0].value
    assert cn == f"YubiKey PIV Attestation {int(slot):02x}"
    ext = {e.oid.dotted_string: e.value for e in cert.extensions}
    firmware = ext["1.3.6.1.4.1.41482.3.3"]
    assert isinstance(firmware, x509.UnrecognizedExtension)
    assert firmware.value == bytes([5, 7, 1])
    serial = ext["1.3.6.1.4.1.41482.3.7"]
    assert isinstance(serial, x509.UnrecognizedExtension)
    assert serial.value == b"\x02\x04" + card.state.serial.to_bytes(4, "big")
    policy = ext["1.3.6.1.4.1.41482.3.8"]
    assert isinstance(policy, x509.UnrecognizedExtension)
    assert policy.value == bytes([pin_policy, TOUCH_POLICY.NEVER])


@pytest.mark.parametrize("kt", FAST_TYPES, ids=str)
def test_import_key(admin: PivSession, kt: KEY_TYPE) -> None:
    key: rsa.RSAPrivateKey | ec.EllipticCurvePrivateKey | ed25519.Ed25519PrivateKey
    key2: object
    if kt.algorithm.value == "rsa":
        key = rsa.generate_private_key(65537, kt.bit_len)
    elif kt == KEY_TYPE.ED25519:
        key = ed25519.Ed25519PrivateKey.generate()
    elif kt == KEY_TYPE.X25519:
        key2 = x25519.X25519PrivateKey.generate()
    else:
        key = ec.generate_private_key(ec.SECP256R1() if kt == KEY_TYPE.ECCP256 else ec.SECP384R1())
    private = key2 if kt == KEY_TYPE.X25519 else key
    assert admin.put_key(SLOT.KEY_MANAGEMENT, private, PIN_POLICY.NEVER) == kt  # type: ignore[arg-type]
    meta = admin.get_slot_metadata(SLOT.KEY_MANAGEMENT)
    assert not meta.generated
    assert meta.pin_policy == PIN_POLICY.NEVER
    pub = private.public_key()  # type: ignore[attr-defined]
    assert meta.public_key == pub
    _check_sign(admin, SLOT.KEY_MANAGEMENT, kt, pub)
    with pytest.raises(ApduError) as e:  # imported keys are never attested
        admin.attest_key(SLOT.KEY_MANAGEMENT)
    assert e.value.sw == 0x6A80


def test_pin_policies_enforced(piv: PivSession, card: VirtualCard) -> None:
    piv.authenticate(DEFAULT_MANAGEMENT_KEY)
    never = piv.generate_key(SLOT.CARD_AUTH, KEY_TYPE.ECCP256)  # 9e default: never
    once = piv.generate_key(SLOT.AUTHENTICATION, KEY_TYPE.ECCP256)
    always = piv.generate_key(SLOT.SIGNATURE, KEY_TYPE.ECCP256)  # 9c default: always
    assert piv.get_slot_metadata(SLOT.SIGNATURE).pin_policy == PIN_POLICY.ALWAYS
    h = hashes.SHA256()
    assert isinstance(never, ec.EllipticCurvePublicKey)
    never.verify(piv.sign(SLOT.CARD_AUTH, KEY_TYPE.ECCP256, MSG, h), MSG, ec.ECDSA(h))
    for slot in (SLOT.AUTHENTICATION, SLOT.SIGNATURE):
        with pytest.raises(ApduError) as e:
            piv.sign(slot, KEY_TYPE.ECCP256, MSG, h)
        assert e.value.sw == 0x6982
    piv.verify_pin("123456")
    assert isinstance(once, ec.EllipticCurvePublicKey) and isinstance(
        always, ec.EllipticCurvePublicKey
    )
    once.verify(piv.sign(SLOT.AUTHENTICATION, KEY_TYPE.ECCP256, MSG, h), MSG, ec.ECDSA(h))
    always.verify(piv.sign(SLOT.SIGNATURE, KEY_TYPE.ECCP256, MSG, h), MSG, ec.ECDSA(h))
    # "always" consumed the verification; "once" still works.
    with pytest.raises(ApduError):
        piv.sign(SLOT.SIGNATURE, KEY_TYPE.ECCP256, MSG, h)
    piv.sign(SLOT.AUTHENTICATION, KEY_TYPE.ECCP256, MSG, h)
    # A new connection forgets the PIN.
    card.power_cycle()
    fresh = PivSession(YubikitConnection(card))
    with pytest.raises(ApduError):
        fresh.sign(SLOT.AUTHENTICATION, KEY_TYPE.ECCP256, MSG, h)


def test_match_policies_refused_without_bio(admin: PivSession) -> None:
    with pytest.raises(NotSupportedError):  # yubikit asks for bio metadata: 6A88
        admin.generate_key(SLOT.AUTHENTICATION, KEY_TYPE.ECCP256, PIN_POLICY.MATCH_ONCE)
    data = bytes.fromhex("AC09800111AA0104AB0101")
    with pytest.raises(ApduError) as e:
        admin.protocol.send_apdu(0, 0x47, 0, 0x9A, data)
    assert e.value.sw == 0x6A80


@pytest.mark.parametrize("touch", [TOUCH_POLICY.ALWAYS, TOUCH_POLICY.CACHED])
def test_touch_policy_recorded(admin: PivSession, card: VirtualCard, touch: TOUCH_POLICY) -> None:
    admin.generate_key(SLOT.AUTHENTICATION, KEY_TYPE.ECCP256, PIN_POLICY.NEVER, touch)
    assert admin.get_slot_metadata(SLOT.AUTHENTICATION).touch_policy == touch
    card.transcript.clear()
    admin.sign(SLOT.AUTHENTICATION, KEY_TYPE.ECCP256, MSG, hashes.SHA256())
    admin.sign(SLOT.AUTHENTICATION, KEY_TYPE.ECCP256, MSG, hashes.SHA256())
    touches = [t for t in card.transcript if t == "touch requested for slot 9a"]
    assert len(touches) == (2 if touch == TOUCH_POLICY.ALWAYS else 1)


def test_move_and_delete_key(admin: PivSession) -> None:
    pub = admin.generate_key(SLOT.AUTHENTICATION, KEY_TYPE.ECCP256)
    admin.move_key(SLOT.AUTHENTICATION, SLOT.RETIRED5)
    assert admin.get_slot_metadata(SLOT.RETIRED5).public_key == pub
    with pytest.raises(ApduError) as e:
        admin.get_slot_metadata(SLOT.AUTHENTICATION)
    assert e.value.sw == 0x6A88
    admin.delete_key(SLOT.RETIRED5)
    with pytest.raises(ApduError) as e:
        admin.get_slot_metadata(SLOT.RETIRED5)
    assert e.value.sw == 0x6A88
    with pytest.raises(ApduError) as e:
        admin.delete_key(SLOT.RETIRED5)
    assert e.value.sw == 0x6A88


def test_metadata_empty_slot_and_attestation_slot(piv: PivSession) -> None:
    with pytest.raises(ApduError) as e:
        piv.get_slot_metadata(SLOT.AUTHENTICATION)
    assert e.value.sw == 0x6A88
    f9 = piv.get_slot_metadata(SLOT.ATTESTATION)
    assert f9.key_type == KEY_TYPE.ECCP256
    assert not f9.generated
    assert f9.public_key == piv.get_certificate(SLOT.ATTESTATION).public_key()
    puk = piv.get_puk_metadata()
    assert (puk.default_value, puk.total_attempts, puk.attempts_remaining) == (True, 3, 3)


# --- data objects ---------------------------------------------------------------------


@pytest.mark.parametrize("compress", [False, True])
def test_certificates(admin: PivSession, compress: bool) -> None:
    key = ec.generate_private_key(ec.SECP256R1())
    cert = _self_signed(key)
    admin.put_certificate(SLOT.AUTHENTICATION, cert, compress=compress)
    assert admin.get_certificate(SLOT.AUTHENTICATION) == cert
    raw = admin.get_object(OBJECT_ID.AUTHENTICATION)
    if compress:
        assert b"\x71\x01\x01" in raw
        assert gzip.decompress(raw[raw.index(b"\x1f\x8b") :].split(b"\x71\x01\x01")[0])
    admin.delete_certificate(SLOT.AUTHENTICATION)
    with pytest.raises(ApduError) as e:
        admin.get_certificate(SLOT.AUTHENTICATION)
    assert e.value.sw == 0x6A82


def test_objects_size_limit_and_pin_protection(card: VirtualCard) -> None:
    # Short APDUs with chaining (NFC): yubikit's extended-APDU path caps the whole APDU at
    # 3062 bytes client-side, so only chaining reaches the card's own 3063-byte limit.
    admin = PivSession(YubikitConnection(card, TRANSPORT.NFC))
    admin.authenticate(DEFAULT_MANAGEMENT_KEY)
    admin.verify_pin("123456")
    big = os.urandom(3063)
    admin.put_object(OBJECT_ID.CHUID, big)
    assert admin.get_object(OBJECT_ID.CHUID) == big
    with pytest.raises(ApduError) as e:
        admin.put_object(OBJECT_ID.CHUID, big + b"x")
    assert e.value.sw == 0x6A84
    admin.put_object(0x5FFF00, b"\x80\x00")
    assert admin.get_object(0x5FFF00) == b"\x80\x00"
    admin.put_object(OBJECT_ID.PRINTED, b"\x88\x00")
    fresh = PivSession(YubikitConnection(card))  # new session, same connection state
    assert fresh.get_object(OBJECT_ID.PRINTED) == b"\x88\x00"
    card.power_cycle()
    fresh = PivSession(YubikitConnection(card))
    with pytest.raises(ApduError) as e:
        fresh.get_object(OBJECT_ID.PRINTED)
    assert e.value.sw == 0x6982
    fresh.verify_pin("123456")
    assert fresh.get_object(OBJECT_ID.PRINTED) == b"\x88\x00"


def test_discovery_object(piv: PivSession) -> None:
    disc = piv.get_object(OBJECT_ID.DISCOVERY)
    assert disc == bytes.fromhex("4F0BA0000003080000100001005F2F024000")


# --- other firmware and modes --------------------------------------------------------


def test_firmware_5_4_3(make_card: Callable[..., VirtualCard]) -> None:
    card = make_card(firmware=(5, 4, 3))
    piv = PivSession(YubikitConnection(card))
    assert piv.management_key_type == MANAGEMENT_KEY_TYPE.TDES
    assert piv.get_management_key_metadata().key_type == MANAGEMENT_KEY_TYPE.TDES
    piv.authenticate(DEFAULT_MANAGEMENT_KEY)
    with pytest.raises(NotSupportedError):
        piv.generate_key(SLOT.AUTHENTICATION, KEY_TYPE.ED25519)
    with pytest.raises(ApduError) as e:  # the card itself refuses too
        piv.protocol.send_apdu(0, 0x47, 0, 0x9A, bytes.fromhex("AC038001E0"))
    assert e.value.sw == 0x6A80
    with pytest.raises(ApduError) as e:  # no MOVE KEY before 5.7
        piv.protocol.send_apdu(0, 0xF6, 0xFF, 0x9A)
    assert e.value.sw == 0x6D00
    piv.set_management_key(MANAGEMENT_KEY_TYPE.AES256, bytes(32))
    piv.authenticate(bytes(32))


def test_firmware_4_3(make_card: Callable[..., VirtualCard]) -> None:
    card = make_card(firmware=(4, 3, 7))
    piv = PivSession(YubikitConnection(card))
    assert piv.management_key_type == MANAGEMENT_KEY_TYPE.TDES
    with pytest.raises(ApduError) as e:
        piv.protocol.send_apdu(0, 0xF7, 0, 0x80)
    assert e.value.sw == 0x6D00
    with pytest.raises(ApduError) as e:
        piv.protocol.send_apdu(0, 0xF8, 0, 0)
    assert e.value.sw == 0x6D00
    with pytest.raises(NotSupportedError):
        piv.get_serial()
    assert piv.get_pin_attempts() == 3  # via empty VERIFY
    with pytest.raises(InvalidPinError):
        piv.verify_pin("000000")
    assert piv.get_pin_attempts() == 2
    piv.authenticate(DEFAULT_MANAGEMENT_KEY)
    with pytest.raises(ApduError) as e:  # AES management keys arrived with 5.4
        piv.protocol.send_apdu(0, 0xFF, 0xFF, 0xFF, b"\x08\x9b\x10" + bytes(16))
    assert e.value.sw == 0x6A80
    pub = piv.generate_key(SLOT.AUTHENTICATION, KEY_TYPE.ECCP384)
    cert = piv.attest_key(SLOT.AUTHENTICATION)
    assert cert.public_key() == pub
    oids = {e.oid.dotted_string for e in cert.extensions}
    assert "1.3.6.1.4.1.41482.3.7" not in oids  # serial only from YubiKey 5


def test_generic_mode(make_card: Callable[..., VirtualCard]) -> None:
    card = make_card(generic=True)
    with pytest.raises(ApduError) as e:
        PivSession(YubikitConnection(card))
    assert e.value.sw == 0x6D00
    with pytest.raises(Exception):  # noqa: B017 - management applet absent
        ManagementSession(YubikitConnection(card))
    # The generic profile's 9B key is AES-192 (SP 800-78-4), not a YubiKey's default.
    assert card.state.mgmt_key_type == MANAGEMENT_KEY_TYPE.AES192
    assert card.atr[:1] == b"\x3b" and b"YubiKey" not in card.atr


def test_nfc_transport_short_apdus(make_card: Callable[..., VirtualCard]) -> None:
    """Over NFC yubikit uses short APDUs: command chaining and GET RESPONSE carry it."""
    card = make_card()
    conn = YubikitConnection(card, TRANSPORT.NFC)
    piv = PivSession(conn)
    piv.authenticate(DEFAULT_MANAGEMENT_KEY)
    piv.verify_pin("123456")
    blob = os.urandom(2500)
    piv.put_object(OBJECT_ID.CHUID, blob)
    assert piv.get_object(OBJECT_ID.CHUID) == blob
    assert any(a[0] == 0x10 for a in conn.apdus)  # chained
    assert any(a[1] == 0xC0 for a in conn.apdus)  # GET RESPONSE
    assert all(len(a) <= 261 for a in conn.apdus)
    pub = piv.generate_key(SLOT.AUTHENTICATION, KEY_TYPE.RSA2048)
    _check_sign(piv, SLOT.AUTHENTICATION, KEY_TYPE.RSA2048, pub)


# --- ykman device detection ---------------------------------------------------------


class _FakePyscard:
    """The pyscard CardConnection surface ykman's ScardSmartCardConnection uses."""

    def __init__(self, card: VirtualCard) -> None:
        self.card = card

    def connect(self) -> None:
        self.card.reset_connection()

    def getATR(self) -> list[int]:
        return list(self.card.atr)

    def transmit(self, apdu: list[int]) -> tuple[list[int], int, int]:
        r = self.card.execute(bytes(apdu))
        return list(r[:-2]), r[-2], r[-1]

    def disconnect(self) -> None:
        pass


def test_ykman_read_info_on_external_reader(make_card: Callable[..., VirtualCard]) -> None:
    """ykman --reader "Virtual PCD 00 00" has no USB PID: only a contactless ATR works."""
    from ykman.pcsc import ScardSmartCardConnection
    from yubikit.support import read_info

    nfc = make_card(interface="nfc")
    conn = ScardSmartCardConnection(_FakePyscard(nfc))
    info = read_info(conn, None)
    assert info.serial == nfc.state.serial
    assert CAPABILITY.PIV in info.config.enabled_capabilities[TRANSPORT.NFC]

    usb = make_card()
    with pytest.raises(ValueError, match="PID must be provided"):
        read_info(ScardSmartCardConnection(_FakePyscard(usb)), None)


def test_public_key_export_matches(admin: PivSession) -> None:
    pub = admin.generate_key(SLOT.KEY_MANAGEMENT, KEY_TYPE.ECCP256)
    assert isinstance(pub, ec.EllipticCurvePublicKey)
    der = pub.public_bytes(
        serialization.Encoding.DER, serialization.PublicFormat.SubjectPublicKeyInfo
    )
    meta_pub = admin.get_slot_metadata(SLOT.KEY_MANAGEMENT).public_key
    assert (
        meta_pub.public_bytes(
            serialization.Encoding.DER, serialization.PublicFormat.SubjectPublicKeyInfo
        )
        == der
    )
