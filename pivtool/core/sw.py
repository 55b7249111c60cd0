"""ISO 7816-4 status words, as SP 800-73-4 and the YubiKey use them."""

from __future__ import annotations

from enum import IntEnum


class SW(IntEnum):
    """Named status words. Unknown values stay plain ints everywhere else."""

    OK = 0x9000
    BYTES_REMAINING = 0x6100  # 61xx: xx more bytes via GET RESPONSE
    VERIFY_FAIL_NO_INFO = 0x6300
    WARNING_NVM_CHANGED = 0x6281
    EXECUTION_ERROR = 0x6400
    MEMORY_ERROR = 0x6581
    WRONG_LENGTH = 0x6700
    CLA_FUNCTION_NOT_SUPPORTED = 0x6800
    LOGICAL_CHANNEL_NOT_SUPPORTED = 0x6881
    SECURE_MESSAGING_NOT_SUPPORTED = 0x6882
    LAST_COMMAND_EXPECTED = 0x6883
    COMMAND_CHAINING_NOT_SUPPORTED = 0x6884
    COMMAND_NOT_ALLOWED = 0x6900
    INCOMPATIBLE_FILE_STRUCTURE = 0x6981
    SECURITY_STATUS_NOT_SATISFIED = 0x6982
    AUTH_METHOD_BLOCKED = 0x6983
    REFERENCE_DATA_NOT_USABLE = 0x6984
    CONDITIONS_NOT_SATISFIED = 0x6985
    COMMAND_NOT_ALLOWED_NO_EF = 0x6986
    INCORRECT_PARAMETERS = 0x6A80
    FUNCTION_NOT_SUPPORTED = 0x6A81
    FILE_NOT_FOUND = 0x6A82
    RECORD_NOT_FOUND = 0x6A83
    NO_SPACE = 0x6A84
    INCORRECT_P1P2 = 0x6A86
    REFERENCE_NOT_FOUND = 0x6A88
    WRONG_P1P2 = 0x6B00
    WRONG_LE = 0x6C00  # 6Cxx: resend with Le = xx
    INS_NOT_SUPPORTED = 0x6D00
    CLA_NOT_SUPPORTED = 0x6E00
    NO_PRECISE_DIAGNOSIS = 0x6F00


def sw_name(sw: int) -> str:
    """Return a readable name for *sw* (``'FILE_NOT_FOUND'``, ``'PIN_INVALID (2 tries left)'``)."""
    if 0x63C0 <= sw <= 0x63CF:
        return f"VERIFY_FAIL ({sw & 0x0F} tries left)"
    if sw & 0xFF00 == 0x6100:
        return f"BYTES_REMAINING ({sw & 0xFF})"
    if sw & 0xFF00 == 0x6C00:
        return f"WRONG_LE (use {sw & 0xFF})"
    try:
        return SW(sw).name
    except ValueError:
        return "UNKNOWN"


#: What a status word means, in words (ISO 7816-4 §5.6, SP 800-73-4 Part 2 Table 6). A
#: command-specific meaning (e.g. 6A80 on GENERATE) is chosen by the session, which knows
#: the command.
_MEANINGS: dict[int, str] = {
    SW.VERIFY_FAIL_NO_INFO: "verification failed",
    SW.WARNING_NVM_CHANGED: "the card warns that its memory changed",
    SW.EXECUTION_ERROR: "the card failed to carry out the command",
    SW.MEMORY_ERROR: "the card's memory failed",
    SW.WRONG_LENGTH: "the card refused the command's length",
    SW.CLA_FUNCTION_NOT_SUPPORTED: "the card does not support this command class function",
    SW.LOGICAL_CHANNEL_NOT_SUPPORTED: "the card does not support logical channels",
    SW.SECURE_MESSAGING_NOT_SUPPORTED: "the card does not support secure messaging",
    SW.LAST_COMMAND_EXPECTED: "the card expected the last part of a chained command",
    SW.COMMAND_CHAINING_NOT_SUPPORTED: "the card does not support command chaining",
    SW.COMMAND_NOT_ALLOWED: "the card does not allow this command",
    SW.INCOMPATIBLE_FILE_STRUCTURE: "the command does not fit the object",
    SW.SECURITY_STATUS_NOT_SATISFIED: "not allowed yet: the PIN or management key must be "
                                      "presented first",
    SW.AUTH_METHOD_BLOCKED: "blocked",
    SW.REFERENCE_DATA_NOT_USABLE: "the reference data is not usable",
    SW.CONDITIONS_NOT_SATISFIED: "the card refuses this in its current state",
    SW.COMMAND_NOT_ALLOWED_NO_EF: "the card does not allow this command here",
    SW.INCORRECT_PARAMETERS: "the card refused the data sent",
    SW.FUNCTION_NOT_SUPPORTED: "the card does not support this function",
    SW.FILE_NOT_FOUND: "not found on the card",
    SW.RECORD_NOT_FOUND: "not found on the card",
    SW.NO_SPACE: "not enough memory on the card",
    SW.INCORRECT_P1P2: "the card refused the parameters (no such slot, key or object)",
    SW.REFERENCE_NOT_FOUND: "not found on the card (no such key or reference)",
    SW.WRONG_P1P2: "the card refused the parameters",
    SW.INS_NOT_SUPPORTED: "the card does not know this command",
    SW.CLA_NOT_SUPPORTED: "the card does not support this command class",
    SW.NO_PRECISE_DIAGNOSIS: "the card reported an internal error",
}


def sw_meaning(sw: int) -> str | None:
    """What *sw* means in words; ``None`` for a status word ISO 7816-4 does not define
    (the message then says "the card refused" with the SW)."""
    if 0x63C0 <= sw <= 0x63CF:
        left = sw & 0x0F
        return f"verification failed, {left} {'try' if left == 1 else 'tries'} left"
    return _MEANINGS.get(sw)
