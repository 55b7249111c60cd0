"""Persistent state of a virtual YubiKey, and its JSON file format.

Everything that survives unplugging lives here: identity (firmware, serial, form factor),
PIN/PUK/management key and their counters, slot keys, data objects and the attestation
PKI. Per-connection security status (PIN verified, management key authenticated) does
not: that belongs to :class:`pivtool.sim.card.VirtualCard`.

The file holds secrets (PIN, PUK, management key, private keys) in the clear, like the
chip it emulates; it is therefore created with mode 0600 and replaced atomically.
"""

from __future__ import annotations

import contextlib
import json
import os
import secrets
import tempfile
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from .attestation import make_attestation_pki
from .consts import (
    DEFAULT_MGMT_KEY,
    DEFAULT_PIN,
    DEFAULT_PUK,
    DEFAULT_RETRIES,
    OBJ_ATTESTATION_CERT,
    SLOT_ATTESTATION,
    FormFactor,
    KeyType,
    MgmtKeyType,
    Origin,
    PinPolicy,
    TouchPolicy,
)
from .profiles import DEFAULT_PROFILE, PROFILES, Profile, get_profile, profile_for
from .tlv import tlv

FORMAT_NAME = "pivtool-sim-state"
FORMAT_VERSION = 1

INTERFACES = ("usb", "nfc")


class SimStateError(Exception):
    """A state file is missing, unreadable, corrupt or of an unknown format version."""


@dataclass
class SlotKey:
    """A private key held in a PIV slot."""

    algorithm: int  # KeyType value
    private_key_pem: str  # PKCS#8, unencrypted (the card's own secret storage)
    pin_policy: int  # resolved PinPolicy (never DEFAULT once stored)
    touch_policy: int  # resolved TouchPolicy (never DEFAULT once stored)
    origin: int  # Origin value


@dataclass
class CardState:
    """Everything a virtual YubiKey keeps across power cycles."""

    firmware: tuple[int, int, int]
    serial: int
    form_factor: int = FormFactor.USB_A_KEYCHAIN
    # Which kind of card this is (a name in profiles.PROFILES): what it answers to which
    # command. State files from before profiles existed load as "generic" or by firmware.
    profile: str = DEFAULT_PROFILE
    # Which ATR the card presents: "usb" (contact ATR of a YubiKey 5 NFC plugged in) or
    # "nfc" (the same key on a contactless reader). See card.py for why it matters.
    interface: str = "usb"
    pin: bytes = DEFAULT_PIN
    puk: bytes = DEFAULT_PUK
    pin_retries_total: int = DEFAULT_RETRIES
    pin_retries_left: int = DEFAULT_RETRIES
    puk_retries_total: int = DEFAULT_RETRIES
    puk_retries_left: int = DEFAULT_RETRIES
    mgmt_key: bytes = DEFAULT_MGMT_KEY
    mgmt_key_type: int = MgmtKeyType.TDES
    mgmt_touch_policy: int = TouchPolicy.NEVER
    # YubiKey 5.7 PIN complexity (a factory setting): trivial new PINs/PUKs are refused.
    pin_complexity: bool = False
    # The touch sensor (see touch.py): "auto" gives every touch at once, "manual" waits up
    # to touch_timeout seconds for `pivtool sim touch` (or TouchSensor.press in-process).
    touch_mode: str = "auto"
    touch_timeout: float = 15.0
    keys: dict[int, SlotKey] = field(default_factory=dict)
    objects: dict[int, bytes] = field(default_factory=dict)
    attestation_root_key_pem: str = ""
    attestation_root_cert: bytes = b""

    @property
    def kind(self) -> Profile:
        """The card's :class:`~pivtool.sim.profiles.Profile`."""
        return get_profile(self.profile)

    @property
    def generic(self) -> bool:
        """True for a card without any YubiKey extension (the ``generic`` profile)."""
        return not self.kind.yubico_ins

    def __repr__(self) -> str:
        # Never show secrets in a repr (tracebacks, debug logs, pytest assertion output).
        return (
            f"CardState(profile={self.profile}, firmware={self.firmware}, "
            f"serial={self.serial}, keys={sorted(f'{s:02x}' for s in self.keys)}, "
            f"objects={sorted(f'{t:x}' for t in self.objects)})"
        )


def new_card_state(
    firmware: tuple[int, int, int] | None = None,
    serial: int | None = None,
    generic: bool = False,
    form_factor: int = FormFactor.USB_A_KEYCHAIN,
    interface: str = "usb",
    profile: str | None = None,
    mgmt_key_type: MgmtKeyType | None = None,
    pin_complexity: bool | None = None,
) -> CardState:
    """A factory-fresh card: default PIN/PUK/management key, 3/3 retries, f9 provisioned
    (on cards that have attestation).

    *profile* names the kind of card (``profiles.PROFILES``); without it, *generic* and
    *firmware* choose one (the old switches). *firmware* overrides the profile's own.
    *mgmt_key_type* overrides the profile's factory management key algorithm.
    *pin_complexity* overrides the profile's factory PIN complexity setting (YubiKey 5.7+)."""
    if interface not in INTERFACES:
        raise ValueError(f"interface must be one of {INTERFACES}")
    if profile is None:
        profile = profile_for(firmware or PROFILES[DEFAULT_PROFILE].firmware, generic)
    elif generic and profile != "generic":
        raise ValueError("generic=True contradicts profile " + repr(profile))
    kind = get_profile(profile)
    if firmware is None:
        firmware = kind.firmware
    if len(firmware) != 3 or not all(0 <= v <= 255 for v in firmware):
        raise ValueError("firmware must be three numbers 0-255")
    if pin_complexity is None:
        pin_complexity = kind.pin_complexity
    if pin_complexity and (not kind.yubikey or tuple(firmware) < (5, 7, 0)):
        raise ValueError("PIN complexity exists on YubiKeys with firmware 5.7 or later only")
    if serial is None:
        serial = 10_000_000 + secrets.randbelow(80_000_000)
    state = CardState(
        firmware=(firmware[0], firmware[1], firmware[2]),
        serial=serial,
        form_factor=int(form_factor),
        profile=profile,
        interface=interface,
        mgmt_key_type=mgmt_key_type or kind.default_mgmt_key_type(firmware),
        pin_complexity=pin_complexity,
    )
    if kind.attestation_key:
        root_key, root_cert, f9_key, f9_cert = make_attestation_pki(serial)
        state.attestation_root_key_pem = root_key
        state.attestation_root_cert = root_cert
        # Factory-loaded, hence "imported" in GET METADATA (it was not generated by the
        # PIV applet's GENERATE command).
        state.keys[SLOT_ATTESTATION] = SlotKey(
            algorithm=KeyType.ECCP256,
            private_key_pem=f9_key,
            pin_policy=PinPolicy.NEVER,
            touch_policy=TouchPolicy.NEVER,
            origin=Origin.IMPORTED,
        )
        state.objects[OBJ_ATTESTATION_CERT] = _cert_object(f9_cert)
    return state


def _cert_object(der: bytes) -> bytes:
    # PIV certificate container: 70 cert, 71 CertInfo (uncompressed), FE LRC.
    return tlv(0x70, der) + tlv(0x71, b"\x00") + tlv(0xFE)


def factory_reset(state: CardState) -> None:
    """What PIV RESET does: defaults back, keys and objects gone, f9 key and cert kept."""
    state.pin = DEFAULT_PIN
    state.puk = DEFAULT_PUK
    state.pin_retries_total = state.pin_retries_left = DEFAULT_RETRIES
    state.puk_retries_total = state.puk_retries_left = DEFAULT_RETRIES
    state.mgmt_key = DEFAULT_MGMT_KEY
    state.mgmt_key_type = state.kind.default_mgmt_key_type(state.firmware)
    state.mgmt_touch_policy = TouchPolicy.NEVER
    # Yubico: "The attestation key and certificate in slot f9 are not modified by a reset."
    state.keys = {s: k for s, k in state.keys.items() if s == SLOT_ATTESTATION}
    state.objects = {t: v for t, v in state.objects.items() if t == OBJ_ATTESTATION_CERT}


# --- JSON persistence -------------------------------------------------------------------


def state_to_json(state: CardState) -> dict[str, Any]:
    """The JSON-serialisable form of ``state`` (bytes as hex, int keys as hex strings)."""
    return {
        "format": FORMAT_NAME,
        "version": FORMAT_VERSION,
        "firmware": list(state.firmware),
        "serial": state.serial,
        "form_factor": state.form_factor,
        "profile": state.profile,
        # Still written for readers that predate profiles.
        "generic": state.generic,
        "interface": state.interface,
        "pin": state.pin.hex(),
        "puk": state.puk.hex(),
        "pin_retries_total": state.pin_retries_total,
        "pin_retries_left": state.pin_retries_left,
        "puk_retries_total": state.puk_retries_total,
        "puk_retries_left": state.puk_retries_left,
        "mgmt_key": state.mgmt_key.hex(),
        "mgmt_key_type": state.mgmt_key_type,
        "mgmt_touch_policy": state.mgmt_touch_policy,
        "pin_complexity": state.pin_complexity,
        "touch_mode": state.touch_mode,
        "touch_timeout": state.touch_timeout,
        "keys": {
            f"{slot:02x}": {
                "algorithm": k.algorithm,
                "private_key_pem": k.private_key_pem,
                "pin_policy": k.pin_policy,
                "touch_policy": k.touch_policy,
                "origin": k.origin,
            }
            for slot, k in sorted(state.keys.items())
        },
        "objects": {f"{tag:x}": v.hex() for tag, v in sorted(state.objects.items())},
        "attestation_root_key_pem": state.attestation_root_key_pem,
        "attestation_root_cert": state.attestation_root_cert.hex(),
    }


def _int(d: dict[str, Any], name: str, lo: int, hi: int) -> int:
    v = d[name]
    if not isinstance(v, int) or isinstance(v, bool) or not lo <= v <= hi:
        raise SimStateError(f"field {name!r} out of range")
    return v


def _touch_mode(v: Any) -> str:
    if v not in ("auto", "manual"):
        raise SimStateError("field 'touch_mode' malformed")
    return str(v)


def _touch_timeout(v: Any) -> float:
    if isinstance(v, bool) or not isinstance(v, (int, float)) or not 0 < v <= 600:
        raise SimStateError("field 'touch_timeout' out of range")
    return float(v)


def state_from_json(d: Any) -> CardState:
    """Inverse of :func:`state_to_json`; raises :class:`SimStateError` on anything odd."""
    if not isinstance(d, dict) or d.get("format") != FORMAT_NAME:
        raise SimStateError("not a pivtool sim state file")
    if d.get("version") != FORMAT_VERSION:
        raise SimStateError(
            f"unsupported state format version {d.get('version')!r} (expected {FORMAT_VERSION})"
        )
    try:
        fw = d["firmware"]
        if not (isinstance(fw, list) and len(fw) == 3 and all(isinstance(v, int) for v in fw)):
            raise SimStateError("field 'firmware' malformed")
        keys: dict[int, SlotKey] = {}
        for slot_hex, k in d["keys"].items():
            keys[int(slot_hex, 16)] = SlotKey(
                algorithm=_int(k, "algorithm", 0, 255),
                private_key_pem=str(k["private_key_pem"]),
                pin_policy=_int(k, "pin_policy", 0, 5),
                touch_policy=_int(k, "touch_policy", 0, 3),
                origin=_int(k, "origin", 1, 2),
            )
        interface = d.get("interface", "usb")
        if interface not in INTERFACES:
            raise SimStateError("field 'interface' malformed")
        firmware = (fw[0], fw[1], fw[2])
        # Files written before profiles existed carry only "generic" and the firmware.
        profile = d.get("profile") or profile_for(firmware, bool(d["generic"]))
        if profile not in PROFILES:
            raise SimStateError(f"unknown card profile {profile!r} in state file")
        return CardState(
            firmware=firmware,
            serial=_int(d, "serial", 0, 0xFFFFFFFF),
            form_factor=_int(d, "form_factor", 0, 255),
            profile=profile,
            interface=interface,
            pin=bytes.fromhex(d["pin"]),
            puk=bytes.fromhex(d["puk"]),
            pin_retries_total=_int(d, "pin_retries_total", 1, 255),
            pin_retries_left=_int(d, "pin_retries_left", 0, 255),
            puk_retries_total=_int(d, "puk_retries_total", 1, 255),
            puk_retries_left=_int(d, "puk_retries_left", 0, 255),
            mgmt_key=bytes.fromhex(d["mgmt_key"]),
            mgmt_key_type=MgmtKeyType(_int(d, "mgmt_key_type", 0, 255)),
            mgmt_touch_policy=_int(d, "mgmt_touch_policy", 0, 3),
            # Absent in files written before PIN complexity was emulated.
            pin_complexity=d.get("pin_complexity", False) is True,
            touch_mode=_touch_mode(d.get("touch_mode", "auto")),
            touch_timeout=_touch_timeout(d.get("touch_timeout", 15.0)),
            keys=keys,
            objects={int(t, 16): bytes.fromhex(v) for t, v in d["objects"].items()},
            attestation_root_key_pem=str(d["attestation_root_key_pem"]),
            attestation_root_cert=bytes.fromhex(d["attestation_root_cert"]),
        )
    except SimStateError:
        raise
    except (KeyError, TypeError, ValueError, AttributeError) as e:
        # The message names the problem class only: field values may be secrets.
        raise SimStateError(f"corrupt state file ({type(e).__name__})") from None


def save_state(state: CardState, path: str | os.PathLike[str]) -> None:
    """Write ``state`` to ``path`` atomically with mode 0600.

    The temporary file is created 0600 from the start (never world-readable, even
    briefly) in the target directory, fsynced, renamed over the target, and the directory
    is fsynced so the rename itself is durable.
    """
    target = Path(path)
    directory = target.parent if str(target.parent) else Path(".")
    payload = json.dumps(state_to_json(state), indent=1, sort_keys=True).encode("utf-8")
    fd, tmp_name = tempfile.mkstemp(prefix=f".{target.name}.", suffix=".tmp", dir=directory)
    # mkstemp already uses O_EXCL and mode 0600; chmod guards against an odd umask-free
    # platform default. The file holds nothing yet.
    try:
        os.fchmod(fd, 0o600)
        with os.fdopen(fd, "wb") as f:
            f.write(payload)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp_name, target)
    except BaseException:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(tmp_name)
        raise
    dir_fd = os.open(directory, os.O_RDONLY)
    try:
        os.fsync(dir_fd)
    finally:
        os.close(dir_fd)


def load_state(path: str | os.PathLike[str]) -> CardState:
    """Read a state file written by :func:`save_state`."""
    try:
        raw = Path(path).read_bytes()
    except FileNotFoundError:
        raise SimStateError(f"state file not found: {path}") from None
    except OSError as e:
        raise SimStateError(f"cannot read state file {path}: {e.strerror}") from None
    try:
        data = json.loads(raw.decode("utf-8"))
    except (UnicodeDecodeError, json.JSONDecodeError):
        raise SimStateError(f"corrupt state file (not JSON): {path}") from None
    return state_from_json(data)
