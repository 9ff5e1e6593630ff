"""A private PostgreSQL from Debian's packages: temp data dir, unix socket in a temp dir, free port.

Runs as the unprivileged `postgres` account (PostgreSQL refuses root); stopped by `pg_ctl` on its
own data directory, never by name.
"""

from __future__ import annotations

import glob
import os
import pwd
import shutil
import subprocess
import tempfile
from dataclasses import dataclass
from pathlib import Path

from fixeduser.sandbox import free_port


def postgres_binaries() -> Path | None:
    found = sorted(glob.glob("/usr/lib/postgresql/*/bin/initdb"))
    return Path(found[-1]).parent if found else None


def postgres_unavailable() -> str | None:
    if postgres_binaries() is None:
        return "needs PostgreSQL (apt-get install postgresql; scripts/setup)"
    if os.geteuid() != 0:
        return "needs root to run PostgreSQL as the postgres account"
    try:
        pwd.getpwnam("postgres")
    except KeyError:
        return "needs the postgres account (created by Debian's postgresql package)"
    return None


@dataclass
class Postgres:
    base: Path
    port: int
    process_user: str = "postgres"

    @property
    def url(self) -> str:
        return f"postgresql://postgres@/fixeduser?host={self.base / 'sock'}&port={self.port}"

    def _run(self, *argv: str) -> subprocess.CompletedProcess[str]:
        user = pwd.getpwnam(self.process_user)
        return subprocess.run(
            argv, user=user.pw_uid, group=user.pw_gid, extra_groups=[], capture_output=True, text=True, check=True,
            cwd=self.base,
        )  # fmt: skip

    def start(self) -> Postgres:
        binaries = postgres_binaries()
        assert binaries is not None
        user = pwd.getpwnam(self.process_user)
        for sub in ("data", "sock"):
            (self.base / sub).mkdir(mode=0o700)
            os.chown(self.base / sub, user.pw_uid, user.pw_gid)
        os.chown(self.base, user.pw_uid, user.pw_gid)
        self._run(str(binaries / "initdb"), "-D", str(self.base / "data"), "-A", "trust", "-U", "postgres",
                  "--no-sync", "-E", "UTF8")  # fmt: skip
        self._run(str(binaries / "pg_ctl"), "-D", str(self.base / "data"), "-l", str(self.base / "log"),
                  "-o", self._options, "-w", "start")  # fmt: skip
        self._run(str(binaries / "createdb"), "-h", str(self.base / "sock"), "-p", str(self.port), "fixeduser")
        return self

    def halt(self) -> None:
        """Stop the server, keeping its data (a database outage)."""
        binaries = postgres_binaries()
        assert binaries is not None
        self._run(str(binaries / "pg_ctl"), "-D", str(self.base / "data"), "-m", "fast", "-w", "stop")

    def resume(self) -> None:
        """Start the halted server again on the same socket and port."""
        binaries = postgres_binaries()
        assert binaries is not None
        self._run(str(binaries / "pg_ctl"), "-D", str(self.base / "data"), "-l", str(self.base / "log"),
                  "-o", self._options, "-w", "start")  # fmt: skip

    @property
    def _options(self) -> str:
        return f"-k {self.base / 'sock'} -p {self.port} -c listen_addresses=127.0.0.1 -c fsync=off"

    def create_database(self, name: str) -> str:
        """A new empty database on this server; returns its URL."""
        binaries = postgres_binaries()
        assert binaries is not None
        self._run(str(binaries / "createdb"), "-h", str(self.base / "sock"), "-p", str(self.port), name)
        return self.url.replace("/fixeduser?", f"/{name}?")

    def stop(self) -> None:
        binaries = postgres_binaries()
        assert binaries is not None
        if (self.base / "data" / "postmaster.pid").exists():
            self._run(str(binaries / "pg_ctl"), "-D", str(self.base / "data"), "-m", "fast", "-w", "stop")
        shutil.rmtree(self.base, ignore_errors=True)


def start_postgres() -> Postgres:
    base = Path(tempfile.mkdtemp(prefix="fu-pg-"))  # short: unix socket paths are limited to 107 bytes
    os.chmod(base, 0o755)
    return Postgres(base=base, port=free_port()).start()
