"""One HTTP request over a unix socket, with the standard library (the admin tools' and tests' client)."""

from __future__ import annotations

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
