"""Generate ``docs/cli-reference.md`` from the click commands.

Walks :data:`pivtool.cli.main.cli` recursively, including the lazily imported commands, and
writes each command's usage, help text, arguments and options (as click's own help shows
them). ``tools/gen_cli_reference.py`` runs it; ``tests/test_docs.py`` fails when the
committed file differs from a fresh rendering."""

from __future__ import annotations

import inspect
import textwrap
from collections.abc import Iterator

import click

HEADER = """\
# CLI reference

Generated from the click commands by `tools/gen_cli_reference.py`; do not edit by hand
(`tests/test_docs.py` fails when this file is stale). Every command also takes `-h`/`--help`.
Global options go before the command: `pivtool --sim card.json --json info`.
"""


def walk(cmd: click.Command, ctx: click.Context) -> Iterator[tuple[click.Command,
                                                                    click.Context]]:
    """Yield *cmd* and every visible subcommand below it, depth first, sorted by name."""
    yield cmd, ctx
    if isinstance(cmd, click.Group):
        for name in cmd.list_commands(ctx):
            sub = cmd.get_command(ctx, name)
            if sub is None or sub.hidden:
                continue
            sub_ctx = click.Context(sub, info_name=name, parent=ctx, **sub.context_settings)
            yield from walk(sub, sub_ctx)


def _anchor(path: str) -> str:
    """GitHub's heading anchor for ``pivtool x y``."""
    return "".join(c for c in path.lower().replace(" ", "-") if c.isalnum() or c in "-_")


def _escape(text: str) -> str:
    """Markdown text that renders literally: no HTML tags from ``<serial>``."""
    return text.replace("&", "&amp;").replace("<", "&lt;").replace(">", "&gt;")


def _cell(text: str) -> str:
    return _escape(text).replace("|", "\\|").replace("\n", " ")


def _code_cell(text: str) -> str:
    """``text`` as a code span in a table cell (only the pipes need escaping)."""
    return "`" + text.replace("|", "\\|") + "`"


def help_markdown(text: str) -> str:
    """click help text as Markdown: paragraphs are re-flowed onto one line; paragraphs that
    click keeps verbatim (marked ``\\b``) and indented examples become ``text`` blocks."""
    text = inspect.cleandoc(text).split("\f", 1)[0]
    out: list[str] = []
    for para in text.split("\n\n"):
        lines = para.split("\n")
        if lines[0].strip() == "\b":
            body = textwrap.dedent("\n".join(lines[1:])).strip("\n")
            out.append(f"```text\n{body}\n```")
        elif all(line.startswith("  ") for line in lines):  # an indented example
            out.append("```text\n" + textwrap.dedent(para).strip("\n") + "\n```")
        else:
            out.append(_escape(" ".join(line.strip() for line in lines)))
    return "\n\n".join(out)


def _arguments(cmd: click.Command, ctx: click.Context) -> list[str]:
    rows = []
    for p in cmd.get_params(ctx):
        if not isinstance(p, click.Argument):
            continue
        name = p.human_readable_name
        notes = ["required" if p.required else "optional"]
        if p.nargs != 1:
            notes.append("repeatable")
        if isinstance(p.type, click.Choice):
            notes.append("one of " + ", ".join(f"`{c}`" for c in p.type.choices))
        rows.append(f"| {_code_cell(name)} | {'; '.join(notes)} |")
    return rows


def _options(cmd: click.Command, ctx: click.Context) -> list[str]:
    rows = []
    for p in cmd.get_params(ctx):
        if isinstance(p, click.Argument):
            continue
        record = p.get_help_record(ctx)
        if record is None:
            continue
        names, text = record
        rows.append(f"| {_code_cell(names)} | {_cell(text)} |")
    return rows


def render(root: click.Command | None = None) -> str:
    """The whole reference as Markdown (``root`` defaults to ``pivtool``'s CLI)."""
    if root is None:
        from .main import cli

        root = cli
    ctx = click.Context(root, info_name="pivtool", **root.context_settings)
    entries = list(walk(root, ctx))
    out = [HEADER, "## Commands\n"]
    for cmd, c in entries[1:]:
        path = c.command_path
        depth = path.count(" ") - 1
        out.append(f"{'  ' * depth}- [`{path}`](#{_anchor(path)}) — "
                   f"{_escape(cmd.get_short_help_str(limit=80))}")
    out.append("")
    for cmd, c in entries:
        path = c.command_path
        out.append(f"## {path}\n")
        out.append("```text\n" + " ".join([path, *cmd.collect_usage_pieces(c)]) + "\n```\n")
        if cmd.help:
            out.append(help_markdown(cmd.help) + "\n")
        if isinstance(cmd, click.Group) and cmd is root and hasattr(cmd, "lazy"):
            # pivtool's own table, grouped by task as 'pivtool --help' shows it.
            from .main import SECTIONS

            out.append("| task | command | summary |\n|---|---|---|")
            for title, names in SECTIONS:
                for n in names:
                    sub = cmd.get_command(c, n)
                    if sub is not None and not sub.hidden:
                        out.append(f"| {_cell(title)} | [`{n}`](#{_anchor(f'{path} {n}')}) | "
                                   f"{_cell(sub.get_short_help_str(limit=200))} |")
            out.append("")
        elif isinstance(cmd, click.Group):
            subs = [(n, cmd.get_command(c, n)) for n in cmd.list_commands(c)]
            out.append("| command | summary |\n|---|---|")
            out.extend(f"| [`{n}`](#{_anchor(f'{path} {n}')}) | "
                       f"{_cell(s.get_short_help_str(limit=200))} |"
                       for n, s in subs if s is not None and not s.hidden)
            out.append("")
        args = _arguments(cmd, c)
        if args:
            out.append("| argument | |\n|---|---|")
            out.extend(args)
            out.append("")
        opts = _options(cmd, c)
        if opts:
            out.append("| option | description |\n|---|---|")
            out.extend(opts)
            out.append("")
        if cmd.epilog:
            out.append(help_markdown(cmd.epilog) + "\n")
    return "\n".join(out).rstrip("\n") + "\n"
