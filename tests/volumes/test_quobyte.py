"""QuobyteClient and QuobyteBackend against the API test double (tests/quobyte_api.py)."""

from __future__ import annotations

import asyncio
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from fixeduser.policy.identity import Identity
from fixeduser.volumes.backends import Backend
from fixeduser.volumes.backends.quobyte import ENTITY_NOT_FOUND, QuobyteBackend, QuobyteClient, QuobyteError

from ..quobyte_api import QuobyteApiDouble

ALICE = Identity(uid=10001, gid=10000, user="alice", group="eng")


@pytest.fixture
def api(tmp_path: Path) -> Iterator[QuobyteApiDouble]:
    (tmp_path / "client").mkdir()
    double = QuobyteApiDouble(client_dir=tmp_path / "client", mapped=[("alice", "eng")]).start()
    try:
        yield double
    finally:
        double.stop()


def client_for(api: QuobyteApiDouble, *, password: str = "secret", retries: int = 2) -> QuobyteClient:
    return QuobyteClient(api.url, user="admin", password=password, timeout=2, retries=retries, backoff=0.01)


def backend_for(api: QuobyteApiDouble, **kwargs: object) -> QuobyteBackend:
    assert api.client_dir is not None
    return QuobyteBackend(
        client=client_for(api),
        mountpoint=api.client_dir,
        tenant="t1",
        configuration="BASE",
        client_mode="directory",
        **kwargs,  # type: ignore[arg-type]
    )


def test_client_creates_resolves_lists_and_deletes(api: QuobyteApiDouble) -> None:
    """The four JSON-RPC methods round-trip with the documented parameter names."""
    client = client_for(api)
    uuid = client.create_volume("v1", root_user_id="alice", root_group_id="eng", configuration="BASE", tenant="t1")
    assert client.resolve_volume("v1", tenant="t1") == uuid
    assert client.resolve_volume("v1", tenant="other") is None
    assert [v["name"] for v in client.volume_list()] == ["v1"]
    client.delete_volume(uuid)
    assert api.names() == []
    method, params = api.calls[0]
    assert method == "createVolume"
    assert params == {
        "name": "v1", "root_user_id": "alice", "root_group_id": "eng", "configuration_name": "BASE", "tenant_id": "t1",
    }  # fmt: skip


def test_client_names_documented_errors(api: QuobyteApiDouble) -> None:
    """Duplicate names and unknown volumes raise QuobyteError with the code and a hint."""
    client = client_for(api)
    client.create_volume("v1", root_user_id="a", root_group_id="b", configuration="BASE", tenant="t1")
    with pytest.raises(QuobyteError, match=r"code -25.*exists already"):
        client.create_volume("v1", root_user_id="a", root_group_id="b", configuration="BASE", tenant="t1")
    with pytest.raises(QuobyteError, match="no such entity") as caught:
        client.delete_volume("no-such-uuid")
    assert caught.value.code == ENTITY_NOT_FOUND
    with pytest.raises(QuobyteError, match="does not know this method"):
        client.call("frobnicate", {})


def test_client_auth_failure_is_clear_and_not_retried(api: QuobyteApiDouble) -> None:
    """HTTP 401 names the user and the options to fix, after one request."""
    with pytest.raises(QuobyteError, match=r"refused user 'admin' \(HTTP 401\).*--quobyte-password-file"):
        client_for(api, password="wrong").volume_list()
    assert api.calls == []


def test_client_retries_transient_503(api: QuobyteApiDouble) -> None:
    """Two 503s then success: the call succeeds; more 503s than retries: a clear 'unavailable'."""
    api.fail_next = [503, 503]
    assert client_for(api, retries=2).volume_list() == []
    api.fail_next = [503, 503, 503]
    with pytest.raises(QuobyteError, match="unavailable for getVolumeList after 3 attempts: HTTP 503"):
        client_for(api, retries=2).volume_list()


def test_client_retries_connection_errors_with_backoff() -> None:
    """A refused connection is retried with growing delays, then reported."""
    client = QuobyteClient("http://127.0.0.1:9/", user="u", password="p", timeout=1, retries=2, backoff=0.05)
    began = time.monotonic()
    with pytest.raises(QuobyteError, match=r"unavailable.*ConnectionError"):
        client.volume_list()
    assert time.monotonic() - began >= 0.05 + 0.1


def test_client_session_is_reused_across_threads(api: QuobyteApiDouble) -> None:
    """Concurrent calls from worker threads share one session safely."""
    client = client_for(api)
    errors: list[BaseException] = []

    def work(index: int) -> None:
        try:
            client.create_volume(f"v{index}", root_user_id="a", root_group_id="b", configuration="C", tenant="t")
        except BaseException as exc:
            errors.append(exc)

    threads = [threading.Thread(target=work, args=(i,)) for i in range(16)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert errors == [] and len(api.names("t")) == 16


def test_backend_satisfies_protocol(api: QuobyteApiDouble) -> None:
    """QuobyteBackend implements the Backend protocol with global scope."""
    backend = backend_for(api)
    assert isinstance(backend, Backend) and backend.scope == "global" and backend.name == "quobyte"


async def test_backend_paths_use_quobyte_user_mapping(api: QuobyteApiDouble) -> None:
    """volume_path is `<mountpoint>/<user>#<group>@<volume>`; mount_identity only checks the client."""
    backend = backend_for(api)
    assert api.client_dir is not None
    assert backend.volume_path(ALICE, "v1") == api.client_dir / "alice#eng@v1"
    assert await backend.mount_identity(ALICE) == api.client_dir
    assert await backend.mounted_identities() == []
    with pytest.raises(Exception, match="cannot be used in a Quobyte user-mapped path"):
        backend.volume_path(Identity(uid=5, gid=5, user="a#b", group="g"), "v1")


async def test_backend_create_uses_options_and_defaults(api: QuobyteApiDouble) -> None:
    """Tenant and configuration come from -o options, else the plugin's defaults; the owner is the root user."""
    backend = backend_for(api)
    await backend.create_volume("v1", owner=ALICE, mode=0o770)
    await backend.create_volume("v2", owner=ALICE, mode=0o770, options={"tenant": "t2", "configuration": "fast"})
    assert api.volumes[("t1", "v1")]["configuration_name"] == "BASE"
    assert api.volumes[("t2", "v2")]["configuration_name"] == "fast"
    assert api.volumes[("t1", "v1")]["root_user_id"] == "alice"


async def test_backend_create_of_existing_volume_keeps_it(api: QuobyteApiDouble) -> None:
    """A second create of the same name (a retry) adopts the existing Quobyte volume."""
    backend = backend_for(api)
    await backend.create_volume("v1", owner=ALICE, mode=0o770)
    uuid = api.volumes[("t1", "v1")]["volume_uuid"]
    await backend.create_volume("v1", owner=ALICE, mode=0o770)
    assert api.volumes[("t1", "v1")]["volume_uuid"] == uuid


async def test_entity_errors_are_recognised_by_their_message_symbol_alone(api: QuobyteApiDouble) -> None:
    """Quobyte's numeric entity codes are not published: the message symbol (ENTITY_EXISTS_ALREADY/...,
    ENTITY_NOT_FOUND/...) decides, as in Quobyte's own Docker plugin, whatever the code."""
    api.entity_codes = None
    backend = backend_for(api)
    await backend.create_volume("v1", owner=ALICE, mode=0o770)
    uuid = api.volumes[("t1", "v1")]["volume_uuid"]
    await backend.create_volume("v1", owner=ALICE, mode=0o770)  # exists already: adopted, not an error
    assert api.volumes[("t1", "v1")]["volume_uuid"] == uuid
    assert not await backend.volume_exists("v2")  # not found: a plain no
    await backend.remove_volume("v1", purge=True)
    await backend.remove_volume("v1", purge=True)  # gone already: nothing to do
    assert api.names() == []


async def test_backend_remove_keeps_data_unless_purged(api: QuobyteApiDouble) -> None:
    """Remove without purge never calls deleteVolume; purge deletes exactly that tenant's volume."""
    backend = backend_for(api)
    await backend.create_volume("v1", owner=ALICE, mode=0o770)
    await backend.create_volume("v1", owner=ALICE, mode=0o770, options={"tenant": "t2"})
    await backend.remove_volume("v1", purge=False)
    assert api.names() == ["v1", "v1"] and not any(m == "deleteVolume" for m, _ in api.calls)
    await backend.remove_volume("v1", purge=True, options={"tenant": "t2"})
    assert api.names("t1") == ["v1"] and api.names("t2") == []
    await backend.remove_volume("v1", purge=True, options={"tenant": "t2"})  # already gone: fine


async def test_backend_calls_run_off_the_event_loop(api: QuobyteApiDouble) -> None:
    """A slow API does not block the loop: other tasks keep running while a create waits."""
    backend = backend_for(api)
    ticks = 0

    async def ticker() -> None:
        nonlocal ticks
        while True:
            ticks += 1
            await asyncio.sleep(0.01)

    task = asyncio.create_task(ticker())
    api.fail_next = [503, 503]  # two backoff sleeps inside the worker thread
    backend.client.backoff = 0.1
    await backend.create_volume("v1", owner=ALICE, mode=0o770)
    task.cancel()
    assert ticks >= 10


async def test_backend_existing_client_mode_requires_a_mount(tmp_path: Path, api: QuobyteApiDouble) -> None:
    """--quobyte-client existing refuses a mount point where no client is mounted, saying how to mount it."""
    backend = QuobyteBackend(
        client=client_for(api), mountpoint=tmp_path, tenant="t", configuration="c", client_mode="existing"
    )
    with pytest.raises(Exception, match=r"not mounted: mount it with `mount\.quobyte --allow-usermapping"):
        await backend.check()


async def test_backend_start_mode_runs_mount_quobyte(tmp_path: Path, api: QuobyteApiDouble) -> None:
    """--quobyte-client start runs the mount command with user mapping and reports its failure."""
    fake = tmp_path / "mount.quobyte"
    log = tmp_path / "argv"
    fake.write_text(f'#!/bin/sh\necho "$@" > {log}\necho "no registry reachable" >&2\nexit 3\n')
    fake.chmod(0o755)
    backend = QuobyteBackend(
        client=client_for(api), mountpoint=tmp_path / "mnt", tenant="t", configuration="c",
        client_mode="start", registry="reg:7861", mount_command=str(fake),
    )  # fmt: skip
    with pytest.raises(Exception, match="exit status 3\\): no registry reachable"):
        await backend.check()
    assert log.read_text().split() == ["--allow-usermapping-in-volumename", "reg:7861/", str(tmp_path / "mnt")]
