"""Imports point down only (architecture.md): a test keeps the layering true."""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1] / "pivtool"

# package -> pivtool packages it must not import
FORBIDDEN: dict[str, set[str]] = {
    "core": {"piv", "certs", "workflows", "cli", "sim", "pcsc"},
    "piv": {"certs", "workflows", "cli", "sim", "pcsc"},
    "certs": {"piv", "workflows", "cli", "sim", "pcsc"},
    "workflows": {"cli", "sim"},
    # The emulator is written independently of the client side: no shared encoders.
    "sim": {"core", "piv", "certs", "workflows", "cli"},
}


def _pivtool_imports(path: Path) -> set[str]:
    tree = ast.parse(path.read_text())
    pkg_parts = path.relative_to(ROOT.parent).with_suffix("").parts
    found: set[str] = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            for alias in node.names:
                parts = alias.name.split(".")
                if parts[0] == "pivtool" and len(parts) > 1:
                    found.add(parts[1])
        elif isinstance(node, ast.ImportFrom):
            if node.level:
                base = list(pkg_parts[: len(pkg_parts) - node.level])
                mod = base + (node.module.split(".") if node.module else [])
            else:
                mod = (node.module or "").split(".")
            if mod and mod[0] == "pivtool":
                if len(mod) > 1:
                    found.add(mod[1])
                else:
                    found.update(a.name for a in node.names)
    return found


@pytest.mark.parametrize("package", sorted(FORBIDDEN))
def test_imports_point_down(package: str) -> None:
    bad = []
    for path in sorted((ROOT / package).rglob("*.py")):
        hits = _pivtool_imports(path) & FORBIDDEN[package]
        if hits:
            bad.append(f"{path.relative_to(ROOT)} imports {sorted(hits)}")
    assert not bad, "\n".join(bad)


def test_only_pcsc_imports_pyscard() -> None:
    offenders = []
    for path in ROOT.rglob("*.py"):
        if path.name == "pcsc.py" and path.parent == ROOT:
            continue
        text = path.read_text()
        if "import smartcard" in text or "from smartcard" in text:
            offenders.append(str(path.relative_to(ROOT)))
    assert not offenders


def test_only_cli_imports_click() -> None:
    offenders = []
    for path in ROOT.rglob("*.py"):
        if "cli" in path.relative_to(ROOT).parts:
            continue
        text = path.read_text()
        if "import click" in text or "from click" in text:
            offenders.append(str(path.relative_to(ROOT)))
    assert not offenders
