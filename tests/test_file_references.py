"""Every file or module the docs and the code's comments and docstrings point at exists.

Checked: Markdown prose (README.md, docs/, udev/; fenced examples are skipped: they name the
files they create) and the comments and docstrings of pivtool/, tests/, tools/ and bench/.
A path like ``pivtool/sim/card.py`` or ``sim/card.py`` must exist from the repository, from
``pivtool/``, ``tests/`` or ``docs/``, beside the file that names it, or as the end of a
path in the code; a bare ``name.md``
in docs/ or the root; a dotted ``pivtool.x.y`` must import, or name something its module
defines.
"""

from __future__ import annotations

import ast
import importlib
import importlib.util
import io
import re
import tokenize
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
BASES = [ROOT, ROOT / "pivtool", ROOT / "tests", ROOT / "docs"]
EXT = r"(?:py|md|toml|sh|csv|json|ya?ml|rules|js|txt|cfg|conf|ini)"
#: dir/…/name.ext, not part of a longer or absolute path.
PATH = re.compile(rf"(?<![\w./~$-])((?:[\w-]+/)+[\w.-]+\.{EXT})(?![\w/])")
BARE_MD = re.compile(r"(?<![\w./~$-])([\w-]+\.md)(?![\w/])")
#: pivtool.a.b, but not a JSON schema id (pivtool.info/1, pivtool.batch-state/1).
MODULE = re.compile(r"(?<![\w.])(pivtool(?:\.[A-Za-z_]\w*)+)(?![\w/-])")
URL = re.compile(r"\w+://\S+")
#: Names that stand for a file the reader makes, not one in the repository.
EXAMPLES = {"ca/ca.json", "ca/ca.key", "ca/ca.pem", "out/mgmt.key"}
#: Files in other projects' repositories that comments cite as the source of a fact.
EXTERNAL = {"tests/device/test_piv.py"}  # yubikey-manager's PIV device tests
#: Installed packages whose source comments cite (``ykman/_cli/piv.py``).
INSTALLED = ("ykman", "yubikit")
#: Last components that make a dotted name a file name (``pivtool.fish``), not a module.
FILE_SUFFIXES = {"fish", "bash", "zsh", "json", "toml", "csv", "md", "py", "txt", "pem"}


def _prose(md: str) -> str:
    """Markdown without fenced blocks."""
    return re.sub(r"^```.*?^```", "", md, flags=re.S | re.M)


def _comments_and_docstrings(source: str) -> str:
    parts = [tok.string for tok in tokenize.generate_tokens(io.StringIO(source).readline)
             if tok.type == tokenize.COMMENT]
    for node in ast.walk(ast.parse(source)):
        if isinstance(node, (ast.Module, ast.ClassDef, ast.FunctionDef,
                             ast.AsyncFunctionDef)):
            doc = ast.get_docstring(node, clean=False)
            if doc:
                parts.append(doc)
    return "\n".join(parts)


def _texts() -> list[tuple[Path, str]]:
    out = [(p, _prose(p.read_text())) for p in
           [ROOT / "README.md", *sorted((ROOT / "docs").glob("*.md")),
            *sorted((ROOT / "udev").glob("*.md"))] if p.exists()]
    for top in ("pivtool", "tests", "tools", "bench"):
        for p in sorted((ROOT / top).rglob("*.py")):
            if p != Path(__file__).resolve():  # this file's docstring shows the patterns
                out.append((p, _comments_and_docstrings(p.read_text())))
    return out


def _path_exists(ref: str, where: Path) -> bool:
    if ref in EXAMPLES or ref in EXTERNAL:
        return True
    top = ref.split("/", 1)[0]
    if top in INSTALLED:
        spec = importlib.util.find_spec(top)
        return bool(spec and spec.origin and (Path(spec.origin).parent.parent / ref).exists())
    if any((base / ref).exists() for base in [*BASES, where.parent]):
        return True
    # A path written relative to the package the prose is about ("`workflows` uses
    # `batch/dbstate.py`") resolves when some file in the code ends with it.
    return any(str(f).endswith("/" + ref) for f in _code_files())


def _code_files() -> list[Path]:
    if not _CODE_FILES:
        for top in ("pivtool", "tests", "tools", "bench"):
            _CODE_FILES.extend((ROOT / top).rglob("*"))
    return _CODE_FILES


_CODE_FILES: list[Path] = []


def _module_exists(dotted: str) -> bool:
    parts = dotted.split(".")
    if parts[-1] in FILE_SUFFIXES:
        return True
    for n in range(len(parts), 0, -1):
        name = ".".join(parts[:n])
        try:
            obj: object = importlib.import_module(name)
        except ImportError:
            continue
        for attr in parts[n:]:
            if not hasattr(obj, attr):
                return False
            obj = getattr(obj, attr)
        return True
    return False


def find_broken(texts: list[tuple[Path, str]]) -> list[str]:
    """``file: reference`` for every reference in *texts* that does not resolve."""
    broken = []
    for path, text in texts:
        text = URL.sub("", text)
        rel = path.relative_to(ROOT)
        for ref in sorted(set(PATH.findall(text))):
            if not _path_exists(ref, path):
                broken.append(f"{rel}: {ref}")
        for ref in sorted(set(BARE_MD.findall(text))):
            if not any((d / ref).exists() for d in (ROOT, ROOT / "docs", path.parent)):
                broken.append(f"{rel}: {ref}")
        for ref in sorted(set(MODULE.findall(text))):
            if not _module_exists(ref):
                broken.append(f"{rel}: {ref}")
    return broken


def test_every_reference_resolves() -> None:
    broken = find_broken(_texts())
    assert not broken, "references to files or modules that do not exist:\n" + "\n".join(broken)


def test_the_check_finds_a_broken_reference(tmp_path: Path) -> None:
    fake = ROOT / "tests" / "fake.py"  # never written: only its name is used
    text = ("see tests/test_layers.py and architecture-old.md; pivtool.core.protocol does "
            "the chaining; pivtool.core.tlv.parse_tlvs and pivtool/sim/card.py are real; "
            "schema pivtool.info/1 is no module")
    assert find_broken([(fake, text)]) == ["tests/fake.py: tests/test_layers.py",
                                           "tests/fake.py: architecture-old.md",
                                           "tests/fake.py: pivtool.core.protocol"]
