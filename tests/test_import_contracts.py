"""The layering (docs/architecture.md) is enforced by import-linter contracts in
pyproject.toml (``lint-imports``, run by ``scripts/dev test``). These tests show the contracts
bite: a copy of the package with one injected violation per contract fails, each contract
naming its own violation. import-linter cannot see ``importlib.import_module``, so dynamic
imports get their own check here.
"""

from __future__ import annotations

import ast
import os
import re
import shutil
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
PACKAGE = ROOT / "pivtool"
LINT_IMPORTS = Path(sys.executable).parent / "lint-imports"

#: contract id -> (file in the copy, line appended to it, "importer -> imported" the report
#: must name). The first five are the violations an earlier directory-scanning test missed.
INJECTED: dict[str, list[tuple[str, str, str]]] = {
    "layers": [
        ("pcsc.py", "import pivtool.workflows.state", "pivtool.pcsc -> pivtool.workflows.state"),
        ("core/tlv.py", "import pivtool.connect", "pivtool.core.tlv -> pivtool.connect"),
        ("piv/padding.py", "import pivtool.certs.errors",
         "pivtool.piv.padding -> pivtool.certs.errors"),
        ("workflows/reset.py", "import pivtool.cli.render",
         "pivtool.workflows.reset -> pivtool.cli.render"),
        ("cli/render.py", "import pivtool.demo", "pivtool.cli.render -> pivtool.demo"),
        ("store/api.py", "import pivtool.workflows.escrow",
         "pivtool.store.api -> pivtool.workflows.escrow"),
        ("store/engine.py", "import pivtool.piv.session",
         "pivtool.store.engine -> pivtool.piv.session"),
    ],
    "sim-independent": [
        ("sim/card.py", "import pivtool.connect", "pivtool.sim.card -> pivtool.connect"),
        ("sim/state.py", "from pivtool import pcsc", "pivtool.sim.state -> pivtool.pcsc"),
        ("sim/consts.py", "from ..core import sw", "pivtool.sim.consts -> pivtool.core.sw"),
    ],
    "card-access": [
        ("workflows/keys.py", "from .. import pcsc", "pivtool.workflows.keys -> pivtool.pcsc"),
        ("piv/version.py", "import pivtool.connect", "pivtool.piv.version -> pivtool.connect"),
        # batch builds no card source itself: the CLI injects one.
        ("workflows/batch/runner.py", "from ...pcsc import PcscCardSource",
         "pivtool.workflows.batch.runner -> pivtool.pcsc"),
        ("workflows/batch/worker.py", "from ...connect import SimPileSource",
         "pivtool.workflows.batch.worker -> pivtool.connect"),
        ("store/roles.py", "import pivtool.pcsc", "pivtool.store.roles -> pivtool.pcsc"),
        ("demo.py", "from .connect import open_connection", "pivtool.demo -> pivtool.connect"),
    ],
    "client-not-sim": [
        ("workflows/objects.py", "import pivtool.sim.state",
         "pivtool.workflows.objects -> pivtool.sim.state"),
    ],
    "pyscard-in-pcsc": [
        ("workflows/check.py", "from smartcard.System import readers",
         "pivtool.workflows.check -> smartcard"),
        ("connect.py", "import smartcard.scard", "pivtool.connect -> smartcard"),
    ],
    "click-in-cli": [
        ("core/sw.py", "import click", "pivtool.core.sw -> click"),
    ],
    "graph-no-cards": [
        ("graph/bind.py", "import pivtool.piv.session",
         "pivtool.graph.bind -> pivtool.piv.session"),
    ],
    "http-in-graph": [
        ("workflows/enroll.py", "import requests", "pivtool.workflows.enroll -> requests"),
    ],
    "cli-commands-apart": [
        ("cli/certs.py", "from .keys import keys", "pivtool.cli.certs -> pivtool.cli.keys"),
        ("cli/batch.py", "from .escrow import escrow", "pivtool.cli.batch -> pivtool.cli.escrow"),
        ("cli/entra.py", "from .check import check", "pivtool.cli.entra -> pivtool.cli.check"),
    ],
    "cli-rooms": [
        # A helper that imported a command would tie every command using it to that one.
        ("cli/stores.py", "from .inventory import inventory",
         "pivtool.cli.stores -> pivtool.cli.inventory"),
        # The root group loads commands by name only (start-up cost).
        ("cli/main.py", "from .info import info", "pivtool.cli.main -> pivtool.cli.info"),
    ],
    "sql-in-store": [
        ("workflows/escrow.py", "import sqlalchemy", "pivtool.workflows.escrow -> sqlalchemy"),
        ("cli/main.py", "import psycopg", "pivtool.cli.main -> psycopg"),
    ],
}


#: contract id -> a new module (relative to pivtool/) that no layer names: an exhaustive
#: layers contract must refuse it until it is placed.
UNPLACED: dict[str, str] = {
    "layers": "newtop.py",
    "cli-rooms": "cli/newcommand.py",
}


def _lint_imports(cwd: Path) -> subprocess.CompletedProcess[str]:
    env = {**os.environ, "PYTHONPATH": str(cwd)}
    return subprocess.run([str(LINT_IMPORTS), "--no-logo", "--no-cache"], cwd=cwd, env=env,
                          capture_output=True, text=True, timeout=120)


def _broken_sections(report: str, names: dict[str, str]) -> dict[str, str]:
    """contract id -> its section of the "Broken contracts" part of the report."""
    tail = report.split("Broken contracts", 1)[-1]
    heads = sorted((tail.find(f"\n{name}\n"), cid) for cid, name in names.items()
                   if f"\n{name}\n" in tail)
    out: dict[str, str] = {}
    for i, (pos, cid) in enumerate(heads):
        end = heads[i + 1][0] if i + 1 < len(heads) else len(tail)
        out[cid] = tail[pos:end]
    return out


def _contract_names() -> dict[str, str]:
    import tomllib

    cfg = tomllib.loads((ROOT / "pyproject.toml").read_text())["tool"]["importlinter"]
    return {c["id"]: c["name"] for c in cfg["contracts"]}


def test_contracts_hold_on_the_tree() -> None:
    result = _lint_imports(ROOT)
    assert result.returncode == 0, result.stdout + result.stderr
    assert "0 broken" in result.stdout


def test_each_contract_fails_on_an_injected_violation(tmp_path: Path) -> None:
    names = _contract_names()
    assert set(INJECTED) == set(names), "every contract needs an injected violation here"
    shutil.copytree(PACKAGE, tmp_path / "pivtool",
                    ignore=shutil.ignore_patterns("__pycache__"))
    shutil.copy(ROOT / "pyproject.toml", tmp_path / "pyproject.toml")
    for violations in INJECTED.values():
        for rel, line, _ in violations:
            target = tmp_path / "pivtool" / rel
            target.write_text(target.read_text() + f"\n{line}  # injected\n")
    for rel in UNPLACED.values():
        (tmp_path / "pivtool" / rel).write_text('"""A module no layer names."""\n')

    result = _lint_imports(tmp_path)
    assert result.returncode != 0
    sections = _broken_sections(result.stdout, names)
    for cid, violations in INJECTED.items():
        assert cid in sections, f"contract {cid} was not broken:\n{result.stdout}"
        for _, _, edge in violations:
            assert re.search(rf"{re.escape(edge)} \(l\.\d+\)", sections[cid]), (
                f"{cid} did not name {edge}:\n{sections[cid]}")
    for cid, rel in UNPLACED.items():
        module = "pivtool." + rel.removesuffix(".py").replace("/", ".")
        assert re.search(rf"not listed as layers:\s+(- \S+\s+)*- {re.escape(module)}\n",
                         sections[cid]), f"{cid} did not refuse {module}:\n{sections[cid]}"


# -- dynamic imports (import-linter cannot see them) --------------------------------------

#: Module names a dynamic import may start with, per file (relative to pivtool/). Anything
#: else (another target, a non-literal name) is a finding.
DYNAMIC_ALLOWED: dict[str, tuple[str, ...]] = {
    # pyscard is loaded lazily, only here (the "pyscard-in-pcsc" contract's dynamic half).
    "pcsc.py": ("smartcard.",),
    # The lazy command table: cli's own modules.
    "cli/main.py": ("pivtool.cli.",),
    # Lazy re-exports of the package's own modules.
    "certs/__init__.py": ("{__name__}.",),
}
_IMPORTERS = {"import_module", "__import__"}


def _literal_prefix(node: ast.expr) -> str | None:
    """The literal text a module-name argument starts with (f-strings: up to the first
    placeholder, ``{__name__}`` kept as written); None for anything computed."""
    if isinstance(node, ast.Constant) and isinstance(node.value, str):
        return node.value
    if isinstance(node, ast.JoinedStr):
        text = ""
        for part in node.values:
            if isinstance(part, ast.Constant):
                text += str(part.value)
            elif (isinstance(part, ast.FormattedValue) and isinstance(part.value, ast.Name)
                  and part.value.id == "__name__"):
                text += "{__name__}"
            else:
                return text + "\0"  # a placeholder: the literal part ends here
        return text
    return None


def dynamic_import_violations(package: Path) -> list[str]:
    """Every ``importlib.import_module``/``__import__`` call in *package* whose target is
    not allowed for its file by :data:`DYNAMIC_ALLOWED`."""
    found = []
    for path in sorted(package.rglob("*.py")):
        rel = path.relative_to(package).as_posix()
        allowed = DYNAMIC_ALLOWED.get(rel, ())
        for node in ast.walk(ast.parse(path.read_text())):
            if not isinstance(node, ast.Call):
                continue
            func = node.func
            name = (func.attr if isinstance(func, ast.Attribute)
                    else func.id if isinstance(func, ast.Name) else None)
            if name not in _IMPORTERS:
                continue
            prefix = _literal_prefix(node.args[0]) if node.args else None
            if prefix is None or not prefix.startswith(allowed) or not allowed:
                found.append(f"{rel}:{node.lineno} {ast.unparse(node)}")
    return found


def test_dynamic_imports_only_where_allowed() -> None:
    assert dynamic_import_violations(PACKAGE) == []


def test_dynamic_import_check_catches_pyscard_outside_pcsc(tmp_path: Path) -> None:
    copy = tmp_path / "pivtool"
    shutil.copytree(PACKAGE, copy, ignore=shutil.ignore_patterns("__pycache__"))
    injected = {
        "workflows/diagnose.py": 'importlib.import_module("smartcard.scard")',
        "core/atr.py": "__import__('smartcard')",
        "cli/info.py": 'import_module("smart" + "card")',
        "cli/main.py": 'importlib.import_module("pivtool.pcsc")',
    }
    for rel, line in injected.items():
        (copy / rel).write_text((copy / rel).read_text() + f"\n{line}\n")
    found = dynamic_import_violations(copy)
    assert sorted(f.split(":", 1)[0] for f in found) == sorted(injected)


def test_architecture_picture_is_fresh() -> None:
    """docs/architecture.md's import graph is the one the code has
    (regenerate with tools/gen_import_graph.py)."""
    result = subprocess.run([sys.executable, str(ROOT / "tools" / "gen_import_graph.py"),
                             "--check"], capture_output=True, text=True, timeout=60)
    assert result.returncode == 0, result.stderr
