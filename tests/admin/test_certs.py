"""Tests for fixeduser.admin.certs: CA, server and client certificates and their bundles."""

from __future__ import annotations

import datetime
import ipaddress
import ssl
import stat
from pathlib import Path

import pytest
from cryptography import x509
from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID
from cryptography.x509.verification import PolicyBuilder, Store, VerificationError

from fixeduser.admin.certs import (
    CertError,
    KeyPair,
    issue_ca,
    issue_client_cert,
    issue_server_cert,
    write_client_bundle,
    write_server_bundle,
)


@pytest.fixture(scope="module")
def ca() -> KeyPair:
    return issue_ca()


def _cert(pair: KeyPair) -> x509.Certificate:
    return x509.load_pem_x509_certificate(pair.cert_pem)


def _cn(cert: x509.Certificate) -> str:
    (attr,) = cert.subject.get_attributes_for_oid(NameOID.COMMON_NAME)
    value = attr.value
    assert isinstance(value, str)
    return value


def _verify_signed_by(cert: x509.Certificate, issuer: x509.Certificate) -> None:
    key = issuer.public_key()
    assert isinstance(key, ec.EllipticCurvePublicKey)
    assert cert.signature_hash_algorithm is not None
    key.verify(cert.signature, cert.tbs_certificate_bytes, ec.ECDSA(cert.signature_hash_algorithm))


def _ekus(cert: x509.Certificate) -> list[x509.ObjectIdentifier]:
    return list(cert.extensions.get_extension_for_class(x509.ExtendedKeyUsage).value)


def test_ca_is_self_signed_ca(ca: KeyPair) -> None:
    cert = _cert(ca)
    assert _cn(cert) == "fixeduser CA"
    assert cert.subject == cert.issuer
    _verify_signed_by(cert, cert)
    bc = cert.extensions.get_extension_for_class(x509.BasicConstraints)
    assert bc.critical and bc.value.ca
    ku = cert.extensions.get_extension_for_class(x509.KeyUsage).value
    assert ku.key_cert_sign and ku.crl_sign
    key = ca.private_key()
    assert isinstance(key.curve, ec.SECP256R1)
    assert b"ENCRYPTED" not in ca.key_pem


def test_ca_validity_days() -> None:
    cert = _cert(issue_ca("Other CA", days=10))
    assert _cn(cert) == "Other CA"
    span = cert.not_valid_after_utc - datetime.datetime.now(datetime.UTC)
    assert datetime.timedelta(days=9, hours=23) < span <= datetime.timedelta(days=10)
    with pytest.raises(CertError):
        issue_ca(days=0)


def test_keypair_is_frozen(ca: KeyPair) -> None:
    with pytest.raises(ValueError, match="frozen"):
        ca.cert_pem = b"x"  # type: ignore[misc]


def test_client_cert(ca: KeyPair) -> None:
    client = issue_client_cert(ca, "alice")
    cert = _cert(client)
    assert _cn(cert) == "alice"
    assert cert.issuer == _cert(ca).subject
    _verify_signed_by(cert, _cert(ca))
    assert _ekus(cert) == [ExtendedKeyUsageOID.CLIENT_AUTH]
    assert not cert.extensions.get_extension_for_class(x509.BasicConstraints).value.ca
    # the signature does not verify against an unrelated CA
    with pytest.raises(InvalidSignature):
        _verify_signed_by(cert, _cert(issue_ca()))
    # the certificate's key is the returned key
    assert cert.public_key() == client.private_key().public_key()
    assert cert.not_valid_after_utc <= _cert(ca).not_valid_after_utc


def _handshake(server_ctx: ssl.SSLContext, client_ctx: ssl.SSLContext, host: str) -> ssl.SSLObject:
    """Run a TLS handshake in memory; return the server side."""
    s_in, s_out, c_in, c_out = (ssl.MemoryBIO() for _ in range(4))
    server = server_ctx.wrap_bio(s_in, s_out, server_side=True)
    client = client_ctx.wrap_bio(c_in, c_out, server_hostname=host)
    done = {"server": False, "client": False}
    for _ in range(20):
        for name, side in (("client", client), ("server", server)):
            if not done[name]:
                try:
                    side.do_handshake()
                    done[name] = True
                except ssl.SSLWantReadError:
                    pass
        s_in.write(c_out.read())
        c_in.write(s_out.read())
        if all(done.values()):
            return server
    raise AssertionError("handshake did not finish")


def test_tls_handshake_with_bundles(ca: KeyPair, tmp_path: Path) -> None:
    """The bundles work for mutual TLS; the server sees the user as the client's CN."""
    write_server_bundle(ca, issue_server_cert(ca, hosts=["127.0.0.1"]), tmp_path / "server")
    write_client_bundle(ca, issue_client_cert(ca, "bob"), tmp_path / "bob")
    server_ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    server_ctx.verify_mode = ssl.CERT_REQUIRED
    server_ctx.load_verify_locations(tmp_path / "server" / "ca.pem")
    server_ctx.load_cert_chain(tmp_path / "server" / "server.pem", tmp_path / "server" / "server-key.pem")
    client_ctx = ssl.create_default_context(cafile=str(tmp_path / "bob" / "ca.pem"))
    client_ctx.load_cert_chain(tmp_path / "bob" / "cert.pem", tmp_path / "bob" / "key.pem")
    server = _handshake(server_ctx, client_ctx, "127.0.0.1")
    der = server.getpeercert(binary_form=True)
    assert der is not None
    assert _cn(x509.load_der_x509_certificate(der)) == "bob"
    # a client certificate from another CA is refused
    other = issue_ca()
    write_client_bundle(other, issue_client_cert(other, "bob"), tmp_path / "mallory")
    bad_ctx = ssl.create_default_context(cafile=str(tmp_path / "bob" / "ca.pem"))
    bad_ctx.load_cert_chain(tmp_path / "mallory" / "cert.pem", tmp_path / "mallory" / "key.pem")
    with pytest.raises(ssl.SSLError):
        _handshake(server_ctx, bad_ctx, "127.0.0.1")


def test_server_cert_sans_and_chain(ca: KeyPair) -> None:
    server = issue_server_cert(ca, hosts=["127.0.0.1", "localhost", "::1", "docker.example"])
    cert = _cert(server)
    _verify_signed_by(cert, _cert(ca))
    assert _ekus(cert) == [ExtendedKeyUsageOID.SERVER_AUTH]
    san = cert.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
    assert san.get_values_for_type(x509.IPAddress) == [
        ipaddress.ip_address("127.0.0.1"),
        ipaddress.ip_address("::1"),
    ]
    assert san.get_values_for_type(x509.DNSName) == ["localhost", "docker.example"]
    store = Store([_cert(ca)])
    for subject in (
        x509.IPAddress(ipaddress.ip_address("127.0.0.1")),
        x509.DNSName("docker.example"),
    ):
        PolicyBuilder().store(store).build_server_verifier(subject).verify(cert, [])
    with pytest.raises(VerificationError):
        PolicyBuilder().store(store).build_server_verifier(x509.DNSName("other.example")).verify(cert, [])


def test_server_cert_rejects_bad_hosts(ca: KeyPair) -> None:
    with pytest.raises(CertError):
        issue_server_cert(ca, hosts=[])
    with pytest.raises(CertError):
        issue_server_cert(ca, hosts="localhost")
    with pytest.raises(CertError):
        issue_server_cert(ca, hosts=["bad host"])


@pytest.mark.parametrize(
    "user",
    ["", " ", "a/b", "alice\n", "al\x00ice", "al\tice", "\x7f", " alice", "x" * 65, "a\u200bb"],
)
def test_client_cert_rejects_bad_user_names(ca: KeyPair, user: str) -> None:
    with pytest.raises(CertError):
        issue_client_cert(ca, user)


@pytest.mark.parametrize("user", ["alice", "bob.smith", "svc-ci_01", "Jörg Müller", "a@b.c"])
def test_client_cert_accepts_user_names(ca: KeyPair, user: str) -> None:
    assert _cn(_cert(issue_client_cert(ca, user))) == user


def test_non_ca_cannot_sign(ca: KeyPair) -> None:
    leaf = issue_client_cert(ca, "alice")
    with pytest.raises(CertError, match="not a CA"):
        issue_client_cert(leaf, "mallory")
    mismatched = KeyPair(cert_pem=ca.cert_pem, key_pem=issue_ca().key_pem)
    with pytest.raises(CertError, match="do not match"):
        issue_client_cert(mismatched, "mallory")


def _mode(path: Path) -> int:
    return stat.S_IMODE(path.stat().st_mode)


def test_write_client_bundle(ca: KeyPair, tmp_path: Path) -> None:
    client = issue_client_cert(ca, "carol")
    directory = tmp_path / "certs" / "carol"
    write_client_bundle(ca, client, directory)
    assert sorted(p.name for p in directory.iterdir()) == ["ca.pem", "cert.pem", "key.pem"]
    assert (directory / "ca.pem").read_bytes() == ca.cert_pem
    assert (directory / "cert.pem").read_bytes() == client.cert_pem
    assert (directory / "key.pem").read_bytes() == client.key_pem
    assert _mode(directory / "key.pem") == 0o600
    assert _mode(directory / "cert.pem") == 0o644
    # rewriting keeps the modes (even if a previous key file was world-readable)
    (directory / "key.pem").chmod(0o644)
    write_client_bundle(ca, client, directory)
    assert _mode(directory / "key.pem") == 0o600
    # the files load as a TLS client identity
    ctx = ssl.create_default_context(ssl.Purpose.SERVER_AUTH, cafile=str(directory / "ca.pem"))
    ctx.load_cert_chain(directory / "cert.pem", directory / "key.pem")


def test_write_server_bundle(ca: KeyPair, tmp_path: Path) -> None:
    server = issue_server_cert(ca, hosts=["127.0.0.1"])
    write_server_bundle(ca, server, tmp_path)
    names = sorted(p.name for p in tmp_path.iterdir())
    assert names == ["ca.pem", "server-key.pem", "server.pem"]
    assert _mode(tmp_path / "server-key.pem") == 0o600
    ctx = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH, cafile=str(tmp_path / "ca.pem"))
    ctx.load_cert_chain(tmp_path / "server.pem", tmp_path / "server-key.pem")


def test_sha256_signatures(ca: KeyPair) -> None:
    for pair in (ca, issue_client_cert(ca, "alice"), issue_server_cert(ca, hosts=["localhost"])):
        assert isinstance(_cert(pair).signature_hash_algorithm, hashes.SHA256)
