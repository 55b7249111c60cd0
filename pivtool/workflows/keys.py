"""Slot keys: generate, import, inspect, export, move and delete (attest: ``attest.py``).

Every function that changes a key checks first, with reads only, that the change can work
and is wanted (firmware support, an existing key, a size limit), and only then asks for the
management key. A key replaced by mistake cannot be recovered, so replacing one needs
``force``; certificates that would be lost are saved to a file first.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any, cast

from ..core.errors import (
    ApduError,
    NotSupportedError,
    PivToolError,
    UsageError,
)
from ..piv.constants import (
    KeyType,
    PinPolicy,
    Slot,
    TouchPolicy,
    effective_pin_policy,
    effective_touch_policy,
)
from ..piv.encoding import key_type_of
from ..piv.metadata import SlotMetadata, SlotProbe
from ..piv.session import PivSession
from ..piv.version import check_key_support, has_metadata, has_move_delete
from .auth import Prompter, authenticate
from .state import SlotState, read_slot

if TYPE_CHECKING:
    from cryptography import x509
    from cryptography.hazmat.primitives.asymmetric.types import (
        CertificatePublicKeyTypes,
        PrivateKeyTypes,
        PublicKeyTypes,
    )

    from .certs import InstallPlan, InstallResult

KEY_SCHEMA = "pivtool.key/1"


class EmptySlotError(PivToolError):
    """The slot holds no key (or no certificate) for the operation asked."""


# --- reading a slot's key -----------------------------------------------------------


def has_slot_metadata(session: PivSession) -> bool:
    """True when the card has GET METADATA (YubiKey 5.3+); older YubiKeys and generic PIV
    cards cannot say whether a slot holds a key, nor which. Even then a slot's answer may
    not be understood: :func:`slot_probe` says per slot."""
    return session.version is not None and has_metadata(session.version)


def slot_probe(session: PivSession, slot: Slot) -> SlotProbe:
    """What the card says about *slot*'s key: known, empty or unknown (with the reason)."""
    return session.probe_slot(slot)


def slot_metadata(session: PivSession, slot: Slot) -> SlotMetadata | None:
    """The slot key's metadata; ``None`` when the slot is empty or the card cannot tell
    (:func:`slot_probe` says which)."""
    return session.probe_slot(slot).metadata


def read_slot_state(session: PivSession, slot: Slot) -> SlotState:
    """Key metadata and certificate of one slot (reads only)."""
    probe = slot_probe(session, slot)
    st = read_slot(session, slot, probe.metadata)
    st.key_unknown = probe.reason if probe.unknown else None
    return st


def supported_or_usage(version: Any, key_type: KeyType, pin_policy: PinPolicy,
                       touch_policy: TouchPolicy, generate: bool) -> None:
    """:func:`~pivtool.piv.version.check_key_support`, as a usage error: it is decided from
    the firmware version alone, before anything is sent that changes the card."""
    try:
        check_key_support(version, key_type, pin_policy, touch_policy, generate=generate)
    except NotSupportedError as e:
        raise UsageError(str(e)) from None


def _refuse_replacing(session: PivSession, slot: Slot, force: bool) -> tuple[bool, str | None]:
    """Refuse (without *force*) to overwrite a key. Returns ``(key_was_there, note)``.

    Where the card cannot say whether the slot holds a key (no metadata, or an answer that
    was not understood), a certificate in the slot is the best evidence there is, so that
    is what we go by."""
    probe = slot_probe(session, slot)
    md = probe.metadata
    if md is not None:
        if not force:
            raise UsageError(f"slot {slot.label} already holds an {md.key_type.label} key "
                             f"({md.origin.value}); it would be destroyed for good. Use "
                             "--force to replace it")
        return True, None
    if probe.empty:
        return False, None
    st = read_slot(session, slot, None)
    if st.certificate is not None and not force:
        raise UsageError(f"slot {slot.label} holds a certificate, so probably a key (the card "
                         "cannot tell); use --force to replace it")
    return st.certificate is not None, (f"the card cannot report slot keys ({probe.reason}): "
                                        f"a key already in slot {slot.label} would have "
                                        "been replaced")


def _public_key_pem(key: PublicKeyTypes | None) -> str | None:
    if key is None:
        return None
    from cryptography.hazmat.primitives.serialization import Encoding, PublicFormat

    return key.public_bytes(Encoding.PEM, PublicFormat.SubjectPublicKeyInfo).decode("ascii")


def test_signature(private_key: PrivateKeyTypes, public_key: PublicKeyTypes) -> bool:
    """Sign a random challenge with *private_key* (on the card) and check it with
    *public_key*: whether they are one key pair. X25519 keys cannot sign (False)."""
    import secrets

    from cryptography.exceptions import InvalidSignature
    from cryptography.hazmat.primitives import hashes
    from cryptography.hazmat.primitives.asymmetric import ec, ed25519, padding, rsa

    challenge = secrets.token_bytes(32)
    try:
        if isinstance(private_key, ec.EllipticCurvePrivateKey) and isinstance(
                public_key, ec.EllipticCurvePublicKey):
            public_key.verify(private_key.sign(challenge, ec.ECDSA(hashes.SHA256())),
                              challenge, ec.ECDSA(hashes.SHA256()))
        elif isinstance(private_key, rsa.RSAPrivateKey) and isinstance(
                public_key, rsa.RSAPublicKey):
            public_key.verify(private_key.sign(challenge, padding.PKCS1v15(), hashes.SHA256()),
                              challenge, padding.PKCS1v15(), hashes.SHA256())
        elif isinstance(private_key, ed25519.Ed25519PrivateKey) and isinstance(
                public_key, ed25519.Ed25519PublicKey):
            public_key.verify(private_key.sign(challenge), challenge)
        else:
            return False
    except InvalidSignature:
        return False
    return True


def load_public_key_file(data: bytes) -> PublicKeyTypes:
    """A public key from PEM or DER (SubjectPublicKeyInfo, as ``keys generate -o`` writes
    it). Malformed input is a one-line :class:`~pivtool.certs.errors.CertInputError`."""
    from cryptography.hazmat.primitives.serialization import (
        load_der_public_key,
        load_pem_public_key,
    )

    from ..certs.errors import CertInputError

    if not data.strip():
        raise CertInputError("the public key file is empty")
    try:
        if b"-----BEGIN " in data[:65536]:
            return load_pem_public_key(data)
        return load_der_public_key(data)
    except (ValueError, TypeError) as e:
        raise CertInputError("the file does not hold a public key (PEM or DER "
                             "SubjectPublicKeyInfo)") from e


# --- info / export ------------------------------------------------------------------


@dataclass
class KeyInfo:
    """One slot: its key (when the card tells), its certificate, and whether they match."""

    state: SlotState
    metadata_available: bool

    @property
    def public_key(self) -> PublicKeyTypes | None:
        """The slot's public key; from the certificate when the card cannot report it."""
        if self.state.public_key is not None:
            return self.state.public_key  # type: ignore[no-any-return]
        if not self.metadata_available and self.state.certificate is not None:
            return self.state.certificate.public_key()  # type: ignore[no-any-return]
        return None

    @property
    def public_key_source(self) -> str | None:
        """``metadata``, ``certificate`` (assumed: the card cannot confirm) or ``None``."""
        if self.state.public_key is not None:
            return "metadata"
        return "certificate" if self.public_key is not None else None

    def to_json(self) -> dict[str, Any]:
        """Schema ``pivtool.key/1``: the slot fields of ``pivtool.info/1`` (``slot``,
        ``name``, ``key`` {algorithm, pin_policy, touch_policy, origin} or null,
        ``certificate`` summary or null, ``certificate_error``, ``certificate_compressed``,
        ``certificate_matches_key``) plus ``metadata_available``, ``public_key_pem`` and
        ``public_key_source`` (``metadata``/``certificate``/null)."""
        return {"schema": KEY_SCHEMA, **self.state.to_json(),
                "metadata_available": self.metadata_available,
                "public_key_pem": _public_key_pem(self.public_key),
                "public_key_source": self.public_key_source}


def key_info(session: PivSession, slot: Slot) -> KeyInfo:
    """Everything about one slot's key, spending no PIN try."""
    st = read_slot_state(session, slot)
    return KeyInfo(st, st.key_unknown is None)


def export_public_key(session: PivSession, slot: Slot) -> tuple[PublicKeyTypes, str]:
    """The slot's public key and where it came from (``metadata`` or ``certificate``).
    :class:`EmptySlotError` when there is none to be had."""
    info = key_info(session, slot)
    key = info.public_key
    if key is None:
        if info.metadata_available:
            raise EmptySlotError(f"slot {slot.label} holds no key")
        raise EmptySlotError(f"the card cannot report the key in slot {slot.label} "
                             f"({info.state.key_unknown}) and the slot has no certificate to "
                             "take the public key from")
    assert info.public_key_source is not None
    return key, info.public_key_source


# --- generate -----------------------------------------------------------------------


@dataclass
class GenerateResult:
    """A key generated on the card."""

    slot: Slot
    key_type: KeyType
    pin_policy: str
    touch_policy: str
    public_key: PublicKeyTypes
    replaced: bool
    stale_certificate: bool
    notes: list[str] = field(default_factory=list)

    def to_json(self) -> dict[str, Any]:
        """``schema`` (``pivtool.key-generate/1``), ``slot``, ``algorithm``, ``pin_policy``,
        ``touch_policy``, ``replaced`` (a key was overwritten), ``stale_certificate`` (the
        slot's certificate belongs to another key now), ``public_key_pem``, ``notes``."""
        return {"schema": "pivtool.key-generate/1", "slot": f"{self.slot.value:02x}",
                "algorithm": self.key_type.label, "pin_policy": self.pin_policy,
                "touch_policy": self.touch_policy, "replaced": self.replaced,
                "stale_certificate": self.stale_certificate,
                "public_key_pem": _public_key_pem(self.public_key), "notes": self.notes}


def generate_key(session: PivSession, prompter: Prompter, slot: Slot, key_type: KeyType,
                 pin_policy: PinPolicy = PinPolicy.DEFAULT,
                 touch_policy: TouchPolicy = TouchPolicy.DEFAULT, force: bool = False,
                 allow_last_try: bool = False) -> GenerateResult:
    """Generate a key pair in *slot*. Refuses, before asking for the management key, an
    algorithm or policy the firmware lacks and (without *force*) an occupied slot."""
    supported_or_usage(session.version, key_type, pin_policy, touch_policy, generate=True)
    replaced, note = _refuse_replacing(session, slot, force)
    authenticate(session, prompter, allow_last_try)
    public_key = session.generate_key(slot, key_type, pin_policy, touch_policy)
    # The policies follow from what was asked and the slot's defaults: no metadata read.
    st = read_slot(session, slot, None)
    st.public_key = public_key
    stale = st.certificate is not None and st.cert_matches_key() is not True
    return GenerateResult(
        slot, key_type, effective_pin_policy(slot, pin_policy).label,
        effective_touch_policy(touch_policy).label, public_key, replaced, stale,
        [note] if note else [])


# --- import -------------------------------------------------------------------------


@dataclass
class KeyMaterial:
    """A private key read from a file, with the certificate that belongs to it (if any)."""

    private_key: PrivateKeyTypes = field(repr=False)
    certificate: x509.Certificate | None
    file_format: str  # "pem", "der", "pkcs12"
    notes: list[str] = field(default_factory=list)


def der_first_element(data: bytes) -> tuple[int, bytes] | None:
    """Tag and (short) value of the first element inside a DER SEQUENCE, or None.

    Enough to tell the DER containers apart: PKCS#12 starts with INTEGER 3, PKCS#1/PKCS#8/
    SEC1 keys with a small INTEGER, an encrypted PKCS#8 key with a SEQUENCE."""
    if len(data) < 4 or data[0] != 0x30:
        return None
    pos = 2 + (data[1] & 0x7F if data[1] & 0x80 else 0)
    if pos + 2 > len(data):
        return None
    tag, length = data[pos], data[pos + 1]
    if length & 0x80:
        return tag, b""
    return tag, data[pos + 2:pos + 2 + length]


def cert_has_key(cert: x509.Certificate, key: PublicKeyTypes) -> bool:
    """True when *cert* certifies *key* (SubjectPublicKeyInfo compared)."""
    from ..certs.inspect import public_key_matches

    return public_key_matches(cert, cast("CertificatePublicKeyTypes", key))


def _matching_cert(key: PrivateKeyTypes, certs: list[x509.Certificate]
                   ) -> x509.Certificate | None:
    pub = key.public_key()
    return next((c for c in certs if cert_has_key(c, pub)), None)


def load_key_file(data: bytes, password: Callable[[], bytes]) -> KeyMaterial:
    """Read a private key from PEM (with any certificates in the same file), DER (PKCS#1,
    PKCS#8, SEC1, encrypted PKCS#8) or PKCS#12. *password* is called only when the file
    needs one. Errors are one-line :class:`~pivtool.certs.errors.CertInputError`s."""
    from ..certs.errors import CertInputError
    from ..certs.inspect import load_certificates, load_pkcs12, load_private_key

    if not data.strip():
        raise CertInputError("the key file is empty")
    if b"-----BEGIN " in data[:65536]:
        encrypted = b"ENCRYPTED" in data
        key = load_private_key(data, password() if encrypted else None)
        certs = load_certificates(data) if b"-----BEGIN CERTIFICATE" in data else []
        cert = _matching_cert(key, certs)
        notes = []
        if certs and cert is None:
            notes.append("the certificate(s) in the file do not match the key; not imported")
        return KeyMaterial(key, cert, "pem", notes)
    first = der_first_element(data)
    if first is None:
        raise CertInputError("the file is neither PEM, DER nor PKCS#12")
    tag, value = first
    if tag == 0x02 and value == b"\x03":
        key12: PrivateKeyTypes | None
        try:
            key12, cert12, extra = load_pkcs12(data, None)
        except CertInputError:
            key12, cert12, extra = load_pkcs12(data, password())
        if key12 is None:
            raise CertInputError("the PKCS#12 file holds no private key")
        candidates = [c for c in (cert12, *extra) if c is not None]
        cert = _matching_cert(key12, candidates)
        notes = []
        if candidates and cert is None:
            notes.append("the PKCS#12 certificate does not match its key; not imported")
        return KeyMaterial(key12, cert, "pkcs12", notes)
    key = load_private_key(data, password() if tag == 0x30 else None)
    return KeyMaterial(key, None, "der")


@dataclass
class ImportResult:
    """A key (and perhaps its certificate) imported into a slot."""

    slot: Slot
    key_type: KeyType
    file_format: str
    replaced: bool
    certificate: InstallResult | None
    notes: list[str] = field(default_factory=list)

    def to_json(self) -> dict[str, Any]:
        """``schema`` (``pivtool.key-import/1``), ``slot``, ``algorithm``, ``format``,
        ``replaced``, ``certificate`` (a ``pivtool.cert-install/1`` object or null),
        ``notes``."""
        return {"schema": "pivtool.key-import/1", "slot": f"{self.slot.value:02x}",
                "algorithm": self.key_type.label, "format": self.file_format,
                "replaced": self.replaced,
                "certificate": self.certificate.to_json() if self.certificate else None,
                "notes": self.notes}


def plan_key_import(session: PivSession, slot: Slot, material: KeyMaterial,
                    pin_policy: PinPolicy, touch_policy: TouchPolicy, with_cert: bool,
                    compress: bool, force: bool) -> tuple[bool, list[str], InstallPlan | None]:
    """All checks of a key import, with reads only: ``(replaces_key, notes, cert plan)``."""
    from .certs import plan_install

    if not session.is_yubikey:
        raise UsageError("importing keys is a YubiKey extension; a generic PIV card only "
                         "generates its keys itself")
    key_type = key_type_of(material.private_key)
    supported_or_usage(session.version, key_type, pin_policy, touch_policy, generate=False)
    replaced, note = _refuse_replacing(session, slot, force)
    notes = list(material.notes) + ([note] if note else [])
    plan = None
    if with_cert and material.certificate is not None:
        # The key is about to change, so the slot's old certificate is stale whatever it is:
        # replacing it is part of replacing the key (it is still saved first).
        plan = plan_install(session, slot, [material.certificate], compress,
                            force=force or replaced,
                            public_key=material.private_key.public_key())
    return replaced, notes, plan


def import_key(session: PivSession, prompter: Prompter, slot: Slot, material: KeyMaterial,
               pin_policy: PinPolicy = PinPolicy.DEFAULT,
               touch_policy: TouchPolicy = TouchPolicy.DEFAULT, with_cert: bool = True,
               compress: bool = False, force: bool = False, backup: Path | None = None,
               keep_chuid: bool = False, allow_last_try: bool = False,
               backup_dir: Path | None = None) -> ImportResult:
    """Import *material*'s key into *slot* and, unless *with_cert* is false, its certificate
    (the slot's old certificate saved to *backup* or *backup_dir* first, CHUID renewed)."""
    from .certs import install_certificate

    replaced, notes, plan = plan_key_import(session, slot, material, pin_policy, touch_policy,
                                            with_cert, compress, force)
    authenticate(session, prompter, allow_last_try)
    key_type = session.import_key(slot, material.private_key, pin_policy, touch_policy)
    installed = None
    if plan is not None:
        installed = install_certificate(session, plan, backup, keep_chuid, backup_dir)
    elif material.certificate is not None and not with_cert:
        notes.append("certificate not imported (--no-cert)")
    return ImportResult(slot, key_type, material.file_format, replaced, installed, notes)


# --- move / delete ------------------------------------------------------------------


def _known_key(session: PivSession, slot: Slot) -> SlotMetadata:
    """The metadata of the key in *slot*; an error when the slot is empty or the card's
    answer about it was not understood (a key that cannot be described is not moved or
    deleted)."""
    probe = slot_probe(session, slot)
    if probe.metadata is not None:
        return probe.metadata
    if probe.empty:
        raise EmptySlotError(f"slot {slot.label} holds no key")
    raise PivToolError(f"the card cannot say what slot {slot.label} holds ({probe.reason})")


def _require_move_delete(session: PivSession, what: str) -> None:
    if session.version is None:
        raise NotSupportedError(f"{what} is a YubiKey extension; this is a generic PIV card")
    if not has_move_delete(session.version):
        raise NotSupportedError(f"{what} needs YubiKey firmware 5.7 or later (this key has "
                                f"{session.version})")


@dataclass
class MoveResult:
    """A key (and its certificate) moved between slots."""

    source: Slot
    destination: Slot
    key_type: str
    certificate_moved: bool
    replaced_key: bool
    backup: str | None
    chuid_guid: str | None

    def to_json(self) -> dict[str, Any]:
        """``schema`` (``pivtool.key-move/1``), ``from``, ``to``, ``algorithm``,
        ``certificate_moved``, ``replaced_key``, ``backup`` (path of the destination's saved
        certificate or null), ``chuid_guid`` (new CHUID GUID or null)."""
        return {"schema": "pivtool.key-move/1", "from": f"{self.source.value:02x}",
                "to": f"{self.destination.value:02x}", "algorithm": self.key_type,
                "certificate_moved": self.certificate_moved,
                "replaced_key": self.replaced_key, "backup": self.backup,
                "chuid_guid": self.chuid_guid}


def move_key(session: PivSession, prompter: Prompter, src: Slot, dst: Slot,
             with_cert: bool = True, force: bool = False,
             backup_dir: Path | None = None, keep_chuid: bool = False,
             allow_last_try: bool = False) -> MoveResult:
    """Move the key in *src* to *dst* (YubiKey 5.7+), and its certificate with it unless
    *with_cert* is false (the card moves only the key). An occupied destination needs
    *force*; its certificate is saved to *backup_dir* first."""
    from ..piv.objects import encode_certificate_object
    from .certs import old_cert_path, save_certificate
    from .objects import check_object_size, refresh_chuid

    _require_move_delete(session, "MOVE KEY")
    if src == dst or Slot.ATTESTATION in (src, dst):
        raise UsageError("cannot move a key onto itself or to/from the attestation slot")
    md = _known_key(session, src)
    dst_probe = slot_probe(session, dst)
    if dst_probe.unknown:
        raise PivToolError(f"the card cannot say whether slot {dst.label} holds a key "
                           f"({dst_probe.reason}); not moving a key onto it")
    dst_md = dst_probe.metadata
    dst_state = read_slot(session, dst, dst_md)
    src_state = read_slot(session, src, md)
    move_cert = with_cert and src_state.certificate is not None
    if (dst_md is not None or (move_cert and dst_state.certificate is not None)) and not force:
        what = "a key" if dst_md is not None else "a certificate"
        raise UsageError(f"slot {dst.label} already holds {what}; use --force to replace it "
                         "(its certificate is saved first)")
    cert_obj = b""
    if move_cert:
        from cryptography.hazmat.primitives.serialization import Encoding

        der = src_state.certificate.public_bytes(Encoding.DER)
        cert_obj = encode_certificate_object(der, src_state.compressed)
        check_object_size(dst.object_id, cert_obj)
    authenticate(session, prompter, allow_last_try)
    backup = None
    if dst_state.certificate is not None and (move_cert or dst_md is not None):
        backup = save_certificate(dst_state.certificate,
                                  old_cert_path(dst, None, backup_dir, card_serial(session)))
    if dst_md is not None:
        # A YubiKey refuses MOVE KEY onto an occupied slot; clear it first (confirmed above).
        session.delete_key(dst)
    session.move_key(src, dst)
    guid = None
    if move_cert:
        # Key first, then certificate: a card pulled in between still holds the certificate.
        session.put_data(dst.object_id, cert_obj)
        session.delete_certificate(src)
        if not keep_chuid:
            guid = refresh_chuid(session).guid_hex
    return MoveResult(src, dst, md.key_type.label, move_cert, dst_md is not None,
                      str(backup) if backup else None, guid)


def card_serial(session: PivSession) -> int | None:
    """The YubiKey serial (firmware 5+), else ``None``."""
    from ..piv.version import has_serial_ins

    if session.version is None or not has_serial_ins(session.version):
        return None
    try:
        return session.get_serial()
    except ApduError:
        return None


@dataclass
class DeletePlan:
    """What ``keys delete`` would destroy (for the confirmation)."""

    slot: Slot
    key_type: str
    origin: str
    certificate: x509.Certificate | None
    delete_cert: bool

    def describe(self) -> str:
        """One line for the confirmation prompt."""
        text = f"Delete the {self.key_type} key ({self.origin}) in slot {self.slot.label}"
        if self.certificate is not None:
            verb = "and its certificate" if self.delete_cert else "but keep its certificate"
            text += f" {verb} ({self.certificate.subject.rfc4514_string()})"
        return text + "?"


def plan_key_delete(session: PivSession, slot: Slot, delete_cert: bool = True) -> DeletePlan:
    """Check that the key can be deleted (YubiKey 5.7+, a key in the slot), reads only."""
    _require_move_delete(session, "DELETE KEY")
    if slot is Slot.ATTESTATION:
        raise UsageError("pivtool does not delete the attestation key (it cannot be put back)")
    md = _known_key(session, slot)
    st = read_slot(session, slot, md)
    return DeletePlan(slot, md.key_type.label, md.origin.value, st.certificate, delete_cert)


@dataclass
class DeleteResult:
    """What ``keys delete`` did."""

    slot: Slot
    certificate_deleted: bool
    backup: str | None
    chuid_guid: str | None

    def to_json(self) -> dict[str, Any]:
        """``schema`` (``pivtool.key-delete/1``), ``slot``, ``key_deleted`` (true),
        ``certificate_deleted``, ``backup`` (saved certificate path or null),
        ``chuid_guid`` (new GUID or null)."""
        return {"schema": "pivtool.key-delete/1", "slot": f"{self.slot.value:02x}",
                "key_deleted": True, "certificate_deleted": self.certificate_deleted,
                "backup": self.backup, "chuid_guid": self.chuid_guid}


def delete_key(session: PivSession, prompter: Prompter, plan: DeletePlan,
               backup_dir: Path | None = None, keep_chuid: bool = False,
               allow_last_try: bool = False) -> DeleteResult:
    """Delete the planned key; its certificate is saved first, then deleted too unless the
    plan keeps it. Call after confirmation."""
    from .certs import old_cert_path, save_certificate
    from .objects import refresh_chuid

    authenticate(session, prompter, allow_last_try)
    backup = None
    if plan.certificate is not None:
        backup = save_certificate(plan.certificate,
                                  old_cert_path(plan.slot, None, backup_dir, card_serial(session)))
    session.delete_key(plan.slot)
    guid = None
    cert_deleted = plan.certificate is not None and plan.delete_cert
    if cert_deleted:
        session.delete_certificate(plan.slot)
        if not keep_chuid:
            guid = refresh_chuid(session).guid_hex
    return DeleteResult(plan.slot, cert_deleted, str(backup) if backup else None, guid)
