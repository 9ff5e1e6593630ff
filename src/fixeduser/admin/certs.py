"""TLS certificates for onboarding users to a Docker daemon.

dockerd with `--tlsverify` authenticates each TCP client by its certificate and passes the
certificate's Subject CN to authorization plugins as `User`. These helpers issue a private CA,
a server certificate for the daemon and one client certificate per user, and write them in the
file layouts that `dockerd --tlscacert/--tlscert/--tlskey` and `DOCKER_CERT_PATH` expect.

Keys are EC P-256: small and fast to generate, and accepted by both dockerd and the docker CLI.
"""

from __future__ import annotations

import datetime
import ipaddress
import unicodedata
from collections.abc import Sequence
from pathlib import Path

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID
from pydantic import BaseModel, ConfigDict

from fixeduser.linux.files import write_private_file

__all__ = [
    "DEFAULT_DAYS",
    "CertError",
    "KeyPair",
    "issue_ca",
    "issue_client_cert",
    "issue_server_cert",
    "validate_user_name",
    "write_client_bundle",
    "write_server_bundle",
]

DEFAULT_DAYS = 825
"""Validity of issued certificates: the longest that common TLS clients accept for leaves."""

_MAX_CN_LENGTH = 64  # RFC 5280 upper bound for commonName
_CLOCK_SKEW = datetime.timedelta(minutes=5)


class CertError(ValueError):
    """An invalid request for a certificate (bad user name, host, validity, or CA)."""


class KeyPair(BaseModel):
    """A PEM certificate and its PEM (PKCS#8, unencrypted) private key."""

    model_config = ConfigDict(frozen=True)

    cert_pem: bytes
    key_pem: bytes

    @property
    def certificate(self) -> x509.Certificate:
        return x509.load_pem_x509_certificate(self.cert_pem)

    def private_key(self) -> ec.EllipticCurvePrivateKey:
        key = serialization.load_pem_private_key(self.key_pem, password=None)
        if not isinstance(key, ec.EllipticCurvePrivateKey):
            raise CertError(f"unsupported private key type {type(key).__name__}")
        return key


def validate_user_name(user: str) -> str:
    """Check that `user` can be a certificate CN that names a Docker user; return it.

    Rejected: empty or blank names, surrounding whitespace, '/', control or other
    non-printable characters, and names longer than 64 characters.
    """
    if not user or not user.strip():
        raise CertError("user name must not be empty")
    if user != user.strip():
        raise CertError(f"user name {user!r} must not start or end with whitespace")
    if "/" in user:
        raise CertError(f"user name {user!r} must not contain '/'")
    for ch in user:
        if unicodedata.category(ch)[0] in ("C", "Z") and ch != " ":
            raise CertError(f"user name {user!r} contains a control or non-printable character")
    if len(user) > _MAX_CN_LENGTH:
        raise CertError(f"user name {user!r} is longer than {_MAX_CN_LENGTH} characters")
    return user


def _new_key() -> ec.EllipticCurvePrivateKey:
    return ec.generate_private_key(ec.SECP256R1())


def _key_pem(key: ec.EllipticCurvePrivateKey) -> bytes:
    return key.private_bytes(
        encoding=serialization.Encoding.PEM,
        format=serialization.PrivateFormat.PKCS8,
        encryption_algorithm=serialization.NoEncryption(),
    )


def _validity(days: int) -> tuple[datetime.datetime, datetime.datetime]:
    if days < 1:
        raise CertError(f"validity must be at least 1 day, got {days}")
    now = datetime.datetime.now(datetime.UTC)
    return now - _CLOCK_SKEW, now + datetime.timedelta(days=days)


def _name(common_name: str) -> x509.Name:
    return x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, common_name)])


def _load_ca(ca: KeyPair) -> tuple[x509.Certificate, ec.EllipticCurvePrivateKey]:
    cert = ca.certificate
    key = ca.private_key()
    try:
        constraints = cert.extensions.get_extension_for_class(x509.BasicConstraints).value
    except x509.ExtensionNotFound:
        raise CertError("CA certificate has no BasicConstraints extension") from None
    if not constraints.ca:
        raise CertError("certificate is not a CA certificate")
    spki = serialization.Encoding.DER, serialization.PublicFormat.SubjectPublicKeyInfo
    if cert.public_key().public_bytes(*spki) != key.public_key().public_bytes(*spki):
        raise CertError("CA certificate and key do not match")
    return cert, key


def _leaf_builder(
    ca_cert: x509.Certificate,
    ca_key: ec.EllipticCurvePrivateKey,
    key: ec.EllipticCurvePrivateKey,
    *,
    common_name: str,
    days: int,
    eku: x509.ObjectIdentifier,
) -> x509.CertificateBuilder:
    not_before, not_after = _validity(days)
    return (
        x509.CertificateBuilder()
        .subject_name(_name(common_name))
        .issuer_name(ca_cert.subject)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(not_before)
        .not_valid_after(min(not_after, ca_cert.not_valid_after_utc))
        .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
        .add_extension(
            x509.KeyUsage(
                digital_signature=True,
                content_commitment=False,
                key_encipherment=False,
                data_encipherment=False,
                key_agreement=True,
                key_cert_sign=False,
                crl_sign=False,
                encipher_only=False,
                decipher_only=False,
            ),
            critical=True,
        )
        .add_extension(x509.ExtendedKeyUsage([eku]), critical=False)
        .add_extension(x509.SubjectKeyIdentifier.from_public_key(key.public_key()), critical=False)
        .add_extension(
            x509.AuthorityKeyIdentifier.from_issuer_public_key(ca_key.public_key()),
            critical=False,
        )
    )


def issue_ca(common_name: str = "fixeduser CA", *, days: int = DEFAULT_DAYS) -> KeyPair:
    """A new self-signed CA (path length 0: it signs only leaf certificates)."""
    if not common_name or len(common_name) > _MAX_CN_LENGTH:
        raise CertError(f"CA common name must be 1-{_MAX_CN_LENGTH} characters")
    key = _new_key()
    not_before, not_after = _validity(days)
    name = _name(common_name)
    cert = (
        x509.CertificateBuilder()
        .subject_name(name)
        .issuer_name(name)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(not_before)
        .not_valid_after(not_after)
        .add_extension(x509.BasicConstraints(ca=True, path_length=0), critical=True)
        .add_extension(
            x509.KeyUsage(
                digital_signature=True,
                content_commitment=False,
                key_encipherment=False,
                data_encipherment=False,
                key_agreement=False,
                key_cert_sign=True,
                crl_sign=True,
                encipher_only=False,
                decipher_only=False,
            ),
            critical=True,
        )
        .add_extension(x509.SubjectKeyIdentifier.from_public_key(key.public_key()), critical=False)
        .sign(key, hashes.SHA256())
    )
    return KeyPair(cert_pem=cert.public_bytes(serialization.Encoding.PEM), key_pem=_key_pem(key))


def _san(host: str) -> x509.GeneralName:
    try:
        return x509.IPAddress(ipaddress.ip_address(host.strip("[]")))
    except ValueError:
        pass
    if not host or any(ch.isspace() or ch in "/:@" for ch in host):
        raise CertError(f"invalid server host name {host!r}")
    return x509.DNSName(host)


def issue_server_cert(ca: KeyPair, *, hosts: Sequence[str], days: int = DEFAULT_DAYS) -> KeyPair:
    """A daemon certificate (serverAuth) valid for each of `hosts`.

    IP addresses become IPAddress SANs and everything else DNS SANs; the first host is
    also the Subject CN.
    """
    if isinstance(hosts, str):
        raise CertError("hosts must be a sequence of host names, not a single string")
    if not hosts:
        raise CertError("a server certificate needs at least one host")
    sans: list[x509.GeneralName] = []
    for host in hosts:
        san = _san(host)
        if san not in sans:
            sans.append(san)
    ca_cert, ca_key = _load_ca(ca)
    key = _new_key()
    cert = (
        _leaf_builder(
            ca_cert,
            ca_key,
            key,
            common_name=hosts[0][:_MAX_CN_LENGTH],
            days=days,
            eku=ExtendedKeyUsageOID.SERVER_AUTH,
        )
        .add_extension(x509.SubjectAlternativeName(sans), critical=False)
        .sign(ca_key, hashes.SHA256())
    )
    return KeyPair(cert_pem=cert.public_bytes(serialization.Encoding.PEM), key_pem=_key_pem(key))


def issue_client_cert(ca: KeyPair, user: str, *, days: int = DEFAULT_DAYS) -> KeyPair:
    """A client certificate (clientAuth) whose Subject CN is `user`.

    dockerd passes that CN to authorization plugins as the request's `User`.
    """
    validate_user_name(user)
    ca_cert, ca_key = _load_ca(ca)
    key = _new_key()
    cert = _leaf_builder(ca_cert, ca_key, key, common_name=user, days=days, eku=ExtendedKeyUsageOID.CLIENT_AUTH).sign(
        ca_key, hashes.SHA256()
    )
    return KeyPair(cert_pem=cert.public_bytes(serialization.Encoding.PEM), key_pem=_key_pem(key))


def _write_bundle(directory: Path, files: dict[str, tuple[bytes, int]]) -> None:
    directory.mkdir(parents=True, exist_ok=True)
    for name, (data, mode) in files.items():
        write_private_file(directory / name, data, mode)


def write_client_bundle(ca: KeyPair, client: KeyPair, directory: Path) -> None:
    """Write `ca.pem`, `cert.pem`, `key.pem` (0600): the layout of `DOCKER_CERT_PATH`."""
    _write_bundle(
        directory,
        {
            "ca.pem": (ca.cert_pem, 0o644),
            "cert.pem": (client.cert_pem, 0o644),
            "key.pem": (client.key_pem, 0o600),
        },
    )


def write_server_bundle(ca: KeyPair, server: KeyPair, directory: Path) -> None:
    """Write `ca.pem`, `server.pem`, `server-key.pem` (0600) for dockerd's `--tls*` flags."""
    _write_bundle(
        directory,
        {
            "ca.pem": (ca.cert_pem, 0o644),
            "server.pem": (server.cert_pem, 0o644),
            "server-key.pem": (server.key_pem, 0o600),
        },
    )
