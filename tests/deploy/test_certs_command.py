"""`fixeduser certs`: one command per step of onboarding, files in the layouts dockerd and the CLI read."""

from __future__ import annotations

import shutil
import stat
import subprocess
from pathlib import Path

import pytest
from cryptography import x509
from cryptography.x509.oid import NameOID

from fixeduser.cli import main


def mode(path: Path) -> int:
    return stat.S_IMODE(path.stat().st_mode)


def cn(path: Path) -> str:
    cert = x509.load_pem_x509_certificate(path.read_bytes())
    return str(cert.subject.get_attributes_for_oid(NameOID.COMMON_NAME)[0].value)


def test_ca_server_user_round(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    """ca, server and user write a CA, a dockerd bundle and a DOCKER_CERT_PATH whose cert CN is the user."""
    d = tmp_path / "pki"
    assert main(["certs", "ca", "--dir", str(d)]) == 0
    assert mode(d / "ca-key.pem") == 0o600 and mode(d / "ca.pem") == 0o644
    assert main(["certs", "server", "--dir", str(d), "--host", "docker.example.org", "--host", "127.0.0.1"]) == 0
    out = capsys.readouterr().out
    assert "--tlsverify" in out and str(d / "server" / "server.pem") in out
    assert {p.name for p in (d / "server").iterdir()} == {"ca.pem", "server.pem", "server-key.pem"}
    assert mode(d / "server" / "server-key.pem") == 0o600
    assert main(["certs", "user", "alice", "--dir", str(d)]) == 0
    bundle = d / "users" / "alice"
    assert {p.name for p in bundle.iterdir()} == {"ca.pem", "cert.pem", "key.pem"}
    assert mode(bundle / "key.pem") == 0o600
    assert cn(bundle / "cert.pem") == "alice"
    assert f"DOCKER_CERT_PATH={bundle}" in capsys.readouterr().out
    server = x509.load_pem_x509_certificate((d / "server" / "server.pem").read_bytes())
    sans = server.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
    assert sans.get_values_for_type(x509.DNSName) == ["docker.example.org"]
    if shutil.which("openssl"):
        for leaf in (d / "server" / "server.pem", bundle / "cert.pem"):
            verify = ["openssl", "verify", "-CAfile", str(d / "ca.pem"), str(leaf)]
            assert subprocess.run(verify, capture_output=True, check=False).returncode == 0


def test_existing_files_are_kept_without_force(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    """A second `certs ca` or `certs user` refuses to overwrite; --force replaces."""
    d = tmp_path / "pki"
    assert main(["certs", "ca", "--dir", str(d)]) == 0
    key = (d / "ca-key.pem").read_bytes()
    assert main(["certs", "ca", "--dir", str(d)]) == 2
    assert "already exist" in capsys.readouterr().err
    assert (d / "ca-key.pem").read_bytes() == key
    assert main(["certs", "user", "bob", "--dir", str(d)]) == 0
    assert main(["certs", "user", "bob", "--dir", str(d)]) == 2
    assert main(["certs", "user", "bob", "--dir", str(d), "--force"]) == 0


def test_user_without_ca_and_bad_names_fail_clearly(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    """No CA yet, or a user name that cannot be a CN: exit 2 with a message, nothing written."""
    d = tmp_path / "pki"
    assert main(["certs", "user", "alice", "--dir", str(d)]) == 2
    assert "run `fixeduser certs ca" in capsys.readouterr().err
    assert main(["certs", "ca", "--dir", str(d)]) == 0
    assert main(["certs", "user", "a/b", "--dir", str(d)]) == 2
    assert "must not contain '/'" in capsys.readouterr().err
    assert not (d / "users").exists() or not any((d / "users").iterdir())
