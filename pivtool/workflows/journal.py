"""The enrollment journal: what an interrupted ``enroll`` (or ``recover --reenroll``, or a
batch worker) already did to a card, so that the same command, run again, finishes the job.

One JSON file per card serial in a host directory (``$PIVTOOL_JOURNAL_DIR``, else
``$XDG_STATE_HOME/pivtool/journal``, else ``~/.local/state/pivtool/journal``; directory 0700,
files 0600, written atomically). Each record is written *before* the card command it
describes, so a pulled card or a lost answer leaves a record of what may have happened; the
card's own state (metadata, slots) then says whether it did.

No secret is stored. For a PIN or PUK the journal keeps a salted scrypt hash of the value it
set, used only to answer "is the value given now the one that run set?" — which decides,
without spending a try, whether the new PIN given is already the card's current PIN. The
public key generated and the certificate issued are public data and are kept as they are, so
a re-run never generates a second key or has a second certificate issued. The file is
removed when the enrollment completes.
"""

from __future__ import annotations

import contextlib
import datetime as dt
import hashlib
import hmac
import json
import os
import secrets
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from ..core.fileio import atomic_write

JOURNAL_SCHEMA = "pivtool.journal/1"
JOURNAL_ENV = "PIVTOOL_JOURNAL_DIR"
#: scrypt cost: ~50 ms per check; makes a stolen journal slow to test PIN guesses against
#: (the card's own retry counter stays the real protection).
_SCRYPT = {"n": 2**14, "r": 8, "p": 1}


def journal_dir() -> Path:
    """Where journals live (see the module docstring)."""
    explicit = os.environ.get(JOURNAL_ENV)
    if explicit:
        return Path(explicit)
    base = os.environ.get("XDG_STATE_HOME") or os.path.join(os.path.expanduser("~"),
                                                             ".local", "state")
    return Path(base) / "pivtool" / "journal"


def _hash(value: bytes, salt: bytes) -> bytes:
    return hashlib.scrypt(value, salt=salt, dklen=32, **_SCRYPT)


@dataclass
class Journal:
    """The record for one card (by serial). Mutations are saved at once."""

    path: Path
    doc: dict[str, Any] = field(default_factory=dict)

    @classmethod
    def open(cls, serial: int | None, kind: str = "enroll",
             directory: Path | None = None) -> Journal | None:
        """The *kind* journal (``enroll``, ``pin``, ``puk``) for *serial* (read if it
        exists); ``None`` for a card without a serial (nothing to key it by: such cards are
        not journalled)."""
        if serial is None:
            return None
        name = f"{serial}.json" if kind == "enroll" else f"{serial}-{kind}.json"
        path = (directory or journal_dir()) / name
        doc: dict[str, Any] = {}
        try:
            loaded = json.loads(path.read_text())
            if isinstance(loaded, dict) and loaded.get("schema") == JOURNAL_SCHEMA:
                doc = loaded
        except (OSError, ValueError):
            doc = {}  # no journal (or an unreadable one: treated as none, never guessed from)
        return cls(path, doc)

    @property
    def active(self) -> bool:
        """An unfinished enrollment is recorded."""
        return bool(self.doc)

    def get(self, key: str) -> Any:
        """A recorded fact (``None`` when not recorded)."""
        return self.doc.get(key)

    def begin(self, serial: int, command: str, upn: str) -> None:
        """Start (or continue) the record of an enrollment of *upn*."""
        if self.doc.get("upn", upn).casefold() != upn.casefold():
            self.doc = {}  # a different user's unfinished enrollment: this one replaces it
        if not self.doc:
            self.doc = {"schema": JOURNAL_SCHEMA, "serial": serial, "command": command,
                        "upn": upn, "started": _now()}
        self.save()

    def set(self, **facts: Any) -> None:
        """Record facts (public data only) and save."""
        self.doc.update(facts)
        self.save()

    def remember_secret(self, name: str, value: bytes) -> None:
        """Record that *name* (``pin``/``puk``) is being set to *value* — as a salted hash."""
        salt = secrets.token_bytes(16)
        self.doc[name] = {"salt": salt.hex(), "scrypt": _hash(value, salt).hex()}
        self.save()

    def secret_is(self, name: str, value: bytes) -> bool:
        """Whether *value* is the one recorded for *name*."""
        rec = self.doc.get(name)
        if not isinstance(rec, dict):
            return False
        try:
            salt = bytes.fromhex(rec["salt"])
            want = bytes.fromhex(rec["scrypt"])
        except (KeyError, ValueError, TypeError):
            return False
        return hmac.compare_digest(_hash(value, salt), want)

    def save(self) -> None:
        """Write the journal (0600, atomically; the directory is created 0700)."""
        self.doc["updated"] = _now()
        self.path.parent.mkdir(mode=0o700, parents=True, exist_ok=True)
        atomic_write(self.path, (json.dumps(self.doc, indent=2) + "\n").encode())

    def finish(self) -> None:
        """The enrollment completed: remove the record."""
        self.doc = {}
        with contextlib.suppress(FileNotFoundError):
            self.path.unlink()


def _now() -> str:
    return dt.datetime.now(dt.timezone.utc).strftime("%Y-%m-%dT%H:%M:%SZ")


def card_serial(session: Any) -> int | None:
    """The card's serial (YubiKeys), or ``None`` where the card has none to tell. A failed
    or garbled read raises: a wrong serial would file the journal under another card."""
    from ..core.errors import ApduError, NotSupportedError

    if not session.is_yubikey:
        return None
    try:
        serial: int = session.get_serial()
    except (NotSupportedError, ApduError):  # no GET SERIAL (before firmware 5)
        return None
    return serial


def change_reference(session: Any, which: str, old: bytes, new: bytes,
                     force: bool = False,
                     change: Callable[[bytes, bytes], Any] | None = None,
                     ask: Callable[[str], bool] | None = None) -> tuple[str, Any]:
    """CHANGE REFERENCE DATA for the PIN or PUK (*which*), so that the same command, run
    again after a pulled card or a lost answer, finishes the job.

    The journal records (hashed) the change before the command is sent, and that it was
    carried out when the answer arrives. A re-run with the same two values then knows that
    one of them is the card's: after a completed change, the new one (confirmed with
    VERIFY, or a CHANGE to itself for the PUK); when the card was cut during the command
    itself (the one moment nobody can observe), it completes the change from the old value,
    and if the card already holds the new one, confirms that instead — a wrong first
    attempt is followed at once by a right one, which resets the counter to full, and it is
    made only with at least 2 tries left, so it can never block. *change* does the change
    itself (default: the session's CHANGE REFERENCE DATA). Returns ``("changed" or
    "already", what *change* returned)``."""
    from ..core.errors import InvalidPinError, RetryGuardError
    from .auth import guard, pin_tries, puk_tries

    what = which.upper()
    tries = pin_tries(session) if which == "pin" else puk_tries(session)
    serial = card_serial(session)
    j = Journal.open(serial, which)
    plain = session.change_pin if which == "pin" else session.change_puk
    do_change = change or plain
    result: list[Any] = [None]
    if (j is not None and j.active and j.secret_is("old", old) and j.secret_is("new", new)):
        if tries.left is None and tries.unknown is not None:
            guard(what, tries, force, ask)  # the card cannot count: this may be the last
        if tries.left is not None and tries.left < 2:
            raise RetryGuardError(f"an interrupted {which} change left {tries.left} {what} "
                                  f"try: pivtool will not risk it; give the {what} the card "
                                  "has now as the current one")
        def confirm() -> None:
            if which == "pin":
                session.verify_pin(new)
            else:
                plain(new, new)

        def complete() -> None:
            result[0] = do_change(old, new)
            j.set(state="done")

        # After a completed change the new value is the card's; after a cut one, most likely
        # still the old. The other one is tried only if the first is refused (the counter is
        # then full again), and never with fewer than 2 tries left.
        done = j.get("state") == "done"
        attempts = [(confirm, "already"), (complete, "changed")] if done else \
            [(complete, "changed"), (confirm, "already")]
        for k, (attempt, outcome) in enumerate(attempts):
            try:
                attempt()
                return outcome, result[0]
            except InvalidPinError as e:
                if k == 1 or e.tries_left is None or e.tries_left < 2:
                    raise
        raise AssertionError("unreachable")
    if change is None:
        guard(what, tries, force, ask)  # (a *change* of the caller's applies its own guard)
    if j is not None:
        j.doc = {"schema": JOURNAL_SCHEMA, "serial": serial, "command": f"{which} change",
                 "state": "sent"}
        j.remember_secret("old", old)
        j.remember_secret("new", new)
    changed = do_change(old, new)
    if j is not None:
        # Kept (hashes only): the same command again then confirms instead of spending a try.
        j.set(state="done")
    return "changed", changed
