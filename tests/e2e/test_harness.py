"""Tests for the e2e harness: helpers, and one real private dockerd with TLS users."""

from __future__ import annotations

import os
import socket
import ssl
import stat
import subprocess
import tarfile
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from fixeduser.sandbox import (
    BUSYBOX_APPLETS,
    BUSYBOX_IMAGE,
    DockerCommandError,
    Dockerd,
    DockerdError,
    Engine,
    TLSUsers,
    available_engines,
    build_busybox_rootfs,
    clean_env,
    dockerd_available,
    find_static_busybox,
    free_port,
    make_private_dir,
    mounts_under,
    unmount_all_under,
)

needs_root = pytest.mark.skipif(os.geteuid() != 0, reason="needs root")
needs_dockerd = pytest.mark.skipif(
    not dockerd_available(), reason="needs root, dockerd, containerd, runc and the docker CLI"
)


# --------------------------------------------------------------------------- helpers


def test_free_port_is_bindable() -> None:
    port = free_port()
    assert 1024 <= port <= 65535
    with socket.socket() as s:
        s.bind(("127.0.0.1", port))


def test_clean_env_drops_client_variables(monkeypatch: pytest.MonkeyPatch) -> None:
    for name in ("DOCKER_HOST", "DOCKER_CONTEXT", "REQUESTS_CA_BUNDLE", "CURL_CA_BUNDLE"):
        monkeypatch.setenv(name, "x")
    env = clean_env({"DOCKER_CONFIG": "/nowhere"})
    assert not {"DOCKER_HOST", "DOCKER_CONTEXT", "REQUESTS_CA_BUNDLE", "CURL_CA_BUNDLE"} & set(env)
    assert env["DOCKER_CONFIG"] == "/nowhere"
    assert "/usr/sbin" in env["PATH"].split(":")


def test_available_engines_reads_unpacked_engines_by_their_version(tmp_path: Path) -> None:
    """An engine unpacked under the engines folder is named by its dockerd's major.minor and sorted by release."""
    root = tmp_path / "future" / "root"
    for binary, text in (("usr/sbin/dockerd", "Docker version 99.10.1+dfsg1, build abc"), ("usr/bin/docker", "")):
        (root / binary).parent.mkdir(parents=True, exist_ok=True)
        (root / binary).write_text(f"#!/bin/sh\necho '{text}'\n")
        (root / binary).chmod(0o755)
    (tmp_path / "empty" / "root").mkdir(parents=True)  # a suite whose unpacking failed: not an engine
    engines = available_engines(tmp_path)
    future = engines[-1]
    assert (future.name, future.version, future.release) == ("99.10", "99.10.1+dfsg1", (99, 10))
    assert future.dockerd == root / "usr/sbin/dockerd" and future.compose is None
    assert future.search_path.split(":")[:2] == [str(root / "usr/sbin"), str(root / "usr/bin")]
    assert [e.release for e in engines] == sorted(e.release for e in engines)


def test_make_private_dir(tmp_path: Path) -> None:
    base = tmp_path / "base"
    new = make_private_dir(base)
    assert new.parent == base.resolve()
    assert stat.S_IMODE(new.stat().st_mode) == 0o711
    for ancestor in new.parents:
        if ancestor == Path("/tmp").resolve():
            break
        assert ancestor.stat().st_mode & 0o001, ancestor
    assert make_private_dir(base) != new


def test_build_busybox_rootfs(tmp_path: Path) -> None:
    try:
        find_static_busybox()
    except Exception as e:
        pytest.skip(str(e))
    tar_path = build_busybox_rootfs(tmp_path)
    with tarfile.open(tar_path) as tar:
        members = {m.name: m for m in tar.getmembers()}
    assert members["bin/busybox"].isfile()
    assert members["bin/busybox"].mode & 0o111
    for applet in BUSYBOX_APPLETS:
        assert members[f"bin/{applet}"].issym()
        assert members[f"bin/{applet}"].linkname == "busybox"
    assert members["tmp"].isdir() and members["tmp"].mode == 0o1777
    assert members["etc"].isdir() and members["data"].isdir()
    assert all(m.uid == 0 and m.gid == 0 for m in members.values())
    shell = tmp_path / "rootfs" / "bin" / "sh"
    out = subprocess.run([shell, "-c", "echo hi"], capture_output=True, text=True, check=True)
    assert out.stdout == "hi\n"


def test_tls_users_layout(tmp_path: Path) -> None:
    users = TLSUsers(tmp_path, users=["alice", "bob"])
    assert users.users == ["alice", "bob"]
    for user in ("alice", "bob"):
        bundle = users.bundle(user)
        assert {p.name for p in bundle.iterdir()} == {"ca.pem", "cert.pem", "key.pem"}
        assert stat.S_IMODE((bundle / "key.pem").stat().st_mode) == 0o600
    assert {p.name for p in users.server_dir.iterdir()} == {
        "ca.pem",
        "server.pem",
        "server-key.pem",
    }
    assert users.add_user("dave") == users.bundle("dave")
    with pytest.raises(KeyError):
        users.bundle("mallory")


@needs_root
def test_mounts_under_and_unmount(tmp_path: Path) -> None:
    """Nested mounts (with a space in the path) are listed deepest first and all unmounted."""
    target = tmp_path / "with space" / "mnt"
    nested = target / "inner"
    target.mkdir(parents=True)
    try:
        subprocess.run(["mount", "-t", "tmpfs", "none", str(target)], check=True)
        nested.mkdir()
        subprocess.run(["mount", "-t", "tmpfs", "none", str(nested)], check=True)
        assert mounts_under(tmp_path) == [str(nested.resolve()), str(target.resolve())]
        assert mounts_under(nested) == [str(nested.resolve())]
        assert unmount_all_under([tmp_path]) == []
        assert mounts_under(tmp_path) == []
    finally:
        unmount_all_under([tmp_path])


# --------------------------------------------------------------------------- real daemon


@pytest.fixture(scope="module")
def daemon(tmp_path_factory: pytest.TempPathFactory, engine: Engine) -> Iterator[Dockerd]:
    base = make_private_dir(tmp_path_factory.mktemp("harness"))
    tls = TLSUsers(base / "tls")
    dockerd = Dockerd(base / "daemon", authz_plugin=None, tls=tls, engine=engine)
    try:
        dockerd.start(timeout=30)
        dockerd.import_busybox()
        yield dockerd
    finally:
        dockerd.stop()


@pytest.mark.e2e
@needs_dockerd
def test_unix_socket_caller(daemon: Dockerd) -> None:
    assert daemon.ping() == (200, b"OK")
    assert daemon.server_api_version
    assert daemon.start_seconds is not None and daemon.start_seconds < 30
    out = daemon.docker("version", "--format", "{{.Server.Version}}", check=True)
    assert out.stdout.strip()
    images = daemon.docker("images", "--format", "{{.Repository}}:{{.Tag}}", check=True)
    assert BUSYBOX_IMAGE in images.stdout.split()


@pytest.mark.e2e
@needs_dockerd
def test_tls_user_runs_container(daemon: Dockerd) -> None:
    result = daemon.docker("run", "--rm", "--network", "none", BUSYBOX_IMAGE, "id", user="alice", check=True)
    assert result.stdout.startswith("uid=0")
    with pytest.raises(DockerCommandError, match="over TLS"):
        daemon.docker("run", "--rm", "--network", "none", BUSYBOX_IMAGE, "false", user="bob", check=True)


@pytest.mark.e2e
@needs_dockerd
def test_client_without_certificate_is_refused(daemon: Dockerd, tmp_path: Path) -> None:
    assert daemon.tls is not None
    base = [str(daemon.engine.docker), "-H", daemon.tcp_host]
    env = daemon.cli_env()

    def run(*args: str) -> subprocess.CompletedProcess[str]:
        return subprocess.run(
            [*base[:1], *args, *base[1:], "version", "--format", "{{.Server.Version}}"],
            env=env,
            capture_output=True,
            text=True,
            timeout=30,
            stdin=subprocess.DEVNULL,
            check=False,
        )

    plain = run()
    assert plain.returncode != 0
    no_client_cert = run("--tls", "--tlscacert", str(daemon.tls.ca_pem))
    assert no_client_cert.returncode != 0
    assert not no_client_cert.stdout.strip()

    # a certificate from another CA is refused as well
    stranger = TLSUsers(tmp_path / "other-ca", users=["alice"])
    bundle = stranger.bundle("alice")
    foreign = run(
        "--tls",
        "--tlscacert", str(daemon.tls.ca_pem),
        "--tlscert", str(bundle / "cert.pem"),
        "--tlskey", str(bundle / "key.pem"),
    )  # fmt: skip
    assert foreign.returncode != 0

    # and a raw TLS client without a certificate gets no HTTP answer
    assert daemon.port is not None
    ctx = ssl.create_default_context(cafile=str(daemon.tls.ca_pem))
    with (
        pytest.raises((ssl.SSLError, ConnectionError)),
        socket.create_connection(("127.0.0.1", daemon.port), timeout=10) as raw,
        ctx.wrap_socket(raw, server_hostname="127.0.0.1") as tls_sock,
    ):
        tls_sock.sendall(b"GET /_ping HTTP/1.1\r\nHost: docker\r\n\r\n")
        if not tls_sock.recv(1024):
            raise ConnectionError("closed without an answer")


@pytest.mark.e2e
@needs_dockerd
def test_stop_kills_daemon_and_leaves_no_mounts(daemon: Dockerd) -> None:
    """Runs last in this module: stops the shared daemon with a container still running."""
    started = daemon.docker("run", "-d", "--network", "none", BUSYBOX_IMAGE, "sleep", "1000", user="carol", check=True)
    assert started.stdout.strip()
    assert mounts_under(daemon.data_root)
    pid = daemon.pid
    assert pid is not None
    began = time.monotonic()
    daemon.stop()
    elapsed = time.monotonic() - began
    assert elapsed < 10, f"stop took {elapsed:.1f} s"
    assert not Path(f"/proc/{pid}").exists()
    with pytest.raises(ProcessLookupError):
        os.kill(pid, 0)
    assert mounts_under(daemon.workdir) == []
    assert mounts_under(daemon.exec_root) == []
    daemon.stop()  # idempotent


@pytest.mark.e2e
@needs_dockerd
def test_start_failure_reports_log_and_cleans_up(tmp_path: Path, engine: Engine) -> None:
    """A daemon that exits at start raises with its log tail and leaves nothing behind.

    (A missing authz plugin fails the same way, but only after dockerd's ~15 s of retries.)
    """
    dockerd = Dockerd(tmp_path / "d", extra_args=["--no-such-flag"], engine=engine)
    with pytest.raises(DockerdError, match="unknown flag"):
        dockerd.start(timeout=30)
    assert not dockerd.running
    assert mounts_under(tmp_path) == []
    assert dockerd.exec_root == dockerd.workdir / "exec"  # the short exec-root is removed
