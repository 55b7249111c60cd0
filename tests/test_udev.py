"""udev/: the udev rule parses (udevadm, else a grammar check), the polkit rule parses and
allows exactly what it should when run as polkitd runs it, and install.sh is idempotent."""

from __future__ import annotations

import json
import re
import shutil
import subprocess
from pathlib import Path

import pytest

UDEV = Path(__file__).resolve().parent.parent / "udev"
UDEV_RULES = UDEV / "70-pivtool-smartcard.rules"
POLKIT_RULES = UDEV / "50-pivtool-pcscd.rules"
INSTALL = UDEV / "install.sh"

# udev(7): keys that only match, keys that only assign, keys that do both.
MATCH_ONLY = {"ACTION", "DEVPATH", "KERNEL", "KERNELS", "SUBSYSTEM", "SUBSYSTEMS", "DRIVER",
              "DRIVERS", "ATTRS", "CONST", "TAGS", "TEST", "PROGRAM", "RESULT"}
ASSIGN_ONLY = {"OWNER", "GROUP", "MODE", "SECLABEL", "RUN", "LABEL", "GOTO", "IMPORT",
               "OPTIONS"}
BOTH = {"NAME", "SYMLINK", "ATTR", "SYSCTL", "ENV", "TAG"}
WITH_ATTRIBUTE = {"ATTR", "ATTRS", "SYSCTL", "ENV", "CONST", "TEST", "SECLABEL", "RUN",
                  "IMPORT"}
MATCH_OPS = {"==", "!="}
ASSIGN_OPS = {"=", "+=", "-=", ":="}
PAIR = re.compile(r'(?P<key>[A-Z]+)(?:\{(?P<attr>[^{}"]+)\})?(?P<op>==|!=|\+=|-=|:=|=)'
                  r'"(?P<value>[^"]*)"')


def parse_udev_rules(text: str) -> list[list[tuple[str, str | None, str, str]]]:
    """Parse udev rules text into rules of (key, attribute, operator, value); raise
    ValueError naming the line for anything udev would reject or warn about."""
    rules = []
    lines = text.replace("\\\n", "").splitlines()
    for n, line in enumerate(lines, 1):
        line = line.strip()
        if not line or line.startswith("#"):
            continue
        pairs = []
        pos = 0
        while pos < len(line):
            m = PAIR.match(line, pos)
            if m is None:
                raise ValueError(f"line {n}: cannot parse {line[pos:]!r}")
            key, attr, op = m["key"], m["attr"], m["op"]
            if key not in MATCH_ONLY | ASSIGN_ONLY | BOTH:
                raise ValueError(f"line {n}: unknown key {key}")
            if (attr is not None) != (key in WITH_ATTRIBUTE) and key not in {"RUN", "IMPORT"}:
                raise ValueError(f"line {n}: {key} {'needs' if attr is None else 'takes no'}"
                                 " {attribute}")
            if key in MATCH_ONLY and op not in MATCH_OPS:
                raise ValueError(f"line {n}: {key} can only be matched, not assigned ({op})")
            if key in ASSIGN_ONLY and op not in ASSIGN_OPS:
                raise ValueError(f"line {n}: {key} can only be assigned, not matched ({op})")
            pairs.append((key, attr, op, m["value"]))
            pos = m.end()
            if pos < len(line):
                if not line.startswith(", ", pos):
                    raise ValueError(f"line {n}: expected ', ' after {m[0]!r}")
                pos += 2
        rules.append(pairs)
    labels = {v for r in rules for k, _a, _o, v in r if k == "LABEL"}
    gotos = {v for r in rules for k, _a, _o, v in r if k == "GOTO"}
    if gotos - labels:
        raise ValueError(f"GOTO without LABEL: {sorted(gotos - labels)}")
    return rules


def test_grammar_checker_rejects_bad_rules() -> None:
    """The fallback checker is a real check: it catches the usual mistakes."""
    for bad in ('SUBSYSTEM="usb", TAG+="uaccess"',          # assignment to a match key
                'GROUP=="pcscd"',                             # match on an assign key
                'ATTR{idVendor}==1050',                       # unquoted value
                'FOO=="bar"',                                 # unknown key
                'ENV=="x"',                                   # ENV without {name}
                'GOTO="nowhere"',                             # no such LABEL
                'ACTION=="add" TAG+="uaccess"'):              # missing comma
        with pytest.raises(ValueError):
            parse_udev_rules(bad)


def test_udev_rules_parse() -> None:
    """The rule file is valid udev syntax (udevadm verify when this udevadm has it)."""
    rules = parse_udev_rules(UDEV_RULES.read_text())
    pairs = [p for r in rules for p in r]
    # YubiKeys and any other CCID reader, by interface class 0x0B, get uaccess.
    assert ("ATTR", "idVendor", "==", "1050") in pairs
    assert ("ENV", "ID_USB_INTERFACES", "!=", "*:0b????:*") in pairs
    assert ("TAG", None, "+=", "uaccess") in pairs
    assert any(k == "GROUP" and v == "pcscd" for k, _a, _o, v in pairs)
    udevadm = shutil.which("udevadm")
    if udevadm is not None:
        probe = subprocess.run([udevadm, "verify", "--help"], capture_output=True)
        if probe.returncode == 0:
            r = subprocess.run([udevadm, "verify", "--no-summary", str(UDEV_RULES)],
                               capture_output=True, text=True)
            assert r.returncode == 0, r.stdout + r.stderr


def test_udev_rule_sorts_before_seat_late() -> None:
    """systemd's 73-seat-late.rules turns the uaccess tag into ACLs: we must come first."""
    assert UDEV_RULES.name < "73-seat-late.rules"


# Runs the rule file the way polkitd does (a polkit object with addRule and Result, where
# NOT_HANDLED is null), then asks the rules each case until one answers.
POLKIT_HARNESS = r"""
const fs = require("fs");
const vm = require("vm");
const rules = [];
const polkit = {
  Result: {NO: "no", YES: "yes", AUTH_SELF: "auth_self", AUTH_SELF_KEEP: "auth_self_keep",
           AUTH_ADMIN: "auth_admin", AUTH_ADMIN_KEEP: "auth_admin_keep", NOT_HANDLED: null},
  addRule: (rule) => rules.push(rule),
  addAdminRule: () => { throw new Error("no admin rules expected"); },
  spawn: () => { throw new Error("rules must not spawn"); },
  log: () => {},
};
vm.runInNewContext(fs.readFileSync(process.argv.at(-2), "utf8"), {polkit});
const answers = JSON.parse(process.argv.at(-1)).map((c) => {
  const action = {id: c.id, lookup: () => undefined};
  const subject = {user: "alice", local: c.local, active: c.local, session: "",
                   isInGroup: (g) => c.groups.includes(g), isInNetGroup: () => false};
  for (const rule of rules) {
    const v = rule(action, subject);
    if (v !== undefined && v !== null) return v;
  }
  return null;
});
console.log(JSON.stringify(answers));
"""

PCSC = "org.debian.pcsc-lite.access_pcsc"
CARD = "org.debian.pcsc-lite.access_card"


def _polkit_answers(path: Path, cases: list[dict[str, object]]) -> list[str | None]:
    node = shutil.which("node")
    assert node is not None, "node is needed to check the polkit rule"
    r = subprocess.run([node, "-e", POLKIT_HARNESS, "--", str(path), json.dumps(cases)],
                       capture_output=True, text=True, timeout=30)
    assert r.returncode == 0, r.stderr
    answers: list[str | None] = json.loads(r.stdout)
    return answers


def test_polkit_rule_parses_with_node(tmp_path: Path) -> None:
    node = shutil.which("node")
    assert node is not None
    js = tmp_path / "rule.js"  # node --check wants a .js name
    js.write_text(POLKIT_RULES.read_text())
    r = subprocess.run([node, "--check", str(js)], capture_output=True, text=True)
    assert r.returncode == 0, r.stderr


def test_polkit_rule_allows_the_group_also_over_ssh() -> None:
    cases: list[dict[str, object]] = [
        {"id": PCSC, "groups": ["pivtool"], "local": True},
        {"id": CARD, "groups": ["users", "pivtool"], "local": True},
        {"id": PCSC, "groups": ["pivtool"], "local": False},   # SSH: not local, not active
        {"id": CARD, "groups": ["pivtool"], "local": False},
        {"id": PCSC, "groups": ["users"], "local": False},     # not a member: not handled
        {"id": "org.freedesktop.login1.reboot", "groups": ["pivtool"], "local": True},
    ]
    assert _polkit_answers(POLKIT_RULES, cases) == ["yes", "yes", "yes", "yes", None, None]


def _tree(root: Path) -> dict[str, tuple[bytes, int]]:
    return {str(p.relative_to(root)): (p.read_bytes(), p.stat().st_mode & 0o777)
            for p in sorted(root.rglob("*")) if p.is_file()}


def _install(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(["bash", str(INSTALL), *args], capture_output=True, text=True,
                          timeout=30)


def test_install_is_a_dry_run_by_default(tmp_path: Path) -> None:
    r = _install("--root", str(tmp_path))
    assert r.returncode == 0, r.stderr
    assert "would install: " in r.stdout
    assert "run again with --apply" in r.stdout
    assert list(tmp_path.iterdir()) == []


def test_install_is_idempotent(tmp_path: Path) -> None:
    first = _install("--apply", "--root", str(tmp_path))
    assert first.returncode == 0, first.stderr
    assert "2 change(s) made" in first.stdout
    files = _tree(tmp_path)
    assert set(files) == {"etc/udev/rules.d/70-pivtool-smartcard.rules",
                          "etc/polkit-1/rules.d/50-pivtool-pcscd.rules"}
    assert all(mode == 0o644 for _data, mode in files.values())
    assert files["etc/udev/rules.d/70-pivtool-smartcard.rules"][0] == UDEV_RULES.read_bytes()
    assert files["etc/polkit-1/rules.d/50-pivtool-pcscd.rules"][0] == POLKIT_RULES.read_bytes()

    second = _install("--apply", "--root", str(tmp_path))
    assert second.returncode == 0, second.stderr
    assert "no changes" in second.stdout
    assert "installed" not in second.stdout and "updated" not in second.stdout
    assert _tree(tmp_path) == files


def test_install_repairs_mode_and_content(tmp_path: Path) -> None:
    assert _install("--apply", "--root", str(tmp_path)).returncode == 0
    udev = tmp_path / "etc/udev/rules.d/70-pivtool-smartcard.rules"
    polkit = tmp_path / "etc/polkit-1/rules.d/50-pivtool-pcscd.rules"
    udev.chmod(0o600)
    polkit.write_text("// edited\n")
    r = _install("--apply", "--root", str(tmp_path))
    assert "fixed mode 600 -> 0644" in r.stdout and "updated: " in r.stdout
    assert udev.stat().st_mode & 0o777 == 0o644
    assert polkit.read_bytes() == POLKIT_RULES.read_bytes()
    assert "no changes" in _install("--apply", "--root", str(tmp_path)).stdout


def test_install_site_group(tmp_path: Path) -> None:
    (tmp_path / "etc").mkdir()
    (tmp_path / "etc/group").write_text("smartcard:x:990:alice\n")
    r = _install("--apply", "--root", str(tmp_path), "--group", "smartcard")
    assert r.returncode == 0, r.stderr
    assert "does not exist" not in r.stdout
    installed = tmp_path / "etc/polkit-1/rules.d/50-pivtool-pcscd.rules"
    assert 'var PIVTOOL_GROUP = "smartcard";' in installed.read_text()
    cases: list[dict[str, object]] = [
        {"id": PCSC, "groups": ["smartcard"], "local": False},
        {"id": PCSC, "groups": ["pivtool"], "local": False},
    ]
    assert _polkit_answers(installed, cases) == ["yes", None]
    # Changing the group back is a change; the dry run shows it and touches nothing.
    before = installed.read_bytes()
    r = _install("--root", str(tmp_path))
    assert "would update: " in r.stdout and '+    var PIVTOOL_GROUP = "pivtool";' in r.stdout
    assert installed.read_bytes() == before


@pytest.mark.parametrize("group", ['a"b', "x;rm", "", "-x", "a b"])
def test_install_refuses_bad_group_names(tmp_path: Path, group: str) -> None:
    r = _install("--apply", "--root", str(tmp_path), "--group", group)
    assert r.returncode == 2
    assert list(tmp_path.iterdir()) == []


def test_install_rejects_unknown_arguments() -> None:
    r = _install("--bogus")
    assert r.returncode == 2 and "unknown argument" in r.stderr

