"""Every PIV and YubiKey command of PivSession against the virtual YubiKey, with error paths.

Signatures are verified with cryptography's own public-key code, so a key on the card and a
wrong encoding on either side cannot both pass."""

from __future__ import annotations

import datetime as dt

import pytest
from cryptography import x509
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.asymmetric import ec, ed25519, padding, rsa, x25519
from cryptography.hazmat.primitives.serialization import Encoding
from cryptography.x509.oid import NameOID

from pivtool.core.errors import (
    ApduError,
    BlockedError,
    ConditionsNotSatisfiedError,
    InvalidPinError,
    NoSpaceError,
    NotFoundError,
    NotSupportedError,
    SecurityStatusError,
    UsageError,
)
from pivtool.piv.constants import (
    DEFAULT_MGMT_KEY,
    KeyType,
    MgmtKeyType,
    ObjectId,
    Origin,
    PinPolicy,
    Slot,
    TouchPolicy,
)
from pivtool.piv.objects import Chuid, PivmanData, PivmanProtectedData, build_ccc
from pivtool.piv.session import PivSession
from pivtool.sim.attestation import attestation_root_ca
from tests.simcards import TDES_9B, MakeSession, card_of, is_sim, reconnect, state_of

PIN, PUK = "123456", "12345678"


def admin(s: PivSession) -> PivSession:
    s.authenticate(DEFAULT_MGMT_KEY)
    return s


def self_signed(key: object, cn: str = "test") -> x509.Certificate:
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, cn)])
    now = dt.datetime.now(dt.timezone.utc)
    b = (x509.CertificateBuilder().subject_name(name).issuer_name(name)
         .public_key(key.public_key())  # type: ignore[attr-defined]
         .serial_number(x509.random_serial_number())
         .not_valid_before(now).not_valid_after(now + dt.timedelta(days=1)))
    alg = None if isinstance(key, ed25519.Ed25519PrivateKey) else hashes.SHA256()
    return b.sign(key, alg)  # type: ignore[arg-type]


# --- identity ------------------------------------------------------------------------

def test_select_version_serial(session: PivSession) -> None:
    # SP 800-73-4 Part 2 Table 3: tag 4F of the APT holds the PIX of the AID.
    assert session.properties.aid == bytes.fromhex("000010000100")
    assert str(session.version) == "5.7.1"
    assert session.get_serial() == 12345678


# --- PIN / PUK -----------------------------------------------------------------------

def test_pin_verify_countdown_and_block(session: PivSession) -> None:
    assert session.pin_tries_by_verify() == 3
    with pytest.raises(InvalidPinError) as e:
        session.verify_pin("000000")
    assert e.value.tries_left == 2
    assert session.get_pin_metadata().remaining == 2
    with pytest.raises(InvalidPinError) as e:
        session.verify_pin("000000")
    assert e.value.tries_left == 1
    session.verify_pin(PIN)  # a right PIN restores the counter
    assert session.get_pin_metadata().remaining == 3
    for left in (2, 1, 0):
        with pytest.raises((InvalidPinError, BlockedError)) as e2:
            session.verify_pin("000000")
        if left:
            assert isinstance(e2.value, InvalidPinError) and e2.value.tries_left == left
    with pytest.raises(BlockedError):
        session.verify_pin(PIN)
    assert session.pin_tries_by_verify() == 0


def test_wrong_length_pin_spends_nothing(session: PivSession) -> None:
    with pytest.raises(UsageError):
        session.verify_pin("12345")
    assert session.get_pin_metadata().remaining == 3


def test_empty_verify_after_verify_and_unverify(session: PivSession) -> None:
    session.verify_pin(PIN)
    assert session.pin_tries_by_verify() is None  # verified: the card does not say
    session.unverify_pin()
    assert session.pin_tries_by_verify() == 3


def test_change_pin_puk_and_unblock(session: PivSession) -> None:
    session.change_pin(PIN, "24681357")
    assert not session.get_pin_metadata().is_default
    with pytest.raises(InvalidPinError):
        session.verify_pin(PIN)
    session.verify_pin("24681357")
    session.change_puk(PUK, "87654321")
    with pytest.raises(InvalidPinError) as e:
        session.change_puk(PUK, "11111111")
    assert e.value.what == "PUK" and e.value.tries_left == 2
    for _ in range(3):
        with pytest.raises((InvalidPinError, BlockedError)):
            session.verify_pin("000000")
    session.unblock_pin("87654321", "13572468")
    session.verify_pin("13572468")
    assert session.get_pin_metadata().remaining == 3


def test_puk_blocks(session: PivSession) -> None:
    for _ in range(3):
        with pytest.raises((InvalidPinError, BlockedError)):
            session.unblock_pin("00000000", "111111")
    assert session.get_puk_metadata().remaining == 0
    with pytest.raises(BlockedError):
        session.unblock_pin(PUK, "111111")


# --- management key ------------------------------------------------------------------

def test_default_mgmt_key_by_firmware(make_session: MakeSession) -> None:
    assert make_session().get_mgmt_key_metadata().key_type is MgmtKeyType.AES192
    old = make_session(firmware=(5, 4, 3))
    assert old.get_mgmt_key_metadata().key_type is MgmtKeyType.TDES
    old.authenticate(DEFAULT_MGMT_KEY)


def test_wrong_mgmt_key(session: PivSession) -> None:
    with pytest.raises(SecurityStatusError):
        session.authenticate(bytes(24))
    with pytest.raises(UsageError):
        session.authenticate(bytes(16))  # wrong length for AES-192: refused before the card


@pytest.mark.parametrize("kt", list(MgmtKeyType))
def test_set_mgmt_key_each_algorithm(session: PivSession, kt: MgmtKeyType) -> None:
    admin(session)
    new = bytes(range(1, kt.key_len + 1))
    session.set_mgmt_key(kt, new, touch=kt is MgmtKeyType.AES256)
    md = session.get_mgmt_key_metadata()
    assert md.key_type is kt and not md.is_default
    assert md.touch_policy is (TouchPolicy.ALWAYS if kt is MgmtKeyType.AES256
                               else TouchPolicy.NEVER)
    s2 = reconnect(session)
    with pytest.raises(ApduError):  # 6982 (wrong key) or 6A86 (wrong algorithm)
        s2.authenticate(DEFAULT_MGMT_KEY, MgmtKeyType.AES192)
    s2.authenticate(new)


def test_admin_commands_need_mgmt_key(session: PivSession) -> None:
    with pytest.raises(SecurityStatusError):
        session.generate_key(Slot.AUTHENTICATION, KeyType.ECCP256)
    with pytest.raises(SecurityStatusError):
        session.put_data(ObjectId.CHUID, Chuid.generate().encode())


# --- keys and signatures ---------------------------------------------------------------

@pytest.mark.parametrize("kt", [KeyType.ECCP256, KeyType.ECCP384, KeyType.ED25519,
                                KeyType.RSA1024, KeyType.RSA2048])
def test_generate_and_sign(session: PivSession, kt: KeyType) -> None:
    admin(session)
    pub = session.generate_key(Slot.SIGNATURE, kt, PinPolicy.ONCE, TouchPolicy.NEVER)
    md = session.get_slot_metadata(Slot.SIGNATURE)
    assert md.key_type is kt and md.origin is Origin.GENERATED
    assert md.pin_policy is PinPolicy.ONCE
    assert md.public_key() == pub
    key = session.private_key(Slot.SIGNATURE)
    msg = b"challenge " + kt.label.encode()
    with pytest.raises(SecurityStatusError):
        if isinstance(key, ed25519.Ed25519PrivateKey):
            key.sign(msg)
        elif isinstance(key, ec.EllipticCurvePrivateKey):
            key.sign(msg, ec.ECDSA(hashes.SHA256()))
        else:
            assert isinstance(key, rsa.RSAPrivateKey)
            key.sign(msg, padding.PKCS1v15(), hashes.SHA256())
    session.verify_pin(PIN)
    if isinstance(key, ed25519.Ed25519PrivateKey):
        assert isinstance(pub, ed25519.Ed25519PublicKey)
        pub.verify(key.sign(msg), msg)
    elif isinstance(key, ec.EllipticCurvePrivateKey):
        assert isinstance(pub, ec.EllipticCurvePublicKey)
        h = hashes.SHA384() if kt is KeyType.ECCP384 else hashes.SHA256()
        pub.verify(key.sign(msg, ec.ECDSA(h)), msg, ec.ECDSA(h))
    else:
        assert isinstance(key, rsa.RSAPrivateKey) and isinstance(pub, rsa.RSAPublicKey)
        pub.verify(key.sign(msg, padding.PKCS1v15(), hashes.SHA256()), msg,
                   padding.PKCS1v15(), hashes.SHA256())
        pss = padding.PSS(padding.MGF1(hashes.SHA256()), padding.PSS.DIGEST_LENGTH)
        pub.verify(key.sign(msg, pss, hashes.SHA256()), msg, pss, hashes.SHA256())
        if kt is KeyType.RSA2048:
            pss_max = padding.PSS(padding.MGF1(hashes.SHA256()), padding.PSS.MAX_LENGTH)
            pub.verify(key.sign(msg, pss_max, hashes.SHA256()), msg, pss_max, hashes.SHA256())
            for pad in (padding.PKCS1v15(), padding.OAEP(padding.MGF1(hashes.SHA256()),
                                                         hashes.SHA256(), None)):
                ct = pub.encrypt(b"secret", pad)
                assert key.decrypt(ct, pad) == b"secret"


@pytest.mark.slow
@pytest.mark.parametrize("kt", [KeyType.RSA3072, KeyType.RSA4096])
def test_generate_large_rsa(session: PivSession, kt: KeyType) -> None:
    admin(session)
    pub = session.generate_key(Slot.RETIRED1, kt, PinPolicy.NEVER)
    assert isinstance(pub, rsa.RSAPublicKey) and pub.key_size == kt.bits
    key = session.private_key(Slot.RETIRED1)
    assert isinstance(key, rsa.RSAPrivateKey)
    sig = key.sign(b"m", padding.PKCS1v15(), hashes.SHA384())
    pub.verify(sig, b"m", padding.PKCS1v15(), hashes.SHA384())


def test_ecdh_and_x25519(session: PivSession) -> None:
    admin(session)
    session.verify_pin(PIN)
    pub = session.generate_key(Slot.KEY_MANAGEMENT, KeyType.ECCP256)
    key = session.private_key(Slot.KEY_MANAGEMENT)
    assert isinstance(key, ec.EllipticCurvePrivateKey) and isinstance(pub,
                                                                       ec.EllipticCurvePublicKey)
    peer = ec.generate_private_key(ec.SECP256R1())
    assert key.exchange(ec.ECDH(), peer.public_key()) == peer.exchange(ec.ECDH(), pub)
    xpub = session.generate_key(Slot.RETIRED2, KeyType.X25519)
    xkey = session.private_key(Slot.RETIRED2)
    assert isinstance(xkey, x25519.X25519PrivateKey) and isinstance(xpub, x25519.X25519PublicKey)
    xpeer = x25519.X25519PrivateKey.generate()
    assert xkey.exchange(xpeer.public_key()) == xpeer.exchange(xpub)


def test_pin_policy_always(session: PivSession) -> None:
    admin(session)
    session.generate_key(Slot.SIGNATURE, KeyType.ECCP256, PinPolicy.ALWAYS)
    key = session.private_key(Slot.SIGNATURE)
    assert isinstance(key, ec.EllipticCurvePrivateKey)
    session.verify_pin(PIN)
    key.sign(b"one", ec.ECDSA(hashes.SHA256()))
    with pytest.raises(SecurityStatusError):
        key.sign(b"two", ec.ECDSA(hashes.SHA256()))  # each use needs a fresh VERIFY


def test_pin_policy_never_and_touch_transcript(session: PivSession) -> None:
    admin(session)
    session.generate_key(Slot.CARD_AUTH, KeyType.ECCP256, PinPolicy.NEVER, TouchPolicy.ALWAYS)
    key = session.private_key(Slot.CARD_AUTH)
    assert isinstance(key, ec.EllipticCurvePrivateKey)
    key.sign(b"x", ec.ECDSA(hashes.SHA256()))
    if is_sim(session):  # the transcript lives in the card process, not its state file
        card = card_of(session)
        assert any("touch" in line and "9e" in line.lower() for line in card.transcript)


def test_import_key_and_attestation(session: PivSession) -> None:
    admin(session)
    sw = ec.generate_private_key(ec.SECP384R1())
    assert session.import_key(Slot.RETIRED3, sw, PinPolicy.NEVER) is KeyType.ECCP384
    md = session.get_slot_metadata(Slot.RETIRED3)
    assert md.origin is Origin.IMPORTED and md.public_key() == sw.public_key()
    rsa_key = rsa.generate_private_key(65537, 2048)
    session.import_key(Slot.RETIRED4, rsa_key)
    assert session.get_slot_metadata(Slot.RETIRED4).public_key() == rsa_key.public_key()
    ed = ed25519.Ed25519PrivateKey.generate()
    session.import_key(Slot.RETIRED5, ed)
    # Attestation: only generated keys; chain f9 -> emulator root.
    with pytest.raises(ApduError):
        session.attest_key(Slot.RETIRED3)
    pub = session.generate_key(Slot.AUTHENTICATION, KeyType.ECCP256)
    att = session.attest_key(Slot.AUTHENTICATION)
    assert att.public_key() == pub
    f9 = session.get_certificate(Slot.ATTESTATION)
    root = attestation_root_ca(state_of(session))
    att.verify_directly_issued_by(f9)
    f9.verify_directly_issued_by(root)


def test_move_and_delete_key(session: PivSession) -> None:
    admin(session)
    pub = session.generate_key(Slot.AUTHENTICATION, KeyType.ECCP256)
    session.move_key(Slot.AUTHENTICATION, Slot.RETIRED10)
    assert not session.slot_key_present(Slot.AUTHENTICATION)
    assert session.get_slot_metadata(Slot.RETIRED10).public_key() == pub
    session.delete_key(Slot.RETIRED10)
    assert not session.slot_key_present(Slot.RETIRED10)
    with pytest.raises(NotFoundError):
        session.get_slot_metadata(Slot.RETIRED10)


# --- certificates and objects ---------------------------------------------------------

@pytest.mark.parametrize("compress", [False, True])
def test_certificate_roundtrip_signed_on_card(session: PivSession, compress: bool) -> None:
    admin(session)
    session.generate_key(Slot.AUTHENTICATION, KeyType.ECCP256)
    session.verify_pin(PIN)
    key = session.private_key(Slot.AUTHENTICATION)
    cert = self_signed(key, "on-card")
    cert.verify_directly_issued_by(cert)  # the card's signature checks out
    session.put_certificate(Slot.AUTHENTICATION, cert.public_bytes(Encoding.DER),
                            compress=compress)
    _, was_compressed = session.get_certificate_der(Slot.AUTHENTICATION)
    assert was_compressed is compress
    assert session.get_certificate(Slot.AUTHENTICATION) == cert
    session.delete_certificate(Slot.AUTHENTICATION)
    with pytest.raises(NotFoundError):
        session.get_certificate(Slot.AUTHENTICATION)


def test_objects_chuid_ccc_pivman(session: PivSession) -> None:
    admin(session)
    chuid = Chuid.generate()
    session.put_data(ObjectId.CHUID, chuid.encode())
    assert Chuid.decode(session.get_data(ObjectId.CHUID)).guid == chuid.guid
    ccc = build_ccc(bytes(14))
    session.put_data(ObjectId.CAPABILITY, ccc)
    assert session.get_data(ObjectId.CAPABILITY) == ccc
    pm = PivmanData()
    pm.set_flag(0x02, True)
    session.put_data(ObjectId.PIVMAN, pm.encode())
    assert PivmanData.decode(session.get_data(ObjectId.PIVMAN)).mgmt_key_protected
    session.put_data(ObjectId.PRINTED, PivmanProtectedData(bytes(24)).encode())
    # ykman's protected data lives in the PIN-protected printed-information object.
    s2 = reconnect(session)
    with pytest.raises(SecurityStatusError):
        s2.get_data(ObjectId.PRINTED)
    s2.verify_pin(PIN)
    assert PivmanProtectedData.decode(s2.get_data(ObjectId.PRINTED)).key == bytes(24)
    assert "\\xab" not in repr(PivmanProtectedData(b"\xab" * 24))  # repr hides the key


def test_object_too_large(session: PivSession) -> None:
    admin(session)
    with pytest.raises(NoSpaceError):
        session.put_data(ObjectId.RETIRED1, bytes(5000))
    with pytest.raises(NotFoundError):
        session.get_data(ObjectId.RETIRED1)


def test_discovery_object(session: PivSession) -> None:
    data = session.get_data(ObjectId.DISCOVERY)
    assert data.startswith(b"\x4f")  # the PIV AID first


# --- administration ---------------------------------------------------------------------

def test_set_pin_retries_resets_pin_and_puk(session: PivSession) -> None:
    session.change_pin(PIN, "99887766")
    admin(session)
    with pytest.raises(SecurityStatusError):
        session.set_pin_retries(5, 4)  # needs the PIN as well
    session.verify_pin("99887766")
    session.set_pin_retries(5, 4)
    pm, um = session.get_pin_metadata(), session.get_puk_metadata()
    assert (pm.total, pm.remaining, pm.is_default) == (5, 5, True)
    assert (um.total, um.remaining, um.is_default) == (4, 4, True)
    session.verify_pin(PIN)


def test_reset_only_when_pin_and_puk_blocked(session: PivSession) -> None:
    admin(session)
    session.generate_key(Slot.AUTHENTICATION, KeyType.ECCP256)
    with pytest.raises(ConditionsNotSatisfiedError):
        session.reset()
    for _ in range(3):
        with pytest.raises((InvalidPinError, BlockedError)):
            session.verify_pin("000000")
    with pytest.raises(ConditionsNotSatisfiedError):
        session.reset()  # PUK still usable
    for _ in range(3):
        with pytest.raises((InvalidPinError, BlockedError)):
            session.unblock_pin("00000000", "111111")
    session.reset()
    assert not session.slot_key_present(Slot.AUTHENTICATION)
    assert session.get_pin_metadata().is_default
    assert session.get_pin_metadata().remaining == 3
    session.verify_pin(PIN)
    session.authenticate(DEFAULT_MGMT_KEY)


# --- other firmware and generic PIV ----------------------------------------------------------

def test_firmware_4_has_no_metadata(make_session: MakeSession) -> None:
    s = make_session(firmware=(4, 3, 7))
    with pytest.raises(NotSupportedError):
        s.get_pin_metadata()
    assert s.pin_tries_by_verify() == 3
    assert s.mgmt_key_type is MgmtKeyType.TDES
    s.authenticate(DEFAULT_MGMT_KEY)
    with pytest.raises(NotSupportedError):
        s.generate_key(Slot.AUTHENTICATION, KeyType.ED25519)


def test_generic_piv_card(make_session: MakeSession) -> None:
    s = make_session(generic=True, mgmt_key_type=TDES_9B)
    assert s.version is None and not s.protocol.extended
    with pytest.raises(NotSupportedError):
        s.get_serial()
    with pytest.raises(NotSupportedError):
        s.reset()
    s.authenticate(DEFAULT_MGMT_KEY)  # 3DES
    pub = s.generate_key(Slot.AUTHENTICATION, KeyType.ECCP256)
    s.verify_pin(PIN)
    key = s.private_key(Slot.AUTHENTICATION, pub)
    cert = self_signed(key, "generic")
    der = cert.public_bytes(Encoding.DER)
    assert len(der) > 255  # a certificate always needs command chaining in short APDUs
    s.put_certificate(Slot.AUTHENTICATION, der)
    assert s.get_certificate(Slot.AUTHENTICATION) == cert
