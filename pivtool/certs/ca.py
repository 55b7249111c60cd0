"""A small file-based lab CA that issues Entra CBA / smart-card-logon certificates.

For labs, demos and tests only: one self-signed root that signs end-entity certificates
directly. Directory layout::

    ca.key      root private key, PKCS#8 PEM, mode 0600, encrypted when a passphrase is set
    ca.pem      root certificate
    ca.json     settings (subject, key type, CRL/AIA URLs, last CRL number)
    index.json  one record per issued certificate (status, revocation)
    certs/      issued certificates, <serial>.pem
    crl.pem, crl.der   the last CRL produced by :meth:`LabCA.crl` (publish crl.der over HTTP)

Every change (issue, revoke, CRL) holds an exclusive lock on ``.lock`` in the directory
(``flock``) from reading the index to writing it back, so parallel pivtool processes never
lose each other's records and CRL numbers strictly increase; files are replaced atomically
(write to a temporary file, fsync, rename).

Beside it: ``cafiles.py`` (the directory's files, the lock, parsing what callers pass in),
``carequest.py`` (what a request must pass before it is signed: CSR key and SAN, policies,
the attestation requirement) and ``caindex.py`` (index.json, revocation, the CRL).
"""

from __future__ import annotations

import datetime as _dt
import os
import secrets
from pathlib import Path
from typing import Any

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec, ed25519, rsa
from cryptography.hazmat.primitives.asymmetric.types import (
    CertificateIssuerPrivateKeyTypes,
    CertificatePublicKeyTypes,
)
from cryptography.x509.oid import AuthorityInformationAccessOID

from .cafiles import (
    ATTESTATION_ROOTS_FILE,
    BACKDATE,
    CA_KEY_TYPES,
    CERT_FILE,
    CERTS_DIR,
    CONFIG_FILE,
    FORMAT_VERSION,
    INDEX_FILE,
    KEY_FILE,
    MIN_PASSPHRASE,
    MIN_RSA_BITS,
    IssuedRecord,
    check_http_url,
    encrypt_key,
    generate_key,
    load_csr,
    locked,
    parse_reason,
    parse_serial,
    read_json,
    utc_now,
    write_json,
    write_public,
)
from .caindex import IssuedIndex, build_crl, write_crl
from .carequest import (
    AttestationChain,
    attestation_requirement,
    check_attestation,
    check_request_extensions,
    check_request_key,
    dropped_policies,
)
from .csr import SignatureHash, default_hash
from .errors import CertInputError, CertMismatchError, LabCAError
from .inspect import iso_utc, load_certificate, load_private_key, public_key_matches, serial_hex
from .profile import (
    ENTRA_SMARTCARD_LOGON,
    key_usage_extension,
    parse_name,
    upn_other_name,
)

__all__ = ["CA_KEY_TYPES", "IssuedRecord", "LabCA"]

class LabCA:
    """A lab CA stored in a directory. Create with :meth:`init`, reopen with :meth:`open`."""

    def __init__(
        self,
        directory: Path,
        key: CertificateIssuerPrivateKeyTypes,
        certificate: x509.Certificate,
        config: dict[str, Any],
    ) -> None:
        """Internal: use :meth:`init` or :meth:`open`."""
        self._dir = directory
        self._key = key
        self._cert = certificate
        self._config = config
        self._index = IssuedIndex(directory)

    # ------------------------------------------------------------------ lifecycle

    @classmethod
    def init(
        cls,
        directory: str | os.PathLike[str],
        subject: str | x509.Name,
        crl_url: str | None = None,
        passphrase: bytes | str | None = None,
        key_type: str = "eccp256",
        days: int = 3650,
        *,
        aia_url: str | None = None,
        allowed_policies: list[str] | None = None,
        min_rsa_bits: int = MIN_RSA_BITS,
        now: _dt.datetime | None = None,
    ) -> LabCA:
        """Create a new CA in ``directory`` (created if needed; must not hold a CA already).

        ``allowed_policies``: the certificate policy OIDs this CA copies from a CSR into the
        certificate (default none: a requester must not choose a policy that Entra's
        authentication-binding rules may rate as multi-factor).

        ``crl_url`` (http://) goes into every issued certificate as its single CRL
        distribution point; ``aia_url`` (http://) as the AIA caIssuers location. The root key
        file is created with mode 0600 and encrypted with ``passphrase`` when one is given.
        """
        path = Path(directory)
        name = parse_name(subject)
        if crl_url is not None:
            crl_url = check_http_url(crl_url, "CRL URL")
        if aia_url is not None:
            aia_url = check_http_url(aia_url, "AIA URL")
        if days < 1:
            raise CertInputError("CA validity must be at least one day")
        from .profile import parse_oid

        allowed = list(dict.fromkeys(parse_oid(o).dotted_string for o in allowed_policies or []))
        if passphrase is not None and not passphrase:
            raise CertInputError("passphrase is empty (omit it for an unencrypted lab key)")
        if passphrase is not None and len(passphrase) < MIN_PASSPHRASE:
            raise CertInputError(f"the CA passphrase must have at least {MIN_PASSPHRASE} "
                                 "characters")
        if min_rsa_bits not in (1024, 2048, 3072, 4096):
            raise CertInputError("the minimum RSA key size must be 1024, 2048, 3072 or 4096")
        if (path / KEY_FILE).exists() or (path / CONFIG_FILE).exists():
            raise LabCAError(f"{path} already contains a CA")
        key = generate_key(key_type)

        path.mkdir(mode=0o700, parents=True, exist_ok=True)
        (path / CERTS_DIR).mkdir(mode=0o700, exist_ok=True)

        start = utc_now(now)
        public_key = key.public_key()
        ski = x509.SubjectKeyIdentifier.from_public_key(public_key)
        cert = (
            x509.CertificateBuilder()
            .subject_name(name)
            .issuer_name(name)
            .public_key(public_key)
            .serial_number(cls._new_serial(set()))
            .not_valid_before(start - BACKDATE)
            .not_valid_after(start + _dt.timedelta(days=days))
            .add_extension(x509.BasicConstraints(ca=True, path_length=0), critical=True)
            .add_extension(
                key_usage_extension(public_key,
                                    ["digital_signature", "key_cert_sign", "crl_sign"]),
                critical=True,
            )
            .add_extension(ski, critical=False)
            .add_extension(
                x509.AuthorityKeyIdentifier.from_issuer_subject_key_identifier(ski), critical=False
            )
            .sign(key, default_hash(public_key))
        )

        if passphrase:
            pem_key = encrypt_key(key, passphrase.encode("utf-8")
                                   if isinstance(passphrase, str) else passphrase)
        else:
            pem_key = key.private_bytes(serialization.Encoding.PEM,
                                        serialization.PrivateFormat.PKCS8,
                                        serialization.NoEncryption())
        # O_EXCL + 0o600 at creation: the key is never readable by others, not even briefly.
        fd = os.open(path / KEY_FILE, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
        with os.fdopen(fd, "wb") as handle:
            if hasattr(os, "fchmod"):  # POSIX; umask can only remove bits, make it exact
                os.fchmod(handle.fileno(), 0o600)
            handle.write(pem_key)
            handle.flush()
            os.fsync(handle.fileno())
        write_public(path / CERT_FILE, cert.public_bytes(serialization.Encoding.PEM))
        config = {
            "version": FORMAT_VERSION,
            "subject": name.rfc4514_string(),
            "key_type": key_type,
            "crl_url": crl_url,
            "aia_url": aia_url,
            "crl_number": 0,
            "allowed_policies": allowed,
            "min_rsa_bits": min_rsa_bits,
            "encrypted": bool(passphrase),
            "created": iso_utc(start),
        }
        write_json(path / INDEX_FILE, {"version": FORMAT_VERSION, "issued": []})
        write_json(path / CONFIG_FILE, config)
        return cls(path, key, cert, config)

    @staticmethod
    def is_encrypted(directory: str | os.PathLike[str]) -> bool:
        """Whether the CA key in *directory* needs a passphrase (False when the directory
        holds no readable CA: :meth:`open` then reports that properly)."""
        try:
            return bool(read_json(Path(directory) / CONFIG_FILE).get("encrypted"))
        except LabCAError:
            return False

    @classmethod
    def open(
        cls, directory: str | os.PathLike[str], passphrase: bytes | str | None = None
    ) -> LabCA:
        """Open an existing CA. Raises :class:`LabCAError` if the directory holds no CA and
        :class:`CertInputError` if the key cannot be decrypted with ``passphrase``."""
        path = Path(directory)
        config = read_json(path / CONFIG_FILE)
        try:
            key_pem = (path / KEY_FILE).read_bytes()
            cert_pem = (path / CERT_FILE).read_bytes()
        except OSError as e:
            raise LabCAError(f"CA files in {path} are missing or unreadable") from e
        try:
            key = load_private_key(key_pem, passphrase)
        except CertInputError as e:
            raise CertInputError(f"cannot open the CA key in {path}: {e}") from e
        if not isinstance(
            key, (rsa.RSAPrivateKey, ec.EllipticCurvePrivateKey, ed25519.Ed25519PrivateKey)
        ):
            raise LabCAError(f"the CA key in {path} has an unsupported type")
        cert = load_certificate(cert_pem)
        if not public_key_matches(cert, key.public_key()):
            raise CertMismatchError(f"ca.key and ca.pem in {path} do not belong together")
        return cls(path, key, cert, config)

    # ------------------------------------------------------------------ properties

    @property
    def directory(self) -> Path:
        """The CA directory."""
        return self._dir

    @property
    def certificate(self) -> x509.Certificate:
        """The root certificate."""
        return self._cert

    @property
    def index_problems(self) -> list[str]:
        """Malformed index records found by the last index read (one line each): kept in
        index.json, ignored by listing, revocation and CRLs."""
        return self._index.problems

    @property
    def crl_url(self) -> str | None:
        """The CRL distribution point written into issued certificates."""
        value = self._config.get("crl_url")
        return str(value) if value else None

    @property
    def aia_url(self) -> str | None:
        """The AIA caIssuers URL written into issued certificates."""
        value = self._config.get("aia_url")
        return str(value) if value else None

    @property
    def allowed_policies(self) -> list[str]:
        """Policy OIDs this CA copies from a CSR (``ca init --allow-policy``); others are
        dropped. A CA made before the allow-list existed allows none."""
        value = self._config.get("allowed_policies")
        return [str(v) for v in value] if isinstance(value, list) else []

    def dropped_policies(self, csr: x509.CertificateSigningRequest | bytes) -> list[str]:
        """The policy OIDs *csr* asks for that this CA will not issue."""
        return dropped_policies(csr, self.allowed_policies)

    @property
    def attestation_policy(self) -> dict[str, Any] | None:
        """The CA's attestation requirement (``min_pin_policy``, ``min_touch_policy``,
        ``roots``: whether the CA has its own roots file), or None when it requires none."""
        value = self._config.get("attestation")
        return dict(value) if isinstance(value, dict) else None

    def require_attestation(self, roots_pem: bytes | None = None,
                            min_pin_policy: str | None = None,
                            min_touch_policy: str | None = None) -> None:
        """From now on, issue only for keys with a verified attestation (YubiKey: generated
        on the card), chaining to *roots_pem* (default: Yubico's PIV attestation roots),
        with at least these PIN and touch policies."""
        requirement = attestation_requirement(roots_pem, min_pin_policy, min_touch_policy)
        with locked(self._dir):
            if roots_pem is not None:
                write_public(self._dir / ATTESTATION_ROOTS_FILE, roots_pem)
            config = read_json(self._dir / CONFIG_FILE)
            config["attestation"] = requirement
            write_json(self._dir / CONFIG_FILE, config)
            self._config = config

    # ------------------------------------------------------------------ index

    def issued(self) -> list[IssuedRecord]:
        """Every certificate this CA issued, oldest first."""
        return self._index.load()

    def get(self, serial: int | str) -> IssuedRecord:
        """The index record of ``serial`` (int or hex). Raises :class:`LabCAError` if unknown."""
        return self._index.find(parse_serial(serial))

    def load_issued(self, serial: int | str) -> x509.Certificate:
        """The issued certificate with ``serial``."""
        record = self.get(serial)
        try:
            return load_certificate((self._dir / CERTS_DIR / f"{record.serial}.pem").read_bytes())
        except OSError as e:
            raise LabCAError(f"certificate file for serial {record.serial} is missing") from e

    @staticmethod
    def _new_serial(taken: set[int]) -> int:
        # 16 random bytes with the top bits set to 01: always positive, always exactly 16 DER
        # bytes (no 0x00 sign byte), which keeps certificateUserIds serial strings uniform.
        while True:
            raw = bytearray(secrets.token_bytes(16))
            raw[0] = (raw[0] & 0x3F) | 0x40
            serial = int.from_bytes(raw, "big")
            if serial not in taken:
                return serial

    # ------------------------------------------------------------------ issuing

    def _signing_hash(self) -> SignatureHash | None:
        return default_hash(self._key.public_key())

    def issue(
        self,
        csr: x509.CertificateSigningRequest | bytes,
        days: int = 365,
        *,
        now: _dt.datetime | None = None,
        attestation: AttestationChain | None = None,
        require_attestation: bool = False,
    ) -> x509.Certificate:
        """Issue a smart-card-logon certificate for ``csr`` (object, PEM or DER).

        ``attestation`` is (attestation certificate, [f9 certificate, intermediates...]) of
        the CSR's key. It is checked when ``require_attestation`` is true or the CA requires
        attestation (:meth:`require_attestation`): the chain must verify, the attested key
        must be the CSR's, and its PIN/touch policies at least the CA's minimums.

        Verifies the CSR signature and requires at least one UPN (``user@domain``) or e-mail
        in its SAN. The certificate gets the CSR's subject, a SAN with exactly those UPNs and
        e-mails (other name types are dropped), key usage digitalSignature (+keyEncipherment
        for RSA), EKU Smart Card Logon + Client Authentication, those of the CSR's certificate
        policies on the CA's allow-list (:attr:`allowed_policies`; :meth:`dropped_policies`
        names the others),
        one HTTP CRL distribution point and AIA caIssuers when configured, SKI/AKI and
        BasicConstraints CA=false. Raises :class:`CertRequestRefusedError` otherwise.
        """
        request = load_csr(csr)
        if days < 1:
            raise CertInputError("validity must be at least one day")
        public_key = check_request_key(
            request, int(self._config.get("min_rsa_bits") or MIN_RSA_BITS))
        upns, emails, requested = check_request_extensions(request)
        allowed = set(self.allowed_policies)
        policies = [p for p in requested if p.policy_identifier.dotted_string in allowed]
        attested = check_attestation(self._dir, self.attestation_policy, public_key,
                                     attestation, require_attestation)
        with locked(self._dir):
            return self._issue_locked(request, public_key, upns, emails, policies, days, now,
                                      attested)

    def _issue_locked(self, request: x509.CertificateSigningRequest,
                      public_key: CertificatePublicKeyTypes, upns: list[str],
                      emails: list[str], policies: list[x509.PolicyInformation], days: int,
                      now: _dt.datetime | None, attested: dict[str, Any] | None
                      ) -> x509.Certificate:
        records = self._index.load()
        start = utc_now(now)
        not_after = min(start + _dt.timedelta(days=days), self._cert.not_valid_after_utc)
        if not_after <= start:
            raise LabCAError("the CA certificate has expired; create a new CA")
        san: list[x509.GeneralName] = [upn_other_name(u) for u in upns]
        san += [x509.RFC822Name(e) for e in emails]
        ca_ski = self._cert.extensions.get_extension_for_class(x509.SubjectKeyIdentifier).value
        builder = (
            x509.CertificateBuilder()
            .subject_name(request.subject)
            .issuer_name(self._cert.subject)
            .public_key(public_key)
            .serial_number(self._new_serial({r.serial_number for r in records}))
            .not_valid_before(start - BACKDATE)
            .not_valid_after(not_after)
            .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
            .add_extension(
                key_usage_extension(
                    public_key, ENTRA_SMARTCARD_LOGON.key_usage, ENTRA_SMARTCARD_LOGON.rsa_key_usage
                ),
                critical=True,
            )
            .add_extension(x509.ExtendedKeyUsage(list(ENTRA_SMARTCARD_LOGON.ekus)), critical=False)
            # RFC 5280: the SAN must be critical when the subject is empty.
            .add_extension(x509.SubjectAlternativeName(san), critical=len(request.subject) == 0)
            .add_extension(x509.SubjectKeyIdentifier.from_public_key(public_key), critical=False)
            .add_extension(
                x509.AuthorityKeyIdentifier.from_issuer_subject_key_identifier(ca_ski),
                critical=False,
            )
        )
        if policies:
            builder = builder.add_extension(x509.CertificatePolicies(policies), critical=False)
        if self.crl_url:
            point = x509.DistributionPoint(
                full_name=[x509.UniformResourceIdentifier(self.crl_url)],
                relative_name=None,
                reasons=None,
                crl_issuer=None,
            )
            builder = builder.add_extension(x509.CRLDistributionPoints([point]), critical=False)
        if self.aia_url:
            access = x509.AccessDescription(
                AuthorityInformationAccessOID.CA_ISSUERS,
                x509.UniformResourceIdentifier(self.aia_url),
            )
            builder = builder.add_extension(
                x509.AuthorityInformationAccess([access]), critical=False
            )
        cert = builder.sign(self._key, self._signing_hash())

        record = IssuedRecord(
            serial=serial_hex(cert.serial_number),
            subject=cert.subject.rfc4514_string(),
            upns=upns,
            emails=emails,
            not_before=iso_utc(cert.not_valid_before_utc),
            not_after=iso_utc(cert.not_valid_after_utc),
            sha256=cert.fingerprint(hashes.SHA256()).hex(),
            attestation=attested,
        )
        # Certificate file first, index second: a crash in between leaves an orphan file,
        # never an index entry without its certificate.
        write_public(
            self._dir / CERTS_DIR / f"{record.serial}.pem",
            cert.public_bytes(serialization.Encoding.PEM),
        )
        self._index.save([*records, record])
        return cert

    # ------------------------------------------------------------------ revocation

    def revoke(
        self,
        serial: int | str,
        reason: x509.ReasonFlags | str | None = None,
        *,
        now: _dt.datetime | None = None,
    ) -> IssuedRecord:
        """Mark ``serial`` revoked (it appears on the next :meth:`crl`). Returns the record.

        Raises :class:`LabCAError` for an unknown or already revoked serial.
        """
        number = parse_serial(serial)
        flag = parse_reason(reason)
        with locked(self._dir):
            return self._index.revoke(number, flag, now)

    def crl(
        self, days: int = 7, *, now: _dt.datetime | None = None
    ) -> x509.CertificateRevocationList:
        """Sign a new CRL (number incremented, next update in ``days``), store it as crl.pem
        and crl.der in the CA directory, and return it."""
        if days < 1:
            raise CertInputError("CRL validity must be at least one day")
        with locked(self._dir):
            return self._crl_locked(days, now)

    def _crl_locked(self, days: int, now: _dt.datetime | None
                    ) -> x509.CertificateRevocationList:
        # The number on disk, not the one read at open(): another process may have signed
        # CRLs since.
        self._config = read_json(self._dir / CONFIG_FILE)
        start = utc_now(now)
        number = int(self._config.get("crl_number", 0)) + 1
        crl = build_crl(self._cert, self._key, self._signing_hash(), self._index.load(),
                        number, start, days)

        # The number first: a crash before the CRL files leaves a gap, never a reused number.
        self._config = {**self._config, "crl_number": number}
        write_json(self._dir / CONFIG_FILE, self._config)
        write_crl(self._dir, crl)
        return crl
