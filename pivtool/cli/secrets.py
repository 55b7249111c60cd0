"""Where secrets come from: a file (``-`` for stdin), an environment variable, or a hidden
prompt — never argv. Values are returned as bytes and never echoed or logged."""

from __future__ import annotations

import os
import sys
from dataclasses import dataclass

import click

from ..core.errors import UsageError


@dataclass(frozen=True)
class SecretSpec:
    """How to find one secret: its user-facing name, env var and file option."""

    name: str
    env: str
    file_option: str


PIN = SecretSpec("PIN", "PIVTOOL_PIN", "--pin-file")
PUK = SecretSpec("PUK", "PIVTOOL_PUK", "--puk-file")
MGMT_KEY = SecretSpec("management key", "PIVTOOL_MGMT_KEY", "--mgmt-key-file")
NEW_PIN = SecretSpec("new PIN", "PIVTOOL_NEW_PIN", "--new-pin-file")
NEW_PUK = SecretSpec("new PUK", "PIVTOOL_NEW_PUK", "--new-puk-file")
NEW_MGMT_KEY = SecretSpec("new management key", "PIVTOOL_NEW_MGMT_KEY", "--new-mgmt-key-file")
PFX_PASSWORD = SecretSpec("PKCS#12 password", "PIVTOOL_PFX_PASSWORD", "--password-file")


#: Longest secret accepted from a file: bounds the read, so ``--pin-file /dev/zero`` or a
#: huge file without a newline is an error instead of exhausting memory.
MAX_SECRET = 4096


def _read_file(path: str, spec: SecretSpec) -> bytes:
    try:
        if path == "-":
            data = sys.stdin.buffer.readline(MAX_SECRET + 1)
        else:
            with open(path, "rb") as f:
                data = f.readline(MAX_SECRET + 1)
    except OSError as e:
        raise UsageError(f"cannot read the {spec.name} file {path}: {e.strerror}") from None
    # One secret per file, first line; trailing newline is not part of it.
    value = data.rstrip(b"\r\n")
    if len(value) > MAX_SECRET:
        raise UsageError(f"the first line of the {spec.name} file {path} is too long (over "
                         f"{MAX_SECRET} bytes)")
    return value


def _utf8(text: str) -> bytes | None:
    """*text* as UTF-8, or ``None`` when it holds undecodable bytes (Python maps them to
    lone surrogates). The error is not raised from here: its repr holds the whole value."""
    try:
        return text.encode("utf-8")
    except UnicodeEncodeError:
        return None


def get_secret(spec: SecretSpec, file: str | None, prompt: bool = True,
               confirm: bool = False, required: bool = True) -> bytes | None:
    """Resolve a secret: *file* beats the environment beats a hidden prompt.

    With ``prompt=False`` (non-interactive use) a missing secret is a usage error naming the
    env var and file option, or ``None`` when not *required*."""
    if file:
        value = _read_file(file, spec)
    elif spec.env in os.environ:
        encoded = _utf8(os.environ[spec.env])
        if encoded is None:
            raise UsageError(f"{spec.env} is not valid UTF-8 text")
        value = encoded
    elif prompt and sys.stdin.isatty():
        text = click.prompt(f"Enter {spec.name}", hide_input=True,
                            confirmation_prompt=confirm, err=True, default="",
                            show_default=False)
        encoded = _utf8(text)
        if encoded is None:
            raise UsageError(f"the {spec.name} typed is not valid UTF-8 text")
        value = encoded
    elif not required:
        return None
    else:
        raise UsageError(f"{spec.name} needed: set {spec.env}, use {spec.file_option} FILE, "
                         "or run interactively")
    if not value and required:
        raise UsageError(f"empty {spec.name}")
    return value


SPECS: dict[str, SecretSpec] = {
    "pin": PIN,
    "puk": PUK,
    "mgmt_key": MGMT_KEY,
    "new_pin": NEW_PIN,
    "new_puk": NEW_PUK,
    "new_mgmt_key": NEW_MGMT_KEY,
    "pfx_password": PFX_PASSWORD,
}

#: Secrets that are typed twice when prompted (a typo there locks the user out).
CONFIRMED = frozenset({"new_pin", "new_puk", "new_mgmt_key"})


class CliPrompter:
    """The CLI's :class:`~pivtool.workflows.auth.Prompter`: file option, then env var, then
    a hidden prompt; each secret is asked for at most once per invocation."""

    def __init__(self, files: dict[str, str | None], yes: bool = False,
                 interactive: bool | None = None) -> None:
        self.files = files
        self.yes = yes
        self.interactive = sys.stdin.isatty() if interactive is None else interactive
        self._cache: dict[str, bytes] = {}

    def secret(self, name: str) -> bytes:
        """Resolve the secret *name* (see :data:`SPECS`)."""
        if name not in self._cache:
            spec = SPECS[name]
            value = get_secret(spec, self.files.get(name), prompt=self.interactive,
                               confirm=name in CONFIRMED)
            assert value is not None
            self._cache[name] = value
        return self._cache[name]

    def given(self, name: str) -> bool:
        """True when the user supplied the secret explicitly (file option or env var), i.e.
        it is available without prompting."""
        return bool(self.files.get(name)) or SPECS[name].env in os.environ

    def ask(self, question: str) -> bool:
        """Ask on a terminal only: ``--yes`` does not answer this (a try that may be the
        last one); without a terminal the answer is no (``--allow-last-try`` is the way)."""
        if not self.interactive:
            return False
        return click.confirm(question, default=False, err=True)

    def confirm(self, message: str) -> bool:
        """``--yes`` answers yes; otherwise ask on a terminal; never assume yes."""
        if self.yes:
            return True
        if not self.interactive:
            raise UsageError(f"confirmation needed ({message.rstrip('?')}): re-run with --yes")
        return click.confirm(message, default=False, err=True)
