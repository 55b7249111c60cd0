"""pivtool certs: request, selfsign, import, export, delete — CSRs checked with cryptography
and openssl, certificates checked on the virtual card afterwards."""

from __future__ import annotations

import datetime as dt
import os
import subprocess
from pathlib import Path

import pytest
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.hazmat.primitives.serialization import pkcs12
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

from pivtool.piv.constants import Slot
from tests.cli.clihelp import make_card, run, run_json, session
from tests.simcards import TDES_9B

PIN = {"PIVTOOL_PIN": "123456"}
UPN_OID = x509.ObjectIdentifier("1.3.6.1.4.1.311.20.2.3")
POLICY = "1.3.6.1.4.1.99999.1.2"

# openssl is part of the test set-up (scripts/dev installs it): missing is a failure,
# never a skip.
requires_openssl = pytest.mark.usefixtures("openssl_cli")

CA_KEY = ec.generate_private_key(ec.SECP256R1())
CA_NAME = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "Contoso Test CA")])


def _issue(public_key: object, cn: str = "alice@contoso.com",
           extra: x509.ExtensionType | None = None) -> x509.Certificate:
    """A certificate from the test CA for *public_key*."""
    now = dt.datetime.now(dt.timezone.utc)
    b = (x509.CertificateBuilder()
         .subject_name(x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, cn)]))
         .issuer_name(CA_NAME).public_key(public_key)  # type: ignore[arg-type]
         .serial_number(x509.random_serial_number())
         .not_valid_before(now - dt.timedelta(days=1))
         .not_valid_after(now + dt.timedelta(days=365)))
    if extra is not None:
        b = b.add_extension(extra, critical=False)
    return b.sign(CA_KEY, hashes.SHA256())


def _card_with_key(tmp_path: Path, slot: str = "9a", **kw: object) -> tuple[Path, object]:
    card = make_card(tmp_path, **kw)
    r = run(card, "keys", "generate", slot, "-o", str(tmp_path / f"pub-{slot}.pem"))
    assert r.exit_code == 0, r.output
    pub = serialization.load_pem_public_key((tmp_path / f"pub-{slot}.pem").read_bytes())
    return card, pub


def _write_pem(path: Path, cert: x509.Certificate) -> Path:
    path.write_bytes(cert.public_bytes(serialization.Encoding.PEM))
    return path


def _slot_cert(card: Path, slot: Slot) -> x509.Certificate | None:
    s = session(card)
    try:
        return s.get_certificate(slot)
    except Exception:
        return None
    finally:
        s.connection.close()


def _guid(card: Path) -> str | None:
    data = run_json(card, "info")
    return data["chuid"]["guid"] if data["chuid"] else None


# --- request --------------------------------------------------------------------------


def test_request_csr_signed_on_card(tmp_path: Path) -> None:
    card, pub = _card_with_key(tmp_path)
    out = tmp_path / "alice.csr"
    r = run(card, "certs", "request", "9a", "--subject", "CN=Alice Smith,O=Contoso,C=US",
            "--upn", "alice@contoso.com", "--email", "alice@mail.contoso.com",
            "--policy", POLICY, "-o", str(out), env=PIN)
    assert r.exit_code == 0, r.output
    csr = x509.load_pem_x509_csr(out.read_bytes())
    assert csr.is_signature_valid
    assert csr.public_key() == pub
    assert csr.subject.rfc4514_string() == "CN=Alice Smith,O=Contoso,C=US"
    san = csr.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
    (upn,) = san.get_values_for_type(x509.OtherName)
    assert upn.type_id == UPN_OID
    assert upn.value == b"\x0c\x11alice@contoso.com"  # DER UTF8String
    assert san.get_values_for_type(x509.RFC822Name) == ["alice@mail.contoso.com"]
    eku = csr.extensions.get_extension_for_class(x509.ExtendedKeyUsage).value
    assert list(eku) == [ExtendedKeyUsageOID.SMARTCARD_LOGON, ExtendedKeyUsageOID.CLIENT_AUTH]
    pol = csr.extensions.get_extension_for_class(x509.CertificatePolicies).value
    assert [p.policy_identifier.dotted_string for p in pol] == [POLICY]
    ku = csr.extensions.get_extension_for_class(x509.KeyUsage).value
    assert ku.digital_signature and not ku.key_encipherment


@requires_openssl
def test_request_csr_verifies_with_openssl(tmp_path: Path) -> None:
    card, _ = _card_with_key(tmp_path)
    out = tmp_path / "req.pem"
    r = run(card, "certs", "request", "9a", "--upn", "bob@contoso.com", "--eku",
            "client-auth", "-o", str(out), env=PIN)
    assert r.exit_code == 0, r.output
    p = subprocess.run(["openssl", "req", "-in", str(out), "-verify", "-noout", "-text"],
                       capture_output=True, text=True, timeout=30, check=False)
    assert p.returncode == 0, p.stderr
    assert "verify OK" in (p.stdout + p.stderr)
    assert "UPN:bob@contoso.com" in p.stdout.replace("UPN::", "UPN:")
    assert "TLS Web Client Authentication" in p.stdout
    assert "Microsoft Smartcard Login" not in p.stdout  # only the EKU asked for
    assert "CN=bob@contoso.com" in p.stdout.replace(" = ", "=")


def test_request_json_and_stdout(tmp_path: Path) -> None:
    card, _ = _card_with_key(tmp_path, "9c")  # 9c: PIN policy always
    data = run_json(card, "certs", "request", "9c", "--upn", "carol@contoso.com", env=PIN)
    assert data["schema"] == "pivtool.csr/1" and data["signature_valid"] is True
    assert data["upns"] == ["carol@contoso.com"] and data["subject"] == "CN=carol@contoso.com"
    assert data["ekus"] == ["1.3.6.1.4.1.311.20.2.2", "1.3.6.1.5.5.7.3.2"]
    r = run(card, "certs", "request", "9c", "--upn", "carol@contoso.com", env=PIN)
    assert r.exit_code == 0 and r.stdout.startswith("-----BEGIN CERTIFICATE REQUEST-----")


def test_request_pin_errors_and_retry_guard(tmp_path: Path) -> None:
    card, _ = _card_with_key(tmp_path)
    args = ("certs", "request", "9a", "--upn", "a@contoso.com")
    r = run(card, *args)
    assert r.exit_code == 2 and "PIVTOOL_PIN" in r.stderr  # no PIN, non-interactive
    bad = {"PIVTOOL_PIN": "999999"}
    assert run(card, *args, env=bad).exit_code == 3
    r = run(card, *args, env=bad)
    assert r.exit_code == 3 and "1 try left" in r.stderr
    r = run(card, *args, env=bad)  # the guard keeps the last try
    assert r.exit_code == 4 and "--allow-last-try" in r.stderr and "--force" not in r.stderr
    assert run_json(card, "info")["pin"]["tries_left"] == 1
    pin_file = tmp_path / "pin"
    pin_file.write_text("123456\n")
    r = run(card, *args, "--pin-file", str(pin_file))
    assert r.exit_code == 4  # still guarded: the right PIN is not known to be right
    r = run(card, *args, "--pin-file", str(pin_file), "--allow-last-try")
    assert r.exit_code == 0, r.output


def test_request_bad_input_before_card(tmp_path: Path) -> None:
    card, _ = _card_with_key(tmp_path)
    before = card.read_bytes()
    for extra in (["--subject", "CN"], ["--upn", "not-a-upn"], ["--eku", "bogus"],
                  ["--policy", "x.y"], []):
        r = run(card, "certs", "request", "9a", *extra, env=PIN)
        assert r.exit_code == 2, (extra, r.output)
        assert len(r.stderr.strip().splitlines()) == 1
    assert card.read_bytes() == before
    r = run(card, "certs", "request", "9d", "--upn", "a@contoso.com", env=PIN)
    assert r.exit_code == 1 and "holds no key" in r.stderr


# --- selfsign -------------------------------------------------------------------------


def test_selfsign_stores_certificate(tmp_path: Path) -> None:
    card, pub = _card_with_key(tmp_path)
    out = tmp_path / "self.pem"
    data = run_json(card, "certs", "selfsign", "9a", "--upn", "dave@contoso.com", "--days",
                    "30", "-o", str(out), env=PIN)
    assert data["install"]["written"] is True and data["install"]["key_checked"] is True
    cert = _slot_cert(card, Slot.AUTHENTICATION)
    assert cert is not None and cert.public_key() == pub
    cert.verify_directly_issued_by(cert)
    assert out.read_bytes() == cert.public_bytes(serialization.Encoding.PEM)
    assert (cert.not_valid_after_utc - cert.not_valid_before_utc).days in (30, 29)
    assert data["install"]["chuid_guid"] == _guid(card)
    # A second selfsign does not replace the certificate without --force.
    r = run(card, "certs", "selfsign", "9a", "--upn", "dave@contoso.com", env=PIN)
    assert r.exit_code == 2 and "--force" in r.stderr
    assert _slot_cert(card, Slot.AUTHENTICATION) == cert


# --- import ---------------------------------------------------------------------------


def test_import_replace_needs_force_and_saves_old(tmp_path: Path) -> None:
    card, pub = _card_with_key(tmp_path)
    first = _write_pem(tmp_path / "first.pem", _issue(pub, "first@contoso.com"))
    data = run_json(card, "certs", "import", "9a", str(first))
    assert data["schema"] == "pivtool.cert-install/1"
    assert data["written"] is True and data["key_checked"] is True
    assert data["backup"] is None
    guid1 = _guid(card)
    assert guid1 is not None and data["chuid_guid"] == guid1

    second = _write_pem(tmp_path / "second.pem", _issue(pub, "second@contoso.com"))
    r = run(card, "certs", "import", "9a", str(second))
    assert r.exit_code == 2 and "already holds a certificate" in r.stderr
    assert "first@contoso.com" in r.stderr
    assert _slot_cert(card, Slot.AUTHENTICATION).subject.rfc4514_string() == \
        "CN=first@contoso.com"
    assert _guid(card) == guid1

    r = run(card, "certs", "import", "9a", str(second), "--force")
    assert r.exit_code == 0, r.output
    assert _slot_cert(card, Slot.AUTHENTICATION).subject.rfc4514_string() == \
        "CN=second@contoso.com"
    saved = list(tmp_path.glob("second.pem.old-slot-9a-*.pem"))
    assert len(saved) == 1 and saved[0].read_bytes() == first.read_bytes()
    assert str(saved[0]) in r.stdout
    guid2 = _guid(card)
    assert guid2 not in (None, guid1)

    # The same certificate again: nothing written, CHUID untouched.
    data = run_json(card, "certs", "import", "9a", str(second))
    assert data["written"] is False and _guid(card) == guid2


def test_import_mismatch_refused_old_cert_kept(tmp_path: Path) -> None:
    card, pub = _card_with_key(tmp_path)
    good = _write_pem(tmp_path / "good.pem", _issue(pub))
    assert run(card, "certs", "import", "9a", str(good)).exit_code == 0
    before = card.read_bytes()
    other = ec.generate_private_key(ec.SECP256R1()).public_key()
    bad = _write_pem(tmp_path / "bad.pem", _issue(other, "mallory@contoso.com"))
    for extra in ([], ["--force"]):
        r = run(card, "certs", "import", "9a", str(bad), *extra)
        assert r.exit_code == 2
        assert "does not match" in r.stderr and len(r.stderr.strip().splitlines()) == 1
    assert card.read_bytes() == before
    assert _slot_cert(card, Slot.AUTHENTICATION).subject.rfc4514_string() == \
        "CN=alice@contoso.com"
    # No key in the slot: refused too.
    r = run(card, "certs", "import", "9c", str(good))
    assert r.exit_code == 2 and "holds no key" in r.stderr


def test_import_picks_the_matching_cert_from_a_bundle_der_and_pkcs12(tmp_path: Path) -> None:
    card, pub = _card_with_key(tmp_path)
    leaf = _issue(pub, "leaf@contoso.com")
    ca_self = (x509.CertificateBuilder().subject_name(CA_NAME).issuer_name(CA_NAME)
               .public_key(CA_KEY.public_key()).serial_number(1)
               .not_valid_before(dt.datetime(2024, 1, 1, tzinfo=dt.timezone.utc))
               .not_valid_after(dt.datetime(2034, 1, 1, tzinfo=dt.timezone.utc))
               .sign(CA_KEY, hashes.SHA256()))
    bundle = tmp_path / "chain.pem"
    bundle.write_bytes(ca_self.public_bytes(serialization.Encoding.PEM)
                       + leaf.public_bytes(serialization.Encoding.PEM))
    assert run(card, "certs", "import", "9a", str(bundle)).exit_code == 0
    assert _slot_cert(card, Slot.AUTHENTICATION) == leaf

    leaf2 = _issue(pub, "der@contoso.com")
    der = tmp_path / "leaf.cer"
    der.write_bytes(leaf2.public_bytes(serialization.Encoding.DER))
    assert run(card, "certs", "import", "9a", str(der), "--force").exit_code == 0
    assert _slot_cert(card, Slot.AUTHENTICATION) == leaf2

    leaf3 = _issue(pub, "pfx@contoso.com")
    pfx = tmp_path / "certs.p12"
    pfx.write_bytes(pkcs12.serialize_key_and_certificates(
        None, None, None, [ca_self, leaf3],
        serialization.BestAvailableEncryption(b"pfx-pass")))
    r = run(card, "certs", "import", "9a", str(pfx), "--force",
            env={"PIVTOOL_PFX_PASSWORD": "pfx-pass"})
    assert r.exit_code == 0, r.output
    assert _slot_cert(card, Slot.AUTHENTICATION) == leaf3


def test_import_malformed_and_wrong_password(tmp_path: Path) -> None:
    card, pub = _card_with_key(tmp_path)
    before = card.read_bytes()
    pfx = tmp_path / "c.pfx"
    pfx.write_bytes(pkcs12.serialize_key_and_certificates(
        None, None, None, [_issue(pub)], serialization.BestAvailableEncryption(b"right-one")))
    cases: dict[str, tuple[bytes, dict[str, str]]] = {
        "bad.pem": (b"-----BEGIN CERTIFICATE-----\nAAAA\n-----END CERTIFICATE-----\n", {}),
        "key.pem": (b"-----BEGIN PRIVATE KEY-----\nAAAA\n-----END PRIVATE KEY-----\n", {}),
        "bad.der": (b"\x30\x82\x01\x00garbage", {}),
        "junk.bin": (os.urandom(64), {}),
        "empty.pem": (b"", {}),
        "c.pfx": (pfx.read_bytes(), {"PIVTOOL_PFX_PASSWORD": "Guessed-Wrong-42"}),
    }
    for name, (content, env) in cases.items():
        path = tmp_path / name
        path.write_bytes(content)
        r = run(card, "certs", "import", "9a", str(path), env=env)
        assert r.exit_code == 2, (name, r.output)
        assert len(r.stderr.strip().splitlines()) == 1, (name, r.stderr)
        assert "Guessed-Wrong-42" not in r.output and "right-one" not in r.output
    assert card.read_bytes() == before


def test_import_size_limit_checked_before_card(tmp_path: Path) -> None:
    card, pub = _card_with_key(tmp_path)
    before = card.read_bytes()
    noise = x509.UnrecognizedExtension(x509.ObjectIdentifier("1.3.6.1.4.1.99999.7"),
                                       os.urandom(3200))
    big = _write_pem(tmp_path / "big.pem", _issue(pub, extra=noise))
    for extra in ([], ["--compress"]):
        r = run(card, "certs", "import", "9a", str(big), *extra)
        assert r.exit_code == 2, r.output
        assert "3063" in r.stderr and len(r.stderr.strip().splitlines()) == 1
    assert card.read_bytes() == before
    # Large but compressible: refused with a hint, accepted with --compress.
    padding = x509.UnrecognizedExtension(x509.ObjectIdentifier("1.3.6.1.4.1.99999.8"),
                                         b"A" * 3200)
    roomy = _write_pem(tmp_path / "roomy.pem", _issue(pub, extra=padding))
    r = run(card, "certs", "import", "9a", str(roomy))
    assert r.exit_code == 2 and "--compress" in r.stderr
    data = run_json(card, "certs", "import", "9a", str(roomy), "--compress")
    assert data["compressed"] is True and data["object_size"] <= 3063
    exp = run_json(card, "certs", "export", "9a")
    assert exp["compressed"] is True and exp["matches_key"] is True


def test_import_on_generic_card_needs_force(tmp_path: Path) -> None:
    card, pub = _card_with_key(tmp_path, generic=True, mgmt_key_type=TDES_9B)
    cert = _write_pem(tmp_path / "c.pem", _issue(pub))
    before = card.read_bytes()
    r = run(card, "certs", "import", "9a", str(cert))
    assert r.exit_code == 2 and "could not be checked" in r.stderr
    assert card.read_bytes() == before
    data = run_json(card, "certs", "import", "9a", str(cert), "--force")
    assert data["written"] is True and data["key_checked"] is False
    assert any("could not be checked" in n for n in data["notes"])
    assert _slot_cert(card, Slot.AUTHENTICATION) is not None
    # With a certificate in place, pivtool can sign a CSR on this card too.
    r = run(card, "certs", "request", "9a", "--upn", "g@contoso.com", env=PIN)
    assert r.exit_code == 0, r.output


def test_keep_chuid(tmp_path: Path) -> None:
    card, pub = _card_with_key(tmp_path)
    assert run(card, "objects", "chuid", "--generate").exit_code == 0
    guid = _guid(card)
    cert = _write_pem(tmp_path / "c.pem", _issue(pub))
    assert run(card, "certs", "import", "9a", str(cert), "--keep-chuid").exit_code == 0
    assert _guid(card) == guid


# --- export / delete ------------------------------------------------------------------


def test_export_formats_without_pin(tmp_path: Path) -> None:
    card, pub = _card_with_key(tmp_path)
    cert = _issue(pub)
    assert run(card, "certs", "import", "9a", str(_write_pem(tmp_path / "c.pem",
                                                                  cert))).exit_code == 0
    der = tmp_path / "out.der"
    r = run(card, "certs", "export", "9a", "--format", "der", "-o", str(der))
    assert r.exit_code == 0, r.output
    assert x509.load_der_x509_certificate(der.read_bytes()) == cert
    r = run(card, "certs", "export", "9a", "--format", "der", "-o", str(der))
    assert r.exit_code == 2 and "exists" in r.stderr
    r = run(card, "certs", "export", "9a")
    assert x509.load_pem_x509_certificate(r.stdout_bytes) == cert
    data = run_json(card, "certs", "export", "9a")
    assert data["schema"] == "pivtool.cert/1" and data["matches_key"] is True
    assert data["certificate"]["subject"] == "CN=alice@contoso.com"
    r = run(card, "certs", "export", "9c")
    assert r.exit_code == 1 and "holds no certificate" in r.stderr


def test_delete_backs_up_and_renews_chuid(tmp_path: Path) -> None:
    card, pub = _card_with_key(tmp_path)
    cert_file = _write_pem(tmp_path / "c.pem", _issue(pub))
    assert run(card, "certs", "import", "9a", str(cert_file)).exit_code == 0
    guid = _guid(card)
    r = run(card, "certs", "delete", "9a")
    assert r.exit_code == 2 and "--yes" in r.stderr
    assert _slot_cert(card, Slot.AUTHENTICATION) is not None
    data = run_json(card, "certs", "delete", "9a", "--yes", "--backup-dir",
                    str(tmp_path / "bk"))
    assert Path(data["backup"]).read_bytes() == cert_file.read_bytes()
    assert _slot_cert(card, Slot.AUTHENTICATION) is None
    assert _guid(card) not in (None, guid)
    # The key stays.
    assert run_json(card, "keys", "info", "9a")["key"] is not None
    r = run(card, "certs", "delete", "9a", "--yes")
    assert r.exit_code == 1 and "holds no certificate" in r.stderr
