"""The batch-enrollment roster: a CSV file with one user per row.

Columns (header row required; names are case-insensitive, spaces/underscores/dashes ignored):

========== ========= ===================================================================
column     required  meaning
========== ========= ===================================================================
upn        yes       the user's UPN (SAN otherName; the Graph ``/users/{upn}`` target)
email      no        rfc822Name(s) for the SAN, ``;``-separated
display    no        display name: the certificate subject becomes ``CN=<display name>``
name
serial     no        pin the user to the YubiKey with this serial (no other key gets them)
algorithm  no        key algorithm (eccp256, eccp384, rsa2048...) instead of the default
policies   no        certificate policy OIDs for the CSR, ``;`` or space separated
pin policy no        PIN policy of the 9a key (default, never, once, always)
touch      no        touch policy of the 9a key (default, never, always, cached)
policy
========== ========= ===================================================================

Rows that fail validation do not stop the batch: they come back as :class:`RosterRow` with an
``error`` (one line naming the row), and every other row proceeds.
"""

from __future__ import annotations

import csv
import io
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from ..core.errors import UsageError
from ..piv.constants import KeyType, PinPolicy, TouchPolicy

#: normalised header -> field name
_COLUMNS = {
    "upn": "upn",
    "userprincipalname": "upn",
    "email": "email",
    "emails": "email",
    "mail": "email",
    "displayname": "display_name",
    "name": "display_name",
    "serial": "serial",
    "algorithm": "algorithm",
    "policies": "policies",
    "policy": "policies",
    "pinpolicy": "pin_policy",
    "touchpolicy": "touch_policy",
}


def _norm_header(name: str) -> str:
    return "".join(ch for ch in name.strip().casefold() if ch not in " _-")


@dataclass
class RosterDefaults:
    """Values for rows that leave a column empty (from the command line)."""

    algorithm: KeyType = KeyType.ECCP256
    pin_policy: PinPolicy = PinPolicy.DEFAULT
    touch_policy: TouchPolicy = TouchPolicy.DEFAULT
    policies: list[str] = field(default_factory=list)
    allow_non_ios: bool = False


@dataclass
class RosterRow:
    """One roster row: either valid (``error`` is None) or with a one-line error."""

    row: int  # line number in the CSV file (the header is line 1)
    upn: str
    emails: list[str] = field(default_factory=list)
    display_name: str | None = None
    serial: int | None = None
    algorithm: KeyType = KeyType.ECCP256
    pin_policy: PinPolicy = PinPolicy.DEFAULT
    touch_policy: TouchPolicy = TouchPolicy.DEFAULT
    policies: list[str] = field(default_factory=list)
    error: str | None = None

    @property
    def subject(self) -> str | None:
        """RFC 4514 subject for the CSR (``CN=<display name>``, escaped), or None for the
        enroll default (``CN=<UPN>``)."""
        if not self.display_name:
            return None
        from cryptography import x509
        from cryptography.x509.oid import NameOID

        # Escaping through cryptography: display names contain commas ("Doe, Jane").
        return x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, self.display_name)]
                         ).rfc4514_string()

    def options_json(self) -> dict[str, Any]:
        """What the state file records about the row (no secrets in a roster)."""
        return {"emails": self.emails, "display_name": self.display_name,
                "serial": self.serial, "algorithm": self.algorithm.label,
                "pin_policy": self.pin_policy.label, "touch_policy": self.touch_policy.label,
                "policies": self.policies}


#: What Entra ID accepts in the user part of a UPN (letters, digits and ' . - _ ! # ^ ~):
#: a roster UPN outside it names no user a directory holds, and is refused (issue 16: UPNs
#: like ``=HYPERLINK(...)@contoso.com`` were enrolled and reported verbatim).
_DIRECTORY_LOCAL = re.compile(r"^[A-Za-z0-9'._!#^~-]{1,64}$")


def check_directory_upn(upn: str) -> None:
    """Refuse a UPN a directory would never hold (UsageError naming why)."""
    local = upn.rpartition("@")[0]
    if not _DIRECTORY_LOCAL.match(local) or local.startswith(".") or local.endswith(".") \
            or ".." in local:
        raise UsageError(f"UPN {upn[:80]!r} is not one a directory holds (user part: "
                         "letters, digits and ' . - _ ! # ^ ~, no leading, trailing or "
                         "double dot)")
    if len(upn) > 113:
        raise UsageError(f"UPN {upn[:40]!r}... is longer than 113 characters")


def pin_letter_name(upn: str) -> str:
    """The PIN letter's file name for *upn*: the UPN itself where it is made of
    ``A-Z a-z 0-9 @ . _ -``, every other character (and ``%``) %-escaped (UTF-8, upper-case
    hex). Injective, so one user's letter can never be another's."""
    return "".join(c if c.isascii() and (c.isalnum() or c in "@._-") else
                   "".join(f"%{b:02X}" for b in c.encode()) for c in upn) + ".txt"


def _split(value: str) -> list[str]:
    return [p for p in value.replace(";", " ").split() if p]


def _parse_row(line: int, values: dict[str, str], defaults: RosterDefaults) -> RosterRow:
    from .enroll_options import EnrollOptions, validate_options

    upn = values.get("upn", "").strip()
    row = RosterRow(line, upn, algorithm=defaults.algorithm, pin_policy=defaults.pin_policy,
                    touch_policy=defaults.touch_policy, policies=list(defaults.policies))
    try:
        if not upn:
            raise UsageError("the upn column is empty")
        check_directory_upn(upn)
        row.emails = _split(values.get("email", ""))
        row.display_name = values.get("display_name", "").strip() or None
        serial = values.get("serial", "").strip()
        if serial:
            if not serial.isdigit():
                raise UsageError(f"serial {serial!r} is not a number")
            row.serial = int(serial)
        if values.get("algorithm", "").strip():
            row.algorithm = KeyType.parse(values["algorithm"].strip())
        if values.get("pin_policy", "").strip():
            row.pin_policy = PinPolicy.parse(values["pin_policy"].strip())  # type: ignore[assignment]
        if values.get("touch_policy", "").strip():
            row.touch_policy = TouchPolicy.parse(values["touch_policy"].strip())  # type: ignore[assignment]
        if values.get("policies", "").strip():
            row.policies = _split(values["policies"])
        # The same checks enroll makes before touching a card (UPN syntax, emails, subject,
        # policy OIDs, iOS algorithms), so a bad row fails here and not on a key.
        validate_options(EnrollOptions(
            upn=upn, emails=row.emails, subject=row.subject, algorithm=row.algorithm,
            pin_policy=row.pin_policy, touch_policy=row.touch_policy, policies=row.policies,
            allow_non_ios=defaults.allow_non_ios))
    except Exception as e:
        from ..certs.errors import CertError

        if not isinstance(e, (UsageError, CertError, ValueError)):
            raise
        row.error = f"row {line}: {e}"
    return row


def parse_roster(text: str, defaults: RosterDefaults | None = None) -> list[RosterRow]:
    """Parse roster CSV *text*. A bad header is a :class:`UsageError` (the whole file is
    unusable); a bad row is returned with ``error`` set. Blank rows and rows whose first
    cell starts with ``#`` are skipped."""
    defaults = defaults or RosterDefaults()
    reader = csv.reader(io.StringIO(text))
    header: list[str] | None = None
    rows: list[RosterRow] = []
    seen_upn: dict[str, int] = {}
    seen_letter: dict[str, int] = {}
    seen_serial: dict[int, int] = {}
    while True:
        try:
            cells = next(reader)
        except StopIteration:
            break
        except csv.Error as e:  # e.g. a bare CR inside a field, an oversized field
            raise UsageError(f"roster line {reader.line_num}: not valid CSV ({e})") from None
        line = reader.line_num
        if not any(c.strip() for c in cells) or cells[0].lstrip().startswith("#"):
            continue
        if header is None:
            header = []
            for name in cells:
                key = _COLUMNS.get(_norm_header(name))
                if key is None:
                    raise UsageError(f"roster line {line}: unknown column {name.strip()!r} "
                                     f"(known: upn, email, display name, serial, algorithm, "
                                     "policies, pin policy, touch policy)")
                if key in header:
                    raise UsageError(f"roster line {line}: column {name.strip()!r} twice")
                header.append(key)
            if "upn" not in header:
                raise UsageError(f"roster line {line}: the header has no upn column")
            continue
        if len(cells) > len(header):
            rows.append(RosterRow(line, cells[header.index("upn")].strip() if
                                  header.index("upn") < len(cells) else "",
                                  error=f"row {line}: {len(cells)} cells, the header has "
                                        f"{len(header)}"))
            continue
        values = {k: (cells[i] if i < len(cells) else "") for i, k in enumerate(header)}
        row = _parse_row(line, values, defaults)
        if row.error is None:
            key = row.upn.casefold()
            if key in seen_upn:
                row.error = f"row {line}: duplicate UPN {row.upn} (first on row " \
                            f"{seen_upn[key]})"
            elif pin_letter_name(row.upn).casefold() in seen_letter:
                # Injective names, but a case-insensitive file system (macOS, Windows)
                # folds case: two letters must not share a file there either.
                row.error = f"row {line}: the PIN letter of {row.upn} would overwrite the " \
                            f"one of row {seen_letter[pin_letter_name(row.upn).casefold()]}"
            elif row.serial is not None and row.serial in seen_serial:
                row.error = f"row {line}: serial {row.serial} is already pinned to the user " \
                            f"on row {seen_serial[row.serial]}"
            else:
                seen_upn[key] = line
                seen_letter[pin_letter_name(row.upn).casefold()] = line
                if row.serial is not None:
                    seen_serial[row.serial] = line
        rows.append(row)
    if header is None:
        raise UsageError("the roster is empty (it needs a header row with a upn column)")
    return rows


def load_roster(path: str | Path, defaults: RosterDefaults | None = None) -> list[RosterRow]:
    """Read and parse the roster file (UTF-8, a BOM from spreadsheet exports is allowed)."""
    try:
        text = Path(path).read_text(encoding="utf-8-sig")
    except OSError as e:
        raise UsageError(f"cannot read the roster {path}: {e.strerror}") from None
    except UnicodeDecodeError:
        raise UsageError(f"the roster {path} is not UTF-8 text") from None
    return parse_roster(text, defaults)
