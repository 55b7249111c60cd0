"""The README's main job: provision a virtual YubiKey and show it, with real pivtool commands.

Run with ``scripts/dev demo [WORKDIR]``. Every step is an ordinary ``pivtool`` invocation
(printed before it runs), so the transcript doubles as a tour of the CLI. Secrets go through
environment variables, never argv.
"""

from __future__ import annotations

import os
import shlex
import subprocess
import sys
import tempfile
from pathlib import Path


def _run(args: list[str], env: dict[str, str]) -> None:
    print(f"\n$ pivtool {shlex.join(args)}", flush=True)
    subprocess.run([sys.executable, "-m", "pivtool", *args], env=env, check=True)


def main(argv: list[str] | None = None) -> int:
    """Run the demo in WORKDIR (default: a new temporary directory)."""
    args = sys.argv[1:] if argv is None else argv
    workdir = Path(args[0]) if args else Path(tempfile.mkdtemp(prefix="pivtool-demo-"))
    workdir.mkdir(parents=True, exist_ok=True)
    state = workdir / "yubikey.json"
    env = dict(os.environ)
    try:
        _run(["sim", "create", str(state), "--firmware", "5.7.1", "--serial", "31415926",
              "--force"], env)
        _run(["--sim", str(state), "info"], env)
        _run(["--sim", str(state), "info", "--json"], env)
    except subprocess.CalledProcessError as e:
        print(f"demo step failed with exit code {e.returncode}", file=sys.stderr)
        return 1
    print(f"\nDemo files are in {workdir}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
