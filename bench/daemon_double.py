"""A stand-in for the Docker daemon's read-only API, for the socket benchmarks: `fixeduser serve` asks the daemon
which container a reference names (and what it mounts) at every start, restart and archive call, and for names it
does not hold; without a daemon those calls would be denied and the benchmark would time denials.

    python -m bench.daemon_double SOCKET TABLE.json

TABLE.json maps full container IDs to their `GET /containers/{id}/json` answers. References resolve like the
daemon's (full ID, name with or without `/`, unique ID prefix); a listing of every container lists the table (the
plugin's ledger pruner keeps what the daemon lists), a filtered listing finds nothing (no container is ever
restarting), volumes of other drivers do not exist, the event stream stays open. The docker part of the suite
measures the real daemon.
"""

from __future__ import annotations

import asyncio
import json
import os
import signal
import sys
from pathlib import Path
from typing import Any

from aiohttp import web


class Table:
    def __init__(self, containers: dict[str, dict[str, Any]]) -> None:
        self.containers = containers
        self.names = {str(c["Name"]).lstrip("/"): cid for cid, c in containers.items()}

    def resolve(self, reference: str) -> dict[str, Any] | None:
        if reference in self.containers:
            return self.containers[reference]
        if (cid := self.names.get(reference.lstrip("/"))) is not None:
            return self.containers[cid]
        matches = [c for cid, c in self.containers.items() if reference and cid.startswith(reference)]
        return matches[0] if len(matches) == 1 else None


def listed(container: dict[str, Any]) -> dict[str, Any]:
    """A `GET /containers/json?all=1` entry of an inspect answer."""
    return {
        "Id": container["Id"],
        "Names": [container["Name"]],
        "State": container["State"]["Status"],
        "Mounts": container["Mounts"],
    }


def app_for(table: Table) -> web.Application:
    async def inspect(request: web.Request) -> web.Response:
        found = table.resolve(request.match_info["ref"])
        if found is None:
            return web.json_response({"message": "No such container"}, status=404)
        return web.json_response(found)

    async def listing(request: web.Request) -> web.Response:
        if "filters" in request.query:
            return web.json_response([])  # nothing restarting, nothing stopped to recover
        return web.json_response([listed(c) for c in table.containers.values()])

    async def no_volume(request: web.Request) -> web.Response:
        return web.json_response({"message": "no such volume"}, status=404)

    async def events(request: web.Request) -> web.StreamResponse:
        response = web.StreamResponse()
        await response.prepare(request)
        await asyncio.Event().wait()
        return response

    app = web.Application()
    app.router.add_get("/containers/json", listing)
    app.router.add_get("/containers/{ref}/json", inspect)
    app.router.add_get("/volumes/{name}", no_volume)
    app.router.add_get("/events", events)
    return app


async def serve(socket_path: Path, table: Table) -> None:
    runner = web.AppRunner(app_for(table), access_log=None, handle_signals=False, shutdown_timeout=0.1)
    await runner.setup()
    await asyncio.to_thread(socket_path.unlink, missing_ok=True)
    await web.UnixSite(runner, str(socket_path)).start()
    os.chmod(socket_path, 0o660)
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for signum in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(signum, stop.set)
    try:
        await stop.wait()
    finally:
        await runner.cleanup()
        await asyncio.to_thread(socket_path.unlink, missing_ok=True)


if __name__ == "__main__":
    asyncio.run(serve(Path(sys.argv[1]), Table(json.loads(Path(sys.argv[2]).read_text()))))
