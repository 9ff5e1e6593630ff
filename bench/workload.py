"""What the socket benchmarks send: captured daemon calls rendered per client, and generated policies."""

from __future__ import annotations

import base64
import contextlib
import hashlib
import json
import random
import re
import shutil
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from bench.capture import CAPTURE_FILE
from bench.common import POLICY_DIR

_HEX64 = re.compile(r"\b[0-9a-f]{64}\b")

# Operations replayed from the capture, in the order of a realistic docker session.
SESSION_OPS = ("run_volume", "run_plain", "run_mount", "ps", "run_detached", "inspect", "exec", "rm")
READ_OPS = ("ps", "inspect")
# `docker run --rm -v NAME:/data` where NAME is no fixeduser volume (a local one): the decision asks the daemon
# what NAME is (a `local` volume with driver options would be a bind mount in disguise). Made from `run_plain`.
OTHER_VOLUME_OPS = ("run_other_volume",)
# Which captured ops exist only to set state up (volume creation) and are not replayed in a mix.
SETUP_OPS = ("volume_create",)


@dataclass(frozen=True)
class Call:
    """One plugin call: the HTTP path on the plugin socket, its JSON body and a label for statistics."""

    path: str
    body: bytes
    label: str


@dataclass(frozen=True)
class Client:
    user: str
    container_id: str
    name: str
    volume: str


def load_capture() -> dict[str, Any]:
    return json.loads(CAPTURE_FILE.read_text())


def _label(op: str, call: str, body: dict[str, Any]) -> str:
    from fixeduser.docker_api import classify  # noqa: PLC0415

    phase = "Req" if call.endswith("AuthZReq") else "Res"
    api = classify(body.get("RequestMethod", ""), body.get("RequestUri", ""))
    action = api.action if api else "unknown"
    if action == "container.create":
        action += {
            "run_volume": " -v vol",
            "run_mount": " --mount vol",
            "run_detached": " -v vol",
            "run_other_volume": " -v other",
        }.get(op, "")
    return f"{action} {phase}"


class Renderer:
    """Turns the captured calls into one client's calls: its user, container, name and volume."""

    def __init__(self, capture: dict[str, Any], driver: str) -> None:
        self.capture = capture
        self.driver = driver
        ids: list[str] = []
        for calls in capture["ops"].values():
            for c in calls:
                body = c["body"]
                if c["call"] == "AuthZPlugin.AuthZRes" and body.get("ResponseBody"):
                    with contextlib.suppress(ValueError, TypeError, KeyError):
                        found = json.loads(base64.b64decode(body["ResponseBody"]))["Id"]
                        if _HEX64.fullmatch(found) and found not in ids:
                            ids.append(found)
        self.ids = ids  # container and exec IDs the daemon made; each client gets its own

    def named_container_index(self) -> int | None:
        """Which of `ids` the capture's `--name` create made (the container the name refers to)."""
        for calls in self.capture["ops"].values():
            for c in calls:
                body = c["body"]
                uri = body.get("RequestUri", "")
                if c["call"] == "AuthZPlugin.AuthZRes" and "/containers/create?name=" in uri:
                    with contextlib.suppress(ValueError, TypeError, KeyError):
                        return self.ids.index(json.loads(base64.b64decode(body["ResponseBody"]))["Id"])
        return None

    @staticmethod
    def client_id(client: Client, k: int) -> str:
        return hashlib.sha256(f"{client.container_id}/{k}".encode()).hexdigest()

    def _sub(self, text: str, client: Client) -> str:
        for k, captured in enumerate(self.ids):
            text = text.replace(captured, self.client_id(client, k))
        text = text.replace(self.capture["driver"], self.driver)
        text = re.sub(rf"\b{re.escape(self.capture['name'])}\b", client.name, text)
        return text.replace(self.capture["volume"], client.volume)

    def render_body(self, body: dict[str, Any], client: Client) -> dict[str, Any]:
        out = dict(body)
        if "User" in out:
            out["User"] = client.user
        if "RequestUri" in out:
            out["RequestUri"] = self._sub(out["RequestUri"], client)
        for key in ("RequestBody", "ResponseBody"):
            if out.get(key):
                raw = base64.b64decode(out[key]).decode()
                out[key] = base64.b64encode(self._sub(raw, client).encode()).decode()
        return out

    def calls(self, ops: tuple[str, ...], client: Client) -> list[Call]:
        out = []
        for op in ops:
            for c in self.capture["ops"]["run_plain" if op == "run_other_volume" else op]:
                if not c["call"].startswith("AuthZPlugin."):
                    continue  # volume driver calls go to the other socket; the decisions are measured here
                body = self.render_body(c["body"], client)
                if op == "run_other_volume":
                    body = _with_other_volume(body, f"{client.name}-other")
                out.append(Call("/" + c["call"], json.dumps(body).encode(), _label(op, c["call"], c["body"])))
        return out

    def volume_create(self, client: Client, volume: str) -> list[tuple[str, dict[str, Any]]]:
        """(path, body) of the authz and driver calls that create `volume` as `client`, in daemon order."""
        sub = Client(client.user, client.container_id, client.name, volume)
        out = []
        for c in self.capture["ops"]["volume_create"]:
            body = self.render_body(c["body"], sub)
            if c["call"] == "VolumeDriver.Create":
                body = {"Name": volume, "Opts": {}}
            out.append(("/" + c["call"], body))
        return out


def make_clients(count: int, users: list[str]) -> list[Client]:
    clients = []
    for i in range(count):
        cid = f"{random.Random(i).getrandbits(256):064x}"
        clients.append(Client(user=users[i % len(users)], container_id=cid, name=f"bench{i}", volume=f"eng-b{i}"))
    return clients


# --------------------------------------------------------------------------- policies


def bench_policy_lines(users: int) -> list[str]:
    """The example policy plus `users` engineers u0..u{n-1}, each with a storage identity."""
    lines = [line for line in (POLICY_DIR / "policy.csv").read_text().splitlines()]
    for i in range(users):
        lines.append(f"g, u{i}, role:eng")
        lines.append(f"p2, u{i}, {20000 + i}, 20000")
    return lines


def scaled_policy_lines(total: int) -> tuple[list[str], list[str]]:
    """A policy of `total` lines with total/10 users and total/100 roles (100,000 lines: 10,000
    users, 1,000 roles). Returns (lines, users that may run containers with eng-* volumes).

    Shape: each user has one role and one p2 identity line; each role inherits a department role
    (10 departments) and has a handful of project-volume permissions; departments grant the
    Docker API actions; the rest are per-user volume permissions (`p, uN, volume:uN-*, mount`),
    which sit first in a user's own rule list, so the index has to skip them.
    """
    n_users, n_roles = max(2, total // 10), max(1, total // 100)
    n_depts = min(10, n_roles)
    lines: list[str] = []
    api = (
        "system.*",
        "container.*",
        "exec.*",
        "image.list",
        "image.inspect",
        "volume.list",
        "volume.inspect",
        "volume.create",
        "volume.remove",
        "network.list",
    )
    for d in range(n_depts):
        lines += [f"p, role:dept{d}, api, {a}" for a in api]
        lines += [f"p, role:dept{d}, volume:eng-*, create", f"p, role:dept{d}, volume:eng-*, mount"]
    for r in range(n_roles):
        lines.append(f"g, role:r{r}, role:dept{r % n_depts}")
        lines += [f"p, role:r{r}, volume:proj{r}-{k}-*, mount" for k in range(3)]
    users = [f"u{i}" for i in range(n_users)]
    for i, user in enumerate(users):
        lines.append(f"g, {user}, role:r{i % n_roles}")
        lines.append(f"p2, {user}, {20000 + i}, {20000 + i % n_roles}")
    lines.append("g, @local, role:admin")
    lines.append("p, role:admin, *, *")
    i = 0
    while len(lines) < total:
        user = users[i % n_users]
        lines.append(f"p, {user}, volume:{user}-{i // n_users}-*, mount")
        i += 1
    return lines[:total] if len(lines) > total else lines, users


def write_policy_dir(directory: Path, lines: list[str]) -> Path:
    directory.mkdir(parents=True, exist_ok=True)
    shutil.copy(POLICY_DIR / "model.conf", directory / "model.conf")
    (directory / "policy.csv").write_text("\n".join(lines) + "\n")
    return directory


def _with_other_volume(body: dict[str, Any], volume: str) -> dict[str, Any]:
    """A captured container create's call, made to bind `volume` (no fixeduser volume) at /data."""
    uri = body.get("RequestUri", "")
    if "/containers/create" not in uri or not body.get("RequestBody"):
        return body
    create = json.loads(base64.b64decode(body["RequestBody"]))
    create.setdefault("HostConfig", {})["Binds"] = [f"{volume}:/data"]
    return {**body, "RequestBody": base64.b64encode(json.dumps(create).encode()).decode()}
