"""The virtual YubiKey: one command APDU in, one response APDU out.

Layering inside the card, as on the chip:

1. :meth:`VirtualCard.execute` parses the APDU, handles the transport-level protocol
   (command chaining with CLA 0x10, GET RESPONSE after 61xx, SELECT) and renders every
   outcome, data or :class:`SwError`, in one place;
2. the selected applet (:mod:`.piv_applet`, :mod:`.management`) dispatches on INS through
   a table and its handlers raise ``SwError`` for every refusal.

``execute`` never raises: whatever the bytes, the answer ends with a status word.
"""

from __future__ import annotations

from collections.abc import Callable

from .apdu import Command, Sw, SwError, parse_apdu
from .consts import MAX_COMMAND_BUFFER, MGMT_AID, PIV_AID
from .management import ManagementApplet
from .piv_applet import INS_PUT_DATA, PivApplet
from .profiles import ATR_GENERIC_PIV, ATR_YUBIKEY5_NFC, ATR_YUBIKEY5_USB, Profile
from .state import CardState, new_card_state
from .touch import TouchSensor

__all__ = ["ATR_GENERIC_PIV", "ATR_YUBIKEY5_NFC", "ATR_YUBIKEY5_USB", "VirtualCard"]

INS_SELECT = 0xA4
INS_GET_RESPONSE = 0xC0

# yubikit's _MaxApduSize: the longest APDU a YubiKey 4.0-4.2 / 4.3+ takes over USB CCID.
MAX_APDU_YK4 = 2038
MAX_APDU_YK4_3 = 3062

# The most a short response can carry; longer answers go out in GET RESPONSE pieces.
SHORT_CHUNK = 256
TRANSCRIPT_LIMIT = 2000

APPLET_PIV = "piv"
APPLET_MGMT = "management"


def _sw_bytes(sw: int) -> bytes:
    return bytes([(sw >> 8) & 0xFF, sw & 0xFF])


class VirtualCard:
    """A virtual YubiKey 5 (or generic PIV card) with real cryptography.

    ``state`` is the persistent :class:`CardState`; everything else here (selected
    applet, PIN verified, management key authenticated, pending chained command or
    response) is per connection and cleared by :meth:`power_cycle`.

    ``changed`` counts commands that modified persistent state; ``on_change`` (if set)
    is called with the state after each of them, so an attachment can persist it.
    """

    def __init__(self, state: CardState | None = None) -> None:
        self.state: CardState = state if state is not None else new_card_state()
        #: The touch sensor (``touch.marker`` is set by whoever serves a state file).
        self.touch = TouchSensor(self.state.touch_mode, self.state.touch_timeout)
        self.transcript: list[str] = []
        self.changed: int = 0
        self.on_change: Callable[[CardState], None] | None = None
        self.piv = PivApplet(self)
        self.management = ManagementApplet(self)
        self._selected: str | None = None
        self._chain: tuple[int, int, int, bytes] | None = None  # ins, p1, p2, data so far
        self._pending: bytes = b""
        self._dirty = False

    # --- public API -------------------------------------------------------------------

    @property
    def profile(self) -> Profile:
        """What kind of card this is (see :mod:`.profiles`)."""
        return self.state.kind

    @property
    def atr(self) -> bytes:
        """The ATR the card presents (depends on the profile and ``state.interface``)."""
        kind = self.profile
        return kind.atr_nfc if self.state.interface == "nfc" else kind.atr_usb

    @property
    def max_extended_apdu(self) -> int:
        """Longest extended APDU (in bytes) the card takes: the profile's limit, else a
        YubiKey's: 3062 from 4.3, 2038 before."""
        if self.profile.max_apdu is not None:
            return self.profile.max_apdu
        return MAX_APDU_YK4_3 if self.state.firmware >= (4, 3, 0) else MAX_APDU_YK4

    def power_cycle(self) -> None:
        """Forget everything a connection holds: security status, selection, buffers."""
        self.piv.clear_session()
        self._selected = None
        self._chain = None
        self._pending = b""
        self.log("power cycle")

    def reset_connection(self) -> None:
        """A new card connection (same effect as a power cycle on a YubiKey)."""
        self.power_cycle()

    def log(self, event: str) -> None:
        """Append a transcript event. Callers pass no secret values, ever."""
        self.transcript.append(event)
        if len(self.transcript) > TRANSCRIPT_LIMIT:
            del self.transcript[: len(self.transcript) - TRANSCRIPT_LIMIT]

    def mark_changed(self) -> None:
        """Called by handlers whenever persistent state was modified."""
        self._dirty = True

    def execute(self, apdu: bytes) -> bytes:
        """Process one command APDU and return response data followed by SW1 SW2."""
        self._dirty = False
        try:
            data, sw = self._execute(bytes(apdu))
        except SwError as e:
            data, sw = b"", e.sw
        except Exception as e:
            # Only the exception type: messages could quote command data.
            self.log(f"internal error ({type(e).__name__})")
            data, sw = b"", Sw.NO_PRECISE_DIAGNOSIS
        if self._dirty:
            self._dirty = False
            self.changed += 1
            if self.on_change is not None:
                self.on_change(self.state)
        return data + _sw_bytes(sw)

    # --- transport layer --------------------------------------------------------------

    def _execute(self, apdu: bytes) -> tuple[bytes, int]:
        try:
            cmd = parse_apdu(apdu)
        except SwError:
            self._chain = None
            self._pending = b""
            raise
        if cmd.cla & ~0x10 & 0xFF:
            # No secure messaging, no proprietary class on this applet.
            raise SwError(Sw.CLA_NOT_SUPPORTED)
        if cmd.extended and (not self.profile.extended_apdu
                             or len(apdu) > self.max_extended_apdu):
            # A short-APDU-only card answers an extended one with "wrong length" (6700).
            # A YubiKey's USB CCID message holds at most 3062 APDU bytes (2038 before 4.3;
            # yubikit's _MaxApduSize). A real reader stack refuses a longer one before the
            # key sees it; the emulator answers "wrong length" so a client cannot rely on it.
            self._chain = None
            self._pending = b""
            raise SwError(Sw.WRONG_LENGTH)

        if cmd.ins == INS_GET_RESPONSE and not cmd.chained:
            return self._get_response(cmd)
        # Any other command abandons an unread response.
        self._pending = b""

        cmd = self._dechain(cmd)
        if cmd.chained:
            return b"", Sw.OK

        if cmd.ins == INS_SELECT:
            return self._respond(cmd, self._select(cmd))
        if self._selected == APPLET_PIV:
            return self._respond(cmd, self.piv.dispatch(cmd))
        if self._selected == APPLET_MGMT:
            return self._respond(cmd, self.management.dispatch(cmd))
        raise SwError(Sw.INS_NOT_SUPPORTED)

    def _dechain(self, cmd: Command) -> Command:
        """Collect CLA-0x10 command parts; return the whole command on the last part."""
        chain = self._chain
        if chain is not None and chain[:3] != (cmd.ins, cmd.p1, cmd.p2):
            # A different command interrupts the chain: drop what was collected.
            chain = None
        data = (chain[3] if chain is not None else b"") + cmd.data
        if len(data) > MAX_COMMAND_BUFFER:
            self._chain = None
            # PUT DATA overflowing the applet buffer is "object too large", as
            # yubico-piv-tool's limit (3072 - 9) reflects; anything else is a bad length.
            raise SwError(Sw.NOT_ENOUGH_MEMORY if cmd.ins == INS_PUT_DATA else Sw.WRONG_LENGTH)
        if cmd.chained:
            self._chain = (cmd.ins, cmd.p1, cmd.p2, data)
            return cmd
        self._chain = None
        return Command(cmd.cla, cmd.ins, cmd.p1, cmd.p2, data, cmd.ne, cmd.extended)

    def _respond(self, cmd: Command, data: bytes) -> tuple[bytes, int]:
        """Send what fits the host's Ne; keep the rest for GET RESPONSE (61xx)."""
        if cmd.extended:
            limit = cmd.ne if cmd.ne else 65536
        else:
            # A YubiKey answers a short APDU with up to 256 bytes whether or not Le was
            # sent (yubikit sends none), then 61xx.
            limit = min(cmd.ne, SHORT_CHUNK) if cmd.ne else SHORT_CHUNK
        return self._chunk(data, limit)

    def _chunk(self, data: bytes, limit: int) -> tuple[bytes, int]:
        if len(data) <= limit:
            self._pending = b""
            return data, Sw.OK
        self._pending = data[limit:]
        remaining = len(self._pending)
        return data[:limit], 0x6100 | (remaining if remaining < 0x100 else 0x00)

    def _get_response(self, cmd: Command) -> tuple[bytes, int]:
        if cmd.p1 != 0 or cmd.p2 != 0:
            raise SwError(Sw.INCORRECT_P1P2)
        if not self._pending:
            raise SwError(Sw.CONDITIONS_NOT_SATISFIED)
        limit = (cmd.ne if cmd.ne else SHORT_CHUNK) if not cmd.extended else (cmd.ne or 65536)
        return self._chunk(self._pending, limit)

    def _select(self, cmd: Command) -> bytes:
        """SELECT by AID (P1 04); any prefix of an applet's full AID selects it."""
        if cmd.p1 != 0x04 or cmd.p2 not in (0x00, 0x0C) or not cmd.data:
            raise SwError(Sw.INCORRECT_P1P2 if cmd.p1 != 0x04 else Sw.FILE_NOT_FOUND)
        aid = cmd.data
        target: str | None = None
        if 5 <= len(aid) <= len(PIV_AID) and PIV_AID.startswith(aid):
            target = APPLET_PIV
        elif aid == MGMT_AID and self.profile.management != "absent":
            target = APPLET_MGMT
        if target is None:
            # OTP, OATH, OpenPGP, FIDO, ... are not emulated; a YubiKey with those
            # applets disabled answers the same, and yubikit treats it as "not available".
            raise SwError(Sw.FILE_NOT_FOUND)
        if target != self._selected:
            # Switching applets drops the PIV security status, as on a YubiKey.
            self.piv.clear_session()
            self.log(f"select {target}")
        self._selected = target
        body = self.piv.select() if target == APPLET_PIV else self.management.select()
        return b"" if cmd.p2 == 0x0C else body
