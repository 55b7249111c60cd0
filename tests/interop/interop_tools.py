"""Running third-party PIV clients against a virtual card, and checking what they did.

The oracle is the card's own state file (saved by the vpcd bridge after every change), so
each test asserts what the tool did to the card, not just its exit code.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest
from cryptography import x509
from cryptography.hazmat.primitives import serialization
from pcsc_stack import VirtualCardProcess

from pivtool import pcsc
from pivtool.core.apdu import Apdu
from pivtool.core.connection import ApduProtocol

# Test secrets only: the factory defaults of every virtual card.
PIN = "123456"
PUK = "12345678"
MGMT = "010203040506070801020304050607080102030405060708"

YKMAN = str(Path(sys.executable).with_name("ykman"))
YPT = shutil.which("yubico-piv-tool") or "yubico-piv-tool"
OPENSC_TOOL = shutil.which("opensc-tool") or "opensc-tool"
PKCS11_TOOL = shutil.which("pkcs11-tool") or "pkcs11-tool"
OPENSC_MODULE = "/usr/lib/x86_64-linux-gnu/opensc-pkcs11.so"
OPENSSL = shutil.which("openssl") or "openssl"

SELECT_PIV = Apdu(0x00, 0xA4, 0x04, 0x00, bytes.fromhex("A000000308000010000100"))

OBJ_CHUID = 0x5FC102
OBJ_CCC = 0x5FC107
OBJ_PRINTED = 0x5FC109
OBJ_PIVMAN = 0x5FFF00
CERT_OBJECTS = {0x9A: 0x5FC105, 0x9C: 0x5FC10A, 0x9D: 0x5FC10B, 0x9E: 0x5FC101}


def run(
    cmd: list[str],
    *,
    input: str | None = None,
    env: dict[str, str] | None = None,
    check: bool = True,
    timeout: float = 60,
    cwd: Path | None = None,
) -> subprocess.CompletedProcess[str]:
    """Run a tool; with *check*, fail the test (showing its output) unless it exits 0."""
    full_env = dict(os.environ, LC_ALL="C", LANG="C")
    if env:
        full_env.update(env)
    proc = subprocess.run(
        cmd, input=input, env=full_env, capture_output=True, text=True, timeout=timeout,
        cwd=cwd, check=False,
    )
    if check and proc.returncode != 0:
        pytest.fail(
            f"{Path(cmd[0]).name} exited {proc.returncode}: {' '.join(cmd[1:])}\n"
            f"--- stdout\n{proc.stdout}\n--- stderr\n{proc.stderr}"
        )
    return proc


class Ykman:
    """``ykman --reader <unique substring> ...`` for one card."""

    def __init__(self, card: VirtualCardProcess) -> None:
        self.card = card

    def __call__(self, *args: str, check: bool = True,
                 input: str | None = None) -> subprocess.CompletedProcess[str]:
        return run([YKMAN, "--reader", self.card.substring, *args], check=check, input=input)


class Ypt:
    """``yubico-piv-tool -r <reader> ...`` for one card."""

    def __init__(self, card: VirtualCardProcess) -> None:
        self.card = card

    def __call__(self, *args: str, check: bool = True,
                 input: str | None = None) -> subprocess.CompletedProcess[str]:
        return run([YPT, "-r", self.card.reader, *args], check=check, input=input)


def state(card: VirtualCardProcess) -> Any:
    """The card's persistent state as the bridge last saved it."""
    return card.load_state()


def slot_public_key(card: VirtualCardProcess, slot: int) -> Any:
    """Public key of the private key the card holds in *slot* (from the state file)."""
    key = serialization.load_pem_private_key(
        state(card).keys[slot].private_key_pem.encode(), password=None
    )
    return key.public_key()


def same_public_key(a: Any, b: Any) -> bool:
    fmt = serialization.PublicFormat.SubjectPublicKeyInfo
    enc = serialization.Encoding.DER
    return bool(a.public_bytes(enc, fmt) == b.public_bytes(enc, fmt))


def _raw(card: VirtualCardProcess) -> tuple[pcsc.PcscConnection, ApduProtocol]:
    conn = pcsc.open_reader(card.substring)
    proto = ApduProtocol(conn)
    assert proto.send_raw(SELECT_PIV)[1] == 0x9000
    return conn, proto


def block_pin(card: VirtualCardProcess) -> None:
    """Exhaust the PIN retries with wrong VERIFYs (through pivtool's PC/SC layer)."""
    conn, proto = _raw(card)
    with conn:
        for _ in range(16):
            _, sw = proto.send_raw(Apdu(0x00, 0x20, 0x00, 0x80, b"00000000"), sensitive=True)
            if sw == 0x6983:
                return
        pytest.fail("PIN did not block")


def block_puk(card: VirtualCardProcess) -> None:
    """Exhaust the PUK retries with wrong RESET RETRY COUNTERs."""
    conn, proto = _raw(card)
    with conn:
        for _ in range(16):
            _, sw = proto.send_raw(
                Apdu(0x00, 0x2C, 0x00, 0x80, b"00000000" + b"11111111"), sensitive=True
            )
            if sw == 0x6983:
                return
        pytest.fail("PUK did not block")


def load_cert(path: Path) -> x509.Certificate:
    data = path.read_bytes()
    if b"-----BEGIN" in data:
        return x509.load_pem_x509_certificate(data)
    return x509.load_der_x509_certificate(data)


def verify_attestation(
    attestation: x509.Certificate, card: VirtualCardProcess, f9: x509.Certificate | None = None
) -> None:
    """Check attestation <- f9 intermediate <- the sim's attestation root, with cryptography."""
    st = state(card)
    root_der = st.attestation_root_cert
    root = (x509.load_pem_x509_certificate(root_der) if b"-----BEGIN" in root_der
            else x509.load_der_x509_certificate(root_der))
    if f9 is None:
        from pivtool.sim.tlv import parse_dict

        f9_der = parse_dict(st.objects[0x5FFF01])[0x70]
        f9 = x509.load_der_x509_certificate(f9_der)
    attestation.verify_directly_issued_by(f9)
    f9.verify_directly_issued_by(root)
    root.verify_directly_issued_by(root)
    # Yubico's extension 1.3.6.1.4.1.41482.3.7 carries the serial as an INTEGER.
    ext = attestation.extensions.get_extension_for_oid(
        x509.ObjectIdentifier("1.3.6.1.4.1.41482.3.7")
    )
    der = ext.value.value  # type: ignore[attr-defined]
    assert der[0] == 0x02
    assert int.from_bytes(der[2:2 + der[1]], "big") == st.serial
