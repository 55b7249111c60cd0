"""pivtool against ykman and yubico-piv-tool, side by side on one virtual YubiKey.

Run from the repository root (after ``scripts/dev setup`` or ``scripts/dev test``)::

    .venv/bin/python bench/run.py                 # ~1-2 minutes, prints the table
    .venv/bin/python bench/run.py --update-doc    # ...and writes it into docs/performance.md

What it does (see bench/README.md for the why):

1. starts a private pcscd with vpcd readers (``tests/pcsc_stack.py``'s machinery: it refuses
   to run next to a pcscd it did not start, and stops its own by PID);
2. plugs a virtual YubiKey 5.4.3 into the reader named like a YubiKey's USB interface, served
   by ``bench/counting_serve.py`` (the ``sim serve`` loop plus an APDU log and state
   snapshots on a side channel);
3. for every operation, runs pivtool and the anchors in alternation (one warm-up round, then
   ``--rounds`` measured rounds, the starting tool rotating each round), each run starting
   from the same card state; reports medians, the ratio pivtool/anchor, and the command
   APDUs each tool sent (counted at the card);
4. measures the emulator's own throughput in-process and through pcscd.
"""

from __future__ import annotations

import argparse
import contextlib
import datetime
import json
import os
import platform
import re
import shutil
import signal
import socket
import statistics
import subprocess
import sys
import tempfile
import time
from collections import Counter
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parents[1]
BENCH = REPO / "bench"
sys.path.insert(0, str(REPO / "tests"))  # pcsc_stack (the tests' pcscd machinery)
sys.path.insert(0, str(REPO))

import pcsc_stack  # noqa: E402
import pytest  # noqa: E402  (pcsc_stack reports problems with pytest.fail)

BIN = Path(sys.executable).parent
PIVTOOL = str(BIN / "pivtool")
YKMAN = str(BIN / "ykman")
YPT = shutil.which("yubico-piv-tool") or "yubico-piv-tool"
DOC = REPO / "docs" / "performance.md"
DOC_BEGIN = "<!-- bench:begin (written by bench/run.py --update-doc) -->"
DOC_END = "<!-- bench:end -->"

# Bench-only secrets: the card's factory defaults and the values the desk sequence sets.
PIN, PUK = "123456", "12345678"
NEW_PIN, NEW_PUK = "24681357", "86427531"
MGMT = "010203040506070801020304050607080102030405060708"  # 3DES default of firmware < 5.7

#: Debian's yubico-piv-tool 2.2.0 only does 3DES management keys, and 5.4.3 is the last
#: firmware line whose factory key is 3DES: one card that all three tools can administer.
FIRMWARE = (5, 4, 3)
SERIAL = 27182818
SUBJECT = "CN=Bench Alice,O=Contoso"
UPN = "alice@contoso.com"

TOOLS = ("pivtool", "ykman", "yubico-piv-tool")

# Targets from the issue; measured and reported, never asserted in the test suite.
TARGET_VERSION_S = 0.10
TARGET_INFO_RATIO = 0.4  # issue 17: pivtool info at most 0.4 x ykman piv info
TARGET_INFO_APDUS = 40


class BenchError(Exception):
    """The bench cannot go on (no pcscd, a tool missing, the card process died...)."""


# ------------------------------------------------------------------------------------------
# the card behind pcscd, with its side channel


class BenchCard:
    """``bench/counting_serve.py`` on one vpcd reader, and a client for its side channel."""

    def __init__(self, vreader: pcsc_stack.VReader, state: Path, workdir: Path) -> None:
        self.vreader = vreader
        self.state = state
        self.control = workdir / "card.sock"
        self.log_path = workdir / "card.log"
        self.proc: subprocess.Popen[bytes] | None = None
        self._sock: socket.socket | None = None
        self._file: Any = None

    @property
    def reader(self) -> str:
        return str(self.vreader.name)

    @property
    def substring(self) -> str:
        return str(self.vreader.substring)

    def start(self, timeout: float = 10.0) -> None:
        env = dict(os.environ, PYTHONPATH=str(REPO))
        with open(self.log_path, "ab") as log:
            self.proc = subprocess.Popen(
                [sys.executable, str(BENCH / "counting_serve.py"), str(self.state),
                 "--port", str(self.vreader.port), "--control", str(self.control)],
                stdin=subprocess.DEVNULL, stdout=log, stderr=subprocess.STDOUT, env=env,
                # Dies with us even if we are SIGKILLed: no stray card processes.
                preexec_fn=pcsc_stack._set_pdeathsig,
            )
        deadline = time.monotonic() + timeout
        while not pcsc_stack.wait_reader(self.reader, True, 0.25, fail=False):
            if self.proc.poll() is not None or time.monotonic() > deadline:
                raise BenchError(f"the virtual card did not appear in {self.reader!r}:\n"
                                 f"{self.log_path.read_text(errors='replace')[-2000:]}")
        sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        sock.connect(str(self.control))  # bound before serving starts, so it exists now
        self._sock, self._file = sock, sock.makefile("rwb")

    def call(self, **request: Any) -> dict[str, Any]:
        assert self._file is not None
        self._file.write(json.dumps(request).encode() + b"\n")
        self._file.flush()
        line = self._file.readline()
        if not line:
            raise BenchError("the card process closed its side channel")
        answer: dict[str, Any] = json.loads(line)
        if "error" in answer:
            raise BenchError(f"card side channel: {answer['error']}")
        return answer

    def take(self) -> tuple[list[str], float]:
        """The command APDUs since the last take (header, plus the GET DATA tag), and the
        seconds the card spent executing them."""
        answer = self.call(op="take")
        return list(answer["apdus"]), float(answer["card_seconds"])

    def restore(self, state: Path) -> None:
        self.call(op="restore", path=str(state))

    def summary(self) -> dict[str, Any]:
        return self.call(op="summary")

    def stop(self) -> None:
        if self._file is not None:
            with contextlib.suppress(OSError):
                self._file.close()
        if self._sock is not None:
            self._sock.close()
        if self.proc is not None and self.proc.poll() is None:
            self.proc.terminate()  # by PID: only the process we started
            try:
                self.proc.wait(5)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(5)


# ------------------------------------------------------------------------------------------
# card states and files the operations start from


@dataclass
class Fixtures:
    """State files the card is restored to, and the input files of the operations."""

    fresh: Path  # factory-fresh 5.4.3
    key9a: Path  # + a P-256 key in 9a
    cert9a: Path  # + a certificate for it
    pub9a: Path  # that key's public key (ykman's CSR command wants it as a file)
    cert: Path  # that certificate (PEM)
    ca_dir: Path  # pivtool lab CA for enroll
    issuer: Callable[[Path, Path], None]  # CSR file -> certificate file, for the desk


def make_fixtures(work: Path) -> Fixtures:
    from cryptography import x509
    from cryptography.hazmat.primitives import hashes, serialization
    from cryptography.hazmat.primitives.asymmetric import ec
    from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

    from pivtool.sim.consts import KeyType, Origin, PinPolicy, TouchPolicy
    from pivtool.sim.state import SlotKey, new_card_state, save_state
    from pivtool.sim.tlv import tlv

    states = work / "states"
    states.mkdir()
    now = datetime.datetime.now(datetime.timezone.utc)
    ca_key = ec.generate_private_key(ec.SECP256R1())
    ca_name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "Bench CA")])

    def issue(public_key: Any, subject: x509.Name) -> x509.Certificate:
        return (x509.CertificateBuilder().subject_name(subject).issuer_name(ca_name)
                .public_key(public_key).serial_number(x509.random_serial_number())
                .not_valid_before(now - datetime.timedelta(minutes=5))
                .not_valid_after(now + datetime.timedelta(days=30))
                .add_extension(x509.ExtendedKeyUsage([ExtendedKeyUsageOID.CLIENT_AUTH,
                                                      ExtendedKeyUsageOID.SMARTCARD_LOGON]),
                               critical=False)
                .sign(ca_key, hashes.SHA256()))

    def pem(cert: x509.Certificate) -> bytes:
        return cert.public_bytes(serialization.Encoding.PEM)

    state = new_card_state(firmware=FIRMWARE, serial=SERIAL)
    fresh = states / "fresh.json"
    save_state(state, fresh)

    key = ec.generate_private_key(ec.SECP256R1())
    state.keys[0x9A] = SlotKey(
        algorithm=KeyType.ECCP256,
        private_key_pem=key.private_bytes(serialization.Encoding.PEM,
                                          serialization.PrivateFormat.PKCS8,
                                          serialization.NoEncryption()).decode(),
        pin_policy=PinPolicy.ONCE, touch_policy=TouchPolicy.NEVER, origin=Origin.GENERATED,
    )
    key9a = states / "key9a.json"
    save_state(state, key9a)
    pub9a = work / "pub9a.pem"
    pub9a.write_bytes(key.public_key().public_bytes(
        serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo))

    cert = issue(key.public_key(), x509.Name.from_rfc4514_string(SUBJECT))
    cert_path = work / "cert9a.pem"
    cert_path.write_bytes(pem(cert))
    # A PIV certificate container: 70 certificate, 71 CertInfo (not compressed), FE LRC.
    der = cert.public_bytes(serialization.Encoding.DER)
    state.objects[0x5FC105] = tlv(0x70, der) + tlv(0x71, b"\x00") + tlv(0xFE)
    cert9a = states / "cert9a.json"
    save_state(state, cert9a)

    ca_dir = work / "lab-ca"
    _check_run([PIVTOOL, "ca", "init", str(ca_dir), "--subject", "CN=Bench Lab CA",
                "--crl-url", "http://ca.contoso.test/bench.crl"], "pivtool ca init")

    def issuer(csr_path: Path, out: Path) -> None:
        csr = x509.load_pem_x509_csr(csr_path.read_bytes())
        out.write_bytes(pem(issue(csr.public_key(), csr.subject)))

    return Fixtures(fresh, key9a, cert9a, pub9a, cert_path, ca_dir, issuer)


def _check_run(argv: list[str], what: str) -> None:
    proc = subprocess.run(argv, capture_output=True, text=True, stdin=subprocess.DEVNULL,
                          check=False)
    if proc.returncode != 0:
        raise BenchError(f"{what} failed ({proc.returncode}): {proc.stderr.strip()[-500:]}")


# ------------------------------------------------------------------------------------------
# operations


@dataclass
class Cmd:
    """One timed tool invocation. Secrets go in *env* where the tool takes them from there."""

    argv: list[str]
    env: dict[str, str] = field(default_factory=dict)


#: An untimed step between commands, run in the run's directory (e.g. the CA issuing a
#: certificate for the CSR the tool just wrote).
Hook = Callable[[Path], None]
Step = Cmd | Hook


@dataclass
class Op:
    name: str
    state: Path | None  # restored before every run; None: the operation needs no card
    runs: dict[str, list[Step]]  # tool -> steps
    #: Take the anchors' numbers from another operation (pivtool enroll vs ykman's desk).
    anchors_from: str | None = None
    note: str = ""


def operations(card: BenchCard, fx: Fixtures) -> list[Op]:
    def pt(*args: str, **env: str) -> Cmd:
        return Cmd([PIVTOOL, "--reader", card.substring, *args], env)

    def yk(*args: str) -> Cmd:
        return Cmd([YKMAN, "--reader", card.substring, *args])

    def ypt(*args: str) -> Cmd:
        return Cmd([YPT, "-r", card.reader, *args])

    def issue(run_dir: Path) -> None:
        fx.issuer(run_dir / "csr.pem", run_dir / "cert.pem")

    desk_pivtool: list[Step] = [
        pt("pin", "change", PIVTOOL_PIN=PIN, PIVTOOL_NEW_PIN=NEW_PIN),
        pt("puk", "change", PIVTOOL_PUK=PUK, PIVTOOL_NEW_PUK=NEW_PUK),
        pt("mgmt-key", "change", "--protect", "-a", "aes192",
           PIVTOOL_PIN=NEW_PIN, PIVTOOL_MGMT_KEY=MGMT),
        pt("keys", "generate", "9a", "-a", "eccp256", "-o", "pub.pem", PIVTOOL_PIN=NEW_PIN),
        pt("certs", "request", "9a", "--subject", SUBJECT, "--upn", UPN, "-o", "csr.pem",
           PIVTOOL_PIN=NEW_PIN),
        issue,
        pt("certs", "import", "9a", "cert.pem", PIVTOOL_PIN=NEW_PIN),
    ]
    desk_ykman: list[Step] = [
        yk("piv", "access", "change-pin", "-P", PIN, "-n", NEW_PIN),
        yk("piv", "access", "change-puk", "-p", PUK, "-n", NEW_PUK),
        yk("piv", "access", "change-management-key", "-m", MGMT, "-a", "aes192", "--protect",
           "-P", NEW_PIN, "-f"),
        yk("piv", "keys", "generate", "-P", NEW_PIN, "-a", "eccp256", "9a", "pub.pem"),
        yk("piv", "certificates", "request", "-P", NEW_PIN, "-s", SUBJECT, "9a", "pub.pem",
           "csr.pem"),
        issue,
        yk("piv", "certificates", "import", "-P", NEW_PIN, "9a", "cert.pem"),
    ]
    return [
        Op("cold start (--version)", None, {
            "pivtool": [Cmd([PIVTOOL, "--version"])],
            "ykman": [Cmd([YKMAN, "--version"])],
            "yubico-piv-tool": [Cmd([YPT, "--version"])],
        }),
        Op("info / status (key+cert in 9a)", fx.cert9a, {
            "pivtool": [pt("info")],
            "ykman": [yk("piv", "info")],
            "yubico-piv-tool": [ypt("-a", "status")],
        }),
        Op("PIN verify", fx.fresh, {
            "pivtool": [pt("pin", "verify", PIVTOOL_PIN=PIN)],
            "yubico-piv-tool": [ypt("-a", "verify-pin", "-P", PIN)],
        }, note="ykman has no PIN-verify command"),
        Op("generate P-256 (9a)", fx.fresh, {
            "pivtool": [pt("keys", "generate", "9a", "-a", "eccp256", "-o", "pub.pem",
                           PIVTOOL_MGMT_KEY=MGMT)],
            "ykman": [yk("piv", "keys", "generate", "-m", MGMT, "-a", "eccp256", "9a",
                         "pub.pem")],
            "yubico-piv-tool": [ypt(f"--key={MGMT}", "-a", "generate", "-s", "9a",
                                    "-A", "ECCP256", "-o", "pub.pem")],
        }),
        Op("generate RSA-2048 (9a)", fx.fresh, {
            "pivtool": [pt("keys", "generate", "9a", "-a", "rsa2048", "-o", "pub.pem",
                           PIVTOOL_MGMT_KEY=MGMT)],
            "ykman": [yk("piv", "keys", "generate", "-m", MGMT, "-a", "rsa2048", "9a",
                         "pub.pem")],
            "yubico-piv-tool": [ypt(f"--key={MGMT}", "-a", "generate", "-s", "9a",
                                    "-A", "RSA2048", "-o", "pub.pem")],
        }),
        Op("CSR (9a, P-256)", fx.key9a, {
            "pivtool": [pt("certs", "request", "9a", "--subject", SUBJECT, "--upn", UPN,
                           "-o", "csr.pem", PIVTOOL_PIN=PIN)],
            "ykman": [yk("piv", "certificates", "request", "-P", PIN, "-s", SUBJECT, "9a",
                         str(fx.pub9a), "csr.pem")],
        }, note="pivtool's CSR also carries the UPN SAN and the Entra EKUs (its profile "
                "needs a UPN); yubico-piv-tool 2.2.0's request fails with OpenSSL 3 before "
                "any APDU"),
        Op("certificate import (9a)", fx.key9a, {
            "pivtool": [pt("certs", "import", "9a", str(fx.cert), PIVTOOL_MGMT_KEY=MGMT)],
            "ykman": [yk("piv", "certificates", "import", "-m", MGMT, "9a", str(fx.cert))],
            "yubico-piv-tool": [ypt(f"--key={MGMT}", "-a", "import-certificate", "-s", "9a",
                                    "-i", str(fx.cert))],
        }),
        Op("certificate export (9a)", fx.cert9a, {
            "pivtool": [pt("certs", "export", "9a", "-o", "out.pem")],
            "ykman": [yk("piv", "certificates", "export", "9a", "out.pem")],
            "yubico-piv-tool": [ypt("-a", "read-certificate", "-s", "9a", "-o", "out.pem")],
        }),
        Op("desk sequence (6 commands)", fx.fresh, {
            "pivtool": desk_pivtool,
            "ykman": desk_ykman,
        }, note="PIN, PUK, PIN-protected AES-192 management key, generate, CSR, import; "
                "yubico-piv-tool cannot make the CSR"),
        Op("pivtool enroll (vs ykman desk)", fx.fresh, {
            "pivtool": [pt("enroll", "--upn", UPN, "--ca", str(fx.ca_dir),
                           PIVTOOL_PIN=PIN, PIVTOOL_PUK=PUK,
                           PIVTOOL_NEW_PIN=NEW_PIN, PIVTOOL_NEW_PUK=NEW_PUK)],
        }, anchors_from="desk sequence (6 commands)",
            note="enroll also issues the certificate (lab CA), writes a CHUID and test-signs"),
    ]


# ------------------------------------------------------------------------------------------
# measuring


@dataclass
class Sample:
    seconds: float  # wall time of the tool's process(es)
    apdus: list[str]
    card_seconds: float = 0.0  # of which inside VirtualCard.execute


@dataclass
class Results:
    samples: dict[tuple[str, str], list[Sample]] = field(default_factory=dict)
    failures: dict[tuple[str, str], str] = field(default_factory=dict)
    outcomes: dict[tuple[str, str], dict[str, Any]] = field(default_factory=dict)


#: Environment for every tool run, set up in main(): see bytecode_env().
TOOL_ENV: dict[str, str] = {}


def bytecode_env(work: Path) -> dict[str, str]:
    """Cached bytecode for both Python tools, as on a user's machine.

    A pip-installed ykman comes with .pyc files; pivtool here is an *editable* install whose
    bytecode would go to the source tree. Where PYTHONDONTWRITEBYTECODE is set (it is on
    this project's machines) pivtool would recompile ~30 modules on every run (~30 ms)
    while ykman would not. A private PYTHONPYCACHEPREFIX, filled by the warm-up round, gives
    both the same footing without writing into the repository."""
    return {"PYTHONPYCACHEPREFIX": str(work / "pycache"), "PYTHONDONTWRITEBYTECODE": ""}


def run_once(card: BenchCard, op: Op, tool: str, run_dir: Path) -> Sample:
    run_dir.mkdir(parents=True)
    if op.state is not None:
        card.restore(op.state)
        card.take()  # start the count at zero (pcscd sends no APDUs, but be sure)
    total = 0.0
    for step in op.runs[tool]:
        if not isinstance(step, Cmd):
            step(run_dir)
            continue
        # LC_ALL=C: the same (untranslated) code paths for every tool.
        env = dict(os.environ, LC_ALL="C", LANG="C", **TOOL_ENV, **step.env)
        if not env.get("PYTHONDONTWRITEBYTECODE"):
            env.pop("PYTHONDONTWRITEBYTECODE", None)  # an empty value would still count
        t0 = time.perf_counter()
        proc = subprocess.run(step.argv, cwd=run_dir, env=env, stdin=subprocess.DEVNULL,
                              capture_output=True, check=False)
        total += time.perf_counter() - t0
        if proc.returncode != 0:
            err = (proc.stderr or proc.stdout).decode(errors="replace").strip()
            raise BenchError(f"{Path(step.argv[0]).name} {' '.join(step.argv[1:4])}... exited "
                             f"{proc.returncode}: {err[-300:]}")
    if op.state is None:
        return Sample(total, [])
    apdus, busy = card.take()
    return Sample(total, apdus, busy)


def measure(card: BenchCard, ops: list[Op], rounds: int, work: Path,
            progress: Callable[[str], None]) -> Results:
    res = Results()
    for rnd in range(rounds + 1):  # round 0 warms caches (pyc, page cache) and is dropped
        progress(f"round {rnd}/{rounds}" + (" (warm-up)" if rnd == 0 else ""))
        for op in ops:
            tools = list(op.runs)
            # Rotate who goes first, so drift (thermal, page cache) does not favour a tool.
            tools = tools[rnd % len(tools):] + tools[:rnd % len(tools)]
            for tool in tools:
                key = (op.name, tool)
                if key in res.failures:
                    continue
                slug = re.sub(r"[^a-z0-9]+", "-", op.name.lower()).strip("-")
                try:
                    sample = run_once(card, op, tool, work / "runs" / f"{rnd}-{slug}-{tool}")
                except BenchError as e:
                    res.failures[key] = str(e)
                    continue
                if op.state is not None:
                    res.outcomes[key] = card.summary()
                if rnd > 0:
                    res.samples.setdefault(key, []).append(sample)
    return res


# ------------------------------------------------------------------------------------------
# emulator throughput


def _rate(fn: Callable[[], Any], min_seconds: float = 0.4) -> float:
    """Calls per second of *fn*, timed over at least *min_seconds*."""
    n, t0 = 0, time.perf_counter()
    while True:
        for _ in range(20):
            fn()
        n += 20
        elapsed = time.perf_counter() - t0
        if elapsed >= min_seconds:
            return n / elapsed


def throughput(stack: pcsc_stack.PcscStack, fx: Fixtures, work: Path) -> list[tuple[str, float]]:
    from pivtool import pcsc
    from pivtool.sim.card import VirtualCard
    from pivtool.sim.state import load_state

    select = bytes.fromhex("00A4040009A00000030800001000")
    get_version = bytes.fromhex("00FD0000")
    metadata_9a = bytes.fromhex("00F7009A")
    verify = bytes.fromhex("0020008008") + PIN.encode().ljust(8, b"\xff")
    digest = bytes(32)
    # GENERAL AUTHENTICATE, ECDSA P-256 with slot 9a: 7C { 82 (empty), 81 digest }
    sign = bytes.fromhex("0087119A26") + bytes.fromhex("7C2482008120") + digest + b"\x00"

    def ok(response: bytes) -> None:
        # Every timed command must succeed: an error answer is cheaper and would flatter us.
        if response[-2:] != b"\x90\x00":
            raise BenchError(f"throughput: the card answered {response[-2:].hex()}")

    def pcsc_ok(answer: tuple[bytes, int]) -> None:
        if answer[1] != 0x9000:
            raise BenchError(f"throughput via pcscd: the card answered {answer[1]:04X}")

    out: list[tuple[str, float]] = []
    card = VirtualCard(load_state(fx.key9a))
    ok(card.execute(select))
    out.append(("in-process VirtualCard.execute: GET VERSION", _rate(
        lambda: ok(card.execute(get_version)))))
    out.append(("in-process VirtualCard.execute: GET METADATA 9a", _rate(
        lambda: ok(card.execute(metadata_9a)))))
    ok(card.execute(verify))  # PIN policy "once": one VERIFY for all the signatures
    out.append(("in-process VirtualCard.execute: ECDSA P-256 sign", _rate(
        lambda: ok(card.execute(sign)))))

    # Through pcscd: the tests' own serve process (python -m pivtool.sim.vpcd) on a plain
    # vpcd reader, driven through pivtool.pcsc — the path every PC/SC test takes.
    with pcsc_stack.card_factory(stack, work) as make:
        vcard = make(firmware=FIRMWARE)
        conn = pcsc.open_reader(vcard.substring)
        try:
            pcsc_ok(conn.transmit(select))
            out.append(("through pcscd (pivtool.pcsc.open_reader): GET VERSION",
                        _rate(lambda: pcsc_ok(conn.transmit(get_version)), 1.0)))
        finally:
            conn.close()
    return out


# ------------------------------------------------------------------------------------------
# reporting


def _fmt_s(x: float | None) -> str:
    return "—" if x is None else f"{x:.3f}"


def _fmt_ms(x: float | None) -> str:
    return "—" if x is None else f"{x * 1000:.1f}"


def _apdu_count(samples: list[Sample]) -> str:
    counts = sorted({len(s.apdus) for s in samples})
    return str(counts[0]) if len(counts) == 1 else f"{counts[0]}–{counts[-1]}"


@dataclass
class Row:
    op: str
    times: dict[str, float | None]
    card: dict[str, float | None]
    apdus: dict[str, str]
    notes: list[str]


def build_rows(ops: list[Op], res: Results) -> list[Row]:
    rows = []
    for op in ops:
        times: dict[str, float | None] = {}
        card: dict[str, float | None] = {}
        apdus: dict[str, str] = {}
        notes = [op.note] if op.note else []
        for tool in TOOLS:
            src = op.anchors_from if (tool != "pivtool" and op.anchors_from) else op.name
            key = (src, tool)
            card[tool] = None
            if key in res.failures:
                times[tool], apdus[tool] = None, "FAILED"
                notes.append(f"{tool} failed: {res.failures[key]}")
            elif key in res.samples:
                samples = res.samples[key]
                times[tool] = statistics.median(s.seconds for s in samples)
                if op.state is not None:
                    card[tool] = statistics.median(s.card_seconds for s in samples)
                apdus[tool] = _apdu_count(samples) if op.state is not None else "0"
            else:
                times[tool], apdus[tool] = None, "—"
        notes += result_differences(op, res)
        rows.append(Row(op.name, times, card, apdus, notes))
    return rows


#: What "the same result" means across tools: the keys on the card, PIN/PUK changed or not,
#: the management key's algorithm. Data objects are left out on purpose: pivtool renews the
#: CHUID after a certificate change (Windows caches by it) and ykman does not.
RESULT_FIELDS = ("keys", "pin_default", "puk_default", "mgmt_key_type")


def result_differences(op: Op, res: Results) -> list[str]:
    if op.state is None:
        return []
    found: dict[str, dict[str, Any]] = {}
    for tool in TOOLS:
        src = op.anchors_from if (tool != "pivtool" and op.anchors_from) else op.name
        outcome = res.outcomes.get((src, tool))
        if outcome is not None:
            found[tool] = {k: outcome[k] for k in RESULT_FIELDS}
    if len({json.dumps(v, sort_keys=True) for v in found.values()}) <= 1:
        return []
    return ["card state differs between tools: " + "; ".join(
        f"{tool} {json.dumps(v, sort_keys=True)}" for tool, v in found.items())]


def _ratio(a: float | None, b: float | None) -> str:
    return "—" if a is None or b is None or b == 0 else f"{a / b:.2f}"


def table(rows: list[Row]) -> str:
    head = ("| operation | pivtool s | ykman s | pivtool/ykman | yubico-piv-tool s "
            "| pivtool/ypt | APDUs pivtool / ykman / ypt | in-card ms pivtool / ykman / ypt |")
    lines = [head, "|" + "---|" * 8]
    for r in rows:
        t = r.times
        lines.append(
            f"| {r.op} | {_fmt_s(t['pivtool'])} | {_fmt_s(t['ykman'])} "
            f"| {_ratio(t['pivtool'], t['ykman'])} | {_fmt_s(t['yubico-piv-tool'])} "
            f"| {_ratio(t['pivtool'], t['yubico-piv-tool'])} "
            f"| {r.apdus['pivtool']} / {r.apdus['ykman']} / {r.apdus['yubico-piv-tool']} "
            f"| {' / '.join(_fmt_ms(r.card[t]) for t in TOOLS)} |")
    return "\n".join(lines)


def targets(rows: list[Row]) -> list[str]:
    by = {r.op: r for r in rows}
    out = []

    def mark(ok: bool | None) -> str:
        return "n/a " if ok is None else ("met " if ok else "MISS")

    v = by["cold start (--version)"].times["pivtool"]
    out.append(f"{mark(None if v is None else v <= TARGET_VERSION_S)} pivtool --version "
               f"{_fmt_s(v)} s (target <= {TARGET_VERSION_S:.2f} s)")
    info = by["info / status (key+cert in 9a)"]
    p, y = info.times["pivtool"], info.times["ykman"]
    ratio = None if p is None or not y else p / y
    out.append(f"{mark(None if ratio is None else ratio <= TARGET_INFO_RATIO)} pivtool info / "
               f"ykman piv info = {_ratio(p, y)} (target <= {TARGET_INFO_RATIO})")
    n = info.apdus["pivtool"]
    ok = int(n.split("–")[-1]) <= TARGET_INFO_APDUS if n[0].isdigit() else None
    out.append(f"{mark(ok)} pivtool info: {n} command APDUs (target <= {TARGET_INFO_APDUS})")
    for r in rows:
        a, b = r.apdus["pivtool"], r.apdus["ykman"]
        if a[0].isdigit() and b[0].isdigit() and r.op != "cold start (--version)":
            more = int(a.split("–")[-1]) > int(b.split("–")[0])
            out.append(f"{mark(not more)} {r.op}: pivtool {a} APDUs vs ykman {b}")
    return out


def apdu_breakdown(res: Results, op: str, tool: str) -> str:
    samples = res.samples.get((op, tool))
    if not samples:
        return f"{tool}: no samples"
    c = Counter(samples[-1].apdus)
    return f"{tool} ({len(samples[-1].apdus)}): " + ", ".join(
        f"{k} x{v}" if v > 1 else k for k, v in c.items())


def machine() -> str:
    cpu = "?"
    with contextlib.suppress(OSError):
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break

    def version(argv: list[str]) -> str:
        try:
            out = subprocess.run(argv, capture_output=True, text=True, check=False).stdout
        except OSError:
            return "?"
        return out.strip().splitlines()[0] if out.strip() else "?"

    load = ", ".join(f"{x:.1f}" for x in os.getloadavg())
    # The load average matters: on a busy machine both tools slow down, not always alike.
    return (f"{os.cpu_count()} CPUs (nproc {len(os.sched_getaffinity(0))}), {cpu}; "
            f"load average at the end {load}; "
            f"Python {platform.python_version()}; {platform.platform()}; "
            f"{version([YKMAN, '--version'])}; {version([YPT, '--version'])}")


def report(rows: list[Row], res: Results, tput: list[tuple[str, float]], rounds: int,
           elapsed: float, detail_ops: list[str]) -> str:
    details = []
    for op in detail_ops:
        details += ["", f"Command APDUs of '{op}' (CLA INS P1 P2 [GET DATA tag]):"]
        details += [f"- {apdu_breakdown(res, op, t)}" for t in TOOLS
                    if (op, t) in res.samples]
    parts = [
        f"Virtual YubiKey {'.'.join(map(str, FIRMWARE))} behind pcscd/vpcd, reader named like "
        f"a YubiKey's USB interface (extended APDUs for all tools). Median of {rounds} "
        "rounds after one warm-up; tools alternate, the first one rotating. Wall time of the "
        "whole process, including interpreter start.",
        "",
        table(rows),
        "",
        "Notes:",
        *[f"- {r.op}: {n}" for r in rows for n in r.notes],
        "",
        "Targets (measured, not asserted):",
        *[f"- {t}" for t in targets(rows)],
        "",
        *details,
        "",
        "Emulator throughput:",
        *[f"- {name}: {rate:,.0f} APDU/s ({1e6 / rate:,.0f} µs each)" for name, rate in tput],
        "",
        f"Machine: {machine()}",
        f"Bench wall time: {elapsed:.0f} s "
        f"({datetime.datetime.now().astimezone().strftime('%Y-%m-%d %H:%M %Z')})",
    ]
    return "\n".join(parts)


def update_doc(text: str) -> None:
    doc = DOC.read_text()
    start, end = doc.find(DOC_BEGIN), doc.find(DOC_END)
    if start < 0 or end < start:
        raise BenchError(f"{DOC} lacks the markers {DOC_BEGIN!r} ... {DOC_END!r}")
    DOC.write_text(doc[:start + len(DOC_BEGIN)] + "\n" + text + "\n" + doc[end:])


# ------------------------------------------------------------------------------------------


@contextlib.contextmanager
def pcsc(work: Path) -> Iterator[pcsc_stack.PcscStack]:
    """Our pcscd (the tests' stack); fails clearly if a pcscd we did not start is running."""
    try:
        stack = pcsc_stack.start_stack()
    except pytest.fail.Exception as e:
        raise BenchError(str(e.msg)) from None
    try:
        yield stack
    finally:
        pcsc_stack.stop_stack(stack)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--rounds", type=int, default=7, help="measured rounds (default 7)")
    parser.add_argument("--update-doc", action="store_true",
                        help=f"write the report into {DOC.relative_to(REPO)}")
    parser.add_argument("--keep", action="store_true", help="keep the work directory")
    parser.add_argument("--as-is-bytecode", action="store_true",
                        help="do not give the tools a private bytecode cache (measure with "
                             "the environment's PYTHONDONTWRITEBYTECODE/pycache as they are)")
    parser.add_argument("--apdus", action="store_true",
                        help="list every operation's command APDUs per tool")
    args = parser.parse_args(argv)
    for tool in (PIVTOOL, YKMAN, YPT):
        if not shutil.which(tool):
            print(f"bench: {tool} not found (run scripts/dev setup)", file=sys.stderr)
            return 2

    def progress(msg: str) -> None:
        print(f"[bench] {msg}", file=sys.stderr, flush=True)

    t0 = time.monotonic()
    work = Path(tempfile.mkdtemp(prefix="pivtool-bench-"))
    if not args.as_is_bytecode:
        TOOL_ENV.update(bytecode_env(work))
    card: BenchCard | None = None
    # SIGTERM → KeyboardInterrupt-like unwind, so the finally blocks stop pcscd and the card.
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(143))
    try:
        fx = make_fixtures(work)
        with pcsc(work) as stack:
            card = BenchCard(stack.acquire_reader(yubico=True), fx.fresh, work)
            card.start()
            progress(f"pcscd PID {stack.pid}, card PID {card.proc.pid if card.proc else '?'} "
                     f"in {card.reader!r}")
            ops = operations(card, fx)
            res = measure(card, ops, args.rounds, work, progress)
            card.stop()
            progress("emulator throughput")
            tput = throughput(stack, fx, work)
        rows = build_rows(ops, res)
        text = report(rows, res, tput, args.rounds, time.monotonic() - t0,
                      [op.name for op in ops if op.state is not None] if args.apdus
                      else ["info / status (key+cert in 9a)"])
        print(text)
        if args.update_doc:
            update_doc(text)
            progress(f"wrote {DOC.relative_to(REPO)}")
        return 1 if res.failures else 0
    except BenchError as e:
        print(f"bench: {e}", file=sys.stderr)
        return 1
    finally:
        if card is not None:
            card.stop()
        if args.keep:
            progress(f"work directory kept: {work}")
        else:
            shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    sys.exit(main())
