"""The batch's main loop: a watcher thread on the card source, one worker thread per reader
(:class:`_ReaderWorker`), and the caller's thread deciding when to stop."""

from __future__ import annotations

import queue
import threading
import time
from collections.abc import Callable
from typing import TYPE_CHECKING, Any

from ...core.events import CardEvent, CardSource, EventKind
from .graphbind import GraphBinding, graph_counts
from .options import BatchEvent, BatchOptions, BatchSummary
from .outputs import AuditLog
from .state import BatchPaths, BatchState
from .worker import CardWork

if TYPE_CHECKING:
    from ..issuers import AttestationPems, Issuer


class _LockedIssuer:
    """Serialises issuance: the lab CA keeps its serial index in files and takes one writer
    at a time."""

    def __init__(self, inner: Issuer) -> None:
        self.inner = inner
        self.description = inner.description
        self._lock = threading.Lock()

    def issue(self, csr_pem: bytes, attestation: AttestationPems | None = None) -> bytes:
        """Issue under the lock."""
        with self._lock:
            return self.inner.issue(csr_pem, attestation)

    def ca_certificates(self) -> list[Any]:
        """The inner issuer's CA certificates."""
        with self._lock:
            return self.inner.ca_certificates()

    def preflight(self) -> None:
        """The inner issuer's pre-flight check."""
        with self._lock:
            self.inner.preflight()


# --------------------------------------------------------------------------------------------
# The runner


class BatchRunner(CardWork, GraphBinding):
    """Runs one batch: a reader monitor thread, one worker thread per reader, and the
    caller's thread deciding when to stop (:meth:`run`)."""

    def __init__(self, state: BatchState, paths: BatchPaths, options: BatchOptions,
                 source: CardSource,
                 on_event: Callable[[BatchEvent], None] | None = None,
                 audit: AuditLog | None = None) -> None:
        from ..issuers import LabCAIssuer

        self.source = source
        self.state = state
        self.paths = paths
        self.o = options
        self.issuer: Issuer = (_LockedIssuer(options.issuer)
                               if isinstance(options.issuer, LabCAIssuer) else options.issuer)
        self.audit = audit or AuditLog(paths.audit, options.operator)
        self.graph = options.graph
        self._on_event = on_event or (lambda e: None)
        self._emit_lock = threading.Lock()
        self._cond = threading.Condition()
        self._stop_requested = threading.Event()
        self._busy = 0
        self._enrolled = 0
        self._accepting = True
        self._last_activity = time.monotonic()
        self._fatal: BaseException | None = None
        self._workers: dict[str, _ReaderWorker] = {}
        self.per_reader: dict[str, dict[str, int]] = {}

    def request_stop(self) -> None:
        """Stop taking cards; cards in progress finish. Safe from a signal handler (sets a
        flag only; :meth:`run` notices within half a second)."""
        self._stop_requested.set()

    # --- the main loop ---------------------------------------------------------------

    def run(self) -> BatchSummary:
        """Watch the readers until every roster user is done (or failed), ``max_cards`` keys
        were enrolled, ``idle_timeout`` seconds passed without activity, or
        :meth:`request_stop`. Returns how it ended; the state is saved throughout."""
        for bad in self.state.doc["invalid_rows"]:
            self.audit.write("roster", "invalid", upn=bad["upn"] or None, detail=bad["error"])
        # --graph-bind: users enrolled earlier whose binding is not confirmed come first.
        self.bind_missing()
        monitor = self.source
        watcher = threading.Thread(target=self._watch, args=(monitor,), daemon=True,
                                   name="pivtool-batch-monitor")
        watcher.start()
        reason = "interrupted"
        try:
            while True:
                with self._cond:
                    why = self._stop_reason()
                    if why:
                        reason = why
                        break
                    # Not polling the card: the monitor blocks in SCardGetStatusChange. This
                    # wait only bounds how late a stop request or the idle timer is noticed.
                    self._cond.wait(0.5)
        finally:
            with self._cond:
                self._accepting = False
            monitor.stop()
            watcher.join(5)
            workers = list(self._workers.values())
            for w in workers:
                w.queue.put(None)
            for w in workers:
                w.join()  # cards in progress finish (a second Ctrl-C aborts the join)
            monitor.close()
            self.state.save()
        fatal = self._fatal or self.state.fatal
        if fatal is not None:
            raise fatal
        summary = BatchSummary(reason, self.state.counts(), self._enrolled,
                               dict(self.per_reader),
                               graph_counts(self.state) if self.graph is not None else None)
        self.audit.write("batch", "stopped", detail=reason)
        self.emit(BatchEvent("stopped", data=summary.to_json()))
        return summary

    def _stop_reason(self) -> str | None:
        if self._fatal is not None or self.state.fatal is not None:
            return "error"
        if self._stop_requested.is_set():
            return "interrupted"
        if self._busy:
            return None
        if not self.state.open_users():
            return "complete"
        if self.o.max_cards is not None and self._enrolled >= self.o.max_cards:
            return "max-cards"
        if (self.o.idle_timeout is not None
                and time.monotonic() - self._last_activity >= self.o.idle_timeout):
            return "timeout"
        if self.source.exhausted:
            return "pile-empty"
        return None

    def _wanted(self, reader: str) -> bool:
        if not self.o.readers or any(r.casefold() == "all" for r in self.o.readers):
            return True
        return any(r.casefold() in reader.casefold() for r in self.o.readers)

    def _watch(self, monitor: CardSource) -> None:
        try:
            while not monitor.stopped:
                for event in monitor.wait():
                    if event.kind not in (EventKind.INSERTED, EventKind.REMOVED):
                        continue
                    if not self._wanted(event.reader):
                        continue
                    self._touch()
                    worker = self._workers.get(event.reader)
                    if worker is None:
                        worker = _ReaderWorker(self, event.reader)
                        self._workers[event.reader] = worker
                        worker.start()
                    worker.queue.put(event)
        except BaseException as e:  # pcscd gone: end the run with the error
            with self._cond:
                self._fatal = e
                self._cond.notify_all()


class _ReaderWorker(threading.Thread):
    """One reader's worker: takes its reader's events in order. Daemon, so a second Ctrl-C
    can end the process even with a card hanging mid-command (the state is saved after
    every step, so nothing is lost)."""

    def __init__(self, runner: BatchRunner, reader: str) -> None:
        super().__init__(name=f"pivtool-batch {reader}", daemon=True)
        self.runner = runner
        self.reader = reader
        self.queue: queue.Queue[CardEvent | None] = queue.Queue()

    def run(self) -> None:
        while True:
            event = self.queue.get()
            if event is None:
                return
            if event.kind is EventKind.INSERTED:
                self.runner.handle_card(self.reader)
            elif event.kind is EventKind.REMOVED:
                self.runner.emit(BatchEvent("removed", self.reader))
