"""Slot certificates: CSRs and self-signed certificates signed on the card, import, export
and delete.

Import is where a credential tool earns its keep: a certificate that does not belong to the
slot's key makes the card useless for sign-in while looking fine, so it is refused; an
existing certificate is replaced only on request and saved to a file first; the object must
fit the card before anything is sent; and the CHUID GUID is renewed so Windows drops its
cached copy of the old certificate.
"""

from __future__ import annotations

import contextlib
import datetime as dt
import os
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any, cast

from ..core.errors import (
    BadResponseError,
    NotFoundError,
    PivToolError,
    SecurityStatusError,
    UsageError,
)
from ..core.fileio import create_new
from ..piv.constants import KeyType, PinPolicy, Slot, TouchPolicy
from ..piv.encoding import parse_certificate
from ..piv.metadata import SlotMetadata
from ..piv.session import PivSession
from .auth import Prompter, authenticate, verify_pin
from .keys import (
    EmptySlotError,
    card_serial,
    cert_has_key,
    der_first_element,
    slot_probe,
)
from .objects import MAX_OBJECT_SIZE, check_object_size, refresh_chuid, utc_stamp
from .state import read_slot

if TYPE_CHECKING:
    from cryptography import x509
    from cryptography.hazmat.primitives.asymmetric.types import (
        CertificatePublicKeyTypes,
        PrivateKeyTypes,
        PublicKeyTypes,
    )

    from ..certs.profile import CertRequest

CERT_SCHEMA = "pivtool.cert/1"
INSTALL_SCHEMA = "pivtool.cert-install/1"

Notify = Callable[[str], None]


def _quiet(_message: str) -> None:
    pass


# --- reading certificate files --------------------------------------------------------


def load_certificate_file(data: bytes, password: Callable[[], bytes]
                          ) -> tuple[list[x509.Certificate], str]:
    """Certificates from PEM (all of a bundle), DER, or PKCS#12 (its certificates only; the
    key, if any, is ignored). Returns ``(certificates, format)``; *password* is called only
    for a PKCS#12 file that needs one. Malformed input raises a one-line
    :class:`~pivtool.certs.errors.CertInputError`."""
    from ..certs.errors import CertInputError
    from ..certs.inspect import load_certificate, load_certificates, load_pkcs12

    if not data.strip():
        raise CertInputError("the certificate file is empty")
    if b"-----BEGIN " in data[:65536]:
        if b"-----BEGIN CERTIFICATE" not in data:
            raise CertInputError("the PEM file holds no certificate (expected BEGIN "
                                 "CERTIFICATE)")
        return load_certificates(data), "pem"
    first = der_first_element(data)
    if first is not None and first == (0x02, b"\x03"):
        try:
            _key, cert, extra = load_pkcs12(data, None)
        except CertInputError:
            _key, cert, extra = load_pkcs12(data, password())
        certs = [c for c in (cert, *extra) if c is not None]
        if not certs:
            raise CertInputError("the PKCS#12 file holds no certificate")
        return certs, "pkcs12"
    return [load_certificate(data)], "der"


# --- backups --------------------------------------------------------------------------


def old_cert_path(slot: Slot, next_to: Path | None, directory: Path | None,
                  serial: int | None) -> Path:
    """Where a replaced certificate is saved: ``<FILE>.old-slot-9a-<time>.pem`` next to the
    new certificate's file, else ``pivtool-slot-9a-<serial>-old-<time>.pem`` in *directory*
    (default: the current directory). Never an existing file."""
    stamp = utc_stamp()
    if next_to is None and directory is not None:
        check_backup_dir(directory)
    if next_to is not None:
        base = next_to.with_name(f"{next_to.name}.old-slot-{slot.value:02x}-{stamp}")
    else:
        who = serial if serial is not None else "card"
        base = (directory or Path(".")) / f"pivtool-slot-{slot.value:02x}-{who}-old-{stamp}"
    path = base.with_name(base.name + ".pem")
    n = 1
    while os.path.lexists(path):  # a planted (dangling) symlink is taken, not followed
        path = base.with_name(f"{base.name}-{n}.pem")
        n += 1
    return path


def check_backup_dir(directory: Path) -> None:
    """Refuse an existing backup directory another user could tamper with: not ours, or
    writable by group or others (they could plant or swap files in it)."""
    import stat

    try:
        st = os.stat(directory)
    except FileNotFoundError:
        return  # created 0700 by save_certificate
    except OSError as e:
        raise UsageError(f"cannot use the backup directory {directory}: {e.strerror}") from None
    if not stat.S_ISDIR(st.st_mode):
        raise UsageError(f"the backup directory {directory} is not a directory")
    if hasattr(os, "getuid") and st.st_uid != os.getuid():
        raise UsageError(f"the backup directory {directory} belongs to another user "
                         f"(uid {st.st_uid}); use a directory of your own")
    if st.st_mode & 0o022:
        raise UsageError(f"the backup directory {directory} is writable by other users "
                         f"(mode {stat.S_IMODE(st.st_mode):o}); chmod go-w it or use another")


def save_certificate(cert: x509.Certificate, path: Path) -> Path:
    """Write *cert* as PEM to a new file *path* (0600, never overwriting; the directory is
    created 0700 if needed). Returns *path*."""
    from cryptography.hazmat.primitives.serialization import Encoding

    try:
        path.parent.mkdir(parents=True, exist_ok=True, mode=0o700)
        create_new(path, cert.public_bytes(Encoding.PEM))
    except FileExistsError:
        raise UsageError(f"{path} exists; not overwriting a certificate backup") from None
    except OSError as e:
        raise UsageError(f"cannot save the old certificate to {path}: {e.strerror}") from None
    return path


# --- install (import, selfsign, key import with certificate) -----------------------


def _read_slot_cert(session: PivSession, slot: Slot, attempts: int = 2
                    ) -> tuple[x509.Certificate | None, bool]:
    """``(certificate, object_present)``: the object may exist yet not parse.

    An unparseable answer is read once more before it counts as a corrupt object: with
    ``--force`` a corrupt object is replaced *without* a backup, so a transient transport
    error must not be mistaken for one."""
    for _attempt in range(attempts):
        try:
            der, _ = session.get_certificate_der(slot)
        except NotFoundError:
            return None, False
        except BadResponseError:
            continue
        try:
            return parse_certificate(der), True
        except BadResponseError:
            continue
    return None, True


@dataclass
class InstallPlan:
    """A certificate checked and ready to be written to a slot."""

    slot: Slot
    certificate: x509.Certificate
    object_data: bytes = field(repr=False)
    compressed: bool
    old_certificate: x509.Certificate | None
    old_object_present: bool
    unchanged: bool
    key_checked: bool
    notes: list[str] = field(default_factory=list)


def _describe(cert: x509.Certificate) -> str:
    return cert.subject.rfc4514_string() or "<empty subject>"


def plan_install(session: PivSession, slot: Slot, candidates: list[x509.Certificate],
                 compress: bool = False, force: bool = False,
                 public_key: PublicKeyTypes | None = None) -> InstallPlan:
    """Choose and check the certificate for *slot*, with reads only.

    From *candidates* (a PEM bundle may hold a chain) the one whose public key is the slot
    key's is taken — or *public_key*'s, when a key is about to be imported. A mismatch is a
    :class:`UsageError` (``force`` does not override it). Needing *force*: a card that cannot
    report the slot key (the match cannot be checked), an empty slot, and replacing a
    different certificate. The encoded object must fit :data:`MAX_OBJECT_SIZE`."""
    from cryptography.hazmat.primitives.serialization import Encoding

    from ..certs.inspect import key_algorithm_name
    from ..piv.objects import encode_certificate_object

    if not candidates:
        raise UsageError("no certificate to import")
    notes: list[str] = []
    key_checked = False
    if public_key is None:
        probe = slot_probe(session, slot)
        if probe.metadata is not None:
            public_key = probe.metadata.public_key()
        elif probe.empty and not force:
            raise UsageError(f"slot {slot.label} holds no key, so the certificate would be of "
                             "no use; generate or import the key first (or use --force)")
        elif probe.empty:
            notes.append(f"slot {slot.label} holds no key")
        elif not force:
            raise UsageError(f"the card cannot report the key in slot {slot.label} "
                             f"({probe.reason}), so whether the certificate matches it could "
                             "not be checked; use --force to import it anyway")
        else:
            notes.append(f"the match with the slot's key could not be checked ({probe.reason})")
    if public_key is not None:
        cert = next((c for c in candidates if cert_has_key(c, public_key)), None)
        if cert is None:
            alg = key_algorithm_name(cast("CertificatePublicKeyTypes", public_key))
            if len(candidates) == 1:
                raise UsageError(
                    f"the certificate ({_describe(candidates[0])}, "
                    f"{key_algorithm_name(candidates[0].public_key())}) does not match the "
                    f"{alg} key in slot {slot.label}; refusing to import it")
            raise UsageError(f"none of the {len(candidates)} certificates matches the {alg} "
                             f"key in slot {slot.label}; refusing to import")
        key_checked = True
    else:
        cert = candidates[0]
    if cert.not_valid_after_utc < dt.datetime.now(dt.timezone.utc):
        notes.append(f"the certificate expired on {cert.not_valid_after_utc:%Y-%m-%d}")
    der = cert.public_bytes(Encoding.DER)
    data = encode_certificate_object(der, compress)
    if (len(data) > MAX_OBJECT_SIZE and not compress
            and len(encode_certificate_object(der, True)) <= MAX_OBJECT_SIZE):
        raise UsageError(f"the certificate object would be {len(data)} bytes; a YubiKey "
                         f"holds at most {MAX_OBJECT_SIZE}: use --compress (it fits "
                         "compressed)")
    check_object_size(slot.object_id, data)
    old, old_present = _read_slot_cert(session, slot)
    unchanged = old is not None and old.public_bytes(Encoding.DER) == der
    if old_present and not unchanged and not force:
        what = f"a certificate ({_describe(old)})" if old else "an unreadable certificate object"
        raise UsageError(f"slot {slot.label} already holds {what}; use --force to replace it "
                         "(the old certificate is saved to a file first)")
    return InstallPlan(slot, cert, data, compress, old, old_present, unchanged, key_checked,
                       notes)


@dataclass
class InstallResult:
    """What writing a certificate did."""

    plan: InstallPlan
    written: bool
    backup: str | None
    chuid_guid: str | None

    def to_json(self) -> dict[str, Any]:
        """Schema ``pivtool.cert-install/1``: ``slot``, ``written`` (false when the same
        certificate was already there), ``compressed``, ``object_size``, ``key_checked``
        (the certificate was matched against the slot's key), ``replaced`` (an old
        certificate was overwritten), ``backup`` (where it was saved, or null),
        ``chuid_guid`` (the new CHUID GUID, or null), ``certificate`` (summary),
        ``notes``."""
        from ..certs.inspect import summarize

        p = self.plan
        return {"schema": INSTALL_SCHEMA, "slot": f"{p.slot.value:02x}",
                "written": self.written, "compressed": p.compressed,
                "object_size": len(p.object_data), "key_checked": p.key_checked,
                "replaced": self.written and p.old_object_present,
                "backup": self.backup, "chuid_guid": self.chuid_guid,
                "certificate": summarize(p.certificate).to_json(), "notes": p.notes}


def install_certificate(session: PivSession, plan: InstallPlan, backup: Path | None = None,
                        keep_chuid: bool = False, backup_dir: Path | None = None
                        ) -> InstallResult:
    """Write the planned certificate: save the old one first (to the file *backup*, else
    :func:`old_cert_path` in *backup_dir* or the current directory), then PUT DATA, then
    renew the CHUID GUID unless *keep_chuid*. Needs management key (authenticate first)."""
    if plan.unchanged:
        return InstallResult(plan, False, None, None)
    saved = None
    if plan.old_certificate is not None:
        path = backup or old_cert_path(plan.slot, None, backup_dir, card_serial(session))
        saved = str(save_certificate(plan.old_certificate, path))
    session.put_data(plan.slot.object_id, plan.object_data)
    guid = None if keep_chuid else refresh_chuid(session).guid_hex
    return InstallResult(plan, True, saved, guid)


def import_certificate(session: PivSession, prompter: Prompter, slot: Slot,
                       candidates: list[x509.Certificate], compress: bool = False,
                       force: bool = False, backup: Path | None = None,
                       keep_chuid: bool = False, allow_last_try: bool = False,
                       backup_dir: Path | None = None) -> InstallResult:
    """Check (:func:`plan_install`), then authenticate and install a certificate (see
    :func:`install_certificate` for *backup*/*backup_dir*)."""
    plan = plan_install(session, slot, candidates, compress, force)
    if plan.unchanged:
        return InstallResult(plan, False, None, None)
    authenticate(session, prompter, allow_last_try)
    return install_certificate(session, plan, backup, keep_chuid, backup_dir)


# --- signing on the card ------------------------------------------------------------


@dataclass
class SigningKey:
    """The card key that signs, and whether its public key still has to be proven to be
    the slot's (it came from a file or the slot's certificate, not from the card)."""

    key: PrivateKeyTypes
    metadata: SlotMetadata | None
    unproven: str | None  # where the public key came from, when not from the card


def _signing_key(session: PivSession, slot: Slot, public_key: PublicKeyTypes | None = None
                 ) -> SigningKey:
    """The slot's key as a card-backed private key. Its public key comes from the card
    (metadata), else from *public_key* (``--public-key FILE``), else from the slot's
    certificate; the last two are checked with a test signature before use."""
    from ..certs.inspect import public_key_matches

    probe = slot_probe(session, slot)
    md = probe.metadata
    if probe.empty:
        raise EmptySlotError(f"slot {slot.label} holds no key")
    if md is not None:
        if md.key_type is KeyType.X25519:
            raise UsageError(f"slot {slot.label} holds an x25519 key, which cannot sign")
        if public_key is not None and not public_key_matches(
                cast("CertificatePublicKeyTypes", md.public_key()),
                cast("CertificatePublicKeyTypes", public_key)):
            raise UsageError(f"the public key given is not the key in slot {slot.label} (the "
                             "card reports another)")
        return SigningKey(session.private_key(slot, md.public_key()), md, None)
    if public_key is not None:
        return SigningKey(session.private_key(slot, public_key), None, "the public key given")
    st = read_slot(session, slot, None)
    if st.certificate is None:
        raise UsageError(f"the card cannot report the key in slot {slot.label} "
                         f"({probe.reason}) and the slot has no certificate to take it from: "
                         "give the public key with --public-key FILE (e.g. the file 'pivtool "
                         "keys generate -o' wrote)")
    return SigningKey(session.private_key(slot, st.certificate.public_key()), None,
                      "the slot's certificate")


def _prove(session: PivSession, prompter: Prompter, slot: Slot, sk: SigningKey,
           allow_last_try: bool) -> None:
    """Where the public key did not come from the card, a test signature shows it is the
    slot's key before anything is built with it (a wrong file would give a CSR that does
    not verify, or a certificate for another key). The PIN is presented again afterwards:
    a key whose PIN policy the card does not tell may want it for every signature."""
    from .keys import test_signature

    if sk.unproven is None:
        return
    if not test_signature(sk.key, sk.key.public_key()):
        raise UsageError(f"{sk.unproven} is not the key in slot {slot.label}: a test "
                         "signature by the card does not verify with it")
    if sk.metadata is None or sk.metadata.pin_policy in (PinPolicy.ALWAYS,
                                                          PinPolicy.MATCH_ALWAYS):
        verify_pin(session, prompter.secret("pin"), allow_last_try, prompter.ask)


def _unlock(session: PivSession, prompter: Prompter, slot: Slot, md: SlotMetadata | None,
            pin_verified: bool, allow_last_try: bool, notify: Notify) -> None:
    """Present the PIN as the key's PIN policy asks (unknown policy: present it), and tell
    the user to touch the key when its touch policy asks."""
    policy = md.pin_policy if md else None
    if policy is not PinPolicy.NEVER and (
            not pin_verified or policy in (PinPolicy.ALWAYS, PinPolicy.MATCH_ALWAYS)):
        # ALWAYS: the card wants a VERIFY right before each signature.
        verify_pin(session, prompter.secret("pin"), allow_last_try, prompter.ask)
    if md is not None and md.touch_policy in (TouchPolicy.ALWAYS, TouchPolicy.CACHED):
        notify(f"Touch the YubiKey to sign with slot {slot.label}...")


@contextlib.contextmanager
def _touch_hint(slot: Slot, md: SlotMetadata | None) -> Iterator[None]:
    """A key that wants a touch answers 6982 when nobody touched it in time (a YubiKey waits
    about 15 s): say that, instead of a bare status word."""
    try:
        yield
    except SecurityStatusError as e:
        if md is None or md.touch_policy not in (TouchPolicy.ALWAYS, TouchPolicy.CACHED):
            raise
        raise SecurityStatusError(e.sw, e.data, (
            f"the key in slot {slot.label} was not touched in time (a YubiKey waits about "
            "15 s); run the command again and touch the key when asked")) from None


@dataclass
class CsrResult:
    """A CSR signed on the card."""

    slot: Slot
    csr: x509.CertificateSigningRequest

    def to_json(self) -> dict[str, Any]:
        """``schema`` (``pivtool.csr/1``), ``slot``, ``subject``, ``upns``, ``emails``,
        ``ekus`` (dotted), ``policies`` (dotted), ``key_algorithm``, ``signature_valid``,
        ``pem``."""
        from cryptography import x509
        from cryptography.hazmat.primitives.serialization import Encoding

        from ..certs.inspect import key_algorithm_name
        from ..certs.profile import UPN_OID, decode_upn

        exts = self.csr.extensions
        upns: list[str] = []
        emails: list[str] = []
        ekus: list[str] = []
        policies: list[str] = []
        for ext in exts:
            v = ext.value
            if isinstance(v, x509.SubjectAlternativeName):
                upns = [decode_upn(o.value) for o in v.get_values_for_type(x509.OtherName)
                        if o.type_id == UPN_OID]
                emails = list(v.get_values_for_type(x509.RFC822Name))
            elif isinstance(v, x509.ExtendedKeyUsage):
                ekus = [o.dotted_string for o in v]
            elif isinstance(v, x509.CertificatePolicies):
                policies = [p.policy_identifier.dotted_string for p in v]
        return {"schema": "pivtool.csr/1", "slot": f"{self.slot.value:02x}",
                "subject": self.csr.subject.rfc4514_string(), "upns": upns,
                "emails": emails, "ekus": ekus, "policies": policies,
                "key_algorithm": key_algorithm_name(self.csr.public_key()),
                "signature_valid": self.csr.is_signature_valid,
                "pem": self.csr.public_bytes(Encoding.PEM).decode("ascii")}


def request_csr(session: PivSession, prompter: Prompter, slot: Slot, request: CertRequest,
                allow_last_try: bool = False, notify: Notify = _quiet,
                public_key: PublicKeyTypes | None = None) -> CsrResult:
    """Build a CSR for *request* and sign it with the slot's key on the card (PIN as the key's
    PIN policy needs, with the retry guard). *public_key* is for cards that cannot report
    the slot's key (checked with a test signature first). The signature is checked before
    returning: a card key that is not the key we think signs a CSR that does not verify."""
    from ..certs.csr import build_csr

    sk = _signing_key(session, slot, public_key)
    _unlock(session, prompter, slot, sk.metadata, False, allow_last_try, notify)
    _prove(session, prompter, slot, sk, allow_last_try)
    with _touch_hint(slot, sk.metadata):
        csr = build_csr(sk.key, request)  # type: ignore[arg-type]
    if not csr.is_signature_valid:
        raise PivToolError(f"the card's signature does not verify with the public key of slot "
                           f"{slot.label}; the slot's key is not the one expected")
    return CsrResult(slot, csr)


@dataclass
class SelfSignResult:
    """A self-signed certificate made on the card and stored in its slot."""

    certificate: x509.Certificate
    install: InstallResult

    def to_json(self) -> dict[str, Any]:
        """``schema`` (``pivtool.cert-selfsign/1``), ``install`` (``pivtool.cert-install/1``)
        and ``pem``."""
        from cryptography.hazmat.primitives.serialization import Encoding

        return {"schema": "pivtool.cert-selfsign/1", "install": self.install.to_json(),
                "pem": self.certificate.public_bytes(Encoding.PEM).decode("ascii")}


def self_sign(session: PivSession, prompter: Prompter, slot: Slot, request: CertRequest,
              days: int = 365, compress: bool = False, force: bool = False,
              backup_dir: Path | None = None, keep_chuid: bool = False,
              allow_last_try: bool = False, notify: Notify = _quiet,
              public_key: PublicKeyTypes | None = None) -> SelfSignResult:
    """Self-sign a certificate for the slot's key on the card and store it in the slot.
    An existing certificate is replaced only with *force* (and saved to *backup_dir* first).
    *public_key* is for cards that cannot report the slot's key (checked with a test
    signature before anything is written)."""
    from cryptography.exceptions import InvalidSignature

    from ..certs.csr import build_self_signed

    sk = _signing_key(session, slot, public_key)
    key, md = sk.key, sk.metadata
    old, old_present = _read_slot_cert(session, slot)
    if old_present and not force:
        what = f"a certificate ({_describe(old)})" if old else "a certificate object"
        raise UsageError(f"slot {slot.label} already holds {what}; use --force to replace it "
                         "(the old certificate is saved to a file first)")
    auth = authenticate(session, prompter, allow_last_try)
    _unlock(session, prompter, slot, md, auth.pin_verified, allow_last_try, notify)
    _prove(session, prompter, slot, sk, allow_last_try)
    with _touch_hint(slot, md):
        cert = build_self_signed(key, request, days)  # type: ignore[arg-type]
    try:
        cert.verify_directly_issued_by(cert)
    except (InvalidSignature, ValueError, TypeError) as e:
        raise PivToolError(f"the card's signature does not verify with the public key of slot "
                           f"{slot.label}; the slot's key is not the one expected") from e
    plan = plan_install(session, slot, [cert], compress, force=True,
                        public_key=key.public_key())
    return SelfSignResult(cert, install_certificate(session, plan, None, keep_chuid,
                                                    backup_dir))


# --- export / delete ----------------------------------------------------------------


@dataclass
class CertExport:
    """A slot's certificate as read."""

    slot: Slot
    certificate: x509.Certificate
    compressed: bool
    matches_key: bool | None

    def to_json(self) -> dict[str, Any]:
        """Schema ``pivtool.cert/1``: ``slot``, ``name``, ``compressed``, ``matches_key``
        (null when the card cannot report the key), ``certificate`` (summary), ``pem``."""
        from cryptography.hazmat.primitives.serialization import Encoding

        from ..certs.inspect import summarize

        return {"schema": CERT_SCHEMA, "slot": f"{self.slot.value:02x}",
                "name": self.slot.label.split(" ", 1)[1].strip("()"),
                "compressed": self.compressed, "matches_key": self.matches_key,
                "certificate": summarize(self.certificate).to_json(),
                "pem": self.certificate.public_bytes(Encoding.PEM).decode("ascii")}


def export_certificate(session: PivSession, slot: Slot) -> CertExport:
    """Read the slot's certificate (no PIN); :class:`EmptySlotError` when there is none."""
    md = slot_probe(session, slot).metadata if slot is not Slot.ATTESTATION else None
    st = read_slot(session, slot, md)
    if st.certificate is None:
        if st.certificate_error:
            raise PivToolError(f"slot {slot.label}: {st.certificate_error}")
        raise EmptySlotError(f"slot {slot.label} holds no certificate")
    return CertExport(slot, st.certificate, st.compressed, st.cert_matches_key())


@dataclass
class CertDeleteResult:
    """What ``certs delete`` did."""

    slot: Slot
    backup: str | None
    chuid_guid: str | None

    def to_json(self) -> dict[str, Any]:
        """``schema`` (``pivtool.cert-delete/1``), ``slot``, ``deleted`` (true), ``backup``,
        ``chuid_guid``."""
        return {"schema": "pivtool.cert-delete/1", "slot": f"{self.slot.value:02x}",
                "deleted": True, "backup": self.backup, "chuid_guid": self.chuid_guid}


def plan_cert_delete(session: PivSession, slot: Slot) -> x509.Certificate | None:
    """The certificate ``certs delete`` would remove (``None``: the object exists but does not
    parse); :class:`EmptySlotError` when the slot has none."""
    if slot is Slot.ATTESTATION:
        raise UsageError("pivtool does not delete the attestation certificate")
    cert, present = _read_slot_cert(session, slot)
    if not present:
        raise EmptySlotError(f"slot {slot.label} holds no certificate")
    return cert


def delete_certificate(session: PivSession, prompter: Prompter, slot: Slot,
                       cert: x509.Certificate | None, backup_dir: Path | None = None,
                       keep_chuid: bool = False, allow_last_try: bool = False
                       ) -> CertDeleteResult:
    """Delete the slot's certificate after saving it to *backup_dir*; renew the CHUID GUID.
    Call after confirmation."""
    authenticate(session, prompter, allow_last_try)
    saved = None
    if cert is not None:
        saved = str(save_certificate(cert, old_cert_path(slot, None, backup_dir,
                                                         card_serial(session))))
    session.delete_certificate(slot)
    guid = None if keep_chuid else refresh_chuid(session).guid_hex
    return CertDeleteResult(slot, saved, guid)
