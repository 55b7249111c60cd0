"""Fuzz targets shared by the bounded hypothesis tests (tests/faults/test_faults_fuzz.py)
and the 100,000-case benchmark run (bench/fuzz.py).

Each target takes bytes and either returns or raises the errors its contract allows; any
other exception is a finding (:class:`Finding` wraps it with the target's name). Seeds are
real inputs (a recorded card conversation, a certificate, a PKCS#12 file...) for the
mutation fuzzer to start from.
"""

from __future__ import annotations

import contextlib
import functools
import random
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from pivtool.core.errors import PivToolError

#: The response SWs worth trying more often than a random 16-bit value.
INTERESTING_SW = (0x9000, 0x9000, 0x9000, 0x6100, 0x6110, 0x61FF, 0x63C0, 0x63C2, 0x6A82,
                  0x6982, 0x6983, 0x6D00, 0x6C10, 0x6A80, 0x6700, 0x6985)


def _cert_error() -> type[Exception]:
    from pivtool.certs.errors import CertError

    return CertError


class Finding(Exception):
    """An exception outside a target's contract."""


@dataclass
class Target:
    name: str
    run: Callable[[bytes], None]
    seeds: Callable[[], list[bytes]]


def _contract(name: str, allowed: tuple[type[BaseException], ...]
              ) -> Callable[[Callable[[bytes], None]], Callable[[bytes], None]]:
    def wrap(fn: Callable[[bytes], None]) -> Callable[[bytes], None]:
        @functools.wraps(fn)
        def run(data: bytes) -> None:
            try:
                fn(data)
            except allowed:
                pass
            except Exception as e:
                raise Finding(f"{name}: {type(e).__name__}: {e}") from e
        return run
    return wrap


# --- TLV and PIV data objects ----------------------------------------------------------


@_contract("tlv", (PivToolError,))
def fuzz_tlv(data: bytes) -> None:
    from pivtool.core.tlv import find, parse_dict, parse_tlvs, tlv, unwrap

    try:
        items = parse_tlvs(data)
    except PivToolError:
        items = None
    if items is not None:
        # What parses re-encodes to something that parses to the same items.
        again = parse_tlvs(b"".join(tlv(t, v) for t, v in items))
        assert again == items, "TLV re-encoding changed the items"
    for fn in (lambda: parse_dict(data), lambda: unwrap(data, 0x53),
               lambda: find(data, 0x70)):
        with contextlib.suppress(PivToolError):
            fn()


@_contract("objects", (PivToolError,))
def fuzz_objects(data: bytes) -> None:
    from pivtool.piv.objects import (
        Chuid,
        PivmanData,
        PivmanProtectedData,
        ccc_card_id,
        decode_certificate_object,
    )

    for fn in (Chuid.decode, PivmanData.decode, PivmanProtectedData.decode, ccc_card_id,
               decode_certificate_object):
        with contextlib.suppress(PivToolError):
            fn(data)  # type: ignore[operator]


def _tlv_seeds() -> list[bytes]:
    from pivtool.core.tlv import tlv
    from pivtool.piv.objects import Chuid, PivmanData, build_ccc, encode_certificate_object

    cert = _cert_der()
    return [Chuid.generate().encode(), build_ccc(), PivmanData(2, None, 1234).encode(),
            encode_certificate_object(cert), encode_certificate_object(cert, True),
            tlv(0x88, tlv(0x89, bytes(24)) + tlv(0x8A, bytes(24))),
            tlv(0x53, tlv(0x5FC105, b"\x01" * 200)), tlv(0x7F49, tlv(0x86, b"\x04" * 65))]


# --- the session's response parsing ----------------------------------------------------


class ScriptedConnection:
    """A 'card' answering each APDU with the next scripted (data, SW); 9000 when the
    script runs out, so every loop in the client ends."""

    atr = bytes.fromhex("3bf81300008131fe15597562696b657934d4")
    reader_name = "fuzz"

    def __init__(self, answers: list[tuple[bytes, int]]) -> None:
        self.answers = answers
        self.sent = 0

    def transmit(self, apdu: bytes) -> tuple[bytes, int]:
        self.sent += 1
        if self.sent > 600:
            raise AssertionError("the client does not stop sending")
        if self.answers:
            return self.answers.pop(0)
        return b"", 0x9000

    def close(self) -> None:
        pass


def encode_script(method: int, answers: list[tuple[bytes, int]]) -> bytes:
    """The byte form the mutation fuzzer works on: method, then (SW, length, data)*."""
    out = bytearray([method])
    for data, sw in answers:
        out += sw.to_bytes(2, "big") + len(data).to_bytes(2, "big") + data
    return bytes(out)


def decode_script(raw: bytes) -> tuple[int, list[tuple[bytes, int]]]:
    if not raw:
        return 0, []
    method, pos, answers = raw[0], 1, []
    while pos + 4 <= len(raw):
        sw = int.from_bytes(raw[pos:pos + 2], "big")
        n = int.from_bytes(raw[pos + 2:pos + 4], "big")
        answers.append((raw[pos + 4:pos + 4 + n], sw))
        pos += 4 + n
    return method, answers


def _session_methods() -> list[tuple[str, Callable[[Any], object]]]:
    from cryptography.hazmat.primitives import hashes
    from cryptography.hazmat.primitives.asymmetric import ec

    from pivtool.piv.constants import DEFAULT_MGMT_KEY, KeyType, MgmtKeyType, ObjectId, Slot
    from pivtool.workflows.auth import read_pivman, read_protected_key
    from pivtool.workflows.state import read_card_state

    a, sig = Slot.AUTHENTICATION, Slot.SIGNATURE
    pub = ec.generate_private_key(ec.SECP256R1()).public_key()
    return [
        ("get_serial", lambda s: s.get_serial()),
        ("get_data", lambda s: s.get_data(ObjectId.CHUID)),
        ("get_certificate", lambda s: s.get_certificate(a)),
        ("get_certificate_der", lambda s: s.get_certificate_der(sig)),
        ("verify_pin", lambda s: s.verify_pin(b"123456")),
        ("pin_tries_by_verify", lambda s: s.pin_tries_by_verify()),
        ("get_pin_metadata", lambda s: s.get_pin_metadata()),
        ("get_puk_metadata", lambda s: s.get_puk_metadata()),
        ("get_mgmt_key_metadata", lambda s: s.get_mgmt_key_metadata()),
        ("mgmt_key_type", lambda s: s.mgmt_key_type),
        ("authenticate", lambda s: s.authenticate(DEFAULT_MGMT_KEY)),
        ("authenticate_tdes", lambda s: s.authenticate(DEFAULT_MGMT_KEY, MgmtKeyType.TDES)),
        ("get_slot_metadata", lambda s: s.get_slot_metadata(a)),
        ("generate_ec", lambda s: s.generate_key(a, KeyType.ECCP256)),
        ("generate_rsa", lambda s: s.generate_key(a, KeyType.RSA2048)),
        ("generate_ed25519", lambda s: s.generate_key(a, KeyType.ED25519)),
        ("attest_key", lambda s: s.attest_key(a)),
        ("sign_ec", lambda s: s.private_key(a, pub).sign(b"x", ec.ECDSA(hashes.SHA256()))),
        ("slot_key_present", lambda s: s.slot_key_present(a)),
        ("change_pin", lambda s: s.change_pin(b"123456", b"654321")),
        ("unblock_pin", lambda s: s.unblock_pin(b"12345678", b"654321")),
        ("read_card_state", lambda s: read_card_state(s)),
        ("read_pivman", lambda s: read_pivman(s)),
        ("read_protected_key", lambda s: read_protected_key(s)),
    ]


@functools.lru_cache(maxsize=1)
def session_methods() -> list[tuple[str, Callable[[Any], object]]]:
    return _session_methods()


@_contract("session", (PivToolError,))
def fuzz_session(raw: bytes) -> None:
    from pivtool.piv.session import PivSession

    method, answers = decode_script(raw)
    methods = session_methods()
    conn = ScriptedConnection(answers)
    s = PivSession(conn)  # SELECT and GET VERSION answers come from the script too
    methods[method % len(methods)][1](s)


@functools.lru_cache(maxsize=1)
def _session_seeds() -> tuple[bytes, ...]:
    """Each method run against a real virtual card (PIN verified, key authenticated, a key
    and certificate in 9a), its answers recorded: valid conversations to mutate."""
    from pivtool.connect import SimLink
    from pivtool.piv.constants import DEFAULT_MGMT_KEY, KeyType, Slot
    from pivtool.piv.session import PivSession
    from pivtool.sim.attach import SimConnection
    from pivtool.sim.card import VirtualCard
    from pivtool.sim.state import new_card_state

    card = VirtualCard(new_card_state(serial=4242))
    setup = PivSession(SimLink(SimConnection(card)))
    setup.authenticate(DEFAULT_MGMT_KEY)
    setup.generate_key(Slot.AUTHENTICATION, KeyType.ECCP256)
    setup.put_certificate(Slot.AUTHENTICATION, _cert_der())
    setup.connection.close()
    class Recording(SimLink):
        answers: list[tuple[bytes, int]]

        def transmit(self, apdu: bytes) -> tuple[bytes, int]:
            r = super().transmit(apdu)
            self.answers.append(r)
            return r

    seeds = []
    for i, (_name, fn) in enumerate(session_methods()):
        link = Recording(SimConnection(card))
        link.answers = answers = []
        s = PivSession(link)
        with contextlib.suppress(PivToolError):
            fn(s)
        s.connection.close()
        seeds.append(encode_script(i, answers))
    return tuple(seeds)


# --- the emulator's APDU parser --------------------------------------------------------


@functools.lru_cache(maxsize=1)
def _sim_template() -> Any:
    from pivtool.sim.state import new_card_state

    return new_card_state(serial=777)


@_contract("sim", ())
def fuzz_sim(raw: bytes) -> None:
    """Split into APDUs (1-byte length prefix each) sent after SELECT: every one gets a
    status word and the card never reaches its internal-error path."""
    import copy

    from pivtool.sim.card import VirtualCard

    card = VirtualCard(copy.deepcopy(_sim_template()))
    if raw and raw[0] & 1:
        # Half the inputs run with the PIN verified and the management key authenticated,
        # so the mutations reach the commands that change the card.
        from pivtool.connect import SimLink
        from pivtool.piv.constants import DEFAULT_MGMT_KEY
        from pivtool.piv.session import PivSession
        from pivtool.sim.attach import SimConnection

        s = PivSession(SimLink(SimConnection(card)))
        s.authenticate(DEFAULT_MGMT_KEY)
        s.verify_pin(b"123456")
        raw = raw[1:]
    card.execute(bytes.fromhex("00a4040005a000000308"))
    pos = 0
    while pos < len(raw):
        n = raw[pos]
        apdu = raw[pos + 1:pos + 1 + n]
        pos += 1 + n
        response = card.execute(apdu)
        assert len(response) >= 2, "no status word"
    assert not any("internal error" in t for t in card.transcript), "internal error"


def _sim_seeds() -> list[bytes]:
    apdus = ["0020008008313233343536ffff", "00fd0000", "00f80000", "00f7ff9a00",
             "00cb3fff055c035fc102", "0087030404 7c028100".replace(" ", ""),
             "0047009a05ac03800111", "00db3fff0c5c035fc1055305700371016e",
             "1087030412" + "7c10" + "8100" * 8, "00c00000", "00fb0000"]
    seqs = [b"".join(bytes([len(bytes.fromhex(a))]) + bytes.fromhex(a) for a in apdus[:k])
            for k in range(1, len(apdus) + 1)]
    return seqs + [b"\x01" + q for q in seqs]  # the same, authenticated


# --- certificate, key, PKCS#12 and CSR inputs ------------------------------------------


@functools.lru_cache(maxsize=1)
def _material() -> dict[str, bytes]:
    import datetime as dt

    from cryptography import x509
    from cryptography.hazmat.primitives import hashes, serialization
    from cryptography.hazmat.primitives.asymmetric import ec
    from cryptography.hazmat.primitives.serialization import pkcs12
    from cryptography.x509.oid import NameOID

    key = ec.generate_private_key(ec.SECP256R1())
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "fuzz")])
    now = dt.datetime(2025, 1, 1, tzinfo=dt.timezone.utc)
    cert = (x509.CertificateBuilder().subject_name(name).issuer_name(name)
            .public_key(key.public_key()).serial_number(1).not_valid_before(now)
            .not_valid_after(now + dt.timedelta(days=3650))
            .add_extension(x509.SubjectAlternativeName([x509.RFC822Name("a@b.c")]), False)
            .sign(key, hashes.SHA256()))
    csr = (x509.CertificateSigningRequestBuilder().subject_name(name)
           .add_extension(x509.SubjectAlternativeName([x509.RFC822Name("a@b.c")]), False)
           .sign(key, hashes.SHA256()))
    enc = serialization.Encoding
    return {
        "cert_der": cert.public_bytes(enc.DER), "cert_pem": cert.public_bytes(enc.PEM),
        "csr_pem": csr.public_bytes(enc.PEM), "csr_der": csr.public_bytes(enc.DER),
        "key_pem": key.private_bytes(enc.PEM, serialization.PrivateFormat.PKCS8,
                                     serialization.NoEncryption()),
        "key_der": key.private_bytes(enc.DER, serialization.PrivateFormat.PKCS8,
                                     serialization.NoEncryption()),
        "p12": pkcs12.serialize_key_and_certificates(
            b"fuzz", key, cert, None, serialization.BestAvailableEncryption(b"pw")),
    }


def _cert_der() -> bytes:
    return _material()["cert_der"]


@_contract("certs", (PivToolError, _cert_error()))
def fuzz_certs(data: bytes) -> None:
    from pivtool.certs.errors import CertError
    from pivtool.certs.inspect import (
        load_certificate,
        load_certificates,
        load_pkcs12,
        load_private_key,
        summarize,
    )
    from pivtool.workflows.certs import load_certificate_file

    for fn in (lambda: load_certificate(data), lambda: load_certificates(data),
               lambda: load_private_key(data), lambda: load_private_key(data, b"pw"),
               lambda: load_pkcs12(data, b"pw"),
               lambda: load_certificate_file(data, lambda: b"pw")):
        try:
            out = fn()
        except CertError:
            continue
        # What loads must also be describable (the CLI prints a summary of it).
        for c in out[0] if isinstance(out, tuple) and isinstance(out[0], list) else (
                out if isinstance(out, list) else []):
            summarize(c)


@_contract("csr", (PivToolError, _cert_error()))
def fuzz_csr(data: bytes) -> None:
    from pivtool.certs.errors import CertError

    ca = _lab_ca()
    with contextlib.suppress(CertError):
        ca.issue(data)


@functools.lru_cache(maxsize=1)
def _lab_ca() -> Any:
    import tempfile
    from pathlib import Path

    from pivtool.certs.ca import LabCA

    d = Path(tempfile.mkdtemp(prefix="pivtool-fuzz-ca-")) / "ca"
    LabCA.init(d, "CN=Fuzz CA", crl_url="http://127.0.0.1/ca.crl")
    return LabCA.open(d)


# --- rosters ---------------------------------------------------------------------------


@_contract("roster", (PivToolError,))
def fuzz_roster(data: bytes) -> None:
    from pivtool.workflows.roster import parse_roster

    rows = parse_roster(data.decode("utf-8", "replace"))
    for row in rows:
        assert row.error is None or "\n" not in row.error, "multi-line row error"


ROSTER_SEED = (b"upn,email,display name,serial,algorithm,policies,pin policy,touch policy\n"
               b"alice@contoso.com,alice@contoso.com,Alice Smith,12345678,eccp256,"
               b"1.2.3.4,once,never\nbob@contoso.com,,Bob,,rsa2048,,,\n")


def _roster_available() -> bool:
    try:
        import pivtool.workflows.roster  # noqa: F401
    except ImportError:
        return False
    return True


def targets() -> list[Target]:
    m = _material
    out = [
        Target("tlv", fuzz_tlv, _tlv_seeds),
        Target("objects", fuzz_objects, _tlv_seeds),
        Target("session", fuzz_session, lambda: list(_session_seeds())),
        Target("sim", fuzz_sim, _sim_seeds),
        Target("certs", fuzz_certs, lambda: [m()[k] for k in ("cert_der", "cert_pem",
                                                               "key_pem", "key_der", "p12")]),
        Target("csr", fuzz_csr, lambda: [m()["csr_pem"], m()["csr_der"]]),
    ]
    if _roster_available():
        out.append(Target("roster", fuzz_roster, lambda: [ROSTER_SEED]))
    return out


# --- mutation ----------------------------------------------------------------------------


def mutate(data: bytes, rnd: random.Random) -> bytes:
    """One to four classic mutations: bit flip, byte set, insert, delete, truncate,
    duplicate a chunk, or an interesting value (lengths 0x80-0x84, 0xFF, 0x00)."""
    buf = bytearray(data)
    for _ in range(rnd.randint(1, 4)):
        op = rnd.randrange(7)
        if not buf:
            buf += bytes([rnd.randrange(256)])
            continue
        i = rnd.randrange(len(buf))
        if op == 0:
            buf[i] ^= 1 << rnd.randrange(8)
        elif op == 1:
            buf[i] = rnd.choice((0x00, 0x7F, 0x80, 0x81, 0x82, 0x83, 0x84, 0xFF,
                                 rnd.randrange(256)))
        elif op == 2:
            buf[i:i] = bytes(rnd.randrange(256) for _ in range(rnd.randint(1, 8)))
        elif op == 3:
            del buf[i:i + rnd.randint(1, 16)]
        elif op == 4:
            del buf[i:]
        elif op == 5:
            j = rnd.randrange(len(buf))
            buf[i:i] = buf[j:j + rnd.randint(1, 32)]
        else:
            buf[i:i + 2] = rnd.choice(INTERESTING_SW).to_bytes(2, "big")
    return bytes(buf)
