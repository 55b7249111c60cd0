"""Recover a PIN-locked key by the least destructive path that still works.

1. PIN not blocked: nothing is locked. Report the tries left; change the PIN if asked.
2. PIN blocked, PUK usable: RESET RETRY COUNTER with the PUK (typed, or from the escrow by
   serial) sets a new PIN. Keys, certificates and a PIN-protected management key all stay.
3. PIN and PUK blocked, or nobody knows the PUK: only a PIV reset remains. Certificates are
   exported first; after confirmation the remaining tries are spent (the card resets only
   then) and the PIV application is reset; optionally the same UPN is enrolled again.
4. A generic PIV card in case 3 has no reset command: only its issuer can help.

Each path reports an explanation (status ``plan``) before it acts and a result after it.
The PUK retry guard is stricter than elsewhere: the last PUK try is spent only after an
interactive confirmation or with ``allow_last_try``; ``--yes`` alone is not enough, because a
wrong PUK then leaves only the reset.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

from ..core.errors import (
    BlockedError,
    InvalidPinError,
    PivToolError,
    RetryGuardError,
    StepFailedError,
    TransportError,
    UsageError,
)
from ..piv.constants import DEFAULT_PIN, Slot
from ..piv.encoding import pin_bytes
from ..piv.session import PivSession
from .auth import (
    OverridePrompter,
    Prompter,
    Tries,
    authenticate,
    change_pin,
    pin_tries,
    puk_tries,
    verify_pin,
)
from .enroll_options import EnrollOptions, EnrollResult, Step
from .issuers import Issuer
from .state import CardSnapshot, Counter, read_card_state

if TYPE_CHECKING:
    from .escrow import EscrowFile

#: JSON schema identifier of :meth:`RecoverResult.to_json`.
RECOVER_SCHEMA = "pivtool.recover/1"


@dataclass
class RecoverOptions:
    """How far recover may go. Secrets are not here: they come from the Prompter."""

    #: The user says nobody knows the PUK: go to the reset path even if it has tries left.
    puk_unknown: bool = False
    #: Spend the last PUK/PIN try without asking (non-interactive use).
    allow_last_try: bool = False
    #: A person answers confirmations (the last-try guard then asks instead of refusing).
    interactive: bool = False
    #: PIN not blocked: "yes" = change it (a new PIN was supplied), "ask" = offer, "no".
    pin_change: str = "no"
    backup_dir: str | None = None
    #: After a reset, enroll again with the old UPN (needs an issuer or ``csr_out``).
    reenroll: bool = False
    #: UPN for the re-enrollment when the old 9a certificate has none (or to override it).
    upn: str | None = None
    csr_out: str | None = None


@dataclass
class RecoverResult:
    """What recover found and did (no secrets)."""

    serial: int | None
    card: str
    path: str = ""  # pin-ok, pin-changed, unblocked, reset, issuer-needed
    status: str = "ok"  # ok, declined, issuer-needed, pending-certificate
    steps: list[Step] = field(default_factory=list)
    before: CardSnapshot | None = None
    after: CardSnapshot | None = None
    puk_source: str | None = None  # "escrow", "prompt" (env, file or terminal)
    backup_dir: str | None = None
    backup: list[str] = field(default_factory=list)
    destroyed: list[str] = field(default_factory=list)
    upn: str | None = None
    reenroll: EnrollResult | None = None
    reenroll_command: str | None = None

    def to_json(self) -> dict[str, Any]:
        """Stable JSON (schema ``pivtool.recover/1``, see docs/pin-locked.md)."""
        return {
            "schema": RECOVER_SCHEMA,
            "serial": self.serial,
            "card": self.card,
            "path": self.path,
            "status": self.status,
            "steps": [s.to_json() for s in self.steps],
            "before": _state_json(self.before),
            "after": _state_json(self.after),
            "puk_source": self.puk_source,
            "backup_dir": self.backup_dir,
            "backup": self.backup,
            "destroyed": self.destroyed,
            "upn": self.upn,
            "reenroll": self.reenroll.to_json() if self.reenroll else None,
            "reenroll_command": self.reenroll_command,
        }


def _state_json(st: CardSnapshot | None) -> dict[str, Any] | None:
    if st is None:
        return None
    from ..certs.inspect import summarize

    slots = []
    for s in st.slots:
        cert = None
        if s.certificate is not None:
            summ = summarize(s.certificate)
            cert = {"subject": summ.subject, "upns": summ.upns, "serial": summ.serial,
                    "sha256": summ.sha256}
        slots.append({"slot": f"{s.slot.value:02x}", "key": s.key_algorithm,
                      "certificate": cert})
    return {"pin": asdict(st.pin), "puk": asdict(st.puk),
            "management_key_protected": st.mgmt_key_protected, "slots": slots}


def _tries_text(c: Counter) -> str:
    if c.tries_left is None:
        return "unknown (the card cannot tell without spending one)"
    total = f" of {c.tries_total}" if c.tries_total is not None else ""
    return f"{c.tries_left}{total} tries left"


def _slot_list(st: CardSnapshot) -> str:
    names = [s.slot.label for s in st.slots
             if s.slot is not Slot.ATTESTATION and (s.key_algorithm or s.certificate)]
    if not st.keys_reported or st.unknown_slots:
        # The card cannot say which slots hold keys: "unknown", never "no keys".
        return (", ".join(names) + "; " if names else "no certificates; ") + \
            "keys unknown (the card does not report them)"
    return ", ".join(names) if names else "no keys or certificates"


class Recoverer:
    """Runs recover on one card; ``on_step`` sees each explanation and result as it
    happens (the CLI prints them before the next action)."""

    def __init__(self, session: PivSession, prompter: Prompter, opts: RecoverOptions,
                 issuer: Issuer | None = None, escrow: EscrowFile | None = None,
                 on_step: Callable[[Step], None] | None = None) -> None:
        self.s = session
        self.p = prompter
        self.o = opts
        self.issuer = issuer
        self.escrow = escrow
        self.on_step = on_step or (lambda step: None)
        self.result = RecoverResult(serial=None, card="piv")

    def _report(self, name: str, status: str, detail: str) -> None:
        self._current = name
        step = Step(name, status, detail)
        self.result.steps.append(step)
        self.on_step(step)

    # --- entry point ------------------------------------------------------------------

    def run(self) -> RecoverResult:
        """Read the state and take the least destructive path. A card pulled (or reset)
        midway is reported with the step it interrupted."""
        self._current = "read card"
        try:
            return self._run()
        except TransportError as e:
            raise StepFailedError(self._current, e) from e

    def _run(self) -> RecoverResult:
        st = read_card_state(self.s)
        r = self.result
        r.serial, r.card, r.before = st.serial, "yubikey" if st.is_yubikey else "piv", st
        kind = f"YubiKey {st.version}" if st.is_yubikey else "generic PIV card"
        serial = f" serial {st.serial}" if st.serial is not None else ""
        mgmt = "management key stored PIN-protected" if st.mgmt_key_protected else (
            "management key is the factory default" if st.mgmt_key_default
            else "management key not stored PIN-protected")
        self._report("read card", "done",
                     f"{kind}{serial}; PIN {_tries_text(st.pin)}"
                     f"{' (factory default)' if st.pin.is_default else ''}; "
                     f"PUK {_tries_text(st.puk)}"
                     f"{' (factory default)' if st.puk.is_default else ''}; {mgmt}; "
                     f"holds {_slot_list(st)}")
        if not st.pin.blocked:
            self._pin_ok(st)
        elif st.puk.blocked or st.puk_blocked_by_ykman:
            self._reset(st, "The PIN and the PUK are both blocked")
        elif self.o.puk_unknown:
            self._reset(st, "The PIN is blocked and the PUK is unknown")
        else:
            self._unblock(st)
        if r.status != "declined" and r.path not in ("pin-ok", "issuer-needed"):
            r.after = read_card_state(self.s)
        else:
            r.after = st
        return r

    # --- path 1: the PIN works ----------------------------------------------------------

    def _pin_ok(self, st: CardSnapshot) -> None:
        self.result.path = "pin-ok"
        self._report("PIN", "done", f"The PIN is not blocked: {_tries_text(st.pin)}. "
                                    "Nothing needs unblocking.")
        if self.o.puk_unknown:
            self._report("PUK", "done", "--puk-unknown has no effect while the PIN works; "
                                        "'pivtool reset' starts over if you really want to")
        if st.puk.blocked or st.puk_blocked_by_ykman:
            self._report("PUK", "done", "Note: the PUK is blocked, so a blocked PIN would "
                                        "leave only a reset")
        change = self.o.pin_change == "yes" or (
            self.o.pin_change == "ask" and self.p.confirm("Change the PIN now?"))
        if not change:
            self._report("change PIN", "skipped",
                         "to change it, give the current and the new PIN "
                         "(PIVTOOL_PIN, PIVTOOL_NEW_PIN) to 'pivtool recover'")
            return
        self._report("change PIN", "plan", "Changing the PIN (the current PIN is needed; a "
                                           "wrong one spends a try)")
        old = self.p.secret("pin")
        pin_bytes(old)  # a wrong length must not cost a try
        new = self._new_pin()
        self._last_try("PIN", pin_tries(self.s))
        # force: _last_try above is recover's guard; change_pin keeps a PIN-derived
        # management key (ykman's legacy scheme) working with the new PIN.
        change_pin(self.s, old, new, force=True)
        self.result.path = "pin-changed"
        self._report("change PIN", "done", "PIN changed")

    # --- path 2: unblock with the PUK ---------------------------------------------------

    def _unblock(self, st: CardSnapshot) -> None:
        self._report("unblock PIN", "plan",
                     f"The PIN is blocked; PUK: {_tries_text(st.puk)}. Unblocking with "
                     "the PUK sets a new PIN and keeps every key and certificate "
                     f"({_slot_list(st)})"
                     + ("; the PIN-protected management key stays usable with the new PIN"
                        if st.mgmt_key_protected else ""))
        puk = self._puk(st)
        new_pin = self._new_pin()
        self._last_try("PUK", puk_tries(self.s))
        try:
            self.s.unblock_pin(puk, new_pin)
        except BlockedError:
            # Only reachable on cards that cannot report the PUK counter.
            self._report("unblock PIN", "failed", "the PUK is blocked")
            self._reset(read_card_state(self.s), "The PIN and the PUK are both blocked")
            return
        except InvalidPinError as e:
            hint = "; run 'pivtool recover' again: only a reset remains" \
                if e.tries_left == 0 else ""
            self._report("unblock PIN", "failed", f"{e}{hint}")
            raise StepFailedError("unblock PIN", e) from e
        self.result.path = "unblocked"
        verify_pin(self.s, new_pin)
        self._report("unblock PIN", "done", "new PIN set and verified; keys and certificates "
                                            "kept")
        if st.mgmt_key_protected:
            try:
                auth = authenticate(self.s, OverridePrompter(self.p, {"pin": new_pin}))
            except TransportError:
                raise  # a pulled card is not a key that does not open
            except PivToolError as e:
                # The PIN is unblocked either way; a stored key that no longer opens was
                # broken before (another tool changed the key without updating the copy).
                self._report("management key", "failed",
                             f"the PIN-protected management key does not open: {e}")
            else:
                self._report("management key", "done",
                             f"the {auth.source} management key opens with the new PIN")

    def _puk(self, st: CardSnapshot) -> bytes:
        if self.escrow is not None:
            if st.serial is None:
                raise UsageError("the card reports no serial number, so its PUK cannot be "
                                 "looked up in the escrow")
            entry = self.escrow.get(st.serial)
            if entry is None or entry.puk is None:
                raise UsageError(f"{self.escrow.path} holds no PUK for serial {st.serial}")
            self.result.puk_source = "escrow"
            self._report("PUK", "done", f"PUK for serial {st.serial} found in "
                                        f"{self.escrow.path}")
            puk = entry.puk.encode("utf-8")
            pin_bytes(puk, "escrowed PUK")
            return puk
        try:
            puk = self.p.secret("puk")
        except UsageError as e:
            raise UsageError(f"{e}; if nobody knows the PUK, re-run with --puk-unknown "
                             "(PIV reset) or with --escrow FILE") from None
        pin_bytes(puk, "PUK")  # a wrong length must not cost a try
        self.result.puk_source = "prompt"
        return puk

    def _new_pin(self) -> bytes:
        new = self.p.secret("new_pin")
        pin_bytes(new, "new PIN")
        if new == DEFAULT_PIN:
            raise UsageError("the new PIN must not be the factory default")
        return new

    def _last_try(self, what: str, tries: Tries) -> None:
        """The retry guard as recover applies it: a blocked reference is never tried; the
        last try is spent only with force, or when a person confirms."""
        if tries.left == 0:
            raise BlockedError(0x6983, b"", f"the {what} is blocked")
        if tries.left is None and tries.unknown is not None and not self.o.allow_last_try:
            # The card cannot tell (no GET METADATA): this try may be the last one.
            warn = (f"The card cannot tell how many {what} tries are left ({tries.unknown}): "
                    f"this may be the last one, and a wrong {what} would block it"
                    + (" and leave only a PIV reset" if what == "PUK" else ""))
            if self.o.interactive:
                if self.p.confirm(f"{warn}. Try the {what} now?"):
                    return
                raise RetryGuardError(f"the {what} try was not spent")
            raise RetryGuardError(f"the card cannot tell how many {what} tries are left "
                                  f"({tries.unknown}), so this try may be the last one and "
                                  f"a wrong {what} would block it. Re-run with "
                                  f"--allow-last-try if you are sure of the {what}")
        if tries.left != 1 or self.o.allow_last_try:
            return
        warn = f"Only 1 {what} try left: a wrong {what} now blocks it" + (
            " and leaves only a PIV reset" if what == "PUK" else "")
        if self.o.interactive:
            if self.p.confirm(f"{warn}. Use the last try?"):
                return
            raise RetryGuardError(f"only 1 {what} try left; not spent")
        raise RetryGuardError(f"only 1 {what} try left; a wrong {what} now blocks it. "
                              "Re-run with --allow-last-try if you are sure of it")

    # --- path 3: reset ------------------------------------------------------------------

    def _reset(self, st: CardSnapshot, reason: str) -> None:
        from ..core.errors import NotSupportedError
        from .reset import (
            backup_certificates,
            default_backup_dir,
            plan_reset,
            require_resettable,
            reset_card,
        )

        r = self.result
        try:
            require_resettable(self.s)
        except NotSupportedError as e:
            r.path = r.status = "issuer-needed"
            self._report("reset", "skipped",
                         f"{reason}, and {e}. Ask the issuer to unblock or re-issue the card, "
                         "then enroll it again. pivtool changed nothing.")
            return
        plan = plan_reset(st)
        r.upn = self._old_upn(st)
        directory = Path(self.o.backup_dir) if self.o.backup_dir else \
            default_backup_dir(st.serial)
        certs = [s for s in st.slots if s.certificate is not None]
        self._report("reset", "plan",
                     f"{reason}: only a PIV reset remains. {plan.describe()} Private keys "
                     "cannot be exported, so they are lost; "
                     + (f"the {len(certs)} certificate(s) are saved to {directory} first"
                        if certs else "there are no certificates to save")
                     + ". The remaining PIN/PUK tries are spent on purpose: the card resets "
                       "only when both are blocked.")
        enroll_opts = self._reenroll_options(st) if self.o.reenroll else None
        if not self.p.confirm(f"Reset the PIV application"
                              f"{' of serial ' + str(st.serial) if st.serial else ''} now? "
                              "This cannot be undone"):
            r.status = "declined"
            r.path = "reset"
            self._report("reset", "skipped", "declined; nothing was changed")
            return
        if enroll_opts is not None:
            # Asked after the confirmation, but before anything is destroyed: a missing new
            # PIN/PUK must stop us while the card is still intact.
            self._new_pin()
            pin_bytes(self.p.secret("new_puk"), "new PUK")
        saved = backup_certificates(st, directory)
        r.backup = [str(p) for p in saved]
        r.backup_dir = str(directory) if saved else None
        self._report("backup", "done", f"{len(saved)} certificate(s) saved in {directory}"
                     if saved else "no certificates to save")
        result = reset_card(self.s, plan, saved)
        r.path = "reset"
        r.destroyed = result.destroyed
        self._report("reset", "done",
                     f"spent {result.pin_tries_spent} PIN and {result.puk_tries_spent} PUK "
                     "tries; PIV application reset to factory defaults")
        if enroll_opts is None:
            r.reenroll_command = self._enroll_command(r.upn)
            self._report("re-enroll", "skipped", f"to enroll again: {r.reenroll_command}")
            if self.escrow is not None:
                self._report("escrow", "skipped",
                             f"the PUK escrowed for serial {st.serial} is now stale (the PUK "
                             "is the factory default); 'pivtool enroll --escrow' replaces it")
            return
        self._reenroll(enroll_opts)

    def _old_upn(self, st: CardSnapshot) -> str | None:
        if self.o.upn:
            return self.o.upn
        from ..certs.inspect import get_upns

        old = st.slot(Slot.AUTHENTICATION)
        if old is None or old.certificate is None:
            return None
        upns = get_upns(old.certificate)
        return upns[0] if upns else None

    def _reenroll_options(self, st: CardSnapshot) -> EnrollOptions:
        """Everything re-enrollment needs, checked *before* the reset destroys anything."""
        from ..certs.inspect import get_emails
        from ..piv.constants import KeyType
        from .enroll_options import IOS_ALGORITHMS, validate_options

        if self.result.upn is None:
            raise UsageError("the old 9a certificate holds no UPN to enroll again with: "
                             "give --upn")
        if self.issuer is None and not self.o.csr_out:
            raise UsageError("--reenroll needs an issuer: --ca DIR, --issuer-cmd CMD or "
                             "--csr-out FILE")
        if self.issuer is not None:
            self.issuer.preflight()  # the CA opens, the command exists: before the reset
        old = st.slot(Slot.AUTHENTICATION)
        algorithm = KeyType.ECCP256
        emails: list[str] = []
        if old is not None:
            if old.key_algorithm:
                kt = KeyType.parse(old.key_algorithm)
                algorithm = kt if kt in IOS_ALGORITHMS else algorithm
            if old.certificate is not None:
                emails = get_emails(old.certificate)
        nine_d = st.slot(Slot.KEY_MANAGEMENT)
        opts = EnrollOptions(upn=self.result.upn, emails=emails, algorithm=algorithm,
                             macos=nine_d is not None and nine_d.certificate is not None,
                             csr_out=None if self.issuer else self.o.csr_out)
        validate_options(opts, self.s)
        return opts

    def _reenroll(self, opts: EnrollOptions) -> None:
        from .enroll import Enroller

        def forward(step: Step) -> None:
            self._report(f"enroll: {step.name}", step.status, step.detail)

        self._report("re-enroll", "plan", f"enrolling {opts.upn} again")
        try:
            res = Enroller(self.s, self.p, opts, self.issuer, forward,
                           escrow=self.escrow).run()
        except PivToolError as e:
            self._report("re-enroll", "failed",
                         f"{e}; the card is reset (factory PIN/PUK may have been replaced): "
                         "run 'pivtool enroll' once the cause is fixed")
            raise StepFailedError("re-enroll", e) from e
        self.result.reenroll = res
        if res.status == "pending-certificate":
            self.result.status = "pending-certificate"
        self._report("re-enroll", "done" if res.status == "enrolled" else "pending",
                     f"{opts.upn} enrolled" if res.status == "enrolled"
                     else f"CSR for {opts.upn} written to {res.csr_file}")

    @staticmethod
    def _enroll_command(upn: str | None) -> str:
        return f"pivtool enroll --upn {upn or '<UPN>'} --ca DIR  (or --issuer-cmd CMD, " \
               "--csr-out FILE)"
