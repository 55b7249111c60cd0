"""A private pcscd with vpcd readers, and virtual YubiKeys plugged into them, for tests.

Used by ``tests/pcsc`` and ``tests/interop``. Each of their conftests does::

    from pcsc_stack import pcsc_stack, vcard_factory, virtual_yubikey  # noqa: F401

(``tests/`` is put on ``sys.path`` by the conftest; see ``tests/pcsc/conftest.py``.)

Fixtures
--------
``pcsc_stack`` (session)
    A :class:`PcscStack`: our own ``pcscd -f -c <tmp conf dir>`` with :data:`N_READERS`
    vpcd readers on free TCP ports. pcsc-lite has one socket per machine
    (``/run/pcscd/pcscd.comm``), so:

    * a pcscd this process did not start makes the fixture *fail* (it is never reused: its
      readers and ports are not ours, and it may be a developer's real reader service);
    * two pytest sessions on one machine serialise on a lock file instead of fighting
      (:data:`LOCK_PATH`, waited for up to ``PIVTOOL_PCSC_LOCK_TIMEOUT`` seconds, default 600);
    * a missing ``pcscd`` binary or vpcd driver is a failure, never a skip.

    Both conftests import the fixture, so pytest sees two session fixtures; they share one
    refcounted stack, started once and stopped (by PID) after the last user.

``vcard_factory`` (function)
    ``vcard_factory(firmware=None, generic=False, serial=None, state=None, profile=None)``
    creates a fresh state file (``new_card_state`` + ``save_state``), starts
    ``python -m pivtool.sim.vpcd`` on a free reader and waits until pcscd reports the card
    present. Returns a :class:`VirtualCardProcess` (``.reader``, ``.serial``,
    ``.state_path``, ``.kill()``, ``.start()``). Teardown kills exactly those PIDs.

``virtual_yubikey`` (function)
    ``vcard_factory()`` with the defaults: a YubiKey 5.7.1.
"""

from __future__ import annotations

import contextlib
import ctypes
import fcntl
import os
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest

REPO = Path(__file__).resolve().parents[1]
PYTHON = sys.executable

PCSCD_CANDIDATES = ("/usr/sbin/pcscd", "/usr/bin/pcscd")
VPCD_DRIVER = Path("/usr/lib/pcsc/drivers/serial/libifdvpcd.so")
PCSCD_PID_FILE = Path("/run/pcscd/pcscd.pid")
PCSCD_SOCKET = Path("/run/pcscd/pcscd.comm")
LOCK_PATH = Path(tempfile.gettempdir()) / "pivtool-pcsc-tests.lock"

#: Each reader.conf entry (one copy of the driver) gives two slots on ports P and P+1.
N_ENTRIES = 3
N_READERS = 2 * N_ENTRIES
#: Reader names are "<FRIENDLY_PREFIX> <letter> 00 0<slot>", e.g. "pivtool-test A 00 00".
FRIENDLY_PREFIX = "pivtool-test"
#: Entries whose readers are named like a YubiKey's own USB CCID interface. ykman derives
#: the USB product id (and hence "this is a USB YubiKey") from such a name; with any other
#: name it treats the card as NFC, so both ykman code paths get exercised.
YUBICO_NAME = "Yubico YubiKey OTP+FIDO+CCID"
YUBICO_ENTRIES = ("C",)


# ------------------------------------------------------------------------------------------
# small helpers


def _set_pdeathsig() -> None:
    """In the child: die with the parent (pytest), so a crashed run leaves no daemons."""
    libc = ctypes.CDLL("libc.so.6", use_errno=True)
    pr_set_pdeathsig = 1
    libc.prctl(pr_set_pdeathsig, signal.SIGTERM)


def _pid_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def _running_pcscd() -> int | None:
    """PID of a live pcscd according to its pid file, else None."""
    try:
        pid = int(PCSCD_PID_FILE.read_text().strip())
    except (OSError, ValueError):
        return None
    if not _pid_alive(pid):
        return None
    try:
        comm = Path(f"/proc/{pid}/comm").read_text().strip()
    except OSError:
        return None
    return pid if comm == "pcscd" else None


def _cmdline(pid: int) -> str:
    try:
        return Path(f"/proc/{pid}/cmdline").read_bytes().replace(b"\0", b" ").decode().strip()
    except OSError:
        return "?"


def _port_free(port: int) -> bool:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        try:
            s.bind(("0.0.0.0", port))
        except OSError:
            return False
    return True


def _free_port_run(count: int) -> int:
    """First port of *count* consecutive free TCP ports (vpcd listens on all addresses)."""
    for base in range(41000, 60000, 50):
        if all(_port_free(base + i) for i in range(count)):
            return base
    pytest.fail(f"no run of {count} free TCP ports for vpcd readers")


def _scard() -> Any:
    from smartcard import scard

    return scard


def reader_present(reader: str) -> bool:
    """True if pcscd reports a card in *reader* (one non-blocking status query)."""
    return wait_reader(reader, True, 0.0, fail=False)


def wait_reader(reader: str, present: bool, timeout: float, fail: bool = True) -> bool:
    """Block (event-driven, ``SCardGetStatusChange``) until *reader* has/has not a card.

    Deliberately independent of :mod:`pivtool.pcsc`, the code under test.
    """
    scard = _scard()
    hr, ctx = scard.SCardEstablishContext(scard.SCARD_SCOPE_USER)
    if hr != scard.SCARD_S_SUCCESS:
        pytest.fail(f"cannot reach pcscd: {scard.SCardGetErrorMessage(hr)}")
    try:
        deadline = time.monotonic() + timeout
        state = scard.SCARD_STATE_UNAWARE
        while True:
            ms = max(0, int((deadline - time.monotonic()) * 1000))
            hr, states = scard.SCardGetStatusChange(ctx, ms, [(reader, state)])
            if hr == scard.SCARD_S_SUCCESS:
                _name, event, _atr = states[0]
                if bool(event & scard.SCARD_STATE_PRESENT) == present:
                    return True
                state = event & ~scard.SCARD_STATE_CHANGED
                continue
            if hr & 0xFFFFFFFF == scard.SCARD_E_TIMEOUT & 0xFFFFFFFF:
                if fail:
                    pytest.fail(
                        f"reader {reader!r}: card {'not ' if present else 'still '}present "
                        f"after {timeout:.1f}s"
                    )
                return False
            pytest.fail(f"SCardGetStatusChange({reader!r}): {scard.SCardGetErrorMessage(hr)}")
    finally:
        scard.SCardReleaseContext(ctx)


# ------------------------------------------------------------------------------------------
# pcscd


@dataclass
class VReader:
    """One vpcd reader slot of our pcscd."""

    name: str
    port: int
    #: Substring that selects this reader and no other (for ``--reader``/``-r``).
    @property
    def substring(self) -> str:
        return self.name[self.name.index("test "):]

    @property
    def yubico(self) -> bool:
        """Named like a YubiKey's USB reader (see :data:`YUBICO_NAME`)."""
        return self.name.startswith(YUBICO_NAME)


@dataclass
class PcscStack:
    """Our pcscd and its vpcd readers."""

    workdir: Path
    readers: list[VReader]
    proc: subprocess.Popen[bytes] | None = None
    log_path: Path | None = None
    _lock_fd: int | None = None
    _busy: set[str] = field(default_factory=set)
    _next: int = 0
    _mutex: threading.Lock = field(default_factory=threading.Lock)

    @property
    def pid(self) -> int | None:
        return self.proc.pid if self.proc else None

    def log_tail(self, lines: int = 20) -> str:
        if self.log_path is None or not self.log_path.exists():
            return ""
        return "\n".join(self.log_path.read_text(errors="replace").splitlines()[-lines:])

    def acquire_reader(self, yubico: bool = False) -> VReader:
        """A free reader, round-robin, so that a reader whose card was just pulled gets time
        to report it before it is used again. *yubico* picks one named like a YubiKey."""
        with self._mutex:
            for i in range(len(self.readers)):
                reader = self.readers[(self._next + i) % len(self.readers)]
                if reader.name not in self._busy and reader.yubico == yubico:
                    self._busy.add(reader.name)
                    self._next = (self._next + i + 1) % len(self.readers)
                    return reader
        pytest.fail(f"all {len(self.readers)} vpcd readers are in use")

    def release_reader(self, reader: VReader) -> None:
        with self._mutex:
            self._busy.discard(reader.name)


def _write_conf(conf_dir: Path, lib_dir: Path, base_port: int) -> list[VReader]:
    readers: list[VReader] = []
    entries = []
    for i in range(N_ENTRIES):
        letter = chr(ord("A") + i)
        port = base_port + 2 * i
        # Each entry needs its own copy of the driver: pcscd keys driver state by library,
        # so entries sharing one .so overwrite each other (observed with Debian 12's pcscd).
        lib = lib_dir / f"libifdvpcd-{letter}.so"
        shutil.copyfile(VPCD_DRIVER, lib)
        friendly = f"{FRIENDLY_PREFIX} {letter}"
        if letter in YUBICO_ENTRIES:
            friendly = f"{YUBICO_NAME} {friendly}"
        # Distinct friendly names: with equal ones pcscd hands out duplicate reader names.
        entries.append(
            f'FRIENDLYNAME "{friendly}"\nDEVICENAME   /dev/null:0x{port:X}\n'
            f"LIBPATH      {lib}\nCHANNELID    0x{port:X}\n"
        )
        readers.append(VReader(f"{friendly} 00 00", port))
        readers.append(VReader(f"{friendly} 00 01", port + 1))
    (conf_dir / "pivtool-vpcd").write_text("\n".join(entries))
    return readers


def _find_pcscd() -> str:
    for path in PCSCD_CANDIDATES:
        if os.access(path, os.X_OK):
            return path
    found = shutil.which("pcscd")
    if found:
        return found
    pytest.fail("pcscd is not installed (Debian: apt-get install pcscd); PC/SC tests need it")


def _take_lock() -> int:
    fd = os.open(LOCK_PATH, os.O_RDWR | os.O_CREAT, 0o600)
    timeout = float(os.environ.get("PIVTOOL_PCSC_LOCK_TIMEOUT", "600"))
    deadline = time.monotonic() + timeout
    announced = False
    while True:
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
            return fd
        except BlockingIOError:
            if not announced:
                sys.__stderr__.write(
                    f"\n[pcsc_stack] another test session holds {LOCK_PATH}; waiting\n"
                )
                announced = True
            if time.monotonic() > deadline:
                os.close(fd)
                pytest.fail(f"another test session kept {LOCK_PATH} for {timeout:.0f}s")
            time.sleep(0.2)


def start_stack() -> PcscStack:
    """Start our pcscd (after checking nobody else's runs) and wait for its readers."""
    pcscd = _find_pcscd()
    if not VPCD_DRIVER.exists():
        pytest.fail(
            f"vpcd driver missing ({VPCD_DRIVER}); Debian: apt-get install vsmartcard-vpcd"
        )
    lock_fd = _take_lock()
    try:
        other = _running_pcscd()
        if other is not None:
            pytest.fail(
                f"a pcscd not started by the tests is running (PID {other}: {_cmdline(other)}). "
                "The PC/SC tests need their own pcscd with vpcd readers, and there can be only "
                "one per machine (/run/pcscd/pcscd.comm); stop that one and rerun."
            )
        workdir = Path(tempfile.mkdtemp(prefix="pivtool-pcsc-"))
        conf_dir = workdir / "reader.conf.d"
        lib_dir = workdir / "lib"
        conf_dir.mkdir()
        lib_dir.mkdir()
        readers = _write_conf(conf_dir, lib_dir, _free_port_run(2 * N_ENTRIES))
        log_path = workdir / "pcscd.log"
        with open(log_path, "wb") as log:
            proc = subprocess.Popen(
                [pcscd, "-f", "-c", str(conf_dir)],
                stdin=subprocess.DEVNULL, stdout=log, stderr=subprocess.STDOUT,
                preexec_fn=_set_pdeathsig,
            )
        stack = PcscStack(workdir, readers, proc, log_path, lock_fd)
        _wait_readers(stack)
        return stack
    except BaseException:
        with contextlib.suppress(Exception):
            if "stack" in locals():
                stop_stack(stack)
            else:
                os.close(lock_fd)
        raise


def _wait_readers(stack: PcscStack, timeout: float = 5.0) -> None:
    scard = _scard()
    want = {r.name for r in stack.readers}
    deadline = time.monotonic() + timeout
    seen: list[str] = []
    while time.monotonic() < deadline:
        assert stack.proc is not None
        if stack.proc.poll() is not None:
            pytest.fail(f"pcscd exited with {stack.proc.returncode}:\n{stack.log_tail()}")
        hr, ctx = scard.SCardEstablishContext(scard.SCARD_SCOPE_USER)
        if hr == scard.SCARD_S_SUCCESS:
            hr, seen = scard.SCardListReaders(ctx, [])
            scard.SCardReleaseContext(ctx)
            if hr == scard.SCARD_S_SUCCESS and want <= set(seen):
                return
        time.sleep(0.02)
    pytest.fail(f"pcscd did not show the vpcd readers {sorted(want)} (saw {seen}):\n"
                f"{stack.log_tail()}")


def stop_stack(stack: PcscStack) -> None:
    """Stop our pcscd by PID (only ever the one we started) and clean up."""
    proc = stack.proc
    if proc is not None and proc.poll() is None:
        proc.terminate()
        try:
            proc.wait(5)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait(5)
    stack.proc = None
    shutil.rmtree(stack.workdir, ignore_errors=True)
    if stack._lock_fd is not None:
        os.close(stack._lock_fd)  # releases the flock
        stack._lock_fd = None


_shared: PcscStack | None = None
_users = 0
_shared_lock = threading.Lock()


@contextlib.contextmanager
def shared_stack() -> Iterator[PcscStack]:
    """The one stack of this process, started on first use, stopped after the last."""
    global _shared, _users
    with _shared_lock:
        if _shared is None:
            _shared = start_stack()
        _users += 1
        stack = _shared
    try:
        yield stack
    finally:
        with _shared_lock:
            _users -= 1
            if _users == 0 and _shared is not None:
                stop_stack(_shared)
                _shared = None


# ------------------------------------------------------------------------------------------
# virtual cards


@dataclass
class VirtualCardProcess:
    """A ``python -m pivtool.sim.vpcd`` process serving one state file on one reader."""

    stack: PcscStack
    vreader: VReader
    state_path: Path
    serial: int | None
    proc: subprocess.Popen[bytes] | None = None
    log_path: Path | None = None

    @property
    def reader(self) -> str:
        """Full PC/SC reader name."""
        return self.vreader.name

    @property
    def substring(self) -> str:
        """A substring that selects this reader only (for ykman --reader, -r)."""
        return self.vreader.substring

    @property
    def pid(self) -> int | None:
        return self.proc.pid if self.proc else None

    def start(self, timeout: float = 10.0) -> None:
        """Start serving and wait until pcscd sees the card."""
        assert self.proc is None or self.proc.poll() is not None, "already running"
        # A card pulled a moment ago may still be "present" until pcscd's next poll (~0.4 s);
        # without this wait we could mistake the old card for the new one.
        wait_reader(self.reader, False, 5.0)
        self.log_path = self.state_path.with_suffix(".log")
        env = dict(os.environ)
        env["PYTHONPATH"] = str(REPO) + os.pathsep + env.get("PYTHONPATH", "")
        with open(self.log_path, "ab") as log:
            self.proc = subprocess.Popen(
                [PYTHON, "-m", "pivtool.sim.vpcd", str(self.state_path),
                 "--port", str(self.vreader.port)],
                stdin=subprocess.DEVNULL, stdout=log, stderr=subprocess.STDOUT,
                cwd=REPO, env=env, preexec_fn=_set_pdeathsig,
            )
        deadline = time.monotonic() + timeout
        # Event-driven wait, but in slices so that a serve process that died is noticed.
        while time.monotonic() < deadline:
            if wait_reader(self.reader, True, 0.25, fail=False):
                return
            if self.proc.poll() is not None:
                pytest.fail(f"serve exited with {self.proc.returncode}:\n{self.log()}")
        pytest.fail(f"card never appeared in {self.reader!r}:\n{self.log()}")

    def log(self) -> str:
        if self.log_path is None or not self.log_path.exists():
            return ""
        return self.log_path.read_text(errors="replace")[-3000:]

    def kill(self, sig: int = signal.SIGKILL, wait_removed: bool = True) -> None:
        """Signal exactly our serve process and reap it; optionally wait until pcscd noticed
        the card is gone."""
        if self.proc is not None and self.proc.poll() is None:
            self.proc.send_signal(sig)
            try:
                self.proc.wait(5)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(5)
        if wait_removed:
            wait_reader(self.reader, False, 5.0)

    def stop(self) -> None:
        """Graceful stop (SIGTERM), as ``pivtool sim serve`` is stopped."""
        self.kill(signal.SIGTERM)

    def load_state(self) -> Any:
        from pivtool.sim.state import load_state

        return load_state(self.state_path)


VCardFactory = Callable[..., VirtualCardProcess]


@contextlib.contextmanager
def card_factory(stack: PcscStack, directory: Path) -> Iterator[VCardFactory]:
    """Context manager behind the ``vcard_factory`` fixture."""
    made: list[VirtualCardProcess] = []

    def make(
        firmware: tuple[int, int, int] | None = None,
        generic: bool = False,
        serial: int | None = None,
        state: Any = None,
        start: bool = True,
        yubico_reader: bool = False,
        **kwargs: Any,
    ) -> VirtualCardProcess:
        from pivtool.sim.state import new_card_state, save_state

        if state is None:
            state = new_card_state(firmware=firmware, serial=serial, generic=generic, **kwargs)
        vreader = stack.acquire_reader(yubico=yubico_reader)
        path = directory / f"card-{len(made)}-{vreader.port}.json"
        save_state(state, path)
        # The serial a client can read (GET SERIAL), None where the card cannot tell.
        readable = state.kind.knows_ins(0xF8) and state.firmware >= (5, 0, 0)
        card = VirtualCardProcess(stack, vreader, path, state.serial if readable else None)
        made.append(card)
        if start:
            card.start()
        return card

    try:
        yield make
    finally:
        for card in made:
            # No waiting for pcscd to notice: start() waits for an empty reader, and the
            # round-robin allocation makes that wait rare.
            card.kill(signal.SIGKILL, wait_removed=False)
            stack.release_reader(card.vreader)


# ------------------------------------------------------------------------------------------
# fixtures (imported by tests/pcsc/conftest.py and tests/interop/conftest.py)


@pytest.fixture(scope="session")
def pcsc_stack() -> Iterator[PcscStack]:
    """Our pcscd with :data:`N_READERS` vpcd readers (see module docstring)."""
    with shared_stack() as stack:
        yield stack


@pytest.fixture
def vcard_factory(pcsc_stack: PcscStack, tmp_path: Path) -> Iterator[VCardFactory]:
    """Make virtual cards behind pcscd: ``vcard_factory(firmware=..., generic=...)`` or
    ``vcard_factory(profile="yubikey-neo")``."""
    with card_factory(pcsc_stack, tmp_path) as make:
        yield make


@pytest.fixture
def virtual_yubikey(vcard_factory: VCardFactory) -> VirtualCardProcess:
    """A factory-fresh virtual YubiKey 5.7.1 in a pcscd reader."""
    return vcard_factory()


def vpcd_recv_frame(sock: socket.socket, quickack: bool = False) -> bytes | None:
    """One vpcd frame (2-byte big-endian length, then the bytes), or ``None`` when the other
    side closed. Written here, apart from pivtool.sim.vpcd, so tests judge the bridge with
    their own reader. *quickack*: vpcd writes length and payload separately (pcsc-facts), so a
    relay on the hot path sets TCP_QUICKACK before each receive."""
    opt = getattr(socket, "TCP_QUICKACK", None) if quickack else None
    buf = b""
    while len(buf) < 2:
        if opt is not None:
            sock.setsockopt(socket.IPPROTO_TCP, opt, 1)
        chunk = sock.recv(2 - len(buf))
        if not chunk:
            return None
        buf += chunk
    size = int.from_bytes(buf, "big")
    body = b""
    while len(body) < size:
        if opt is not None:
            sock.setsockopt(socket.IPPROTO_TCP, opt, 1)
        chunk = sock.recv(size - len(body))
        if not chunk:
            return None
        body += chunk
    return body


def vpcd_send_frame(sock: socket.socket, payload: bytes) -> None:
    """Send one vpcd frame."""
    sock.sendall(len(payload).to_bytes(2, "big") + payload)
