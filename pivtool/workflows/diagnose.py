"""The diagnostics bundle: "what information would help debug the issue?" in one JSON
document a user can send to their helpdesk.

What goes in: software versions and OS, the PC/SC reader list, the key's device information
(management application: serial, firmware, form factor, enabled applications per interface),
PIV state (PIN/PUK tries and default flags, management key algorithm/default/protected —
never the key), slot metadata and certificate summaries, the readiness checklist, and the
certificateUserIds of the 9a certificate.

What never goes in: PIN, PUK, management key, the PIN-protected object (5FC109), private
keys. This module reads no secret at all — not even from the environment — so there is
nothing to leak. It does name the certificate holder (UPN, subject), hence the 0600 file.

Every section is collected on its own: a failure (no pcscd, no card, an odd card) becomes an
``error`` string in that section instead of losing the whole bundle.
"""

from __future__ import annotations

import contextlib
import datetime as _dt
import platform
import sys
from collections.abc import Callable
from contextlib import AbstractContextManager
from dataclasses import dataclass, field
from typing import Any

from ..piv.constants import Slot
from ..piv.session import PivSession

__all__ = ["DIAGNOSE_SCHEMA", "PACKAGES", "DiagnosticsBundle", "collect", "environment"]

#: JSON schema identifier of :meth:`DiagnosticsBundle.to_json`.
DIAGNOSE_SCHEMA = "pivtool.diagnose/1"
#: Distributions whose versions matter when debugging (distribution names).
PACKAGES = ("pivtool", "pyscard", "cryptography", "yubikey-manager", "click")


@dataclass
class DiagnosticsBundle:
    """The collected sections; each ``*_error`` is a one-line reason a section is missing."""

    created: str
    environment: dict[str, Any]
    readers: list[str] | None
    readers_error: str | None
    selection: dict[str, Any]
    card_error: str | None = None
    device: dict[str, Any] | None = None
    application: dict[str, Any] | None = None
    piv: dict[str, Any] | None = None
    check: dict[str, Any] | None = None
    certificate_user_ids: dict[str, Any] | None = None
    errors: list[str] = field(default_factory=list)

    def to_json(self) -> dict[str, Any]:
        """Stable JSON form (schema ``pivtool.diagnose/1``)."""
        return {
            "schema": DIAGNOSE_SCHEMA,
            "created": self.created,
            "environment": self.environment,
            "readers": {"names": self.readers or [], "error": self.readers_error},
            "selection": self.selection,
            "card": {
                "error": self.card_error,
                "device": self.device,
                "application": self.application,
                "piv": self.piv,
            },
            "check": self.check,
            "certificate_user_ids": self.certificate_user_ids,
            "errors": self.errors,
        }


def _one_line(e: BaseException) -> str:
    lines = str(e).strip().splitlines()
    text = lines[0] if lines else ""
    return f"{type(e).__name__}: {text}"[:300] if text else type(e).__name__


def _version_of(dist: str) -> str | None:
    from importlib import metadata

    try:
        return metadata.version(dist)
    except metadata.PackageNotFoundError:
        return None


def environment() -> dict[str, Any]:
    """pivtool, library, Python and OS versions."""
    from .. import __version__

    packages = {name: _version_of(name) for name in PACKAGES}
    # The running code's own version beats the installed metadata (editable installs).
    packages["pivtool"] = __version__
    return {
        "packages": packages,
        "python": {"version": platform.python_version(),
                   "implementation": platform.python_implementation(),
                   "executable_64bit": sys.maxsize > 2**32},
        "os": {"system": platform.system(), "release": platform.release(),
               "version": platform.version(), "machine": platform.machine(),
               # Not platform.platform(): it runs `uname -p` (a subprocess, and one that
               # would inherit the environment with pivtool's secrets).
               "platform": "-".join((platform.system(), platform.release(),
                                     platform.machine()))},
    }


def _readers(list_readers: Callable[[], list[str]]) -> tuple[list[str] | None, str | None]:
    try:
        return list_readers(), None
    except Exception as e:  # no pcscd, no pyscard, PC/SC oddities: record, don't fail
        return None, _one_line(e)


def collect(open_session: Callable[[], AbstractContextManager[PivSession]],
            list_readers: Callable[[], list[str]],
            selection: dict[str, Any] | None = None,
            now: _dt.datetime | None = None) -> DiagnosticsBundle:
    """Collect the bundle. *open_session* opens the selected card (the CLI's
    ``CliContext.session``); *list_readers* names the PC/SC readers (workflows do not
    import ``pivtool.pcsc``: the caller passes ``pcsc.list_readers``); *selection* records
    how the card was chosen (reader name, serial, whether it is a virtual card). Never
    raises for card or PC/SC problems."""
    from ..certs.inspect import iso_utc

    moment = now or _dt.datetime.now(_dt.timezone.utc)
    readers, readers_error = _readers(list_readers)
    bundle = DiagnosticsBundle(created=iso_utc(moment), environment=environment(),
                               readers=readers, readers_error=readers_error,
                               selection=selection or {})
    try:
        with open_session() as session:
            _collect_card(session, bundle, moment)
    except Exception as e:
        # Whatever the card did, the environment half of the bundle is still worth having.
        bundle.card_error = _one_line(e)
    return bundle


def _collect_card(session: PivSession, bundle: DiagnosticsBundle,
                  now: _dt.datetime) -> None:
    from .check import evaluate, probe_default_mgmt_key
    from .device import read_device_info
    from .state import read_card_state

    props = session.properties
    bundle.application = {
        "aid": props.aid.hex(),
        "label": props.label,
        "url": props.url,
        "algorithms": [f"{a:02x}" for a in props.algorithms],
        "atr": _atr(session),
        "extended_apdus": session.protocol.extended,
    }
    device = read_device_info(session)
    bundle.device = device.to_json()
    state = read_card_state(session)
    if state.is_yubikey and state.mgmt_key_default is None:
        state.mgmt_key_default = probe_default_mgmt_key(session)
    bundle.piv = state.to_json()
    try:
        bundle.check = evaluate(state, device, now=now).to_json()
    except Exception as e:
        bundle.errors.append(f"check: {_one_line(e)}")
    slot = state.slot(Slot.AUTHENTICATION)
    if slot is not None and slot.certificate is not None:
        try:
            from ..certs.entra import certificate_user_id_gaps, certificate_user_ids

            cert = slot.certificate
            bundle.certificate_user_ids = {
                "slot": "9a",
                "values": [i.to_json() for i in certificate_user_ids(cert, sha1_pukey="both")],
                "gaps": certificate_user_id_gaps(cert),
            }
        except Exception as e:
            bundle.errors.append(f"certificateUserIds: {_one_line(e)}")


def _atr(session: PivSession) -> str | None:
    with contextlib.suppress(Exception):
        return bytes(session.connection.atr).hex()
    return None
