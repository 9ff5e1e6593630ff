"""A volume driver that is not fixeduser's, as dockerd finds one: the documented plugin protocol on a unix socket
named by a spec file. It stands for a network file system's driver or the original Quobyte plugin, whose options
choose what is mounted; it keeps its volumes in memory and mounts a folder of its own."""

from __future__ import annotations

import json
import secrets
import socketserver
import threading
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler
from pathlib import Path
from typing import Any

from fixeduser.sandbox import Dockerd


class _Server(socketserver.ThreadingMixIn, socketserver.UnixStreamServer):
    daemon_threads = True
    driver: OtherDriver


class _Handler(BaseHTTPRequestHandler):
    server: _Server

    def do_POST(self) -> None:
        length = int(self.headers.get("Content-Length") or 0)
        request = json.loads(self.rfile.read(length) or b"{}")
        answer = self.server.driver.answer(self.path.lstrip("/"), request)
        body = json.dumps(answer).encode()
        self.send_response(200)
        self.send_header("Content-Type", "application/vnd.docker.plugins.v1.2+json")
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def address_string(self) -> str:
        return "dockerd"  # a unix socket peer has no address

    def log_message(self, format: str, *args: Any) -> None:
        pass


@dataclass
class OtherDriver:
    folder: Path
    spec_dir: Path
    name: str = field(default_factory=lambda: f"fu-other-{secrets.token_hex(3)}")
    options: dict[str, dict[str, str]] = field(default_factory=dict)  # volume -> the options it was created with
    _server: _Server | None = None

    @property
    def spec(self) -> Path:
        return self.spec_dir / f"{self.name}.spec"

    def answer(self, call: str, request: dict[str, Any]) -> dict[str, Any]:
        name = str(request.get("Name", ""))
        fixed = {
            "Plugin.Activate": {"Implements": ["VolumeDriver"]},
            "VolumeDriver.Capabilities": {"Capabilities": {"Scope": "local"}},
            "VolumeDriver.List": {"Volumes": [{"Name": known} for known in sorted(self.options)], "Err": ""},
        }
        if call in fixed:
            return fixed[call]
        if call == "VolumeDriver.Create":
            self.options[name] = dict(request.get("Opts") or {})
            return {"Err": ""}
        if name not in self.options:
            return {"Err": f"no such volume: {name}"}
        mountpoint = self.folder / name
        if call == "VolumeDriver.Remove":
            del self.options[name]
        elif call == "VolumeDriver.Mount":
            mountpoint.mkdir(parents=True, exist_ok=True)
        volume = {"Name": name, "Mountpoint": str(mountpoint)}
        return {"Volume": volume, "Mountpoint": str(mountpoint), "Err": ""}  # each call reads its own fields

    def volume(self, dockerd: Dockerd, prefix: str, *options: str) -> str:
        """A volume of this driver named `prefix-<random>`, made with `docker volume create -d NAME OPTIONS`."""
        name = f"{prefix}-{secrets.token_hex(4)}"
        result = dockerd.docker("volume", "create", "-d", self.name, *options, name)
        assert result.returncode == 0, result.stderr
        return name

    def start(self) -> None:
        self.folder.mkdir(mode=0o700, exist_ok=True)
        socket = self.folder / "driver.sock"
        self._server = _Server(str(socket), _Handler)
        self._server.driver = self
        threading.Thread(target=self._server.serve_forever, daemon=True).start()
        self.spec.write_text(f"unix://{socket}\n")

    def stop(self) -> None:
        self.spec.unlink(missing_ok=True)
        if self._server is not None:
            self._server.shutdown()
            self._server.server_close()
