"""The lab CA's record of what it issued (pivtool/certs/ca.py): ``index.json``, revocation and
the CRL built from it.

The callers in ``ca.py`` hold the CA directory's lock (``cafiles.locked``) from reading the
index to writing it back; nothing here takes it.
"""

from __future__ import annotations

import datetime as _dt
from pathlib import Path
from typing import Any

from cryptography import x509
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric.types import CertificateIssuerPrivateKeyTypes

from .cafiles import (
    FORMAT_VERSION,
    INDEX_FILE,
    IssuedRecord,
    read_json,
    utc_now,
    write_json,
    write_public,
)
from .csr import SignatureHash
from .errors import LabCAError
from .inspect import iso_utc, serial_hex

CRL_DER_FILE, CRL_PEM_FILE = "crl.der", "crl.pem"


class IssuedIndex:
    """``index.json`` in a CA directory: one :class:`IssuedRecord` per issued certificate."""

    def __init__(self, directory: Path) -> None:
        """The index of the CA in *directory* (read on each :meth:`load`)."""
        self._dir = directory
        self._bad_records: list[Any] = []
        #: Malformed records found by the last :meth:`load` (one line each).
        self.problems: list[str] = []

    def load(self) -> list[IssuedRecord]:
        """The readable records. A malformed one (a hand-edited or tampered index) is set
        aside in :attr:`problems` and written back unchanged by :meth:`save`: it must not
        block every revoke and CRL of the others."""
        data = read_json(self._dir / INDEX_FILE)
        items = data.get("issued", [])
        if not isinstance(items, list):
            raise LabCAError(f"index.json in {self._dir} has no list of records")
        records: list[IssuedRecord] = []
        self._bad_records = []
        self.problems = []
        for n, item in enumerate(items, 1):
            try:
                record = IssuedRecord(**item)
                record.serial_number  # noqa: B018 - hex, or the record is unusable
                if record.status not in ("valid", "revoked"):
                    raise ValueError(record.status)
            except (TypeError, ValueError):
                self._bad_records.append(item)
                self.problems.append(f"index.json record {n} is malformed (kept in "
                                     "the file, ignored)")
                continue
            records.append(record)
        return records

    def save(self, records: list[IssuedRecord]) -> None:
        """Write *records* back, followed by the malformed ones the last load set aside."""
        write_json(
            self._dir / INDEX_FILE,
            {"version": FORMAT_VERSION,
             "issued": [r.to_json() for r in records] + self._bad_records},
        )

    def find(self, number: int) -> IssuedRecord:
        """The record of serial *number*. Raises :class:`LabCAError` if unknown."""
        for record in self.load():
            if record.serial_number == number:
                return record
        raise LabCAError(f"no certificate with serial {serial_hex(number)} was issued by this CA")

    def revoke(self, number: int, flag: x509.ReasonFlags,
               now: _dt.datetime | None) -> IssuedRecord:
        """Mark serial *number* revoked (the caller holds the lock). Raises
        :class:`LabCAError` for an unknown or already revoked serial."""
        records = self.load()
        for i, record in enumerate(records):
            if record.serial_number != number:
                continue
            if record.status == "revoked":
                raise LabCAError(f"serial {record.serial} is already revoked")
            updated = IssuedRecord(
                **{
                    **record.to_json(),
                    "status": "revoked",
                    "revoked_at": iso_utc(utc_now(now)),
                    "reason": flag.value,
                }
            )
            records[i] = updated
            self.save(records)
            return updated
        raise LabCAError(f"no certificate with serial {serial_hex(number)} was issued by this CA")


def build_crl(ca_cert: x509.Certificate, ca_key: CertificateIssuerPrivateKeyTypes,
              algorithm: SignatureHash | None, records: list[IssuedRecord], number: int,
              start: _dt.datetime, days: int) -> x509.CertificateRevocationList:
    """CRL number *number* listing the revoked *records*, valid from *start* for *days*."""
    ca_ski = ca_cert.extensions.get_extension_for_class(x509.SubjectKeyIdentifier).value
    builder = (
        x509.CertificateRevocationListBuilder()
        .issuer_name(ca_cert.subject)
        .last_update(start)
        .next_update(start + _dt.timedelta(days=days))
        .add_extension(x509.CRLNumber(number), critical=False)
        .add_extension(
            x509.AuthorityKeyIdentifier.from_issuer_subject_key_identifier(ca_ski),
            critical=False,
        )
    )
    for record in records:
        if record.status != "revoked":
            continue
        try:
            revoked_at = _dt.datetime.strptime(
                str(record.revoked_at), "%Y-%m-%dT%H:%M:%SZ"
            ).replace(tzinfo=_dt.timezone.utc)
        except ValueError:  # a damaged date: the certificate is revoked all the same
            revoked_at = start
        entry = (
            x509.RevokedCertificateBuilder()
            .serial_number(record.serial_number)
            .revocation_date(revoked_at)
        )
        try:
            reason = (x509.ReasonFlags(record.reason) if record.reason
                      else x509.ReasonFlags.unspecified)
        except ValueError:
            reason = x509.ReasonFlags.unspecified
        if reason != x509.ReasonFlags.unspecified:
            # RFC 5280 §5.3.1: omit the reason code rather than use "unspecified".
            entry = entry.add_extension(x509.CRLReason(reason), critical=False)
        builder = builder.add_revoked_certificate(entry.build())
    return builder.sign(ca_key, algorithm)


def write_crl(directory: Path, crl: x509.CertificateRevocationList) -> None:
    """Store *crl* as crl.der (to publish over HTTP) and crl.pem in the CA directory."""
    write_public(directory / CRL_DER_FILE, crl.public_bytes(serialization.Encoding.DER))
    write_public(directory / CRL_PEM_FILE, crl.public_bytes(serialization.Encoding.PEM))
