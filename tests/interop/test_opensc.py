"""OpenSC (opensc-tool, pkcs11-tool with opensc-pkcs11.so) and openssl against the virtual
YubiKey, through pcscd."""

from __future__ import annotations

from pathlib import Path

import pytest
from interop_tools import (
    MGMT,
    OPENSC_MODULE,
    OPENSC_TOOL,
    OPENSSL,
    PIN,
    PKCS11_TOOL,
    Ykman,
    run,
)
from pcsc_stack import VCardFactory, VirtualCardProcess

from pivtool import pcsc

pytestmark = [pytest.mark.pcsc, pytest.mark.interop]

#: OpenSC's PIV driver numbers the key objects by slot: 9a -> 01, 9c -> 02, 9d -> 03, 9e -> 04.
PKCS11_ID = {"9a": "01", "9c": "02", "9d": "03", "9e": "04"}

CARDS = {
    "yubikey-usb": {"yubico_reader": True},
    "yubikey-nfc": {"interface": "nfc"},
    "generic-piv": {"generic": True},
}


def _env(opensc_conf: Path) -> dict[str, str]:
    return {"OPENSC_CONF": str(opensc_conf)}


def _p11(card: VirtualCardProcess, opensc_conf: Path, *args: str,
         check: bool = True) -> str:
    proc = run([PKCS11_TOOL, "--module", OPENSC_MODULE, "--slot-description", card.reader,
                *args], env=_env(opensc_conf), check=check)
    return proc.stdout + proc.stderr


@pytest.mark.parametrize("kind", list(CARDS))
def test_opensc_tool_identifies_piv(vcard_factory: VCardFactory, opensc_conf: Path,
                                    kind: str) -> None:
    card = vcard_factory(**CARDS[kind])
    env = _env(opensc_conf)
    assert run([OPENSC_TOOL, "-r", card.reader, "-n"], env=env).stdout.strip() == \
        "Personal Identity Verification Card"
    atr = run([OPENSC_TOOL, "-r", card.reader, "-a"], env=env).stdout.strip()
    with pcsc.open_reader(card.substring, shared=True) as conn:
        assert bytes.fromhex(atr.replace(":", "")) == conn.atr


@pytest.mark.parametrize("kind", ["yubikey-usb", "yubikey-nfc"])
def test_pkcs11_mechanisms_include_ecdsa(vcard_factory: VCardFactory, opensc_conf: Path,
                                         kind: str) -> None:
    # OpenSC keys its YubiKey handling on the ATR; a wrong one hides every EC mechanism.
    out = _p11(vcard_factory(**CARDS[kind]), opensc_conf, "-M")
    assert "ECDSA" in out
    assert "ECDSA-SHA256" in out
    assert "RSA-PKCS" in out


def _provision(card: VirtualCardProcess, tmp_path: Path, slot: str, algorithm: str) -> Path:
    """Key generated on the card + self-signed certificate (OpenSC finds keys by their
    certificates). Returns the public key file."""
    yk = Ykman(card)
    pub = tmp_path / f"{slot}.pub.pem"
    yk("piv", "keys", "generate", "-a", algorithm, "-m", MGMT, slot, str(pub))
    yk("piv", "certificates", "generate", "-m", MGMT, "-P", PIN, "-s", f"CN={slot}",
       slot, str(pub))
    return pub


def test_pkcs11_login_test_passes(vcard_factory: VCardFactory, opensc_conf: Path,
                                  tmp_path: Path) -> None:
    card = vcard_factory(yubico_reader=True)
    _provision(card, tmp_path, "9a", "RSA2048")
    _provision(card, tmp_path, "9d", "ECCP256")
    out = _p11(card, opensc_conf, "--login", "--pin", PIN, "--test")
    assert "No errors" in out
    assert "testing key 0 (PIV AUTH key)" in out
    assert "RNG" in out or "C_GenerateRandom" in out


def test_pkcs11_random(vcard_factory: VCardFactory, opensc_conf: Path, tmp_path: Path) -> None:
    """OpenSC draws randomness with GENERAL AUTHENTICATE 00 87 00 9B 7C028100 (a 9B
    challenge); a YubiKey answers it, a card OpenSC flags CI_NO_RANDOM is never asked."""
    card = vcard_factory(yubico_reader=True)
    out = tmp_path / "random.bin"
    _p11(card, opensc_conf, "--generate-random", "32", "-o", str(out))
    data = out.read_bytes()
    assert len(data) == 32
    assert data != bytes(32)


@pytest.mark.parametrize(("algorithm", "mechanism", "digest"), [
    ("ECCP256", "ECDSA-SHA256", "-sha256"),
    ("ECCP384", "ECDSA-SHA384", "-sha384"),
    ("RSA2048", "SHA256-RSA-PKCS", "-sha256"),
])
def test_pkcs11_signature_verifies_with_openssl(
    vcard_factory: VCardFactory, opensc_conf: Path, tmp_path: Path,
    algorithm: str, mechanism: str, digest: str,
) -> None:
    card = vcard_factory(yubico_reader=True)
    pub = _provision(card, tmp_path, "9a", algorithm)
    data = tmp_path / "data.bin"
    data.write_bytes(b"signed through PKCS#11 by a key generated on the card\n" * 10)
    sig = tmp_path / "sig.bin"
    args = ["--login", "--pin", PIN, "--sign", "--id", PKCS11_ID["9a"], "-m", mechanism,
            "-i", str(data), "-o", str(sig)]
    if mechanism.startswith("ECDSA"):
        args += ["--signature-format", "openssl"]  # DER, as openssl dgst expects
    _p11(card, opensc_conf, *args)
    proc = run([OPENSSL, "dgst", digest, "-verify", str(pub), "-signature", str(sig),
                str(data)])
    assert proc.stdout.strip() == "Verified OK"
    # And a tampered message does not verify.
    data.write_bytes(b"tampered")
    proc = run([OPENSSL, "dgst", digest, "-verify", str(pub), "-signature", str(sig),
                str(data)], check=False)
    assert proc.returncode != 0
