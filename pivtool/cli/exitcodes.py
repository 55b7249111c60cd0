"""Exit codes and the one place that maps exceptions to them."""

from __future__ import annotations

from enum import IntEnum

from ..core.errors import (
    ApduError,
    AuthenticationError,
    BlockedError,
    InvalidPinError,
    NotSupportedError,
    PivToolError,
    RetryGuardError,
    SecurityStatusError,
    TransportError,
    UsageError,
)


class Exit(IntEnum):
    """pivtool's documented exit codes."""

    OK = 0
    FAILED = 1  # the card (or a check) refused or failed the operation
    USAGE = 2  # refused before anything changed on the card: bad input, or a capability
    # the card lacks (found from its version/metadata before the changing APDU is sent)
    AUTH = 3  # wrong PIN, PUK or management key
    BLOCKED = 4  # PIN/PUK blocked, or the retry guard refused to spend the last try
    NO_CARD = 5  # no PC/SC service, reader or card; card removed


EXIT_HELP = """\b
Exit codes:
  0  success
  1  the operation failed on the card (or a check failed)
  2  refused before anything changed on the card: usage error, bad input, or
     something this card cannot do
  3  authentication failed (wrong PIN, PUK or management key)
  4  PIN or PUK blocked, or only one try left and --allow-last-try not given
  5  no PC/SC service, reader or card; card removed"""


def exit_code_for(exc: BaseException) -> Exit:
    """Map an exception to pivtool's exit code."""
    from ..certs.errors import (
        CertInputError,
        CertMismatchError,
        CertRequestRefusedError,
        LabCAError,
    )
    from ..core.errors import StepFailedError

    if isinstance(exc, StepFailedError) and exc.__cause__ is not None:
        code = exit_code_for(exc.__cause__)
        # 2 promises "nothing was sent to the card": not true once a step changed it.
        return Exit.FAILED if code == Exit.USAGE and exc.changed else code

    if isinstance(exc, InvalidPinError) and exc.tries_left == 0:
        return Exit.BLOCKED
    if isinstance(exc, (InvalidPinError, SecurityStatusError, AuthenticationError)):
        return Exit.AUTH
    if isinstance(exc, (BlockedError, RetryGuardError)):
        return Exit.BLOCKED
    if isinstance(exc, TransportError):
        return Exit.NO_CARD
    # Certificate, CSR and CA-directory problems are all about the input given.
    if isinstance(exc, (UsageError, CertInputError, CertMismatchError,
                        CertRequestRefusedError, LabCAError)):
        return Exit.USAGE
    # "This card cannot do that" is decided from the card's version and metadata before the
    # APDU that would change it is sent: the same rule as bad input. (A card answering an
    # APDU with 6D00 is an ApduError: the card refused, exit 1.)
    if isinstance(exc, NotSupportedError) and not isinstance(exc, ApduError):
        return Exit.USAGE
    if isinstance(exc, (ApduError, PivToolError)):
        return Exit.FAILED
    return Exit.FAILED


def blocked_hint(exc: BaseException) -> str | None:
    """What to do next when *exc* says the PIN or PUK is (now) blocked — appended to the
    error line of every command but ``recover`` and ``reset`` themselves."""
    from ..core.errors import StepFailedError

    while isinstance(exc, StepFailedError) and exc.__cause__ is not None:
        exc = exc.__cause__
    if isinstance(exc, InvalidPinError):
        if exc.tries_left != 0:
            return None
        what = exc.what
    elif isinstance(exc, BlockedError):
        text = str(exc)
        what = "PUK" if "PUK" in text else ("PIN" if "PIN" in text else "")
    else:
        return None
    if what == "PIN":
        return "to unblock it: pivtool recover (uses the PUK; keys are kept)"
    if what == "PUK":
        return "a blocked PUK cannot be unblocked: pivtool recover shows what is left"
    return None
