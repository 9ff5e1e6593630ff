"""`fixeduser certs`: a private CA, the daemon's TLS certificate and one client bundle per user.

dockerd with `--tlsverify` passes a client certificate's Subject CN to authorization plugins as
`User`, so onboarding a user is one command: `fixeduser certs user alice --dir D`.

Layout under `--dir D`:
    D/ca.pem, D/ca-key.pem (0600)           the CA (keep the key offline if you can)
    D/server/{ca,server,server-key}.pem     for dockerd --tlscacert/--tlscert/--tlskey
    D/users/<name>/{ca,cert,key}.pem        a DOCKER_CERT_PATH for that user
"""

from __future__ import annotations

import argparse
import shlex
import sys
from pathlib import Path

from fixeduser.admin.certs import (
    DEFAULT_DAYS,
    CertError,
    KeyPair,
    issue_ca,
    issue_client_cert,
    issue_server_cert,
    write_client_bundle,
    write_server_bundle,
)
from fixeduser.linux.files import write_private_file

CA_CERT, CA_KEY = "ca.pem", "ca-key.pem"


def register(subcommands: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    certs = subcommands.add_parser("certs", help="issue TLS certificates: a CA, the daemon's, one per user")
    kinds = certs.add_subparsers(required=True, metavar="KIND")

    def common(parser: argparse.ArgumentParser) -> None:
        parser.add_argument("--dir", type=Path, required=True, help="the CA folder (holds ca.pem and ca-key.pem)")
        parser.add_argument("--days", type=int, default=DEFAULT_DAYS, help=f"validity (default {DEFAULT_DAYS})")
        parser.add_argument("--force", action="store_true", help="replace existing files")

    ca = kinds.add_parser("ca", help="create the CA in --dir")
    common(ca)
    ca.add_argument("--cn", default="fixeduser CA", help="the CA's common name")
    ca.set_defaults(run=run_ca)

    server = kinds.add_parser("server", help="a certificate for dockerd, valid for each --host")
    common(server)
    server.add_argument("--host", action="append", required=True, help="DNS name or IP clients connect to (repeat)")
    server.add_argument("--out", type=Path, help="output folder (default: DIR/server)")
    server.set_defaults(run=run_server)

    user = kinds.add_parser("user", help="a client certificate whose CN is the user name (a DOCKER_CERT_PATH)")
    common(user)
    user.add_argument("name", help="the user name dockerd passes to the policy as User")
    user.add_argument("--out", type=Path, help="output folder (default: DIR/users/NAME)")
    user.set_defaults(run=run_user)


def _fail(message: str) -> int:
    print(f"fixeduser certs: {message}", file=sys.stderr)
    return 2


def _load_ca(directory: Path) -> KeyPair:
    try:
        return KeyPair(cert_pem=(directory / CA_CERT).read_bytes(), key_pem=(directory / CA_KEY).read_bytes())
    except FileNotFoundError as exc:
        raise CertError(
            f"no CA in {directory} ({exc.filename} missing): run `fixeduser certs ca --dir {directory}`"
        ) from None


def _refuse_existing(paths: list[Path], force: bool) -> None:
    existing = [str(p) for p in paths if p.exists()]
    if existing and not force:
        raise CertError(f"{', '.join(existing)} already exist(s); use --force to replace")


def run_ca(args: argparse.Namespace) -> int:
    directory: Path = args.dir
    try:
        _refuse_existing([directory / CA_CERT, directory / CA_KEY], args.force)
        ca = issue_ca(args.cn, days=args.days)
    except CertError as exc:
        return _fail(str(exc))
    directory.mkdir(parents=True, exist_ok=True, mode=0o700)
    write_private_file(directory / CA_KEY, ca.key_pem, 0o600)
    write_private_file(directory / CA_CERT, ca.cert_pem, 0o644)
    print(f"CA written: {directory / CA_CERT} (key {directory / CA_KEY}, mode 0600: keep it safe)")
    return 0


def run_server(args: argparse.Namespace) -> int:
    out: Path = args.out or args.dir / "server"
    try:
        _refuse_existing([out / "server.pem", out / "server-key.pem"], args.force)
        ca = _load_ca(args.dir)
        write_server_bundle(ca, issue_server_cert(ca, hosts=args.host, days=args.days), out)
    except CertError as exc:
        return _fail(str(exc))
    print(f"daemon certificate for {', '.join(args.host)} written to {out}")
    print("start dockerd with (or the same keys in /etc/docker/daemon.json):")
    print(
        "  dockerd --tlsverify "
        f"--tlscacert={shlex.quote(str(out / 'ca.pem'))} "
        f"--tlscert={shlex.quote(str(out / 'server.pem'))} "
        f"--tlskey={shlex.quote(str(out / 'server-key.pem'))} "
        f"-H tcp://{args.host[0]}:2376 -H unix:///var/run/docker.sock"
    )
    return 0


def run_user(args: argparse.Namespace) -> int:
    out: Path = args.out or args.dir / "users" / args.name
    try:
        _refuse_existing([out / "cert.pem", out / "key.pem"], args.force)
        ca = _load_ca(args.dir)
        write_client_bundle(ca, issue_client_cert(ca, args.name, days=args.days), out)
    except CertError as exc:
        return _fail(str(exc))
    print(f"certificate for user {args.name!r} written to {out} (give the user this folder; key.pem is 0600)")
    print("the user then runs:")
    print(f"  export DOCKER_HOST=tcp://HOST:2376 DOCKER_TLS_VERIFY=1 DOCKER_CERT_PATH={shlex.quote(str(out))}")
    return 0
