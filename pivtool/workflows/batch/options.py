"""What a batch is given (card source, options, secret policy) and what it tells its caller
(events, summary)."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

from ...core.errors import UsageError
from ...piv.constants import DEFAULT_PIN, DEFAULT_PUK
from .state import EVENT_SCHEMA, FAILED, now_iso

if TYPE_CHECKING:
    from ..escrow import EscrowFile
    from ..issuers import Issuer
    from .graphbind import GraphBinder

# --------------------------------------------------------------------------------------------
# Options, events, results


@dataclass
class SecretPolicy:
    """Where PINs and PUKs come from. ``repr`` hides the values."""

    pin_letters: Path | None = None  # random PIN per user, written to a letter first
    new_pin: bytes | None = field(default=None, repr=False)  # one PIN for every user
    new_puk: bytes | None = field(default=None, repr=False)  # None: random, escrowed
    pin: bytes | None = field(default=None, repr=False)  # current PIN of keys not from here
    puk: bytes | None = field(default=None, repr=False)
    mgmt_key: bytes | None = field(default=None, repr=False)

    @classmethod
    def gather(cls, pin_letters: Path | None, escrow: bool,
               optional: Callable[[str], bytes | None],
               ask: Callable[[str], bytes | None]) -> SecretPolicy:
        """Which secrets a batch needs: the users' PIN from the letters or one PIN for
        everyone, the PUK escrowed or one for everyone, and whatever current PIN, PUK or
        management key was given. *optional* returns a secret if it was given; *ask* must
        return one (the CLI: a prompt typed twice, or a usage error)."""
        new_pin = optional("new_pin")
        if new_pin is None and pin_letters is None:
            new_pin = ask("new_pin")  # one PIN for everyone
        new_puk = optional("new_puk")
        if new_puk is None and not escrow:
            new_puk = ask("new_puk")  # one PUK for everyone
        return cls(pin_letters=pin_letters, new_pin=new_pin, new_puk=new_puk,
                   pin=optional("pin"), puk=optional("puk"), mgmt_key=optional("mgmt_key"))

    def check(self, escrow: EscrowFile | None) -> None:
        """Refuse combinations that would set a PIN or PUK nobody records."""
        if self.pin_letters is None and self.new_pin is None:
            raise UsageError("choose the users' PINs: --pin-letters DIR (a random PIN per "
                             "user, written to a 0600 letter) or one PIN for all "
                             "(PIVTOOL_NEW_PIN or --new-pin-file)")
        if self.pin_letters is not None and self.new_pin is not None:
            raise UsageError("--pin-letters sets a random PIN per user; do not also give "
                             "PIVTOOL_NEW_PIN / --new-pin-file")
        if self.new_puk is None and escrow is None:
            raise UsageError("choose the PUKs: --escrow FILE (a random PUK per key, kept "
                             "encrypted) or one PUK for all (PIVTOOL_NEW_PUK or "
                             "--new-puk-file)")
        from ...piv.encoding import pin_bytes

        for value, what, default in ((self.new_pin, "new PIN", DEFAULT_PIN),
                                     (self.new_puk, "new PUK", DEFAULT_PUK)):
            if value is not None:
                pin_bytes(value, what)
                if value == default:
                    raise UsageError(f"the {what} must not be the factory default")


@dataclass
class BatchOptions:
    """How to run the batch (secrets live in :class:`SecretPolicy`)."""

    issuer: Issuer
    secrets: SecretPolicy
    readers: list[str] = field(default_factory=list)  # substrings; empty = every reader
    escrow: EscrowFile | None = None
    reassign: bool = False
    max_cards: int | None = None
    idle_timeout: float | None = None
    operator: str = "unknown"
    allow_last_try: bool = False
    macos: bool = False
    allow_non_ios: bool = False
    #: ``--graph-bind``: bind each enrolled user's certificateUserIds in Entra.
    graph: GraphBinder | None = None


@dataclass
class BatchEvent:
    """One progress event (``--json`` prints each as a line). ``kind``: inserted, enrolling,
    step, done, failed, refused, wiped, remove-card, removed, stopped."""

    kind: str
    reader: str | None = None
    serial: int | None = None
    upn: str | None = None
    data: dict[str, Any] = field(default_factory=dict)
    time: str = field(default_factory=now_iso)

    def to_json(self) -> dict[str, Any]:
        """One JSON object."""
        return {"schema": EVENT_SCHEMA, "event": self.kind, "time": self.time,
                "reader": self.reader, "serial": self.serial, "upn": self.upn, **self.data}


@dataclass
class BatchSummary:
    """How a run ended."""

    reason: str  # complete, max-cards, timeout, pile-empty, interrupted
    counts: dict[str, int]
    enrolled_this_run: int
    per_reader: dict[str, dict[str, int]]
    #: ``--graph-bind``: enrolled users by Graph status (bound, failed, binding, unbound);
    #: None without it.
    graph: dict[str, int] | None = None

    @property
    def ok(self) -> bool:
        """Nothing failed (enrollment or Graph binding) and no roster row was bad."""
        graph_failed = bool(self.graph and (self.graph.get("failed") or
                                            self.graph.get("binding")))
        return self.counts[FAILED] == 0 and self.counts["invalid"] == 0 and not graph_failed

    def to_json(self) -> dict[str, Any]:
        """JSON form (also the ``stopped`` event's data)."""
        return {"reason": self.reason, "counts": self.counts,
                "enrolled_this_run": self.enrolled_this_run, "per_reader": self.per_reader,
                "graph": self.graph}
