"""Protocol-fidelity review of the client session: padding and hashing checked by
cryptography, firmware gates against yubikit, APDU sizes against yubikit's limits."""

from __future__ import annotations

from functools import cache

import pytest
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.asymmetric import ec, padding, rsa
from cryptography.hazmat.primitives.asymmetric.utils import Prehashed
from yubikit.core import NotSupportedError as YkNotSupported
from yubikit.core import Version as YkVersion
from yubikit.piv import KEY_TYPE, PIN_POLICY, TOUCH_POLICY, _do_check_key_support

from pivtool.core.errors import NotSupportedError
from pivtool.piv.constants import DEFAULT_MGMT_KEY, KeyType, PinPolicy, Slot, TouchPolicy
from pivtool.piv.session import PivSession
from pivtool.piv.version import Version, check_key_support
from tests.simcards import MakeSession

PIN = "123456"


@cache
def _rsa(bits: int) -> rsa.RSAPrivateKey:
    return rsa.generate_private_key(65537, bits)


def _card_key(session: PivSession, sw: rsa.RSAPrivateKey | ec.EllipticCurvePrivateKey
              ) -> object:
    session.authenticate(DEFAULT_MGMT_KEY)
    session.import_key(Slot.RETIRED2, sw, PinPolicy.NEVER)
    return session.private_key(Slot.RETIRED2)


@pytest.mark.parametrize("bits", [1024, 2048, 3072])
def test_rsa_pss_salt_lengths_and_mgf_hashes(session: PivSession, bits: int) -> None:
    sw = _rsa(bits)
    key = _card_key(session, sw)
    assert isinstance(key, rsa.RSAPrivateKey)
    pub = sw.public_key()
    msg = b"pss message"
    for h in (hashes.SHA1(), hashes.SHA256(), hashes.SHA512()):
        if bits == 1024 and h.digest_size == 64:
            # 64 + 64 + 2 > 128 bytes: a digest-length salt does not fit (and is refused).
            salts: tuple[object, ...] = (0, 20, padding.PSS.MAX_LENGTH)
        else:
            salts = (0, 20, padding.PSS.DIGEST_LENGTH, padding.PSS.MAX_LENGTH)
        for salt in salts:
            for mgf in (h, hashes.SHA256()):
                pad = padding.PSS(padding.MGF1(mgf), salt)  # type: ignore[arg-type]
                sig = key.sign(msg, pad, h)
                pub.verify(sig, msg, pad, h)
                # Prehashed input signs the same digest.
                d = hashes.Hash(h)
                d.update(msg)
                pub.verify(key.sign(d.finalize(), pad, Prehashed(h)), msg, pad, h)


@pytest.mark.parametrize("bits", [1024, 2048, 3072])
def test_rsa_oaep_and_pkcs1_decrypt(session: PivSession, bits: int) -> None:
    sw = _rsa(bits)
    key = _card_key(session, sw)
    assert isinstance(key, rsa.RSAPrivateKey)
    pub = sw.public_key()
    pads: list[padding.AsymmetricPadding] = [padding.PKCS1v15()]
    for h in (hashes.SHA1(), hashes.SHA256(), hashes.SHA512()):
        if bits == 1024 and h.digest_size == 64:
            continue
        pads.append(padding.OAEP(padding.MGF1(h), h, None))
        pads.append(padding.OAEP(padding.MGF1(hashes.SHA1()), h, b"label"))
    for pad in pads:
        for pt in (b"", b"\x00secret", b"k" * 32):
            assert key.decrypt(pub.encrypt(pt, pad), pad) == pt


@pytest.mark.parametrize(("curve", "h"), [
    (ec.SECP384R1(), hashes.SHA512()),   # hash longer than the curve: truncated
    (ec.SECP384R1(), hashes.SHA256()),   # shorter: used whole
    (ec.SECP256R1(), hashes.SHA384()),
    (ec.SECP256R1(), hashes.SHA512()),
    (ec.SECP256R1(), hashes.SHA1()),
])
def test_ecdsa_hash_truncation(session: PivSession, curve: ec.EllipticCurve,
                               h: hashes.HashAlgorithm) -> None:
    sw = ec.generate_private_key(curve)
    key = _card_key(session, sw)
    assert isinstance(key, ec.EllipticCurvePrivateKey)
    for msg in (b"", b"m", b"x" * 1000):
        sw.public_key().verify(key.sign(msg, ec.ECDSA(h)), msg, ec.ECDSA(h))


# --- firmware gates against yubikit's _do_check_key_support ----------------------------

_VERSIONS = [(3, 5, 0), (4, 2, 4), (4, 3, 5), (4, 4, 5), (5, 2, 7), (5, 4, 3), (5, 7, 1)]
_YK_NAMES = {KeyType.RSA1024: "RSA1024", KeyType.RSA2048: "RSA2048",
             KeyType.RSA3072: "RSA3072", KeyType.RSA4096: "RSA4096",
             KeyType.ECCP256: "ECCP256", KeyType.ECCP384: "ECCP384",
             KeyType.ED25519: "ED25519", KeyType.X25519: "X25519"}


@pytest.mark.parametrize("v", _VERSIONS)
def test_key_support_matches_yubikit(v: tuple[int, int, int]) -> None:
    for kt, name in _YK_NAMES.items():
        for pin in (PinPolicy.DEFAULT, PinPolicy.NEVER, PinPolicy.ALWAYS):
            for touch in (TouchPolicy.DEFAULT, TouchPolicy.CACHED):
                for generate in (True, False):
                    try:
                        _do_check_key_support(YkVersion(*v), KEY_TYPE[name],
                                              PIN_POLICY(int(pin)), TOUCH_POLICY(int(touch)),
                                              generate)
                        expected = True
                    except YkNotSupported:
                        expected = False
                    try:
                        check_key_support(Version(*v), kt, pin, touch, generate)
                        ours = True
                    except NotSupportedError:
                        ours = False
                    assert ours == expected, (v, kt, pin, touch, generate)


def test_attest_gated_on_firmware_4_3(make_session: MakeSession) -> None:
    s = make_session(firmware=(4, 2, 7))
    before = s.protocol.apdu_count
    with pytest.raises(NotSupportedError) as e:
        s.attest_key(Slot.AUTHENTICATION)
    assert s.protocol.apdu_count == before  # refused without sending F9
    assert "firmware" in str(e.value)


# --- APDU size --------------------------------------------------------------------------

@pytest.mark.parametrize("firmware", [(5, 7, 1), (4, 3, 7)])
def test_largest_object_fits_through_chaining(make_session: MakeSession,
                                              firmware: tuple[int, int, int]) -> None:
    # yubico-piv-tool: 3063 bytes of object value fill the 3072-byte applet buffer. As one
    # extended APDU that is 3079 bytes, over a YubiKey's 3062-byte CCID limit (yubikit
    # _MaxApduSize), so the session must chain it.
    s = make_session(firmware=firmware)
    s.authenticate(DEFAULT_MGMT_KEY)
    value = bytes(range(256)) * 11 + bytes(247)
    assert len(value) == 3063
    s.put_data(0x5FC105, value)
    assert s.get_data(0x5FC105) == value
    assert s.protocol.extended  # restored after the chained command
