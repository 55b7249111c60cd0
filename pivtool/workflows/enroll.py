"""Entra CBA enrollment: from a key to a working smart-card-logon credential.

The steps, each reported through a callback as it completes: read the card, guard existing
credentials, set PIN/PUK, replace a default management key with a random PIN-protected one,
generate the key(s) on the card, build the CSR on the card, get it issued, check the issued
certificate, import it, refresh CHUID/CCC, and prove the credential by signing a challenge.
"""

from __future__ import annotations

import contextlib
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
    InvalidPinError,
    NotFoundError,
    PivToolError,
    RetryGuardError,
    StepFailedError,
    UsageError,
)
from ..core.fileio import create_new
from ..piv.constants import (
    DEFAULT_MGMT_KEY,
    DEFAULT_PIN,
    DEFAULT_PUK,
    KeyType,
    MgmtKeyType,
    ObjectId,
    PinPolicy,
    Slot,
    TouchPolicy,
)
from ..piv.encoding import pin_bytes
from ..piv.objects import Chuid, build_ccc, encode_certificate_object
from ..piv.session import PivSession
from ..piv.version import check_key_support, supported_mgmt_key_types
from .auth import OverridePrompter, Prompter, authenticate, change_mgmt_key, verify_pin
from .journal import Journal
from .state import CardSnapshot, read_card_state

if TYPE_CHECKING:  # --- escrow (enroll --escrow); the lab CA loads lazily ---
    from ..certs.ca import LabCA
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

    def preflight(self) -> None:
        """Check everything that can be checked before the card changes (the CA opens with
        its passphrase, the command exists); raise :class:`UsageError` otherwise."""
        ...


@dataclass
class LabCAIssuer:
    """Issue with pivtool's lab CA in a directory."""

    directory: str
    passphrase: bytes | None = field(default=None, repr=False)
    days: int = 365
    description: str = "lab CA"
    #: The CA as opened by :meth:`preflight` (its key decrypted once, not per check).
    _ca: LabCA | None = field(default=None, init=False, repr=False, compare=False)

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

    def preflight(self) -> None:
        """Open the CA and decrypt its key now: a missing CA or a wrong passphrase must stop
        enroll before the card changes, not after the key was generated."""
        from ..certs.ca import LabCA
        from ..certs.errors import CertError

        try:
            self._ca = LabCA.open(self.directory, self.passphrase)
        except CertError as e:
            raise UsageError(f"--ca {self.directory}: {e}") from None

    def check_policies(self, policies: list[str]) -> None:
        """Refuse (before the card changes) certificate policies this CA would silently
        drop: an enrollment asked for them, so a certificate without them is not what the
        admin wanted (Entra authentication-binding rules may depend on them)."""
        from ..certs.ca import LabCA

        ca = self._ca or LabCA.open(self.directory, self.passphrase)
        missing = [p for p in policies if p not in set(ca.allowed_policies)]
        if missing:
            raise UsageError(f"--ca {self.directory} does not issue policy "
                             f"{', '.join(missing)}: create the CA with "
                             f"'ca init --allow-policy OID' or drop --policy")


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

    def preflight(self) -> None:
        """The command exists and is executable (it is run only after the CSR)."""
        import shutil

        argv = shlex.split(self.command)
        if not argv:
            raise UsageError("empty --issuer-cmd")
        exe = argv[0]
        if os.sep in exe:
            if not os.path.isfile(exe):
                raise UsageError(f"issuer command not found: {exe}")
            if not os.access(exe, os.X_OK):
                raise UsageError(f"issuer command is not executable: {exe}")
        elif shutil.which(exe) is None:
            raise UsageError(f"issuer command not found on PATH: {exe}")


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
    #: On a card that cannot say whether its PUK is the factory default: leave it (the
    #: user knows it is not). Without it enroll replaces the PUK there.
    keep_puk: bool = False


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
    status: str = "enrolled"  # or "pending-certificate", "already-enrolled"
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
    if opts.keep_puk and opts.random_puk:
        raise UsageError("--keep-puk and --random-puk contradict each other")
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
    if opts.backup_dir:
        _check_dir_creatable(opts.backup_dir)
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


def _check_dir_creatable(path: str) -> None:
    """A usage error unless *path* is (or can be created as) a writable directory."""
    p = Path(path)
    if p.exists():
        if not p.is_dir():
            raise UsageError(f"{path} is not a directory")
        if not os.access(p, os.W_OK | os.X_OK):
            raise UsageError(f"cannot write into {path}")
        return
    parent = p.parent
    while not parent.exists() and parent != parent.parent:
        parent = parent.parent
    if not os.access(parent, os.W_OK | os.X_OK):
        raise UsageError(f"cannot create {path}: {parent} is not writable")


def _pem(public_key: Any) -> str:
    """A public key as SubjectPublicKeyInfo PEM (how the journal records keys)."""
    from cryptography.hazmat.primitives.serialization import Encoding, PublicFormat

    pem: bytes = public_key.public_bytes(Encoding.PEM, PublicFormat.SubjectPublicKeyInfo)
    return pem.decode()


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
        self._refused_default: str | None = None  # the card refused 123456 as the PIN
        self._escrow_mgmt: tuple[bytes, str] | None = None
        # --- resume: the journal of this card, and what an interrupted run left on it ---
        self.journal: Journal | None = None
        self._ours: dict[Slot, Any] = {}  # slot -> public key this enrollment generated
        #: slot -> where its new key is until the certificate is checked (MOVE KEY staging)
        self._where: dict[Slot, Slot] = {}
        self._attest: dict[Slot, Attestation | None] = {}
        #: What this run changed on the card, in order (for the error after a failure).
        self.changed: list[str] = []

    def _step(self, name: str, fn: Callable[[], str | tuple[str, str]]) -> None:
        try:
            out = fn()
        except PivToolError as e:
            if isinstance(e, StepFailedError):
                raise
            self.result.steps.append(Step(name, "failed", str(e)))
            raise StepFailedError(name, e, self.changed) from e
        except Exception as e:
            from ..certs.errors import CertError

            if not isinstance(e, CertError):
                raise
            self.result.steps.append(Step(name, "failed", str(e)))
            raise StepFailedError(name, e, self.changed) from e
        status, detail = out if isinstance(out, tuple) else ("done", out)
        step = Step(name, status, detail)
        self.result.steps.append(step)
        self.on_step(step)

    # --- the steps --------------------------------------------------------------------

    def run(self) -> EnrollResult:
        """Run every step; raises :class:`StepFailedError` naming the failing step."""
        validate_options(self.o, self.s)
        if self.issuer is not None:
            self.issuer.preflight()  # before the first APDU that changes the card
            if self.o.policies and isinstance(self.issuer, LabCAIssuer):
                self.issuer.check_policies([str(p) for p in self.o.policies])
        state: list[CardSnapshot] = []
        self._step("read card", lambda: self._read(state))
        self.journal = Journal.open(state[0].serial)
        self._step("check slots", lambda: self._guard(state[0]))
        if self.result.status == "already-enrolled":
            return self.result
        if self.journal is not None and state[0].serial is not None:
            self.journal.begin(state[0].serial, "enroll", self.o.upn)
        self._step("PIN and PUK", lambda: self._pin_puk(state[0]))
        self._step("management key", lambda: self._mgmt(state[0]))
        if self.escrow is not None:
            self._step("escrow", lambda: self._escrow(state[0]))
        keys: dict[Slot, Any] = {}
        self._step("generate key", lambda: self._generate(keys, state[0]))
        csrs: dict[Slot, bytes] = {}
        self._step("certificate request", lambda: self._csr(keys, csrs))
        if self.issuer is None:
            self.result.status = "pending-certificate"
            self.result.csr_file = self.o.csr_out
            return self.result
        certs: dict[Slot, Any] = {}
        self._step("issue certificate", lambda: self._issue(csrs, certs, keys))
        self._step("check certificate", lambda: self._check(keys, certs))
        self._step("import certificate", lambda: self._import(certs))
        self._step("CHUID and CCC", lambda: self._chuid_ccc(state[0]))
        self._step("prove key", lambda: self._prove(certs))
        from ..certs.entra import certificate_user_ids

        cert = certs[Slot.AUTHENTICATION]
        self.result.certificate = cert
        self.result.certificate_user_ids = [i.to_json() for i in certificate_user_ids(cert)]
        if self.journal is not None:
            self.journal.finish()
        return self.result

    def _read(self, out: list[CardSnapshot]) -> str:
        st = read_card_state(self.s)
        out.append(st)
        self.result.serial = st.serial
        kind = f"YubiKey {st.version}" if st.is_yubikey else "PIV card"
        serial = f" serial {st.serial}" if st.serial is not None else ""
        left = st.pin.tries_left
        tries = "PIN tries unknown" if left is None else (
            "1 PIN try left" if left == 1 else f"{left} PIN tries left")
        return f"{kind}{serial}; {tries}"

    def _find_ours(self, st: CardSnapshot) -> dict[Slot, Any]:
        """The keys an interrupted run of this enrollment generated and left on the card:
        recorded by the journal (before GENERATE: the slot's key then; after: the new key),
        recognised by the card's own metadata. Such a key is finished, never replaced."""
        j = self.journal
        if j is None or not j.active or str(j.get("upn")).casefold() != self.o.upn.casefold():
            return {}
        generating = j.get("generating") or {}
        generated = j.get("generated") or {}
        staged = j.get("staged") or {}
        ours: dict[Slot, Any] = {}
        for slot in self.slots:
            ss = st.slot(slot)
            tag = f"{slot.value:02x}"
            temp = staged.get(tag)
            if temp is not None:
                # Staged in a retired slot (transactional replace): the key is ours where it
                # is now — still in the retired slot (recorded, or there since the GENERATE
                # whose answer was lost: the slot was free), or already moved into place.
                known = generated.get(temp)
                for where in (Slot(int(temp, 16)), slot):
                    ws = st.slot(where)
                    if ws is None or ws.public_key is None:
                        continue
                    pem = _pem(ws.public_key)
                    if pem == known or (known is None and where != slot
                                        and ws.origin != "imported"):
                        ours[slot] = ws.public_key
                        self._where[slot] = where
                        break
                continue
            if ss is None or ss.public_key is None or tag not in generating:
                continue
            pem = _pem(ss.public_key)
            if generated.get(tag) == pem or (tag not in generated and ss.origin != "imported"
                                              and pem != generating[tag]):
                ours[slot] = ss.public_key
        return ours

    def _already_enrolled(self, st: CardSnapshot) -> bool:
        """Every slot holds a certificate for this UPN over the key in the slot, and the PIN
        is no longer the default: a completed enrollment (of this user)."""
        from ..certs.inspect import get_upns

        if st.pin.is_default:
            return False
        for slot in self.slots:
            ss = st.slot(slot)
            if ss is None or ss.certificate is None or ss.cert_matches_key() is False:
                return False
            if self.o.upn.casefold() not in {u.casefold() for u in get_upns(ss.certificate)}:
                return False
        return True

    def _guard(self, st: CardSnapshot) -> str | tuple[str, str]:
        self._ours = self._find_ours(st)
        occupied = []
        for slot in self.slots:
            ss = st.slot(slot)
            if slot in self._ours:
                continue
            if ss is not None and (ss.key_algorithm or ss.certificate is not None):
                occupied.append(ss)
        resumed = ", ".join(s.label for s in self._ours)
        note = (f"resuming the interrupted enrollment: the key it generated in {resumed} "
                "is kept" if self._ours else "")
        if not occupied:
            return note or ", ".join(s.label for s in self.slots) + " empty"
        names = ", ".join(s.slot.label for s in occupied)
        if not self.o.force and self._already_enrolled(st):
            from ..certs.entra import certificate_user_ids

            self.result.status = "already-enrolled"
            ss9a = st.slot(Slot.AUTHENTICATION)
            assert ss9a is not None
            self.result.certificate = ss9a.certificate
            self.result.certificate_user_ids = [
                i.to_json() for i in certificate_user_ids(ss9a.certificate)]
            return ("skipped", f"already enrolled: {names} holds a certificate for "
                               f"{self.o.upn} (use --force to enroll again)")
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
        warn = ""
        if any(ss.key_algorithm for ss in occupied) and not (
                self.issuer is not None and self._can_stage(st)):
            # Said before anything is destroyed: the old key goes when the new one is made.
            warn = ("; the old key is replaced before the new certificate is issued: if "
                    "issuance then fails, the old credential is gone")
        return (f"replacing {names}" + (f"; old certificates saved in {directory}"
                                        if saved else "") + warn
                + (f"; {note}" if note else ""))

    def _pin_puk(self, st: CardSnapshot) -> str:
        """Replace a factory PIN and PUK (and set random ones when asked, whatever they
        were). Enroll never ends with a factory PIN or PUK it could not rule out: where the
        card cannot tell (no GET METADATA), a PIN given as 123456 or accepted as 123456 is
        the default, and the PUK is changed from 12345678 under the retry guard — a refusal
        (63Cx) proves it is not the default; ``keep_puk`` is the documented opt-out."""
        from .auth import check_puk, guard, pin_tries

        ask = self.p.ask
        pin_default = st.pin.is_default
        if pin_default is None:
            pin_default = self._pin_default_without_metadata(st)
        new_pin = None
        notes: list[str] = []
        new_values: dict[str, str] = {}
        if pin_default or self.o.random_pin:
            new_pin = _random_digits(8) if self.o.random_pin else self.p.secret("new_pin")
            pin_bytes(new_pin, "new PIN")
            if new_pin == DEFAULT_PIN:
                raise UsageError("the new PIN must not be the factory default")
            if self.o.random_pin:
                new_values["pin"] = new_pin.decode()
        puk_default = st.puk.is_default
        j = self.journal
        if puk_default is None and j is not None and j.active and j.get("puk") is not None:
            puk_default = False  # an interrupted run of this enrollment set it
        old_puk, new_puk = DEFAULT_PUK, None
        if puk_default is None and self.o.keep_puk:
            pass  # the user says it is not the factory default
        elif puk_default is not False or self.o.random_puk:
            if puk_default is False or self.p.given("puk"):
                old_puk = self.p.secret("puk")  # --random-puk replaces any PUK
                pin_bytes(old_puk, "PUK")
            try:
                new_puk = _random_digits(8) if self.o.random_puk else self.p.secret("new_puk")
            except UsageError as e:
                if puk_default is not None:
                    raise
                raise UsageError(f"{e}: the card cannot tell whether the PUK is the factory "
                                 "default, so enroll replaces it (or use --keep-puk if it is "
                                 "not the default)") from None
            pin_bytes(new_puk, "new PUK")
            if new_puk == DEFAULT_PUK:
                raise UsageError("the new PUK must not be the factory default")
            if self.o.random_puk:
                new_values["puk"] = new_puk.decode()
        # Every retry guard before anything changes: a refusal leaves the card as it was.
        if new_pin is not None and pin_default:
            guard("PIN", pin_tries(self.s), self.o.retry_force, ask)
        if new_puk is not None:
            try:
                check_puk(self.s, self.o.retry_force, ask)
            except RetryGuardError as e:
                hint = " (or --keep-puk if it is not the factory default)" \
                    if puk_default is None else ""
                raise RetryGuardError(f"{e}{hint}") from None
        if new_values:
            # Written before the card changes, so a pulled card never leaves a PIN nobody
            # knows.
            assert self.o.secrets_out is not None
            _write_secrets(self.o.secrets_out, {"serial": st.serial, "upn": self.o.upn,
                                                **new_values})
            self.result.secrets_file = self.o.secrets_out
            notes.append(f"random values written to {self.o.secrets_out} (0600)")
        # The PUK first: when it turns out not to be the default, nothing else has changed.
        puk_note = "PUK kept"
        if new_puk is not None:
            if self.journal is not None:  # before the command: its answer may be lost
                self.journal.remember_secret("puk", new_puk)
            try:
                self.s.change_puk(old_puk, new_puk)
            except InvalidPinError as e:
                if puk_default is not None or old_puk != DEFAULT_PUK or e.tries_left == 0:
                    raise
                if self.o.random_puk:
                    self._drop_secrets_file()
                    raise InvalidPinError(e.sw, e.tries_left, "PUK: it is not the factory "
                                          "default; give the current PUK (PIVTOOL_PUK) for "
                                          "--random-puk to replace it") from None
                new_values.pop("puk", None)
                new_puk = None
                left = "1 try" if e.tries_left == 1 else f"{e.tries_left} tries"
                puk_note = f"PUK kept (it is not the factory default: the card refused " \
                           f"12345678; {left} left)"
            else:
                self.changed.append("PUK set to the new PUK")
                self._escrow_puk = new_puk  # escrow
                puk_note = "PUK set"
        elif puk_default is None and self.o.keep_puk:
            puk_note = "PUK kept (--keep-puk: not the factory default, as you said)"
        if new_pin is not None:
            if self.journal is not None:
                self.journal.remember_secret("pin", new_pin)
            if pin_default:
                self.s.change_pin(DEFAULT_PIN, new_pin)
            else:  # --random-pin replaces any PIN
                current, _resumed = self._current_pin(st)
                verify_pin(self.s, current, self.o.retry_force, ask)
                self.s.change_pin(current, new_pin)
            self.changed.append("PIN set to the new PIN")
            self.pin = new_pin
            notes.insert(0, "PIN set")
        else:
            try:
                self.pin, resumed = self._current_pin(st)
            except UsageError as e:
                if self._refused_default is None:
                    raise
                raise UsageError(f"the PIN is not the factory default (the card refused "
                                 f"123456; {self._refused_default}): {e}") from None
            notes.insert(0, "PIN kept (the new PIN given was already set by the interrupted "
                            "enroll)" if resumed else "PIN kept")
        verify_pin(self.s, self.pin, self.o.retry_force, ask)
        if new_puk is None and not puk_default:
            self._escrow_puk = self._current_puk()
        notes.insert(1, puk_note)
        return "; ".join(notes)

    def _pin_default_without_metadata(self, st: CardSnapshot) -> bool:
        """Whether the PIN is the factory default on a card that cannot say. A PIN given as
        123456 is taken at its word (changing the PIN from it proves it); with none given,
        123456 is tried once, and only while the card shows 3 or more tries left (so a wrong
        guess never comes near blocking the PIN, and a re-run does not guess again)."""
        if self.p.given("pin"):
            return self.p.secret("pin") == DEFAULT_PIN
        j = self.journal
        if j is not None and j.active and j.get("pin") is not None:
            return False  # an interrupted run of this enrollment set it
        left = st.pin.tries_left
        if left is None or left < 3:
            return False
        try:
            self.s.verify_pin(DEFAULT_PIN)
        except InvalidPinError as e:
            self._refused_default = f"{e.tries_left} tries left"
            return False
        return True

    def _drop_secrets_file(self) -> None:
        """Remove the secrets file written for values the card never got."""
        if self.result.secrets_file:
            with contextlib.suppress(OSError):
                os.unlink(self.result.secrets_file)
            self.result.secrets_file = None

    def _current_pin(self, st: CardSnapshot) -> tuple[bytes, bool]:
        """``(PIN, resumed)``. Never a guess: when this card's journal records that an
        interrupted run of this enrollment set the PIN (the card says it is no longer the
        default) and the new PIN given now is the value it set (salted hash), the new PIN is
        the current one (*resumed*); otherwise the PIN the user gave as the current one."""
        j = self.journal
        if j is not None and j.active and j.get("pin") is not None and not st.pin.is_default:
            try:
                candidate = self.p.secret("new_pin") if self.p.given("new_pin") else None
            except UsageError:
                candidate = None
            if candidate is not None and j.secret_is("pin", candidate):
                return candidate, True
        try:
            return self.p.secret("pin"), False
        except UsageError as missing:
            if self.p.given("new_pin"):
                # Only a new PIN: trying it as the current one would be a guess (a wrong one
                # costs a try), so say what is needed instead.
                raise UsageError("the PIN is not the factory default: give the current PIN "
                                 "(PIVTOOL_PIN or --pin-file); the new PIN given was not set "
                                 "by an interrupted enroll of this key") from None
            raise missing from None

    def _current_puk(self) -> bytes | None:
        """The PUK an interrupted run of this enrollment set, when the new PUK given now is
        that value (journal); else ``None``."""
        j = self.journal
        if j is None or not j.active or j.get("puk") is None or not self.p.given("new_puk"):
            return None
        try:
            candidate = self.p.secret("new_puk")
        except UsageError:
            return None
        return candidate if j.secret_is("puk", candidate) else None

    def _mgmt(self, st: CardSnapshot) -> str:
        pin = self.pin
        auth = authenticate(self.s, OverridePrompter(self.p, {"pin": pin}),
                            self.o.retry_force)
        if auth.source != "default" and not (auth.source == "protected"
                                             and auth.key == DEFAULT_MGMT_KEY):
            # (A "protected" default key is what a change interrupted between storing the new
            # key and setting it leaves: the change is then made again.)
            if auth.source == "given":  # escrow: a key not stored on the card
                self._escrow_mgmt = (auth.key, self.s.mgmt_key_type.label)
            return f"kept ({auth.source})"
        kt = MgmtKeyType.AES192 if MgmtKeyType.AES192 in supported_mgmt_key_types(
            self.s.version) else MgmtKeyType.TDES
        if not self.s.is_yubikey:
            return "factory default kept: a generic PIV card's key can only be changed by " \
                   "its issuer"
        self.changed.append("management key replaced (stored PIN-protected)")
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
            check_puk(self.s, self.o.retry_force, self.p.ask)
            self.s.change_puk(puk, puk)
        key, alg = self._escrow_mgmt or (None, None)
        self.escrow.put(st.serial, self.o.upn, puk=puk, mgmt_key=key, mgmt_key_algorithm=alg)
        what = "PUK and management key" if key is not None else "PUK"
        return f"{what} for serial {st.serial} written to {self.escrow.path} (encrypted)"

    def _can_stage(self, st: CardSnapshot) -> bool:
        """MOVE KEY (5.7+) and a free retired slot per slot to fill: the new key can be
        made beside the old one, which then stays until the new certificate is checked."""
        from ..piv.version import has_move_delete

        if not self.s.is_yubikey or self.s.version is None or \
                not has_move_delete(self.s.version):
            return False
        return len(self._free_retired(st)) >= len(self.slots)

    @staticmethod
    def _free_retired(st: CardSnapshot) -> list[Slot]:
        used = {ss.slot for ss in st.slots}
        return [s for s in Slot if 0x82 <= s.value <= 0x95 and s not in used]

    def _generate(self, keys: dict[Slot, Any], st: CardSnapshot) -> str | tuple[str, str]:
        out = []
        kept = []
        # Staging needs the certificate in this run (two-step --csr-out imports it into the
        # slot the CSR names, later).
        free = self._free_retired(st) if self.issuer is not None and self._can_stage(st) \
            else []
        for slot in self.slots:
            if slot in self._ours:  # generated by the interrupted run: never a second key
                keys[slot] = self._ours[slot]
                kept.append(slot.label)
                continue
            ss = st.slot(slot)
            if free and ss is not None and ss.key_algorithm:
                # Transactional replace: the working key stays in place until the new
                # certificate is issued and checked.
                keys[slot] = self._stage(slot, free.pop(0))
                out.append(f"{self.o.algorithm.label} in {self._where[slot].label}, moved "
                           f"into {slot.label} once its certificate is checked")
                continue
            tag = f"{slot.value:02x}"
            if self.journal is not None:
                # Before GENERATE: if its answer is lost, the key now in the slot is known to
                # be ours because it differs from the one recorded here.
                ss = st.slot(slot)
                before = _pem(ss.public_key) if ss is not None and ss.public_key else None
                self.journal.set(generating={**(self.journal.get("generating") or {}),
                                             tag: before})
            self.changed.append(f"new key generated in {slot.label}")
            pub = self.s.generate_key(slot, self.o.algorithm, self.o.pin_policy,
                                      self.o.touch_policy)
            keys[slot] = pub
            if self.journal is not None:
                self.journal.set(generated={**(self.journal.get("generated") or {}),
                                            tag: _pem(pub)})
            out.append(f"{self.o.algorithm.label} in {slot.label}")
        if kept and not out:
            return ("skipped", f"the key the interrupted enroll generated in "
                               f"{', '.join(kept)} is used")
        return ", ".join(out + [f"kept the key in {k}" for k in kept])

    def _stage(self, slot: Slot, temp: Slot) -> Any:
        """Generate *slot*'s new key in the free retired slot *temp* (journalled first)."""
        t = f"{temp.value:02x}"
        if self.journal is not None:
            staged = {**(self.journal.get("staged") or {}), f"{slot.value:02x}": t}
            self.journal.set(staged=staged,
                             generating={**(self.journal.get("generating") or {}), t: None})
        self.changed.append(f"new key generated in {temp.label}")
        pub = self.s.generate_key(temp, self.o.algorithm, self.o.pin_policy,
                                  self.o.touch_policy)
        if self.journal is not None:
            self.journal.set(generated={**(self.journal.get("generated") or {}),
                                        t: _pem(pub)})
        self._where[slot] = temp
        return pub

    def _move_into_place(self, slot: Slot) -> None:
        """The new key, certificate checked, replaces the old one in *slot*."""
        temp = self._where.get(slot, slot)
        if temp == slot:
            return
        if self.s.slot_key_present(slot):
            self.changed.append(f"old key in {slot.label} deleted")
            self.s.delete_key(slot)
        self.changed.append(f"new key moved from {temp.label} into {slot.label}")
        self.s.move_key(temp, slot)
        self._where[slot] = slot

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
            key = self.s.private_key(self._where.get(slot, slot), keys[slot])
            csrs[slot] = build_csr(key, req).public_bytes(Encoding.PEM)  # type: ignore[arg-type]
        if self.issuer is not None:
            # Read the attestation while the card is in use for the request: the issue step
            # then needs no card, so an issuer that takes its time (or a card pulled while it
            # works) never fails "issue certificate" half-way, and f9 is read once.
            self._attest = self._attestations()
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

    def _issue(self, csrs: dict[Slot, bytes], certs: dict[Slot, Any],
               keys: dict[Slot, Any]) -> str | tuple[str, str]:
        from cryptography.hazmat.primitives.serialization import Encoding

        from ..certs.inspect import load_certificate, public_key_matches

        assert self.issuer is not None
        reused = []
        issued = dict(self.journal.get("issued") or {}) if self.journal is not None else {}
        for slot in self.slots:
            tag = f"{slot.value:02x}"
            if tag in issued:
                # Issued by the interrupted run for this very key: no second certificate.
                cert = load_certificate(issued[tag].encode())
                if public_key_matches(cert, keys[slot]):
                    certs[slot] = cert
                    reused.append(slot.label)
                    continue
            certs[slot] = load_certificate(self.issuer.issue(csrs[slot],
                                                             self._attest.get(slot)))
            if self.journal is not None:
                issued[tag] = certs[slot].public_bytes(Encoding.PEM).decode()
                self.journal.set(issued=issued)
        cert = certs[Slot.AUTHENTICATION]
        if reused and len(reused) == len(self.slots):
            return ("skipped", f"the certificate issued to the interrupted enroll is used "
                               f"(serial {cert.serial_number:x})")
        return f"by {self.issuer.description}: serial {cert.serial_number:x}"

    def _attestations(self) -> dict[Slot, Attestation | None]:
        """Each slot key's attestation with the card's f9 certificate (PEM), for an issuer
        that wants them; None where the card cannot attest (a generic card, an old YubiKey)."""
        from cryptography.hazmat.primitives.serialization import Encoding

        from ..core.errors import TransportError

        if self.s.version is None:
            return {}
        out: dict[Slot, Attestation | None] = {}
        f9: bytes | None = None
        for slot in self.slots:
            try:
                att = self.s.attest_key(self._where.get(slot, slot))
                if f9 is None:
                    f9 = self.s.get_certificate(Slot.ATTESTATION).public_bytes(Encoding.PEM)
            except TransportError:
                raise  # a pulled card is not "no attestation"
            except PivToolError:  # refused, unsupported firmware, no or unreadable f9
                out[slot] = None
                continue
            out[slot] = (att.public_bytes(Encoding.PEM), f9)
        return out

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
            self._move_into_place(slot)
            der = certs[slot].public_bytes(Encoding.DER)
            try:
                if self.s.get_certificate_der(slot)[0] == der:
                    out.append(slot.label + " (already there)")
                    continue
            except NotFoundError:
                pass
            compress = len(encode_certificate_object(der)) + 8 > MAX_OBJECT
            self.changed.append(f"certificate stored in {slot.label}")
            self.s.put_certificate(slot, der, compress=compress)
            out.append(slot.label + (" (compressed)" if compress else ""))
        return "stored in " + ", ".join(out)

    def _chuid_ccc(self, st: CardSnapshot) -> str:
        chuid = Chuid.generate()
        self.changed.append("new CHUID")
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
