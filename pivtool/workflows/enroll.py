"""Entra CBA enrollment: from a key to a working smart-card-logon credential.

The steps, each reported through a callback as it completes: read the card, guard existing
credentials, set PIN/PUK, replace a default management key with a random PIN-protected one,
generate the key(s) on the card, build the CSR on the card, get it issued, check the issued
certificate, import it, refresh CHUID/CCC, and prove the credential by signing a challenge.
"""

from __future__ import annotations

import json
import os
import secrets
import shlex
import subprocess
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any, Protocol

from ..core.childenv import child_env
from ..core.errors import (
    NotFoundError,
    PivToolError,
    StepFailedError,
    UsageError,
)
from ..core.fileio import create_new
from ..piv.constants import (
    DEFAULT_PIN,
    DEFAULT_PUK,
    KeyType,
    MgmtKeyType,
    ObjectId,
    PinPolicy,
    Slot,
    TouchPolicy,
)
from ..piv.objects import Chuid, build_ccc, encode_certificate_object
from ..piv.session import PivSession, pin_bytes
from ..piv.version import check_key_support, supported_mgmt_key_types
from .auth import OverridePrompter, Prompter, authenticate, change_mgmt_key, verify_pin
from .state import CardSnapshot, read_card_state

if TYPE_CHECKING:  # --- escrow (enroll --escrow) ---
    from .escrow import EscrowFile

#: Algorithms iOS (CryptoTokenKit via Yubico Authenticator) can use for signing.
IOS_ALGORITHMS = frozenset({KeyType.RSA1024, KeyType.RSA2048, KeyType.ECCP256,
                            KeyType.ECCP384})
#: The YubiKey 5 object size limit; larger certificates are stored gzip-compressed.
MAX_OBJECT = 3052


#: A key's attestation as enroll hands it to the issuer: (attestation certificate PEM,
#: the card's f9 certificate PEM).
Attestation = tuple[bytes, bytes]


class Issuer(Protocol):
    """Turns a CSR (PEM) into a certificate (PEM). ``None`` issuer = two-step mode."""

    description: str

    def issue(self, csr_pem: bytes, attestation: Attestation | None = None) -> bytes:
        """Return the issued certificate as PEM (or DER). *attestation*: the key's, when
        the card can attest it (YubiKey), for an issuer that requires one."""
        ...

    def ca_certificates(self) -> list[Any]:
        """CA certificates to check the chain against (may be empty)."""
        ...


@dataclass
class LabCAIssuer:
    """Issue with pivtool's lab CA in a directory."""

    directory: str
    passphrase: bytes | None = field(default=None, repr=False)
    days: int = 365
    description: str = "lab CA"

    def issue(self, csr_pem: bytes, attestation: Attestation | None = None) -> bytes:
        """Issue with the smart-card-logon profile (the attestation is checked when the CA
        requires one: ``ca init --require-attestation``)."""
        from cryptography import x509
        from cryptography.hazmat.primitives.serialization import Encoding

        from ..certs.ca import LabCA

        ca = LabCA.open(self.directory, self.passphrase)
        evidence = None
        if attestation is not None:
            evidence = (x509.load_pem_x509_certificate(attestation[0]),
                        x509.load_pem_x509_certificates(attestation[1]))
        return ca.issue(csr_pem, days=self.days, attestation=evidence).public_bytes(
            Encoding.PEM)

    def ca_certificates(self) -> list[Any]:
        """The lab CA's root."""
        from ..certs.ca import LabCA

        return [LabCA.open(self.directory, self.passphrase).certificate]


def run_hook(command: str, stdin: bytes, timeout: float, what: str,
             extra_env: dict[str, str] | None = None) -> bytes:
    """Run an operator's hook command (``--issuer-cmd``, ``--revoke-cmd``): split like a
    shell but run without one, *stdin* in, stdout back; a non-zero exit, a timeout or a
    missing program is an error naming *what*."""
    argv = shlex.split(command)
    if not argv:
        raise UsageError(f"empty {what}")
    try:
        # The child never sees pivtool's secrets (PIVTOOL_PIN, ..._MGMT_KEY...).
        proc = subprocess.run(argv, input=stdin, capture_output=True,
                              timeout=timeout, check=False, env=child_env(extra_env))
    except FileNotFoundError:
        raise UsageError(f"{what} not found: {argv[0]}") from None
    except subprocess.TimeoutExpired:
        raise PivToolError(f"{what} timed out after {timeout:g} s") from None
    if proc.returncode != 0:
        err = proc.stderr.decode("utf-8", "replace").strip().splitlines()
        last = err[-1] if err else "no error output"
        raise PivToolError(f"{what} exited with {proc.returncode}: {last}")
    return proc.stdout


@dataclass
class CommandIssuer:
    """Run an external command: CSR PEM on stdin, certificate PEM on stdout. Run without a
    shell (wrap it in ``sh -c '...'`` if you need one)."""

    command: str
    timeout: float = 120.0
    bundle: list[Any] = field(default_factory=list)
    description: str = "issuer command"

    def issue(self, csr_pem: bytes, attestation: Attestation | None = None) -> bytes:
        """Run the command and return its stdout. With *attestation*, the command finds the
        key's attestation certificate and the card's f9 certificate in the PEM files named
        by ``PIVTOOL_ATTESTATION`` and ``PIVTOOL_ATTESTATION_INTERMEDIATE``."""
        import tempfile

        with tempfile.TemporaryDirectory(prefix="pivtool-attest-") as tmp:
            extra = {}
            if attestation is not None:
                for name, data in zip(("PIVTOOL_ATTESTATION",
                                       "PIVTOOL_ATTESTATION_INTERMEDIATE"), attestation,
                                      strict=True):
                    path = Path(tmp) / f"{name.lower()}.pem"
                    create_new(path, data, 0o644)
                    extra[name] = str(path)
            out = run_hook(self.command, csr_pem, self.timeout, "issuer command", extra)
        if not out.strip():
            raise PivToolError("issuer command printed no certificate")
        return out

    def ca_certificates(self) -> list[Any]:
        """The CA bundle given with the command, if any."""
        return self.bundle


@dataclass
class EnrollOptions:
    """What to enroll. Secrets are not here: they come from the Prompter."""

    upn: str
    emails: list[str] = field(default_factory=list)
    subject: str | None = None
    algorithm: KeyType = KeyType.ECCP256
    pin_policy: PinPolicy = PinPolicy.DEFAULT
    touch_policy: TouchPolicy = TouchPolicy.DEFAULT
    macos: bool = False
    policies: list[str] = field(default_factory=list)
    force: bool = False
    random_pin: bool = False
    random_puk: bool = False
    secrets_out: str | None = None
    backup_dir: str | None = None
    allow_non_ios: bool = False
    csr_out: str | None = None
    retry_force: bool = False


@dataclass
class Step:
    """One reported step."""

    name: str
    status: str  # "done", "skipped", "pending", "failed"
    detail: str = ""

    def to_json(self) -> dict[str, str]:
        """JSON form."""
        return {"step": self.name, "status": self.status, "detail": self.detail}


@dataclass
class EnrollResult:
    """The outcome (no secrets)."""

    serial: int | None
    upn: str
    steps: list[Step] = field(default_factory=list)
    status: str = "enrolled"  # or "pending-certificate"
    certificate: Any = None
    certificate_user_ids: list[dict[str, str]] = field(default_factory=list)
    csr_file: str | None = None
    secrets_file: str | None = None
    backup: list[str] = field(default_factory=list)

    def to_json(self) -> dict[str, Any]:
        """Stable JSON (schema ``pivtool.enroll/1``)."""
        from ..certs.inspect import summarize

        return {
            "schema": "pivtool.enroll/1",
            "status": self.status,
            "serial": self.serial,
            "upn": self.upn,
            "steps": [s.to_json() for s in self.steps],
            "certificate": summarize(self.certificate).to_json() if self.certificate else None,
            "certificate_user_ids": self.certificate_user_ids,
            "csr_file": self.csr_file,
            "secrets_file": self.secrets_file,
            "backup": self.backup,
        }


def validate_options(opts: EnrollOptions, session: PivSession | None = None) -> None:
    """Everything that can be checked before the card is touched."""
    from ..certs.profile import CertRequest

    CertRequest.create(subject=opts.subject, upns=[opts.upn], emails=opts.emails,
                       policies=opts.policies)
    if opts.algorithm not in IOS_ALGORITHMS and not opts.allow_non_ios:
        raise UsageError(f"{opts.algorithm.label} cannot be used by iOS (CryptoTokenKit takes "
                         "RSA 1024/2048 and ECC P-256/P-384 only); use --allow-non-ios to "
                         "enroll it anyway")
    if opts.algorithm is KeyType.X25519:
        raise UsageError("x25519 keys cannot sign: no certificate request is possible")
    if (opts.random_pin or opts.random_puk) and not opts.secrets_out:
        raise UsageError("--random-pin/--random-puk need --secrets-out FILE (written 0600)")
    if opts.secrets_out and os.path.exists(opts.secrets_out):
        raise UsageError(f"{opts.secrets_out} exists; refusing to overwrite it")
    if opts.csr_out and os.path.exists(opts.csr_out) and not opts.force:
        raise UsageError(f"{opts.csr_out} exists; use --force to overwrite it")
    # Where the files go must be writable before the card changes: a secrets file that
    # cannot be written stops enroll with the PIN unchanged, a CSR that cannot be written
    # would come after the slot's key was replaced.
    for out in (opts.secrets_out, opts.csr_out):
        if out:
            _check_writable(out)
    if session is not None:
        check_key_support(session.version, opts.algorithm, opts.pin_policy, opts.touch_policy)


def _random_digits(n: int) -> bytes:
    # Digits only: macOS refuses non-numeric PINs, and iOS shows a numeric keypad.
    return "".join(secrets.choice("0123456789") for _ in range(n)).encode()


def _check_writable(path: str) -> None:
    """A usage error unless *path* can be created (or replaced) as a regular file."""
    if os.path.isdir(path):
        raise UsageError(f"{path} is a directory")
    parent = os.path.dirname(path) or "."
    if not os.path.isdir(parent):
        raise UsageError(f"cannot write {path}: directory {parent} does not exist")
    if not os.access(parent, os.W_OK | os.X_OK):
        raise UsageError(f"cannot write {path}: directory {parent} is not writable")


def _write_secrets(path: str, data: dict[str, Any]) -> None:
    try:
        create_new(path, (json.dumps(data, indent=2) + "\n").encode())
    except FileExistsError:
        raise UsageError(f"{path} exists; refusing to overwrite it") from None
    except OSError as e:
        raise UsageError(f"cannot create {path}: {e.strerror or e}") from None


class Enroller:
    """Runs the enrollment steps on one card. ``on_step`` sees each step as it ends."""

    def __init__(self, session: PivSession, prompter: Prompter, opts: EnrollOptions,
                 issuer: Issuer | None, on_step: Callable[[Step], None] | None = None,
                 escrow: EscrowFile | None = None) -> None:
        self.s = session
        self.p = prompter
        self.o = opts
        self.issuer = issuer
        self.on_step = on_step or (lambda step: None)
        self.result = EnrollResult(serial=None, upn=opts.upn)
        self.slots = [Slot.AUTHENTICATION] + ([Slot.KEY_MANAGEMENT] if opts.macos else [])
        # --- escrow: what enroll learns on the way, written by the "escrow" step ---
        self.escrow = escrow
        self._escrow_puk: bytes | None = None
        self._escrow_mgmt: tuple[bytes, str] | None = None

    def _step(self, name: str, fn: Callable[[], str | tuple[str, str]]) -> None:
        try:
            out = fn()
        except PivToolError as e:
            if isinstance(e, StepFailedError):
                raise
            self.result.steps.append(Step(name, "failed", str(e)))
            raise StepFailedError(name, e) from e
        except Exception as e:
            from ..certs.errors import CertError

            if not isinstance(e, CertError):
                raise
            self.result.steps.append(Step(name, "failed", str(e)))
            raise StepFailedError(name, e) from e
        status, detail = out if isinstance(out, tuple) else ("done", out)
        step = Step(name, status, detail)
        self.result.steps.append(step)
        self.on_step(step)

    # --- the steps --------------------------------------------------------------------

    def run(self) -> EnrollResult:
        """Run every step; raises :class:`StepFailedError` naming the failing step."""
        validate_options(self.o, self.s)
        state: list[CardSnapshot] = []
        self._step("read card", lambda: self._read(state))
        self._step("check slots", lambda: self._guard(state[0]))
        self._step("PIN and PUK", lambda: self._pin_puk(state[0]))
        self._step("management key", lambda: self._mgmt(state[0]))
        if self.escrow is not None:
            self._step("escrow", lambda: self._escrow(state[0]))
        keys: dict[Slot, Any] = {}
        self._step("generate key", lambda: self._generate(keys))
        csrs: dict[Slot, bytes] = {}
        self._step("certificate request", lambda: self._csr(keys, csrs))
        if self.issuer is None:
            self.result.status = "pending-certificate"
            self.result.csr_file = self.o.csr_out
            return self.result
        certs: dict[Slot, Any] = {}
        self._step("issue certificate", lambda: self._issue(csrs, certs))
        self._step("check certificate", lambda: self._check(keys, certs))
        self._step("import certificate", lambda: self._import(certs))
        self._step("CHUID and CCC", lambda: self._chuid_ccc(state[0]))
        self._step("prove key", lambda: self._prove(certs))
        from ..certs.entra import certificate_user_ids

        cert = certs[Slot.AUTHENTICATION]
        self.result.certificate = cert
        self.result.certificate_user_ids = [i.to_json() for i in certificate_user_ids(cert)]
        return self.result

    def _read(self, out: list[CardSnapshot]) -> str:
        st = read_card_state(self.s)
        out.append(st)
        self.result.serial = st.serial
        kind = f"YubiKey {st.version}" if st.is_yubikey else "PIV card"
        serial = f" serial {st.serial}" if st.serial is not None else ""
        return f"{kind}{serial}; PIN {st.pin.tries_left} tries left"

    def _guard(self, st: CardSnapshot) -> str:
        occupied = []
        for slot in self.slots:
            ss = st.slot(slot)
            if ss is not None and (ss.key_algorithm or ss.certificate is not None):
                occupied.append(ss)
        if not occupied:
            return ", ".join(s.label for s in self.slots) + " empty"
        names = ", ".join(s.slot.label for s in occupied)
        if not self.o.force:
            if all(ss.certificate is None for ss in occupied):
                # What a pulled card leaves after "generate key": say so, the fix is the same.
                raise UsageError(f"slot {names} already holds a key but no certificate (an "
                                 "interrupted enroll leaves this); use --force to replace it")
            raise UsageError(f"slot {names} already holds a key or certificate; use --force "
                             "to replace it (the old certificate is backed up first)")
        from .reset import backup_certificates, default_backup_dir

        directory = Path(self.o.backup_dir) if self.o.backup_dir else \
            default_backup_dir(st.serial)
        sub = CardSnapshot(**{**st.__dict__, "slots": occupied})
        saved = backup_certificates(sub, directory)
        self.result.backup = [str(p) for p in saved]
        return f"replacing {names}" + (f"; old certificates saved in {directory}"
                                       if saved else "")

    def _pin_puk(self, st: CardSnapshot) -> str:
        pin_default = st.pin.is_default
        puk_default = st.puk.is_default
        if pin_default is None:  # no metadata: find out without spending a try
            pin_default = False
        notes = []
        new_values: dict[str, str] = {}
        if pin_default:
            new_pin = _random_digits(8) if self.o.random_pin else self.p.secret("new_pin")
            pin_bytes(new_pin, "new PIN")
            if new_pin == DEFAULT_PIN:
                raise UsageError("the new PIN must not be the factory default")
            if self.o.random_pin:
                new_values["pin"] = new_pin.decode()
        else:
            new_pin = None
        if puk_default:
            new_puk = _random_digits(8) if self.o.random_puk else self.p.secret("new_puk")
            pin_bytes(new_puk, "new PUK")
            if new_puk == DEFAULT_PUK:
                raise UsageError("the new PUK must not be the factory default")
            if self.o.random_puk:
                new_values["puk"] = new_puk.decode()
        else:
            new_puk = None
        if new_values:
            # Written before the card changes, so a pulled card never leaves a PIN nobody
            # knows.
            assert self.o.secrets_out is not None
            _write_secrets(self.o.secrets_out, {"serial": st.serial, "upn": self.o.upn,
                                                **new_values})
            self.result.secrets_file = self.o.secrets_out
            notes.append(f"random values written to {self.o.secrets_out} (0600)")
        resumed = False
        if new_pin is not None:
            self.s.change_pin(DEFAULT_PIN, new_pin)
            self.pin = new_pin
            notes.insert(0, "PIN set")
        else:
            self.pin, resumed = self._current_pin(st)
            notes.insert(0, "PIN kept (the new PIN given was already set by an interrupted "
                            "enroll)" if resumed else "PIN kept")
        if not resumed:  # the resumed PIN has just been verified
            verify_pin(self.s, self.pin, self.o.retry_force)
        if new_puk is not None:
            self.s.change_puk(DEFAULT_PUK, new_puk)
            self._escrow_puk = new_puk  # escrow
            notes.insert(1, "PUK set")
        elif puk_default is None:
            notes.insert(1, "PUK unchanged (the card cannot tell whether it is the default)")
        else:
            notes.insert(1, "PUK kept")
        return "; ".join(notes)

    def _current_pin(self, st: CardSnapshot) -> tuple[bytes, bool]:
        """``(PIN, resumed)``: the PIN the user gave; or, when enroll is re-run after it set
        the new PIN and the card was pulled before it finished (the PIN is no longer the
        default, only the new PIN was given), the new PIN, verified here (*resumed*). It is
        tried only while the counter is full, so a wrong guess costs one try and can never
        block the PIN."""
        from ..core.errors import InvalidPinError

        try:
            return self.p.secret("pin"), False
        except UsageError as missing:
            try:
                candidate = self.p.secret("new_pin")
            except UsageError:
                raise missing from None
            left = st.pin.tries_left
            full = left is not None and left > 1 and left == st.pin.tries_total
            if not full or candidate == DEFAULT_PIN:
                raise missing from None
            pin_bytes(candidate, "new PIN")
            try:
                self.s.verify_pin(candidate)
            except InvalidPinError as e:
                raise InvalidPinError(e.sw, e.tries_left, "PIN (the card's PIN is neither the "
                                      "default nor the new PIN given: set PIVTOOL_PIN to it)"
                                      ) from None
            return candidate, True

    def _mgmt(self, st: CardSnapshot) -> str:
        pin = self.pin
        auth = authenticate(self.s, OverridePrompter(self.p, {"pin": pin}),
                            self.o.retry_force)
        if auth.source != "default":
            if auth.source == "given":  # escrow: a key not stored on the card
                self._escrow_mgmt = (auth.key, self.s.mgmt_key_type.label)
            return f"kept ({auth.source})"
        kt = MgmtKeyType.AES192 if MgmtKeyType.AES192 in supported_mgmt_key_types(
            self.s.version) else MgmtKeyType.TDES
        if not self.s.is_yubikey:
            return "factory default kept: a generic PIV card's key can only be changed by " \
                   "its issuer"
        change_mgmt_key(self.s, auth, secrets.token_bytes(kt.key_len), kt, protect=True,
                        touch=False, pin=lambda: pin, force=self.o.retry_force)
        return f"random {kt.label} key stored PIN-protected (ykman-compatible)"

    # --- escrow (enroll --escrow FILE) -------------------------------------------------

    def _escrow(self, st: CardSnapshot) -> str:
        """Write the PUK, and a management key the card does not keep PIN-protected, to the
        escrow file. A PUK enroll did not set is checked first (CHANGE REFERENCE to itself,
        under the retry guard), so the escrow never holds a wrong PUK."""
        from .auth import check_puk

        assert self.escrow is not None
        if st.serial is None:
            raise UsageError("the card reports no serial number to file the escrow under")
        puk = self._escrow_puk
        if puk is None:
            puk = self.p.secret("puk")
            pin_bytes(puk, "PUK")
            check_puk(self.s, self.o.retry_force)
            self.s.change_puk(puk, puk)
        key, alg = self._escrow_mgmt or (None, None)
        self.escrow.put(st.serial, self.o.upn, puk=puk, mgmt_key=key, mgmt_key_algorithm=alg)
        what = "PUK and management key" if key is not None else "PUK"
        return f"{what} for serial {st.serial} written to {self.escrow.path} (encrypted)"

    def _generate(self, keys: dict[Slot, Any]) -> str:
        out = []
        for slot in self.slots:
            pub = self.s.generate_key(slot, self.o.algorithm, self.o.pin_policy,
                                      self.o.touch_policy)
            keys[slot] = pub
            out.append(f"{self.o.algorithm.label} in {slot.label}")
        return ", ".join(out)

    def _csr(self, keys: dict[Slot, Any], csrs: dict[Slot, bytes]) -> str | tuple[str, str]:
        from cryptography.hazmat.primitives.serialization import Encoding

        from ..certs.csr import build_csr
        from ..certs.profile import CertRequest

        req = CertRequest.create(subject=self.o.subject, upns=[self.o.upn],
                                 emails=self.o.emails, policies=self.o.policies)
        for slot in self.slots:
            # PIN policy "always" consumes the verification: verify right before each use.
            if self.o.pin_policy in (PinPolicy.ALWAYS,):
                verify_pin(self.s, self.pin, self.o.retry_force)
            key = self.s.private_key(slot, keys[slot])
            csrs[slot] = build_csr(key, req).public_bytes(Encoding.PEM)  # type: ignore[arg-type]
        if self.issuer is None:
            assert self.o.csr_out is not None
            path = Path(self.o.csr_out)
            try:
                path.write_bytes(b"".join(csrs[s] for s in self.slots))
            except OSError as e:
                raise PivToolError(f"cannot write the CSR to {path}: {e.strerror or e}; "
                                   "run enroll again with --force and another "
                                   "--csr-out") from None
            return ("pending", f"CSR written to {path}; import the issued certificate with "
                               "'pivtool certs import 9a CERT'")
        return f"signed on the card for {self.o.upn}"

    def _issue(self, csrs: dict[Slot, bytes], certs: dict[Slot, Any]) -> str:
        from ..certs.inspect import load_certificate

        assert self.issuer is not None
        for slot in self.slots:
            certs[slot] = load_certificate(self.issuer.issue(csrs[slot],
                                                             self._attestation(slot)))
        cert = certs[Slot.AUTHENTICATION]
        return f"by {self.issuer.description}: serial {cert.serial_number:x}"

    def _attestation(self, slot: Slot) -> Attestation | None:
        """The key's attestation and the card's f9 certificate (PEM), for an issuer that
        wants them; None where the card cannot attest (a generic card, an old YubiKey)."""
        from cryptography.hazmat.primitives.serialization import Encoding

        from ..core.errors import TransportError

        if self.s.version is None:
            return None
        try:
            att = self.s.attest_key(slot)
            f9 = self.s.get_certificate(Slot.ATTESTATION)
        except TransportError:
            raise  # a pulled card is not "no attestation"
        except PivToolError:  # refused, unsupported firmware, no or unreadable f9
            return None
        return att.public_bytes(Encoding.PEM), f9.public_bytes(Encoding.PEM)

    def _check(self, keys: dict[Slot, Any], certs: dict[Slot, Any]) -> str:
        from ..certs.check import check_entra_certificate
        from ..certs.errors import CertMismatchError
        from ..certs.inspect import public_key_matches

        assert self.issuer is not None
        bundle = self.issuer.ca_certificates() or None
        warnings = []
        for slot in self.slots:
            cert = certs[slot]
            if not public_key_matches(cert, keys[slot]):
                raise CertMismatchError(f"the issued certificate for {slot.label} is for "
                                        "another key")
            findings = check_entra_certificate(cert, expected_upn=self.o.upn, ca_bundle=bundle)
            fails = [f for f in findings if f.status == "fail"]
            if fails:
                raise CertMismatchError(f"the issued certificate fails {fails[0].id}: "
                                        f"{fails[0].message}")
            warnings += [f.id for f in findings if f.status == "warn"]
        chain = "chains to the CA" if bundle else "chain not checked (no CA certificate)"
        return f"key matches, UPN, EKU ok, {chain}" + (
            f"; warnings: {', '.join(sorted(set(warnings)))}" if warnings else "")

    def _import(self, certs: dict[Slot, Any]) -> str:
        from cryptography.hazmat.primitives.serialization import Encoding

        out = []
        for slot in self.slots:
            der = certs[slot].public_bytes(Encoding.DER)
            compress = len(encode_certificate_object(der)) + 8 > MAX_OBJECT
            self.s.put_certificate(slot, der, compress=compress)
            out.append(slot.label + (" (compressed)" if compress else ""))
        return "stored in " + ", ".join(out)

    def _chuid_ccc(self, st: CardSnapshot) -> str:
        chuid = Chuid.generate()
        self.s.put_data(ObjectId.CHUID, chuid.encode())
        wrote_ccc = False
        try:
            self.s.get_data(ObjectId.CAPABILITY)
        except NotFoundError:
            self.s.put_data(ObjectId.CAPABILITY, build_ccc())
            wrote_ccc = True
        return f"new CHUID GUID {chuid.guid_hex}" + ("; CCC written" if wrote_ccc else "")

    def _prove(self, certs: dict[Slot, Any]) -> str:
        from cryptography.hazmat.primitives import hashes
        from cryptography.hazmat.primitives.asymmetric import ec, ed25519, padding, rsa

        challenge = secrets.token_bytes(32)
        slot = Slot.AUTHENTICATION
        verify_pin(self.s, self.pin, self.o.retry_force)
        cert = certs[slot]
        pub = cert.public_key()
        key = self.s.private_key(slot, pub)
        if isinstance(key, ec.EllipticCurvePrivateKey):
            sig = key.sign(challenge, ec.ECDSA(hashes.SHA256()))
            assert isinstance(pub, ec.EllipticCurvePublicKey)
            pub.verify(sig, challenge, ec.ECDSA(hashes.SHA256()))
        elif isinstance(key, rsa.RSAPrivateKey):
            sig = key.sign(challenge, padding.PKCS1v15(), hashes.SHA256())
            assert isinstance(pub, rsa.RSAPublicKey)
            pub.verify(sig, challenge, padding.PKCS1v15(), hashes.SHA256())
        elif isinstance(key, ed25519.Ed25519PrivateKey):
            sig = key.sign(challenge)
            assert isinstance(pub, ed25519.Ed25519PublicKey)
            pub.verify(sig, challenge)
        else:
            raise UsageError("this key type cannot sign")
        return "PIN verified; a random challenge signed on the card verifies with the " \
               "certificate"
