"""The real plugin (`fixeduser serve`) in its own process, with private state, for socket benchmarks."""

from __future__ import annotations

import json
import secrets
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

from bench.client import call_once
from bench.common import proc_cpu_seconds, proc_status
from bench.workload import Client, Renderer
from fixeduser.sandbox import PluginProcess, unmount_all_under


class FixeduserServer:
    """`fixeduser serve` with unique names; behind it, a stand-in for the daemon's read-only API
    (bench/daemon_double.py) that knows the clients' containers once their volumes are created."""

    def __init__(self, base: Path, policy_dir: Path, extra_args: tuple[str, ...] = ()) -> None:
        tag = secrets.token_hex(3)
        self.base = base
        self.daemon: subprocess.Popen[bytes] | None = None
        self.proc = PluginProcess(
            base=base,
            authz_name=f"fub-{tag}-authz",
            volume_name=f"fub-{tag}",
            docker_socket=base / "daemon.sock",
            policy_dir=policy_dir,
            extra_args=extra_args,
        )

    def start(self) -> FixeduserServer:
        self.base.mkdir(parents=True, exist_ok=True)
        self.proc.start(timeout=120)
        return self

    @property
    def pid(self) -> int:
        assert self.proc.process is not None
        return self.proc.process.pid

    @property
    def authz_socket(self) -> Path:
        return self.proc.plugin_dir / f"{self.proc.authz_name}.sock"

    @property
    def volume_socket(self) -> Path:
        return self.proc.plugin_dir / f"{self.proc.volume_name}.sock"

    @property
    def driver(self) -> str:
        return self.proc.volume_name

    def memory(self) -> dict[str, int]:
        return proc_status(self.pid)

    def cpu(self) -> float:
        return proc_cpu_seconds(self.pid)

    def sighup(self) -> None:
        assert self.proc.process is not None
        self.proc.process.send_signal(signal.SIGHUP)

    def _describe_containers(self, renderer: Renderer, clients: list[Client]) -> None:
        """Start the daemon stand-in, knowing each client's containers: named, mounting its two volumes."""
        named = renderer.named_container_index()
        table = {}
        for client in clients:
            mounts = [{"Type": "volume", "Name": v, "Driver": self.driver, "Destination": f"/{v}"}
                      for v in (client.volume, f"{client.volume}-m")]  # fmt: skip
            for k in range(len(renderer.ids)):
                cid = renderer.client_id(client, k)
                name = client.name if k == named else f"{client.name}-{k}"
                table[cid] = {"Id": cid, "Name": f"/{name}", "Mounts": mounts, "HostConfig": {},
                              "State": {"Status": "created"}}  # fmt: skip
        path = self.base / "containers.json"
        path.write_text(json.dumps(table))
        self.daemon = subprocess.Popen(
            [sys.executable, "-m", "bench.daemon_double", str(self.proc.docker_socket), str(path)],
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )
        deadline = time.monotonic() + 20
        while not self.proc.docker_socket.exists():
            if time.monotonic() > deadline or self.daemon.poll() is not None:
                raise RuntimeError("the daemon stand-in (bench/daemon_double.py) did not start")
            time.sleep(0.02)

    async def create_volumes(self, renderer: Renderer, clients: list[Client]) -> None:
        """Create each client's volumes the way the daemon does: AuthZReq, driver Create, AuthZRes; then let the
        daemon stand-in describe the clients' containers."""
        self._describe_containers(renderer, clients)
        for client in clients:
            for volume in (client.volume, f"{client.volume}-m"):
                for path, body in renderer.volume_create(client, volume):
                    if path.startswith("/VolumeDriver."):
                        if path != "/VolumeDriver.Create":
                            continue
                        sock = self.volume_socket
                    else:
                        sock = self.authz_socket
                    status, answer = await call_once(sock, path, json.dumps(body).encode())
                    reply = json.loads(answer)
                    if status != 200 or reply.get("Err") or reply.get("Allow") is False:
                        raise RuntimeError(f"creating volume {volume} for {client.user}: {path} -> {answer!r}")

    def stop(self) -> None:
        try:
            self.proc.stop()
            if self.daemon is not None:
                self.daemon.terminate()
                self.daemon.wait(timeout=10)
        finally:
            self.proc.remove_specs()
            if not unmount_all_under([self.base]):
                shutil.rmtree(self.base, ignore_errors=True)
