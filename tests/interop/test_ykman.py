"""ykman (yubikey-manager's CLI) against the virtual YubiKey, through pcscd."""

from __future__ import annotations

import datetime
import secrets
from pathlib import Path

import pytest
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import NameOID
from interop_tools import (
    CERT_OBJECTS,
    MGMT,
    OBJ_CCC,
    OBJ_CHUID,
    OBJ_PIVMAN,
    OBJ_PRINTED,
    PIN,
    PUK,
    Ykman,
    block_pin,
    block_puk,
    load_cert,
    same_public_key,
    slot_public_key,
    state,
    verify_attestation,
)
from pcsc_stack import VCardFactory

pytestmark = [pytest.mark.pcsc, pytest.mark.interop]


@pytest.fixture
def yk(vcard_factory: VCardFactory) -> Ykman:
    """ykman on a YubiKey 5.7.1 in a reader named like a YubiKey's USB CCID interface."""
    return Ykman(vcard_factory(yubico_reader=True))


@pytest.mark.parametrize("interface", ["usb", "nfc"])
def test_piv_info_and_device_info(vcard_factory: VCardFactory, interface: str) -> None:
    # ykman treats a reader not named "Yubico YubiKey" as NFC and needs the contactless ATR
    # there; a YubiKey-named reader gets the USB ATR (and extended APDUs).
    card = vcard_factory(yubico_reader=interface == "usb", interface=interface,
                         serial=31415926)
    yk = Ykman(card)
    out = yk("piv", "info").stdout
    assert "PIV version:              5.7.1" in out
    assert "PIN tries remaining:      3/3" in out
    assert "PUK tries remaining:      3/3" in out
    assert "Management key algorithm: AES192" in out
    assert "Using default PIN" in out
    info = yk("info").stdout
    assert "Serial number: 31415926" in info
    assert "Firmware version: 5.7.1" in info


def test_change_pin(yk: Ykman) -> None:
    yk("piv", "access", "change-pin", "-P", PIN, "-n", "24681357")
    assert state(yk.card).pin == b"24681357"
    # The old PIN is now wrong: ykman fails and the card counts the try.
    proc = yk("piv", "access", "change-pin", "-P", PIN, "-n", "11112222", check=False)
    assert proc.returncode != 0
    assert state(yk.card).pin_retries_left == 2


def test_change_puk(yk: Ykman) -> None:
    yk("piv", "access", "change-puk", "-p", PUK, "-n", "87654321")
    assert state(yk.card).puk == b"87654321"


def test_unblock_pin(yk: Ykman) -> None:
    block_pin(yk.card)
    assert state(yk.card).pin_retries_left == 0
    assert "PIN tries remaining:      0/3" in yk("piv", "info").stdout
    yk("piv", "access", "unblock-pin", "-p", PUK, "-n", "97531864")
    st = state(yk.card)
    assert st.pin == b"97531864"
    assert st.pin_retries_left == 3


def test_set_retries(yk: Ykman) -> None:
    yk("piv", "access", "change-pin", "-P", PIN, "-n", "24681357")
    yk("piv", "access", "set-retries", "5", "4", "-m", MGMT, "-P", "24681357", "-f")
    st = state(yk.card)
    assert (st.pin_retries_total, st.puk_retries_total) == (5, 4)
    assert (st.pin_retries_left, st.puk_retries_left) == (5, 4)
    # A YubiKey resets PIN and PUK to their defaults when the retry counts change.
    assert st.pin == PIN.encode()
    assert "PIN tries remaining:      5/5" in yk("piv", "info").stdout


@pytest.mark.parametrize(("algorithm", "length", "type_value"),
                         [("TDES", 24, 0x03), ("AES192", 24, 0x0A), ("AES128", 16, 0x08)])
def test_change_management_key(yk: Ykman, algorithm: str, length: int, type_value: int) -> None:
    new = secrets.token_hex(length)
    yk("piv", "access", "change-management-key", "-m", MGMT, "-n", new, "-a", algorithm, "-f")
    st = state(yk.card)
    assert st.mgmt_key == bytes.fromhex(new)
    assert st.mgmt_key_type == type_value
    assert f"Management key algorithm: {algorithm}" in yk("piv", "info").stdout
    # The old key no longer works, the new one does.
    proc = yk("piv", "objects", "generate", "chuid", "-m", MGMT, check=False)
    assert proc.returncode != 0
    yk("piv", "objects", "generate", "chuid", "-m", new)


def test_change_management_key_protected(yk: Ykman, tmp_path: Path) -> None:
    yk("piv", "access", "change-management-key", "-m", MGMT, "-P", PIN, "--protect",
       "-a", "AES192", "-f")
    st = state(yk.card)
    assert st.mgmt_key != bytes.fromhex(MGMT)
    # ykman's convention: PIVMAN data (flag 0x02) + the key in the PIN-protected object.
    assert OBJ_PIVMAN in st.objects
    assert OBJ_PRINTED in st.objects
    assert st.mgmt_key.hex() in st.objects[OBJ_PRINTED].hex()
    info = yk("piv", "info").stdout
    assert "protected by PIN" in info
    # With the key on the card, the PIN alone now authorises management operations.
    yk("piv", "keys", "generate", "-a", "ECCP256", "-P", PIN, "9a", str(tmp_path / "p.pem"))
    assert 0x9A in state(yk.card).keys


@pytest.mark.parametrize(("algorithm", "type_value"), [
    ("RSA2048", 0x07), ("ECCP256", 0x11), ("ECCP384", 0x14), ("ED25519", 0xE0),
])
def test_keys_generate_info_export(
    yk: Ykman, tmp_path: Path, algorithm: str, type_value: int
) -> None:
    pub_path = tmp_path / "pub.pem"
    yk("piv", "keys", "generate", "-a", algorithm, "-m", MGMT, "9a", str(pub_path))
    st = state(yk.card)
    assert st.keys[0x9A].algorithm == type_value
    generated = serialization.load_pem_public_key(pub_path.read_bytes())
    assert same_public_key(generated, slot_public_key(yk.card, 0x9A))
    info = yk("piv", "keys", "info", "9a").stdout
    assert f"Algorithm:              {algorithm}" in info
    assert "Origin:                 GENERATED" in info
    exported = tmp_path / "exported.pem"
    yk("piv", "keys", "export", "9a", str(exported))
    assert same_public_key(serialization.load_pem_public_key(exported.read_bytes()), generated)


def test_keys_import(yk: Ykman, tmp_path: Path) -> None:
    key = ec.generate_private_key(ec.SECP256R1())
    path = tmp_path / "key.pem"
    path.write_bytes(key.private_bytes(serialization.Encoding.PEM,
                                       serialization.PrivateFormat.PKCS8,
                                       serialization.NoEncryption()))
    yk("piv", "keys", "import", "-m", MGMT, "--pin-policy", "always", "9c", str(path))
    st = state(yk.card)
    assert st.keys[0x9C].origin == 2  # imported
    assert st.keys[0x9C].pin_policy == 3  # always
    assert same_public_key(slot_public_key(yk.card, 0x9C), key.public_key())
    info = yk("piv", "keys", "info", "9c").stdout
    assert "Origin:                 IMPORTED" in info
    assert "PIN required for use:   ALWAYS" in info


@pytest.mark.parametrize("algorithm", ["ECCP256", "RSA2048"])
def test_keys_attest(yk: Ykman, tmp_path: Path, algorithm: str) -> None:
    yk("piv", "keys", "generate", "-a", algorithm, "-m", MGMT, "9a", str(tmp_path / "p.pem"))
    yk("piv", "keys", "attest", "9a", str(tmp_path / "att.pem"))
    yk("piv", "certificates", "export", "f9", str(tmp_path / "f9.pem"))
    att = load_cert(tmp_path / "att.pem")
    verify_attestation(att, yk.card, load_cert(tmp_path / "f9.pem"))
    assert same_public_key(att.public_key(), slot_public_key(yk.card, 0x9A))


def test_keys_move_and_delete(yk: Ykman, tmp_path: Path) -> None:
    yk("piv", "keys", "generate", "-a", "ECCP256", "-m", MGMT, "9a", str(tmp_path / "p.pem"))
    before = slot_public_key(yk.card, 0x9A)
    yk("piv", "keys", "move", "-m", MGMT, "9a", "82")
    st = state(yk.card)
    assert 0x9A not in st.keys
    assert same_public_key(slot_public_key(yk.card, 0x82), before)
    yk("piv", "keys", "delete", "-m", MGMT, "82")
    assert 0x82 not in state(yk.card).keys
    proc = yk("piv", "keys", "info", "82", check=False)
    assert proc.returncode != 0


def _self_signed(key: ec.EllipticCurvePrivateKey, cn: str) -> x509.Certificate:
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, cn)])
    now = datetime.datetime.now(datetime.timezone.utc)
    return (x509.CertificateBuilder().subject_name(name).issuer_name(name)
            .public_key(key.public_key()).serial_number(x509.random_serial_number())
            .not_valid_before(now).not_valid_after(now + datetime.timedelta(days=30))
            .sign(key, hashes.SHA256()))


def test_certificates_generate_import_export_delete(yk: Ykman, tmp_path: Path) -> None:
    pub = tmp_path / "pub.pem"
    yk("piv", "keys", "generate", "-a", "ECCP256", "-m", MGMT, "9a", str(pub))
    yk("piv", "certificates", "generate", "-m", MGMT, "-P", PIN, "-s", "CN=pivtool interop",
       "9a", str(pub))
    yk("piv", "certificates", "export", "9a", str(tmp_path / "9a.pem"))
    cert = load_cert(tmp_path / "9a.pem")
    assert cert.subject.rfc4514_string() == "CN=pivtool interop"
    assert same_public_key(cert.public_key(), slot_public_key(yk.card, 0x9A))
    cert.verify_directly_issued_by(cert)  # signed on the card with the slot key
    assert CERT_OBJECTS[0x9A] in state(yk.card).objects

    key = ec.generate_private_key(ec.SECP256R1())
    local = _self_signed(key, "imported")
    (tmp_path / "local.pem").write_bytes(local.public_bytes(serialization.Encoding.PEM))
    yk("piv", "certificates", "import", "-m", MGMT, "9c", str(tmp_path / "local.pem"))
    yk("piv", "certificates", "export", "-F", "DER", "9c", str(tmp_path / "9c.der"))
    assert (tmp_path / "9c.der").read_bytes() == local.public_bytes(serialization.Encoding.DER)

    yk("piv", "certificates", "delete", "-m", MGMT, "9c")
    assert CERT_OBJECTS[0x9C] not in state(yk.card).objects
    proc = yk("piv", "certificates", "export", "9c", str(tmp_path / "gone.pem"), check=False)
    assert proc.returncode != 0


def test_objects_generate_chuid_and_ccc(yk: Ykman) -> None:
    yk("piv", "objects", "generate", "-m", MGMT, "chuid")
    yk("piv", "objects", "generate", "-m", MGMT, "ccc")
    st = state(yk.card)
    assert OBJ_CHUID in st.objects
    assert OBJ_CCC in st.objects
    info = yk("piv", "info").stdout
    assert "CHUID: No data" not in info
    assert "CCC:   No data" not in info
    # ykman prints the object body it read back; it must be what was stored.
    chuid_line = next(line for line in info.splitlines() if line.startswith("CHUID:"))
    assert chuid_line.split()[-1] == st.objects[OBJ_CHUID].hex()


@pytest.mark.parametrize("preblock", [True, False])
def test_reset(yk: Ykman, tmp_path: Path, preblock: bool) -> None:
    yk("piv", "keys", "generate", "-a", "ECCP256", "-m", MGMT, "9a", str(tmp_path / "p.pem"))
    yk("piv", "access", "change-pin", "-P", PIN, "-n", "24681357")
    if preblock:
        block_pin(yk.card)
        block_puk(yk.card)
    # Without preblocking, ykman blocks PIN and PUK itself before RESET.
    yk("piv", "reset", "-f")
    st = state(yk.card)
    assert st.pin == PIN.encode()
    assert st.puk == PUK.encode()
    assert st.mgmt_key == bytes.fromhex(MGMT)
    assert (st.pin_retries_left, st.puk_retries_left) == (3, 3)
    assert set(st.keys) == {0xF9}  # attestation key survives a PIV reset
    assert "Using default PIN" in yk("piv", "info").stdout


def test_nfc_rsa_key_and_certificate(vcard_factory: VCardFactory, tmp_path: Path) -> None:
    """Over "NFC" ykman sends short APDUs: an RSA-2048 public key and certificate need
    command chaining and GET RESPONSE through pcscd."""
    yk = Ykman(vcard_factory(interface="nfc"))
    pub = tmp_path / "pub.pem"
    yk("piv", "keys", "generate", "-a", "RSA2048", "-m", MGMT, "9d", str(pub))
    yk("piv", "certificates", "generate", "-m", MGMT, "-P", PIN, "-s", "CN=nfc", "9d",
       str(pub))
    yk("piv", "certificates", "export", "9d", str(tmp_path / "9d.pem"))
    cert = load_cert(tmp_path / "9d.pem")
    assert same_public_key(cert.public_key(), slot_public_key(yk.card, 0x9D))
    cert.verify_directly_issued_by(cert)
