"""An encrypted escrow file for PUKs (and management keys that are not PIN-protected).

Helpdesks need a key's PUK long after enrollment, when its user has blocked the PIN. The
escrow keeps it, per YubiKey serial, in one file encrypted with a passphrase.

File format (JSON, mode 0600 from creation, replaced atomically)::

    {
      "format": "pivtool-escrow",
      "version": 1,
      "kdf": {"name": "scrypt", "n": 32768, "r": 8, "p": 1, "salt": "<base64, 16 bytes>"},
      "check": "<base64, 32 bytes>",
      "cipher": "aes-256-gcm",
      "nonce": "<base64, 12 bytes>",
      "ciphertext": "<base64>"
    }

scrypt turns the passphrase into 64 bytes: the first 32 are the AES-256-GCM key, the last 32
key an HMAC-SHA256 over a fixed label whose result is ``check``. ``check`` tells a wrong
passphrase (exit 3) from an altered or corrupt file (exit 2): when ``check`` matches but the
GCM tag does not, the passphrase was right and the file was changed. The header fields
(format, version, kdf, check, cipher) are the GCM associated data, so changing any of them
fails authentication too. ``check`` gives an attacker nothing the GCM tag would not: both
need a full scrypt per guess.

The plaintext is JSON: ``{"entries": [{"serial", "upn", "created", "updated", "puk",
"mgmt_key", "mgmt_key_algorithm"}]}``; everything, including which serials are escrowed,
is encrypted. Writers hold an exclusive ``fcntl.flock`` on the file during
read-modify-write; readers need no lock because the file is only ever replaced whole.
"""

from __future__ import annotations

import base64
import contextlib
import datetime as dt
import hashlib
import hmac
import json
import os
import secrets
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

from ..core.errors import AuthenticationError, PivToolError, UsageError
from ..core.fileio import atomic_write

if TYPE_CHECKING:
    from ..store.api import Store

FORMAT = "pivtool-escrow"
VERSION = 1
CIPHER = "aes-256-gcm"
#: scrypt cost for new files: 32 MiB and ~0.1 s per derivation.
SCRYPT_N, SCRYPT_R, SCRYPT_P = 2**15, 8, 1
#: Bounds accepted when reading, so a crafted header cannot make pivtool allocate gigabytes
#: or spin for seconds: scrypt needs 128·r·n bytes (64 MiB at most: twice the cost pivtool
#: writes) and p sequential passes (1 or 2).
MAX_SCRYPT_MEMORY, MAX_P = 64 * 1024 * 1024, 2
MIN_PASSPHRASE = 8
_CHECK_LABEL = b"pivtool-escrow/1 passphrase check"


class EscrowPassphraseError(AuthenticationError):
    """The escrow passphrase is wrong (an authentication failure: exit code 3)."""

    def __init__(self, path: str | os.PathLike[str]) -> None:
        super().__init__(f"wrong escrow passphrase for {os.fspath(path)}")


class EscrowCorruptError(UsageError):
    """The escrow file is not one, or it was altered (bad input: exit code 2)."""


@dataclass
class EscrowEntry:
    """What the escrow holds for one key. Secrets are hidden from ``repr``."""

    serial: int
    upn: str | None = None
    created: str = ""
    updated: str = ""
    puk: str | None = field(default=None, repr=False)
    mgmt_key: str | None = field(default=None, repr=False)  # hex
    mgmt_key_algorithm: str | None = None

    def to_public_json(self) -> dict[str, Any]:
        """The entry without secret values: which secrets are present, not what they are."""
        return {"serial": self.serial, "upn": self.upn, "created": self.created,
                "updated": self.updated,
                "secrets": {"puk": self.puk is not None, "mgmt_key": self.mgmt_key is not None},
                "mgmt_key_algorithm": self.mgmt_key_algorithm}

    def _to_plain(self) -> dict[str, Any]:
        return {"serial": self.serial, "upn": self.upn, "created": self.created,
                "updated": self.updated, "puk": self.puk, "mgmt_key": self.mgmt_key,
                "mgmt_key_algorithm": self.mgmt_key_algorithm}

    @classmethod
    def _from_plain(cls, d: Any) -> EscrowEntry:
        if not isinstance(d, dict) or not isinstance(d.get("serial"), int):
            raise ValueError("entry without serial")
        for key in ("upn", "created", "updated", "puk", "mgmt_key", "mgmt_key_algorithm"):
            if d.get(key) is not None and not isinstance(d[key], str):
                raise ValueError(f"entry field {key} is not text")
        return cls(serial=d["serial"], upn=d.get("upn"), created=d.get("created") or "",
                   updated=d.get("updated") or "", puk=d.get("puk"),
                   mgmt_key=d.get("mgmt_key"), mgmt_key_algorithm=d.get("mgmt_key_algorithm"))


def _now() -> str:
    return dt.datetime.now(dt.timezone.utc).strftime("%Y-%m-%dT%H:%M:%SZ")


def _b64(data: bytes) -> str:
    return base64.b64encode(data).decode("ascii")


def _unb64(value: Any, what: str) -> bytes:
    if not isinstance(value, str):
        raise ValueError(f"{what} missing")
    return base64.b64decode(value.encode("ascii"), validate=True)


def _aad(header: dict[str, Any]) -> bytes:
    # Canonical JSON of the header fields: any change to them fails the GCM tag.
    fields = {k: header[k] for k in ("format", "version", "kdf", "check", "cipher")}
    return json.dumps(fields, sort_keys=True, separators=(",", ":")).encode()


def check_kdf(kdf: Any, where: str) -> tuple[bytes, int, int, int]:
    """(salt, n, r, p) of an escrow header's ``kdf``, within pivtool's work-factor bounds;
    :class:`EscrowCorruptError` (one line) otherwise."""
    try:
        n, r, p = kdf["n"], kdf["r"], kdf["p"]
        salt = _unb64(kdf["salt"], "salt")
        if kdf.get("name") != "scrypt" or not all(type(v) is int for v in (n, r, p)):
            raise ValueError
    except (KeyError, TypeError, ValueError, AttributeError):
        raise EscrowCorruptError(f"{where}: unsupported key derivation parameters") from None
    if not (n >= 2 and n & (n - 1) == 0 and r >= 1 and len(salt) >= 16):
        raise EscrowCorruptError(f"{where}: invalid scrypt parameters (n={n}, r={r})")
    if 128 * r * n > MAX_SCRYPT_MEMORY or not 1 <= p <= MAX_P:
        raise EscrowCorruptError(
            f"{where}: its scrypt parameters (n={n}, r={r}, p={p}) ask for "
            f"{128 * r * n // 2**20} MiB x {p}; pivtool allows at most "
            f"{MAX_SCRYPT_MEMORY // 2**20} MiB and p 1-{MAX_P}")
    return salt, n, r, p


def check_new_passphrase(passphrase: bytes) -> None:
    """Refuse passphrases too short to stand up to an offline guess (the file may leak)."""
    if len(passphrase) < MIN_PASSPHRASE:
        raise UsageError(f"the escrow passphrase must be at least {MIN_PASSPHRASE} "
                         "characters")


class EscrowFile:
    """One escrow file and its passphrase. Derived keys are cached per salt, so a read
    followed by a write costs one scrypt."""

    def __init__(self, path: str | os.PathLike[str], passphrase: bytes) -> None:
        self.path = Path(path)
        self._passphrase = passphrase
        self._keys: dict[tuple[bytes, int, int, int], tuple[bytes, bytes]] = {}

    def __repr__(self) -> str:
        return f"EscrowFile({str(self.path)!r})"

    def exists(self) -> bool:
        """True when the file exists and is not empty (a writer creates it empty first)."""
        try:
            return self.path.stat().st_size > 0
        except FileNotFoundError:
            return False

    # --- crypto ------------------------------------------------------------------------

    def _derive(self, salt: bytes, n: int, r: int, p: int) -> tuple[bytes, bytes]:
        cached = self._keys.get((salt, n, r, p))
        if cached is None:
            from cryptography.hazmat.primitives.kdf.scrypt import Scrypt

            out = Scrypt(salt=salt, length=64, n=n, r=r, p=p).derive(self._passphrase)
            check = hmac.new(out[32:], _CHECK_LABEL, hashlib.sha256).digest()
            cached = (out[:32], check)
            self._keys[(salt, n, r, p)] = cached
        return cached

    def _decrypt(self, raw: bytes) -> tuple[list[EscrowEntry], dict[str, Any]]:
        from cryptography.exceptions import InvalidTag
        from cryptography.hazmat.primitives.ciphers.aead import AESGCM

        where = str(self.path)
        try:
            header = json.loads(raw)
            if not isinstance(header, dict) or header.get("format") != FORMAT:
                raise EscrowCorruptError(f"{where} is not a pivtool escrow file")
            if header.get("version") != VERSION:
                raise EscrowCorruptError(f"{where}: escrow format version "
                                         f"{header.get('version')!r} is not supported")
            if header.get("cipher") != CIPHER:
                raise ValueError("unsupported cipher")
            salt, n, r, p = check_kdf(header["kdf"], where)
            check = _unb64(header["check"], "check")
            nonce = _unb64(header["nonce"], "nonce")
            ciphertext = _unb64(header["ciphertext"], "ciphertext")
            if len(nonce) != 12 or len(salt) < 16:
                raise ValueError("bad nonce or salt length")
            aad = _aad(header)
        except EscrowCorruptError:
            raise
        except (ValueError, KeyError, TypeError, RecursionError) as e:
            # json.JSONDecodeError and binascii.Error are ValueErrors; RecursionError: JSON
            # nested thousands deep.
            raise EscrowCorruptError(f"{where} is corrupt (unreadable header: "
                                     f"{type(e).__name__})") from None
        key, expected = self._derive(salt, n, r, p)
        if not hmac.compare_digest(check, expected):
            raise EscrowPassphraseError(self.path)
        try:
            plain = AESGCM(key).decrypt(nonce, ciphertext, aad)
        except InvalidTag:
            raise EscrowCorruptError(f"{where} failed its integrity check: the passphrase is "
                                     "right but the file was altered or is corrupt") from None
        try:
            doc = json.loads(plain)
            entries = [EscrowEntry._from_plain(e) for e in doc["entries"]]
        except (ValueError, KeyError, TypeError, RecursionError):
            raise EscrowCorruptError(f"{where} holds malformed entries") from None
        return entries, header

    def _encrypt(self, entries: list[EscrowEntry], header: dict[str, Any] | None) -> bytes:
        from cryptography.hazmat.primitives.ciphers.aead import AESGCM

        if header is None:
            header = {"format": FORMAT, "version": VERSION,
                      "kdf": {"name": "scrypt", "n": SCRYPT_N, "r": SCRYPT_R, "p": SCRYPT_P,
                              "salt": _b64(secrets.token_bytes(16))},
                      "cipher": CIPHER}
        kdf = header["kdf"]
        key, check = self._derive(_unb64(kdf["salt"], "salt"), kdf["n"], kdf["r"], kdf["p"])
        out = {k: header[k] for k in ("format", "version", "kdf", "cipher")}
        out["check"] = _b64(check)
        # A fresh random nonce on every write: the key is reused across writes of one file.
        nonce = secrets.token_bytes(12)
        plain = json.dumps({"entries": [e._to_plain() for e in entries]}).encode()
        out["nonce"] = _b64(nonce)
        out["ciphertext"] = _b64(AESGCM(key).encrypt(nonce, plain, _aad(out)))
        return (json.dumps(out, indent=2) + "\n").encode()

    # --- reading -----------------------------------------------------------------------

    def read(self) -> list[EscrowEntry]:
        """Every entry (checks the passphrase and the file's integrity)."""
        try:
            raw = self.path.read_bytes()
        except FileNotFoundError:
            raise UsageError(f"escrow file {self.path} does not exist") from None
        except OSError as e:
            raise UsageError(f"cannot read {self.path}: {e.strerror}") from None
        if not raw:
            raise EscrowCorruptError(f"{self.path} is empty (a write was interrupted, or is "
                                     "in progress)")
        return self._decrypt(raw)[0]

    def verify(self) -> None:
        """Check the passphrase and integrity of an existing file (before touching a card)."""
        self.read()

    def get(self, serial: int) -> EscrowEntry | None:
        """The entry for *serial*, if any."""
        return next((e for e in self.read() if e.serial == serial), None)

    # --- writing -----------------------------------------------------------------------

    def put(self, serial: int, upn: str | None = None, puk: bytes | None = None,
            mgmt_key: bytes | None = None, mgmt_key_algorithm: str | None = None
            ) -> EscrowEntry:
        """Create or update the entry for *serial*: given values replace stored ones, values
        not given are kept. Creates the file when missing (check the passphrase with
        :func:`check_new_passphrase` first)."""
        if puk is not None:
            puk_text = _text_or_none(puk)
            if puk_text is None:
                # Outside the ``except``: the UnicodeDecodeError's repr holds the PUK.
                raise UsageError("the PUK is not text; it cannot be escrowed")

        def change(entries: list[EscrowEntry]) -> EscrowEntry:
            now = _now()
            entry = next((e for e in entries if e.serial == serial), None)
            if entry is None:
                entry = EscrowEntry(serial=serial, created=now)
                entries.append(entry)
            entry.updated = now
            if upn is not None:
                entry.upn = upn
            if puk is not None:
                entry.puk = puk_text
            if mgmt_key is not None:
                entry.mgmt_key = mgmt_key.hex()
                entry.mgmt_key_algorithm = mgmt_key_algorithm
            return entry

        return self.update(change)

    def update(self, change: Callable[[list[EscrowEntry]], EscrowEntry]) -> EscrowEntry:
        """Read-modify-write under an exclusive lock; the new file replaces the old one
        atomically, so a crash leaves either the old or the new file, never half of one."""
        with self._locked() as fd:
            raw = _read_fd(fd)
            entries, header = self._decrypt(raw) if raw else ([], None)
            entry = change(entries)
            data = self._encrypt(entries, header)
            self._replace(data)
        return entry

    @contextlib.contextmanager
    def _locked(self) -> Iterator[int]:
        import fcntl

        created = False
        for _ in range(100):
            try:
                fd = os.open(self.path, os.O_RDWR | os.O_CREAT | os.O_EXCL, 0o600)
                created = True
            except FileExistsError:
                try:  # e.g. a dangling symlink: it "exists" for O_EXCL, not for opening
                    fd = os.open(self.path, os.O_RDWR)
                except OSError as e:
                    raise UsageError(f"cannot open {self.path}: {e.strerror}") from None
            except OSError as e:
                raise UsageError(f"cannot open {self.path}: {e.strerror}") from None
            fcntl.flock(fd, fcntl.LOCK_EX)
            # Another writer may have replaced the file while we waited: the lock we hold is
            # then on an orphaned inode. Start over on the current file.
            try:
                current = os.stat(self.path)
            except FileNotFoundError:
                os.close(fd)
                continue
            mine = os.fstat(fd)
            if (mine.st_dev, mine.st_ino) != (current.st_dev, current.st_ino):
                os.close(fd)
                continue
            break
        else:  # pragma: no cover - only under pathological churn
            raise PivToolError(f"could not lock {self.path}")
        ok = False
        try:
            yield fd
            ok = True
        finally:
            if created and not ok:
                # Do not leave an empty file behind when the first write failed.
                with contextlib.suppress(OSError):
                    if os.fstat(fd).st_size == 0:
                        os.unlink(self.path)
            os.close(fd)

    def _replace(self, data: bytes) -> None:
        try:
            atomic_write(self.path, data, 0o600)
        except OSError as e:  # disk full, read-only file system...: the old file stays
            raise PivToolError(f"cannot write {self.path}: {e.strerror or e}; the escrow "
                               "file was not changed") from None


def _text_or_none(value: bytes) -> str | None:
    try:
        return value.decode("utf-8")
    except UnicodeDecodeError:
        return None


def _read_fd(fd: int) -> bytes:
    os.lseek(fd, 0, os.SEEK_SET)
    chunks = []
    while chunk := os.read(fd, 65536):
        chunks.append(chunk)
    return b"".join(chunks)


# --------------------------------------------------------------------------------------------
# The escrow in the inventory database


#: ``meta`` name of the database's escrow keyring (the header without nonce/ciphertext).
KEYRING = "escrow-keyring"
#: ``--escrow db``: the escrow lives in the inventory database (``--db`` / ``$PIVTOOL_DB``).
IN_DATABASE = "db"


class StoreEscrow(EscrowFile):
    """The escrow in the inventory database, encrypted exactly as an escrow file.

    Each escrowed secret of a key (its PUK, its management key) is one row holding a
    complete escrow document — the same format, KDF, cipher and passphrase check as the
    file, with only that secret inside. All documents share the database's *keyring* (the
    scrypt salt and parameters and the passphrase check, kept in ``meta``), so a desk
    derives the key once, and a wrong passphrase is refused (exit 3) before any card is
    touched. The serial and UPN are stored in clear beside each document, to find it; the
    serial is also inside the encrypted entry and must match, so a document moved to
    another key's row is refused as altered. The database sees ciphertext only.
    """

    def __init__(self, store: Store, passphrase: bytes) -> None:
        super().__init__("the inventory database", passphrase)
        self.store = store
        self._checked: dict[str, Any] | None = None
        # (serial, kind) -> (upn, value) this object last wrote (kept in memory only, like
        # the passphrase; never written anywhere).
        self._written: dict[tuple[int, str], tuple[str | None, str | None]] = {}

    def __repr__(self) -> str:
        return f"StoreEscrow({self.store.display!r})"

    def exists(self) -> bool:
        """True once a desk has escrowed into this database (the keyring exists)."""
        return self.store.meta(KEYRING) is not None

    def _keyring(self, create: bool) -> dict[str, Any] | None:
        if self._checked is not None:  # the keyring never changes once created
            return self._checked
        header = self.store.meta(KEYRING)
        if header is None:
            if not create:
                return None
            check_new_passphrase(self._passphrase)
            kdf = {"name": "scrypt", "n": SCRYPT_N, "r": SCRYPT_R, "p": SCRYPT_P,
                   "salt": _b64(secrets.token_bytes(16))}
            _, check = self._derive(_unb64(kdf["salt"], "salt"), SCRYPT_N, SCRYPT_R, SCRYPT_P)
            # Two desks may create it at once: both continue with the one that won.
            header = self.store.meta_create(KEYRING, {
                "format": FORMAT, "version": VERSION, "kdf": kdf, "check": _b64(check),
                "cipher": CIPHER})
        salt, n, r, p = check_kdf(header.get("kdf") if isinstance(header, dict) else None,
                                  "the database's escrow keyring")
        try:
            _, expected = self._derive(salt, n, r, p)
            given = _unb64(header["check"], "check")
        except (KeyError, TypeError, ValueError):
            raise EscrowCorruptError("the database's escrow keyring is corrupt") from None
        if not hmac.compare_digest(given, expected):
            raise EscrowPassphraseError(self.path)
        self._checked = dict(header)
        return self._checked

    def verify(self) -> None:
        """Check the passphrase against the database's keyring (when there is one)."""
        self._keyring(create=False)

    def _entries(self, serial: int | None) -> list[EscrowEntry]:
        merged: dict[int, EscrowEntry] = {}
        for row in self.store.escrow_rows(serial):
            entries, _ = self._decrypt(row.document.encode())
            if len(entries) != 1 or entries[0].serial != row.serial:
                raise EscrowCorruptError(f"the escrow document of serial {row.serial} belongs "
                                         "to another key: the database was altered")
            got = entries[0]
            entry = merged.setdefault(row.serial, EscrowEntry(
                serial=row.serial, upn=row.upn, created=_stamp(row.created),
                updated=_stamp(row.updated)))
            entry.created = min(entry.created, _stamp(row.created))
            entry.updated = max(entry.updated, _stamp(row.updated))
            if row.kind == "puk":
                entry.puk = got.puk
            elif row.kind == "mgmt_key":
                entry.mgmt_key, entry.mgmt_key_algorithm = got.mgmt_key, got.mgmt_key_algorithm
        return [merged[s] for s in sorted(merged)]

    def read(self) -> list[EscrowEntry]:
        """Every key's entry (checks the passphrase and every document)."""
        if self._keyring(create=False) is None:
            return []
        return self._entries(None)

    def get(self, serial: int) -> EscrowEntry | None:
        """The entry for *serial*, if any."""
        if self._keyring(create=False) is None:
            return None
        found = self._entries(serial)
        return found[0] if found else None

    def put(self, serial: int, upn: str | None = None, puk: bytes | None = None,
            mgmt_key: bytes | None = None, mgmt_key_algorithm: str | None = None
            ) -> EscrowEntry:
        """Escrow the given secrets of *serial* (others already escrowed stay): one
        database round trip. Returns what was written (not re-read)."""
        header = self._keyring(create=True)
        assert header is not None
        now = _now()
        docs: dict[str, str] = {}
        entry = EscrowEntry(serial=serial, upn=upn, created=now, updated=now)
        if puk is not None:
            text = _text_or_none(puk)
            if text is None:
                raise UsageError("the PUK is not text; it cannot be escrowed")
            entry.puk = text
            docs["puk"] = self._encrypt([EscrowEntry(serial, upn, now, now, puk=text)],
                                        header).decode()
        if mgmt_key is not None:
            entry.mgmt_key, entry.mgmt_key_algorithm = mgmt_key.hex(), mgmt_key_algorithm
            docs["mgmt_key"] = self._encrypt(
                [EscrowEntry(serial, upn, now, now, mgmt_key=mgmt_key.hex(),
                             mgmt_key_algorithm=mgmt_key_algorithm)], header).decode()
        # enroll escrows what batch escrowed a moment before: write only what is new.
        fresh = {kind: doc for kind, doc in docs.items()
                 if self._written.get((serial, kind)) != (upn, getattr(entry, kind))}
        if fresh:
            self.store.escrow_put(serial, upn, fresh)
            for kind in fresh:
                self._written[(serial, kind)] = (upn, getattr(entry, kind))
        return entry

    def update(self, change: Callable[[list[EscrowEntry]], EscrowEntry]) -> EscrowEntry:
        """Not offered: rows are written one secret at a time by :meth:`put`."""
        raise UsageError("the database escrow is changed with put(), one key at a time")


def _stamp(value: dt.datetime) -> str:
    return value.strftime("%Y-%m-%dT%H:%M:%SZ")
