"""pivtool's exception hierarchy.

Two families: :class:`ApduError` for a card that answered with an error status word, and
:class:`TransportError` for a card or reader that could not be talked to at all. The CLI maps
each family to one exit code in one place. Messages are one line and never contain secrets.
"""

from __future__ import annotations

from .sw import SW, sw_meaning


class PivToolError(Exception):
    """Base of every error pivtool raises on purpose."""


class UsageError(PivToolError):
    """Bad input detected before the card is touched (wrong PIN length, unknown slot...)."""


class NotSupportedError(PivToolError):
    """The card or its firmware does not offer this function (e.g. a YubiKey extension on a
    generic PIV card, Ed25519 before firmware 5.7)."""


class BadResponseError(PivToolError):
    """The card answered 9000 but the data could not be parsed."""


class AuthenticationError(PivToolError):
    """A secret that is not the card's was wrong (e.g. an escrow or CA passphrase): exit
    code 3, like a wrong PIN, but no card status word is involved."""


class ApduError(PivToolError):
    """A command APDU ended with a status word other than 9000."""

    def __init__(self, sw: int, data: bytes = b"", message: str | None = None,
                 from_card: bool = True) -> None:
        self.sw = sw
        self.data = data
        meaning = sw_meaning(sw)
        # Never the bare status word as the whole message: say what it means.
        text = (f"the card refused: {meaning} (SW={sw:04X})" if meaning
                else f"the card refused (SW={sw:04X})")
        if message and not from_card:
            # pivtool decided this itself (e.g. the retry guard read the counters): the card
            # never answered with this status word, so do not show one.
            super().__init__(message)
        else:
            super().__init__(f"{message} (SW={sw:04X})" if message else text)


class InvalidPinError(ApduError):
    """Wrong PIN or PUK (63Cx). ``tries_left`` is what the card reported."""

    def __init__(self, sw: int, tries_left: int, what: str = "PIN") -> None:
        self.tries_left = tries_left
        self.what = what
        if tries_left == 0:
            text = f"wrong {what}; the {what} is now blocked"
        else:
            tries = "1 try" if tries_left == 1 else f"{tries_left} tries"
            text = f"wrong {what}, {tries} left"
        super().__init__(sw, b"", text)


class BlockedError(ApduError):
    """The PIN, PUK or key reference is blocked (6983)."""


class NotFoundError(ApduError):
    """The object, applet or key does not exist (6A82, 6A88)."""


class SecurityStatusError(ApduError):
    """The operation needs a PIN or management key that has not been presented (6982)."""


class ConditionsNotSatisfiedError(ApduError):
    """The card refuses in its current state (6985), e.g. RESET while the PIN still works."""


class PinComplexityError(ConditionsNotSatisfiedError):
    """A YubiKey with PIN complexity (5.7+) refused a new PIN or PUK as trivial (6985 to
    CHANGE REFERENCE DATA or RESET RETRY COUNTER). The old value was checked first and was
    right, so no try was spent and nothing changed."""

    def __init__(self, sw: int, what: str, checked: str) -> None:
        self.what = what
        super().__init__(sw, b"", (
            f"the key refused the {what}: its PIN complexity rule forbids one character "
            f"repeated and common values (such as 123456, 12345678, password); the {checked} "
            "was right, no try was spent and nothing changed — choose another"))


class WrongLengthError(ApduError):
    """Wrong Lc/Le or data length (6700)."""


class IncorrectDataError(ApduError):
    """The command data is malformed or out of range (6A80)."""


class NoSpaceError(ApduError):
    """The card has no room for the object (6A84)."""


class InsNotSupportedError(ApduError, NotSupportedError):
    """The card does not know the instruction (6D00) — typical of YubiKey-only commands on a
    generic PIV card, or of a command newer than the firmware."""


class TransportError(PivToolError):
    """The card could not be talked to: no service, no reader, no card, removed, busy."""


class NoServiceError(TransportError):
    """The PC/SC service (pcscd) is not running or not reachable."""


class NoReaderError(TransportError):
    """No reader matches (or several match) the selection."""


class NoCardError(TransportError):
    """The reader has no card, or the card is not a PIV card."""


class CardRemovedError(TransportError):
    """The card was removed (or the reader reset it) in the middle of an operation."""


class SharingViolationError(TransportError):
    """Another program holds the card exclusively (e.g. scdaemon, another pivtool)."""


_SW_CLASSES: dict[int, type[ApduError]] = {
    SW.AUTH_METHOD_BLOCKED: BlockedError,
    SW.FILE_NOT_FOUND: NotFoundError,
    SW.REFERENCE_NOT_FOUND: NotFoundError,
    SW.SECURITY_STATUS_NOT_SATISFIED: SecurityStatusError,
    SW.CONDITIONS_NOT_SATISFIED: ConditionsNotSatisfiedError,
    SW.WRONG_LENGTH: WrongLengthError,
    SW.INCORRECT_PARAMETERS: IncorrectDataError,
    SW.NO_SPACE: NoSpaceError,
    SW.INS_NOT_SUPPORTED: InsNotSupportedError,
}


def error_for_sw(sw: int, data: bytes = b"", what: str = "PIN") -> ApduError:
    """Return the most specific :class:`ApduError` subclass for *sw*."""
    if 0x63C0 <= sw <= 0x63CF:
        return InvalidPinError(sw, sw & 0x0F, what)
    cls = _SW_CLASSES.get(sw, ApduError)
    return cls(sw, data)


class RetryGuardError(PivToolError):
    """pivtool refused to spend the last PIN/PUK try (or the reference is already blocked)
    without an explicit ``--force``."""


class StepFailedError(PivToolError):
    """A step of a multi-step workflow failed; the cause (``__cause__``) decides the exit
    code, the message names the step.

    *changed* lists what the workflow had already changed on the card (or may have: a
    command whose answer was lost). With anything there the message says so and what to run
    next, and the exit code is never 2 ("nothing changed on the card")."""

    def __init__(self, step: str, cause: BaseException,
                 changed: list[str] | tuple[str, ...] = (),
                 next_step: str = "run the same command again to finish") -> None:
        self.step = step
        self.changed = tuple(changed)
        message = f"{step}: {cause}"
        if self.changed:
            message += (f" (already changed on the card: {', '.join(self.changed)}; "
                        f"{next_step})")
        super().__init__(message)
        self.__cause__ = cause
