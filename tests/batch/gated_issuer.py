"""Issuer command for the batch tests (``--issuer-cmd``): CSR PEM on stdin, certificate PEM
on stdout, issued by the lab CA in argv[1].

While the file argv[2] exists the issuer waits ("the gate is closed"): a test holds every
enrollment between "certificate request" and "issue certificate" to pull a card or kill the
batch at a known step. It gives up when its parent (the batch) dies, or after 30 s, so a
killed batch leaves no issuer behind. The lab CA takes one writer at a time: a flock on
argv[1]/issue.lock serialises the parallel issuers."""

from __future__ import annotations

import fcntl
import os
import sys
import time
from pathlib import Path


def main() -> int:
    ca_dir, gate = Path(sys.argv[1]), Path(sys.argv[2])
    parent = os.getppid()
    deadline = time.monotonic() + 30
    while gate.exists():
        if os.getppid() != parent or time.monotonic() > deadline:
            print("gated issuer: batch gone or gate never opened", file=sys.stderr)
            return 3
        time.sleep(0.05)
    csr = sys.stdin.buffer.read()
    from cryptography.hazmat.primitives.serialization import Encoding

    from pivtool.certs.ca import LabCA

    with open(ca_dir / "issue.lock", "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        cert = LabCA.open(ca_dir).issue(csr)
    sys.stdout.buffer.write(cert.public_bytes(Encoding.PEM))
    return 0


if __name__ == "__main__":
    sys.exit(main())
