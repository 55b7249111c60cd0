"""Enrolling the card in one reader (runs in that reader's worker thread)."""

from __future__ import annotations

import contextlib
import secrets
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING

from ...core.errors import PivToolError, StepFailedError, TransportError, UsageError
from ...core.events import CardSource
from ...piv.constants import KeyType, PinPolicy, Slot, TouchPolicy
from ..roster import RosterRow
from .options import BatchEvent, BatchOptions
from .outputs import AuditLog, fingerprint, read_pin_letter, write_pin_letter
from .state import (
    DONE,
    ENROLLING,
    FAILED,
    INCOMPLETE,
    MAX_ATTEMPTS,
    PENDING,
    READ_ONLY_STEPS,
    REASSIGNED,
    BatchPaths,
    BatchState,
    CertRecord,
    UserRecord,
    _stamp,
    now_iso,
)

if TYPE_CHECKING:
    from ...piv.session import PivSession
    from ..enroll_options import EnrollResult, Step
    from ..issuers import Issuer
    from ..state import CardSnapshot


def _random_digits(n: int) -> bytes:
    # Digits only: macOS refuses non-numeric PINs, and iOS shows a numeric keypad.
    return "".join(secrets.choice("0123456789") for _ in range(n)).encode()


class _Refusal(Exception):
    """A key the batch will not enroll (already someone's, unknown PIN...)."""

    def __init__(self, outcome: str, reason: str) -> None:
        super().__init__(reason)
        self.outcome = outcome


@dataclass
class _Claim:
    user: UserRecord
    resume: bool
    wipe: bool
    force: bool


class CardWork:
    """One card, start to finish: read it, decide whose it is (:meth:`_claim`), wipe it
    for ``--reassign``, enroll, and record the outcome. Mixed into
    :class:`~pivtool.workflows.batch.runner.BatchRunner`, whose reader workers call
    :meth:`handle_card`; the attributes below are the runner's."""

    source: CardSource
    state: BatchState
    paths: BatchPaths
    o: BatchOptions
    issuer: Issuer
    audit: AuditLog
    per_reader: dict[str, dict[str, int]]
    _cond: threading.Condition
    _stop_requested: threading.Event
    _emit_lock: threading.Lock
    _on_event: Callable[[BatchEvent], None]
    _busy: int
    _enrolled: int
    _accepting: bool
    _last_activity: float
    #: From :class:`~pivtool.workflows.batch.graphbind.GraphBinding` (``--graph-bind``).
    graph_bind: Callable[[str | None, int | None, UserRecord], None]

    def emit(self, event: BatchEvent) -> None:
        """Hand an event to the caller, one at a time."""
        with self._emit_lock:
            self._on_event(event)

    def _touch(self) -> None:
        with self._cond:
            self._last_activity = time.monotonic()
            self._cond.notify_all()

    def _tally(self, reader: str, what: str) -> None:
        with self._cond:
            row = self.per_reader.setdefault(reader, {"done": 0, "failed": 0, "refused": 0})
            row[what] += 1

    # --- one card --------------------------------------------------------------------

    def handle_card(self, reader: str) -> None:
        """Enroll the card just inserted into *reader* (runs in the reader's worker)."""
        from ...piv.session import PivSession
        from ..state import read_card_state

        with self._cond:
            self._busy += 1
        serial: int | None = None
        claim: _Claim | None = None
        try:
            try:
                conn = self.source.connect(reader)
            except (TransportError, UsageError) as e:
                self.emit(BatchEvent("failed", reader, data={"error": str(e), "step": None}))
                self.audit.write("connect", "failed", reader, detail=str(e))
                self._tally(reader, "failed")
                return
            try:
                session = PivSession(conn)
                card = read_card_state(session)
                serial = card.serial
                self.emit(BatchEvent("inserted", reader, serial))
                self.audit.write("insert", "ok", reader, serial)
                claim = self._claim(reader, card)
                if claim.wipe:
                    session = self._wipe(session, reader, card, claim)
                self._enroll(session, reader, card, claim)
            except _Refusal as r:
                self.emit(BatchEvent("refused", reader, serial,
                                     data={"outcome": r.outcome, "reason": str(r)}))
                self.audit.write("claim", r.outcome, reader, serial, detail=str(r))
                self._tally(reader, "refused")
            except PivToolError as e:
                if claim is not None:
                    self._failed(reader, serial, claim, e)
                else:
                    self.emit(BatchEvent("failed", reader, serial,
                                         data={"error": str(e), "step": None}))
                    self.audit.write("read card", "failed", reader, serial, detail=str(e))
                    self._tally(reader, "failed")
            finally:
                conn.close()
            self.emit(BatchEvent("remove-card", reader, serial))
        except Exception as e:  # never let one card kill its reader's worker
            self.emit(BatchEvent("failed", reader, serial,
                                 data={"error": f"internal error: {type(e).__name__}: {e}",
                                       "step": None}))
            self.audit.write("internal", "error", reader, serial, detail=type(e).__name__)
            if claim is not None:
                self._failed(reader, serial, claim, e)
        finally:
            with contextlib.suppress(Exception):  # a source failing here must not hang us
                self.source.card_done(reader)
            with self._cond:
                self._busy -= 1
                self._last_activity = time.monotonic()
                self._cond.notify_all()

    def _claim(self, reader: str, card: CardSnapshot) -> _Claim:
        """Decide who this key is for (under the state lock), and bind them to it in the
        state file before anything changes on the card."""
        from ...certs.inspect import get_upns

        serial = card.serial
        if serial is None:
            raise _Refusal("no-serial", "the card reports no serial number; batch enrollment "
                                        "needs YubiKeys (firmware 5 or later)")
        slot = card.slot(Slot.AUTHENTICATION)
        occupied = slot is not None and bool(slot.key_algorithm or slot.certificate)
        cert_upns = get_upns(slot.certificate) if slot is not None and slot.certificate else []
        with self.state.lock:
            with self._cond:
                accepting = self._accepting and not self._stop_requested.is_set() and not (
                    self.o.max_cards is not None and self._enrolled >= self.o.max_cards)
            if not accepting:
                raise _Refusal("stopping", "the batch is stopping; this key was not touched")
            bound = self.state.bound_to(serial)
            wipe = False
            user: UserRecord | None = None
            if bound is not None:
                foreign = bool(cert_upns) and bound.upn.casefold() not in {
                    u.casefold() for u in cert_upns}
                if bound.status == ENROLLING:
                    raise _Refusal("busy", f"serial {serial} is still being enrolled for "
                                           f"{bound.upn} on {bound.reader}")
                if foreign:
                    if not self.o.reassign:
                        raise _Refusal("foreign", f"the batch gave serial {serial} to "
                                       f"{bound.upn}, but its 9a certificate is for "
                                       f"{cert_upns[0]}; --reassign wipes the key")
                    wipe = True
                elif bound.status == DONE:
                    # Even --reassign never takes a key from a user still in the roster: a
                    # re-run with the same state would otherwise wipe finished keys.
                    if not self.o.reassign or bound.in_roster:
                        raise _Refusal("already-enrolled", f"serial {serial} is already "
                                       f"enrolled for {bound.upn}")
                    wipe = True
                elif bound.status == FAILED:
                    if not self.o.reassign:
                        raise _Refusal("failed-before", f"enrollment of {bound.upn} on "
                                       f"serial {serial} failed {bound.attempts} times "
                                       f"({bound.error}); --reassign wipes the key")
                    wipe = True
                else:
                    user = bound  # incomplete: finish it for the same user
            elif cert_upns or occupied:
                if not self.o.reassign:
                    who = f"for {cert_upns[0]}" if cert_upns else "(9a holds a key)"
                    raise _Refusal("foreign", f"serial {serial} is already enrolled {who} "
                                   "outside this batch; --reassign wipes the key")
                wipe = True
            if user is None:
                # Checked before a user is taken: with a database, taking is claiming.
                if not wipe and card.pin.is_default is False and self.o.secrets.pin is None:
                    raise _Refusal("pin-unknown", f"the PIN of serial {serial} is not the "
                                   "factory default and this batch does not know it: set "
                                   "PIVTOOL_PIN, or --reassign to wipe the key")
                user = self.state.next_pending(serial, reader)
                if user is None:
                    raise _Refusal("no-user", f"no pending user for serial {serial}"
                                   + (" (the key was not wiped)" if wipe else ""))
            if wipe and bound is not None:
                if bound.status == DONE:
                    bound.status = REASSIGNED
                    bound.error = f"key {serial} reassigned to {user.upn}"
                else:  # half-made: give the user a fresh start on another key
                    bound.status = PENDING if bound.status != FAILED else FAILED
                    bound.serial = None
            resume = user.serial == serial
            if resume:
                user.history.append({"serial": serial, "reader": user.reader,
                                        "last_step": user.last_step,
                                        "error": user.error, "ended": user.finished})
            user.status, user.serial, user.reader, user.error = ENROLLING, serial, reader, None
            user.attempts += 1
            user.steps, user.last_step, user.started, user.finished = [], None, now_iso(), None
            self.state.save()
        claim = _Claim(user, resume=resume and not wipe, wipe=wipe,
                       force=occupied and not wipe)
        self.emit(BatchEvent("enrolling", reader, serial, user.upn,
                             data={"resume": claim.resume, "attempt": user.attempts,
                                   "wipe": wipe}))
        self.audit.write("claim", "resume" if claim.resume else "assigned", reader, serial,
                         user.upn, detail=f"attempt {user.attempts}"
                         + ("; key will be wiped (--reassign)" if wipe else ""))
        return claim

    def _wipe(self, session: PivSession, reader: str, card: CardSnapshot,
              claim: _Claim) -> PivSession:
        """``--reassign``: back up the old certificates, then PIV-reset the key."""
        from ...piv.session import PivSession
        from ..reset import backup_certificates, plan_reset, reset_card

        serial = card.serial
        directory = self.paths.backups / f"{serial}-{_stamp()}"
        plan = plan_reset(card)
        saved = backup_certificates(card, directory)
        reset_card(session, plan, saved)
        detail = "; ".join(plan.destroys) + (f"; old certificates in {directory}"
                                             if saved else "")
        self.audit.write("wipe", "done", reader, serial, claim.user.upn, detail=detail)
        self.emit(BatchEvent("wiped", reader, serial, claim.user.upn,
                             data={"destroyed": plan.destroys,
                                   "backup": [str(p) for p in saved]}))
        # A fresh session: the reset changed the management key type and every status.
        return PivSession(session.connection)

    def _secrets_for(self, user: UserRecord, serial: int, pin_default: bool,
                     puk_default: bool) -> dict[str, bytes]:
        """The secrets the Enroller will ask for, with every new value recorded (letter,
        escrow) *before* the Enroller writes it to the card."""
        sp = self.o.secrets
        upn = user.upn
        values: dict[str, bytes] = {}
        if pin_default:
            new_pin = sp.new_pin if sp.new_pin is not None else _random_digits(8)
            if sp.pin_letters is not None:
                user.pin_letter = str(write_pin_letter(sp.pin_letters, upn, serial,
                                                          new_pin))
            values["new_pin"] = new_pin
        else:
            known = None
            if user.serial == serial:  # our own half-made key: we set that PIN
                known = (read_pin_letter(sp.pin_letters, upn) if sp.pin_letters is not None
                         else sp.new_pin)
            pin = known or sp.pin
            if pin is not None:
                values["pin"] = pin
                if sp.pin_letters is not None and known is None:
                    user.pin_letter = str(write_pin_letter(sp.pin_letters, upn, serial,
                                                              pin))
        if puk_default:
            new_puk = sp.new_puk if sp.new_puk is not None else _random_digits(8)
            if self.o.escrow is not None:
                self.o.escrow.put(serial, upn, puk=new_puk)
            values["new_puk"] = new_puk
        else:
            entry = self.o.escrow.get(serial) if self.o.escrow is not None else None
            puk = (entry.puk.encode() if entry is not None and entry.puk else None) or \
                (sp.new_puk if user.serial == serial else None) or sp.puk
            if puk is not None:
                values["puk"] = puk
        if sp.mgmt_key is not None:
            values["mgmt_key"] = sp.mgmt_key
        return values

    def _enroll(self, session: PivSession, reader: str, card: CardSnapshot,
                claim: _Claim) -> None:
        from ..auth import StaticPrompter
        from ..enroll import Enroller
        from ..enroll_options import EnrollOptions

        user = claim.user
        serial = card.serial
        assert serial is not None
        opts = user.options
        # Where the card cannot tell (no GET METADATA), a new PIN/PUK is prepared as for a
        # factory one: the Enroller replaces what it cannot rule out is the default (the
        # PUK try under the retry guard: --allow-last-try).
        pin_default = claim.wipe or card.pin.is_default is not False
        puk_default = claim.wipe or card.puk.is_default is not False
        with self.state.lock:
            values = self._secrets_for(user, serial, pin_default, puk_default)
            self.state.save()
        backup = self.paths.backups / f"{serial}-{_stamp()}"
        eo = EnrollOptions(
            upn=user.upn, emails=list(opts.emails),
            subject=_subject(opts.display_name),
            algorithm=KeyType.parse(opts.algorithm),
            pin_policy=PinPolicy.parse(opts.pin_policy),  # type: ignore[arg-type]
            touch_policy=TouchPolicy.parse(opts.touch_policy),  # type: ignore[arg-type]
            macos=self.o.macos, policies=list(opts.policies), force=claim.force,
            backup_dir=str(backup), allow_non_ios=self.o.allow_non_ios,
            retry_force=self.o.allow_last_try)

        def on_step(step: Step) -> None:
            with self.state.lock:
                user.steps.append({**step.to_json(), "time": now_iso()})
                user.last_step = step.name
                self.state.save()
            self.audit.write(step.name, step.status, reader, serial, user.upn,
                             detail=step.detail)
            self.emit(BatchEvent("step", reader, serial, user.upn,
                                 data={"step": step.name, "status": step.status,
                                       "detail": step.detail}))

        result = Enroller(session, StaticPrompter(values), eo, self.issuer, on_step,
                          escrow=self.o.escrow).run()
        self._done(reader, serial, user, result)
        self.state.record_enrolled(card, user, result)

    def _done(self, reader: str, serial: int, user: UserRecord,
              result: EnrollResult) -> None:
        from ...certs.inspect import summarize

        cert = result.certificate
        fp = fingerprint(cert)
        summ = summarize(cert).to_json()
        ids = [{"kind": i["kind"], "value": i["value"], "affinity": i["affinity"]}
               for i in result.certificate_user_ids]
        with self.state.lock:
            user.status, user.finished, user.error = DONE, now_iso(), None
            user.certificate = CertRecord(fp, summ.get("serial"), summ.get("subject"),
                                          summ.get("issuer"), summ.get("not_after"))
            user.certificate_user_ids = ids
            self.state.save()
        with self._cond:
            self._enrolled += 1
        self._tally(reader, "done")
        self.audit.write("enrolled", "done", reader, serial, user.upn, fingerprint=fp)
        self.emit(BatchEvent("done", reader, serial, user.upn,
                             data={"fingerprint": fp, "certificate_user_ids": ids,
                                   "pin_letter": user.pin_letter}))
        # Right after the enrollment is on record; a failure here never undoes it.
        self.graph_bind(reader, serial, user)

    def _failed(self, reader: str, serial: int | None, claim: _Claim,
                error: BaseException) -> None:
        """Record a failed attempt. A failure before anything changed on the key releases
        the user for another key; after that the user stays bound to this key (status
        ``incomplete``) until it comes back, or ``failed`` after :data:`MAX_ATTEMPTS`."""
        user = claim.user
        step = error.step if isinstance(error, StepFailedError) else None
        message = str(error)
        with self.state.lock:
            # A failed step may itself have changed the key (a lost answer): the Enroller
            # says so in the error.
            changed = claim.resume or claim.wipe or any(
                s["step"] not in READ_ONLY_STEPS for s in user.steps) or bool(
                isinstance(error, StepFailedError) and error.changed)
            user.error = message
            user.finished = now_iso()
            if step is not None:
                user.last_failed_step = step
            if user.attempts >= MAX_ATTEMPTS:
                user.status = FAILED
            elif changed:
                user.status = INCOMPLETE
            else:
                user.status = PENDING
                user.serial = None
            status = user.status
            self.state.save()
        self._tally(reader, "failed")
        self.audit.write(step or "enroll", "failed", reader, serial, user.upn,
                         detail=f"{message} (user now {status})")
        self.emit(BatchEvent("failed", reader, serial, user.upn,
                             data={"step": step, "error": message, "user_status": status}))


def _subject(display_name: str | None) -> str | None:
    return RosterRow(0, "", display_name=display_name).subject
