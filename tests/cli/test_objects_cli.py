"""pivtool objects: chuid, ccc, read, write — against the in-process virtual card."""

from __future__ import annotations

from pathlib import Path

from pivtool.piv.constants import ObjectId
from pivtool.piv.objects import Chuid, ccc_card_id
from tests.cli.clihelp import make_card, run, run_json, session
from tests.simcards import TDES_9B


def _get(card: Path, oid: int) -> bytes:
    s = session(card)
    try:
        return s.get_data(oid)
    finally:
        s.connection.close()


def test_chuid_show_and_generate(tmp_path: Path) -> None:
    card = make_card(tmp_path)
    data = run_json(card, "objects", "chuid")
    assert data["schema"] == "pivtool.chuid/1" and data["present"] is False
    assert data["guid"] is None
    r = run(card, "objects", "chuid")
    assert r.exit_code == 0 and "No CHUID" in r.stdout

    new = run_json(card, "objects", "chuid", "--generate")
    assert new["present"] is True and len(new["guid"]) == 32
    on_card = Chuid.decode(_get(card, ObjectId.CHUID))
    assert on_card.guid_hex == new["guid"]
    shown = run_json(card, "objects", "chuid")
    assert shown == new
    assert shown["expiration"] == on_card.expiration.isoformat()
    assert shown["signed"] is False and shown["raw"] == _get(card, ObjectId.CHUID).hex()
    assert run_json(card, "info")["chuid"]["guid"] == new["guid"]
    again = run_json(card, "objects", "chuid", "--generate")
    assert again["guid"] != new["guid"]


def test_ccc_show_and_generate(tmp_path: Path) -> None:
    card = make_card(tmp_path)
    assert run_json(card, "objects", "ccc")["present"] is False
    new = run_json(card, "objects", "ccc", "--generate")
    assert new["schema"] == "pivtool.ccc/1"
    assert ccc_card_id(_get(card, ObjectId.CAPABILITY)).hex() == new["card_id"]
    assert new["card_id"].startswith("a000000116ff02")
    r = run(card, "objects", "ccc")
    assert r.exit_code == 0 and new["card_id"] in r.stdout


def test_generate_needs_the_management_key(tmp_path: Path) -> None:
    card = make_card(tmp_path)
    # Change the management key away from the default; then it must be given.
    key_file = tmp_path / "mk"
    r = run(card, "mgmt-key", "change", "--generate", "--key-out", str(key_file))
    assert r.exit_code == 0, r.output
    before = card.read_bytes()
    r = run(card, "objects", "chuid", "--generate")
    assert r.exit_code == 2 and "PIVTOOL_MGMT_KEY" in r.stderr
    r = run(card, "objects", "chuid", "--generate",
            env={"PIVTOOL_MGMT_KEY": "00" * 24})
    assert r.exit_code == 3
    assert card.read_bytes() == before
    r = run(card, "objects", "chuid", "--generate", "--mgmt-key-file", str(key_file))
    assert r.exit_code == 0, r.output
    assert key_file.read_text().strip() not in r.output


def test_write_and_read_raw(tmp_path: Path) -> None:
    card = make_card(tmp_path)
    payload = bytes(range(256)) * 4
    src = tmp_path / "blob.bin"
    src.write_bytes(payload)
    data = run_json(card, "objects", "write", "5fc10d", str(src))
    assert data["written"] is True and data["length"] == len(payload)
    assert _get(card, ObjectId.RETIRED1) == payload

    out = tmp_path / "out.bin"
    r = run(card, "objects", "read", "retired1", "-o", str(out))
    assert r.exit_code == 0, r.output
    assert out.read_bytes() == payload
    r = run(card, "objects", "read", "0x5fc10d")
    assert r.exit_code == 0 and r.stdout_bytes == payload
    js = run_json(card, "objects", "read", "5fc10d")
    assert js["schema"] == "pivtool.object/1" and js["id"] == "5fc10d"
    assert js["name"] == "retired1" and js["length"] == 1024
    assert bytes.fromhex(js["data"]) == payload


def test_oversized_object_refused_before_card(tmp_path: Path) -> None:
    card = make_card(tmp_path)
    before = card.read_bytes()
    big = tmp_path / "big.bin"
    big.write_bytes(b"\x00" * 3064)
    r = run(card, "objects", "write", "5fc10d", str(big))
    assert r.exit_code == 2 and "3063" in r.stderr
    assert len(r.stderr.strip().splitlines()) == 1
    assert card.read_bytes() == before
    exact = tmp_path / "exact.bin"
    exact.write_bytes(b"\x01" * 3063)
    assert run(card, "objects", "write", "5fc10d", str(exact)).exit_code == 0


def test_object_errors(tmp_path: Path) -> None:
    card = make_card(tmp_path)
    before = card.read_bytes()
    r = run(card, "objects", "read", "nonsense")
    assert r.exit_code == 2 and "unknown object" in r.stderr
    r = run(card, "objects", "read", "chuid")
    assert r.exit_code == 1 and "empty" in r.stderr
    # 5FC109 may hold the PIN-protected management key: never dumped.
    r = run(card, "objects", "read", "5fc109", env={"PIVTOOL_PIN": "123456"})
    assert r.exit_code == 2 and "management key" in r.stderr
    blob = tmp_path / "b"
    blob.write_bytes(b"\x80\x00")
    r = run(card, "objects", "write", "pivman", str(blob))
    assert r.exit_code == 2 and "--force" in r.stderr
    empty = tmp_path / "empty"
    empty.write_bytes(b"")
    r = run(card, "objects", "write", "5fc10d", str(empty))
    assert r.exit_code == 2
    r = run(card, "objects", "write", "1000000", str(blob))
    assert r.exit_code == 2
    assert card.read_bytes() == before


def test_generic_card_objects(tmp_path: Path) -> None:
    card = make_card(tmp_path, generic=True, mgmt_key_type=TDES_9B)
    new = run_json(card, "objects", "chuid", "--generate")
    assert run_json(card, "objects", "chuid")["guid"] == new["guid"]
