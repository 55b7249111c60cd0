"""docs/json.md's Microsoft Graph examples (entra bind/unbind, entra policy) are real:
their sh blocks are not run by tests/test_docs.py (they need a tenant), so this test runs
the same commands against the Graph stand-in and compares the documented JSON key by key
(``PIVTOOL_UPDATE_DOCS=1`` rewrites the examples from this run)."""

from __future__ import annotations

import json
import os
import re
from pathlib import Path

from pivtool.certs import LabCA
from tests.cli.clihelp import run
from tests.entra.conftest import UPN, app_env
from tests.entra.graph_standin import GraphStandIn
from tests.entra.test_entra_policy import _configure
from tests.test_docs import DOCS, abbreviate, blocks, shape_matches

#: The documented command (as in json.md) -> the schema its example shows.
EXAMPLES = {
    "pivtool --sim card.json --json entra bind --upn alice@contoso.com --slot 9a":
        "pivtool.entra-bind/1",
    "pivtool --sim card.json --json entra policy --slot 9a --ca-bundle lab-ca/ca.pem":
        "pivtool.entra-policy/1",
}


def test_json_md_graph_examples(standin: GraphStandIn, lab: LabCA, enrolled: Path) -> None:
    _configure(standin, lab)
    page = DOCS / "json.md"
    text = page.read_text()
    bs = blocks(page)
    found = 0
    for i in reversed(range(1, len(bs))):
        if bs[i].lang != "json" or bs[i - 1].lang != "sh":
            continue
        command = next((c for c in EXAMPLES if c in bs[i - 1].text), None)
        if command is None:
            continue
        found += 1
        args = re.sub(r"^pivtool --sim card.json ", "", command).split()
        args = [str(lab.directory / "ca.pem") if a == "lab-ca/ca.pem" else a for a in args]
        r = run(enrolled, *args, env=app_env(standin))
        assert r.exit_code == 0, r.output
        real = json.loads(r.stdout)
        assert real["schema"] == EXAMPLES[command]
        if os.environ.get("PIVTOOL_UPDATE_DOCS") == "1":
            start, end = bs[i].span
            text = text[:start] + json.dumps(abbreviate(real), indent=2,
                                             ensure_ascii=False) + "\n" + text[end:]
            continue
        assert shape_matches(json.loads(bs[i].text), real) == [], command
    if os.environ.get("PIVTOOL_UPDATE_DOCS") == "1":
        page.write_text(text)
    assert found == len(EXAMPLES)
    assert UPN in text
