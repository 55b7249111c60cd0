"""The new keys of one enrollment: made once, found again, and replacing the old key last.

* **Resume.** Before GENERATE the journal records the key the slot held, after it the new
  key; :meth:`NewKeys.find_ours` recognises from those records (and the card's own
  metadata) a key an interrupted run of this enrollment made, so a re-run finishes with it
  instead of making a second one.
* **Transactional replace.** On a YubiKey with MOVE KEY (5.7+) and a free retired slot, a
  slot that holds a working key gets its new key staged in the retired slot; the old key
  stays in place until the new certificate is issued and checked, then
  :meth:`NewKeys.move_into_place` deletes it and moves the new key in.

:attr:`NewKeys.where` says where each slot's new key is meanwhile; the
:class:`~pivtool.workflows.enroll.Enroller` uses it for the CSR, the attestation and the
import.
"""

from __future__ import annotations

from typing import Any

from ..piv.constants import Slot
from ..piv.session import PivSession
from .enroll_options import EnrollOptions
from .journal import Journal
from .state import CardSnapshot


def _pem(public_key: Any) -> str:
    """A public key as SubjectPublicKeyInfo PEM (how the journal records keys)."""
    from cryptography.hazmat.primitives.serialization import Encoding, PublicFormat

    pem: bytes = public_key.public_bytes(Encoding.PEM, PublicFormat.SubjectPublicKeyInfo)
    return pem.decode()


class NewKeys:
    """Generates, stages, recognises and moves the keys of one enrollment on one card."""

    def __init__(self, session: PivSession, opts: EnrollOptions, slots: list[Slot],
                 changed: list[str]) -> None:
        self.s = session
        self.o = opts
        self.slots = slots
        #: The enrollment's list of what this run changed on the card (appended to).
        self.changed = changed
        #: This card's journal; set by the Enroller once the card's serial is read.
        self.journal: Journal | None = None
        #: slot -> public key an interrupted run of this enrollment generated
        self.ours: dict[Slot, Any] = {}
        #: slot -> where its new key is until the certificate is checked (MOVE KEY staging)
        self.where: dict[Slot, Slot] = {}

    def location(self, slot: Slot) -> Slot:
        """Where *slot*'s new key is now: a retired slot while it is staged."""
        return self.where.get(slot, slot)

    # --- resume -------------------------------------------------------------------------

    def find_ours(self, st: CardSnapshot) -> dict[Slot, Any]:
        """The keys an interrupted run of this enrollment generated and left on the card:
        recorded by the journal (before GENERATE: the slot's key then; after: the new key),
        recognised by the card's own metadata. Such a key is finished, never replaced
        (remembered in :attr:`ours` for :meth:`generate`)."""
        self.ours = self._recognise(st)
        return self.ours

    def _recognise(self, st: CardSnapshot) -> dict[Slot, Any]:
        j = self.journal
        if j is None or not j.active or str(j.get("upn")).casefold() != self.o.upn.casefold():
            return {}
        generating = j.get("generating") or {}
        generated = j.get("generated") or {}
        staged = j.get("staged") or {}
        ours: dict[Slot, Any] = {}
        for slot in self.slots:
            ss = st.slot(slot)
            tag = f"{slot.value:02x}"
            temp = staged.get(tag)
            if temp is not None:
                # Staged in a retired slot (transactional replace): the key is ours where it
                # is now — still in the retired slot (recorded, or there since the GENERATE
                # whose answer was lost: the slot was free), or already moved into place.
                known = generated.get(temp)
                for where in (Slot(int(temp, 16)), slot):
                    ws = st.slot(where)
                    if ws is None or ws.public_key is None:
                        continue
                    pem = _pem(ws.public_key)
                    if pem == known or (known is None and where != slot
                                        and ws.origin != "imported"):
                        ours[slot] = ws.public_key
                        self.where[slot] = where
                        break
                continue
            if ss is None or ss.public_key is None or tag not in generating:
                continue
            pem = _pem(ss.public_key)
            if generated.get(tag) == pem or (tag not in generated and ss.origin != "imported"
                                              and pem != generating[tag]):
                ours[slot] = ss.public_key
        return ours

    # --- generate, and the transactional replace -----------------------------------------

    def can_stage(self, st: CardSnapshot) -> bool:
        """MOVE KEY (5.7+) and a free retired slot per slot to fill: the new key can be
        made beside the old one, which then stays until the new certificate is checked."""
        from ..piv.version import has_move_delete

        if not self.s.is_yubikey or self.s.version is None or \
                not has_move_delete(self.s.version):
            return False
        return len(self.free_retired(st)) >= len(self.slots)

    @staticmethod
    def free_retired(st: CardSnapshot) -> list[Slot]:
        """The retired slots (82-95) that hold nothing: where a new key can be staged."""
        used = {ss.slot for ss in st.slots}
        return [s for s in Slot if 0x82 <= s.value <= 0x95 and s not in used]

    def generate(self, keys: dict[Slot, Any], st: CardSnapshot,
                 stage: bool) -> str | tuple[str, str]:
        """The "generate key" step: a new key for every slot into *keys* (slot -> public
        key), except where :meth:`find_ours` found this enrollment's key already made.
        With *stage* (the certificate comes in this run) and a card that can, a slot that
        holds a key gets its new key in a free retired slot instead (:meth:`can_stage`)."""
        out = []
        kept = []
        free = self.free_retired(st) if stage and self.can_stage(st) else []
        for slot in self.slots:
            if slot in self.ours:  # generated by the interrupted run: never a second key
                keys[slot] = self.ours[slot]
                kept.append(slot.label)
                continue
            ss = st.slot(slot)
            if free and ss is not None and ss.key_algorithm:
                # Transactional replace: the working key stays in place until the new
                # certificate is issued and checked.
                keys[slot] = self._stage(slot, free.pop(0))
                out.append(f"{self.o.algorithm.label} in {self.where[slot].label}, moved "
                           f"into {slot.label} once its certificate is checked")
                continue
            tag = f"{slot.value:02x}"
            if self.journal is not None:
                # Before GENERATE: if its answer is lost, the key now in the slot is known to
                # be ours because it differs from the one recorded here.
                ss = st.slot(slot)
                before = _pem(ss.public_key) if ss is not None and ss.public_key else None
                self.journal.set(generating={**(self.journal.get("generating") or {}),
                                             tag: before})
            self.changed.append(f"new key generated in {slot.label}")
            pub = self.s.generate_key(slot, self.o.algorithm, self.o.pin_policy,
                                      self.o.touch_policy)
            keys[slot] = pub
            if self.journal is not None:
                self.journal.set(generated={**(self.journal.get("generated") or {}),
                                            tag: _pem(pub)})
            out.append(f"{self.o.algorithm.label} in {slot.label}")
        if kept and not out:
            return ("skipped", f"the key the interrupted enroll generated in "
                               f"{', '.join(kept)} is used")
        return ", ".join(out + [f"kept the key in {k}" for k in kept])

    def _stage(self, slot: Slot, temp: Slot) -> Any:
        """Generate *slot*'s new key in the free retired slot *temp* (journalled first)."""
        t = f"{temp.value:02x}"
        if self.journal is not None:
            staged = {**(self.journal.get("staged") or {}), f"{slot.value:02x}": t}
            self.journal.set(staged=staged,
                             generating={**(self.journal.get("generating") or {}), t: None})
        self.changed.append(f"new key generated in {temp.label}")
        pub = self.s.generate_key(temp, self.o.algorithm, self.o.pin_policy,
                                  self.o.touch_policy)
        if self.journal is not None:
            self.journal.set(generated={**(self.journal.get("generated") or {}),
                                        t: _pem(pub)})
        self.where[slot] = temp
        return pub

    def move_into_place(self, slot: Slot) -> None:
        """The new key, certificate checked, replaces the old one in *slot*."""
        temp = self.where.get(slot, slot)
        if temp == slot:
            return
        if self.s.slot_key_present(slot):
            self.changed.append(f"old key in {slot.label} deleted")
            self.s.delete_key(slot)
        self.changed.append(f"new key moved from {temp.label} into {slot.label}")
        self.s.move_key(temp, slot)
        self.where[slot] = slot

