"""The lab CA under concurrent writers: 80 pivtool CLI processes issuing, revoking and
signing CRLs on one CA directory at the same time (issue 16: without a lock, 13 parallel
revokes left 5 certificates valid, 50 issues left 11 index records, 20 CRLs all got number 1).

The processes are forks of this one running ``pivtool.cli.main.main(argv)``: separate
processes with their own file descriptors (so the CA's flock really is contended), without
paying 80 interpreter start-ups (``python -m pivtool ca issue`` costs ~0.18 s of CPU each:
~18 s on this 2-core machine, ~1.5 s forked)."""

from __future__ import annotations

import contextlib
import os
from pathlib import Path

from cryptography import x509
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.hazmat.primitives.serialization import Encoding

from pivtool.certs.ca import LabCA
from pivtool.certs.csr import build_csr
from pivtool.certs.profile import CertRequest

ISSUES, REVOKES, CRLS = 50, 20, 10


def _csr(n: int) -> bytes:
    key = ec.generate_private_key(ec.SECP256R1())
    request = CertRequest.create(upns=[f"user{n}@contoso.com"])
    return build_csr(key, request).public_bytes(Encoding.PEM)


def test_parallel_issue_revoke_crl_lose_nothing(tmp_path: Path) -> None:
    ca_dir = tmp_path / "ca"
    ca = LabCA.init(ca_dir, "CN=Concurrency Lab CA", crl_url="http://127.0.0.1/ca.crl")
    # Certificates to revoke exist before the race; the issues race with their revocation.
    to_revoke = [ca.issue(_csr(1000 + i)) for i in range(REVOKES)]
    for i in range(ISSUES):
        (tmp_path / f"{i}.csr").write_bytes(_csr(i))
    base = ["ca"]
    argvs = [[*base, "issue", str(ca_dir), str(tmp_path / f"{i}.csr"), "-o",
              str(tmp_path / f"{i}.pem")] for i in range(ISSUES)]
    argvs += [[*base, "revoke", str(ca_dir), format(c.serial_number, "x"), "--reason",
               "keyCompromise"] for c in to_revoke]
    argvs += [[*base, "crl", str(ca_dir), "-o", str(tmp_path / f"{i}.crl")]
              for i in range(CRLS)]
    # Interleave the kinds so they really overlap (not all issues, then all revokes).
    argvs.sort(key=lambda a: hash(a[-1]))
    codes = run_forked(argvs, tmp_path / "err")
    assert codes == [0] * len(argvs), (tmp_path / "err").read_text()

    final = LabCA.open(ca_dir)
    index = {r.serial_number: r for r in final.issued()}
    issued = [x509.load_pem_x509_certificate((tmp_path / f"{i}.pem").read_bytes())
              for i in range(ISSUES)]
    assert len(index) == ISSUES + REVOKES
    assert all(c.serial_number in index for c in issued), "an issued certificate is unindexed"
    assert all(index[c.serial_number].status == "revoked" for c in to_revoke)
    crl = final.crl()
    for c in to_revoke:
        assert crl.get_revoked_certificate_by_serial_number(c.serial_number) is not None
    numbers = [x509.load_der_x509_crl((tmp_path / f"{i}.crl").read_bytes())
               .extensions.get_extension_for_class(x509.CRLNumber).value.crl_number
               for i in range(CRLS)]
    assert len(set(numbers)) == CRLS, f"CRL numbers repeat: {sorted(numbers)}"
    last = crl.extensions.get_extension_for_class(x509.CRLNumber).value.crl_number
    assert last > max(numbers)


def run_forked(argvs: list[list[str]], errors: Path) -> list[int]:
    """Start one forked pivtool CLI process per argv, all at once; their exit codes."""
    from pivtool.cli import ca as _ca  # noqa: F401 - imported once, before forking
    from pivtool.cli.main import main

    pids = []
    for argv in argvs:
        pid = os.fork()
        if pid == 0:  # the child: pivtool, stdout discarded, stderr to one file
            code = 70
            with contextlib.suppress(BaseException):
                null = os.open(os.devnull, os.O_WRONLY)
                err = os.open(errors, os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o600)
                os.dup2(null, 1)
                os.dup2(err, 2)
                code = main(argv)
            os._exit(code)
        pids.append(pid)
    return [os.waitstatus_to_exitcode(os.waitpid(pid, 0)[1]) for pid in pids]
