"""The user docs are tested: every ```sh block runs against a virtual card, JSON examples
match real output key by key, the CLI reference is fresh, completion works, links resolve.

Conventions (docs/index.md, "Trying the examples"): a page's ```sh blocks run in order in one
bash (``set -euo pipefail``) per page, in an empty temporary directory, with this checkout's
``pivtool`` first on PATH and no PIVTOOL_* variables. ``CMD  # exit N``: CMD must exit with N.
A block with a ``# not-run: REASON`` line is skipped. In json.md a ```json block right after a
```sh block is that block's output (``"…": "…"`` in an object: more keys may follow).

``PIVTOOL_UPDATE_DOCS=1 pytest tests/test_docs.py`` rewrites those JSON examples from a run.
"""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
from click.testing import CliRunner

from pivtool.cli.docgen import render
from pivtool.cli.main import cli

ROOT = Path(__file__).resolve().parent.parent
DOCS = ROOT / "docs"
BIN = Path(sys.executable).parent

#: Pages whose sh blocks this test runs.
RUN_PAGES = ["index.md", "install.md", "desk-provisioning.md", "entra-cba.md",
             "virtual-yubikey.md", "json.md", "exit-codes.md", "troubleshooting.md",
             "batch.md"]
#: Pages written and tested elsewhere (other owners) or generated.
OTHER_PAGES = {"development.md", "architecture.md", "pin-locked.md", "tls-proof.md",
               "performance.md", "bad-input.md", "fault-tolerance.md", "cli-reference.md",
               "card-diversity.md",
               "security-model.md", "fleet.md"}
ELLIPSIS = "…"

FENCE = re.compile(r"^```(\w*)[^\n]*\n(.*?)^```[ \t]*$", re.S | re.M)
EXIT = re.compile(r"\s+#\s*exit\s+(\d+)\s*$")
NOT_RUN = re.compile(r"^\s*#\s*not-run:\s*\S", re.M)


@dataclass
class Block:
    """A fenced block: its language, text, the line it starts on and where its text is."""

    lang: str
    text: str
    line: int
    span: tuple[int, int]


def blocks(page: Path) -> list[Block]:
    """The fenced blocks of *page*, in order."""
    text = page.read_text()
    return [Block(m[1], m[2], text.count("\n", 0, m.start()) + 1, m.span(2))
            for m in FENCE.finditer(text)]


def abbreviate(value: Any) -> Any:
    """*value* with long PEM or hex strings cut short, for readable examples."""
    if isinstance(value, dict):
        return {k: abbreviate(v) for k, v in value.items()}
    if isinstance(value, list):
        return [abbreviate(v) for v in value]
    if isinstance(value, str) and len(value) > 90 and ("\n" in value or " " not in value):
        return value[:60] + ELLIPSIS
    return value


def _shell_block(text: str) -> str:
    """*text* with ``# exit N`` lines turned into checked commands."""
    out = []
    for line in text.replace("\\\n", " ").splitlines():
        m = EXIT.search(line)
        if m:
            cmd = line[: m.start()]
            want = m[1]
            out.append(f'{{ {cmd}; }} && __rc=0 || __rc=$?; [ "$__rc" = {want} ] || '
                       f'{{ echo "expected exit {want}, got $__rc: {_sq(cmd)}" >&2; exit 99; }}')
        else:
            out.append(line)
    return "\n".join(out)


def _sq(s: str) -> str:
    return s.replace('"', "'").replace("$", "\\$").replace("`", "'")


def run_page(page: Path, tmp: Path) -> tuple[list[Block], dict[int, str]]:
    """Run the page's sh blocks; return the blocks and each run block's stdout by index."""
    bs = blocks(page)
    outdir = tmp / ".docout"
    work = tmp / "work"
    outdir.mkdir(parents=True)
    work.mkdir()
    parts = ["set -euo pipefail"]
    for i, b in enumerate(bs):
        if b.lang != "sh" or NOT_RUN.search(b.text):
            continue
        parts.append(f"echo {i} > {outdir}/current")
        parts.append(f"{{\n{_shell_block(b.text)}\n}} > {outdir}/{i}.out")
    env = {k: v for k, v in os.environ.items() if not k.startswith("PIVTOOL_")}
    env.update(PATH=f"{BIN}{os.pathsep}{env.get('PATH', '')}", HOME=str(tmp / "home"),
               NO_COLOR="1", LC_ALL="C.UTF-8")
    (tmp / "home").mkdir()
    r = subprocess.run(["bash", "-c", "\n".join(parts)], cwd=work, env=env,
                       capture_output=True, text=True, timeout=120, stdin=subprocess.DEVNULL)
    outputs = {int(p.stem): p.read_text() for p in outdir.glob("*.out")}
    if r.returncode != 0:
        current = int((outdir / "current").read_text())
        b = bs[current]
        pytest.fail(f"{page.name}:{b.line}: block failed (exit {r.returncode})\n"
                    f"--- block\n{b.text}--- stdout\n{outputs.get(current, '')}"
                    f"--- stderr\n{r.stderr[-3000:]}")
    return bs, outputs


def shape(value: Any) -> Any:
    """The key structure of a JSON value: dict keys, the first list element, else None."""
    if isinstance(value, dict):
        return {k: shape(v) for k, v in value.items()}
    if isinstance(value, list):
        return [shape(value[0])] if value else []
    return None


def shape_matches(doc: Any, real: Any, where: str = "$") -> list[str]:
    """Differences between a documented example and real output, key by key."""
    if isinstance(doc, dict):
        if not isinstance(real, dict):
            return [f"{where}: documented an object, got {type(real).__name__}"]
        keys = [k for k in doc if k != ELLIPSIS]
        problems = [f"{where}.{k}: documented, missing" for k in keys if k not in real]
        if ELLIPSIS not in doc:
            problems += [f"{where}.{k}: in the output, not documented"
                         for k in real if k not in doc]
        for k in keys:
            if k in real:
                problems += shape_matches(doc[k], real[k], f"{where}.{k}")
        return problems
    if isinstance(doc, list):
        if not isinstance(real, list):
            return [f"{where}: documented a list, got {type(real).__name__}"]
        if doc and real:
            return shape_matches(doc[0], real[0], f"{where}[0]")
        return []
    if doc is None or real is None:
        return []  # null in one run, a value in another: same field
    if isinstance(real, (dict, list)):
        return [f"{where}: documented a scalar, got {type(real).__name__}"]
    return []


def test_every_page_is_run_or_owned_elsewhere() -> None:
    pages = {p.name for p in DOCS.glob("*.md")}
    assert set(RUN_PAGES) <= pages
    assert pages - set(RUN_PAGES) - OTHER_PAGES == set(), \
        "new page: add it to RUN_PAGES (or OTHER_PAGES if it is tested elsewhere)"


def test_index_links_every_user_page() -> None:
    index = (DOCS / "index.md").read_text()
    pages = {p.name for p in DOCS.glob("*.md")} - {"index.md", "development.md"}
    missing = sorted(p for p in pages if f"]({p})" not in index)
    assert not missing, f"docs/index.md does not link {missing}"


@pytest.fixture(scope="module")
def page_runs(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Future[Any]]:
    """Run all pages at once (each in its own directory and shell): the test stays fast."""
    with ThreadPoolExecutor(max_workers=len(RUN_PAGES)) as pool:
        return {name: pool.submit(run_page, DOCS / name, tmp_path_factory.mktemp(name))
                for name in RUN_PAGES}


@pytest.mark.parametrize("name", RUN_PAGES)
def test_page_commands_run(name: str, page_runs: dict[str, Future[Any]]) -> None:
    """Each page's ```sh blocks run against a virtual card (json.md: outputs compared)."""
    page = DOCS / name
    bs, outputs = page_runs[name].result()
    ran = [i for i, b in enumerate(bs) if b.lang == "sh" and i in outputs]
    skipped = [b for b in bs if b.lang == "sh" and NOT_RUN.search(b.text)]
    assert ran, f"{name}: no runnable sh block"
    assert len(skipped) <= 3, f"{name}: keep # not-run blocks few"
    if name == "json.md":
        _check_json_examples(page, bs, outputs)


def _check_json_examples(page: Path, bs: list[Block], outputs: dict[int, str]) -> None:
    update = os.environ.get("PIVTOOL_UPDATE_DOCS") == "1"
    text = page.read_text()
    problems: list[str] = []
    pairs = 0
    for i in reversed(range(1, len(bs))):  # from the end, so spans stay valid
        if bs[i].lang != "json" or bs[i - 1].lang != "sh" or i - 1 not in outputs:
            continue
        pairs += 1
        real = json.loads(outputs[i - 1])
        if update:
            start, end = bs[i].span
            text = text[:start] + json.dumps(abbreviate(real), indent=2,
                                             ensure_ascii=False) + "\n" + text[end:]
            continue
        doc = json.loads(bs[i].text)
        problems += [f"json.md:{bs[i].line}: {p}" for p in shape_matches(doc, real)]
    if update:
        page.write_text(text)
    assert pairs >= 20, f"json.md: only {pairs} command/output pairs"
    assert not problems, "\n".join(problems)


def test_shape_matching() -> None:
    doc = {"schema": "x", "slots": [{"slot": "9a", "key": None}], ELLIPSIS: ELLIPSIS}
    assert shape_matches(doc, {"schema": "y", "slots": [{"slot": "9c", "key": {"a": 1}}],
                               "more": 1}) == []
    assert shape_matches({"a": 1}, {"a": 1, "b": 2}) == ["$.b: in the output, not documented"]
    assert shape_matches({"a": 1, "b": 2}, {"a": 1}) == ["$.b: documented, missing"]
    assert shape_matches({"a": [{"x": 1}]}, {"a": [{"y": 1}]}) == [
        "$.a[0].x: documented, missing", "$.a[0].y: in the output, not documented"]


def test_exit_annotation_is_checked(tmp_path: Path) -> None:
    """``# exit N`` really checks the exit code (a wrong expectation fails the page)."""
    page = tmp_path / "p.md"
    page.write_text("```sh\ntrue  # exit 0\nfalse  # exit 1\n```\n")
    run_page(page, tmp_path / "a")
    page.write_text("```sh\nfalse  # exit 3\n```\n")
    with pytest.raises(pytest.fail.Exception, match="expected exit 3, got 1"):
        run_page(page, tmp_path / "b")


def test_cli_reference_is_fresh() -> None:
    """docs/cli-reference.md equals a fresh rendering (regenerate with
    tools/gen_cli_reference.py)."""
    current = (DOCS / "cli-reference.md").read_text()
    assert current == render(), "docs/cli-reference.md is stale: run tools/gen_cli_reference.py"


def test_cli_reference_covers_every_command() -> None:
    text = render()
    for path in ["pivtool", "pivtool completion", "pivtool keys generate",
                 "pivtool certs export", "pivtool entra ids", "pivtool sim serve"]:
        assert f"\n## {path}\n" in text
    assert "| `--sim STATE_FILE` |" in text
    assert "| `SHELL` | required; one of `bash`, `zsh`, `fish` |" in text


def test_gen_cli_reference_check_mode() -> None:
    r = subprocess.run([sys.executable, str(ROOT / "tools/gen_cli_reference.py"), "--check"],
                       capture_output=True, text=True)
    assert r.returncode == 0, r.stderr


def test_completion_bash_script() -> None:
    r = CliRunner().invoke(cli, ["completion", "bash"])
    assert r.exit_code == 0
    assert "_PIVTOOL_COMPLETE=bash_complete" in r.stdout
    assert "complete -o nosort -F _pivtool_completion pivtool" in r.stdout
    for shell, marker in [("zsh", "#compdef pivtool"), ("fish", "complete --no-files")]:
        out = CliRunner().invoke(cli, ["completion", shell]).stdout
        assert marker in out and "_PIVTOOL_COMPLETE" in out
    assert CliRunner().invoke(cli, ["completion", "tcsh"]).exit_code == 2


def _complete(words: str, cword: int) -> list[str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("PIVTOOL_")}
    env.update(_PIVTOOL_COMPLETE="bash_complete", COMP_WORDS=words, COMP_CWORD=str(cword))
    r = subprocess.run([str(BIN / "pivtool")], env=env, capture_output=True, text=True,
                       timeout=30)
    assert r.returncode == 0, r.stderr
    return [line.split(",", 1)[1] for line in r.stdout.splitlines()]


def test_completion_offers_commands_and_options() -> None:
    assert _complete("pivtool p", 1) == ["pin", "puk"]
    assert set(_complete("pivtool pin ", 2)) == {"change", "set-retries", "unblock", "verify"}
    assert "completion" in _complete("pivtool c", 1)
    opts = _complete("pivtool --sim card.json keys generate 9a --", 6)
    assert {"--algorithm", "--pin-policy", "--touch-policy"} <= set(opts)


LINK = re.compile(r"\]\(([^)#\s]+)(?:#[^)]*)?\)")


@pytest.mark.parametrize("name", [*RUN_PAGES, "cli-reference.md"])
def test_links_resolve(name: str) -> None:
    text = (DOCS / name).read_text()
    broken = [t for t in LINK.findall(text)
              if "://" not in t and not (DOCS / t).resolve().exists()]
    # Pages other engineers are still writing may not exist yet.
    broken = [t for t in broken if Path(t).name not in OTHER_PAGES]
    assert not broken, f"{name}: broken links {broken}"
