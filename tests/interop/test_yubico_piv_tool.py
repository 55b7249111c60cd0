"""yubico-piv-tool 2.2.0 (Debian) against the virtual YubiKey, through pcscd.

2.2.0 knows only 3DES management keys, so the card is a YubiKey 5.4.3 (3DES factory key),
which is what users of that version actually have. ``selfsign``/``request`` are broken in
this build with OpenSSL 3 ("Failed signing" before any APDU is sent: a client bug) and
are not tested.
"""

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
    PIN,
    PUK,
    Ykman,
    Ypt,
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

SERIAL = 5430001


@pytest.fixture
def ypt(vcard_factory: VCardFactory) -> Ypt:
    return Ypt(vcard_factory(firmware=(5, 4, 3), serial=SERIAL))


def test_status(ypt: Ypt) -> None:
    out = ypt("-a", "status").stdout
    assert "Version:\t5.4.3" in out
    assert f"Serial Number:\t{SERIAL}" in out
    assert "PIN tries left:\t3" in out


def test_status_generic_piv(vcard_factory: VCardFactory) -> None:
    out = Ypt(vcard_factory(generic=True))("-a", "status").stdout
    assert "Version:\tNo data available" in out  # no GET VERSION on a generic card
    assert "PIN tries left:\t3" in out


def test_verify_pin(ypt: Ypt) -> None:
    assert "Successfully verified PIN" in ypt("-a", "verify-pin", "-P", PIN).stderr
    proc = ypt("-a", "verify-pin", "-P", "000000", check=False)
    assert proc.returncode != 0
    assert "2 tries left" in proc.stderr
    assert state(ypt.card).pin_retries_left == 2


def test_change_pin_and_puk(ypt: Ypt) -> None:
    ypt("-a", "change-pin", "-P", PIN, "-N", "11223344")
    ypt("-a", "change-puk", "-P", PUK, "-N", "87654321")
    st = state(ypt.card)
    assert (st.pin, st.puk) == (b"11223344", b"87654321")


def test_unblock_pin(ypt: Ypt) -> None:
    block_pin(ypt.card)
    assert "PIN tries left:\t0" in ypt("-a", "status").stdout
    ypt("-a", "unblock-pin", "-P", PUK, "-N", "654321")
    st = state(ypt.card)
    assert st.pin == b"654321"
    assert st.pin_retries_left == 3


@pytest.mark.parametrize(("algorithm", "type_value"),
                         [("RSA2048", 0x07), ("ECCP256", 0x11), ("ECCP384", 0x14)])
def test_generate(ypt: Ypt, tmp_path: Path, algorithm: str, type_value: int) -> None:
    out = tmp_path / "pub.pem"
    ypt(f"--key={MGMT}", "-a", "generate", "-s", "9a", "-A", algorithm, "-o", str(out))
    assert state(ypt.card).keys[0x9A].algorithm == type_value
    assert same_public_key(serialization.load_pem_public_key(out.read_bytes()),
                           slot_public_key(ypt.card, 0x9A))


def test_import_key(ypt: Ypt, tmp_path: Path) -> None:
    key = ec.generate_private_key(ec.SECP256R1())
    path = tmp_path / "key.pem"
    path.write_bytes(key.private_bytes(serialization.Encoding.PEM,
                                       serialization.PrivateFormat.TraditionalOpenSSL,
                                       serialization.NoEncryption()))
    ypt("-a", "import-key", "-s", "9c", "-i", str(path), "--pin-policy=once")
    st = state(ypt.card)
    assert st.keys[0x9C].origin == 2
    assert st.keys[0x9C].pin_policy == 2  # once
    assert same_public_key(slot_public_key(ypt.card, 0x9C), key.public_key())


def _cert_for(public_key: object, cn: str = "ypt interop") -> x509.Certificate:
    """A certificate for *public_key*, issued by a throwaway local CA."""
    ca = ec.generate_private_key(ec.SECP256R1())
    now = datetime.datetime.now(datetime.timezone.utc)
    return (x509.CertificateBuilder()
            .subject_name(x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, cn)]))
            .issuer_name(x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "local CA")]))
            .public_key(public_key)  # type: ignore[arg-type]
            .serial_number(x509.random_serial_number())
            .not_valid_before(now).not_valid_after(now + datetime.timedelta(days=30))
            .sign(ca, hashes.SHA256()))


def test_certificate_import_read_delete(vcard_factory: VCardFactory, tmp_path: Path) -> None:
    # A YubiKey-named reader, so that ykman (below) sees a USB YubiKey too.
    ypt = Ypt(vcard_factory(firmware=(5, 4, 3), yubico_reader=True))
    cert = _cert_for(ec.generate_private_key(ec.SECP256R1()).public_key())
    path = tmp_path / "cert.pem"
    path.write_bytes(cert.public_bytes(serialization.Encoding.PEM))
    ypt("-a", "import-certificate", "-s", "9d", "-i", str(path))
    assert CERT_OBJECTS[0x9D] in state(ypt.card).objects
    out = tmp_path / "read.pem"
    ypt("-a", "read-certificate", "-s", "9d", "-o", str(out))
    assert load_cert(out) == cert
    # Another tool reads the same object.
    ykman_out = tmp_path / "ykman.pem"
    Ykman(ypt.card)("piv", "certificates", "export", "9d", str(ykman_out))
    assert load_cert(ykman_out) == cert
    ypt("-a", "delete-certificate", "-s", "9d")
    assert CERT_OBJECTS[0x9D] not in state(ypt.card).objects


def test_set_mgm_key(ypt: Ypt, tmp_path: Path) -> None:
    new = secrets.token_hex(24)
    ypt(f"--key={MGMT}", "-a", "set-mgm-key", f"--new-key={new}")
    st = state(ypt.card)
    assert st.mgmt_key == bytes.fromhex(new)
    assert st.mgmt_key_type == 0x03
    proc = ypt(f"--key={MGMT}", "-a", "set-chuid", check=False)
    assert proc.returncode != 0
    ypt(f"--key={new}", "-a", "set-chuid")


def test_pin_retries(ypt: Ypt) -> None:
    # The YubiKey wants the PIN verified in the same session before SET PIN RETRIES.
    ypt("-a", "verify-pin", "-a", "pin-retries", "--pin-retries=5", "--puk-retries=6",
        "-P", PIN)
    st = state(ypt.card)
    assert (st.pin_retries_total, st.puk_retries_total) == (5, 6)
    assert "PIN tries left:\t5" in ypt("-a", "status").stdout


def test_attest(ypt: Ypt, tmp_path: Path) -> None:
    ypt("-a", "generate", "-s", "9e", "-A", "ECCP256", "-o", str(tmp_path / "pub.pem"))
    att_path = tmp_path / "att.pem"
    ypt("-a", "attest", "-s", "9e", "-o", str(att_path))
    att = load_cert(att_path)
    verify_attestation(att, ypt.card)
    assert same_public_key(att.public_key(), slot_public_key(ypt.card, 0x9E))


def test_set_chuid_and_ccc(ypt: Ypt) -> None:
    ypt("-a", "set-chuid", "-a", "set-ccc")
    st = state(ypt.card)
    assert OBJ_CHUID in st.objects
    assert OBJ_CCC in st.objects
    out = ypt("-a", "status").stdout
    assert "CHUID:\tNo data" not in out
    assert "CCC:\tNo data" not in out


@pytest.mark.parametrize("algorithm", ["ECCP256", "RSA2048"])
def test_test_signature(ypt: Ypt, tmp_path: Path, algorithm: str) -> None:
    pub_path = tmp_path / "pub.pem"
    ypt("-a", "generate", "-s", "9a", "-A", algorithm, "-o", str(pub_path))
    cert = _cert_for(serialization.load_pem_public_key(pub_path.read_bytes()))
    cert_path = tmp_path / "cert.pem"
    cert_path.write_bytes(cert.public_bytes(serialization.Encoding.PEM))
    ypt("-a", "import-certificate", "-s", "9a", "-i", str(cert_path))
    # test-signature signs random data on the card and verifies it against the certificate.
    proc = ypt("-a", "verify-pin", "-a", "test-signature", "-s", "9a", "-P", PIN,
               input=cert.public_bytes(serialization.Encoding.PEM).decode())
    assert "verification." in proc.stderr
    assert "Successful" in proc.stderr.splitlines()[-1]


def test_reset(ypt: Ypt, tmp_path: Path) -> None:
    ypt("-a", "generate", "-s", "9a", "-A", "ECCP256", "-o", str(tmp_path / "p.pem"))
    ypt("-a", "change-pin", "-P", PIN, "-N", "11223344")
    proc = ypt("-a", "reset", check=False)
    assert proc.returncode != 0  # PIN and PUK still work: the card refuses
    block_pin(ypt.card)
    block_puk(ypt.card)
    ypt("-a", "reset")
    st = state(ypt.card)
    assert (st.pin, st.puk, st.mgmt_key) == (PIN.encode(), PUK.encode(), bytes.fromhex(MGMT))
    assert set(st.keys) == {0xF9}


def test_3des_only_client_cannot_use_aes_default_key(vcard_factory: VCardFactory) -> None:
    """yubico-piv-tool 2.2.0 authenticates with 3DES only; a 5.7 key's factory management
    key is AES-192, so management operations fail (as on a real 5.7 key) and change nothing."""
    ypt = Ypt(vcard_factory(firmware=(5, 7, 1)))
    proc = ypt(f"--key={MGMT}", "-a", "set-chuid", check=False)
    assert proc.returncode != 0
    assert "authentication" in proc.stderr.lower()
    assert OBJ_CHUID not in state(ypt.card).objects
