"""Getting permission from the card: PIN with the retry guard, the management key (typed,
default, or stored PIN-protected the way yubikey-manager stores it).

Secrets arrive through a :class:`Prompter`; workflows never print or read the terminal.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Protocol

from ..core.errors import (
    ApduError,
    BadResponseError,
    BlockedError,
    NotFoundError,
    NotSupportedError,
    PivToolError,
    RetryGuardError,
    SecurityStatusError,
    UsageError,
)
from ..piv.constants import DEFAULT_MGMT_KEY, KeyRef, ObjectId
from ..piv.encoding import pin_bytes
from ..piv.metadata import PinMetadata
from ..piv.objects import (
    PIVMAN_FLAG_MGMT_PROTECTED,
    PivmanData,
    PivmanProtectedData,
    derive_mgmt_key,
)
from ..piv.session import PivSession
from ..piv.version import has_metadata

if TYPE_CHECKING:
    from ..piv.constants import MgmtKeyType


class Prompter(Protocol):
    """Where a workflow gets secrets and confirmations (the CLI: env, file or prompt)."""

    def secret(self, name: str) -> bytes:
        """Return the secret called *name* (``pin``, ``puk``, ``mgmt_key``, ``new_pin``,
        ``new_puk``...). Raise :class:`UsageError` when it cannot be had."""
        ...

    def confirm(self, message: str) -> bool:
        """Ask a yes/no question; non-interactive callers answer from ``--yes``."""
        ...

    def given(self, name: str) -> bool:
        """True when the user supplied *name* explicitly (file or environment): such a
        secret is used before any fallback (an explicit management key beats the default)."""
        ...

    def ask(self, question: str) -> bool:
        """Ask a person a yes/no question that ``--yes`` does not answer (spending a try
        that may be the last one); False when nobody can be asked (scripts)."""
        ...


@dataclass
class StaticPrompter:
    """A prompter from fixed values (tests, batch jobs). Missing secrets are usage errors."""

    secrets: dict[str, bytes] = field(repr=False)
    yes: bool = False

    def secret(self, name: str) -> bytes:
        """Look the secret up."""
        if name not in self.secrets:
            raise UsageError(f"{name.replace('_', ' ')} needed")
        return self.secrets[name]

    def confirm(self, message: str) -> bool:
        """Answer with ``yes``."""
        return self.yes

    def given(self, name: str) -> bool:
        """Whether the value is there."""
        return name in self.secrets

    def ask(self, question: str) -> bool:
        """Nobody to ask: scripts say ``--allow-last-try`` instead."""
        return False


@dataclass
class OverridePrompter:
    """A prompter that answers some secrets itself (e.g. a PIN a workflow just set) and
    asks *base* for the rest."""

    base: Prompter
    values: dict[str, bytes] = field(repr=False)

    def secret(self, name: str) -> bytes:
        """The override, else the base prompter's answer."""
        return self.values[name] if name in self.values else self.base.secret(name)

    def confirm(self, message: str) -> bool:
        """Ask the base prompter."""
        return self.base.confirm(message)

    def given(self, name: str) -> bool:
        """An override counts as given."""
        return name in self.values or self.base.given(name)

    def ask(self, question: str) -> bool:
        """Ask the base prompter."""
        return self.base.ask(question)


@dataclass(frozen=True)
class Tries:
    """Tries left for the PIN or PUK. ``left`` is ``None`` either because the PIN is already
    verified in this session (nothing is at risk) or because the card cannot tell without
    spending one: then ``unknown`` says why, and the retry guard treats the next try as
    possibly the last."""

    left: int | None
    total: int | None = None
    unknown: str | None = None


#: Why a card without GET METADATA cannot report the PUK tries (SP 800-73-4 has no PUK
#: status query; VERIFY is not defined for the PUK, so an empty VERIFY is no safe read).
PUK_UNREADABLE = "it has no PUK status query"


def _metadata_tries(session: PivSession, read: Callable[[], PinMetadata]) -> Tries | None:
    """Tries from GET METADATA; ``None`` when the card lacks it or answered it in a way
    that cannot be understood (the caller then falls back to what the card does show)."""
    if session.version is None or not has_metadata(session.version):
        return None
    for _attempt in range(2):  # a garbled answer is asked for once more
        try:
            md = read()
        except (ApduError, BadResponseError, NotSupportedError):
            continue
        if md.remaining <= md.total:  # else not a count the card could have
            return Tries(md.remaining, md.total)
    return None


def pin_tries(session: PivSession) -> Tries:
    """Tries left on the PIN, without spending one: GET METADATA, else an empty VERIFY
    (SP 800-73-4 Part 2 §3.2.1), else what the card's last 63Cx answer said."""
    tries = _metadata_tries(session, session.get_pin_metadata)
    if tries is not None:
        return tries
    try:
        left = session.pin_tries_by_verify()
    except ApduError as e:
        learned = session.learned_tries.get(KeyRef.PIN)
        if learned is not None:
            return Tries(learned)
        return Tries(None, unknown=f"the card does not answer the PIN status query "
                                   f"(SW={e.sw:04X})")
    return Tries(left)


def puk_tries(session: PivSession) -> Tries:
    """Tries left on the PUK, without spending one: GET METADATA (YubiKey 5.3+), else the
    count from the card's last 63Cx answer about the PUK in this session, else unknown
    (see :data:`PUK_UNREADABLE`)."""
    tries = _metadata_tries(session, session.get_puk_metadata)
    if tries is not None:
        return tries
    learned = session.learned_tries.get(KeyRef.PUK)
    if learned is not None:
        return Tries(learned)
    return Tries(None, unknown=PUK_UNREADABLE)


Ask = Callable[[str], bool]


def guard(what: str, tries: Tries, force: bool, ask: Ask | None = None) -> None:
    """The retry guard: never spend a try on a blocked reference, and never one that is (or,
    where the card cannot tell, may be) the last without *force* or a person's yes from
    *ask*."""
    if tries.left == 0:
        raise BlockedError(0x6983, b"", f"the {what} is blocked", from_card=False)
    if force:
        return
    if tries.left == 1:
        if ask is not None and ask(f"Only 1 {what} try left: a wrong {what} now blocks "
                                   "it. Use the last try?"):
            return
        raise RetryGuardError(f"only 1 {what} try left; a wrong {what} now blocks it. "
                              "Re-run with --allow-last-try if you are sure of it")
    if tries.left is None and tries.unknown is not None:
        if ask is not None and ask(f"The card cannot tell how many {what} tries are left "
                                   f"({tries.unknown}): this may be the last one, and a "
                                   f"wrong {what} would block it. Try the {what} now?"):
            return
        raise RetryGuardError(f"the card cannot tell how many {what} tries are left "
                              f"({tries.unknown}), so this try may be the last one and a "
                              f"wrong {what} would block it. Re-run with --allow-last-try "
                              f"if you are sure of the {what}")


def verify_pin(session: PivSession, pin: bytes, force: bool = False,
               ask: Ask | None = None) -> Tries:
    """VERIFY the PIN after checking its length and the retry guard. Returns the tries as
    they were before (after a right PIN the card is back at ``total``)."""
    pin_bytes(pin)  # length check before anything is spent
    tries = pin_tries(session)
    guard("PIN", tries, force, ask)
    session.verify_pin(pin)
    return tries


def check_puk(session: PivSession, force: bool = False, ask: Ask | None = None) -> None:
    """Apply the retry guard to the PUK before spending a try."""
    guard("PUK", puk_tries(session), force, ask)


def read_pivman(session: PivSession, strict: bool = False) -> PivmanData:
    """ykman's PIVMAN object, empty when absent. Only a card that has shown it is a YubiKey
    (it answered GET VERSION) is asked: ykman, which writes the object, needs GET VERSION
    too, and on other cards 5FFF00 is nobody's.

    An answer that cannot be understood counts as "no flags known" — unless *strict* (for
    a caller about to rewrite the object, which must not replace what it could not read)."""
    if not session.is_yubikey:
        return PivmanData()
    error: PivToolError | None = None
    for _attempt in range(2):  # an answer that is not understood is asked for once more
        try:
            return PivmanData.decode(session.get_data(ObjectId.PIVMAN))
        except NotFoundError:
            return PivmanData()
        except (ApduError, BadResponseError, NotSupportedError) as e:
            error = e
    if strict:
        raise BadResponseError(f"the YubiKey PIVMAN object (5FFF00) could not be read "
                               f"({error}); not rewriting it") from error
    return PivmanData()


def read_protected_key(session: PivSession) -> list[bytes]:
    """The management key(s) stored in the PIN-protected object (PIN must be verified).

    Returns the stored key and, if a key change was interrupted, the previous key pivtool
    kept beside it (tag 8A), so a card pulled mid-change never leaves the key unknown."""
    from ..core.tlv import TlvError, parse_dict, unwrap

    try:
        raw = session.get_data(ObjectId.PRINTED)
    except NotFoundError:
        return []
    keys = []
    stored = PivmanProtectedData.decode(raw).key
    if stored:
        keys.append(stored)
    try:
        previous = parse_dict(unwrap(raw, 0x88)).get(0x8A)
    except TlvError:
        previous = None
    if previous and previous not in keys:
        keys.append(previous)
    return keys


def write_protected_key(session: PivSession, key: bytes | None,
                        previous: bytes | None = None) -> None:
    """Store *key* (and optionally the *previous* key, tag 8A) in the PIN-protected object;
    ``None`` deletes it. Needs management key and PIN."""
    from ..core.tlv import tlv

    if key is None:
        session.put_data(ObjectId.PRINTED, None)
        return
    inner = tlv(0x89, key) + (tlv(0x8A, previous) if previous else b"")
    session.put_data(ObjectId.PRINTED, tlv(0x88, inner))


@dataclass
class AdminAuth:
    """How the management key was obtained. ``key`` is kept for a following key change and
    hidden from ``repr`` so it cannot reach a log or traceback."""

    source: str  # "default", "protected", "pin-derived", "given"
    pin_verified: bool
    key: bytes = field(default=b"", repr=False)


def authenticate(session: PivSession, prompter: Prompter, force: bool = False,
                 need_pin: bool = False) -> AdminAuth:
    """Authenticate with the management key, finding it the way an admin expects:

    0. a key the user gave explicitly (``PIVTOOL_MGMT_KEY`` or a file) is used as given;
    1. derived from the PIN (ykman's legacy scheme: a PIVMAN salt, tag 82) — derived and
       tried before any PIN try is spent (ykman also tries it first);
    2. stored PIN-protected (PIVMAN flag 0x02, ykman-compatible): verify PIN, read, use;
    3. the factory default, when metadata says the key is still default;
    4. otherwise ask the prompter for ``mgmt_key`` (hex).

    With *need_pin* the PIN is verified in any case (for commands that need both).
    Wrong keys raise :class:`SecurityStatusError` (a management key has no retry counter on
    a YubiKey, so trying the candidates costs nothing)."""
    from .secrets import parse_hex_key

    if prompter.given("mgmt_key"):
        # The admin said which key to use: never fall back to the factory default instead.
        # The one fallback is the PIN-protected store, which the admin set up deliberately
        # and which holds the new key after an interrupted change away from the typed one.
        key = parse_hex_key(prompter.secret("mgmt_key"))
        if _try_key(session, key):
            pin_verified = False
            if need_pin:
                verify_pin(session, prompter.secret("pin"), force, prompter.ask)
                pin_verified = True
            return AdminAuth("given", pin_verified, key)
        if not read_pivman(session).mgmt_key_protected:
            raise SecurityStatusError(0x6982, b"", "the management key was not accepted")
    pivman = read_pivman(session)
    derived_refused = False
    if pivman.salt is not None:
        pin = prompter.secret("pin")
        pin_bytes(pin)  # a wrong length is bad input, not a wrong key
        key = derive_mgmt_key(pin, pivman.salt)
        if _try_key(session, key):
            if need_pin:
                verify_pin(session, pin, force, prompter.ask)
            return AdminAuth("pin-derived", need_pin, key)
        # A wrong PIN, or a key changed by a tool that left the salt: try the other ways.
        derived_refused = True
    pin_verified = False
    if pivman.mgmt_key_protected or need_pin:
        verify_pin(session, prompter.secret("pin"), force, prompter.ask)
        pin_verified = True
    if pivman.mgmt_key_protected:
        candidates = read_protected_key(session)
        for key in candidates:
            if _try_key(session, key):
                return AdminAuth("protected", pin_verified, key)
        if candidates:
            # A change away from the protected key that was interrupted after the card took
            # the new key (or another tool changed it) leaves a stale copy: the key the user
            # typed is then the one that opens. Without one, say what failed.
            from .secrets import parse_hex_key

            try:
                typed = parse_hex_key(prompter.secret("mgmt_key"))
            except UsageError:
                typed = None
            if typed is not None and typed not in candidates and _try_key(session, typed):
                return AdminAuth("given", pin_verified, typed)
            raise SecurityStatusError(0x6982, b"",
                                      "the PIN-protected management key was not accepted")
    default = _mgmt_key_default(session)
    if default:
        session.authenticate(DEFAULT_MGMT_KEY)
        return AdminAuth("default", pin_verified, DEFAULT_MGMT_KEY)
    if default is None and _try_key(session, DEFAULT_MGMT_KEY):
        # Without metadata the only way to know is to try; a wrong management key costs
        # nothing on a YubiKey.
        return AdminAuth("default", pin_verified, DEFAULT_MGMT_KEY)
    from .secrets import parse_hex_key

    try:
        typed_key = prompter.secret("mgmt_key")
    except UsageError:
        if derived_refused:
            raise SecurityStatusError(0x6982, b"", "the management key derived from the PIN "
                                      "was not accepted: check the PIN") from None
        raise
    key = parse_hex_key(typed_key)
    session.authenticate(key)
    return AdminAuth("given", pin_verified, key)


def _mgmt_key_default(session: PivSession) -> bool | None:
    """Whether the management key is the factory default, from metadata; ``None`` when the
    card has none or its answer was not understood (then only trying the key tells)."""
    if session.version is None or not has_metadata(session.version):
        return None
    try:
        return session.get_mgmt_key_metadata().is_default
    except (ApduError, BadResponseError):
        return None


def _try_key(session: PivSession, key: bytes) -> bool:
    try:
        session.authenticate(key)
        return True
    except (SecurityStatusError, UsageError):
        return False
    except ApduError as e:
        if e.sw in (0x6A80, 0x6A86):  # wrong algorithm for this key
            return False
        raise


@dataclass
class MgmtKeyChange:
    """Result of a management key change (no key material)."""

    algorithm: str
    protected: bool
    touch: bool


def choose_mgmt_key_type(session: PivSession, algorithm: str | None) -> MgmtKeyType:
    """The algorithm of a new management key: *algorithm* if the card supports it (else
    :class:`UsageError`), otherwise AES-192 where supported, else the firmware's default."""
    from ..piv.constants import MgmtKeyType
    from ..piv.version import default_mgmt_key_type, supported_mgmt_key_types

    kt = MgmtKeyType.parse(algorithm) if algorithm else (
        MgmtKeyType.AES192 if MgmtKeyType.AES192 in supported_mgmt_key_types(session.version)
        else default_mgmt_key_type(session.version))
    if kt not in supported_mgmt_key_types(session.version):
        raise UsageError(f"YubiKey firmware {session.version} does not support {kt.label} "
                         "management keys")
    return kt


def authenticate_for_change(session: PivSession, prompter: Prompter, new_key: bytes,
                            typed: bool, force: bool = False,
                            need_pin: bool = False) -> AdminAuth:
    """:func:`authenticate` before a management key change to *new_key*. When the current
    key is not accepted and the new key was typed (not generated here), this may be the
    re-run of a change the card was pulled from after it took the new key: the new key
    then opens (trying a management key costs no retry counter)."""
    try:
        return authenticate(session, prompter, force, need_pin=need_pin)
    except (SecurityStatusError, UsageError):
        if not typed:
            raise
        return authenticate(session, OverridePrompter(prompter,
                                                      {"mgmt_key": new_key.hex().encode()}),
                            force, need_pin=need_pin)


def change_mgmt_key(session: PivSession, auth: AdminAuth, new_key: bytes, key_type: object,
                    protect: bool, touch: bool, pin: Callable[[], bytes] | None = None,
                    force: bool = False) -> MgmtKeyChange:
    """Set a new management key; *auth* is the result of :func:`authenticate` on this
    session (it carries the current key).

    The order is chosen so that pulling the card at any moment leaves a key pivtool can
    find. With *protect*: store the new key PIN-protected *beside the current one* (tag 8A)
    and set the PIVMAN flag, then change the card's key, then drop the old copy. Without
    *protect* the caller already holds the new key (typed, or written to a 0600 file first);
    a stale stored key is removed after the change."""
    from ..piv.constants import MgmtKeyType
    from ..piv.encoding import check_mgmt_key

    if not isinstance(key_type, MgmtKeyType):
        raise UsageError("unknown management key algorithm")
    check_mgmt_key(key_type, new_key)
    pivman = read_pivman(session, strict=True)
    if (protect or pivman.mgmt_key_protected) and not auth.pin_verified:
        if pin is None:
            raise UsageError("the PIN is needed to store or remove the protected key")
        verify_pin(session, pin(), force)
        auth.pin_verified = True
    if protect:
        write_protected_key(session, new_key, previous=auth.key or None)
        if not pivman.mgmt_key_protected:
            pivman.set_flag(PIVMAN_FLAG_MGMT_PROTECTED, True)
            session.put_data(ObjectId.PIVMAN, pivman.encode())
    session.set_mgmt_key(key_type, new_key, touch)
    session.authenticate(new_key, key_type)
    auth.key = new_key
    # The new key is not derived from the PIN: a salt left behind would make pivtool and
    # ykman derive a wrong key (ykman clears it too). Until it is cleared, authenticate()
    # falls through from the refused derived key to the other ways.
    pivman_stale = pivman.salt is not None
    pivman.salt = None
    if protect:
        write_protected_key(session, new_key)
    elif pivman.mgmt_key_protected:
        write_protected_key(session, None)
        pivman.set_flag(PIVMAN_FLAG_MGMT_PROTECTED, False)
        pivman_stale = True
    if pivman_stale:
        session.put_data(ObjectId.PIVMAN, pivman.encode() or None)
    return MgmtKeyChange(key_type.label, protect, touch)


def change_pin(session: PivSession, old: bytes, new: bytes, force: bool = False,
               ask: Ask | None = None) -> bool:
    """Change the PIN (retry guard first), keeping ykman's PIN-derived management key in
    step: when the card's key is the one derived from *old*, it becomes the one derived
    from *new* with the same salt — a single write, so no moment exists in which the salt
    on the card and the key disagree. Returns True when the derived key was moved along."""
    from ..piv.constants import MgmtKeyType

    pin_bytes(old, "PIN")
    pin_bytes(new, "new PIN")
    guard("PIN", pin_tries(session), force, ask)
    salt = read_pivman(session).salt
    old_key = derive_mgmt_key(old, salt) if salt is not None else None
    # Checked before the PIN changes: a derived key that no longer opens the card (another
    # tool changed the key and left the salt) is left alone.
    derived = old_key is not None and _try_key(session, old_key)
    session.change_pin(old, new)
    if not derived or salt is None or old_key is None:
        return False
    session.authenticate(old_key)
    # TDES, as ykman sets it (ykman.piv.pivman_change_pin).
    session.set_mgmt_key(MgmtKeyType.TDES, derive_mgmt_key(new, salt))
    return True
