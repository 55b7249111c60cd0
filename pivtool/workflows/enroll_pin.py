"""An enrollment's "PIN and PUK" step: no factory PIN or PUK left behind, no retry burned.

The step replaces a factory PIN and PUK (or sets random ones, written to a 0600 secrets
file before the card changes), decides on a card without GET METADATA whether they are
the factory defaults without guessing, and finds the PIN an interrupted run of the same
enrollment set (the journal's salted hash). The :class:`~pivtool.workflows.enroll.Enroller`
runs it as one step and keeps what it leaves: the verified PIN and the PUK to escrow.
"""

from __future__ import annotations

import contextlib
import json
import os
import secrets
from typing import Any

from ..core.errors import InvalidPinError, RetryGuardError, UsageError
from ..core.fileio import create_new
from ..piv.constants import DEFAULT_PIN, DEFAULT_PUK
from ..piv.encoding import pin_bytes
from ..piv.session import PivSession
from .auth import Prompter, verify_pin
from .enroll_options import EnrollOptions, EnrollResult
from .journal import Journal
from .state import CardSnapshot


def _random_digits(n: int) -> bytes:
    # Digits only: macOS refuses non-numeric PINs, and iOS shows a numeric keypad.
    return "".join(secrets.choice("0123456789") for _ in range(n)).encode()


def _write_secrets(path: str, data: dict[str, Any]) -> None:
    try:
        create_new(path, (json.dumps(data, indent=2) + "\n").encode())
    except FileExistsError:
        raise UsageError(f"{path} exists; refusing to overwrite it") from None
    except OSError as e:
        raise UsageError(f"cannot create {path}: {e.strerror or e}") from None


class PinPukStep:
    """The "PIN and PUK" step of one enrollment (:meth:`run`). What later steps need from
    it: :attr:`pin` (the card's PIN, verified) and :attr:`escrow_puk` (the PUK for
    ``--escrow``, when the step set it or recognised it)."""

    def __init__(self, session: PivSession, prompter: Prompter, opts: EnrollOptions,
                 journal: Journal | None, result: EnrollResult, changed: list[str]) -> None:
        self.s = session
        self.p = prompter
        self.o = opts
        self.journal = journal
        #: The enrollment's result: the secrets file written (or removed again) goes there.
        self.result = result
        #: The enrollment's list of what this run changed on the card (appended to).
        self.changed = changed
        self.escrow_puk: bytes | None = None
        self._refused_default: str | None = None  # the card refused 123456 as the PIN

    def run(self, st: CardSnapshot) -> str:
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
                self.escrow_puk = new_puk  # escrow
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
            self.escrow_puk = self._current_puk()
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

