"""What a refused PIV command means, in words: the step it carried out and what the status
word says about it ("generate a key in slot 9a (authentication): the card refuses this
algorithm in this slot (SW=6A80)").

The general meaning of a status word is :func:`pivtool.core.sw.sw_meaning`; this module
adds what an SW means for one command, where that is more precise.
"""

from __future__ import annotations

from ..core.errors import ApduError
from ..core.sw import SW, sw_meaning
from .constants import Ins, KeyRef, Slot


def _slot_text(ref: int) -> str:
    try:
        return f"slot {Slot(ref).label}"
    except ValueError:
        return f"key reference {ref:02X}"


def _ref_text(ref: int) -> str:
    names: dict[int, str] = {KeyRef.PIN: "the PIN", KeyRef.PUK: "the PUK",
                             KeyRef.MGMT: "the management key"}
    return names.get(ref, _slot_text(ref))


def command_step(ins: int, p1: int, p2: int, what: str = "PIN") -> str:
    """The step a command APDU carries out, in words (for error messages)."""
    if ins == Ins.VERIFY:
        return "verify the PIN"
    if ins == Ins.CHANGE_REFERENCE:
        return f"change the {what}"
    if ins == Ins.RESET_RETRY:
        return "unblock the PIN with the PUK"
    if ins == Ins.GENERATE_ASYMMETRIC:
        return f"generate a key in {_slot_text(p2)}"
    if ins == Ins.GENERAL_AUTHENTICATE:
        if p2 == KeyRef.MGMT:
            return "authenticate with the management key"
        return f"use the key in {_slot_text(p2)}"
    if ins == Ins.GET_METADATA:
        return f"read the metadata of {_ref_text(p2)} (GET METADATA)"
    if ins == Ins.ATTEST:
        return f"attest {_slot_text(p1)}"
    if ins == Ins.IMPORT_KEY:
        return f"import a key into {_slot_text(p2)}"
    if ins == Ins.MOVE_KEY:
        return f"delete the key in {_slot_text(p2)}" if p1 == 0xFF else \
            f"move the key from {_slot_text(p2)} to {_slot_text(p1)}"
    names: dict[int, str] = {
        Ins.GET_DATA: "read a data object", Ins.PUT_DATA: "write a data object",
        Ins.SELECT: "select the PIV application", Ins.GET_SERIAL: "read the serial number",
        Ins.GET_VERSION: "read the firmware version",
        Ins.SET_PIN_RETRIES: "set the PIN and PUK retry counts",
        Ins.RESET: "reset the PIV application", Ins.SET_MGMT_KEY: "set the management key"}
    return names.get(ins, f"command {ins:02X}")


#: What a status word means for one command, where that is more precise than its general
#: meaning (core.sw.sw_meaning).
_COMMAND_MEANINGS: dict[tuple[int, int], str] = {
    (Ins.GENERATE_ASYMMETRIC, SW.INCORRECT_PARAMETERS):
        "the card refuses this algorithm in this slot",
    (Ins.GENERATE_ASYMMETRIC, SW.INCORRECT_P1P2): "the card has no such key slot",
    (Ins.IMPORT_KEY, SW.INCORRECT_PARAMETERS):
        "the card refuses this key (algorithm, size or policy) in this slot",
    (Ins.PUT_DATA, SW.NO_SPACE): "the object does not fit in the card's memory",
    (Ins.PUT_DATA, SW.INCORRECT_PARAMETERS): "the card refused the object",
    (Ins.GET_DATA, SW.FILE_NOT_FOUND): "the object is not on the card",
    (Ins.ATTEST, SW.INCORRECT_PARAMETERS):
        "the card will not attest this key (it attests only keys generated on the card)",
    (Ins.ATTEST, SW.REFERENCE_NOT_FOUND): "the card holds no key in this slot to attest",
    (Ins.SET_MGMT_KEY, SW.INCORRECT_PARAMETERS):
        "the card refuses this management key algorithm",
    (Ins.RESET, SW.CONDITIONS_NOT_SATISFIED):
        "the card resets only when the PIN and the PUK are both blocked",
    (Ins.GET_METADATA, SW.REFERENCE_NOT_FOUND): "the slot is empty",
}


def worded(e: ApduError, ins: int, p1: int, p2: int, what: str) -> ApduError:
    """*e* again, its message naming the step and saying what the SW means."""
    step = command_step(ins, p1, p2, what)
    if e.sw == SW.AUTH_METHOD_BLOCKED:
        blocked = "the management key" if (ins == Ins.GENERAL_AUTHENTICATE
                                           and p2 == KeyRef.MGMT) else f"the {what}"
        if ins in (Ins.GENERAL_AUTHENTICATE, Ins.GENERATE_ASYMMETRIC) and p2 != KeyRef.MGMT:
            blocked = "the PIN"
        meaning: str | None = f"{blocked} is blocked"
    elif ins == Ins.GENERAL_AUTHENTICATE and p2 == KeyRef.MGMT and e.sw in (
            SW.INCORRECT_PARAMETERS, SW.INCORRECT_P1P2):
        meaning = "the card's management key is not of this algorithm"
    else:
        meaning = _COMMAND_MEANINGS.get((ins, e.sw)) or sw_meaning(e.sw)
    text = f"{step}: {meaning}" if meaning else f"{step}: the card refused"
    return type(e)(e.sw, e.data, text)
