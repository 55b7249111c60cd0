"""Entra CBA enrollment: from a key to a working smart-card-logon credential.

The steps, each reported through a callback as it completes: read the card, guard existing
credentials, set PIN/PUK, replace a default management key with a random PIN-protected one,
generate the key(s) on the card, build the CSR on the card, get it issued, check the issued
certificate, import it, refresh CHUID/CCC, and prove the credential by signing a challenge.

:class:`Enroller` runs them top-down. Beside it: what it is asked and reports
(``enroll_options.py``), the PIN and PUK step (``enroll_pin.py``), the new keys with the
journal's resume and the transactional replace (``enroll_keys.py``), and the issuers
(``issuers.py``).
"""

from __future__ import annotations

import secrets
from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING, Any

from ..core.errors import (
    NotFoundError,
    PivToolError,
    StepFailedError,
    UsageError,
)
from ..piv.constants import (
    DEFAULT_MGMT_KEY,
    MgmtKeyType,
    ObjectId,
    PinPolicy,
    Slot,
)
from ..piv.encoding import pin_bytes
from ..piv.objects import Chuid, build_ccc, encode_certificate_object
from ..piv.session import PivSession
from ..piv.version import supported_mgmt_key_types
from .auth import OverridePrompter, Prompter, authenticate, change_mgmt_key, verify_pin
from .enroll_keys import NewKeys
from .enroll_options import EnrollOptions, EnrollResult, Step, validate_options
from .enroll_pin import PinPukStep
from .issuers import AttestationPems, Issuer, LabCAIssuer
from .journal import Journal
from .state import CardSnapshot, read_card_state

if TYPE_CHECKING:  # --- escrow (enroll --escrow) ---
    from .escrow import EscrowFile

#: The YubiKey 5 object size limit; larger certificates are stored gzip-compressed.
MAX_OBJECT = 3052


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
        #: What this run changed on the card, in order (for the error after a failure).
        self.changed: list[str] = []
        # --- escrow: what enroll learns on the way, written by the "escrow" step ---
        self.escrow = escrow
        self._escrow_puk: bytes | None = None
        self._escrow_mgmt: tuple[bytes, str] | None = None
        # --- resume: the journal of this card, and the new keys (where each is, which an
        # interrupted run already made) ---
        self.journal: Journal | None = None
        self.new_keys = NewKeys(session, opts, self.slots, self.changed)
        #: Each slot key's attestation for the issuer (read in the certificate-request step).
        self._attest: dict[Slot, AttestationPems | None] = {}

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
        self.journal = self.new_keys.journal = Journal.open(state[0].serial)
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
        ours = self.new_keys.find_ours(st)
        occupied = []
        for slot in self.slots:
            ss = st.slot(slot)
            if slot in ours:
                continue
            if ss is not None and (ss.key_algorithm or ss.certificate is not None):
                occupied.append(ss)
        resumed = ", ".join(s.label for s in ours)
        note = (f"resuming the interrupted enrollment: the key it generated in {resumed} "
                "is kept" if ours else "")
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
                self.issuer is not None and self.new_keys.can_stage(st)):
            # Said before anything is destroyed: the old key goes when the new one is made.
            warn = ("; the old key is replaced before the new certificate is issued: if "
                    "issuance then fails, the old credential is gone")
        return (f"replacing {names}" + (f"; old certificates saved in {directory}"
                                        if saved else "") + warn
                + (f"; {note}" if note else ""))

    def _pin_puk(self, st: CardSnapshot) -> str:
        """The PIN and PUK step (:class:`PinPukStep`); later steps verify with the PIN it
        leaves, and the escrow step files the PUK it set or recognised."""
        step = PinPukStep(self.s, self.p, self.o, self.journal, self.result, self.changed)
        note = step.run(st)
        self.pin, self._escrow_puk = step.pin, step.escrow_puk
        return note

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

    def _generate(self, keys: dict[Slot, Any], st: CardSnapshot) -> str | tuple[str, str]:
        # Staging needs the certificate in this run (two-step --csr-out imports it into the
        # slot the CSR names, later).
        return self.new_keys.generate(keys, st, stage=self.issuer is not None)

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
            key = self.s.private_key(self.new_keys.location(slot), keys[slot])
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

    def _attestations(self) -> dict[Slot, AttestationPems | None]:
        """Each slot key's attestation with the card's f9 certificate (PEM), for an issuer
        that wants them; None where the card cannot attest (a generic card, an old YubiKey)."""
        from cryptography.hazmat.primitives.serialization import Encoding

        from ..core.errors import TransportError

        if self.s.version is None:
            return {}
        out: dict[Slot, AttestationPems | None] = {}
        f9: bytes | None = None
        for slot in self.slots:
            try:
                att = self.s.attest_key(self.new_keys.location(slot))
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
            self.new_keys.move_into_place(slot)
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
