"""One HTTP request over a unix socket, with the standard library (the admin tools' and tests' client), and
whether anything listens on one."""

from __future__ import annotations

import errno
import http.client
import socket
from pathlib import Path


class UnixHTTPConnection(http.client.HTTPConnection):
    def __init__(self, socket_path: str, timeout: float) -> None:
        super().__init__("localhost", timeout=timeout)
        self._socket_path = socket_path

    def connect(self) -> None:
        sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        sock.settimeout(self.timeout)
        try:
            sock.connect(self._socket_path)
        except OSError:
            sock.close()
            raise
        self.sock = sock


def unix_http_request(socket_path: Path, method: str, path: str, *, timeout: float = 5.0) -> tuple[int, bytes]:
    """One HTTP request over a unix socket; returns (status, body)."""
    conn = UnixHTTPConnection(str(socket_path), timeout)
    try:
        conn.request(method, path, headers={"Host": "docker"})
        response = conn.getresponse()
        return response.status, response.read()
    finally:
        conn.close()


def accepts_connections(path: str | Path) -> bool:
    """Whether a process listens on the unix socket `path`: a non-blocking connect, closed at once."""
    with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as probe:
        probe.setblocking(False)
        try:
            # EAGAIN: listening, its backlog full; ENOENT, ECONNREFUSED, EACCES...: nothing to talk to now
            return probe.connect_ex(str(path)) in (0, errno.EAGAIN, errno.EINPROGRESS)
        except OSError:  # a path no connect can use (too long for a unix socket address)
            return False
