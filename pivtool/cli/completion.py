"""``pivtool completion bash|zsh|fish``: print the shell completion script.

The script is click's own (``_PIVTOOL_COMPLETE=bash_source pivtool`` prints the same); at
completion time the shell runs ``pivtool`` with ``_PIVTOOL_COMPLETE=bash_complete`` and
click walks the command table, so completion stays right as commands are added."""

from __future__ import annotations

import click

#: The environment variable click's completion machinery listens to.
COMPLETE_VAR = "_PIVTOOL_COMPLETE"
SHELLS = ("bash", "zsh", "fish")


def completion_script(shell: str, prog_name: str = "pivtool") -> str:
    """The completion script for *shell* (``bash``, ``zsh`` or ``fish``)."""
    from click.shell_completion import get_completion_class

    from .main import cli

    cls = get_completion_class(shell)
    if cls is None:  # pragma: no cover - click.Choice restricts the shells
        raise click.BadParameter(f"unsupported shell {shell!r}")
    return cls(cli, {}, prog_name, COMPLETE_VAR).source()


@click.command(short_help="Print the shell completion script (bash, zsh or fish).")
@click.argument("shell", type=click.Choice(SHELLS))
@click.pass_context
def completion(ctx: click.Context, shell: str) -> None:
    """Print the shell completion script for SHELL (bash, zsh or fish).

    \b
    bash:  pivtool completion bash > ~/.local/share/bash-completion/completions/pivtool
    zsh:   pivtool completion zsh > ~/.zfunc/_pivtool  (fpath+=~/.zfunc in ~/.zshrc)
    fish:  pivtool completion fish > ~/.config/fish/completions/pivtool.fish

    Or load it in the current shell: eval "$(pivtool completion bash)"."""
    from ..core.errors import UsageError
    from .context import CliContext

    obj = ctx.find_object(CliContext)
    if obj is not None and obj.json:
        raise UsageError("'completion' prints a shell script; --json does not apply")
    click.echo(completion_script(shell), nl=False)
