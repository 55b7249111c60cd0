"""The README's main job: enroll a virtual YubiKey for Entra CBA, with real pivtool commands.

Run with ``scripts/dev demo [WORKDIR]``. Every step is an ordinary ``pivtool`` invocation
(printed before it runs), so the transcript doubles as a tour of the CLI. Secrets go through
environment variables, never argv.
"""

from __future__ import annotations

import shlex
import subprocess
import sys
import tempfile
from pathlib import Path

from .core.childenv import child_env


def _run(args: list[str], env: dict[str, str]) -> None:
    print(f"\n$ pivtool {shlex.join(args)}", flush=True)
    subprocess.run([sys.executable, "-m", "pivtool", *args], env=env, check=True)


def main(argv: list[str] | None = None) -> int:
    """Run the demo in WORKDIR (default: a new temporary directory)."""
    args = sys.argv[1:] if argv is None else argv
    workdir = Path(args[0]) if args else Path(tempfile.mkdtemp(prefix="pivtool-demo-"))
    workdir.mkdir(parents=True, exist_ok=True)
    state = workdir / "yubikey.json"
    ca = workdir / "lab-ca"
    secrets_file = workdir / "alice-pin-puk.json"
    for stale in (secrets_file,):
        stale.unlink(missing_ok=True)
    # pivtool's own rule for children: no PIVTOOL_* variable reaches them.
    env = child_env()
    card = ["--sim", str(state)]
    try:
        _run(["sim", "create", str(state), "--firmware", "5.7.1", "--serial", "31415926",
              "--force"], env)
        _run([*card, "info"], env)
        if not (ca / "ca.json").exists():
            _run(["ca", "init", str(ca), "--subject", "CN=Contoso Lab CA,O=Contoso",
                  "--crl-url", "http://ca.contoso.test/lab.crl"], env)
        # Random PIN and PUK go to a 0600 file, never to the screen or argv.
        _run([*card, "enroll", "--upn", "alice@contoso.com", "--email", "alice@contoso.com",
              "--macos", "--ca", str(ca), "--random-pin", "--random-puk",
              "--secrets-out", str(secrets_file)], env)
        _run([*card, "check", "--upn", "alice@contoso.com", "--ca-bundle",
              str(ca / "ca.pem")], env)
        _run([*card, "entra", "ids", "--slot", "9a"], env)
        _run([*card, "info"], env)
    except subprocess.CalledProcessError as e:
        print(f"demo step failed with exit code {e.returncode}", file=sys.stderr)
        return 1
    print(f"\nDemo files are in {workdir}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
